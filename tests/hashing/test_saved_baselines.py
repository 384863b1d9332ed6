"""FAISS baselines saved as hashers: round trip and refusals, attached with `mmgen index --hash` (a saved one, or
`lsh-64` fitted in the same command) and searched in both code modes against brute force; old manifests still load."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from mmgen.cli import app
from mmgen.data.checksums import file_sha256
from mmgen.errors import ManifestMismatchError, ModelLoadError
from mmgen.eval.hashing import evaluate_hashing
from mmgen.hashing.baselines import FaissBaseline
from mmgen.hashing.data import heldout_groups, load_index_vectors
from mmgen.hashing.model import Hasher, NetConfig, build_net, load_hasher, save_hasher
from mmgen.hashing.saved import BaselineHasher, save_baseline
from mmgen.index import IndexFolder
from mmgen.index.codes import hamming
from mmgen.store.db import open_store
from mmgen.store.models import ModelRecord
from mmgen.train.hasher import HasherConfig, train_hasher

DIM = 48
GROUPS = np.array(sorted(f"{c}-{s}" for c in ("red", "green", "blue", "yellow") for s in ("circle", "square")))


def unit(n: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def invoke(ws, *args: str):
    res = CliRunner().invoke(app, [*args, "--workspace", str(ws.root)], catch_exceptions=False)
    return res


# ---- saved form ------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["lsh", "itq", "pca"])
def test_saved_baseline_round_trips_and_refuses_a_modified_codec(tmp_path: Path, method: str) -> None:
    models = tmp_path / "models"
    codec = FaissBaseline(method, DIM, 32, seed=5).train(unit(400, 0))
    manifest = {"name": "b", "bits": 32, "dim": DIM, "encoder": "enc:a", "encoder_checksum": "a" * 64,
                "holdout": {"fraction": 0.1, "seed": 0, "groups": ["g1"]}}  # fmt: skip
    saved = save_baseline(codec, manifest, models / "b")
    m = json.loads((models / "b" / "manifest.json").read_text())
    assert (m["type"], m["format"], m["method"]) == ("mmgen.hasher", 1, method)
    assert m["checksum"] == file_sha256(models / "b" / "codec.faiss") == saved.checksum

    loaded = load_hasher("b", models)
    assert isinstance(loaded, BaselineHasher) and (loaded.method, loaded.bits, loaded.dim) == (method, 32, DIM)
    assert not loaded.has_logits and not hasattr(loaded, "logits")  # bits only: no asymmetric scoring
    x = unit(30, 1)
    codes = loaded.encode(x, "text")
    assert codes.shape == (30, 4) and codes.dtype == np.uint8
    np.testing.assert_array_equal(codes, codec.encode(x))
    np.testing.assert_array_equal(loaded.encode(x, "image"), codes)  # one codec for both modalities
    assert loaded.manifest["holdout"]["groups"] == ["g1"]
    loaded.check_index(index="ix", encoder="enc:a", encoder_checksum="a" * 64, dim=DIM)
    with pytest.raises(ManifestMismatchError, match=f"--method {method} --bits 32"):
        loaded.check_index(index="ix", encoder="enc:b", encoder_checksum="b" * 64, dim=DIM)
    with pytest.raises(ManifestMismatchError, match="shape"):
        loaded.encode(x[:, :8], "text")

    path = models / "b" / "codec.faiss"
    data = path.read_bytes()
    path.write_bytes(data[:-4] + bytes(b ^ 0xFF for b in data[-4:]))
    with pytest.raises(ModelLoadError, match="does not match the checksum"):
        load_hasher("b", models)
    path.unlink()
    with pytest.raises(ModelLoadError, match="no codec.faiss"):
        load_hasher("b", models)
    (models / "b" / "manifest.json").write_text(json.dumps({**m, "method": "sh"}))
    with pytest.raises(ModelLoadError, match="unknown method 'sh'"):
        load_hasher("b", models)


def test_an_old_autoencoder_manifest_without_method_still_loads(tmp_path: Path) -> None:
    import torch

    torch.manual_seed(0)
    saved = save_hasher(build_net(NetConfig(DIM, 32, 16)), {"name": "h", "bits": 32, "dim": DIM, "hidden": 16},
                        tmp_path / "h")  # fmt: skip
    assert saved.manifest["method"] == "autoencoder" and saved.has_logits
    path = tmp_path / "h" / "manifest.json"
    old = {k: v for k, v in json.loads(path.read_text()).items() if k != "method"}
    path.write_text(json.dumps(old))
    loaded = load_hasher(str(tmp_path / "h"), tmp_path)
    assert isinstance(loaded, Hasher) and loaded.method == "autoencoder" and "method" not in loaded.manifest
    x = unit(10, 2)
    np.testing.assert_array_equal(loaded.encode(x, "image"), saved.encode(x, "image"))


# ---- attached to an index and searched ---------------------------------------------------------
def _image_rows(ws):
    store = open_store(ws.db_url)
    try:
        return load_index_vectors(ws, store, "default").modalities["image"]
    finally:
        store.close()


def _search(ws, *args: str) -> list[dict]:
    res = invoke(ws, "search", "a red circle", "--to", "image", *args, "--json")
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)["hits"]


def test_itq_hasher_attached_and_searched_like_the_autoencoder(tmp_path, wide_encoder, build_tiny_workspace) -> None:
    ws, manifest = build_tiny_workspace(tmp_path, wide_encoder)
    result = train_hasher(ws, HasherConfig(method="itq", bits=32, progress=False))
    hasher = result.hasher
    assert result.path == ws.models_dir / "default-itq-32b" and (result.steps, result.final_loss) == (0, None)
    m = hasher.manifest
    assert (m["method"], m["bits"], m["dim"], m["index"], m["encoder"]) == ("itq", 32, 32, "default", wide_encoder.name)
    held = heldout_groups(GROUPS.astype(object), 0.1, 0)
    assert m["holdout"]["groups"] == held and m["training_vectors"] == {"image": 35, "text": 35}
    # fitted on the training vectors of both modalities concatenated, as `eval hashing` fits its baselines
    store = open_store(ws.db_url)
    try:
        train, _ = load_index_vectors(ws, store, "default").split(set(held))
    finally:
        store.close()
    stacked = np.concatenate([train.modalities[k].vectors for k in ("image", "text")])
    expected = FaissBaseline("itq", 32, 32).train(stacked)
    images = _image_rows(ws)
    np.testing.assert_array_equal(hasher.encode(images.vectors, "image"), expected.encode(images.vectors))
    with open_store(ws.db_url) as store, store.session() as s:
        row = s.scalars(select(ModelRecord).where(ModelRecord.name == "default-itq-32b")).one()
        assert (row.kind, row.checksum, row.params["method"]) == ("hasher", hasher.checksum, "itq")

    res = invoke(ws, "index", str(manifest), "--hash", "default-itq-32b", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["codes"] == {"image": 40, "text": 40}
    folder = IndexFolder.open(ws.index_dir("default"))
    assert folder.hash["name"] == "default-itq-32b" and folder.hash["checksum"] == hasher.checksum

    q = wide_encoder.encode_text(["a red circle"])
    dist = hamming(hasher.encode(q, "text"), hasher.encode(images.vectors, "image"))[0]
    exact = images.vectors @ q[0]
    by_item = {int(i): n for n, i in enumerate(images.items)}

    # codes: the hits are a brute-force Hamming top k (ties in any order), scored 1 - 2 d / B
    hits = _search(ws, "-k", "8", "--mode", "codes")
    assert len(hits) == 8
    found = np.array([dist[by_item[h["id"]]] for h in hits])
    np.testing.assert_array_equal(found, np.sort(dist)[:8])
    np.testing.assert_allclose([h["score"] for h in hits], 1 - 2 * found / 32, atol=1e-6)

    # rerank: the Hamming short list of C re-scored exactly, best first (not the asymmetric pre-list)
    C, k = 12, 5
    hits = _search(ws, "-k", str(k), "--rerank", str(C))
    rows = [by_item[h["id"]] for h in hits]
    edge = np.sort(dist)[C - 1]  # the C-th smallest distance: items nearer are surely in the short list
    assert len(hits) == k and all(dist[r] <= edge for r in rows)
    np.testing.assert_allclose([h["score"] for h in hits], exact[rows], atol=1e-5)
    assert np.all(np.diff([h["score"] for h in hits]) <= 1e-6)
    sure = np.flatnonzero(dist < edge)
    better = sure[exact[sure] > exact[rows[-1]] + 1e-6]
    assert set(better.tolist()) <= set(rows)
    if np.sum(dist <= edge) == C:  # no tie at the edge: exactly the exact top k of the short list
        short = np.flatnonzero(dist <= edge)
        assert rows == short[np.argsort(-exact[short], kind="stable")[:k]].tolist()
    # a short list as large as the index: the exact float search
    hits = _search(ws, "-k", str(k), "--rerank", "40")
    assert [h["id"] for h in hits] == [h["id"] for h in _search(ws, "-k", str(k))]


def test_hash_method_bits_fits_saves_and_attaches_a_baseline(hash_ws, tiny_encoder) -> None:
    ws, manifest = hash_ws
    res = invoke(ws, "index", str(manifest), "--hash", "lsh-64", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["codes"] == {"image": 40, "text": 40}
    m = json.loads((ws.models_dir / "lsh-64" / "manifest.json").read_text())
    assert (m["method"], m["bits"], m["name"], m["index"]) == ("lsh", 64, "lsh-64", "default")
    assert m["holdout"] == {"fraction": 0.1, "seed": 0, "groups": heldout_groups(GROUPS.astype(object), 0.1, 0)}
    assert m["checksum"] == file_sha256(ws.models_dir / "lsh-64" / "codec.faiss")
    with open_store(ws.db_url) as store, store.session() as s:
        row = s.scalars(select(ModelRecord).where(ModelRecord.name == "lsh-64")).one()
        assert (row.kind, row.checksum) == ("hasher", m["checksum"])
    folder = IndexFolder.open(ws.index_dir("default"))
    assert folder.hash["name"] == "lsh-64" and folder.hash["bits"] == 64
    hasher = load_hasher("lsh-64", ws.models_dir)
    for modality in ("image", "text"):
        ids, codes = folder.codes(modality).codes()
        np.testing.assert_array_equal(codes, hasher.encode(folder.vectors(modality).get(ids), modality))

    # later runs use the saved one (not fitted again); searches work in both modes
    res = invoke(ws, "index", str(manifest), "--hash", "lsh-64", "--json")
    assert res.exit_code == 0 and load_hasher("lsh-64", ws.models_dir).checksum == m["checksum"]
    assert len(_search(ws, "-k", "3", "--mode", "codes")) == 3 and len(_search(ws, "-k", "3", "--rerank", "10")) == 3

    # eval measures the saved baseline on its recorded held-out queries: the same figures as one fitted on the fly
    train_hasher(ws, HasherConfig(bits=64, steps=5, anchors=16, neighbours=4, hidden=16, progress=False, device="cpu"))
    fly = evaluate_hashing(ws, hashers=["default-64b"], methods=["lsh"], rerank=20).rows[1:]
    saved = evaluate_hashing(ws, hashers=["lsh-64"], methods=["autoencoder", "lsh"], rerank=20).rows[1:]
    assert [(r.method, r.mode, r.hasher) for r in saved] == [("lsh", "codes", "lsh-64"), ("lsh", "rerank", "lsh-64")]
    assert [(r.recall_at_10, r.map_at_100) for r in saved] == [(r.recall_at_10, r.map_at_100) for r in fly]
    default = evaluate_hashing(ws, methods=["autoencoder", "lsh"], rerank=20).rows[1:]  # the autoencoders by default
    assert [(r.method, r.mode, r.hasher) for r in default] == [
        ("autoencoder", "codes", "default-64b"), ("autoencoder", "rerank", "default-64b"),
        ("autoencoder", "asym-rerank", "default-64b"), ("lsh", "codes", None), ("lsh", "rerank", None),
    ]  # fmt: skip

    # refusals: one clear line, exit code 2
    for args, message in (
        (["index", str(manifest), "--hash", "itq-64"], "ITQ cannot make 64 bits from 16-d"),
        (["index", str(manifest), "--hash", "lsh-48"], "32, 64, 128, 256"),
        (["index", str(manifest), "--name", "new", "--hash", "pca-32"], "no vectors yet to fit pca-32 on; index first"),
    ):
        res = invoke(ws, *args)
        assert res.exit_code == 2 and message in res.stderr, (args, res.output)
    assert not (ws.models_dir / "itq-64").exists() and not (ws.models_dir / "pca-32").exists()
