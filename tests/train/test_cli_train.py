"""`mmgen train encoder` through the CLI, then `--encoder mmgen:NAME` for index, search and eval."""

from __future__ import annotations

import json

from sqlalchemy import select
from typer.testing import CliRunner

from mmgen.cli import app
from mmgen.store.db import open_store
from mmgen.store.models import ModelRecord
from mmgen.workspace import Workspace

runner = CliRunner()


def invoke(*args: str):  # noqa: ANN201 - click's Result
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_train_register_index_search_eval(tmp_path, shapes_manifest, tiny_tower) -> None:
    ws = str(tmp_path / "ws")
    res = invoke(
        "train",
        "encoder",
        str(shapes_manifest),
        "--name",
        "shapes",
        "--workspace",
        ws,
        "--tower",
        str(tiny_tower),
        "--image-size",
        "32",
        "--batch-size",
        "8",
        "--steps",
        "12",
        "--quiet",
    )
    assert res.exit_code == 0, res.output
    assert "completed: mmgen:shapes after 12 steps" in res.stdout
    assert "skipped 2" in res.stdout  # the text-only record and the corrupt image, reported
    store = open_store(Workspace.resolve(ws).db_url)
    with store.session() as s:
        rec = s.scalar(select(ModelRecord).where(ModelRecord.name == "shapes"))
        assert rec is not None and rec.kind == "encoder" and len(rec.checksum or "") == 64
    store.close()

    res = invoke("index", str(shapes_manifest), "--workspace", ws, "--encoder", "mmgen:shapes", "--json")
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["vectors_added"] == {"image": 24, "text": 26} and report["failed"] == 1
    res = invoke("search", "a red circle", "--workspace", ws, "-k", "3", "--json")
    out = json.loads(res.stdout)
    assert out["query"]["encoder"] == "mmgen:shapes" and out["query"]["to"] == "image" and len(out["hits"]) == 3
    res = invoke("search", "a red circle", "--workspace", ws, "--to", "text", "-k", "1", "--json")
    assert json.loads(res.stdout)["hits"][0]["text"] == "a red circle"  # the text side is MiniLM, exact match first

    res = invoke("eval", "retrieval", str(shapes_manifest), "--encoder", "mmgen:shapes", "--workspace", ws, "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["n_images"] == 24

    # another encoder on this index is refused, with the way out in the message
    res = invoke("index", str(shapes_manifest), "--workspace", ws, "--encoder", "st:all-MiniLM-L6-v2")
    assert res.exit_code == 2 and "--reembed" in res.stderr
    res = invoke("search", "x", "--workspace", ws, "--encoder", "mmgen:nope")
    assert res.exit_code == 2 and "mmgen:shapes" in res.stderr  # lists the trained encoders
