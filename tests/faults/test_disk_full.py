"""A full disk in the middle of `mmgen index`: one clear error naming what and where, then the same command resumes.

The fault is injected in-process at the write layer: `os.write` to the image vector file fails with
ENOSPC once the "disk" is full (after a short write, as a filling disk does), or SQLite's page
limit makes a commit fail as on a full disk (SQLITE_FULL). The rerun without the fault must leave
every record of the manifest indexed once, its vectors equal to a clean run's, and `mmgen check` clean.
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import event
from typer.testing import CliRunner

from mmgen.cli import app
from mmgen.errors import DiskFullError
from mmgen.indexer import IndexOptions, Indexer
from mmgen.store.db import open_store
from mmgen.workspace import Workspace

BATCH = 8  # 32 records: four batches
runner = CliRunner()


class FullDisk:
    """`os.write` that lets `room` bytes reach files whose name ends in `suffix`, then fails with ENOSPC."""

    def __init__(self, real: Callable[[int, Any], int], suffix: str, room: int) -> None:
        self.real, self.suffix, self.room = real, suffix, room
        self.refused = 0

    def __call__(self, fd: int, data: Any) -> int:
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            target = ""
        if not target.endswith(self.suffix):
            return self.real(fd, data)
        if self.room <= 0:
            self.refused += 1
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        written = self.real(fd, bytes(memoryview(data)[: self.room]))
        self.room -= written
        return written


def _index_argv(manifest: Path, ws: Path, encoder: str) -> list[str]:
    return ["index", str(manifest), "--workspace", str(ws), "--encoder", encoder, "--batch-size", str(BATCH), "--quiet"]


def _keys(manifest: Path) -> list[str]:
    return [json.loads(line)["id"] for line in manifest.read_text(encoding="utf-8").splitlines()]


def _verify(fault_harness: Any, ws: Path, manifest: Path, reference: dict[tuple[str, str], np.ndarray]) -> None:
    """Every record once, one row per (item, modality), vectors as a clean run's, `mmgen check` clean."""
    state = fault_harness.read_index(ws)
    keys = [key for _, _, key in state.items]
    assert sorted(keys) == sorted(_keys(manifest)), "lost or duplicated items"
    pairs = [(m, iid) for m, _, iid in state.rows]
    assert len(pairs) == len(set(pairs)) == 2 * len(keys), "lost or duplicated index rows"
    got = state.by_key()
    assert got.keys() == reference.keys()
    assert max(float(np.abs(got[k] - reference[k]).max()) for k in got) < fault_harness.TOLERANCE
    res = runner.invoke(app, ["check", "--workspace", str(ws), "--json"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["ok"]


@pytest.fixture()
def reference(tmp_path: Path, small_corpus: Path, tiny_clip: Any, fault_harness: Any) -> dict[Any, np.ndarray]:
    """(key, modality) -> vector of a clean run over the corpus."""
    ws = tmp_path / "clean"
    res = runner.invoke(app, _index_argv(small_corpus, ws, tiny_clip.dir_name), catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return fault_harness.read_index(ws).by_key()


def test_disk_full_writing_vectors_is_one_clear_error_and_the_rerun_resumes(
    tmp_path: Path, small_corpus: Path, tiny_clip: Any, fault_harness: Any, reference: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    ws = tmp_path / "ws"
    argv = _index_argv(small_corpus, ws, tiny_clip.dir_name)
    row = 4 * 16  # one float32 vector of the tiny model
    full = FullDisk(os.write, "image.f32", room=64 + 2 * BATCH * row + 100)  # header, two batches, a torn third
    monkeypatch.setattr(os, "write", full)
    res = runner.invoke(app, argv, catch_exceptions=False)
    monkeypatch.undo()
    assert full.refused == 1 and res.exit_code == 2, res.output
    vectors = ws / "default" / "image.f32"
    message = " ".join(res.stderr.split())
    assert f"disk full while writing vectors at {vectors}: free space and run the same command again" in message
    assert message.endswith("to resume")
    assert "Traceback" not in res.output
    # What is left: the two committed batches, and no torn third in the vector file.
    state = fault_harness.read_index(ws)
    assert len(state.items) == 2 * BATCH
    assert vectors.stat().st_size == 64 + 2 * BATCH * row

    res = runner.invoke(app, [*argv, "--json"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["added"] == 2 * BATCH
    _verify(fault_harness, ws, small_corpus, reference)


def test_disk_full_committing_rows_is_one_clear_error_and_the_rerun_resumes(
    tmp_path: Path, small_corpus: Path, tiny_clip: Any, tiny_encoder: Any, fault_harness: Any, reference: Any,
) -> None:  # fmt: skip
    from mmgen.data.sources import open_sources

    ws = Workspace.resolve(tmp_path / "ws")
    store = open_store(ws.db_url)
    try:
        indexer = Indexer(ws, store, tiny_encoder, IndexOptions(batch_size=BATCH, progress=False))
        with store.engine.connect() as conn:
            pages = int(conn.exec_driver_sql("PRAGMA page_count").scalar_one())
        store.engine.dispose()  # new connections, each with the page limit: SQLITE_FULL as on a full disk

        @event.listens_for(store.engine, "connect")
        def _limit(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.execute(f"PRAGMA max_page_count = {pages + 2}")

        with pytest.raises(DiskFullError, match="disk full while writing the SQL store at .*mmgen.db: free space"):
            indexer.run(open_sources(str(small_corpus)))
    finally:
        store.close()
    # Stopped mid-run: some batches committed (their vectors fsynced first), the failed one rolled back.
    assert 0 < len(fault_harness.read_index(tmp_path / "ws").items) < len(_keys(small_corpus))

    res = runner.invoke(app, _index_argv(small_corpus, tmp_path / "ws", tiny_clip.dir_name), catch_exceptions=False)
    assert res.exit_code == 0, res.output
    _verify(fault_harness, tmp_path / "ws", small_corpus, reference)


@pytest.fixture()
def small_tmpfs(tmp_path: Path) -> Any:
    """A 1 MiB tmpfs (a real full disk), where this process may mount one (root); skipped elsewhere."""
    import subprocess

    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or done.returncode}); needs root")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_saving_faiss_onto_a_full_disk_keeps_the_old_file_and_says_disk_full(small_tmpfs: Path) -> None:
    """FAISS's own write (C stdio, not os.write) onto a real full filesystem: DiskFullError naming the file, the
    temporary removed, the previous index file intact and loadable."""
    from mmgen.index import resolve_preset
    from mmgen.index.faiss_index import FaissIndex

    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((6000, 64)).astype(np.float32)  # 1.5 MiB: more than the disk holds
    path = small_tmpfs / "image.faiss"
    small = FaissIndex(64, resolve_preset("flat"))
    small.add(np.arange(100, dtype=np.int64), vectors[:100])
    small.save(path)
    before = path.read_bytes()
    big = FaissIndex(64, resolve_preset("flat"))
    big.add(np.arange(6000, dtype=np.int64), vectors)
    with pytest.raises(DiskFullError, match=r"disk full while writing the FAISS index at .*image\.faiss"):
        big.save(path)
    assert sorted(p.name for p in small_tmpfs.iterdir()) == ["image.faiss"]  # no half-written temporary left
    assert path.read_bytes() == before and FaissIndex.load(path, 64, resolve_preset("flat")).count == 100


def _fill_and_save(folder: Path, name: str, save_small: Callable[[Path], None], save_big: Callable[[Path], None],
                   what: str) -> bytes:  # fmt: skip
    """Save a small file, then a too-big one over it: DiskFullError naming it, no temporary, the small one whole."""
    path = folder / name
    save_small(path)
    before = path.read_bytes()
    with pytest.raises(DiskFullError, match=rf"disk full while writing {what} at .*{name}: free space"):
        save_big(path)
    assert sorted(p.name for p in folder.iterdir()) == [name]
    assert path.read_bytes() == before
    return before


def test_a_training_state_onto_a_full_disk(small_tmpfs: Path) -> None:
    """torch.save fails on a full disk with an opaque RuntimeError; it still reads as disk full."""
    import torch

    from mmgen.train.state import load_state, save_state

    _fill_and_save(small_tmpfs, "state.pt", lambda p: save_state(p, {"step": 1, "w": torch.zeros(10)}),
                   lambda p: save_state(p, {"step": 2, "w": torch.zeros(1_000_000)}), "the training state")  # fmt: skip
    assert load_state(small_tmpfs / "state.pt")["step"] == 1


def test_hasher_weights_and_manifest_onto_a_full_disk(small_tmpfs: Path) -> None:
    """A model save (weights, then manifest) that runs out of room leaves the previous model loadable."""
    from mmgen.hashing.model import NetConfig, build_net, load_hasher, save_hasher

    folder = small_tmpfs / "h"
    small, big = NetConfig(16, 32, 16), NetConfig(16, 32, 8192)  # 1.6 MB of float32: more than the disk holds
    save_hasher(build_net(small), small.to_json(), folder)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    with pytest.raises(DiskFullError, match=r"disk full while writing the hasher's weights at .*hasher\.pt"):
        save_hasher(build_net(big), big.to_json(), folder)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert load_hasher(str(folder), small_tmpfs).bits == 32


def test_binary_codes_onto_a_full_disk(small_tmpfs: Path) -> None:
    from mmgen.index import resolve_preset
    from mmgen.index.binary import BinaryIndex

    codes = np.random.default_rng(0).integers(0, 256, (200_000, 8), dtype=np.uint8)  # 1.6 MB of codes

    def save(n: int) -> Callable[[Path], None]:
        def one(path: Path) -> None:
            index = BinaryIndex(64, resolve_preset(None, binary=True))
            index.add(np.arange(n, dtype=np.int64), codes[:n])
            index.save(path)

        return one

    _fill_and_save(small_tmpfs, "text.codes", save(100), save(len(codes)), "the binary codes")
    assert BinaryIndex.load(small_tmpfs / "text.codes", 64, resolve_preset(None, binary=True)).count == 100
