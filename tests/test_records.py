"""The store as the record of the work: history, show, lineage, feedback, its summary and export, and the CLI.

Prompts come from the recording functions (`record_search`) and from ORM rows written the way
`mmgen caption` and `mmgen generate` write theirs; one test runs a real search on a tiny workspace.
Every test runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import func, select, text, update
from sqlalchemy.exc import IntegrityError
from typer.testing import CliRunner

from mmgen.cli import app
from mmgen.errors import ConfigError, RecordNotFoundError
from mmgen.records import export_feedback, feedback_summary, history, lineage, link, parse_since, rate, show
from mmgen.store import Store, open_store
from mmgen.store.models import Feedback, Item, ModelRecord, Output, Prompt, Retrieval
from mmgen.store.repo import get_or_create_corpus, record_search


def _recorded(s: Any, **fields: Any) -> Prompt:
    """The Prompt row `record_search` wrote (it returns the id)."""
    prompt = s.get(Prompt, record_search(s, **fields))
    assert prompt is not None
    return prompt


runner = CliRunner()
ENCODER = "st:tiny-test"


@dataclass(frozen=True)
class Recorded:
    """Ids of the prompts and outputs `recorded` writes."""

    old_search: int  # ada, 2000-01-01, 3 image hits
    search: int  # bob, 1 text hit
    caption: int  # ada, captioner tiny-cap@bbbb
    generate: int  # bob, generator tiny-gen@aaaa, two files
    outputs: dict[str, list[int]]
    url: str


def _png(path: Path, rgb: tuple[int, int, int]) -> str:
    from PIL import Image

    Image.new("RGB", (24, 24), rgb).save(path)
    return str(path)


@pytest.fixture()
def store(db_url: str) -> Iterator[Store]:
    """An open store at head, on each backend (as in tests/store/conftest.py)."""
    opened = open_store(db_url)
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture()
def recorded(store: Store, tmp_path: Path) -> Recorded:
    with store.session() as s:
        corpus = get_or_create_corpus(s, "tiny", "spec")
        colours = {"red": (220, 20, 20), "blue": (30, 40, 220), "green": (20, 180, 40)}
        items = [Item(corpus=corpus, key=f"{c}-circle", modality="image+text", text=f"a {c} circle", sha256="0" * 64,
                      uri=_png(tmp_path / f"{c}.png", rgb)) for c, rgb in colours.items()]  # fmt: skip
        gen = ModelRecord(kind="generator", name="tiny-gen", version="aaaa")
        cap = ModelRecord(kind="captioner", name="tiny-cap", version="bbbb")
        s.add_all([*items, gen, cap])
        s.flush()
        old = _recorded(s, text="a red circle", image_uri=None, params={"k": 3, "to": "image", "encoder": ENCODER},
                            hits=[(items[0].id, 0.9, "image"), (items[2].id, 0.5, "image"), (items[1].id, 0.25, "image")],
                            latency_ms=12.5, user="ada")  # fmt: skip
        new = _recorded(s, text="a blue circle", image_uri=None, params={"k": 1, "to": "text", "encoder": ENCODER},
                            hits=[(items[1].id, 0.8, "text")], latency_ms=3.0, user="bob")  # fmt: skip
        caption = Prompt(kind="caption", image_uri=items[0].uri, params={"k": 2, "encoder": ENCODER}, user="ada")
        caption.retrievals = [Retrieval(rank=1, item_id=items[0].id, score=0.7, modality="text")]
        caption.outputs = [Output(text="a red circle", model_id=cap.id, latency_ms=40.0, scores={"retrieved": 1})]
        generate = Prompt(kind="generate", text="a green circle", params={"seed": 7, "encoder": ENCODER}, user="bob")
        generate.retrievals = [Retrieval(rank=1, item_id=items[2].id, score=0.6, modality="image")]
        generate.outputs = [Output(file_uri=_png(tmp_path / f"gen-{i}.png", (20, 150 + 40 * i, 40)), model_id=gen.id,
                                   latency_ms=800.0, scores={"seed": 7, "sample": i}) for i in range(2)]  # fmt: skip
        s.add_all([caption, generate])
        s.flush()
        s.execute(update(Prompt).where(Prompt.id == old.id).values(created_at=text("'2000-01-01 12:00:00'")))
        s.commit()
        outputs = {name: [o.id for o in p.outputs] for name, p in
                   (("old_search", old), ("search", new), ("caption", caption), ("generate", generate))}  # fmt: skip
        return Recorded(old.id, new.id, caption.id, generate.id, outputs, store.url)


def invoke(*args: str) -> Any:
    return runner.invoke(app, list(args), catch_exceptions=False)


# ---- history -----------------------------------------------------------------------------------
def test_history_lists_newest_first_with_outputs_models_and_latency(store: Store, recorded: Recorded) -> None:
    r = recorded
    listed = history(store)
    assert [p.id for p in listed] == [r.generate, r.caption, r.search, r.old_search]
    gen = listed[0]
    assert (gen.kind, gen.user, gen.text, gen.hits) == ("generate", "bob", "a green circle", 1)
    assert [(o.model.label, o.model.kind, o.latency_ms) for o in gen.outputs if o.model] == [
        ("tiny-gen@aaaa", "generator", 800.0)] * 2  # fmt: skip
    assert all(o.file_uri and o.file_uri.endswith(".png") for o in gen.outputs)
    assert listed[1].outputs[0].text == "a red circle"
    search = listed[3]
    assert search.hits == 3 and search.outputs[0].model is not None
    assert (search.outputs[0].model.name, search.outputs[0].model.version) == (ENCODER, None)  # searches: the encoder
    assert search.created_at is not None and search.created_at.year == 2000


def test_history_filters_by_kind_user_since_model_and_limit(store: Store, recorded: Recorded) -> None:
    r = recorded

    def ids(**kw: Any) -> list[int]:
        return [p.id for p in history(store, **kw)]

    assert ids(limit=2) == [r.generate, r.caption]
    assert ids(kind="search") == [r.search, r.old_search]
    assert ids(kind="caption") == [r.caption]
    assert ids(user="ada") == [r.caption, r.old_search]
    assert ids(user="nobody") == []
    assert ids(since=parse_since("2001-01-01")) == [r.generate, r.caption, r.search]
    assert ids(since=parse_since("2000-01-01T11:59:00Z")) == [r.generate, r.caption, r.search, r.old_search]
    assert ids(since=parse_since("7d")) == [r.generate, r.caption, r.search]
    assert ids(model="tiny-gen") == [r.generate]
    assert ids(model="tiny-cap") == [r.caption]
    assert ids(model=ENCODER) == [r.search, r.old_search]  # model-less outputs: the prompt's encoder
    assert ids(model="nope") == []
    assert ids(kind="search", user="bob", since=parse_since("2001-01-01"), model=ENCODER) == [r.search]
    with pytest.raises(ConfigError, match="unknown prompt kind 'nope'; valid choices: search, caption, generate"):
        history(store, kind="nope")


def test_parse_since_reads_dates_times_and_ages() -> None:
    from datetime import datetime, timezone

    now = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)
    assert parse_since("90m", now) == datetime(2026, 12, 1, 10, 30, tzinfo=timezone.utc)
    assert parse_since("2d", now) == datetime(2026, 11, 29, 12, 0, tzinfo=timezone.utc)
    assert parse_since("2026-11-01T08:00+02:00") == datetime(2026, 11, 1, 6, 0, tzinfo=timezone.utc)
    assert parse_since("2026-11-01").tzinfo is timezone.utc  # local midnight, in UTC
    for bad in ("yesterday", "2026-13-01", "7 parsecs", ""):
        with pytest.raises(ConfigError, match="--since takes a date"):
            parse_since(bad)


def test_history_command_text_and_json(recorded: Recorded) -> None:
    r = recorded
    done = invoke("history", "--db", r.url, "--json", "-n", "3")
    assert done.exit_code == 0, done.output
    prompts = json.loads(done.stdout)["prompts"]
    assert [p["id"] for p in prompts] == [r.generate, r.caption, r.search]
    assert set(prompts[0]) == {"id", "kind", "text", "image", "user", "created_at", "parent_id", "hits", "outputs"}
    assert prompts[0]["outputs"][0]["model"] == {"kind": "generator", "name": "tiny-gen", "version": "aaaa"}
    assert prompts[0]["created_at"].endswith("+00:00")
    done = invoke("history", "--db", r.url, "--kind", "caption")
    assert done.exit_code == 0, done.output
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"#{r.caption}  ") and "caption" in lines[0] and "ada" in lines[0]
    assert "text \"a red circle\"" in lines[1] and "model tiny-cap@bbbb (captioner)" in lines[1] and "40.0 ms" in lines[1]
    done = invoke("history", "--db", r.url, "--user", "nobody")
    assert done.stdout.strip() == "no prompts recorded that match"


# ---- show and lineage --------------------------------------------------------------------------
def test_show_gives_params_hits_outputs_and_feedback(store: Store, recorded: Recorded) -> None:
    r = recorded
    rate(store, r.outputs["generate"][1], 4, note="crisp", user="ada")
    detail = show(store, r.generate)
    assert detail.params == {"seed": 7, "encoder": ENCODER}
    assert [(h.rank, h.corpus, h.key, h.text, h.modality) for h in detail.retrievals] == [
        (1, "tiny", "green-circle", "a green circle", "image")]  # fmt: skip
    data = json.loads(json.dumps(detail.to_json()))
    assert set(data) == {"id", "kind", "text", "image", "user", "created_at", "parent_id", "hits", "outputs",
                         "params", "retrievals"}  # fmt: skip
    assert data["retrievals"][0] == {"rank": 1, "score": pytest.approx(0.6), "modality": "image",
                                     "item_id": detail.retrievals[0].item_id, "corpus": "tiny", "key": "green-circle",
                                     "text": "a green circle", "uri": detail.retrievals[0].uri}  # fmt: skip
    out = data["outputs"][1]
    assert set(out) == {"id", "text", "file", "model", "scores", "latency_ms", "created_at", "feedback"}
    assert out["model"] == {"kind": "generator", "name": "tiny-gen", "version": "aaaa"}
    assert [(f["user"], f["score"], f["note"]) for f in out["feedback"]] == [("ada", 4, "crisp")]
    assert data["outputs"][0]["feedback"] == []


def test_show_of_a_hit_whose_item_was_deleted(store: Store, recorded: Recorded) -> None:
    with store.session() as s:
        s.execute(Item.__table__.delete().where(Item.key == "blue-circle"))
        s.commit()
    hits = show(store, recorded.old_search).retrievals
    assert [(h.rank, h.key) for h in hits] == [(1, "red-circle"), (2, "green-circle"), (3, None)]


def test_link_and_lineage_tree(store: Store, recorded: Recorded) -> None:
    r = recorded
    link(store, r.search, r.old_search)
    link(store, r.generate, r.search)
    link(store, r.caption, r.old_search)
    tree = lineage(store, r.search)  # ancestors, then the focus with its descendants; no siblings
    assert [(d, n.id, n.focus) for d, n in tree.walk()] == [(0, r.old_search, False), (1, r.search, True),
                                                           (2, r.generate, False)]  # fmt: skip
    assert [(d, n.id) for d, n in lineage(store, r.old_search).walk()] == [
        (0, r.old_search), (1, r.search), (2, r.generate), (1, r.caption)]  # fmt: skip
    assert lineage(store, r.generate).to_json()["children"][0]["children"][0] == {
        "id": r.generate, "kind": "generate", "text": "a green circle", "image": None,
        "created_at": lineage(store, r.generate).to_json()["children"][0]["children"][0]["created_at"],
        "focus": True, "children": []}  # fmt: skip
    assert history(store, kind="generate")[0].parent_id == r.search
    with pytest.raises(ConfigError, match="would make a loop"):
        link(store, r.old_search, r.generate)
    with pytest.raises(ConfigError, match="its own parent"):
        link(store, r.search, r.search)
    with pytest.raises(RecordNotFoundError, match="no prompt 999999 in the store"):
        link(store, r.search, 999_999)
    with pytest.raises(RecordNotFoundError, match="no prompt 999999 in the store"):
        link(store, 999_999, r.search)
    link(store, r.caption, None)  # unlink
    assert show(store, r.caption).parent_id is None


def test_deleting_a_parent_keeps_its_children_unlinked(store: Store, recorded: Recorded) -> None:
    r = recorded
    link(store, r.search, r.old_search)
    with store.session() as s:
        s.execute(Prompt.__table__.delete().where(Prompt.id == r.old_search))
        s.commit()
    assert show(store, r.search).parent_id is None


def test_show_command_with_tree_json_and_sheet(recorded: Recorded, tmp_path: Path) -> None:
    from PIL import Image

    r = recorded
    assert invoke("link", str(r.generate), "--from", str(r.search), "--db", r.url).exit_code == 0
    done = invoke("show", str(r.generate), "--db", r.url, "--tree")
    assert done.exit_code == 0, done.output
    assert "params:\n  seed: 7\n" in done.stdout
    assert "    1   0.6000  image  tiny:green-circle  a green circle" in done.stdout
    assert "model tiny-gen@aaaa (generator)" in done.stdout
    assert done.stdout.endswith(f"lineage:\n  #{r.search}  search  \"a blue circle\"\n"
                                f"    #{r.generate}  generate  \"a green circle\"   <- this one\n")  # fmt: skip
    done = invoke("show", str(r.search), "--db", r.url, "--tree", "--json")
    data = json.loads(done.stdout)
    assert data["id"] == r.search and data["lineage"]["children"][0]["id"] == r.generate
    sheet = tmp_path / "sheet.png"
    done = invoke("show", str(r.generate), "--db", r.url, "--sheet", str(sheet))
    assert done.exit_code == 0, done.output
    with Image.open(sheet) as im:
        pixels = np.asarray(im.convert("RGB"))
    assert pixels.shape[1] > 2 * 96 and (pixels == [20, 190, 40]).all(axis=-1).any()  # the second generated image
    hits_sheet = tmp_path / "hits.png"
    assert invoke("show", str(r.old_search), "--db", r.url, "--sheet", str(hits_sheet)).exit_code == 0
    assert hits_sheet.is_file()
    done = runner.invoke(app, ["show", str(r.search), "--db", r.url, "--sheet", str(tmp_path / "none.png")])
    assert done.exit_code == 2 and "has no pictures for a sheet" in done.output


# ---- feedback ----------------------------------------------------------------------------------
def test_rate_inserts_then_updates_one_row_per_user(store: Store, recorded: Recorded) -> None:
    out = recorded.outputs["caption"][0]
    first = rate(store, out, 4, note="close", user="ada")
    again = rate(store, out, 2, user="ada")  # no note: the note stays
    assert (again.id, again.score, again.note) == (first.id, 2, "close")
    assert again.updated_at is not None and first.updated_at is not None and again.updated_at >= first.updated_at
    cleared = rate(store, out, 3, note="", user="ada")
    assert (cleared.id, cleared.note) == (first.id, None)
    other = rate(store, out, 5, user="bob")
    assert other.id != first.id
    with store.session() as s:
        assert s.execute(select(Feedback.user, Feedback.score).order_by(Feedback.user)).all() == [("ada", 3), ("bob", 5)]
        s.add(Feedback(output_id=out, user="ada", score=1))
        with pytest.raises(IntegrityError):  # the database itself keeps one row per user per output
            s.flush()
        s.rollback()
        s.add(Feedback(output_id=out, user="cy", score=6))
        with pytest.raises(IntegrityError):  # and scores within 1..5
            s.flush()
        s.rollback()


def test_rate_refuses_bad_scores_users_and_unknown_outputs(store: Store, recorded: Recorded) -> None:
    out = recorded.outputs["search"][0]
    for bad in (0, 6, -1, 2.5, True):
        with pytest.raises(ConfigError, match="score must be a whole number from 1 to 5"):
            rate(store, out, bad, user="ada")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="user must be 1 to 128 characters"):
        rate(store, out, 3, user="  ")
    with pytest.raises(RecordNotFoundError, match="no output 999999 in the store"):
        rate(store, 999_999, 3, user="ada")
    with store.session() as s:
        assert s.scalar(select(func.count()).select_from(Feedback)) == 0


def test_feedback_cascades_with_its_output(store: Store, recorded: Recorded) -> None:
    rate(store, recorded.outputs["caption"][0], 4, user="ada")
    with store.session() as s:
        s.execute(Prompt.__table__.delete().where(Prompt.id == recorded.caption))
        s.commit()
        assert s.scalar(select(func.count()).select_from(Feedback)) == 0


def _rate_known_set(store: Store, r: Recorded) -> None:
    gen_a, gen_b = r.outputs["generate"]
    rate(store, gen_a, 5, user="ada", note="lovely")
    rate(store, gen_a, 3, user="bob")
    rate(store, gen_b, 4, user="ada")
    rate(store, r.outputs["caption"][0], 2, user="ada", note="wrong colour")
    rate(store, r.outputs["old_search"][0], 1, user="bob")


def test_feedback_summary_per_model_and_kind(store: Store, recorded: Recorded) -> None:
    _rate_known_set(store, recorded)
    report = feedback_summary(store).to_json()
    assert report["total"] == {"count": 5, "mean": 3.0, "distribution": {"1": 1, "2": 1, "3": 1, "4": 1, "5": 1}}
    assert [(m["model"]["name"], m["model"]["version"], m["count"], m["mean"]) for m in report["by_model"]] == [
        (ENCODER, None, 1, 1.0), ("tiny-cap", "bbbb", 1, 2.0), ("tiny-gen", "aaaa", 3, 4.0)]  # fmt: skip
    assert report["by_model"][2]["distribution"] == {"1": 0, "2": 0, "3": 1, "4": 1, "5": 1}
    assert [(k["kind"], k["count"], k["mean"]) for k in report["by_kind"]] == [
        ("search", 1, 1.0), ("caption", 1, 2.0), ("generate", 3, 4.0)]  # fmt: skip
    only = feedback_summary(store, "tiny-gen").to_json()
    assert only["model"] == "tiny-gen" and only["total"]["count"] == 3 and len(only["by_model"]) == 1
    assert feedback_summary(store, "nope").total.count == 0


def test_eval_feedback_command(recorded: Recorded, store: Store) -> None:
    r = recorded
    done = invoke("eval", "feedback", "--db", r.url)
    assert done.exit_code == 0 and "no feedback recorded" in done.stdout
    _rate_known_set(store, r)
    done = invoke("eval", "feedback", "--db", r.url, "--json", "--model", "tiny-cap")
    assert json.loads(done.stdout)["by_kind"] == [{"kind": "caption", "count": 1, "mean": 2.0,
                                                  "distribution": {"1": 0, "2": 1, "3": 0, "4": 0, "5": 0}}]  # fmt: skip
    lines = invoke("eval", "feedback", "--db", r.url).stdout.splitlines()
    assert lines[1].split() == ["all", "5", "3.00", "1", "1", "1", "1", "1"]
    assert "  tiny-gen@aaaa (generator)" in lines[5] and lines[5].split()[-7:] == ["3", "4.00", "0", "0", "1", "1", "1"]


def test_export_feedback_writes_a_preference_data_set(store: Store, recorded: Recorded, tmp_path: Path) -> None:
    r = recorded
    _rate_known_set(store, r)
    path = tmp_path / "out" / "prefs.jsonl"
    done = invoke("export", "feedback", "-o", str(path), "--db", r.url)
    assert done.exit_code == 0 and "wrote 5 rated outputs" in done.stdout
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert [(x["prompt"]["id"], x["output"]["id"], x["user"], x["score"]) for x in rows] == [
        (r.old_search, r.outputs["old_search"][0], "bob", 1), (r.caption, r.outputs["caption"][0], "ada", 2),
        (r.generate, r.outputs["generate"][0], "ada", 5), (r.generate, r.outputs["generate"][0], "bob", 3),
        (r.generate, r.outputs["generate"][1], "ada", 4)]  # fmt: skip
    caption, gen = rows[1], rows[2]
    assert caption["prompt"] == {"id": r.caption, "kind": "caption", "text": None, "image": caption["prompt"]["image"],
                                 "params": {"k": 2, "encoder": ENCODER}}  # fmt: skip
    assert caption["prompt"]["image"].endswith("red.png")
    assert caption["output"]["text"] == "a red circle" and caption["note"] == "wrong colour"
    assert gen["output"]["file"].endswith("gen-0.png") and gen["output"]["text"] is None
    assert gen["model"] == {"kind": "generator", "name": "tiny-gen", "version": "aaaa"}
    assert set(gen) == {"prompt", "output", "model", "score", "note", "user", "rated_at"}
    assert export_feedback(store, tmp_path / "gen.jsonl", "tiny-gen") == 3
    assert not list(tmp_path.glob("out/.*.tmp"))


# ---- bad input through the CLI -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["history", "--since", "last tuesday"], "--since takes a date"),
        (["history", "--kind", "nope"], "unknown prompt kind 'nope'"),
        (["show", "999999"], "no prompt 999999 in the store"),
        (["rate", "999999", "--score", "3"], "no output 999999 in the store"),
        (["rate", "OUT", "--score", "9"], "the score must be a whole number from 1 to 5, not 9"),
        (["rate", "OUT", "--score", "0"], "the score must be a whole number from 1 to 5, not 0"),
        (["link", "999999", "--from", "PROMPT"], "no prompt 999999 in the store"),
        (["link", "PROMPT", "--from", "999999"], "no prompt 999999 in the store"),
    ],
)
def test_bad_input_is_a_clear_error(recorded: Recorded, args: list[str], message: str) -> None:
    filled = [a.replace("OUT", str(recorded.outputs["search"][0])).replace("PROMPT", str(recorded.search)) for a in args]
    done = runner.invoke(app, [*filled, "--db", recorded.url])
    assert done.exit_code == 2, done.output
    assert f"error: {message}" in done.output
    assert "Traceback" not in done.output


def test_rate_command_inserts_and_updates(recorded: Recorded) -> None:
    out = str(recorded.outputs["generate"][0])
    done = invoke("rate", out, "--score", "4", "--note", "good hue", "--user", "ada", "--db", recorded.url)
    assert done.exit_code == 0 and done.stdout.strip() == f"output #{out}: ada rated 4/5  good hue"
    done = invoke("rate", out, "--score", "5", "--user", "ada", "--db", recorded.url, "--json")
    record = json.loads(done.stdout)
    assert (record["score"], record["note"], record["user"]) == (5, "good hue", "ada")


# ---- a real search on a tiny workspace -------------------------------------------------------------
def test_a_real_search_shows_up_in_history_and_show(tmp_path: Path, tiny_encoder: Any, build_tiny_workspace: Any) -> None:
    ws, _ = build_tiny_workspace(tmp_path, tiny_encoder, per_group=2)
    done = invoke("search", "a red circle", "-w", str(ws.root), "-k", "3", "--json")
    assert done.exit_code == 0, done.output
    prompt_id = json.loads(done.stdout)["prompt_id"]
    listed = json.loads(invoke("history", "-w", str(ws.root), "--json").stdout)["prompts"]
    assert [p["id"] for p in listed] == [prompt_id] and listed[0]["hits"] == 3
    assert listed[0]["outputs"][0]["model"]["name"] == tiny_encoder.name
    shown = json.loads(invoke("show", str(prompt_id), "-w", str(ws.root), "--json").stdout)
    assert [h["rank"] for h in shown["retrievals"]] == [1, 2, 3]
    assert all(h["corpus"] and h["key"] and h["text"].startswith("a ") for h in shown["retrievals"])
    sheet = tmp_path / "hits.png"
    assert invoke("show", str(prompt_id), "-w", str(ws.root), "--sheet", str(sheet)).exit_code == 0
    assert sheet.is_file()


def test_search_from_a_prompt_records_its_parent_and_refuses_an_unknown_one(tmp_path, tiny_encoder, build_tiny_workspace):
    from typer.testing import CliRunner

    from mmgen.cli import app
    from mmgen.records import lineage
    from mmgen.store.db import open_store

    ws, _ = build_tiny_workspace(tmp_path, tiny_encoder)
    runner = CliRunner()
    first = json.loads(runner.invoke(app, ["search", "a red circle", "-w", str(ws.root), "--json"]).stdout)
    res = runner.invoke(app, ["search", "a red square", "-w", str(ws.root), "--json", "--from", str(first["prompt_id"])])
    second = json.loads(res.stdout)
    with open_store(ws.db_url) as store:
        assert [n.id for _, n in lineage(store, second["prompt_id"]).walk()] == [first["prompt_id"], second["prompt_id"]]
        before = len(history(store, limit=1000))
    bad = runner.invoke(app, ["search", "x", "-w", str(ws.root), "--from", "999999"])
    assert bad.exit_code != 0 and "no prompt 999999" in bad.output
    with open_store(ws.db_url) as store:
        assert len(history(store, limit=1000)) == before  # refused before anything was recorded
