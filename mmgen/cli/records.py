"""`mmgen history`, `show`, `link`, `rate`, `eval feedback`, `export`, `forget`: the store as the record of the work."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from mmgen.cli.common import EXIT_ERROR, DbOpt, JsonOpt, WorkspaceOpt, _errors, _print_json, _workspace, app, eval_app

if TYPE_CHECKING:
    from mmgen.records import (
        FeedbackReport,
        ForgetReport,
        LineageNode,
        OutputRecord,
        PromptDetail,
        PromptSummary,
        ScoreStats,
    )
    from mmgen.store.db import Store

export_app = typer.Typer(help="Export what the store records.", no_args_is_help=True)
app.add_typer(export_app, name="export")

ModelOpt = Annotated[
    Optional[str],
    typer.Option("--model", help="Only outputs of this model name (a search's: its encoder)."),
]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="The JSON Lines file to write.")]
AnonymiseOpt = Annotated[
    bool, typer.Option("--anonymise", help="Replace user ids by salted pseudonyms (u- and 16 hex digits of an HMAC).")
]
SaltOpt = Annotated[
    Optional[str],
    typer.Option("--salt", help="The HMAC key for --anonymise: the same salt gives the same pseudonyms "
                 "(without it: a random one, kept nowhere)."),  # fmt: skip
]
DropTextOpt = Annotated[
    bool, typer.Option("--drop-text", help="Leave out what people wrote or showed: prompt text, query image, notes.")
]


@contextmanager
def _store(workspace: Path | None, db: str | None) -> Iterator[Store]:
    from mmgen.store.db import open_store

    store = open_store(_workspace(workspace, db).db_url)
    try:
        yield store
    finally:
        store.close()


def _when(stamp: datetime | None) -> str:
    """A stored time in local time, to the second."""
    from mmgen.records.rows import utc

    aware = utc(stamp)
    return aware.astimezone().strftime("%Y-%m-%d %H:%M:%S") if aware else "-"


def _asked(text: str | None, image: str | None) -> str:
    return json.dumps(text, ensure_ascii=False) if text is not None else f"image {image or '-'}"


def _output_line(out: OutputRecord) -> str:
    what = ""
    if out.text is not None:
        what = f"text {json.dumps(out.text, ensure_ascii=False)}"
    elif out.file_uri:
        what = f"file {out.file_uri}"
    parts = [f"output #{out.id}", what, f"model {out.model.label} ({out.model.kind})" if out.model else "no model"]
    if out.latency_ms is not None:
        parts.append(f"{out.latency_ms:.1f} ms")
    if out.feedback:
        scores = [f.score for f in out.feedback]
        parts.append(f"rated {sum(scores) / len(scores):.1f} by {len(scores)}")
    return "  ".join(p for p in parts if p)


def _summary_line(p: PromptSummary) -> str:
    extra = [f"{p.hits} hits"] if p.hits else []
    if p.parent_id is not None:
        extra.append(f"from #{p.parent_id}")
    tail = f"  ({', '.join(extra)})" if extra else ""
    return f"#{p.id}  {_when(p.created_at)}  {p.kind:8s}  {p.user or '-'}  {_asked(p.text, p.image_uri)}{tail}"


@app.command("history")
def history_cmd(
    workspace: WorkspaceOpt = None,
    db: DbOpt = None,
    kind: Annotated[Optional[str], typer.Option("--kind", help="search | caption | generate | eval.")] = None,
    user: Annotated[Optional[str], typer.Option("--user", help="Only prompts of this user.")] = None,
    since: Annotated[
        Optional[str], typer.Option("--since", help="A date (2026-12-01), date and time, or age (90m, 12h, 7d).")
    ] = None,
    model: ModelOpt = None,
    limit: Annotated[int, typer.Option("-n", "--limit", min=1, help="How many prompts, newest first.")] = 20,
    as_json: JsonOpt = False,
) -> None:
    """List recorded prompts newest first, with their outputs (text or file), model and latency."""
    with _errors():
        from mmgen.records import history, parse_since

        after = parse_since(since) if since is not None else None
        with _store(workspace, db) as store:
            prompts = history(store, kind=kind, user=user, since=after, model=model, limit=limit)
        if as_json:
            _print_json({"prompts": [p.to_json() for p in prompts]})
            return
        if not prompts:
            typer.echo("no prompts recorded" + (" that match" if any((kind, user, since, model)) else ""))
        for p in prompts:
            typer.echo(_summary_line(p))
            for out in p.outputs:
                typer.echo(f"    {_output_line(out)}")


def _tree_lines(tree: LineageNode) -> list[str]:
    return [f"{'  ' * depth}#{n.id}  {n.kind}  {_asked(n.text, n.image_uri)}" + ("   <- this one" if n.focus else "")
            for depth, n in tree.walk()]  # fmt: skip


def _print_detail(d: PromptDetail) -> None:
    typer.echo(f"prompt #{d.id}  {d.kind}  by {d.user or '-'}  {_when(d.created_at)}"
               + (f"  (from #{d.parent_id})" if d.parent_id is not None else ""))  # fmt: skip
    if d.text is not None:
        typer.echo(f"text:   {d.text}")
    if d.image_uri:
        typer.echo(f"image:  {d.image_uri}")
    typer.echo("params:")
    for key, value in d.params.items():
        typer.echo(f"  {key}: {json.dumps(value, ensure_ascii=False)}")
    typer.echo(f"retrieved ({len(d.retrievals)}):")
    for h in d.retrievals:
        where = f"{h.corpus}:{h.key}" if h.key is not None else "(item deleted)"
        typer.echo(f"  {h.rank:3d}  {h.score:7.4f}  {h.modality:5s}  {where}  {h.text or ''}".rstrip())
    typer.echo(f"outputs ({len(d.outputs)}):")
    for out in d.outputs:
        typer.echo(f"  {_output_line(out)}")
        if out.scores:
            typer.echo(f"      scores {json.dumps(out.scores, ensure_ascii=False)}")
        for f in out.feedback:
            typer.echo(f"      {f.user}: {f.score}/5" + (f"  {f.note}" if f.note else ""))


@app.command("show")
def show_cmd(
    prompt_id: Annotated[int, typer.Argument(help="A prompt id (`mmgen history` lists them).")],
    workspace: WorkspaceOpt = None,
    db: DbOpt = None,
    sheet: Annotated[
        Optional[Path], typer.Option("--sheet", help="Write a contact sheet (PNG) of its image hits or generated images.")
    ] = None,
    tree: Annotated[bool, typer.Option("--tree", help="Also show its lineage: ancestors and descendants.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Show one prompt: parameters, retrieved items, outputs with model and version, feedback."""
    with _errors():
        from mmgen.records import contact_sheet, lineage, show

        with _store(workspace, db) as store:
            detail = show(store, prompt_id)
            family = lineage(store, prompt_id) if tree else None
        written = contact_sheet(detail, sheet) if sheet is not None else None
        if as_json:
            _print_json({**detail.to_json(), **({"lineage": family.to_json()} if family else {})})
        else:
            _print_detail(detail)
            if family is not None:
                typer.echo("lineage:")
                for line in _tree_lines(family):
                    typer.echo(f"  {line}")
        if written is not None:
            typer.echo(f"sheet: {written}", err=True)


@app.command("link")
def link_cmd(
    prompt_id: Annotated[int, typer.Argument(help="The prompt that was refined.")],
    parent_id: Annotated[int, typer.Option("--from", help="The prompt it was refined from.")],
    workspace: WorkspaceOpt = None,
    db: DbOpt = None,
) -> None:
    """Record that a prompt was refined from another (its parent in `mmgen show --tree`)."""
    with _errors():
        from mmgen.records import link

        with _store(workspace, db) as store:
            link(store, prompt_id, parent_id)
        typer.echo(f"prompt #{prompt_id} now follows prompt #{parent_id}")


@app.command("rate")
def rate_cmd(
    output_id: Annotated[int, typer.Argument(help="An output id (`mmgen show PROMPT_ID` lists them).")],
    score: Annotated[int, typer.Option("--score", help="1 (bad) to 5 (good).")],
    note: Annotated[Optional[str], typer.Option("--note", help="A comment (kept when rating again without one).")] = None,
    user: Annotated[Optional[str], typer.Option("--user", help="Who rates [default: the login name].")] = None,
    workspace: WorkspaceOpt = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Score an output from 1 to 5; rating it again (same user) replaces the score."""
    with _errors():
        from mmgen.records import rate

        with _store(workspace, db) as store:
            record = rate(store, output_id, score, note=note, user=user)
        if as_json:
            _print_json(record.to_json())
            return
        typer.echo(f"output #{output_id}: {record.user} rated {record.score}/5" + (f"  {record.note}" if record.note else ""))


def _stats_line(label: str, st: ScoreStats) -> str:
    mean = f"{st.mean:5.2f}" if st.mean is not None else "    -"
    return f"{label:40s} {st.count:5d} {mean}  " + " ".join(f"{n:4d}" for n in st.distribution.values())


def _print_report(report: FeedbackReport) -> None:
    header = f"{'':40s} {'n':>5s} {'mean':>5s}  " + " ".join(f"{s:>4d}" for s in report.total.distribution)
    typer.echo(header)
    typer.echo(_stats_line("all" if report.model is None else f"all of {report.model}", report.total))
    typer.echo("by model")
    for ref, st in report.by_model:
        typer.echo(_stats_line(f"  {ref.label} ({ref.kind})" if ref else "  (no model)", st))
    typer.echo("by prompt kind")
    for kind, st in report.by_kind:
        typer.echo(_stats_line(f"  {kind}", st))


@eval_app.command("feedback")
def eval_feedback_cmd(
    model: ModelOpt = None,
    workspace: WorkspaceOpt = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Summarise `mmgen rate` scores per model (name + version) and per prompt kind: count, mean, distribution."""
    with _errors():
        from mmgen.records import feedback_summary

        with _store(workspace, db) as store:
            report = feedback_summary(store, model)
        if as_json:
            _print_json(report.to_json())
        elif report.total.count == 0:
            typer.echo("no feedback recorded" + (f" on {model}" if model else "") + " (`mmgen rate OUTPUT_ID --score N`)")
        else:
            _print_report(report)


@export_app.command("feedback")
def export_feedback_cmd(
    out: OutOpt,
    model: ModelOpt = None,
    anonymise: AnonymiseOpt = False,
    salt: SaltOpt = None,
    drop_text: DropTextOpt = False,
    workspace: WorkspaceOpt = None,
    db: DbOpt = None,
) -> None:
    """Write rated outputs as a preference data set: one JSON line per rating (prompt, params, output, model, score)."""
    with _errors():
        from mmgen.records import Redaction, export_feedback

        redact = Redaction.of(anonymise, salt, drop_text)
        with _store(workspace, db) as store:
            count = export_feedback(store, out, model, redact)
        typer.echo(f"wrote {count} rated outputs to {out}")


@export_app.command("prompts")
def export_prompts_cmd(
    out: OutOpt,
    anonymise: AnonymiseOpt = False,
    salt: SaltOpt = None,
    drop_text: DropTextOpt = False,
    workspace: WorkspaceOpt = None,
    db: DbOpt = None,
) -> None:
    """Write every prompt as one JSON line: id, kind, time, user, parent, params, text, hits, output ids."""
    with _errors():
        from mmgen.records import Redaction, export_prompts

        redact = Redaction.of(anonymise, salt, drop_text)
        with _store(workspace, db) as store:
            count = export_prompts(store, out, redact)
        typer.echo(f"wrote {count} prompts to {out}")


def _forget_lines(report: ForgetReport) -> list[str]:
    verb = "would delete" if report.dry_run else "deleted"
    rows = ", ".join(f"{n} {table}" for table, n in report.deleted.items())
    lines = [f"{verb} {rows}", f"{'would remove' if report.dry_run else 'removed'} {len(report.files)} files"]
    if report.unlinked:
        lose = "would lose" if report.dry_run else "lost"
        lines.append(f"{report.unlinked} prompts of other users refined from theirs {lose} their parent")
    lines.extend(f"kept (outside the workspace's outputs folder): {uri}" for uri in report.kept)
    return lines


@app.command("forget")
def forget_cmd(
    user: Annotated[str, typer.Option("--user", help="The user whose records and generated files to delete.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    workspace: WorkspaceOpt = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Delete a user's prompts, retrievals, outputs, ratings (given and received) and generated files, for good."""
    with _errors():
        from mmgen.records import forget

        ws = _workspace(workspace, db)
        with _store(workspace, db) as store:
            if not (yes or as_json):
                for line in _forget_lines(forget(store, user, ws.outputs_dir, dry_run=True)):
                    typer.echo(line)
                if not typer.confirm(f"forget user {user!r}? This cannot be undone"):
                    typer.echo("nothing forgotten")
                    raise typer.Exit(1)
            report = forget(store, user, ws.outputs_dir)
        if as_json:
            _print_json(report.to_json())
        else:
            for line in _forget_lines(report):
                typer.echo(line)
        for failure in report.failed:
            typer.secho(f"error: cannot remove {failure}", fg=typer.colors.RED, err=True)
        if report.failed:
            raise typer.Exit(EXIT_ERROR)
