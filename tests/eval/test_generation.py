"""Generation metrics against brute force and scipy, prompt sets, and `mmgen eval generation` end to end,
including several init strengths in one run."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from mmgen.cli import app
from mmgen.errors import ConfigError, DataError, ModelLoadError
from mmgen.eval.generation import (
    METHODS,
    evaluate_generation,
    frechet_distance,
    init_neighbours,
    load_prompt_set,
    nearest_distance,
    parse_strengths,
    r_precision,
    ra_method,
)
from mmgen.store.filters import parse_where
from mmgen.workspace import Workspace

COLOURS = {"red": (220, 30, 30), "green": (30, 170, 60), "blue": (40, 60, 220)}
SHAPES = ("circle", "square")


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    # Tiny tensors on a shared 2-core machine: one thread avoids OpenMP spin contention (10x faster here).
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


# ---- metrics ---------------------------------------------------------------------------------
def test_frechet_distance_matches_the_scipy_formula() -> None:
    from scipy import linalg

    rng = np.random.default_rng(0)
    a = rng.normal(size=(60, 5))
    b = rng.normal(size=(40, 5)) @ rng.normal(size=(5, 5)) + 0.5
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    expected = ((mu_a - mu_b) ** 2).sum() + np.trace(s_a + s_b - 2 * linalg.sqrtm(s_a @ s_b).real)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-6)
    assert frechet_distance(b, a) == pytest.approx(expected, rel=1e-6)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(a, a + 2.0) == pytest.approx(4.0 * 5, rel=1e-6)  # a pure shift costs |shift|^2
    # fewer samples than dimensions: rank-deficient covariances still give a finite, non-negative distance
    assert 0 <= frechet_distance(rng.normal(size=(4, 10)), rng.normal(size=(6, 10))) < np.inf
    with pytest.raises(DataError):
        frechet_distance(a[:1], b)
    with pytest.raises(ConfigError):
        frechet_distance(a, b[:, :3])


def test_r_precision_against_brute_force() -> None:
    rng = np.random.default_rng(1)
    texts = unit(rng.normal(size=(30, 8)))
    images = unit(texts[np.arange(30) % 30] + rng.normal(scale=0.6, size=(30, 8)))
    owners = np.arange(30)
    got = r_precision(images, texts, owners, seed=3, candidates=10)
    hits = 0
    for i in range(30):
        others = np.random.default_rng([3, i, i]).choice(np.delete(np.arange(30), i), 9, replace=False)
        hits += int(texts[i] @ images[i] > (texts[others] @ images[i]).max())
    assert got == hits / 30 and 0 < got < 1
    assert r_precision(texts, texts, owners, seed=0) == 1.0  # every picture is its own prompt
    same = np.ones((5, 4), dtype=np.float32) / 2
    assert r_precision(same, same, np.arange(5), seed=0) == 0.0  # ties count against
    with pytest.raises(DataError):
        r_precision(texts[:1], texts[:1], np.arange(1), seed=0)


def test_nearest_distance_against_brute_force() -> None:
    rng = np.random.default_rng(2)
    pool, emb = unit(rng.normal(size=(50, 6))), unit(rng.normal(size=(7, 6)))
    expected = 1 - np.max(emb @ pool.T, axis=1)
    np.testing.assert_allclose(nearest_distance(emb, pool), expected, rtol=1e-6)
    assert np.allclose(nearest_distance(pool[:5], pool), 0, atol=1e-6)


# ---- prompt sets -----------------------------------------------------------------------------
def write_shapes(root: Path) -> Path:
    """6 concepts x 2 styles, a text-only record, a pool-only record and one of another style."""
    from PIL import Image, ImageDraw

    root.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    for colour, rgb in COLOURS.items():
        for shape in SHAPES:
            for style in ("filled", "outlined"):
                im = Image.new("RGB", (40, 40), (255, 255, 255))
                kw = {"fill": rgb} if style == "filled" else {"outline": rgb, "width": 4}
                (ImageDraw.Draw(im).ellipse if shape == "circle" else ImageDraw.Draw(im).rectangle)([6, 6, 34, 34], **kw)
                name = f"{colour}-{shape}-{style}"
                im.save(root / f"{name}.png")
                rows.append({"id": name, "image": f"{name}.png", "text": f"a {colour} {shape}",
                             "group": f"{colour}-{shape}", "meta": {"style": style}})  # fmt: skip
    rows.append({"id": "words", "text": "only words", "group": "words", "meta": {"style": "filled"}})
    rows.append({"id": "pool", "image": "red-circle-filled.png", "text": "pool", "group": "pool",
                 "meta": {"style": "filled", "role": "candidate"}})  # fmt: skip
    manifest = root / "shapes.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return manifest


def test_load_prompt_set(tmp_path: Path) -> None:
    manifest = write_shapes(tmp_path / "shapes")
    ps = load_prompt_set(manifest)
    assert len(ps.prompts) == 6 and ps.skipped == 2 and ps.name == "shapes"
    assert ps.prompts[ps.groups.index("red-circle")] == "a red circle"
    assert all(len(refs) == 2 and all(Path(r).is_file() for r in refs) for refs in ps.references)
    sample = load_prompt_set(manifest, sample=3, seed=5)
    assert len(sample.groups) == 3 and sample.groups == load_prompt_set(manifest, sample=3, seed=5).groups
    assert set(sample.groups) <= set(ps.groups)
    filled = load_prompt_set(manifest, where=parse_where(["style=filled"]))
    assert all(len(refs) == 1 for refs in filled.references)
    both = load_prompt_set(manifest, where=parse_where(["style=filled", "style=outlined"]))
    assert both.groups == ps.groups and all(len(refs) == 2 for refs in both.references)
    # one grammar with search: values are exact and case-sensitive, so OUTLINED adds nothing
    upper = load_prompt_set(manifest, where=parse_where(["style=filled", "style=OUTLINED"]))
    assert upper.groups == ps.groups and all(len(refs) == 1 for refs in upper.references)
    reds = load_prompt_set(manifest, where=parse_where(["style!=outlined", "group=red-circle", "group=red-square"]))
    assert reds.groups == ["red-circle", "red-square"] and all(len(refs) == 1 for refs in reds.references)
    with pytest.raises(DataError, match="fewer than 2"):
        load_prompt_set(manifest, where={"style": ["nope"]})
    with pytest.raises(ConfigError, match="key=value"):
        parse_where(["style"])


# ---- end to end ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory, tiny_clip: Any) -> tuple[Workspace, Path]:
    from mmgen.indexer import IndexOptions, index_sources
    from mmgen.train.generator import GeneratorConfig, train_generator

    root = tmp_path_factory.mktemp("gen-eval")
    manifest = write_shapes(root / "shapes")
    ws = Workspace.resolve(root / "ws")
    index_sources(str(manifest), ws, IndexOptions(encoder=tiny_clip.dir_name, progress=False, device="cpu"))
    for retrieval in (True, False):
        cfg = GeneratorConfig(retrieval=retrieval, neighbours=2, preset="tiny", steps=3, image_size=16, device="cpu",
                              progress=False)  # fmt: skip
        train_generator(ws, cfg)
    return ws, manifest


def test_evaluate_generation_scores_every_method_reproducibly(workspace: tuple[Workspace, Path], tmp_path: Path) -> None:
    ws, manifest = workspace
    kw: dict[str, Any] = {"model": "generator", "baseline": "generator-noretrieval", "steps": 2, "seed": 1,
                          "device": "cpu", "progress": False}  # fmt: skip
    report = evaluate_generation(ws, [manifest, manifest], where={"style": ["filled"]}, sheet=tmp_path / "s.png", **kw)
    assert len(report.sets) == 2 and report.settings["k"] == 2
    first = report.sets[0]
    assert first.prompts == 6 and first.references == 6 and first.candidates == 6
    assert set(first.methods) == set(METHODS)
    for scores in first.methods.values():
        assert -1 <= scores.similarity <= 1 and 0 <= scores.r_precision <= 1 and scores.fd >= 0
        assert 0 <= scores.nn_distance <= 2 and scores.n == 6
    assert Path(report.sheet or "").is_file()
    again = evaluate_generation(ws, [manifest], where={"style": ["filled"]}, **kw)
    assert again.sets[0].to_json()["methods"] == first.to_json()["methods"]
    with pytest.raises(ConfigError, match="without retrieval"):
        evaluate_generation(ws, [manifest], **{**kw, "model": "generator-noretrieval"})
    with pytest.raises(ConfigError, match="uses retrieval"):
        evaluate_generation(ws, [manifest], **{**kw, "baseline": "generator"})
    with pytest.raises(ModelLoadError, match="no trained generator"):
        evaluate_generation(ws, [manifest], **{**kw, "baseline": "missing"})


def test_cli_eval_generation(workspace: tuple[Workspace, Path]) -> None:
    ws, manifest = workspace
    args = ["eval", "generation", str(manifest), "--workspace", str(ws.root), "--steps", "1", "--device", "cpu",
            "--where", "style=filled"]  # fmt: skip
    res = CliRunner().invoke(app, [*args, "--json"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["sets"][0]["prompts"] == 6 and out["sets"][0]["reference_images"] == 6
    assert set(out["sets"][0]["methods"]) == set(METHODS) and out["settings"]["where"] == {"style": ["filled"]}
    res = CliRunner().invoke(app, args, catch_exceptions=False)
    assert res.exit_code == 0 and "(c) retrieval-augmented" in res.stdout and "R-prec" in res.stdout
    res = CliRunner().invoke(app, ["eval", "generation", str(manifest), "--workspace", str(ws.root), "--sample", "1"])
    assert res.exit_code == 2 and "at least 2" in res.stderr


# ---- init strengths --------------------------------------------------------------------------
def test_parse_strengths() -> None:
    assert parse_strengths(["1.0,0.7", "0.7", " 0.5 "]) == [1.0, 0.7, 0.5]
    assert parse_strengths([1.0]) == [1.0] and ra_method(1.0) == "ra-generator" and ra_method(0.7) == "ra-generator@0.7"
    bad_values = ((["0"], r"\(0, 1\]"), (["1.2"], r"\(0, 1\]"), (["1,x"], "takes numbers"), ([], "at least one"))
    for bad, message in bad_values:
        with pytest.raises(ConfigError, match=message):
            parse_strengths(bad)


def test_init_neighbours_leave_out_the_prompt_s_own_concept(workspace: tuple[Workspace, Path]) -> None:
    from mmgen.generate.image import ImageGenerator
    from mmgen.store.db import open_store

    ws, manifest = workspace
    ps = load_prompt_set(manifest)
    with open_store(ws.db_url) as store:
        ra = ImageGenerator(ws, store, device="cpu")
        text = ra.encoder.encode_text(ps.prompts)
        rows = init_neighbours(ra, ps, text, 3)
        assert rows.shape == (6, 3)
        red = ps.groups.index("red-circle")
        # the "pool" item shows red-circle's own filled picture under another group: a copy to leave out too
        copies = [
            i for i, uri in enumerate(ra.images.uris) if uri in ps.references[red] and ra.images.groups[i] != "red-circle"
        ]
        assert copies and ra.images.groups[copies[0]] == "pool"
        for i, found in enumerate(rows):
            assert all(ra.images.groups[r] != ps.groups[i] for r in found)
            assert all(ra.images.uris[r] not in ps.references[i] for r in found)
        # best first among what is left: the same order as the exact search with the concept masked out
        scores = ra.images.image_vectors @ text[red]
        allowed = [i for i in range(len(scores)) if ra.images.groups[i] != "red-circle" and i not in copies]
        assert rows[red].tolist() == sorted(allowed, key=lambda i: (-scores[i], i))[:3]


def test_one_run_compares_init_strengths(workspace: tuple[Workspace, Path], tmp_path: Path) -> None:
    ws, manifest = workspace
    kw: dict[str, Any] = {"model": "generator", "baseline": "generator-noretrieval", "steps": 2, "seed": 1,
                          "device": "cpu", "progress": False, "where": {"style": ["filled"]},
                          "samples_per_prompt": 2}  # fmt: skip
    today = evaluate_generation(ws, [manifest], **kw)
    both = evaluate_generation(ws, [manifest], init_strengths=[1.0, 0.5], sheet=tmp_path / "s.png", **kw)
    methods = both.sets[0].to_json()["methods"]
    assert list(methods) == ["retrieval", "generator", "ra-generator", "ra-generator@0.5", "real"]
    assert methods["ra-generator"] == today.sets[0].to_json()["methods"]["ra-generator"]  # strength 1 is today's (c)
    assert methods["ra-generator@0.5"] != methods["ra-generator"]
    for name in ("ra-generator", "ra-generator@0.5"):
        assert set(methods[name]) == {"similarity", "r_precision", "fd", "nn_distance", "near_copies", "n"}
        assert methods[name]["n"] == 12 and 0 <= methods[name]["near_copies"] <= 1
    assert both.settings["init_strengths"] == [1.0, 0.5] and today.settings["init_strengths"] == [1.0]
    assert Path(both.sheet or "").is_file()
    with pytest.raises(ConfigError, match="init strength"):
        evaluate_generation(ws, [manifest], init_strengths=[0.0], **kw)


def test_cli_eval_generation_with_init_strengths(workspace: tuple[Workspace, Path]) -> None:
    ws, manifest = workspace
    args = ["eval", "generation", str(manifest), "--workspace", str(ws.root), "--steps", "1", "--device", "cpu",
            "--where", "style=filled", "--init-strength", "1.0,0.6", "--init-strength", "0.3"]  # fmt: skip
    res = CliRunner().invoke(app, [*args, "--json"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert set(out["sets"][0]["methods"]) == {*METHODS, "ra-generator@0.6", "ra-generator@0.3"}
    assert out["settings"]["init_strengths"] == [1.0, 0.6, 0.3]
    res = CliRunner().invoke(app, args, catch_exceptions=False)
    assert res.exit_code == 0 and "(c) RA, neighbour init 0.6" in res.stdout and "copies" in res.stdout
    res = CliRunner().invoke(app, [*args[:-4], "--init-strength", "0"])
    assert res.exit_code == 2 and "init strength must be in (0, 1]" in res.stderr
