"""The hasher's saved form: round trip, checksum and manifest checks, typed refusals; the FAISS baselines."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mmgen.errors import (
    ConfigError,
    ManifestMismatchError,
    ModelLoadError,
    UnknownNameError,
)
from mmgen.hashing.baselines import FaissBaseline
from mmgen.index.codes import hamming
from mmgen.hashing.model import NetConfig, build_net, load_hasher, save_hasher

DIM = 48


def unit(n: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture()
def saved(tmp_path):
    import torch

    torch.manual_seed(0)
    net = build_net(NetConfig(DIM, 32, 16))
    manifest = {"name": "h", "bits": 32, "dim": DIM, "hidden": 16, "encoder": "enc:a", "encoder_checksum": "a" * 64}
    return save_hasher(net, manifest, tmp_path / "models" / "h")


def test_round_trip_gives_the_same_codes(saved, tmp_path) -> None:
    x = unit(50, 1)
    loaded = load_hasher("h", tmp_path / "models")
    for modality in ("image", "text"):
        codes = loaded.encode(x, modality)
        assert codes.shape == (50, 4) and codes.dtype == np.uint8
        np.testing.assert_array_equal(codes, saved.encode(x, modality))
    # centring is per modality: the same vector may get another code as an image than as a text
    assert loaded.manifest["checksum"] == saved.checksum and len(saved.checksum) == 64
    assert load_hasher(str(tmp_path / "models" / "h"), tmp_path).checksum == saved.checksum


def test_refusals_are_typed_and_clear(saved, tmp_path) -> None:
    saved.check_index(index="ix", encoder="enc:a", encoder_checksum="a" * 64, dim=DIM)
    with pytest.raises(ManifestMismatchError, match="trained on embeddings of enc:a"):
        saved.check_index(index="ix", encoder="enc:b", encoder_checksum="b" * 64, dim=DIM)
    with pytest.raises(ManifestMismatchError, match="takes 48-d"):
        saved.check_index(index="ix", encoder="enc:a", encoder_checksum="a" * 64, dim=8)
    with pytest.raises(ManifestMismatchError, match="shape"):
        saved.encode(unit(3, 2)[:, :8], "text")
    with pytest.raises(ConfigError, match="modality"):
        saved.encode(unit(3, 2), "audio")
    with pytest.raises(ModelLoadError, match="no hasher"):
        load_hasher("missing", tmp_path / "models")
    with pytest.raises(ConfigError, match="folder name"):
        load_hasher("bad name!", tmp_path / "models")
    weights = tmp_path / "models" / "h" / "hasher.pt"
    weights.write_bytes(weights.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(ModelLoadError, match="checksum"):
        load_hasher("h", tmp_path / "models")
    manifest = tmp_path / "models" / "h" / "manifest.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "type": "mmgen.encoder"}))
    with pytest.raises(ModelLoadError, match="not a hasher"):
        load_hasher("h", tmp_path / "models")


def neighbour_recall(codes_q: np.ndarray, codes_db: np.ndarray, q: np.ndarray, db: np.ndarray, k: int = 10) -> float:
    exact = np.argsort(-(q @ db.T), axis=1)[:, :k]
    found = np.argsort(hamming(codes_q, codes_db), axis=1, kind="stable")[:, :k]
    return float(np.mean([len(np.intersect1d(a, b)) for a, b in zip(exact, found)])) / k


def test_baselines_encode_and_beat_chance() -> None:
    rng = np.random.default_rng(3)
    centres = rng.standard_normal((20, DIM)).astype(np.float32)
    x = centres[rng.integers(0, 20, 1200)] + 0.3 * rng.standard_normal((1200, DIM)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    train, db, q = x[:600], x[600:1150], x[1150:]
    recalls = {}
    for kind in ("lsh", "itq", "pca"):
        b = FaissBaseline(kind, DIM, 32).train(train)
        codes = b.encode(db)
        assert codes.shape == (550, 4) and codes.dtype == np.uint8
        recalls[kind] = neighbour_recall(b.encode(q), codes, q, db)
    assert all(r > 10 / 550 * 3 for r in recalls.values()), recalls  # far above chance
    a = FaissBaseline("lsh", DIM, 32, seed=1).encode(q)
    assert (a != FaissBaseline("lsh", DIM, 32, seed=2).encode(q)).any()  # the seed draws the hyperplanes
    np.testing.assert_array_equal(a, FaissBaseline("lsh", DIM, 32, seed=1).encode(q))
    with pytest.raises(UnknownNameError, match="itq"):
        FaissBaseline("sh", DIM, 32)
    with pytest.raises(ConfigError, match="cannot make 64 bits from 48-d"):
        FaissBaseline("itq", DIM, 64)
