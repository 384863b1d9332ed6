"""`--engine ray`: same items, rows and vectors as the local engine; incremental; resumable; survives a killed worker.

One local Ray cluster (2 CPUs, no dashboard) serves the module. Tests that need Ray skip when it is
not installed; the missing-extra test runs either way.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from sqlalchemy import select

from mmgen.errors import MissingDependencyError, UnknownNameError
from mmgen.index import IndexFolder
from mmgen.indexer import IndexOptions, Indexer
from mmgen.store.db import open_store
from mmgen.store.models import IndexRow, Item
from mmgen.workspace import Workspace

NO_RAY = "ray is not installed: pip install 'mmgen[ray]'"


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[Any]:
    ray = pytest.importorskip("ray", reason=NO_RAY)
    pytest.importorskip("ray.data", reason=NO_RAY)
    import logging

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    yield ray
    ray.shutdown()


def run(ws: Workspace, encoder, spec: str, indexer=Indexer, **kw) -> Any:
    from mmgen.data.sources import open_sources

    store = open_store(ws.db_url)
    try:
        return indexer(ws, store, encoder, IndexOptions(progress=False, **kw)).run(open_sources(spec))
    finally:
        store.close()


def ray_indexer(worker: type | None = None, **kw: Any) -> Any:
    from mmgen.engines.ray_engine import RayIndexer

    cls = RayIndexer if worker is None else type("WithWorker", (RayIndexer,), {"worker": worker})
    return lambda *a, **more: cls(*a, **kw, **more)


def snapshot(ws: Workspace) -> dict[tuple[str, str], tuple[Any, ...]]:
    """(key, modality) -> the item's fields, the row's sha256 and its vector; checks keys and row ids are unique."""
    store = open_store(ws.db_url)
    with store.session() as s:
        rows = s.execute(
            select(Item.key, Item.sha256, Item.text, Item.uri, Item.group_key, Item.meta, IndexRow.modality,
                   IndexRow.sha256, IndexRow.row_id).join(IndexRow, IndexRow.item_id == Item.id)
        ).all()  # fmt: skip
        keys = s.scalars(select(Item.key)).all()
    store.close()
    assert len(keys) == len(set(keys)), "duplicate items"
    assert len({(r.modality, r.row_id) for r in rows}) == len(rows), "duplicate rows"
    folder = IndexFolder.open(ws.index_dir("default"))
    out = {}
    for r in rows:
        vec = folder.vectors(r.modality).get(np.array([r.row_id]))[0]
        out[(r.key, r.modality)] = (r[1], r.text, r.uri, r.group_key, json.dumps(r.meta, sort_keys=True), r[7], vec)
    for modality in folder.modalities():  # FAISS holds exactly the rows SQL references
        assert sorted(folder.faiss(modality).ids().tolist()) == sorted(r.row_id for r in rows if r.modality == modality)
    return out


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert a[key][:-1] == b[key][:-1], key
        np.testing.assert_allclose(a[key][-1], b[key][-1], atol=1e-6, err_msg=str(key))


def test_a_missing_ray_fails_with_the_install_hint(monkeypatch) -> None:
    from mmgen.engines.ray_engine import import_ray

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(MissingDependencyError, match=r"mmgen\[ray\]"):
        import_ray()


def test_an_unknown_engine_lists_the_valid_ones(tmp_path) -> None:
    from mmgen.engines import run_index

    with pytest.raises(UnknownNameError, match="local, ray"):
        run_index("x", Workspace.resolve(tmp_path), IndexOptions(progress=False), engine="spark")


def cli(*args: str) -> Any:
    from typer.testing import CliRunner

    from mmgen.cli import app

    return CliRunner().invoke(app, ["index", *args, "--json"])


def test_ray_equals_local_and_a_rerun_adds_nothing(ray_cluster, tmp_path, image_folder, tiny_clip, tiny_encoder):
    local_ws, ray_ws = Workspace.resolve(tmp_path / "local"), Workspace.resolve(tmp_path / "ray")
    local = run(local_ws, tiny_encoder, str(image_folder), batch_size=4)
    remote = run(ray_ws, tiny_encoder, str(image_folder), indexer=ray_indexer(), batch_size=4, workers=2)
    assert (remote.added, remote.vectors_added, remote.totals) == (local.added, local.vectors_added, local.totals)
    assert sorted(remote.failed) == sorted(local.failed) and remote.failed  # the bad images fail alike
    assert_same(snapshot(ray_ws), snapshot(local_ws))

    # Again, from the CLI: nothing new; the four bad images are retried (and fail) as the local engine does.
    local_again = run(local_ws, tiny_encoder, str(image_folder), batch_size=4)
    res = cli(str(image_folder), "--workspace", str(ray_ws.root), "--encoder", tiny_clip.dir_name,
              "--batch-size", "4", "--engine", "ray", "--workers", "2")  # fmt: skip
    assert res.exit_code == 0, res.output
    again = json.loads(res.stdout)
    assert (again["added"], again["updated"], again["unchanged"], again["vectors_added"]) == (
        0, local_again.updated, local_again.unchanged, {}
    )  # fmt: skip
    assert_same(snapshot(ray_ws), snapshot(local_ws))
    res = cli(str(image_folder), "--workspace", str(ray_ws.root), "--engine", "spark")
    assert res.exit_code != 0 and "local, ray" in res.output


def test_interrupted_then_resumed_through_a_killed_worker(ray_cluster, tmp_path, text_folder, tiny_encoder) -> None:
    """Ctrl-C mid-run keeps what was committed; the resumed run's worker is SIGKILLed once and Ray retries it."""
    from mmgen.engines.ray_engine import EncodeWorker, RayIndexer

    class StopsAtThirdBatch(RayIndexer):
        writes = 0

        def _write(self, *args: Any) -> None:
            type(self).writes += 1
            if type(self).writes == 3:  # Ctrl-C while a batch is in flight: it is not committed
                raise KeyboardInterrupt
            super()._write(*args)

    ws = Workspace.resolve(tmp_path / "ray")
    stopped = run(ws, tiny_encoder, str(text_folder), indexer=StopsAtThirdBatch, batch_size=4, workers=1)
    assert stopped.interrupted and stopped.added == 8
    assert len(snapshot(ws)) == 8

    marker = tmp_path / "killed-once"

    class DiesOnce(EncodeWorker):  # defined here, so Ray ships it to the workers by value
        calls = 0

        def __call__(self, rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            type(self).calls += 1
            if type(self).calls == 2 and not marker.exists():
                marker.write_text(str(os.getpid()))
                os.kill(os.getpid(), signal.SIGKILL)  # mid-run, holding a batch
            return super().__call__(rows)

    resumed = run(ws, tiny_encoder, str(text_folder), indexer=ray_indexer(DiesOnce), batch_size=4, workers=1)
    assert marker.exists(), "the worker was never killed"
    assert (resumed.added, resumed.unchanged, resumed.interrupted) == (22, 8, False)
    local_ws = Workspace.resolve(tmp_path / "local")
    run(local_ws, tiny_encoder, str(text_folder), batch_size=4)
    assert_same(snapshot(ws), snapshot(local_ws))
