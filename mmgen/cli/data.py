"""`mmgen data`: fetch the corpora, write manifests and protocols."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from mmgen.cli.common import (
    DataDirOpt,
    _errors,
    data_app,
)


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
    """Write the records of a source as a JSONL (or CSV) manifest.

    Each record names its corpus and has the id `CORPUS:KEY` (unique across the corpora of `emoji`, whose
    styles share code points); `mmgen index` of the manifest keys them as indexing SOURCE does.
    """
    with _errors():
        from mmgen.data.records import qualify, write_records
        from mmgen.data.sources import open_sources

        sources = open_sources(source, data_dir)
        errors: list[str] = []

        def good() -> Iterator[Any]:
            for src in sources:
                for rec in src.records():
                    if rec.error:
                        errors.append(f"{src.corpus}:{rec.key}: {rec.error}")
                        continue
                    yield qualify(rec, src.corpus)

        n = write_records(good(), output)
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
