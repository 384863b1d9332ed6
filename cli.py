"""mmgen command line: one typer app, sub-command groups joined with `add_typer`.

Only this module turns library errors (`MmgenError`) into messages and exit codes. Heavy
libraries (torch, faiss, open_clip, SQLAlchemy models) are imported inside the commands, so
`mmgen --help` stays instant.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

app = typer.Typer(
    name="mmgen",
    help="Index image and text collections into FAISS and a SQL store; search them from the command line.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Fetch the demo corpora and write manifests.", no_args_is_help=True)
db_app = typer.Typer(help="The SQL store: migrations.", no_args_is_help=True)
eval_app = typer.Typer(help="Evaluate encoders with the field's standard protocols.", no_args_is_help=True)
train_app = typer.Typer(help="Train models on the workspace's corpora.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(train_app, name="train")
app.add_typer(db_app, name="db")
app.add_typer(eval_app, name="eval")

WorkspaceOpt = Annotated[
    Optional[Path],
    typer.Option("--workspace", "-w", envvar="MMGEN_WORKSPACE", help="Workspace folder [default: ./indexes]."),
]
DbOpt = Annotated[
    Optional[str],
    typer.Option("--db", envvar="MMGEN_DB", help="SQLAlchemy URL of the store [default: SQLite in the workspace]."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]
DataDirOpt = Annotated[
    Optional[Path], typer.Option("--data-dir", envvar="MMGEN_DATA", help="Where `mmgen data fetch` put corpora.")
]

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130


@contextmanager
def _errors() -> Iterator[None]:
    """Turn library errors into one line on stderr and a non-zero exit code."""
    from mmgen.errors import MmgenError

    try:
        yield
    except MmgenError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(EXIT_ERROR) from None
    except KeyboardInterrupt:
        typer.secho("interrupted", fg=typer.colors.YELLOW, err=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None


def _workspace(workspace: Path | None, db: str | None) -> Any:
    from mmgen.workspace import Workspace

    return Workspace.resolve(workspace, db)


def _print_json(data: Any) -> None:
    typer.echo(json.dumps(data, ensure_ascii=False, indent=2))


# ---- index ---------------------------------------------------------------------------------
@app.command("index")
def index_cmd(
    source: Annotated[
        str,
        typer.Argument(
            help="emoji | openmoji | openmoji-color | openmoji-black | twemoji | openclipart | a folder of images "
            "(+ same-name .txt captions) | a .jsonl/.csv manifest."
        ),
    ],
    workspace: WorkspaceOpt = None,
    db: DbOpt = None,
    name: Annotated[str, typer.Option("--name", "-n", help="Index name inside the workspace.")] = "default",
    encoder: Annotated[
        Optional[str],
        typer.Option(
            "--encoder",
            "-e",
            help="st:NAME_OR_PATH | openclip:ARCH/TAG_OR_CHECKPOINT | mmgen:NAME. Default: the index's encoder, "
            "or st:all-MiniLM-L6-v2 for a new index.",
        ),
    ] = None,
    preset: Annotated[
        Optional[str],
        typer.Option("--preset", help="FAISS preset (see `mmgen info`) or a factory string; changing it rebuilds."),
    ] = None,
    prune: Annotated[bool, typer.Option("--prune", help="Remove items whose source files are gone.")] = False,
    reembed: Annotated[
        bool,
        typer.Option(
            "--reembed",
            help="Drop all vectors of the index and rebuild it with --encoder (then index its other sources again).",
        ),
    ] = False,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Items per batch (and per commit).")] = 128,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Image decoding threads.")] = 2,
    data_dir: DataDirOpt = None,
    device: DeviceOpt = "auto",
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Embed a corpus into an index: incremental (only new or changed items) and resumable."""
    with _errors():
        from mmgen.indexer import IndexOptions, index_sources

        ws = _workspace(workspace, db)
        opts = IndexOptions(
            name=name,
            encoder=encoder,
            preset=preset,
            prune=prune,
            reembed=reembed,
            batch_size=batch_size,
            workers=workers,
            progress=not quiet and not as_json,
            device=device,
        )
        report = index_sources(source, ws, opts, data_dir)
        if as_json:
            _print_json(report.to_json())
        else:
            _print_index_report(report, ws.root)
        if report.interrupted:
            raise typer.Exit(EXIT_INTERRUPTED)


def _print_index_report(report: Any, root: Path) -> None:
    echo = typer.echo
    echo(
        f"index {report.index!r} ({report.encoder}) in {root}: added {report.added}, updated {report.updated}, "
        f"unchanged {report.unchanged}, removed {report.removed}, failed {report.failed_count}"
        + (f", skipped {report.skipped}" if report.skipped else "")
    )
    if report.missing:
        echo(f"  {report.missing} items are no longer in the source; re-run with --prune to remove them")
    for reason, n in report.skipped_reasons.items():
        echo(f"  skipped {n}: {reason}")
    if report.failed:
        shown = report.failed[:20]
        echo(f"  failures ({report.failed_count}):")
        for key, reason in shown:
            echo(f"    {key}: {reason}")
        if report.failed_count > len(shown):
            echo(f"    ... and {report.failed_count - len(shown)} more (use --json for all)")
    totals = ", ".join(f"{m} {n}" for m, n in report.totals.items())
    stages = ", ".join(f"{k} {v:.1f}s" for k, v in report.timings.items())
    echo(f"  vectors in index: {totals or 'none'}; time: {stages}")
    if report.interrupted:
        echo("  interrupted: everything committed so far is kept; run the same command again to finish")


# ---- search --------------------------------------------------------------------------------
@app.command("search")
def search_cmd(
    query: Annotated[Optional[str], typer.Argument(help="Query text (or use --image).")] = None,
    image: Annotated[Optional[Path], typer.Option("--image", "-i", help="Query image file.")] = None,
    workspace: WorkspaceOpt = None,
    db: DbOpt = None,
    index: Annotated[Optional[str], typer.Option("--index", help="Index name [default: default].")] = None,
    to: Annotated[
        Optional[str], typer.Option("--to", help="image or text [default: image when the index has images].")
    ] = None,
    k: Annotated[int, typer.Option("-k", "--k", min=1, help="Number of hits.")] = 10,
    where: Annotated[
        Optional[list[str]],
        typer.Option("--where", help="Metadata filter key=value (repeatable; keys: meta keys, corpus, group)."),
    ] = None,
    encoder: Annotated[
        Optional[str], typer.Option("--encoder", help="Must match the index's encoder [default: the index's].")
    ] = None,
    device: DeviceOpt = "auto",
    as_json: JsonOpt = False,
) -> None:
    """Search an index: text->text, text->image, image->text, image->image."""
    with _errors():
        from mmgen.search import Searcher, parse_where
        from mmgen.store.db import open_store

        ws = _workspace(workspace, db)
        filters = parse_where(where or [])
        store = open_store(ws.db_url)
        try:
            searcher = Searcher(ws, store, index, encoder=encoder, device=device)
            result = searcher.search(text=query, image=image, to=to, k=k, where=filters)
        finally:
            store.close()
        if as_json:
            _print_json(result.to_json())
            return
        q = result.query
        typer.echo(
            f"{q['text'] if q['text'] is not None else q['image']} -> {q['to']} ({len(result.hits)} hits, {result.latency_ms:.0f} ms)"
        )
        for rank, hit in enumerate(result.hits, 1):
            where_from = f"{hit.corpus}:{hit.key}"
            shown = hit.text if hit.text is not None else ""
            typer.echo(f"{rank:3d}  {hit.score:.3f}  {hit.modality:5s}  {shown[:60]:60s}  {where_from}")


# ---- data ----------------------------------------------------------------------------------
@data_app.command("fetch")
def data_fetch(
    what: Annotated[str, typer.Argument(help="emoji | openclipart | all")],
    data_dir: Annotated[
        Optional[Path], typer.Option("--data-dir", envvar="MMGEN_DATA", help="[default: ./data]")
    ] = None,
) -> None:
    """Fetch a demo corpus from the package registries (npm, Debian) and prepare it."""
    with _errors():
        from mmgen.data.fetch import fetch_emoji, fetch_openclipart
        from mmgen.data.sources import data_dir_default
        from mmgen.errors import UnknownNameError

        root = (data_dir or data_dir_default()).resolve()
        fetchers: dict[str, Callable[[Path], Any]] = {"emoji": fetch_emoji, "openclipart": fetch_openclipart}
        if what not in (*fetchers, "all"):
            raise UnknownNameError("corpus", what, [*fetchers, "all"])
        for name, fetch in fetchers.items():
            if what in (name, "all"):
                result = fetch(root)
                typer.echo(f"{name}: {json.dumps(result, default=str)}")


@data_app.command("manifest")
def data_manifest(
    source: Annotated[str, typer.Argument(help="A corpus name, folder or manifest (as for `mmgen index`).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Manifest to write (.jsonl or .csv).")],
    data_dir: DataDirOpt = None,
) -> None:
    """Write the records of a source as a JSONL (or CSV) manifest."""
    with _errors():
        from mmgen.data.records import write_manifest
        from mmgen.data.sources import open_sources

        sources = open_sources(source, data_dir)
        errors: list[str] = []

        def good() -> Iterator[Any]:
            for src in sources:
                for rec in src.records():
                    if rec.error:
                        errors.append(f"{rec.key}: {rec.error}")
                        continue
                    yield rec

        n = write_manifest(good(), output)
        typer.echo(f"wrote {n} records to {output}" + (f"; {len(errors)} unreadable rows skipped" if errors else ""))
        for line in errors[:20]:
            typer.echo(f"  {line}", err=True)


@data_app.command("protocol")
def data_protocol(
    name: Annotated[str, typer.Argument(help="loso (leave Twemoji out) | product (held-out concepts)")],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Folder for train.jsonl, the eval manifests, protocol.json.")
    ],
    data_dir: DataDirOpt = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the held-out split (product).")] = 0,
) -> None:
    """Write the train and evaluation manifests of a fixed evaluation protocol."""
    with _errors():
        from mmgen.eval.protocols import write_protocol

        paths = write_protocol(name, output, data_dir, seed)  # type: ignore[arg-type]
        for label, path in paths.items():
            typer.echo(f"{label:22s} {path}")


# ---- train ---------------------------------------------------------------------------------
@train_app.command("encoder")
def train_encoder_cmd(
    sources: Annotated[
        list[str], typer.Argument(help="Corpora, folders or manifests to train on (as for `mmgen index`).")
    ],
    name: Annotated[
        str, typer.Option("--name", "-n", help="Model name: saved in WORKSPACE/models/NAME, used as mmgen:NAME.")
    ],
    workspace: WorkspaceOpt = None,
    db: DbOpt = None,
    tower: Annotated[
        str,
        typer.Option(
            "--tower", help="Image tower: mmgen-convnet-s | mmgen-convnet-m | mmgen-vit-tiny | openclip:ARCH."
        ),
    ] = "mmgen-convnet-s",
    init: Annotated[
        Optional[str], typer.Option("--init", help="Start the image tower from openclip:ARCH/TAG_OR_CHECKPOINT.")
    ] = None,
    minutes: Annotated[
        Optional[float], typer.Option("--minutes", help="Training time budget (the schedule fits it).")
    ] = None,
    epochs: Annotated[
        Optional[float], typer.Option("--epochs", help="Passes over the concepts (instead of --minutes).")
    ] = None,
    steps: Annotated[Optional[int], typer.Option("--steps", help="Optimiser steps (instead of --minutes).")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=2, help="Distinct concepts per batch.")] = 256,
    lr: Annotated[float, typer.Option("--lr")] = 2e-3,
    image_size: Annotated[int, typer.Option("--image-size", min=16)] = 64,
    unlock_text_layers: Annotated[
        int, typer.Option("--unlock-text-layers", min=0, help="Train the top N MiniLM layers (0: locked).")
    ] = 0,
    augment: Annotated[str, typer.Option("--augment", help="style | strong | none")] = "style",
    sampling: Annotated[
        str,
        typer.Option(
            "--sampling", help="Batch units: concept (each once per epoch) | image (weighted by their images)."
        ),
    ] = "concept",
    seed: Annotated[int, typer.Option("--seed")] = 0,
    resume: Annotated[str, typer.Option("--resume", help="auto | require | never")] = "auto",
    data_dir: DataDirOpt = None,
    device: DeviceOpt = "auto",
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Train a joint image-text encoder: a locked MiniLM text tower and a trainable image tower (LiT-style)."""
    with _errors():
        from mmgen.train.encoder import TrainConfig, train_encoder

        ws = _workspace(workspace, db)
        cfg = TrainConfig(
            name=name,
            image_tower=tower,
            init=init,
            image_size=image_size,
            batch_size=batch_size,
            lr=lr,
            max_minutes=minutes if minutes is not None or epochs is not None or steps is not None else 12.0,
            epochs=epochs,
            steps=steps,
            seed=seed,
            unlocked_text_layers=unlock_text_layers,
            augment=augment,
            sampling=sampling,
            resume=resume,
            device=device,
            progress=not quiet and not as_json,
            data_dir=str(data_dir) if data_dir else None,
        )
        result = train_encoder(sources, ws, cfg)
        data = result.report
        if as_json:
            _print_json({**result.manifest, "status": result.status, "path": str(result.path), "data": data.to_json()})
        else:
            loss = "n/a" if result.final_loss is None else f"{result.final_loss:.4f}"
            typer.echo(
                f"{result.status}: mmgen:{result.name} after {result.steps} steps, {result.samples_seen} samples, "
                f"{result.train_seconds / 60:.1f} min ({result.samples_per_second:.0f} samples/s), final loss {loss}"
            )
            typer.echo(f"  trained on {data.used} of {data.records} records ({data.units} concepts)")
            if data.skipped:
                typer.echo(
                    f"  skipped {data.skipped}: no image {data.skipped_no_image}, no text {data.skipped_no_text}, "
                    f"unreadable {data.record_errors + data.corrupt_images}, duplicate images {data.duplicate_images}"
                )
                for message in data.errors[:10]:
                    typer.echo(f"    {message}")
            if result.path:
                typer.echo(f"  saved in {result.path}")
        if result.status != "completed":
            raise typer.Exit(EXIT_INTERRUPTED)


# ---- eval ----------------------------------------------------------------------------------
@eval_app.command("retrieval")
def eval_retrieval(
    manifest: Annotated[Path, typer.Argument(help="JSONL/CSV manifest: images and texts, relevance by `group`.")],
    encoder: Annotated[
        str, typer.Option("--encoder", "-e", help="Encoder name (mmgen:NAME resolves in the workspace).")
    ],
    workspace: WorkspaceOpt = None,
    device: DeviceOpt = "auto",
    as_json: JsonOpt = False,
) -> None:
    """Recall@1/5/10 image->text and text->image over a manifest (CLIP_benchmark's definition)."""
    with _errors():
        from mmgen.eval.retrieval import evaluate_manifest

        ws = _workspace(workspace, None)
        report = evaluate_manifest(manifest, encoder, device=device, progress=not as_json, models_dir=ws.models_dir)
        if as_json:
            _print_json(report.to_json())
            return
        typer.echo(f"{manifest} with {report.encoder}: {report.n_images} images, {report.n_texts} texts")
        typer.echo(f"{'direction':15s} {'R@1':>7s} {'R@5':>7s} {'R@10':>7s}")
        for label, scores in (("image->text", report.image_to_text), ("text->image", report.text_to_image)):
            typer.echo(f"{label:15s} " + " ".join(f"{100 * scores[k]:6.1f}%" for k in ("R@1", "R@5", "R@10")))
        if report.skipped:
            typer.echo(f"skipped {len(report.skipped)} records:")
            for key, reason in report.skipped[:20]:
                typer.echo(f"  {key}: {reason}")


# ---- db ------------------------------------------------------------------------------------
@db_app.command("upgrade")
def db_upgrade(workspace: WorkspaceOpt = None, db: DbOpt = None, revision: str = "head") -> None:
    """Apply the Alembic migrations (also done automatically when a workspace is opened)."""
    with _errors():
        from mmgen.store.db import current_revision, upgrade

        ws = _workspace(workspace, db)
        if ws.db_url.startswith("sqlite"):
            ws.root.mkdir(parents=True, exist_ok=True)
        upgrade(ws.db_url, revision)
        typer.echo(f"store at revision {current_revision(ws.db_url)}")


@db_app.command("current")
def db_current(workspace: WorkspaceOpt = None, db: DbOpt = None) -> None:
    """Print the store's schema revision."""
    with _errors():
        from mmgen.store.db import current_revision

        typer.echo(current_revision(_workspace(workspace, db).db_url) or "(empty store)")


# ---- info ----------------------------------------------------------------------------------
@app.command("info")
def info_cmd(workspace: WorkspaceOpt = None, db: DbOpt = None, as_json: JsonOpt = False) -> None:
    """Show the workspace: indexes, item counts, encoders; and the available presets."""
    with _errors():
        from mmgen.info import workspace_info

        info = workspace_info(_workspace(workspace, db))
        if as_json:
            _print_json(info)
            return
        typer.echo(f"workspace: {info['workspace']}\nstore: {info['store']}")
        typer.echo(f"corpora: {', '.join(f'{c} ({n})' for c, n in info['corpora'].items()) or 'none'}")
        for ix in info["indexes"]:
            counts = ", ".join(f"{m} {n}" for m, n in ix["vectors"].items()) or "empty"
            typer.echo(f"index {ix['name']}: {ix['encoder']} dim {ix['dim']} {ix['factory']}: {counts}")
        typer.echo("presets:")
        for name, desc in info["presets"].items():
            typer.echo(f"  {name:14s} {desc}")


def main() -> None:
    """Entry point for `python cli.py`."""
    app()


if __name__ == "__main__":
    sys.exit(main())
