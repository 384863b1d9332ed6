"""Hasher training: on seeded two-modality data the autoencoder's codes rank across modalities better than
LSH and ITQ at equal bits; the saved hasher is registered in SQL with its held-out groups."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import select

from mmgen.errors import ConfigError
from mmgen.hashing.baselines import FaissBaseline
from mmgen.index.codes import hamming
from mmgen.hashing.data import IndexVectors, ModalityVectors, heldout_groups
from mmgen.hashing.model import load_hasher
from mmgen.store.db import open_store
from mmgen.store.models import ModelRecord
from mmgen.train.hasher import HasherConfig, fit, train_hasher

DIM, BITS = 48, 32


def joint_space(n_groups: int, per_group: int, seed: int) -> dict[str, ModalityVectors]:
    """A joint embedding in miniature: concepts shared by both modalities, each modality shifted into its own
    cone and varying strongly in private directions (style) that the other modality does not share."""
    rng = np.random.default_rng(seed)
    concepts = rng.standard_normal((n_groups, DIM))
    group = np.repeat(np.arange(n_groups), per_group)
    out = {}
    for modality in ("image", "text"):
        shift = rng.standard_normal(DIM)
        shift *= 4.0 / np.linalg.norm(shift)
        private = np.linalg.qr(rng.standard_normal((DIM, 12)))[0].T  # 12 directions of modality-only variance
        style = 4.0 * rng.standard_normal((len(group), 12)) @ private
        x = concepts[group] + shift + style + 0.5 * rng.standard_normal((len(group), DIM))
        x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
        ids = np.arange(len(group))
        out[modality] = ModalityVectors(ids, ids, np.array([f"g{g}" for g in group], dtype=object), x)
    return out


def cross_recall(encode_q, encode_db, q: np.ndarray, db: np.ndarray, k: int = 10) -> float:
    exact = np.argsort(-(q @ db.T), axis=1)[:, :k]
    found = np.argsort(hamming(encode_q(q), encode_db(db)), axis=1, kind="stable")[:, :k]
    return float(np.mean([len(np.intersect1d(a, b)) for a, b in zip(exact, found)])) / k


def test_autoencoder_beats_lsh_and_itq_on_held_out_queries() -> None:
    data = IndexVectors("ix", "enc:a", "a" * 64, DIM, joint_space(60, 8, seed=0))
    held = set(heldout_groups(data.groups(), 0.2, seed=0))
    train, test = data.split(held)
    cfg = HasherConfig(bits=BITS, steps=150, anchors=64, neighbours=8, hidden=128, progress=False, device="cpu")
    net, run = fit(train, cfg)
    assert run["steps"] == 150 and run["final_loss"] > 0 and len(run["curve"]) > 10

    from mmgen.hashing.model import Hasher

    hasher = Hasher(net, {"name": "t", "bits": BITS, "dim": DIM})
    q, db = test.modalities["text"].vectors, data.modalities["image"].vectors
    ae = cross_recall(lambda x: hasher.encode(x, "text"), lambda x: hasher.encode(x, "image"), q, db)
    stacked = np.concatenate([train.modalities[m].vectors for m in ("image", "text")])
    baselines = {}
    for kind in ("lsh", "itq"):
        b = FaissBaseline(kind, DIM, BITS).train(stacked)
        baselines[kind] = cross_recall(b.encode, b.encode, q, db)
    assert ae > max(baselines.values()), (ae, baselines)

    # seeded: the same config gives the same network
    short = HasherConfig(**{**cfg.__dict__, "steps": 5})
    first, again = fit(train, short)[0], fit(train, short)[0]
    for a, b in zip(first.state_dict().values(), again.state_dict().values()):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_heldout_groups_are_seeded_and_bounded() -> None:
    groups = np.array([f"g{i}" for i in range(50)] * 2, dtype=object)
    a = heldout_groups(groups, 0.1, seed=3)
    assert len(a) == 5 and a == heldout_groups(groups[::-1], 0.1, seed=3) and a != heldout_groups(groups, 0.1, seed=4)
    assert heldout_groups(groups, 0.0, seed=0) == []
    with pytest.raises(ConfigError, match=r"\[0, 1\)"):
        heldout_groups(groups, 1.0, seed=0)


@pytest.mark.parametrize(
    ("change", "message"),
    [({"bits": 48}, "32, 64"), ({"steps": 0}, "steps"), ({"holdout_fraction": 1.5}, "holdout"),
     ({"name": "no/slash"}, "folder name"), ({"temperature": -1.0}, "temperature"),
     ({"method": "sh"}, "method must be one of autoencoder, lsh, itq, pca"),
     ({"method": "itq", "steps": 5}, "no training loop")],
)  # fmt: skip
def test_bad_settings_are_refused(change: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        HasherConfig(**change).check()


def test_train_hasher_saves_registers_and_records_the_holdout(tmp_path, tiny_encoder, build_tiny_workspace) -> None:

    ws, _ = build_tiny_workspace(tmp_path, tiny_encoder)

    cfg = HasherConfig(bits=64, steps=10, anchors=16, neighbours=4, hidden=16, holdout_fraction=0.25, progress=False)
    result = train_hasher(ws, cfg)
    m = result.manifest
    assert result.path == ws.models_dir / "default-64b" and m["name"] == "default-64b"
    assert (m["type"], m["bits"], m["dim"], m["index"]) == ("mmgen.hasher", 64, 16, "default")
    assert m["method"] == "autoencoder"
    assert m["encoder_checksum"] == tiny_encoder.checksum() and m["encoder"] == tiny_encoder.name
    assert m["holdout"]["groups"] == heldout_groups(np.array(sorted({f"{c}-{s}" for c in ("red", "green", "blue", "yellow") for s in ("circle", "square")}), dtype=object), 0.25, 0)
    assert m["training_vectors"] == {"image": 30, "text": 30}  # 2 of 8 groups (10 items) held out
    with open_store(ws.db_url) as store, store.session() as s:
        row = s.scalars(select(ModelRecord).where(ModelRecord.kind == "hasher")).one()
        assert (row.name, row.checksum, row.params["bits"]) == ("default-64b", result.hasher.checksum, 64)
        assert row.id == result.model_id and "loss_curve" not in row.params
    loaded = load_hasher("default-64b", ws.models_dir)
    x = np.random.default_rng(0).standard_normal((5, 16)).astype(np.float32)
    np.testing.assert_array_equal(loaded.encode(x, "image"), result.hasher.encode(x, "image"))
    with pytest.raises(ConfigError, match="leaves nothing"):
        train_hasher(ws, HasherConfig(bits=32, holdout_fraction=0.99, progress=False))


def test_train_hasher_fits_a_baseline_in_one_call(tmp_path, tiny_encoder, build_tiny_workspace) -> None:

    from typer.testing import CliRunner

    from mmgen.cli import app
    from mmgen.data.checksums import file_sha256

    ws, _ = build_tiny_workspace(tmp_path, tiny_encoder)

    result = train_hasher(ws, HasherConfig(method="lsh", bits=32, seed=3, holdout_fraction=0.25, progress=False))
    m = result.manifest
    assert result.path == ws.models_dir / "default-lsh-32b" and (result.steps, result.final_loss) == (0, None)
    assert (m["type"], m["method"], m["bits"], m["dim"], m["seed"]) == ("mmgen.hasher", "lsh", 32, 16, 3)
    groups = np.array(sorted(f"{c}-{s}" for c in ("red", "green", "blue", "yellow") for s in ("circle", "square")))
    autoencoder_holdout = heldout_groups(groups.astype(object), 0.25, 0)
    assert m["holdout"]["groups"] == autoencoder_holdout and m["training_vectors"] == {"image": 30, "text": 30}
    assert m["checksum"] == file_sha256(result.path / "codec.faiss") and not (result.path / "hasher.pt").exists()
    with open_store(ws.db_url) as store, store.session() as s:
        row = s.scalars(select(ModelRecord).where(ModelRecord.kind == "hasher")).one()
        assert (row.name, row.checksum, row.params["method"]) == ("default-lsh-32b", result.hasher.checksum, "lsh")
    loaded = load_hasher("default-lsh-32b", ws.models_dir)
    x = np.random.default_rng(0).standard_normal((5, 16)).astype(np.float32)
    np.testing.assert_array_equal(loaded.encode(x, "text"), FaissBaseline("lsh", 16, 32, seed=3).encode(x))

    # PCA / ITQ cannot make more bits than the 16-d vectors have dimensions: the same clear error as eval gives
    with pytest.raises(ConfigError, match="PCA cannot make 32 bits from 16-d"):
        train_hasher(ws, HasherConfig(method="pca", bits=32, progress=False))
    res = CliRunner().invoke(app, ["train", "hasher", "--method", "lsh", "--workspace", str(ws.root)])
    assert res.exit_code == 0, res.output
    assert "hasher default-lsh-64b: LSH 64 bits on index 'default'" in res.stdout and "fitted in" in res.stdout
