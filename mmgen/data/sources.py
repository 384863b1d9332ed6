"""The source factory: a SOURCE string (corpus name, folder or manifest) becomes Source objects."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from mmgen.data import emoji, iconify, openclipart
from mmgen.data.folder import folder_records
from mmgen.data.records import MANIFEST_SUFFIXES, Record, read_records, unqualify
from mmgen.errors import DataError, UnknownNameError

EMOJI_STYLE_SETS: tuple[str, ...] = tuple(iconify.EMOJI_SETS)
ICON_SET_NAMES: tuple[str, ...] = tuple(iconify.ICON_SETS)
SOURCE_NAMES: tuple[str, ...] = (
    "emoji", "openmoji", "openmoji-color", "openmoji-black", "twemoji", "openclipart",
    "emoji-styles", *EMOJI_STYLE_SETS, "icons", *ICON_SET_NAMES,
)  # fmt: skip
# Names that expand to several corpora.
SOURCE_GROUPS: dict[str, tuple[str, ...]] = {
    "emoji": emoji.EMOJI_STYLES,
    "openmoji": emoji.OPENMOJI_STYLES,
    "emoji-styles": EMOJI_STYLE_SETS,
    "icons": ICON_SET_NAMES,
}
ICONIFY_PREFIX = "iconify:"
ENV_DATA = "MMGEN_DATA"


@dataclass
class Source:
    """One corpus to index: its name in the SQL store and a cheap generator of its records."""

    corpus: str
    spec: str
    kind: str = "manifest"  # "emoji", "openclipart", "folder" or "manifest"
    root: Path | None = None
    licence: str | None = None
    loader: Callable[[], Iterator[Record]] = field(default=lambda: iter(()), repr=False, compare=False)
    synthetic: bool = False  # generated items (`mmgen index outputs`): stored with `synthetic = true`

    def records(self) -> Iterator[Record]:
        """Yield the corpus's records (no image is decoded)."""
        return self.loader()


def data_dir_default() -> Path:
    """Return the data folder: $MMGEN_DATA, else ./data."""
    return Path(os.environ.get(ENV_DATA) or "data").expanduser().resolve()


def source_choices() -> list[str]:
    """Return what open_sources accepts, for error messages and help text."""
    return [*SOURCE_NAMES, "iconify:<prefix>", "<folder>", "<manifest.jsonl|.json|.csv>"]


def open_sources(spec: str, data_dir: Path | None = None) -> list[Source]:
    """Resolve a SOURCE string to its sources; raise UnknownNameError or DataError (not fetched, not found)."""
    name = spec.strip()
    ddir = Path(data_dir).expanduser().resolve() if data_dir is not None else data_dir_default()
    if name in SOURCE_NAMES:
        names = SOURCE_GROUPS.get(name, (name,))
        return [_named_source(n, spec, ddir) for n in names]
    if name.startswith(ICONIFY_PREFIX):
        return [_iconify_source(name.removeprefix(ICONIFY_PREFIX), spec, ddir)]
    path = Path(name).expanduser()
    if name and path.is_dir():
        root = path.resolve()
        return [Source(str(root), spec, "folder", root, None, lambda: folder_records(root))]
    if name and path.suffix.lower() in MANIFEST_SUFFIXES:
        if not path.is_file():
            raise DataError(f"manifest not found: {path}")
        return _manifest_sources(path.resolve(), spec)
    if name.endswith(("/", os.sep)) or (name.startswith((".", "/", "~")) and not path.suffix):
        raise DataError(f"folder not found: {path}")
    raise UnknownNameError("source", spec, source_choices())


def _manifest_sources(manifest: Path, spec: str) -> list[Source]:
    """A manifest is one corpus named by its path; records that name theirs (`corpus`, as `mmgen data manifest`
    writes) are one source per corpus named, keyed as that corpus keys them, so re-indexing them adds nothing.

    Finding the corpora reads the manifest once (no image is opened).
    """
    named: dict[str, None] = {}
    unnamed = False
    for record in read_records(manifest):
        if record.corpus is None:
            unnamed = True
        else:
            named.setdefault(record.corpus)
    if not named:
        return [Source(str(manifest), spec, "manifest", manifest, None, lambda: read_records(manifest))]
    sources = [Source(corpus, spec, "manifest", manifest, None, partial(_corpus_records, manifest, corpus))
               for corpus in named]  # fmt: skip
    if unnamed:  # records without a corpus (malformed lines included) keep the manifest's own
        sources.insert(0, Source(str(manifest), spec, "manifest", manifest, None,
                                 partial(_corpus_records, manifest, None)))  # fmt: skip
    return sources


def _corpus_records(manifest: Path, corpus: str | None) -> Iterator[Record]:
    return (unqualify(r) for r in read_records(manifest) if r.corpus == corpus)


def _named_source(name: str, spec: str, data_dir: Path) -> Source:
    if name == "openclipart":
        root = openclipart.openclipart_root(data_dir)
        openclipart.check_fetched(root)
        return Source(
            name, spec, "openclipart", root, openclipart.LICENCE, lambda: openclipart.openclipart_records(root)
        )
    if name in EMOJI_STYLE_SETS or name in ICON_SET_NAMES:
        return _iconify_source(name, spec, data_dir)
    emoji.check_fetched(data_dir, name)
    if name == "twemoji":
        loader: Callable[[], Iterator[Record]] = lambda: emoji.twemoji_records(data_dir)  # noqa: E731
    else:
        loader = lambda: emoji.openmoji_records(data_dir, name)  # noqa: E731
    return Source(name, spec, "emoji", data_dir, emoji.LICENCES[name], loader)


def _iconify_source(prefix: str, spec: str, data_dir: Path) -> Source:
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,63}", prefix):
        raise DataError(f"iconify: takes a set prefix: lower-case letters, digits and '-', e.g. mdi; not {prefix!r}")
    iconify.check_rendered(data_dir, prefix)
    iset = iconify.load_set(data_dir, prefix)
    root = iconify.package_dir(data_dir, prefix)
    return Source(prefix, spec, "iconify", root, iset.licence, iconify.set_records(data_dir, prefix, iset.info))
