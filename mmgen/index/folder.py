"""One named index on disk: a manifest, and per modality a vector file, a FAISS file (or, with
`shards` N > 1 in the manifest, N shard files: `mmgen.index.shards`) and, when the index has a
hasher, a FAISS binary file of packed codes (`{modality}.codes.faiss`, with
`{modality}.codes.faiss.dead.npy` listing the removed slots of the flat preset).

The vector file and the SQL `index_rows` table are the durable state; the FAISS files are
derived caches that `sync` / `sync_codes` bring in line with the rows SQL says are live. A FAISS
file that is stale (a run killed before its save), missing or corrupt is rebuilt from the
vectors (through the hasher, for codes), never trusted blindly.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mmgen import __version__
from mmgen.durable import replacing
from mmgen.errors import ManifestMismatchError, VectorIndexError
from mmgen.index.faiss_index import FaissIndex
from mmgen.index.presets import Preset
from mmgen.index.shards import FloatIndex, ShardedIndex, check_shards, shard_path
from mmgen.index.vectors import VectorFile

if TYPE_CHECKING:
    from mmgen.index.binary import BinaryIndex

MANIFEST = "manifest.json"
MANIFEST_TYPE = "mmgen.float-index"
MANIFEST_FORMAT = 1
MODALITIES = ("image", "text")
CODES_SUFFIX = ".codes.faiss"
ENCODE_CHUNK = 65_536  # vectors encoded to codes at a time (bounds the RAM of a rebuild)
# (vectors, modality) -> packed codes: a loaded hasher's `encode`
Encode = Callable[[np.ndarray, str], np.ndarray]


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
    with replacing(path, "the index manifest") as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


class IndexFolder:
    """The files of one named index and the manifest that describes them."""

    def __init__(self, root: Path, manifest: dict[str, Any]) -> None:
        self.root = root
        self.manifest = manifest
        self.preset = Preset.from_json(manifest["preset"])
        self.dim = int(manifest["dim"])
        self._faiss: dict[str, FloatIndex] = {}
        self._vectors: dict[str, VectorFile] = {}
        self._stale_reason: dict[str, str] = {}
        self._codes: dict[str, BinaryIndex] = {}
        self._codes_reason: dict[str, str] = {}

    # ---- opening -----------------------------------------------------------------------
    @classmethod
    def create(
        cls, root: Path, *, name: str, encoder: str, encoder_checksum: str, dim: int, preset: Preset, shards: int = 1
    ) -> IndexFolder:
        """Start a new index folder (refuses to overwrite an existing manifest); `shards` splits its FAISS files."""
        shards = check_shards(shards)
        if (root / MANIFEST).exists():
            raise VectorIndexError(f"an index already exists at {root}")
        from mmgen.workspace import make_private_root

        make_private_root(root.parent)  # a new workspace (its store elsewhere, e.g. PostgreSQL): private
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
            "shards": shards,
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
        """The durable vector file of one modality; kept, so its memory map is reused (it remaps when the file grows)."""
        _check_modality(modality)
        found = self._vectors.get(modality)
        # once mapped, a file replaced under it is noticed by `get` (another inode): no stat on every search
        if found is None or (found.mapped is None and not found.path.exists()):
            found = self._vectors[modality] = VectorFile(self.root / f"{modality}.f32", self.dim)
        return found

    @property
    def shards(self) -> int:
        """How many FAISS files each modality's float index is split into (1 in folders from before sharding)."""
        return int(self.manifest.get("shards", 1))

    def faiss_files(self, modality: str) -> list[Path]:
        """The FAISS file(s) of one modality's float index: `image.faiss`, or its shards."""
        _check_modality(modality)
        path, n = self.root / f"{modality}.faiss", self.shards
        return [shard_path(path, s, n) for s in range(n)]

    def faiss(self, modality: str) -> FloatIndex:
        """The FAISS index of one modality: loaded, or new and empty when absent or unreadable."""
        _check_modality(modality)
        if modality not in self._faiss and self.shards > 1:
            self._faiss[modality], reason = ShardedIndex.load(
                self.root / f"{modality}.faiss", self.dim, self.preset, self.shards
            )
            if reason:
                self._stale_reason[modality] = reason
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

    def row_state(self, modality: str) -> tuple[int, int]:
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
            fresh = self._new_faiss()
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
        """Write the FAISS file and record its row state (count, max row id) in the manifest (both atomically)."""
        index = self.faiss(modality)
        index.save(self.root / f"{modality}.faiss")
        ids = index.ids()
        files = self.faiss_files(modality)
        entry: dict[str, Any] = {"file": files[0].name} if len(files) == 1 else {"files": [f.name for f in files]}
        entry.update({
            "vectors": f"{modality}.f32",
            "count": index.count,
            "max_row_id": int(ids.max()) if len(ids) else -1,
            "bytes": sum(f.stat().st_size for f in files),
        })  # fmt: skip
        merged = self.manifest["modalities"].get(modality, {}).get("merged")
        if merged is not None:  # kept: `load_merged` compares its row state with this one
            entry["merged"] = merged
        self.manifest["modalities"][modality] = entry
        self.manifest["updated"] = _now()
        self.manifest["code_version"] = __version__
        _write_json_atomic(self.root / MANIFEST, self.manifest)

    def set_preset(self, preset: Preset) -> None:
        """Switch the FAISS configuration; the next sync rebuilds from the stored vectors."""
        self.preset = preset
        self.manifest["preset"] = preset.to_json()
        self.manifest["factory"] = preset.factory
        self._faiss = {m: self._new_faiss() for m in self.modalities()}
        _write_json_atomic(self.root / MANIFEST, self.manifest)

    def set_shards(self, shards: int) -> None:
        """Split each modality's FAISS index into `shards` files; the next sync rebuilds them from the stored vectors."""
        shards = check_shards(shards)
        if shards == self.shards:
            return
        old = {m: self.faiss_files(m) for m in MODALITIES}
        self.manifest["shards"] = shards
        for entry in self.manifest["modalities"].values():
            entry.pop("merged", None)
        _write_json_atomic(self.root / MANIFEST, self.manifest)
        # The manifest names the new layout first: a kill before these unlinks leaves only unread files.
        for modality, files in old.items():
            for file in files:
                file.unlink(missing_ok=True)
            self._discard_merged(modality)
        self._faiss = {m: self._new_faiss() for m in self.modalities()}
        self._stale_reason.clear()

    def discard_faiss(self, modality: str) -> None:
        """Delete the FAISS file(s) of one modality (and its on-disk merge): the next sync rebuilds them."""
        for file in self.faiss_files(modality):
            file.unlink(missing_ok=True)
        if self.manifest["modalities"].get(modality, {}).pop("merged", None) is not None:
            _write_json_atomic(self.root / MANIFEST, self.manifest)
        self._discard_merged(modality)
        self._faiss.pop(modality, None)

    def _new_faiss(self) -> FloatIndex:
        if self.shards == 1:
            return FaissIndex(self.dim, self.preset)
        return ShardedIndex.create(self.dim, self.preset, self.shards)

    # ---- on-disk merge (IVF presets) --------------------------------------------------
    def merge_ondisk(self, modality: str) -> Path:
        """Join the saved FAISS file(s) of an IVF index into one whose inverted lists stay on disk; returns its path.

        Merges what `save` last wrote (hold the lock, as writers do). `load_merged` reads the result
        memory-mapped; it answers as the shards do for the same nprobe.
        """
        from mmgen.index.shards import merge_ondisk

        files = self.faiss_files(modality)
        missing = [f.name for f in files if not f.exists()]
        if missing:
            raise VectorIndexError(f"cannot merge {', '.join(missing)}: not saved yet; catch the index up first")
        entry = self.manifest["modalities"].get(modality)
        if entry is None:
            raise VectorIndexError(f"index {self.manifest['name']!r} has no saved {modality} index to merge")
        generation = int(entry.get("merged", {}).get("generation", 0)) + 1
        out = self.root.resolve() / f"{modality}.merged-{generation}.faiss"
        ivfdata = out.with_suffix(".ivfdata")
        count, max_row_id = merge_ondisk(files, out, ivfdata, self.dim, self.preset)
        entry["merged"] = {"file": out.name, "ivfdata": ivfdata.name, "generation": generation, "count": count,
                           "max_row_id": max_row_id, "factory": self.preset.factory, "shards": self.shards}  # fmt: skip
        self.manifest["updated"] = _now()
        _write_json_atomic(self.root / MANIFEST, self.manifest)
        self._discard_merged(modality, keep=out.name)
        return out

    def load_merged(self, modality: str) -> FaissIndex:
        """The on-disk merge of one modality, read-only and memory-mapped; refused when the index changed since."""
        from mmgen.index.shards import load_merged

        _check_modality(modality)
        info = self.manifest["modalities"].get(modality, {}).get("merged")
        name = self.manifest["name"]
        if info is None:
            raise VectorIndexError(f"index {name!r} has no on-disk merge of its {modality} index; merge it first")
        state = (int(info["count"]), int(info["max_row_id"]))
        if state != self.row_state(modality) or info.get("factory") != self.preset.factory:
            raise VectorIndexError(
                f"the on-disk merge of index {name!r} ({modality}) is stale: the index changed since; merge it again"
            )
        root = self.root.resolve()
        for part in (info["file"], info["ivfdata"]):
            if not (root / part).is_file():
                raise VectorIndexError(f"the on-disk merge of index {name!r} ({modality}) lost {part}; merge it again")
        return load_merged(root / info["file"], root / info["ivfdata"], self.dim, self.preset)

    def _discard_merged(self, modality: str, keep: str | None = None) -> None:
        """Delete on-disk merges of one modality but `keep` (a reader that mapped one keeps it until it closes)."""
        for file in self.root.glob(f"{modality}.merged-*"):
            if keep is None or file.with_suffix(".faiss").name != keep:
                file.unlink(missing_ok=True)

    # ---- binary codes (semantic hashing) ---------------------------------------------
    @property
    def hash(self) -> dict[str, Any] | None:
        """The hasher this index keeps codes for: name, checksum, bits, preset; None without one."""
        return self.manifest.get("hash")

    def set_hash(self, *, name: str, checksum: str, bits: int, preset: Preset) -> None:
        """Keep codes of this hasher (replacing another); the next `sync_codes` builds them."""
        current = self.hash
        if current and (current["name"], current["checksum"], current["preset"]) == (name, checksum, preset.to_json()):
            return
        from mmgen.index.binary import BinaryIndex

        for modality in MODALITIES:
            BinaryIndex.delete_files(self.root / f"{modality}{CODES_SUFFIX}")
        self._codes.clear()
        self.manifest["hash"] = {
            "name": name, "checksum": checksum, "bits": int(bits), "preset": preset.to_json(), "modalities": {},
        }  # fmt: skip
        _write_json_atomic(self.root / MANIFEST, self.manifest)

    def codes(self, modality: str) -> BinaryIndex:
        """The binary index of one modality: loaded, or new and empty when absent or unreadable."""
        from mmgen.index.binary import BinaryIndex

        _check_modality(modality)
        info = self.hash
        if info is None:
            raise VectorIndexError(
                f"index {self.manifest['name']!r} keeps no binary codes; add them with "
                f"`mmgen index SOURCE --name {self.manifest['name']} --hash HASHER`"
            )
        if modality not in self._codes:
            preset = Preset.from_json(info["preset"])
            path = self.root / f"{modality}{CODES_SUFFIX}"
            index: BinaryIndex | None = None
            if path.exists():
                try:
                    index = BinaryIndex.load(path, int(info["bits"]), preset)
                except VectorIndexError as exc:  # a cache: an unreadable or foreign file is rebuilt
                    self._codes_reason[modality] = f"rebuilt: {exc}"
            self._codes[modality] = index if index is not None else BinaryIndex(int(info["bits"]), preset)
        return self._codes[modality]

    def codes_row_state(self, modality: str) -> tuple[int, int]:
        """(count, max row id) of the codes at their last save, like `row_state`."""
        entry = (self.hash or {}).get("modalities", {}).get(modality, {})
        return int(entry.get("count", 0)), int(entry.get("max_row_id", -1))

    def sync_codes(self, modality: str, live_ids: np.ndarray, encode: Encode, checksum: str) -> SyncReport:
        """Make the binary index hold the codes of exactly `live_ids`, encoding vectors with `encode`.

        `checksum` is the hasher's: codes saved by another version of the hasher are all redone.
        """
        info = self.hash
        if info is None:
            raise VectorIndexError(f"index {self.manifest['name']!r} keeps no binary codes")
        if checksum != info["checksum"]:
            raise ManifestMismatchError(
                f"index {self.manifest['name']!r} keeps codes of hasher {info['name']} "
                f"(checksum {info['checksum'][:12]}), not of checksum {checksum[:12]}"
            )
        index = self.codes(modality)
        live = np.unique(np.asarray(live_ids, dtype=np.int64))
        have = index.ids()
        to_add = np.setdiff1d(live, have, assume_unique=True)
        to_remove = np.setdiff1d(have, live, assume_unique=True)
        report = SyncReport(reason=self._codes_reason.pop(modality, ""))
        built_with = info.get("modalities", {}).get(modality, {}).get("checksum", checksum)
        needs_rebuild = (
            (len(to_remove) and not index.supports_remove)
            or (not index.is_trained and len(live))
            or built_with != checksum
        )
        if needs_rebuild:
            from mmgen.index.binary import BinaryIndex

            fresh = BinaryIndex(index.bits, index.preset)
            codes = self._encode(modality, live, encode)
            if len(live) and not fresh.is_trained:
                fresh.train(_training_sample(codes))
            fresh.add(live, codes)
            self._codes[modality] = fresh
            report.added, report.removed, report.rebuilt = len(to_add), len(to_remove), True
            return report
        report.removed = index.remove(to_remove)
        index.add(to_add, self._encode(modality, to_add, encode))
        report.added = len(to_add)
        return report

    def _encode(self, modality: str, ids: np.ndarray, encode: Encode) -> np.ndarray:
        vectors = self.vectors(modality)
        bits = int((self.hash or {})["bits"])
        out = np.empty((len(ids), bits // 8), dtype=np.uint8)
        for start in range(0, len(ids), ENCODE_CHUNK):
            part = ids[start : start + ENCODE_CHUNK]
            out[start : start + len(part)] = encode(vectors.get(part), modality)
        return out

    def save_codes(self, modality: str) -> None:
        """Write the binary file and record its row state (count, max row id) in the manifest (both atomically)."""
        info = self.hash
        if info is None:
            raise VectorIndexError(f"index {self.manifest['name']!r} keeps no binary codes")
        index = self.codes(modality)
        path = self.root / f"{modality}{CODES_SUFFIX}"
        index.save(path)
        ids = index.ids()
        info.setdefault("modalities", {})[modality] = {
            "file": path.name,
            "count": index.count,
            "max_row_id": int(ids.max()) if len(ids) else -1,
            "bytes": path.stat().st_size,
            "checksum": info["checksum"],
        }
        self.manifest["updated"] = _now()
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
