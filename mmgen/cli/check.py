"""`mmgen check`: verify the workspace (SQL rows, vector files, FAISS and code caches, model weights, migrations)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from mmgen.cli.common import DbOpt, JsonOpt, WorkspaceOpt, _errors, _print_json, _workspace, app

if TYPE_CHECKING:
    from mmgen.check import CheckReport, Problem

EXIT_PROBLEMS = 1  # errors or warnings remain (2 stays "the command failed", as everywhere)
_COLOURS = {"error": typer.colors.RED, "warning": typer.colors.YELLOW, "info": typer.colors.BLUE}


@app.command("check")
def check_cmd(
    workspace: WorkspaceOpt = None,
    db: DbOpt = None,
    repair: Annotated[
        bool,
        typer.Option("--repair", help="Rebuild what is derivable (FAISS and code caches, migrations), then check again."),
    ] = False,
    prune: Annotated[
        bool,
        typer.Option(
            "--prune",
            help="With --repair: also delete index rows whose vectors are gone or corrupt (the next `mmgen index` "
            "re-embeds their items) and items no index refers to.",
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Verify the workspace: items, index rows, vector files, FAISS and code caches, model weights, migrations.

    Exit code 0 when no error or warning is left (informational notes allowed), 1 when some are.
    """
    with _errors():
        from mmgen.check import CheckOptions, check_workspace

        report = check_workspace(_workspace(workspace, db), CheckOptions(repair=repair, prune=prune))
    if as_json:
        _print_json(report.to_json())
    else:
        _print_report(report)
    if not report.ok:
        raise typer.Exit(EXIT_PROBLEMS)


def _print_report(report: CheckReport) -> None:
    typer.echo(f"workspace {report.workspace}  (store {report.store})")
    typer.echo(f"  store revision {report.revision} (head {report.head})")
    for name, info in report.indexes.items():
        parts = []
        for modality, m in info["modalities"].items():
            faiss = "no FAISS file" if m["faiss"] is None else f"{m['faiss']} in FAISS"
            codes = "" if "codes" not in m else ", no codes file" if m["codes"] is None else f", {m['codes']} codes"
            vectors = "an unreadable vector file" if m["vectors"] is None else f"{m['vectors']} vectors"
            parts.append(f"{modality}: {m['rows']} rows, {vectors}, {faiss}{codes}")
        hasher = f"; hasher {info['hasher']}" if info.get("hasher") else ""
        typer.echo(f"  index {name} ({info['encoder']}{hasher}): " + ("; ".join(parts) or "empty"))
    if report.models:
        typer.echo("  models: " + ", ".join(f"{n} {state}" for n, state in report.models.items()))
    if report.found is not None:
        typer.echo(f"repair: found {len(report.found)} problems")
        for line in report.repaired or ["nothing could be repaired"]:
            typer.echo(f"  {line}")
    order = {"error": 0, "warning": 1, "info": 2}
    for problem in sorted(report.problems, key=lambda p: order.get(p.severity, 3)):
        _print_problem(problem)
    counts = report.counts()
    summary = ", ".join(_plural(counts[s], word) for s, word in (("error", "error"), ("warning", "warning"),
                                                                  ("info", "note")))  # fmt: skip
    fixable = sum(p.action is not None and p.severity != "info" for p in report.problems)
    if report.ok:
        typer.secho(f"ok ({summary})", fg=typer.colors.GREEN)
    else:
        hint = f"; `mmgen check --repair` rebuilds {fixable} of them" if fixable and report.found is None else ""
        typer.secho(f"problems remain: {summary}{hint}", fg=typer.colors.RED)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _print_problem(p: Problem) -> None:
    parts = (p.index and f"index {p.index}", p.modality, p.model and f"model {p.model}")
    where = " / ".join(x for x in parts if x) or ("store" if p.code.startswith("store") else "workspace")
    typer.secho(f"{p.severity.upper():7s} {p.code}  {where}", fg=_COLOURS.get(p.severity), bold=p.severity == "error")
    typer.echo(f"        {p.message}" + (f" (e.g. {', '.join(p.examples)})" if p.examples else ""))
    typer.echo(f"        means: {p.meaning}")
    typer.echo(f"        repair: {p.repair}")
