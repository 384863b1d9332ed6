"""Recall@k: brute force, CLIP_benchmark's own function, and end to end with a tiny real encoder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mmgen.data import Record, folder_records, load_image, write_records
from mmgen.encoders import Encoder
from mmgen.errors import ConfigError, DataError
from mmgen.eval.retrieval import (
    RetrievalReport,
    _group_ranks,
    best_positive_ranks,
    evaluate_manifest,
    evaluate_retrieval,
    recall_at_k,
)

KS = (1, 5, 10)


def brute_recall(scores: np.ndarray, positives: np.ndarray, ks: tuple[int, ...] = KS) -> dict[str, float]:
    """Sort every row; a query hits at k when any positive is among its k best (queries with none left out)."""
    order = np.argsort(-scores, axis=1, kind="stable")
    keep = positives.any(axis=1)
    hits = np.take_along_axis(positives, order, axis=1)[keep]
    return {f"R@{k}": float(hits[:, :k].any(axis=1).mean()) for k in ks}


def unit_rows(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_recall_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    scores = rng.standard_normal((300, 120))
    positives = rng.random((300, 120)) < 0.02  # some rows have no positive at all
    assert not positives.any(axis=1).all()
    assert recall_at_k(scores, positives, KS) == pytest.approx(brute_recall(scores, positives))


def test_recall_chunks_and_clipping() -> None:
    rng = np.random.default_rng(3)
    scores = rng.standard_normal((1000, 7))
    positives = rng.random((1000, 7)) < 0.2
    whole = best_positive_ranks(scores, positives, chunk=10_000)
    assert np.array_equal(best_positive_ranks(scores, positives, chunk=33), whole)
    out = recall_at_k(scores, positives, (1, 7, 50))
    assert out["R@7"] == out["R@50"] == 1.0  # k above the candidate count is clipped
    assert out["R@1"] == pytest.approx(brute_recall(scores, positives, (1,))["R@1"])


def test_recall_ties_count_against_the_query() -> None:
    scores = np.zeros((3, 4))
    positives = np.eye(3, 4, dtype=bool)
    assert recall_at_k(scores, positives, (1, 4)) == {"R@1": 0.0, "R@4": 1.0}


def test_recall_bad_input() -> None:
    with pytest.raises(DataError, match="no query"):
        recall_at_k(np.zeros((2, 3)), np.zeros((2, 3), dtype=bool), KS)
    with pytest.raises(ConfigError, match="shape"):
        recall_at_k(np.zeros((2, 3)), np.zeros((3, 2), dtype=bool), KS)
    with pytest.raises(ConfigError, match="ks"):
        recall_at_k(np.zeros((2, 3)), np.ones((2, 3), dtype=bool), (0,))


@pytest.mark.parametrize("seed", [0, 1])
def test_recall_matches_clip_benchmark(seed: int) -> None:
    """Same embeddings, several texts per image, both directions: equal to CLIP_benchmark to 1e-6."""
    from mmgen.compat import ensure_torchvision

    ensure_torchvision()
    torch = pytest.importorskip("torch")
    zeroshot = pytest.importorskip("clip_benchmark.metrics.zeroshot_retrieval")

    rng = np.random.default_rng(seed)
    n_images, dim = 60, 8
    texts_per_image = rng.integers(1, 5, n_images)
    texts_image_index = np.repeat(np.arange(n_images), texts_per_image)
    images = unit_rows(rng, n_images, dim)
    # Captions near their image, so recall lands between 0 and 1 and the comparison means something.
    noisy = images[texts_image_index] + 0.6 * unit_rows(rng, len(texts_image_index), dim) * np.sqrt(dim)
    texts = (noisy / np.linalg.norm(noisy, axis=1, keepdims=True)).astype(np.float32)

    # CLIP_benchmark's evaluate(): scores are texts x images, one positive image per text.
    scores = torch.from_numpy(texts @ images.T)
    positive_pairs = torch.zeros_like(scores, dtype=torch.bool)
    positive_pairs[torch.arange(len(scores)), torch.from_numpy(texts_image_index)] = True
    image_groups = np.arange(n_images)
    seen: set[float] = set()
    for k in KS:
        cb_t2i = (zeroshot.recall_at_k(scores, positive_pairs, k) > 0).float().mean().item()
        cb_i2t = (zeroshot.recall_at_k(scores.T, positive_pairs.T, k) > 0).float().mean().item()
        ours_t2i = recall_at_k(scores.numpy(), positive_pairs.numpy(), (k,))[f"R@{k}"]
        ours_i2t = recall_at_k(scores.T.numpy(), positive_pairs.T.numpy(), (k,))[f"R@{k}"]
        # The path evaluate_retrieval takes: embeddings and group ids, scored chunk by chunk.
        grouped_t2i = (_group_ranks(texts, texts_image_index, images, image_groups) < k).mean()
        grouped_i2t = (_group_ranks(images, image_groups, texts, texts_image_index) < k).mean()
        assert ours_t2i == pytest.approx(cb_t2i, abs=1e-6)
        assert ours_i2t == pytest.approx(cb_i2t, abs=1e-6)
        assert grouped_t2i == pytest.approx(cb_t2i, abs=1e-6)
        assert grouped_i2t == pytest.approx(cb_i2t, abs=1e-6)
        seen.update({cb_t2i, cb_i2t})
    assert len(seen) == 2 * len(KS) and max(seen) < 1.0 and min(seen) > 0.0


# ---- evaluate_retrieval end to end ---------------------------------------------------------


def color_manifest(image_folder: Path, tmp_path: Path) -> Path:
    """The image_folder fixture as a manifest grouped by colour, plus a blank caption, a missing image, a text-only row."""
    records = []
    for r in folder_records(image_folder):
        group = r.text.split()[1] if r.text and r.text.endswith("circle") else None
        records.append(Record(key=r.key, image=r.image, text=r.text, group=group))
    records.append(Record(key="blank", image=str(image_folder / "img000.png"), text="   ", group="red"))
    records.append(Record(key="gone", image=str(tmp_path / "nowhere.png"), text="a red circle", group="red"))
    records.append(Record(key="words", text="a purple circle", group="purple"))
    path = tmp_path / "colors.jsonl"
    write_records(records, path)
    return path


def embeddings(encoder: Encoder, records: list[Record]) -> tuple[np.ndarray, list[str]]:
    return encoder.encode_image([load_image(str(r.image)) for r in records]), [str(r.group) for r in records]


def test_evaluate_manifest_reports_bad_rows_and_matches_brute_force(
    image_folder: Path, tmp_path: Path, tiny_clip: object, tiny_encoder: Encoder
) -> None:
    path = color_manifest(image_folder, tmp_path)
    report = evaluate_manifest(path, tiny_clip.dir_name, device="cpu", progress=False)  # type: ignore[attr-defined]

    skipped = dict(report.skipped)
    assert set(skipped) == {"corrupt", "truncated", "empty", "notanimage", "blank", "gone"}
    assert skipped["blank"] == "empty text"
    assert "file not found" in skipped["gone"]
    assert report.n_images == 12
    assert report.n_texts == 5  # four colours (three images each, one text each) and "a purple circle"
    assert report.unmatched_queries == {"image_to_text": 0, "text_to_image": 1}  # nothing purple to find
    assert report.n_image_queries == 12 and report.n_text_queries == 4

    good = [r for r in folder_records(image_folder) if r.key.startswith("img")]
    images, _ = embeddings(tiny_encoder, good)
    image_groups = [str(r.text).split()[1] for r in good]
    texts = [f"a {c} circle" for c in ("red", "green", "blue", "yellow")] + ["a purple circle"]
    text_groups = ["red", "green", "blue", "yellow", "purple"]
    text_emb = tiny_encoder.encode_text(texts)
    positives = np.array([[g == t for t in text_groups] for g in image_groups])
    assert report.image_to_text == pytest.approx(brute_recall(images @ text_emb.T, positives))
    assert report.text_to_image == pytest.approx(brute_recall(text_emb @ images.T, positives.T))

    out = report.to_json()
    assert json.loads(json.dumps(out)) == out
    assert set(out["image_to_text"]) == {"R@1", "R@5", "R@10"}
    assert out["skipped"] == 6 and len(out["skipped_reasons"]) == 6
    assert out["encoder"] == tiny_clip.dir_name and out["manifest"] == str(path)  # type: ignore[attr-defined]


def test_candidates_are_retrieved_but_never_queried(image_folder: Path, tiny_encoder: Encoder) -> None:
    good = [r for r in folder_records(image_folder) if r.key.startswith("img")]
    records = []
    for i, r in enumerate(good):
        meta = {"role": "candidate"} if i >= 4 else {}
        # Each image is its own concept, captioned with a distinct text: one positive per query.
        records.append(Record(key=r.key, image=r.image, text=f"{r.text} number {i}", group=r.key, meta=meta))
    report = evaluate_retrieval(records, tiny_encoder, progress=False, batch_size=5)
    assert report.n_images == report.n_texts == 12
    assert report.n_image_queries == report.n_text_queries == 4

    images, _ = embeddings(tiny_encoder, good)
    text_emb = tiny_encoder.encode_text([str(r.text) for r in records])
    positives = np.eye(12, dtype=bool)[:4]
    assert report.image_to_text == pytest.approx(brute_recall(images[:4] @ text_emb.T, positives))
    assert report.text_to_image == pytest.approx(brute_recall(text_emb[:4] @ images.T, positives))


def test_texts_shared_by_styles_count_once(image_folder: Path, tiny_encoder: Encoder) -> None:
    good = [r for r in folder_records(image_folder) if r.key.startswith("img")][:6]
    records = [Record(key=r.key, image=r.image, text="bus", group="bus") for r in good[:3]]
    records += [Record(key=r.key, image=r.image, text="cat", group="cat") for r in good[3:]]
    records.append(Record(key="odd", text="bus", group="other"))  # same words, another concept: a second text
    report = evaluate_retrieval(records, tiny_encoder, progress=False)
    assert report.n_images == 6 and report.n_texts == 3
    assert report.n_text_queries == 2 and report.unmatched_queries["text_to_image"] == 1


def test_all_captions_uses_meta_captions(image_folder: Path, tiny_encoder: Encoder) -> None:
    (r,) = [r for r in folder_records(image_folder) if r.key == "img000"]
    records = [Record(key="a", image=r.image, text="bus", group="bus", meta={"captions": ["bus", "bus, vehicle"]})]
    assert evaluate_retrieval(records, tiny_encoder, progress=False).n_texts == 1
    assert evaluate_retrieval(records, tiny_encoder, progress=False, all_captions=True).n_texts == 2


def test_text_only_encoder_is_refused(minilm: Encoder) -> None:
    with pytest.raises(ConfigError, match="joint encoder"):
        evaluate_retrieval([Record(key="a", text="bus")], minilm, progress=False)


def test_unusable_manifests(tmp_path: Path, image_folder: Path, tiny_encoder: Encoder) -> None:
    with pytest.raises(DataError, match="no usable image"):
        evaluate_retrieval([Record(key="a", text="bus")], tiny_encoder, progress=False)
    image = str(image_folder / "img000.png")
    with pytest.raises(DataError, match="no image query has a relevant text"):
        evaluate_retrieval(
            [Record(key="a", image=image, group="x"), Record(key="b", text="bus", group="y")],
            tiny_encoder,
            progress=False,
        )
    only_candidates = [Record(key="a", image=image, text="bus", meta={"role": "candidate"})]
    with pytest.raises(DataError, match="no image query"):
        evaluate_retrieval(only_candidates, tiny_encoder, progress=False)
    with pytest.raises(DataError, match="not found"):
        evaluate_manifest(tmp_path / "missing.jsonl", "openclip:/nowhere", progress=False)


def test_report_lists_at_most_fifty_reasons() -> None:
    report = RetrievalReport({"R@1": 1.0}, {"R@1": 1.0}, 1, 1, [(f"k{i}", "bad") for i in range(80)])
    out = report.to_json()
    assert out["skipped"] == 80 and len(out["skipped_reasons"]) == 50
