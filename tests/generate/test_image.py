"""`mmgen generate` end to end on a tiny indexed workspace: determinism, retrieval, SQL provenance, sheet, errors,
starting from retrieved images (init strength)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from mmgen.cli import app
from mmgen.errors import (
    ConfigError,
    DataError,
    ManifestMismatchError,
    ModelLoadError,
)
from mmgen.generate.image import ImageGenerator, check_seed, read_prompts, sample_images, seeded_noise
from mmgen.generate.image_neighbours import load_indexed_images
from mmgen.store.db import open_store
from mmgen.store.models import ModelRecord, Output, Prompt, Retrieval
from mmgen.workspace import Workspace

runner = CliRunner()
COLOURS = {"red": (220, 30, 30), "green": (30, 170, 60), "blue": (40, 60, 220)}
SHAPES = ("circle", "square", "bar")


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    # Tiny tensors on a shared 2-core machine: one thread avoids OpenMP spin contention (10x faster here).
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def invoke(*args: str) -> Any:
    return runner.invoke(app, list(args), catch_exceptions=False)


def write_shapes(root: Path) -> Path:
    """9 concepts (colour x shape), each drawn in two styles (filled, outlined): 18 captioned images."""
    from PIL import Image, ImageDraw

    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for colour, rgb in COLOURS.items():
        for shape in SHAPES:
            for style in ("filled", "outlined"):
                im = Image.new("RGB", (40, 40), (255, 255, 255))
                d = ImageDraw.Draw(im)
                box = [6, 6, 34, 34] if shape != "bar" else [4, 16, 36, 24]
                kw = {"fill": rgb} if style == "filled" else {"outline": rgb, "width": 4}
                (d.ellipse if shape == "circle" else d.rectangle)(box, **kw)
                name = f"{colour}-{shape}-{style}"
                im.save(root / f"{name}.png")
                rows.append(
                    {"id": name, "image": f"{name}.png", "text": f"a {colour} {shape}", "group": f"{colour}-{shape}",
                     "meta": {"style": style}}
                )  # fmt: skip
    manifest = root / "shapes.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return manifest


def build_workspace(root: Path, encoder: str) -> tuple[Workspace, Path]:
    """Index the shapes with `encoder` and train a tiny retrieval-augmented generator and its baseline."""
    from mmgen.indexer import IndexOptions, index_sources
    from mmgen.train.generator import GeneratorConfig, train_generator

    manifest = write_shapes(root / "shapes")
    ws = Workspace.resolve(root / "ws")
    index_sources(str(manifest), ws, IndexOptions(encoder=encoder, progress=False, device="cpu"))
    for retrieval in (True, False):
        cfg = GeneratorConfig(
            retrieval=retrieval, neighbours=3, preset="tiny", steps=4, image_size=16, device="cpu", progress=False
        )
        assert train_generator(ws, cfg).status == "completed"
    return ws, manifest


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory, tiny_clip: Any) -> tuple[Workspace, Path]:
    return build_workspace(tmp_path_factory.mktemp("gen"), tiny_clip.dir_name)


def test_same_seed_same_bytes_other_seed_other_pictures(workspace: tuple[Workspace, Path], tmp_path: Path) -> None:
    ws, _ = workspace
    args = ["generate", "a red circle", "--workspace", str(ws.root), "--n", "2", "--steps", "3", "--json"]
    first = json.loads(invoke(*args, "--seed", "7", "--out", str(tmp_path / "a")).stdout)["generations"][0]
    second = json.loads(invoke(*args, "--seed", "7", "--out", str(tmp_path / "b")).stdout)["generations"][0]
    other = json.loads(invoke(*args, "--seed", "8", "--out", str(tmp_path / "c")).stdout)["generations"][0]
    files = [[Path(f).read_bytes() for f in g["files"]] for g in (first, second, other)]
    assert len(files[0]) == 2 and files[0] == files[1] and files[0] != files[2]
    assert first["seed"] == 7 and first["model"] == "generator" and first["prompt_id"] != second["prompt_id"]
    from PIL import Image

    with Image.open(first["files"][0]) as im:
        assert im.size == (16, 16) and im.mode == "RGB"
    # the first sample's starting noise does not depend on how many samples were asked for
    assert np.array_equal(seeded_noise(7, 1, 16).numpy(), seeded_noise(7, 3, 16)[:1].numpy())


def test_retrieved_neighbours_are_the_exact_nearest_and_recorded(workspace: tuple[Workspace, Path]) -> None:
    ws, _ = workspace
    res = invoke("generate", "a blue bar", "--workspace", str(ws.root), "--n", "1", "--steps", "2", "--seed", "1",
                 "--k", "4", "--json")  # fmt: skip
    assert res.exit_code == 0, res.output
    gen = json.loads(res.stdout)["generations"][0]
    store = open_store(ws.db_url)
    try:
        images = load_indexed_images(ws, store)
        from mmgen.encoders import load_encoder

        query = load_encoder(images.encoder, device="cpu", models_dir=ws.models_dir).encode_text(["a blue bar"])
        brute = np.argsort(-(images.image_vectors @ query[0]), kind="stable")[:4]
        assert [r["item_id"] for r in gen["retrieved"]] == [int(images.item_ids[i]) for i in brute]
        assert [r["rank"] for r in gen["retrieved"]] == [1, 2, 3, 4]
        with store.session() as s:
            prompt = s.get(Prompt, gen["prompt_id"])
            assert prompt is not None and prompt.kind == "generate" and prompt.text == "a blue bar"
            assert prompt.params["seed"] == 1 and prompt.params["k"] == 4 and prompt.params["steps"] == 2
            rows = s.scalars(select(Retrieval).where(Retrieval.prompt_id == prompt.id).order_by(Retrieval.rank)).all()
            assert [r.item_id for r in rows] == [r["item_id"] for r in gen["retrieved"]]
            outputs = s.scalars(select(Output).where(Output.prompt_id == prompt.id)).all()
            assert [o.file_uri for o in outputs] == gen["files"]
            out = outputs[0]
            assert out.latency_ms and out.latency_ms > 0 and out.scores["seed"] == 1 and out.scores["sample"] == 0
            assert -1 <= out.scores["prompt_similarity"] <= 1
            model = s.get(ModelRecord, out.model_id)
            assert model is not None and model.kind == "generator" and model.name == "generator"
        assert Path(gen["files"][0]).parent == ws.outputs_dir
    finally:
        store.close()


def test_baseline_generator_uses_no_retrieval(workspace: tuple[Workspace, Path]) -> None:
    ws, _ = workspace
    res = invoke("generate", "a red bar", "--workspace", str(ws.root), "--model", "generator-noretrieval", "--n", "1",
                 "--steps", "2", "--seed", "3", "--json")  # fmt: skip
    gen = json.loads(res.stdout)["generations"][0]
    assert gen["retrieved"] == [] and gen["params"]["k"] == 0 and len(gen["files"]) == 1


def test_sheet_for_several_prompts(workspace: tuple[Workspace, Path], tmp_path: Path) -> None:
    ws, _ = workspace
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# shapes\na red circle\n\na green square\n", encoding="utf-8")
    assert read_prompts(prompts) == ["a red circle", "a green square"]
    sheet = tmp_path / "sheet.png"
    res = invoke("generate", "a blue circle", "--prompts", str(prompts), "--workspace", str(ws.root), "--n", "3",
                 "--steps", "2", "--seed", "0", "--sheet", str(sheet), "--out", str(tmp_path / "o"))  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "sheet:" in res.stdout and res.stdout.count("similarity") == 9
    from PIL import Image

    with Image.open(sheet) as im:
        assert im.width > 3 * 32 and im.height > 3 * 32  # 3 rows of 3 enlarged samples, labels, neighbours
    res = invoke("generate", "x", "--workspace", str(ws.root), "--steps", "1", "--sheet", str(tmp_path / "s.jpg"))
    assert res.exit_code == 2 and "PNG" in res.stderr


def test_clear_errors(workspace: tuple[Workspace, Path], tmp_path: Path) -> None:
    ws, _ = workspace
    root = str(ws.root)
    for args, message in (
        (["generate", "   ", "--workspace", root], "empty prompt"),
        (["generate", "--workspace", root], "give a prompt"),
        (["generate", "cat", "--workspace", root, "--seed", "-1"], "seed must be"),
        (["generate", "cat", "--workspace", root, "--seed", str(2**32)], "seed must be"),
        (["generate", "cat", "--workspace", root, "--model", "nope"], "no trained generator 'nope'"),
        (["generate", "cat", "--workspace", root, "--k", "0"], "k must be"),
        (["generate", "cat", "--workspace", root, "--n", "0"], "n must be"),
        (["generate", "cat", "--workspace", root, "--steps", "0"], "steps must be"),
        (["generate", "cat", "--workspace", root, "--init-strength", "0"], "init strength must be in (0, 1]"),
        (["generate", "cat", "--workspace", root, "--init-strength", "1.5"], "init strength must be in (0, 1]"),
        (["generate", "cat", "--workspace", root, "--init-strength", "-0.2"], "init strength must be in (0, 1]"),
        (["generate", "cat", "--workspace", root, "--model", "generator-noretrieval", "--init-strength", "0.5"],
         "draws without retrieval"),
        (["generate", "cat", "--workspace", str(tmp_path / "empty")], "no index"),
    ):
        res = invoke(*args)
        assert res.exit_code == 2, (args, res.output)
        assert message in res.stderr and "Traceback" not in res.output, (args, res.stderr)
    assert check_seed(2**32 - 1) == 2**32 - 1
    with pytest.raises(ConfigError):
        check_seed(True)


@pytest.fixture(scope="module")
def v_generator(workspace: tuple[Workspace, Path]) -> str:
    """A v-predicting generator beside the x0 ones: a barely trained one reads its start far more than an x0 one."""
    from mmgen.train.generator import GeneratorConfig, train_generator

    ws, _ = workspace
    cfg = GeneratorConfig(name="generator-v", neighbours=3, preset="tiny", steps=4, image_size=16, prediction="v",
                          device="cpu", progress=False)  # fmt: skip
    assert train_generator(ws, cfg).status == "completed"
    return cfg.model_name


def test_init_strength_one_is_todays_sampling(workspace: tuple[Workspace, Path], tmp_path: Path) -> None:
    ws, _ = workspace
    args = ["generate", "a green bar", "--workspace", str(ws.root), "--n", "2", "--steps", "3", "--seed", "9", "--json"]
    plain = json.loads(invoke(*args, "--out", str(tmp_path / "a")).stdout)["generations"][0]
    one = json.loads(invoke(*args, "--init-strength", "1.0", "--out", str(tmp_path / "b")).stdout)["generations"][0]
    assert [Path(f).read_bytes() for f in plain["files"]] == [Path(f).read_bytes() for f in one["files"]]
    assert plain["params"]["init_strength"] == 1.0 and plain["init_ranks"] == []


def test_lower_init_strength_starts_from_the_neighbours_and_is_recorded(
    workspace: tuple[Workspace, Path], tmp_path: Path
) -> None:
    ws, _ = workspace
    args = ["generate", "a red square", "--workspace", str(ws.root), "--n", "4", "--steps", "3", "--seed", "2",
            "--k", "3", "--init-strength", "0.4", "--json"]  # fmt: skip
    first = json.loads(invoke(*args, "--out", str(tmp_path / "a")).stdout)["generations"][0]
    again = json.loads(invoke(*args, "--out", str(tmp_path / "b")).stdout)["generations"][0]
    plain = json.loads(invoke(*args[:-3], "--json", "--out", str(tmp_path / "c")).stdout)["generations"][0]
    read = [[Path(f).read_bytes() for f in g["files"]] for g in (first, again, plain)]
    assert read[0] == read[1] and read[0] != read[2]  # seeded: same bytes; and not today's pictures
    assert first["init_ranks"] == [1, 2, 3, 1]  # sample i starts from neighbour i mod k
    with open_store(ws.db_url) as store, store.session() as s:
        prompt = s.get(Prompt, first["prompt_id"])
        assert prompt is not None and prompt.params["init_strength"] == 0.4 and prompt.params["k"] == 3
        outputs = s.scalars(select(Output).where(Output.prompt_id == prompt.id).order_by(Output.id)).all()
        assert [o.scores["init_rank"] for o in outputs] == [1, 2, 3, 1]
        plain_prompt = s.get(Prompt, plain["prompt_id"])
        assert plain_prompt is not None and plain_prompt.params["init_strength"] == 1.0


@pytest.mark.parametrize("model", ["generator", "v"])
def test_lower_init_strength_draws_closer_to_the_init_neighbour(
    workspace: tuple[Workspace, Path], v_generator: str, model: str
) -> None:
    ws, _ = workspace
    with open_store(ws.db_url) as store:
        gen = ImageGenerator(ws, store, model=v_generator if model == "v" else model, device="cpu")
        for prompt in ("a red circle", "a blue bar"):
            full = gen.generate(prompt, n=3, seed=5, steps=3)
            low = gen.generate(prompt, n=3, seed=5, steps=3, init_strength=0.3)
            rows = [gen.images.uris.index(nb.uri) for nb in low.neighbours]
            init = gen.pictures([rows[r - 1] for r in low.init_ranks]).astype(np.float64)

            def mse(images: list[np.ndarray], init: np.ndarray = init) -> float:
                return float(np.mean((np.stack(images).astype(np.float64) - init) ** 2))

            assert [nb.item_id for nb in low.neighbours] == [nb.item_id for nb in full.neighbours]
            assert mse(low.images) < mse(full.images), (model, prompt)


def test_sample_images_checks_its_init(workspace: tuple[Workspace, Path]) -> None:
    ws, _ = workspace
    with open_store(ws.db_url) as store:
        gen = ImageGenerator(ws, store, device="cpu")
        text = gen.encoder.encode_text(["a red bar"])
        neigh = gen.images.image_vectors[None, :3]
        noise = seeded_noise(0, 1, 16)
        with pytest.raises(ConfigError, match="starts from pictures"):
            sample_images(gen.model, text, neigh, noise, 2, init_strength=0.5)
        with pytest.raises(ConfigError, match="starts from pictures"):
            sample_images(gen.model, text, neigh, noise, 2, init=np.zeros((1, 8, 8, 3), np.uint8), init_strength=0.5)
        with pytest.raises(ConfigError, match="init strength must be"):
            sample_images(gen.model, text, neigh, noise, 2, init_strength=0.0)
        with pytest.raises(ConfigError, match="draws without retrieval"):
            base = ImageGenerator(ws, store, model="generator-noretrieval", device="cpu")
            base.generate("x", 1, 0, init_strength=0.5)
        init = gen.pictures([0])
        assert init.shape == (1, 16, 16, 3) and init.dtype == np.uint8


def test_workspace_without_images_or_generator(tmp_path: Path, text_folder: Path) -> None:
    """A text-only index has no pictures to draw from; an image index without a generator says how to train one."""
    from mmgen.indexer import IndexOptions, index_sources

    ws = Workspace.resolve(tmp_path / "ws")
    index_sources(str(text_folder), ws, IndexOptions(progress=False, device="cpu"))
    store = open_store(ws.db_url)
    try:
        with pytest.raises(DataError, match="holds no images"):
            load_indexed_images(ws, store)
        with pytest.raises(ModelLoadError, match="mmgen train generator"):
            ImageGenerator(ws, store, device="cpu")
    finally:
        store.close()
    res = invoke("train", "generator", "--workspace", str(ws.root), "--preset", "tiny", "--quiet")
    assert res.exit_code == 2 and "holds no images" in res.stderr


def test_generator_refuses_another_encoder_or_tampered_weights(
    workspace: tuple[Workspace, Path], tmp_path: Path
) -> None:
    ws, _ = workspace
    copy = Workspace.resolve(tmp_path / "ws")
    shutil.copytree(ws.root, copy.root)
    manifest_path = copy.models_dir / "generator" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["encoder_checksum"] = "0" * 64
    manifest_path.write_text(json.dumps(manifest))
    store = open_store(copy.db_url)
    try:
        with pytest.raises(ManifestMismatchError, match="trained on embeddings of"):
            ImageGenerator(copy, store, device="cpu")
        weights = copy.models_dir / "generator-noretrieval" / "generator.safetensors"
        weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)
        with pytest.raises(ManifestMismatchError, match="checksum"):
            ImageGenerator(copy, store, model="generator-noretrieval", device="cpu")
    finally:
        store.close()
