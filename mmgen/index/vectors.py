"""Append-only float32 vector files: the durable source every FAISS index is built from.

A row id is the vector's slot in the file. Slots are only ever appended, so an id is never
reused; a slot that no SQL row references (a run killed after writing vectors but before its
SQL commit) is dead weight, never a wrong answer. Vectors are fsynced before the SQL rows that
reference them are committed, which is what makes a killed run safe to resume. A write that
finds the disk full is cut back to the rows before it and raises DiskFullError, so a run stopped
that way resumes like a killed one.
"""

from __future__ import annotations

import contextlib
import os
import struct
from pathlib import Path

import numpy as np

from mmgen.errors import ManifestMismatchError, VectorIndexError, disk_full_as_error

MAGIC = b"MMGVEC01"
HEADER = struct.Struct("<8sII48x")  # magic, dim, dtype code (1 = float32), padding to 64 bytes
DTYPE_F32 = 1


class VectorFile:
    """A file of float32 rows of fixed dimension, addressed by slot."""

    def __init__(self, path: str | os.PathLike[str], dim: int) -> None:
        self.path = Path(path)
        self.dim = int(dim)
        self._row_bytes = 4 * self.dim
        if self.path.exists() and self.path.stat().st_size >= HEADER.size:
            self._check_header()
        self._mmap: np.memmap | None = None
        self._mapped: tuple[int, int] = (-1, -1)  # (inode, rows) of the file the memory map shows
        self._seen: tuple[tuple[int, int], float] = ((-1, -1), 0.0)  # (inode, size) at the last max_norm, its answer

    def _check_header(self) -> None:
        with open(self.path, "rb") as fh:
            magic, dim, dtype = HEADER.unpack(fh.read(HEADER.size))
        if magic != MAGIC or dtype != DTYPE_F32:
            raise VectorIndexError(f"{self.path} is not an mmgen vector file")
        if dim != self.dim:
            raise ManifestMismatchError(f"{self.path} holds {dim}-d vectors, expected {self.dim}-d")

    def __len__(self) -> int:
        if not self.path.exists():
            return 0
        return max(0, (self.path.stat().st_size - HEADER.size) // self._row_bytes)

    def append(self, vectors: np.ndarray) -> np.ndarray:
        """Write rows durably (fsync) and return their slot ids; raises DiskFullError when there is no room."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise VectorIndexError(f"expected vectors of shape (n, {self.dim}), got {vectors.shape}")
        with disk_full_as_error("vectors", self.path):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Unbuffered: a failed write leaves nothing in a buffer that closing the file would retry.
            with open(self.path, "ab+", buffering=0) as fh:
                size = fh.seek(0, os.SEEK_END)
                if size < HEADER.size:
                    fh.truncate(0)
                    _write_all(fh.fileno(), HEADER.pack(MAGIC, self.dim, DTYPE_F32))
                    size = HEADER.size
                tail = (size - HEADER.size) % self._row_bytes
                if tail:  # a torn write from a killed run: drop the partial row
                    fh.truncate(size - tail)
                    size -= tail
                start = (size - HEADER.size) // self._row_bytes
                try:
                    _write_all(fh.fileno(), vectors.tobytes())
                    os.fsync(fh.fileno())
                except OSError:
                    # Give back what the batch took; should this fail too, the next append drops the torn row.
                    with contextlib.suppress(OSError):
                        os.ftruncate(fh.fileno(), size)
                    raise
        self._mmap = None
        self._note_appended(start, vectors)
        return np.arange(start, start + len(vectors), dtype=np.int64)

    def get(self, slots: np.ndarray) -> np.ndarray:
        """Rows at the given slots (memory-mapped read)."""
        slots = np.asarray(slots, dtype=np.int64)
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            st = None
        n = 0 if st is None else max(0, (st.st_size - HEADER.size) // self._row_bytes)
        if slots.size == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        if slots.min() < 0 or slots.max() >= n:
            raise VectorIndexError(f"{self.path}: slot out of range (have {n} rows)")
        assert st is not None
        if self._mmap is None or self._mapped != (st.st_ino, n):  # grown, or replaced by another file
            self._mmap = np.memmap(self.path, dtype=np.float32, mode="r", offset=HEADER.size, shape=(n, self.dim))
            self._mapped = (st.st_ino, n)
        return np.array(self._mmap[slots])

    @property
    def mapped(self) -> np.memmap | None:
        """The memory map `get` reads through (None before the first read or after an append)."""
        return self._mmap

    def max_norm(self, chunk: int = 65536) -> float:
        """The largest Euclidean norm of any row (0.0 when empty).

        Kept in a small sidecar (`NAME.f32.maxnorm`: rows covered, their largest norm, and a checksum of the
        first rows so a replaced file is not taken for this one) that `append` extends; only rows past what
        it covers are read, so a large index pays for the full read once, if ever."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return 0.0
        if self._seen[0] == (st.st_ino, st.st_size):  # unchanged since the last call: every query's case
            return self._seen[1]
        n = max(0, (st.st_size - HEADER.size) // self._row_bytes)
        if n == 0:
            return 0.0
        done, best = self._read_sidecar()
        if done > n:
            done, best = 0, 0.0
        for start in range(done, n, chunk):
            best = max(best, _largest_norm(self.get(np.arange(start, min(n, start + chunk), dtype=np.int64))))
        if done != n:
            self._write_sidecar(n, best)
        self._seen = ((st.st_ino, st.st_size), best)
        return best

    @property
    def sidecar(self) -> Path:
        return self.path.with_name(self.path.name + ".maxnorm")

    def _fingerprint(self) -> int:
        """A checksum of the first rows: who this file is (rows are never rewritten, only appended)."""
        import zlib

        with open(self.path, "rb") as fh:
            return zlib.crc32(fh.read(HEADER.size + FINGERPRINT_ROWS * self._row_bytes))

    def _read_sidecar(self) -> tuple[int, float]:
        import json

        try:
            info = json.loads(self.sidecar.read_text(encoding="utf-8"))
            if int(info["fingerprint"]) == self._fingerprint() and int(info["rows"]) >= FINGERPRINT_ROWS:
                return int(info["rows"]), float(info["max_norm"])
        except (OSError, ValueError, KeyError, TypeError):
            pass  # missing, unreadable or another file's: read the rows again
        return 0, 0.0

    def _write_sidecar(self, rows: int, best: float) -> None:
        import json

        if rows < FINGERPRINT_ROWS:  # too few rows to tell this file from another: cheap to read again
            return
        tmp = self.sidecar.with_name(self.sidecar.name + ".tmp")
        try:
            info = {"rows": rows, "max_norm": best, "fingerprint": self._fingerprint()}
            tmp.write_text(json.dumps(info), encoding="utf-8")
            os.replace(tmp, self.sidecar)
        except OSError:  # a read-only workspace: this process keeps it in memory
            with contextlib.suppress(OSError):
                tmp.unlink()

    def _note_appended(self, start: int, vectors: np.ndarray) -> None:
        """After an append: extend the sidecar when it covered every row before these (else max_norm reads)."""
        done, best = self._read_sidecar()
        if done == start and len(vectors):
            self._write_sidecar(start + len(vectors), max(best, _largest_norm(vectors)))


FINGERPRINT_ROWS = 16


def _largest_norm(rows: np.ndarray) -> float:
    return float(np.sqrt(np.einsum("ij,ij->i", rows, rows, dtype=np.float64).max())) if len(rows) else 0.0


def _write_all(fd: int, data: bytes) -> None:
    """os.write until all of `data` is written: a short write (a nearly full disk) is continued until it fails."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
