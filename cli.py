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
    hash_name: Annotated[
        Optional[str],
        typer.Option(
            "--hash",
            help="Also keep the binary codes of this hasher (`mmgen train hasher`) in a FAISS binary index; "
            "recorded, so later runs keep the codes in step.",
        ),
    ] = None,
    hash_preset: Annotated[
        Optional[str],
        typer.Option("--hash-preset", help="Binary index preset: binary-flat (default), binary-hnsw32, binary-ivf1024."),
    ] = None,
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
            hash=hash_name,
            hash_preset=hash_preset,
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
    if report.hasher:
        echo(f"  codes of hasher {report.hasher}: " + ", ".join(f"{m} {n}" for m, n in report.codes.items()))
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
        typer.Option(
            "--where",
            help="Filter KEY=VALUE, KEY!=VALUE or KEY>=N / <= / > / < (repeatable: a repeated KEY= means any of, "
            "different keys all hold; keys: meta keys, corpus, group, modality; exact, case-sensitive).",
        ),
    ] = None,
    encoder: Annotated[
        Optional[str], typer.Option("--encoder", help="Must match the index's encoder [default: the index's].")
    ] = None,
    mode: Annotated[
        Optional[str],
        typer.Option(
            "--mode",
            help="float (exact, default) | codes (Hamming ranking of the index's binary codes) | rerank "
            "(Hamming short list, re-scored exactly from the memory-mapped vectors).",
        ),
    ] = None,
    rerank: Annotated[
        Optional[int],
        typer.Option("--rerank", min=1, help="Vectors re-scored exactly by --mode rerank [default: 100]; implies --mode rerank. On binary-flat codes they are the best C of a 10xC Hamming list under asymmetric scoring."),
    ] = None,
    device: DeviceOpt = "auto",
    as_json: JsonOpt = False,
) -> None:
    """Search an index: text->text, text->image, image->text, image->image."""
    with _errors():
        from mmgen.search import Searcher
        from mmgen.store.db import open_store
        from mmgen.store.filters import parse_where

        ws = _workspace(workspace, db)
        filters = parse_where(where or [])
        store = open_store(ws.db_url)
        try:
            searcher = Searcher(ws, store, index, encoder=encoder, device=device)
            result = searcher.search(
                text=query, image=image, to=to, k=k, where=filters,
                mode=mode or ("rerank" if rerank is not None else "float"), rerank=rerank,
            )  # fmt: skip
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


# ---- caption -------------------------------------------------------------------------------
@app.command("caption")
def caption_cmd(
    images: Annotated[list[Path], typer.Argument(help="Image files to caption.")],
    workspace: WorkspaceOpt = None,
    db: DbOpt = None,
    index: Annotated[Optional[str], typer.Option("--index", help="Index to retrieve from [default: default].")] = None,
    model: Annotated[str, typer.Option("--model", "-m", help="Captioner in WORKSPACE/models.")] = "captioner",
    k: Annotated[
        Optional[int], typer.Option("-k", "--k", min=1, help="Retrieved captions [default: the captioner's k].")
    ] = None,
    decode: Annotated[str, typer.Option("--decode", help="greedy | beam | sample")] = "beam",
    beams: Annotated[int, typer.Option("--beams", min=1, help="Beam width (--decode beam).")] = 3,
    temperature: Annotated[float, typer.Option("--temperature", help="Softmax temperature (--decode sample).")] = 1.0,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Seed of --decode sample.")] = None,
    device: DeviceOpt = "auto",
    as_json: JsonOpt = False,
) -> None:
    """Caption images, grounded on the k nearest captions of the workspace (all recorded in SQL).

    --json prints one JSON object per image and line (JSON Lines): {"image", "caption", "retrieved":
    [{"id", "text", "score"}], "model", "latency_ms", "prompt_id"}, or {"image", "error"}.
    """
    with _errors():
        from mmgen.generate.caption import CaptionSettings, caption_images

        settings = CaptionSettings(
            model=model, index=index, k=k, decode=decode, beams=beams, temperature=temperature, seed=seed, device=device
        )
        results = caption_images(_workspace(workspace, db), images, settings)
    for result in results:
        if as_json:
            typer.echo(json.dumps(result.to_json(), ensure_ascii=False))
        if result.error is not None:
            typer.secho(f"error: {result.image}: {result.error}", fg=typer.colors.RED, err=True)
        elif not as_json:
            typer.echo(f"{result.image}: {result.caption}  ({result.latency_ms:.0f} ms, {result.model})")
            for rank, hit in enumerate(result.retrieved, 1):
                typer.echo(f"  {rank}. {hit.score:.3f}  {hit.text}")
    failed = sum(r.error is not None for r in results)
    if failed:
        typer.secho(f"{failed} of {len(results)} images could not be captioned", fg=typer.colors.RED, err=True)
        raise typer.Exit(EXIT_ERROR)


# ---- generate ------------------------------------------------------------------------------
@app.command("generate")
def generate_cmd(
    texts: Annotated[Optional[list[str]], typer.Argument(help="Prompt text(s); or --prompts FILE.")] = None,
    workspace: WorkspaceOpt = None,
    db: DbOpt = None,
    prompts: Annotated[
        Optional[Path], typer.Option("--prompts", help="Text file, one prompt per line (# comments).")
    ] = None,
    n: Annotated[int, typer.Option("--n", help="Pictures per prompt.")] = 4,
    seed: Annotated[Optional[int], typer.Option("--seed", help="0..2**32-1 (default: random, printed).")] = None,
    k: Annotated[
        Optional[int], typer.Option("-k", "--k", help="Retrieved images (default: the generator's k).")
    ] = None,
    steps: Annotated[int, typer.Option("--steps", help="DDIM sampling steps.")] = 30,
    guidance: Annotated[float, typer.Option("--guidance", help="Classifier-free guidance scale (1: none).")] = 3.0,
    init_strength: Annotated[
        float,
        typer.Option(
            "--init-strength",
            help="In (0, 1]: start sample i from retrieved image i mod k noised to this time (1: pure noise).",
        ),
    ] = 1.0,
    model: Annotated[str, typer.Option("--model", "-m", help="Generator in WORKSPACE/models.")] = "generator",
    index: Annotated[
        Optional[str], typer.Option("--index", help="Index to retrieve from (default: the generator's).")
    ] = None,
    out: Annotated[
        Optional[Path], typer.Option("--out", "-o", help="Folder for the PNGs (default: WORKSPACE/outputs).")
    ] = None,
    sheet: Annotated[
        Optional[Path], typer.Option("--sheet", help="Also write a labelled grid, prompts x samples (PNG).")
    ] = None,
    device: DeviceOpt = "auto",
    as_json: JsonOpt = False,
) -> None:
    """Generate pictures from text, conditioned on the k nearest indexed images (all recorded in SQL).

    --json prints {"generations": [{"prompt", "prompt_id", "seed", "model", "files", "similarity",
    "retrieved": [{"rank", "item_id", "score", "uri", "text", "group"}], "latency_ms", "params",
    "init_ranks"}], "sheet"}; init_ranks: per picture, the retrieved rank it started from (empty at strength 1).
    """
    with _errors():
        import secrets

        from mmgen.errors import ConfigError
        from mmgen.generate.diffusion import check_strength
        from mmgen.generate.image import ImageGenerator, check_seed, read_prompts
        from mmgen.store.db import open_store

        wanted = list(texts or []) + (read_prompts(prompts) if prompts is not None else [])
        if not wanted:
            raise ConfigError("give a prompt text (or --prompts FILE)")
        seed = secrets.randbits(32) if seed is None else check_seed(seed)
        init_strength = check_strength(init_strength)
        ws = _workspace(workspace, db)
        with open_store(ws.db_url) as store:
            generator = ImageGenerator(ws, store, model, index, device)
            results = [
                generator.generate_and_record(
                    text, n=n, seed=seed, k=k, steps=steps, guidance=guidance, out_dir=out, init_strength=init_strength
                )
                for text in wanted
            ]
        sheet_path = None
        if sheet is not None:
            from mmgen.generate.sheet import SheetRow, save_sheet

            rows = [
                SheetRow(r.prompt, r.images, [nb.uri for nb in r.neighbours], note=f"seed {r.seed}") for r in results
            ]
            title = f"{model}: {steps} DDIM steps, guidance {guidance:g}"
            if init_strength < 1.0:
                title += f", started from retrieved images at strength {init_strength:g}"
            sheet_path = save_sheet(rows, sheet, title=title)
        if as_json:
            _print_json({"generations": [r.to_json() for r in results], "sheet": str(sheet_path) if sheet_path else None})
            return
        for r in results:
            typer.echo(f"{r.prompt!r} (seed {r.seed}, {r.latency_ms / 1000:.1f} s, {r.model}, prompt {r.prompt_id})")
            for path, sim in zip(r.files, r.similarity):
                typer.echo(f"  {path}  similarity {sim:.3f}")
            if r.neighbours:
                typer.echo("  retrieved: " + " | ".join(f"{nb.text} ({nb.score:.2f})" for nb in r.neighbours))
        if sheet_path:
            typer.echo(f"sheet: {sheet_path}")


# ---- data ----------------------------------------------------------------------------------
@data_app.command("fetch")
def data_fetch(
    what: Annotated[
        str, typer.Argument(help="emoji | emoji-styles | icons | iconify:PREFIX | openclipart | all")
    ],
    data_dir: Annotated[
        Optional[Path], typer.Option("--data-dir", envvar="MMGEN_DATA", help="[default: ./data]")
    ] = None,
) -> None:
    """Fetch a corpus from the package registries (npm, Debian) and prepare it (rendered once, cached)."""
    with _errors():
        from mmgen.data import iconify
        from mmgen.data.fetch import fetch_emoji, fetch_iconify, fetch_openclipart
        from mmgen.data.sources import data_dir_default
        from mmgen.errors import UnknownNameError

        root = (data_dir or data_dir_default()).resolve()
        fetchers: dict[str, Callable[[Path], Any]] = {
            "emoji": fetch_emoji,
            "emoji-styles": lambda d: fetch_iconify(d, dict(iconify.EMOJI_SETS)),
            "icons": lambda d: fetch_iconify(d, dict(iconify.ICON_SETS)),
            "openclipart": fetch_openclipart,
        }
        if what.startswith("iconify:"):
            prefix = what.removeprefix("iconify:")
            pinned = {**iconify.EMOJI_SETS, **iconify.ICON_SETS}.get(prefix)
            fetchers = {what: lambda d: fetch_iconify(d, {prefix: pinned})}
        elif what not in (*fetchers, "all"):
            raise UnknownNameError("corpus", what, [*fetchers, "iconify:PREFIX", "all"])
        problems = []
        for name, fetch in fetchers.items():
            if what in (name, "all"):
                result = fetch(root)
                problems += result.get("errors", [])
                typer.echo(f"{name}: {json.dumps(result, default=str)}")
        for line in problems:
            typer.echo(f"  failed: {line}", err=True)


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
    lr: Annotated[float, typer.Option("--lr")] = 6e-3,
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
    ] = "image",
    icon_weight: Annotated[
        float,
        typer.Option(
            "--icon-weight", min=0, help="Draw weight of an icon concept's image (Iconify icon sets); 0 leaves them out."
        ),
    ] = 0.2,
    caption_names: Annotated[
        bool,
        typer.Option("--caption-names/--no-caption-names", help="Emoji Unicode and short names as extra captions."),
    ] = False,
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
            icon_weight=icon_weight,
            caption_names=caption_names,
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


@train_app.command("captioner")
def train_captioner_cmd(
    workspace: WorkspaceOpt = None,
    db: DbOpt = None,
    index: Annotated[Optional[str], typer.Option("--index", help="Index to train on [default: default].")] = None,
    name: Annotated[
        Optional[str],
        typer.Option("--name", "-n", help="Saved as WORKSPACE/models/NAME [default: captioner, or captioner-noret]."),
    ] = None,
    k: Annotated[int, typer.Option("-k", "--k", min=1, help="Retrieved captions per image.")] = 4,
    no_retrieval: Annotated[
        bool, typer.Option("--no-retrieval", help="Train the image-only baseline decoder (no prompt, no copy head).")
    ] = False,
    epochs: Annotated[
        Optional[float], typer.Option("--epochs", help="Passes over the indexed images [default: 5].")
    ] = None,
    steps: Annotated[Optional[int], typer.Option("--steps", help="Optimiser steps (instead of --epochs).")] = None,
    minutes: Annotated[
        Optional[float], typer.Option("--minutes", help="Stop (and save) after this many minutes of training.")
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 64,
    lr: Annotated[float, typer.Option("--lr")] = 1e-3,
    prompt_dropout: Annotated[
        float,
        typer.Option("--prompt-dropout", min=0.0, max=0.99, help="Chance an example is trained without captions."),
    ] = 0.25,
    own_concept_p: Annotated[
        float,
        typer.Option(
            "--own-concept-p",
            min=0.0,
            max=1.0,
            help="Share of items (seeded) whose neighbours leave out only the item and identical images, so their "
            "concept's other styles may be retrieved; the rest leave out their whole concept.",
        ),
    ] = 0.5,
    exclude: Annotated[
        Optional[list[Path]],
        typer.Option(
            "--exclude",
            exists=True,
            dir_okay=False,
            help="Manifest (JSONL) whose concepts are left out of training, e.g. a held-out split; repeatable.",
        ),
    ] = None,
    image_noise: Annotated[
        float,
        typer.Option(
            "--image-noise",
            min=0.0,
            help="Max std of Gaussian noise on image embeddings (per example, uniform in [0, max]); neighbours are "
            "retrieved from the noisy vector, as for an unseen image.",
        ),
    ] = 0.0,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    device: DeviceOpt = "auto",
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Train the retrieval-augmented caption decoder on the workspace's indexed images and captions."""
    with _errors():
        from mmgen.train.captioner import CaptionerConfig, train_captioner

        cfg = CaptionerConfig(
            name=name or ("captioner-noret" if no_retrieval else "captioner"),
            index=index,
            k=k,
            retrieval=not no_retrieval,
            epochs=epochs,
            steps=steps,
            minutes=minutes,
            batch_size=batch_size,
            lr=lr,
            prompt_dropout=prompt_dropout,
            own_concept_p=own_concept_p,
            exclude=tuple(str(p) for p in exclude or ()),
            image_noise=image_noise,
            seed=seed,
            device=device,
            progress=not quiet and not as_json,
        )
        result = train_captioner(_workspace(workspace, db), cfg)
        if as_json:
            _print_json({**result.manifest, "path": str(result.path), "model_id": result.model_id})
            return
        loss = "n/a" if result.final_loss is None else f"{result.final_loss:.3f}"
        typer.echo(
            f"captioner {result.name}: {result.steps} steps ({result.epochs:g} epochs over {result.examples} images), "
            f"{result.train_seconds / 60:.1f} min, final loss {loss}"
            + (" (stopped by --minutes)" if result.stopped_by_time else "")
            + (f"; {result.manifest['excluded_items']} items of excluded concepts left out" if result.manifest.get("excluded_items") else "")
        )
        typer.echo(f"  saved in {result.path} (models row {result.model_id})")


@train_app.command("generator")
def train_generator_cmd(
    workspace: WorkspaceOpt = None,
    db: DbOpt = None,
    index: Annotated[Optional[str], typer.Option("--index", help="Index to train on (default: default).")] = None,
    name: Annotated[
        Optional[str],
        typer.Option(
            "--name", "-n", help="Saved as WORKSPACE/models/NAME (default: generator, or generator-noretrieval)."
        ),
    ] = None,
    no_retrieval: Annotated[
        bool, typer.Option("--no-retrieval", help="Train the text-only baseline (same data, network and budget).")
    ] = False,
    k: Annotated[int, typer.Option("-k", "--k", help="Retrieved images per training picture.")] = 4,
    preset: Annotated[
        str, typer.Option("--preset", help="auto (gpu on CUDA, else cpu) | cpu | gpu | tiny: network and budget.")
    ] = "auto",
    steps: Annotated[Optional[int], typer.Option("--steps", help="Optimiser steps (default: the preset's).")] = None,
    minutes: Annotated[
        Optional[float], typer.Option("--minutes", help="Stop, export and keep the state after this many minutes.")
    ] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="(default: the preset's)")] = None,
    lr: Annotated[Optional[float], typer.Option("--lr", help="(default: the preset's)")] = None,
    image_size: Annotated[int, typer.Option("--image-size", help="Side of the generated pictures.")] = 64,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the saved state of an interrupted or time-capped run.")
    ] = False,
    device: DeviceOpt = "auto",
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Train the diffusion image generator on the workspace's indexed images and captions."""
    with _errors():
        from mmgen.train.generator import GeneratorConfig, train_generator

        cfg = GeneratorConfig(
            name=name,
            index=index,
            retrieval=not no_retrieval,
            neighbours=k,
            preset=preset,
            steps=steps,
            minutes=minutes,
            batch_size=batch_size,
            lr=lr,
            image_size=image_size,
            seed=seed,
            resume=resume,
            device=device,
            progress=not quiet and not as_json,
        )
        result = train_generator(_workspace(workspace, db), cfg)
        if as_json:
            _print_json(
                {**result.manifest, "status": result.status, "path": str(result.path) if result.path else None,
                 "model_id": result.model_id, "steps": result.steps}
            )  # fmt: skip
        else:
            loss = "n/a" if result.final_loss is None else f"{result.final_loss:.4f}"
            typer.echo(
                f"{result.status}: generator {result.name} at step {result.steps} of {result.total_steps} "
                f"({result.images} images, {result.train_seconds / 60:.1f} min), final loss {loss}"
            )
            if any(result.skipped.values()):
                typer.echo(f"  skipped images: {result.skipped}")
            if result.path:
                typer.echo(f"  saved in {result.path} (models row {result.model_id})")
            if result.status != "completed":
                typer.echo("  the state is saved: run again with --resume to continue")
        if result.status == "interrupted":
            raise typer.Exit(EXIT_INTERRUPTED)


@train_app.command("hasher")
def train_hasher_cmd(
    workspace: WorkspaceOpt = None,
    db: DbOpt = None,
    bits: Annotated[int, typer.Option("--bits", help="Code width: 32, 64, 128 or 256.")] = 64,
    index: Annotated[Optional[str], typer.Option("--index", help="Index whose vectors it learns (default: default).")] = None,
    name: Annotated[
        Optional[str], typer.Option("--name", "-n", help="Saved in WORKSPACE/models/NAME [default: INDEX-BITSb].")
    ] = None,
    steps: Annotated[int, typer.Option("--steps", min=1, help="Optimiser steps (the schedule's length).")] = 1500,
    minutes: Annotated[
        Optional[float], typer.Option("--minutes", help="Optional wall-clock cap (stops early, schedule unchanged).")
    ] = None,
    hidden: Annotated[int, typer.Option("--hidden", min=0, help="Hidden width of the MLPs (0: linear).")] = 512,
    lr: Annotated[float, typer.Option("--lr")] = 1e-3,
    temperature: Annotated[
        float, typer.Option("--temperature", help="Of the target softmax over embedding cosines (lower: sharper).")
    ] = 0.03,
    holdout: Annotated[
        float, typer.Option("--holdout", help="Fraction of groups held out as `eval hashing` queries.")
    ] = 0.1,
    holdout_seed: Annotated[int, typer.Option("--holdout-seed", help="Seed of the held-out groups.")] = 0,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    device: DeviceOpt = "auto",
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Train a semantic-hashing autoencoder on an index's image and text vectors (one code space for both)."""
    with _errors():
        from mmgen.train.hasher import HasherConfig, train_hasher

        cfg = HasherConfig(
            bits=bits, index=index, name=name, steps=steps, minutes=minutes, hidden=hidden, lr=lr,
            temperature=temperature, holdout_fraction=holdout, holdout_seed=holdout_seed, seed=seed, device=device,
            progress=not quiet and not as_json,
        )  # fmt: skip
        result = train_hasher(_workspace(workspace, db), cfg)
        if as_json:
            manifest = {k: v for k, v in result.manifest.items() if k != "holdout"}
            holdout_info = {k: v for k, v in result.manifest["holdout"].items() if k != "groups"}
            _print_json({**manifest, "holdout": {**holdout_info, "groups": len(result.manifest["holdout"]["groups"])},
                         "path": str(result.path), "model_id": result.model_id})  # fmt: skip
            return
        m = result.manifest
        typer.echo(
            f"hasher {m['name']}: {m['bits']} bits on index {m['index']!r} ({m['encoder']}), {result.steps} steps in "
            f"{result.train_seconds / 60:.1f} min, final loss {result.final_loss:.4f}"
            + (" (stopped by --minutes)" if result.stopped_by_time else "")
        )
        typer.echo(
            f"  trained on {', '.join(f'{n} {mod}s' for mod, n in m['training_vectors'].items())}; "
            f"held out {len(m['holdout']['groups'])} groups for `mmgen eval hashing`"
        )
        typer.echo(f"  saved in {result.path} (models row {result.model_id}); use it: mmgen index SOURCE --hash {m['name']}")


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


@eval_app.command("captions")
def eval_captions_cmd(
    manifest: Annotated[Path, typer.Argument(help="JSONL/CSV manifest of captioned images (text = reference).")],
    workspace: WorkspaceOpt = None,
    db: DbOpt = None,
    index: Annotated[Optional[str], typer.Option("--index", help="Index to retrieve from [default: default].")] = None,
    model: Annotated[str, typer.Option("--model", "-m", help="The retrieval-augmented captioner.")] = "captioner",
    baseline: Annotated[
        str, typer.Option("--baseline", help="The captioner run without retrieved captions (b).")
    ] = "captioner-noret",
    k: Annotated[
        Optional[int], typer.Option("-k", "--k", min=1, help="Retrieved captions [default: the captioner's k].")
    ] = None,
    decode: Annotated[str, typer.Option("--decode", help="greedy | beam")] = "beam",
    beams: Annotated[int, typer.Option("--beams", min=1)] = 3,
    show: Annotated[int, typer.Option("--show", min=0, help="Print N example captions beside the true ones.")] = 0,
    limit: Annotated[
        Optional[int], typer.Option("--limit", min=1, help="Evaluate N records spread over the manifest (demos).")
    ] = None,
    exclude: Annotated[
        str,
        typer.Option(
            "--exclude",
            help="What retrieval leaves out per query: item (its own item and identical images) | concept (its "
            "whole concept, all styles).",
        ),
    ] = "concept",
    device: DeviceOpt = "auto",
    as_json: JsonOpt = False,
) -> None:
    """BLEU-4, CIDEr and exact match per style: (a) retrieval only, (b) decoder alone, (c) retrieval-augmented."""
    with _errors():
        from mmgen.eval.captions import METHODS, CaptionEvalSettings, evaluate_captions

        settings = CaptionEvalSettings(
            model=model, baseline=baseline, index=index, k=k, decode=decode, beams=beams, device=device,
            exclude=exclude, show=show, limit=limit, progress=not as_json,
        )  # fmt: skip
        report = evaluate_captions(manifest, _workspace(workspace, db), settings)
        if as_json:
            _print_json(report.to_json())
            return
        typer.echo(
            f"{manifest}: {report.n_images} images; index {report.index!r} ({report.encoder}), k={report.k}, "
            f"decode {report.decode}; retrieval leaves out each query's {report.exclude}; "
            f"(b) = {report.baseline} ({report.baseline_mode})"
        )
        typer.echo(f"{'split':16s} {'method':34s} {'BLEU-4':>7s} {'CIDEr':>7s} {'exact':>7s} {'n':>5s}")
        for split, methods in report.splits.items():
            for method, s in methods.items():
                typer.echo(
                    f"{split:16s} {METHODS[method]:34s} {s['bleu4']:7.3f} {s['cider']:7.3f} "
                    f"{100 * s['exact']:6.1f}% {s['n']:5d}"
                )
        for ex in report.examples:
            typer.echo(f"\n{ex['key']}  true: {ex['truth']}")
            typer.echo(f"  retrieved: {' | '.join(ex['retrieved'])}")
            for method in ("retrieval", "decoder", "ra_decoder"):
                typer.echo(f"  {METHODS[method].strip():34s} {ex[method]}")
        if report.skipped:
            typer.echo(f"skipped {len(report.skipped)} records:")
            for key, reason in report.skipped[:20]:
                typer.echo(f"  {key}: {reason}")


@eval_app.command("generation")
def eval_generation_cmd(
    prompts: Annotated[
        list[Path],
        typer.Argument(help="Prompt sets: JSONL/CSV manifests (one prompt per group = its text; its images = reference)."),
    ],
    workspace: WorkspaceOpt = None,
    db: DbOpt = None,
    index: Annotated[Optional[str], typer.Option("--index", help="Index to retrieve from (default: the generator's).")] = None,
    model: Annotated[str, typer.Option("--model", "-m", help="The retrieval-augmented generator (c).")] = "generator",
    baseline: Annotated[
        str, typer.Option("--baseline", help="The generator trained with --no-retrieval (b).")
    ] = "generator-noretrieval",
    sample: Annotated[
        int, typer.Option("--sample", help="Seeded sample of this many concepts per set (0: all).")
    ] = 200,
    where: Annotated[
        Optional[list[str]],
        typer.Option(
            "--where",
            help="Keep records matching KEY=VALUE, KEY!=VALUE or KEY>=N / <= / > / < (repeatable: a repeated KEY= "
            "means any of, different keys all hold; keys: meta keys, group; exact, case-sensitive).",
        ),
    ] = None,
    per_prompt: Annotated[int, typer.Option("--per-prompt", help="Pictures per prompt and generator.")] = 1,
    steps: Annotated[int, typer.Option("--steps", help="DDIM sampling steps.")] = 30,
    guidance: Annotated[float, typer.Option("--guidance", help="Classifier-free guidance scale.")] = 3.0,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the samples, the noise and the R-precision draws.")] = 0,
    sheet: Annotated[
        Optional[Path], typer.Option("--sheet", help="Write a sheet: real | retrieval | (b) | (c) per prompt.")
    ] = None,
    init_strength: Annotated[
        Optional[list[str]],
        typer.Option(
            "--init-strength",
            help="Score (c) at these init strengths in (0, 1] (repeatable or 1.0,0.7); below 1 a picture starts "
            "from the nearest image outside its concept, noised to that time [default: 1.0].",
        ),
    ] = None,
    device: DeviceOpt = "auto",
    as_json: JsonOpt = False,
) -> None:
    """Prompt similarity, R-precision, Frechet distance and memorisation: (a) retrieval only, (b) generator, (c) RA generator."""
    with _errors():
        from mmgen.eval.generation import evaluate_generation, parse_strengths, ra_method
        from mmgen.store.filters import parse_where

        strengths = parse_strengths(init_strength or ["1.0"])
        report = evaluate_generation(
            _workspace(workspace, db), prompts, model=model, baseline=baseline, index=index,
            sample=sample or None, where=parse_where(where or []), samples_per_prompt=per_prompt, steps=steps, guidance=guidance,
            seed=seed, device=device, sheet=sheet, progress=not as_json, init_strengths=strengths,
        )  # fmt: skip
        if as_json:
            _print_json(report.to_json())
            return
        s = report.settings
        typer.echo(
            f"index {s['index']!r} ({s['encoder']}); (c) {report.models['ra-generator']['name']}, "
            f"(b) {report.models['generator']['name']}; k={s['k']}, {s['steps']} steps, guidance {s['guidance']:g}"
        )
        labels = {
            "retrieval": "(a) retrieval only",
            "generator": "(b) generator, no retrieval",
            "ra-generator": "(c) retrieval-augmented",
            "real": "real pictures (reference)",
            **{ra_method(x): f"(c) RA, neighbour init {x:g}" for x in strengths if x < 1.0},
        }
        typer.echo(
            f"{'prompt set':22s} {'method':30s} {'sim':>6s} {'R-prec':>7s} {'FD':>7s} {'NN-dist':>8s} "
            f"{'copies':>7s} {'n':>5s}"
        )
        for rep in report.sets:
            for key, m in rep.methods.items():
                typer.echo(
                    f"{rep.name:22s} {labels[key]:30s} {m.similarity:6.3f} {100 * m.r_precision:6.1f}% "
                    f"{m.fd:7.3f} {m.nn_distance:8.3f} {100 * m.near_copies:6.1f}% {m.n:5d}"
                )
        typer.echo(f"{report.seconds / 60:.1f} min" + (f"; sheet: {report.sheet}" if report.sheet else ""))


@eval_app.command("hashing")
def eval_hashing_cmd(
    workspace: WorkspaceOpt = None,
    db: DbOpt = None,
    index: Annotated[Optional[str], typer.Option("--index", help="Index [default: default].")] = None,
    hasher: Annotated[
        Optional[list[str]], typer.Option("--hasher", help="Hasher name (repeatable) [default: all trained on the index].")
    ] = None,
    bits: Annotated[
        Optional[str], typer.Option("--bits", help="Comma-separated code widths to evaluate, e.g. 32,64,128,256.")
    ] = None,
    methods: Annotated[
        str, typer.Option("--methods", help="Comma-separated: autoencoder, lsh, itq, pca.")
    ] = "autoencoder,lsh,itq,pca",
    rerank: Annotated[int, typer.Option("--rerank", min=10, help="Short list re-ranked exactly.")] = 100,
    as_json: JsonOpt = False,
) -> None:
    """Recall@10 vs exact search and group mAP@100 of binary codes (autoencoder vs FAISS LSH / ITQ / PCA-sign)."""
    with _errors():
        from mmgen.errors import ConfigError
        from mmgen.eval.hashing import evaluate_hashing

        try:
            widths = [int(b) for b in bits.split(",")] if bits else None
        except ValueError:
            raise ConfigError(f"--bits takes comma-separated integers, not {bits!r}") from None
        report = evaluate_hashing(
            _workspace(workspace, db), index=index, hashers=hasher, bits=widths,
            methods=[m.strip() for m in methods.split(",") if m.strip()], rerank=rerank,
            progress=None if as_json else (lambda msg: typer.echo(f"  evaluating {msg}", err=True)),
        )  # fmt: skip
        if as_json:
            _print_json(report.to_json())
        else:
            typer.echo(report.table())


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
        for corpus, licence in info["licences"].items():
            typer.echo(f"  {corpus}: {licence}")
        for ix in info["indexes"]:
            counts = ", ".join(f"{m} {n}" for m, n in ix["vectors"].items()) or "empty"
            typer.echo(f"index {ix['name']}: {ix['encoder']} dim {ix['dim']} {ix['factory']}: {counts}")
            if ix.get("hash"):
                h = ix["hash"]
                codes = ", ".join(f"{m} {n}" for m, n in h["codes"].items()) or "not built yet"
                typer.echo(f"  codes: hasher {h['hasher']} ({h['bits']} bits, {h['preset']}): {codes}")
        if info["models"]:
            typer.echo("models: " + ", ".join(f"{m['name']} ({m['kind']})" for m in info["models"]))
        typer.echo("presets:")
        for name, desc in info["presets"].items():
            typer.echo(f"  {name:14s} {desc}")


def main() -> None:
    """Entry point for `python cli.py`."""
    app()


if __name__ == "__main__":
    sys.exit(main())
