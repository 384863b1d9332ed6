"""One named index on disk: a manifest, and per modality a vector file and a FAISS file.

The vector file and the SQL `index_rows` table are the durable state; the FAISS file is a
derived cache that `sync` brings in line with the rows SQL says are live. A FAISS file that is
stale (a run killed before its save), missing or corrupt is rebuilt from the vectors, never
trusted blindly.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from mmgen import __version__
from mmgen.errors import ManifestMismatchError, VectorIndexError
from mmgen.index.faiss_index import FaissIndex
from mmgen.index.presets import Preset
from mmgen.index.vectors import VectorFile

MANIFEST = "manifest.json"
MANIFEST_TYPE = "mmgen.float-index"
MANIFEST_FORMAT = 1
MODALITIES = ("image", "text")


@dataclass
class SyncReport:
    """What `sync` changed in one FAISS index."""

    added: int = 0
    removed: int = 0
    rebuilt: bool = False
    reason: str = ""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, sort_keys=True)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class IndexFolder:
    """The files of one named index and the manifest that describes them."""

    def __init__(self, root: Path, manifest: dict[str, Any]) -> None:
        self.root = root
        self.manifest = manifest
        self.preset = Preset.from_json(manifest["preset"])
        self.dim = int(manifest["dim"])
        self._faiss: dict[str, FaissIndex] = {}
        self._stale_reason: dict[str, str] = {}

    # ---- opening -----------------------------------------------------------------------
    @classmethod
    def create(
        cls, root: Path, *, name: str, encoder: str, encoder_checksum: str, dim: int, preset: Preset
    ) -> IndexFolder:
        """Start a new index folder (refuses to overwrite an existing manifest)."""
        if (root / MANIFEST).exists():
            raise VectorIndexError(f"an index already exists at {root}")
        root.mkdir(parents=True, exist_ok=True)
        manifest = {
            "type": MANIFEST_TYPE,
            "format": MANIFEST_FORMAT,
            "code_version": __version__,
            "name": name,
            "encoder": encoder,
            "encoder_checksum": encoder_checksum,
            "dim": int(dim),
            "factory": preset.factory,
            "preset": preset.to_json(),
            "metric": "inner_product",
            "modalities": {},
            "created": _now(),
            "updated": _now(),
        }
        _write_json_atomic(root / MANIFEST, manifest)
        return cls(root, manifest)

    @classmethod
    def open(cls, root: Path) -> IndexFolder:
        """Open an existing folder; a missing or unreadable manifest is an error."""
        path = root / MANIFEST
        if not path.exists():
            raise VectorIndexError(f"no index at {root} (missing {MANIFEST}); build one with `mmgen index`")
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise VectorIndexError(f"unreadable index manifest {path}: {exc}") from exc
        if manifest.get("type") != MANIFEST_TYPE:
            raise VectorIndexError(f"{path} is not an mmgen float-index manifest")
        if int(manifest.get("format", 0)) > MANIFEST_FORMAT:
            raise VectorIndexError(f"{path} was written by a newer mmgen (format {manifest['format']})")
        return cls(root, manifest)

    def check(self, *, encoder: str | None = None, encoder_checksum: str | None = None, dim: int | None = None) -> None:
        """Refuse a mismatch between this index and the encoder about to use it."""
        name = self.manifest["name"]
        built = self.manifest["encoder"]
        if encoder_checksum is not None and encoder_checksum != self.manifest["encoder_checksum"]:
            shown = f"{encoder} " if encoder else ""
            raise ManifestMismatchError(
                f"index {name!r} was built with encoder {built} (checksum {self.manifest['encoder_checksum'][:12]}), "
                f"not {shown}(checksum {encoder_checksum[:12]}); query it with --encoder {built}, "
                "or rebuild it with `mmgen index ... --reembed`"
            )
        if dim is not None and dim != self.dim:
            raise ManifestMismatchError(f"index {name!r} holds {self.dim}-d vectors; the encoder gives {dim}-d")

    # ---- files -------------------------------------------------------------------------
    def vectors(self, modality: str) -> VectorFile:
        """The durable vector file of one modality."""
        _check_modality(modality)
        return VectorFile(self.root / f"{modality}.f32", self.dim)

    def faiss(self, modality: str) -> FaissIndex:
        """The FAISS index of one modality: loaded, or new and empty when absent or unreadable."""
        _check_modality(modality)
        if modality not in self._faiss:
            path = self.root / f"{modality}.faiss"
            index: FaissIndex | None = None
            if path.exists():
                try:
                    index = FaissIndex.load(path, self.dim, self.preset)
                except VectorIndexError as exc:
                    self._stale_reason[modality] = f"rebuilt: {exc}"
            self._faiss[modality] = index if index is not None else FaissIndex(self.dim, self.preset)
        return self._faiss[modality]

    def modalities(self) -> list[str]:
        """Modalities this index holds vectors for."""
        return [m for m in MODALITIES if m in self.manifest["modalities"] or (self.root / f"{m}.f32").exists()]

    def fingerprint(self, modality: str) -> tuple[int, int]:
        """(count, max row id) recorded at the last save; with ever-growing row ids this identifies the live set."""
        entry = self.manifest["modalities"].get(modality, {})
        return int(entry.get("count", 0)), int(entry.get("max_row_id", -1))

    # ---- keeping FAISS in step with SQL ------------------------------------------------
    def sync(self, modality: str, live_ids: np.ndarray) -> SyncReport:
        """Make the FAISS index hold exactly `live_ids` (the row ids SQL says are live)."""
        index = self.faiss(modality)
        live = np.unique(np.asarray(live_ids, dtype=np.int64))
        have = index.ids()
        to_add = np.setdiff1d(live, have, assume_unique=True)
        to_remove = np.setdiff1d(have, live, assume_unique=True)
        report = SyncReport(reason=self._stale_reason.pop(modality, ""))
        vectors = self.vectors(modality)
        needs_rebuild = (len(to_remove) and not index.supports_remove) or (not index.is_trained and len(live))
        if needs_rebuild:
            fresh = FaissIndex(self.dim, self.preset)
            if len(live):
                all_vectors = vectors.get(live)
                if not fresh.is_trained:
                    fresh.train(_training_sample(all_vectors))
                fresh.add(live, all_vectors)
            self._faiss[modality] = fresh
            report.added, report.removed, report.rebuilt = len(to_add), len(to_remove), True
            return report
        report.removed = index.remove(to_remove)
        if len(to_add):
            index.add(to_add, vectors.get(to_add))
        report.added = len(to_add)
        return report

    def save(self, modality: str) -> None:
        """Write the FAISS file and record its fingerprint in the manifest (both atomically)."""
        index = self.faiss(modality)
        path = self.root / f"{modality}.faiss"
        index.save(path)
        ids = index.ids()
        self.manifest["modalities"][modality] = {
            "file": path.name,
            "vectors": f"{modality}.f32",
            "count": index.count,
            "max_row_id": int(ids.max()) if len(ids) else -1,
            "bytes": path.stat().st_size,
        }
        self.manifest["updated"] = _now()
        self.manifest["code_version"] = __version__
        _write_json_atomic(self.root / MANIFEST, self.manifest)

    def set_preset(self, preset: Preset) -> None:
        """Switch the FAISS configuration; the next sync rebuilds from the stored vectors."""
        self.preset = preset
        self.manifest["preset"] = preset.to_json()
        self.manifest["factory"] = preset.factory
        self._faiss = {m: FaissIndex(self.dim, preset) for m in self.modalities()}
        _write_json_atomic(self.root / MANIFEST, self.manifest)

    @contextlib.contextmanager
    def lock(self, wait: bool = True) -> Iterator[bool]:
        """Exclusive writer lock on this index; yields False when `wait` is off and another writer holds it."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a+") as fh:
            flags = fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB)
            try:
                fcntl.flock(fh.fileno(), flags)
            except BlockingIOError:
                yield False
                return
            try:
                fh.seek(0)
                fh.truncate()
                fh.write(f"{os.getpid()} {time.time():.0f}\n")
                fh.flush()
                yield True
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _check_modality(modality: str) -> None:
    if modality not in MODALITIES:
        raise VectorIndexError(f"modality must be one of {', '.join(MODALITIES)}, not {modality!r}")


def _training_sample(vectors: np.ndarray, limit: int = 262_144, seed: int = 0) -> np.ndarray:
    if len(vectors) <= limit:
        return vectors
    rng = np.random.default_rng(seed)
    return vectors[np.sort(rng.choice(len(vectors), limit, replace=False))]
