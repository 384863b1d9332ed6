"""`mmgen eval hashing`: the metrics against hand-worked values, and the whole evaluation on a tiny real index."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from mmgen.cli import app
from mmgen.errors import ConfigError
from mmgen.eval.hashing import average_precision, evaluate_hashing, recall_vs_exact
from mmgen.train.hasher import HasherConfig, train_hasher

TINY = {"steps": 10, "anchors": 16, "neighbours": 4, "hidden": 16, "progress": False, "device": "cpu",
        "holdout_fraction": 0.25}


def test_recall_against_exact_top_k() -> None:
    exact = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    found = np.array([[4, 3, 9, 9], [-1, 5, 0, 0]])
    assert recall_vs_exact(found, exact, k=4) == pytest.approx((2 / 4 + 1 / 4) / 2)
    assert recall_vs_exact(exact, exact, k=2) == 1.0


def test_average_precision_by_hand() -> None:
    rel = np.array([[1, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 0]], dtype=bool)
    # row 0: (1/1 + 2/3) / min(4, 2) ; row 1: (1/2) / min(4, 3) ; row 2 has no relevant item: left out
    got = average_precision(rel, np.array([2, 3, 0]), depth=4)
    assert got == pytest.approx(((1 + 2 / 3) / 2 + (1 / 2) / 3) / 2)
    with pytest.raises(ConfigError, match="no query"):
        average_precision(rel[2:], np.array([0]))


def test_evaluate_hashing_on_a_tiny_index(tmp_path, tiny_encoder, build_tiny_workspace) -> None:
    ws, _ = build_tiny_workspace(tmp_path, tiny_encoder)
    with pytest.raises(ConfigError, match="no hasher trained on index 'default'"):
        evaluate_hashing(ws)
    train_hasher(ws, HasherConfig(bits=32, **TINY))
    train_hasher(ws, HasherConfig(bits=64, **TINY))
    report = evaluate_hashing(ws, methods=["autoencoder", "lsh"], rerank=40)
    assert report.database == {"image": 40, "text": 40}
    assert report.queries == {"text->image": 10, "image->text": 10}  # 2 of 8 groups, 5 items each
    exact, *rows = report.rows
    assert exact.method == "exact" and exact.recall_at_10["mean"] == 1.0 and exact.bytes_per_item == 64
    modes = {"autoencoder": ("codes", "rerank", "asym-rerank"), "lsh": ("codes", "rerank")}
    assert [(r.method, r.bits, r.mode) for r in rows] == [
        (m, b, mode) for b in (32, 64) for m in ("autoencoder", "lsh") for mode in modes[m]
    ]
    for r in rows:
        assert r.bytes_per_item == r.bits // 8 and all(0 <= v <= 1 for v in r.recall_at_10.values())
        if r.mode in ("rerank", "asym-rerank"):  # a short list of every database item re-ranked exactly is the exact search
            assert r.recall_at_10["mean"] == pytest.approx(1.0) and r.map_at_100 == pytest.approx(exact.map_at_100)
    assert "autoencoder" in report.table() and json.loads(json.dumps(report.to_json()))["rows"][0]["method"] == "exact"
    with pytest.raises(ConfigError, match="no hasher of 128 bits"):
        evaluate_hashing(ws, bits=[128])
    with pytest.raises(ConfigError, match="methods must be among"):
        evaluate_hashing(ws, methods=["sh"])
    # ITQ / PCA cannot make more bits than the 16-d tiny encoder has dimensions: a clear error
    with pytest.raises(ConfigError, match="cannot make 32 bits from 16-d"):
        evaluate_hashing(ws, methods=["itq"], bits=[32])


def test_cli_train_index_search_eval(tmp_path, tiny_encoder, build_tiny_workspace) -> None:
    ws, manifest = build_tiny_workspace(tmp_path, tiny_encoder)
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, [*args, "--workspace", str(ws.root)], catch_exceptions=False)

    res = invoke("train", "hasher", "--bits", "32", "--steps", "5", "--hidden", "16", "--holdout", "0.25", "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["name"] == "default-32b" and out["holdout"]["groups"] == 2 and out["model_id"] >= 1
    res = invoke("index", str(manifest), "--hash", "default-32b", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["codes"] == {"image": 40, "text": 40}
    info = json.loads(invoke("info", "--json").stdout)
    assert info["indexes"][0]["hash"] == {
        "hasher": "default-32b", "bits": 32, "preset": "binary-flat", "codes": {"image": 40, "text": 40},
    }  # fmt: skip
    assert {"kind": "hasher", "name": "default-32b"}.items() <= info["models"][-1].items()
    assert "codes: hasher default-32b (32 bits, binary-flat): image 40, text 40" in invoke("info").stdout
    for extra in (["--mode", "codes"], ["--rerank", "12"]):
        res = invoke("search", "a red circle", "-k", "3", *extra, "--json")
        assert res.exit_code == 0, res.output
        hits = json.loads(res.stdout)["hits"]
        assert len(hits) == 3 and all(h["modality"] == "image" for h in hits)
    res = invoke("eval", "hashing", "--methods", "autoencoder,lsh", "--rerank", "20", "--json")
    assert res.exit_code == 0, res.output
    assert {r["mode"] for r in json.loads(res.stdout)["rows"]} == {"float", "codes", "rerank", "asym-rerank"}
    res = invoke("eval", "hashing", "--methods", "autoencoder")
    assert res.exit_code == 0 and "R@10" in res.stdout and "autoencoder" in res.stdout
    # bad input: one clear line, exit code 2
    for args, message in (
        (["train", "hasher", "--bits", "48"], "32, 64, 128, 256"),
        (["eval", "hashing", "--bits", "6x"], "comma-separated"),
        (["search", "a red circle", "--mode", "codes", "--rerank", "5"], "does not apply"),
        (["index", str(manifest), "--hash", "nope"], "no hasher"),
    ):
        res = invoke(*args)
        assert res.exit_code == 2 and message in res.stderr, (args, res.output)
