"""Caption metrics against pycocoevalcap itself, and `mmgen eval captions` end to end on a tiny workspace."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import torch
from click.testing import Result
from typer.testing import CliRunner

from mmgen.cli import app
from mmgen.errors import ConfigError, DataError
from mmgen.eval.captions import caption_tokens, normalize_caption, score_captions

runner = CliRunner()


def invoke(*args: str) -> Result:
    return runner.invoke(app, list(args), catch_exceptions=False)


def _caption_helpers() -> ModuleType:
    """The tiny captioned corpus and workspace builder of tests/generate/test_caption.py (loaded by path)."""
    name = "mmgen_tests_caption_helpers"
    if name not in sys.modules:
        path = Path(__file__).resolve().parents[1] / "generate" / "test_caption.py"
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def test_tokeniser_lowercases_and_strips_accents_and_punctuation() -> None:
    assert caption_tokens("Two-Thirty, Café crème!") == ["two", "thirty", "cafe", "creme"]
    assert normalize_caption("  man’s SHOE. ") == "man s shoe"
    assert caption_tokens("") == [] and caption_tokens("…") == []


def test_scores_equal_pycocoevalcap_on_the_normalised_tokens() -> None:
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider

    refs = {
        "1": ["a man riding a red bicycle down the street"],
        "2": ["woman police officer"],
        "3": ["grinning face with smiling eyes", "grinning face"],
        "4": ["Two-Thirty"],
    }
    hyps = {
        "1": "a man riding a bicycle down a street",
        "2": "man police officer",
        "3": "Grinning face!",
        "4": "two thirty",
    }
    got = score_captions(refs, hyps)
    gts = {k: [" ".join(caption_tokens(r)) for r in v] for k, v in refs.items()}
    res = {k: [" ".join(caption_tokens(h))] for k, h in hyps.items()}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    cider, _ = Cider().compute_score(gts, res)
    assert got["bleu4"] == pytest.approx(bleu[3]) and got["cider"] == pytest.approx(cider)
    assert got["exact"] == pytest.approx(0.5) and got["n"] == 4  # "grinning face" and "two thirty" match
    perfect = score_captions(refs, {k: v[0] for k, v in refs.items()})
    assert perfect["exact"] == 1.0 and perfect["cider"] > got["cider"] and perfect["bleu4"] > got["bleu4"]
    empty = score_captions(refs, {k: "" for k in refs})  # an empty caption scores zero, it does not crash
    assert empty["exact"] == 0.0 and empty["cider"] == 0.0
    with pytest.raises(ConfigError):
        score_captions(refs, {"1": "x"})
    with pytest.raises(DataError):
        score_captions({}, {})


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def caption_ws(tmp_path_factory: pytest.TempPathFactory, tiny_clip) -> tuple[str, Path, Path]:
    return _caption_helpers().build_caption_workspace(tmp_path_factory.mktemp("evalcap"), tiny_clip.dir_name)


def test_eval_captions_three_methods_per_style(caption_ws) -> None:
    ws, train, held = caption_ws
    res = invoke("eval", "captions", str(held), "--workspace", ws, "--decode", "greedy", "--show", "3", "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert set(out["splits"]) == {"filled", "outline", "all"} and out["n_images"] == 4 and out["k"] == 3
    for split in out["splits"].values():
        assert set(split) == {"retrieval", "retrieval_top1", "decoder", "ra_decoder"}
        for scores in split.values():
            assert set(scores) == {"bleu4", "cider", "exact", "n"} and 0 <= scores["exact"] <= 1
    assert out["splits"]["filled"]["decoder"]["n"] == 2 and out["splits"]["all"]["ra_decoder"]["n"] == 4
    assert out["baseline"] == "captioner-noret" and out["baseline_mode"] == "image-only decoder"
    assert len(out["examples"]) == 3
    for ex in out["examples"]:
        assert ex["retrieval"] in ex["retrieved"] and ex["retrieval_top1"] == ex["retrieved"][0]

    # Indexed concepts as queries: retrieval must still leave the query's own group (both styles) out.
    res = invoke("eval", "captions", str(train), "--workspace", ws, "--decode", "greedy", "--show", "40", "--json")
    out = json.loads(res.stdout)
    assert out["n_images"] == 36 and len(out["examples"]) == 36
    assert all(ex["truth"] not in ex["retrieved"] and len(ex["retrieved"]) == 3 for ex in out["examples"])
    assert out["splits"]["all"]["retrieval"]["exact"] == 0.0  # every caption of the own concept was left out

    assert out["exclude"] == "concept"

    res = invoke("eval", "captions", str(held), "--workspace", ws, "--show", "2")
    assert res.exit_code == 0 and "(c) retrieval-augmented decoder" in res.stdout and "true: a " in res.stdout
    assert "leaves out each query's concept" in res.stdout


def test_eval_captions_exclude_item_keeps_the_own_concepts_other_style(caption_ws) -> None:
    from sqlalchemy import select

    from mmgen.generate.caption import indexed_items
    from mmgen.store.db import open_store
    from mmgen.store.models import IndexRecord
    from mmgen.workspace import Workspace

    ws, train, held = caption_ws
    # k = every distinct indexed caption (18 concepts), so what is retrieved is all that is not left out
    common = ("--workspace", ws, "--decode", "greedy", "-k", "18", "--limit", "8", "--show", "8", "--json")
    by_item = json.loads(invoke("eval", "captions", str(train), "--exclude", "item", *common).stdout)
    by_concept = json.loads(invoke("eval", "captions", str(train), "--exclude", "concept", *common).stdout)
    assert by_item["exclude"] == "item" and by_concept["exclude"] == "concept" and by_item["n_images"] == 8
    for a, b in zip(by_item["examples"], by_concept["examples"]):
        assert a["key"] == b["key"]
        assert a["truth"] in a["retrieved"] and len(a["retrieved"]) == 18  # its other style's caption
        assert b["truth"] not in b["retrieved"] and len(b["retrieved"]) == 17
    res = invoke("eval", "captions", str(held), "--exclude", "nope", "--workspace", ws)
    assert res.exit_code == 2 and "item, concept" in res.stderr

    # what `item` leaves out: the query's own indexed item (by content or path), nothing for a new image
    store = open_store(Workspace.resolve(ws).db_url)
    try:
        with store.session() as s:
            index_id = s.scalar(select(IndexRecord.id).where(IndexRecord.name == "default"))
        images = [train.parent / "red-circle-filled.png", train.parent / "blue-bar-filled.png"]  # indexed, held out
        own, new = indexed_items(store, index_id, images)
    finally:
        store.close()
    assert len(own) == 1 and new == set()


def test_eval_captions_errors(caption_ws, tmp_path) -> None:
    ws, _, held = caption_ws
    res = invoke("eval", "captions", str(held), "--workspace", ws, "--baseline", "nope")
    assert res.exit_code == 2 and "no captioner 'nope'" in res.stderr
    res = invoke("eval", "captions", str(held), "--workspace", ws, "--model", "captioner-noret")
    assert res.exit_code == 2 and "image-only" in res.stderr
    res = invoke("eval", "captions", str(tmp_path / "missing.jsonl"), "--workspace", ws)
    assert res.exit_code == 2 and "error:" in res.stderr
    # a record whose image is unreadable is skipped with its reason; the others are scored
    broken = tmp_path / "with-broken.jsonl"
    rows = held.read_text().splitlines()
    bad = {**json.loads(rows[0]), "id": "broken", "image": str(tmp_path / "broken.png")}
    (tmp_path / "broken.png").write_bytes(b"not an image")
    shutil.copy(held.parent / json.loads(rows[0])["image"], tmp_path / json.loads(rows[0])["image"])
    broken.write_text("\n".join([json.dumps(bad), *rows[:1]]) + "\n")
    res = invoke("eval", "captions", str(broken), "--workspace", ws, "--decode", "greedy", "--json")
    out = json.loads(res.stdout)
    assert out["n_images"] == 1 and out["skipped"] == 1 and out["skipped_reasons"][0].startswith("broken: image")
