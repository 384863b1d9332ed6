"""`mmgen caption` end to end on a tiny two-style workspace: JSON, SQL records, exclusions, errors."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from click.testing import Result
from sqlalchemy import select
from typer.testing import CliRunner

from mmgen.cli import app
from mmgen.store.db import open_store
from mmgen.store.models import ModelRecord, Output, Prompt
from mmgen.workspace import Workspace

runner = CliRunner()
COLOURS = {"red": (220, 30, 30), "green": (30, 170, 60), "blue": (40, 60, 220), "orange": (250, 150, 20)}
SHAPES = ("circle", "square", "triangle", "diamond", "bar")
HELD_OUT = ("orange-diamond", "blue-bar")  # concepts in the evaluation manifest, never indexed


def invoke(*args: str) -> Result:
    return runner.invoke(app, list(args), catch_exceptions=False)


def draw(shape: str, rgb: tuple[int, int, int], outline: bool, path: Path) -> None:
    """One shape, filled or outlined, on a transparent 40 px canvas."""
    from PIL import Image, ImageDraw

    im = Image.new("RGBA", (40, 40), (0, 0, 0, 0))
    d = ImageDraw.Draw(im)
    box = [6, 6, 34, 34]
    style = {"outline": rgb + (255,), "width": 4} if outline else {"fill": rgb + (255,)}
    if shape == "circle":
        d.ellipse(box, **style)
    elif shape == "square":
        d.rectangle(box, **style)
    elif shape == "triangle":
        d.polygon([(20, 6), (34, 34), (6, 34)], **style)
    elif shape == "diamond":
        d.polygon([(20, 6), (34, 20), (20, 34), (6, 20)], **style)
    else:
        d.rectangle([6, 16, 34, 24], **style)
    im.save(path)


def build_caption_corpus(root: Path) -> tuple[Path, Path]:
    """20 concepts (colour x shape) in two styles: a train manifest without the held-out concepts, and theirs."""
    root.mkdir(parents=True, exist_ok=True)
    train, held = [], []
    for colour, rgb in COLOURS.items():
        for shape in SHAPES:
            concept = f"{colour}-{shape}"
            for style in ("filled", "outline"):
                draw(shape, rgb, style == "outline", root / f"{concept}-{style}.png")
                row = {
                    "id": f"{concept}-{style}",
                    "image": f"{concept}-{style}.png",
                    "text": f"a {colour} {shape}",
                    "group": concept,
                    "meta": {"style": style},
                }
                (held if concept in HELD_OUT else train).append(row)
    paths = root / "train.jsonl", root / "heldout.jsonl"
    for path, rows in zip(paths, (train, held)):
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return paths


def build_caption_workspace(root: Path, encoder: str, steps: int = 6) -> tuple[str, Path, Path]:
    """Index the train manifest with `encoder`, train both captioners briefly; returns (workspace, train, held-out)."""
    train, held = build_caption_corpus(root / "corpus")
    ws = str(root / "ws")
    res = invoke("index", str(train), "--workspace", ws, "--encoder", encoder, "--quiet")
    assert res.exit_code == 0, res.output
    for extra in ([], ["--no-retrieval"]):
        args = ("--workspace", ws, "--steps", str(steps), "--batch-size", "8", "-k", "3", "--quiet", *extra)
        res = invoke("train", "captioner", *args)
        assert res.exit_code == 0, res.output
    return ws, train, held


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def caption_ws(tmp_path_factory: pytest.TempPathFactory, tiny_clip) -> tuple[str, Path, Path]:
    return build_caption_workspace(tmp_path_factory.mktemp("caption"), tiny_clip.dir_name)


def test_caption_json_records_and_own_item_excluded(caption_ws) -> None:
    ws, train, _ = caption_ws
    indexed = train.parent / "red-circle-filled.png"
    new = train.parent / "orange-diamond-outline.png"
    res = invoke("caption", str(indexed), str(new), "--workspace", ws, "--json")
    assert res.exit_code == 0, res.output
    lines = [json.loads(line) for line in res.stdout.splitlines()]
    assert len(lines) == 2
    for out in lines:
        assert set(out) == {"image", "caption", "retrieved", "model", "latency_ms", "prompt_id"}
        assert isinstance(out["caption"], str) and out["model"] == "captioner" and out["latency_ms"] > 0
        assert len(out["retrieved"]) == 3 and len({r["text"] for r in out["retrieved"]}) == 3
        assert [r["score"] for r in out["retrieved"]] == sorted((r["score"] for r in out["retrieved"]), reverse=True)

    store = open_store(Workspace.resolve(ws).db_url)
    try:
        with store.session() as s:
            own = s.execute(select(Prompt).where(Prompt.id == lines[0]["prompt_id"])).scalar_one()
            assert own.kind == "caption" and own.image_uri == str(indexed.resolve())
            excluded = own.params["excluded_items"]
            assert len(excluded) == 1 and excluded[0] not in [r["id"] for r in lines[0]["retrieved"]]
            assert [(r.rank, r.item_id) for r in own.retrievals] == [
                (i, r["id"]) for i, r in enumerate(lines[0]["retrieved"], 1)
            ]
            output = s.scalars(select(Output).where(Output.prompt_id == own.id)).one()
            model = s.get(ModelRecord, output.model_id)
            assert output.text == lines[0]["caption"] and output.latency_ms > 0
            assert model is not None and model.kind == "captioner" and model.name == "captioner"
    finally:
        store.close()


def test_decoding_options_and_seeded_sampling(caption_ws) -> None:
    ws, train, _ = caption_ws
    image = str(train.parent / "green-square-outline.png")
    sample = ("--decode", "sample", "--temperature", "1.5", "--seed", "7", "--json")
    runs = [invoke("caption", image, "--workspace", ws, *sample) for _ in range(2)]
    assert runs[0].exit_code == 0, runs[0].output
    assert json.loads(runs[0].stdout)["caption"] == json.loads(runs[1].stdout)["caption"]
    res = invoke("caption", image, "--workspace", ws, "--decode", "greedy", "--model", "captioner-noret", "--json")
    out = json.loads(res.stdout)
    assert out["model"] == "captioner-noret" and out["retrieved"] == []  # the image-only decoder reads no captions
    res = invoke("caption", image, "--workspace", ws, "--decode", "nucleus")
    assert res.exit_code == 2 and "greedy, beam, sample" in res.stderr


def test_unreadable_image_is_reported_and_the_others_captioned(caption_ws, tmp_path) -> None:
    ws, train, _ = caption_ws
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\nnot a png")
    good = train.parent / "blue-circle-filled.png"
    res = invoke("caption", str(broken), str(tmp_path / "missing.png"), str(good), "--workspace", ws, "--json")
    assert res.exit_code == 2
    lines = [json.loads(line) for line in res.stdout.splitlines()]
    assert [("error" in line) for line in lines] == [True, True, False]
    assert lines[2]["caption"] is not None and "2 of 3 images could not be captioned" in res.stderr
    assert "Traceback" not in res.output


def test_empty_workspace_says_index_first(tmp_path, caption_ws) -> None:
    _, train, _ = caption_ws
    res = invoke("caption", str(train.parent / "red-bar-filled.png"), "--workspace", str(tmp_path / "empty"))
    assert res.exit_code == 2 and "no index yet" in res.stderr and "mmgen index" in res.stderr


def test_captioner_refuses_another_encoder_and_changed_weights(caption_ws, tiny_clip, tmp_path) -> None:
    ws, train, _ = caption_ws
    other = str(tmp_path / "other")
    res = invoke("index", str(train), "--workspace", other, "--encoder", f"openclip:{tiny_clip.other_folder}", "-q")
    assert res.exit_code == 0, res.output
    shutil.copytree(Path(ws) / "models" / "captioner", Path(other) / "models" / "captioner")
    image = str(train.parent / "red-bar-filled.png")
    res = invoke("caption", image, "--workspace", other)
    assert res.exit_code == 2 and "trained on vectors of encoder" in res.stderr

    tampered = tmp_path / "tampered"
    shutil.copytree(ws, tampered)
    weights = tampered / "models" / "captioner" / "vocab.json"
    weights.write_text(json.dumps(json.loads(weights.read_text())[:-1]))
    res = invoke("caption", image, "--workspace", str(tampered))
    assert res.exit_code == 2 and "checksum" in res.stderr
    res = invoke("caption", image, "--workspace", ws, "--model", "nope")
    assert res.exit_code == 2 and "captioners here: captioner, captioner-noret" in res.stderr


def test_encoder_rerank_picks_the_candidate_closest_to_the_image(tiny_clip) -> None:
    from mmgen.encoders import load_encoder
    from mmgen.generate.caption import _rerank

    encoder = load_encoder(tiny_clip.dir_name, device="cpu")
    candidates = [["a red circle", "a blue bar", "a green square"], ["a green square", "a red circle"], ["", " "]]
    targets = encoder.encode_text(["a blue bar", "a red circle", "a red circle"])
    assert _rerank(candidates, targets, encoder) == ["a blue bar", "a red circle", ""]
