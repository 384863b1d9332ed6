"""The two fixed train/eval protocols of the joint encoder, written as manifests.

- `loso` (leave one style out): train on OpenMoji color and black and OpenClipart; evaluate on
  Twemoji, a style training never sees.
- `product`: hold out a seeded 20% of base emoji concepts in every style (skin-tone variants
  with them) and a seeded 10% of OpenClipart drawings; train on everything else.

Evaluation manifests hold base emoji only (no skin-tone variants, components or OpenMoji extras),
flags in a manifest of their own, and never an image whose PNG bytes equal the image of another
concept in the same style (261 OpenMoji black flags are the same blank rectangle): such an image
cannot be retrieved right, whatever the model. Manifest ids are `SOURCE:KEY` (emoji keys repeat
across styles); `group` stays the concept (code points, or the OpenClipart key), and `meta.style`
names the source. The builder is a pure function over record lists; `write_protocol` opens the
real corpora and writes the files.
"""

from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from mmgen.data.checksums import file_sha256
from mmgen.data.iconify import EMOJI_SETS, ICON_SETS
from mmgen.data.concepts import concept_of
from mmgen.data.records import Record, write_records
from mmgen.errors import DataError, UnknownNameError

PROTOCOLS: tuple[str, ...] = ("loso", "product")
SOURCES: tuple[str, ...] = ("openmoji-color", "openmoji-black", "twemoji", "openclipart")
EMOJI_SOURCES: tuple[str, ...] = ("openmoji-color", "openmoji-black", "twemoji")
# Iconify sources a protocol uses when they are fetched (DATA.md section 3): more emoji styles, named icons.
STYLE_SOURCES: tuple[str, ...] = tuple(EMOJI_SETS)
ICON_SOURCES: tuple[str, ...] = tuple(ICON_SETS)
EMOJI_HOLDOUT = 0.2
OPENCLIPART_HOLDOUT = 0.1
ICON_HOLDOUT = 0.05
DEV_HOLDOUT = 0.1  # of the training emoji concepts: the development split for tuning
DEV_DIR = "dev"
TRAIN = "train.jsonl"
SUMMARY = "protocol.json"
_REQUIRED: dict[str, tuple[str, ...]] = {"loso": SOURCES, "product": SOURCES}
# Sources whose records reach an evaluation manifest: only their images are hashed for duplicates.
_EVALUATED: dict[str, tuple[str, ...]] = {"loso": ("twemoji",), "product": SOURCES}
_ICON_GROUP = "icon:"

DESCRIPTIONS = {
    "loso": (
        "Leave-one-style-out: train on every OpenMoji color and black record, every record of the fetched "
        "Iconify emoji styles and icon sets, and every OpenClipart drawing; "
        "evaluate on Twemoji base emoji (no skin-tone variants, components or extras), flags in a manifest "
        "of their own; evaluation images whose PNG bytes equal another concept's image in the same style "
        "are dropped."
    ),
    "product": (
        "Product model: numpy default_rng(seed) permutes the sorted list of base emoji concepts (code points "
        "without FE0F) and holds out the first 20% in every style (OpenMoji color, OpenMoji black, Twemoji) "
        "together with their skin-tone variants, then permutes the sorted OpenClipart keys and holds out the "
        "first 10%; the Iconify emoji styles (when fetched) hold out the same concepts; every icon whose "
        "caption contains a held-out concept's name (OpenMoji annotation, Unicode name or short name, as whole "
        "words, or squashed inside a one-word caption of 8+ letters) is left out of training (OpenClipart "
        "drawings that do are counted and stay); numpy permutes the sorted remaining icon concept groups whose "
        "name is no emoji's name and holds out the first 5% (icons-heldout.jsonl), and training icons with a "
        "held-out icon concept's name as a caption are left out; default_rng([seed, 1]) permutes the training "
        "emoji concepts without flags and takes 10% as the development split in dev/ "
        "(dev/train.jsonl leaves them out the same way, dev/heldout-vs-pool.jsonl queries them); train on "
        "everything else; evaluate on the held-out base emoji without "
        "flags among themselves and against every base emoji without flags of the three styles (the rest as "
        "meta.role=candidate), on held-out flags, and on the OpenClipart hold-out; evaluation images whose "
        "bytes equal another concept's image in the same source are dropped."
    ),
}


@dataclass
class Protocol:
    """A built protocol: manifest name -> records, in write order, and its summary."""

    name: str
    seed: int
    manifests: dict[str, list[Record]]
    summary: dict[str, Any]


def write_protocol(
    name: Literal["loso", "product"], out_dir: Path, data_dir: Path | None = None, seed: int = 0
) -> dict[str, Path]:
    """Build a protocol from the fetched corpora and write its manifests and protocol.json into out_dir."""
    from mmgen.data.sources import data_dir_default, open_sources

    _check_name(name)
    ddir = Path(data_dir).expanduser().resolve() if data_dir is not None else data_dir_default()
    corpora = {source: list(open_sources(source, ddir)[0].records()) for source in _REQUIRED[name]}
    for source in (*STYLE_SOURCES, *ICON_SOURCES):
        try:
            corpora[source] = list(open_sources(source, ddir)[0].records())
        except DataError:
            continue  # not fetched: the protocol is built from what is there, and says so
    protocol = build_protocol(name, corpora, seed)
    protocol.summary["data"] = data_versions(ddir)
    return save_protocol(protocol, out_dir)


def save_protocol(protocol: Protocol, out_dir: Path) -> dict[str, Path]:
    """Write a built protocol's manifests and protocol.json into out_dir; return file name -> path."""
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for filename, records in protocol.manifests.items():
        paths[filename] = out / filename
        write_records(records, paths[filename])
    paths[SUMMARY] = out / SUMMARY
    paths[SUMMARY].write_text(json.dumps(protocol.summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return paths


def build_protocol(name: str, corpora: Mapping[str, Iterable[Record]], seed: int = 0) -> Protocol:
    """Split record lists keyed by source ("openmoji-color", ..., "openclipart") into a protocol's manifests.

    Records carrying an error are left out and counted; every image is hashed once (SHA-256 of
    the file) to find evaluation images that duplicate another concept's.
    """
    _check_name(name)
    missing = [s for s in _REQUIRED[name] if s not in corpora]
    if missing:
        raise DataError(f"protocol {name} needs the sources {', '.join(missing)}")
    tagged: dict[str, list[Record]] = {}
    errors: dict[str, int] = {}
    present = [*_REQUIRED[name], *(s for s in (*STYLE_SOURCES, *ICON_SOURCES) if s in corpora)]
    for source in present:
        records = list(corpora[source])
        errors[source] = sum(r.error is not None for r in records)
        tagged[source] = [_tag(r, source) for r in records if r.error is None]
    duplicates = {s: _duplicate_images(_eval_pool(tagged[s], s)) for s in _EVALUATED[name]}
    if name == "loso":
        manifests, extra = _loso(tagged, duplicates)
    else:
        manifests, extra = _product(tagged, duplicates, seed)
    summary: dict[str, Any] = {
        "name": name,
        "seed": seed,
        "description": DESCRIPTIONS[name],
        **extra,
        "sources": present,
        "duplicate_images_dropped": {s: len(d) for s, d in duplicates.items()},
        "records_with_errors": errors,
        "manifests": {f: manifest_counts(rs) for f, rs in manifests.items()},
    }
    return Protocol(name, seed, manifests, summary)


def manifest_counts(records: list[Record]) -> dict[str, int]:
    """Records, images, texts and distinct groups of one manifest (and candidates, where any)."""
    counts = {
        "records": len(records),
        "images": sum(r.image is not None for r in records),
        "texts": sum(r.text is not None for r in records),
        "groups": len({r.group for r in records}),
    }
    candidates = [r for r in records if r.meta.get("role") == "candidate"]
    if candidates:
        counts["candidates"] = len(candidates)
        counts["query_groups"] = len({r.group for r in records if r.meta.get("role") != "candidate"})
    return counts


def data_versions(data_dir: Path) -> dict[str, Any]:
    """Versions of the corpora: the installed npm packages' and the Debian OpenClipart package's."""
    from mmgen.data.emoji import NPM_PACKAGES, node_modules

    out: dict[str, Any] = {}
    for package, expected in NPM_PACKAGES.items():
        try:
            info = json.loads((node_modules(data_dir) / package / "package.json").read_text(encoding="utf-8"))
            out[package] = str(info.get("version") or expected)
        except (OSError, ValueError):
            out[package] = expected
    out["openclipart"] = _debian_version("openclipart-png")
    return out


def _debian_version(package: str) -> str | None:
    exe = shutil.which("dpkg-query")
    if exe is None:
        return None
    done = subprocess.run([exe, "-W", "-f", "${Version}", package], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return None
    return done.stdout.strip() or None


def _check_name(name: str) -> None:
    if name not in PROTOCOLS:
        raise UnknownNameError("protocol", name, PROTOCOLS)


def _tag(r: Record, source: str) -> Record:
    """Copy a record with a corpus-unique id `SOURCE:KEY`, its group set and `meta.style` = source."""
    return Record(
        key=f"{source}:{r.key}", image=r.image, text=r.text, group=r.group or r.key, meta={**r.meta, "style": source}
    )


def _eval_pool(records: list[Record], source: str) -> list[Record]:
    """The records a source can contribute to evaluation: base emoji, or every OpenClipart drawing."""
    return records if source == "openclipart" else [r for r in records if r.meta.get("base") is True]


def _duplicate_images(records: list[Record]) -> set[str]:
    """Ids of records whose image file has the same bytes as the image of a record of another concept."""
    by_hash: dict[str, list[Record]] = {}
    for r in records:
        if r.image is not None:
            try:
                digest = file_sha256(r.image)
            except OSError as e:
                raise DataError(f"{r.image}: cannot read ({e.strerror or e})") from e
            by_hash.setdefault(digest, []).append(r)
    return {r.key for same in by_hash.values() if len({x.group for x in same}) > 1 for r in same}


def _eval_split(records: list[Record], duplicates: set[str]) -> tuple[list[Record], list[Record]]:
    """(non-flags, flags) among base records, images that duplicate another concept's dropped."""
    base = [r for r in records if r.meta.get("base") is True and r.key not in duplicates]
    return [r for r in base if not r.meta.get("is_flag")], [r for r in base if r.meta.get("is_flag")]


def _loso(
    tagged: dict[str, list[Record]], duplicates: dict[str, set[str]]
) -> tuple[dict[str, list[Record]], dict[str, Any]]:
    sources = [s for s in tagged if s != "twemoji"]
    train = [r for s in sources for r in tagged[s]]
    twemoji, flags = _eval_split(tagged["twemoji"], duplicates["twemoji"])
    manifests = {TRAIN: train, "twemoji.jsonl": twemoji, "twemoji-flags.jsonl": flags}
    return manifests, {
        "train_sources": sources,
        "eval_sources": ["twemoji"],
    }


def _product(
    tagged: dict[str, list[Record]], duplicates: dict[str, set[str]], seed: int
) -> tuple[dict[str, list[Record]], dict[str, Any]]:
    rng = np.random.default_rng(seed)
    concepts = sorted({r.group for s in EMOJI_SOURCES for r in tagged[s] if r.meta.get("base") is True})
    held = _hold_out(concepts, EMOJI_HOLDOUT, rng)
    keys = sorted({str(r.group) for r in tagged["openclipart"]})
    held_art = _hold_out(keys, OPENCLIPART_HOLDOUT, rng)
    styles = [s for s in STYLE_SOURCES if s in tagged]
    emoji_like = [*EMOJI_SOURCES, *styles]
    emoji_records = [r for s in emoji_like for r in tagged[s] if not _is_icon(r)]
    icons = [r for s in [*styles, *(s for s in ICON_SOURCES if s in tagged)] for r in tagged[s] if _is_icon(r)]
    held_names = _concept_names(emoji_records, held)
    named = {r.key for r in icons if _names_any(r, held_names)}
    # Icon concepts that are also an emoji's name ("airplane") are not unseen concepts: never held out.
    emoji_names = _concept_names(emoji_records, frozenset(r.group for r in emoji_records if r.group))
    icon_groups = sorted(
        {str(r.group) for r in icons if r.key not in named and _words(r.text or "") not in emoji_names}
    )
    held_icons = _hold_out(icon_groups, ICON_HOLDOUT, rng)
    # ... and no training icon may carry a held-out icon concept's name (as an alias caption, say).
    held_icon_names = _Names(_words(r.text or "") for r in icons if r.group in held_icons)
    named |= {r.key for r in icons if r.group not in held_icons and _names_any(r, held_icon_names, exact=True)}
    # Counted, not removed: OpenClipart's split stays by drawing, as before the icon sets joined.
    art_named = sum(r.group not in held_art and _names_any(r, held_names) for r in tagged["openclipart"])

    def emoji_train(test: frozenset[str]) -> list[Record]:
        return [r for r in emoji_records if concept_of(r) not in test and r.group not in test]

    train = emoji_train(held)
    train += [r for r in icons if r.key not in named and r.group not in held_icons]
    train += [r for r in tagged["openclipart"] if r.group not in held_art]
    queries: list[Record] = []
    pool: list[Record] = []
    flags: list[Record] = []
    for s in EMOJI_SOURCES:
        emoji, emoji_flags = _eval_split(tagged[s], duplicates[s])
        queries += [r for r in emoji if r.group in held]
        pool += [_as_candidate(r) for r in emoji if r.group not in held]
        flags += [r for r in emoji_flags if r.group in held]
    art = [r for r in tagged["openclipart"] if r.group in held_art and r.key not in duplicates["openclipart"]]
    manifests = {
        TRAIN: train,
        "heldout-concepts.jsonl": queries,
        "heldout-vs-pool.jsonl": queries + pool,
        "heldout-flags.jsonl": flags,
        "openclipart-heldout.jsonl": art,
    }
    if icons:
        icon_dups = _duplicate_images([r for r in icons if r.key not in named])
        manifests["icons-heldout.jsonl"] = [r for r in icons if r.group in held_icons and r.key not in icon_dups]

    # Development split: a second permutation of the training emoji concepts, left out the same way.
    flag_groups = {r.group for r in emoji_records if r.meta.get("is_flag")}
    dev_concepts = sorted(c for c in concepts if c not in held and c not in flag_groups)
    # Its own generator, so the development split does not depend on which icon sets were fetched.
    dev = _hold_out(dev_concepts, DEV_HOLDOUT, np.random.default_rng([seed, 1]))
    dev_names = _concept_names(emoji_records, dev)
    manifests[f"{DEV_DIR}/{TRAIN}"] = [
        r for r in train if concept_of(r) not in dev and r.group not in dev and not (
            _is_icon(r) and _names_any(r, dev_names)
        )
    ]  # fmt: skip
    dev_queries = [r for r in queries + pool if r.group in dev]
    manifests[f"{DEV_DIR}/heldout-vs-pool.jsonl"] = [_as_query(r) for r in dev_queries] + [
        r for r in pool if r.group not in dev
    ]
    extra = {
        "holdout": {
            "emoji_fraction": EMOJI_HOLDOUT,
            "emoji_base_concepts": len(concepts),
            "emoji_heldout_concepts": len(held),
            "openclipart_fraction": OPENCLIPART_HOLDOUT,
            "openclipart_drawings": len(keys),
            "openclipart_heldout": len(held_art),
            "heldout_names": len(held_names),
            "icons_naming_heldout_concepts": len(named),
            "openclipart_training_naming_heldout_concepts": art_named,
            "icon_fraction": ICON_HOLDOUT,
            "icon_concepts": len(icon_groups),
            "icon_heldout_concepts": len(held_icons),
            "dev_fraction": DEV_HOLDOUT,
            "dev_concepts": len(dev),
        },
        "train_sources": list(tagged),
        "eval_sources": list(SOURCES) + (["icons"] if icons else []),
    }
    return manifests, extra


def _is_icon(r: Record) -> bool:
    """An icon concept (a named icon, or an emoji-style icon that joins to no code point)."""
    return str(r.group or "").startswith(_ICON_GROUP)


def _words(text: str) -> tuple[str, ...]:
    return tuple(re.findall(r"[a-z0-9]+", text.casefold()))


def _concept_names(records: list[Record], concepts: frozenset[str]) -> _Names:
    """Every name of the given emoji concepts, as word tuples: annotations, Unicode names, short names."""
    names: set[tuple[str, ...]] = set()
    for r in records:
        if r.group in concepts or concept_of(r) in concepts:
            values = [r.text or "", str(r.meta.get("name") or ""), *(r.meta.get("short_names") or [])]
            values += [n for n in r.meta.get("names") or [] if isinstance(n, str)]
            names.update(w for w in (_words(str(v).replace("_", " ")) for v in values) if w)
    return names


class _Names(frozenset[tuple[str, ...]]):
    """Concept names as word tuples, with their squashed forms (no spaces, 5+ letters) computed once."""

    @functools.cached_property
    def squashed(self) -> tuple[str, ...]:
        """The names written without spaces, 5+ letters."""
        return tuple(sorted({"".join(n) for n in self if len("".join(n)) >= 5}))


def _squashed(names: set[tuple[str, ...]] | _Names) -> tuple[str, ...]:
    return names.squashed if isinstance(names, _Names) else _Names(names).squashed


def _names_any(r: Record, names: set[tuple[str, ...]] | _Names, exact: bool = False) -> bool:
    """True when one of the record's captions contains one of the names as whole, consecutive words.

    `exact`: the caption must be the name. A one-word caption of 8+ letters (fxemoji squashes
    names: `bouquetofflowers`) also matches a name of 5+ letters written inside it.
    """
    if not names:
        return False
    longest = max(len(n) for n in names)
    captions = [r.text or "", *(c for c in r.meta.get("captions") or [] if isinstance(c, str))]
    for caption in captions:
        w = _words(caption)
        if exact:
            if w in names:
                return True
            continue
        for i in range(len(w)):
            for j in range(i + 1, min(len(w), i + longest) + 1):
                if w[i:j] in names:
                    return True
        if len(w) == 1 and len(w[0]) >= 8 and any(n in w[0] for n in _squashed(names)):  # noqa: SIM110
            return True
    return False


def _hold_out(names: list[str], fraction: float, rng: np.random.Generator) -> frozenset[str]:
    """The first round(fraction * n) names of a seeded permutation of the sorted names."""
    order = rng.permutation(len(names))
    return frozenset(names[i] for i in order[: round(fraction * len(names))])


def _as_query(r: Record) -> Record:
    meta = {k: v for k, v in r.meta.items() if k != "role"}
    return Record(key=r.key, image=r.image, text=r.text, group=r.group, meta=meta)


def _as_candidate(r: Record) -> Record:
    return Record(key=r.key, image=r.image, text=r.text, group=r.group, meta={**r.meta, "role": "candidate"})
