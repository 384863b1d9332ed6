"""`mmgen index`: incremental, prune, bad input, encoder mismatch, and resume after SIGKILL."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select

from mmgen.errors import ManifestMismatchError
from mmgen.index import IndexFolder
from mmgen.indexer import IndexOptions, Indexer
from mmgen.store.db import open_store
from mmgen.store.models import IndexRow, Item
from mmgen.workspace import Workspace

ROOT = Path(__file__).resolve().parents[1]


def open_sources(spec: str):
    from mmgen.data.sources import open_sources as _open

    return _open(spec)


def run_index(ws: Workspace, encoder, spec: str, **kw) -> object:
    store = open_store(ws.db_url)
    try:
        return Indexer(ws, store, encoder, IndexOptions(progress=False, **kw)).run(open_sources(spec))
    finally:
        store.close()


def counts(ws: Workspace) -> tuple[int, dict[str, int]]:
    store = open_store(ws.db_url)
    with store.session() as s:
        items = s.scalar(select(func.count(Item.id)))
        rows = dict(s.execute(select(IndexRow.modality, func.count(IndexRow.id)).group_by(IndexRow.modality)).all())
    store.close()
    return int(items), {k: int(v) for k, v in rows.items()}


def faiss_counts(ws: Workspace, name: str = "default") -> dict[str, int]:
    folder = IndexFolder.open(ws.index_dir(name))
    return {m: folder.faiss(m).count for m in folder.modalities()}


def test_text_folder_incremental_update_and_prune(tmp_path, text_folder, minilm) -> None:
    ws = Workspace.resolve(tmp_path / "ws")
    rep = run_index(ws, minilm, str(text_folder))
    assert (rep.added, rep.failed_count) == (len(list(text_folder.glob("*.txt"))) - 1, 1)
    assert "UTF-8" in rep.failed[0][1] or "utf-8" in rep.failed[0][1].lower()
    n_items, rows = counts(ws)
    assert rows == {"text": n_items} and faiss_counts(ws) == {"text": n_items}

    again = run_index(ws, minilm, str(text_folder))
    assert (again.added, again.updated, again.unchanged) == (0, 0, n_items)
    assert again.vectors_added == {}

    (text_folder / "c000.txt").write_text("a completely different caption", encoding="utf-8")
    (text_folder / "new.txt").write_text("a brand new item", encoding="utf-8")
    (text_folder / "c001.txt").unlink()
    rep = run_index(ws, minilm, str(text_folder))
    assert (rep.added, rep.updated, rep.missing, rep.removed) == (1, 1, 1, 0)
    rep = run_index(ws, minilm, str(text_folder), prune=True)
    assert (rep.added, rep.updated, rep.removed) == (0, 0, 1)
    n_items, rows = counts(ws)
    assert rows == {"text": n_items} and faiss_counts(ws) == {"text": n_items}


def test_images_with_bad_files_are_reported_and_the_rest_indexed(tmp_path, image_folder, tiny_encoder) -> None:
    ws = Workspace.resolve(tmp_path / "ws")
    rep = run_index(ws, tiny_encoder, str(image_folder), batch_size=4)
    reasons = dict(rep.failed)
    for bad in ("corrupt", "truncated", "empty", "notanimage"):
        assert any(k.startswith(bad) for k in reasons), (bad, reasons)
    good = [p for p in image_folder.glob("*.png") if p.stem.startswith(("img", "huge"))]
    n_items, rows = counts(ws)
    # every good image is embedded; captions of bad images are still indexed as text
    assert rows["image"] == len(good)
    assert faiss_counts(ws)["image"] == len(good)
    assert rows["text"] == len(list(image_folder.glob("*.txt")))


def test_another_encoder_is_refused(tmp_path, text_folder, minilm, tiny_encoder) -> None:
    ws = Workspace.resolve(tmp_path / "ws")
    run_index(ws, minilm, str(text_folder))
    with pytest.raises(ManifestMismatchError, match="built with encoder"):
        run_index(ws, tiny_encoder, str(text_folder))


@pytest.mark.parametrize("kill_after_items", [40, pytest.param(400, marks=pytest.mark.slow)])  # tests/faults kills more
def test_resume_after_sigkill(tmp_path, kill_after_items: int) -> None:
    folder = tmp_path / "corpus"
    folder.mkdir()
    n = 1500
    for i in range(n):
        (folder / f"t{i:05d}.txt").write_text(f"caption number {i} about topic {i % 37}", encoding="utf-8")
    ws_dir = tmp_path / "ws"
    cmd = [sys.executable, str(ROOT / "cli.py"), "index", str(folder), "--workspace", str(ws_dir),
           "--batch-size", "8", "--quiet"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    db = ws_dir / "mmgen.db"
    deadline = time.time() + 120
    committed = 0
    while time.time() < deadline and proc.poll() is None:
        if db.exists():
            try:
                with sqlite3.connect(db, timeout=1) as con:
                    committed = con.execute("select count(*) from index_rows").fetchone()[0]
            except sqlite3.OperationalError:
                committed = 0
            if committed >= kill_after_items:
                break
        time.sleep(0.02)
    if proc.poll() is not None:
        pytest.fail(f"indexing finished before it could be killed: {proc.stderr.read().decode()[-2000:]}")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    ws = Workspace.resolve(ws_dir)
    n_items, rows = counts(ws)
    assert 0 < n_items < n and rows["text"] == n_items  # SQL is consistent at the kill point

    done = subprocess.run(cmd + ["--json"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    n_items, rows = counts(ws)
    assert n_items == n and rows == {"text": n}
    store = open_store(ws.db_url)
    with store.session() as s:
        keys = s.scalars(select(Item.key)).all()
        row_ids = s.scalars(select(IndexRow.row_id)).all()
    store.close()
    assert len(set(keys)) == n and len(set(row_ids)) == n
    folder_ix = IndexFolder.open(ws.index_dir("default"))
    assert sorted(folder_ix.faiss("text").ids().tolist()) == sorted(row_ids)
    # the vectors behind the FAISS ids are the right ones: each caption finds itself first
    from mmgen.search import Searcher

    store = open_store(ws.db_url)
    hit = Searcher(ws, store).search(text="caption number 777 about topic 0", k=1, record=False).hits[0]
    store.close()
    assert hit.text == "caption number 777 about topic 0"


def test_reembed_rebuilds_with_another_encoder(tmp_path, image_folder, minilm, tiny_encoder) -> None:
    ws = Workspace.resolve(tmp_path / "ws")
    run_index(ws, minilm, str(image_folder))
    n_items, rows = counts(ws)
    assert rows == {"text": n_items}
    rep = run_index(ws, tiny_encoder, str(image_folder), reembed=True)
    assert rep.added == 0 and rep.updated == n_items  # items are kept, their vectors redone
    n_after, rows = counts(ws)
    assert n_after == n_items and rows["text"] == n_items and rows["image"] == 12
    folder = IndexFolder.open(ws.index_dir("default"))
    assert folder.manifest["encoder"] == tiny_encoder.name and folder.dim == tiny_encoder.dim
    assert faiss_counts(ws) == {"image": 12, "text": n_items}


def test_texts_embedded_in_windows_equal_their_own_vectors(tmp_path, text_folder, minilm, monkeypatch) -> None:
    """Windows of 4 texts over batches of 2 (windows and batches both end mid-source): every stored vector
    is the encoder's own vector of that text."""
    from mmgen import indexer as indexer_mod

    monkeypatch.setattr(indexer_mod, "TEXT_WINDOW", 4)
    ws = Workspace.resolve(tmp_path / "ws")
    rep = run_index(ws, minilm, str(text_folder), batch_size=2)
    assert rep.added == 30 and rep.timings["encode"] > 0
    store = open_store(ws.db_url)
    with store.session() as s:
        rows = s.execute(select(IndexRow.row_id, Item.text).join(Item, Item.id == IndexRow.item_id)).all()
    store.close()
    folder = IndexFolder.open(ws.index_dir("default"))
    stored = folder.vectors("text").get(np.array([r for r, _ in rows], dtype=np.int64))
    np.testing.assert_allclose(stored, minilm.encode_text([t for _, t in rows], batch_size=1), atol=1e-5)
