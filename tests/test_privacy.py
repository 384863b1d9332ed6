"""Privacy (`mmgen.records.privacy`, `export`): forgetting a user, anonymised and text-free exports, and their CLI.

After `forget`, every table is queried for what was forgotten and the files are looked for; the
other users' records are compared with what they were. Every test runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, or_, select
from typer.testing import CliRunner

from mmgen.cli import app
from mmgen.errors import ConfigError, RecordNotFoundError
from mmgen.records import Redaction, export_feedback, export_prompts, forget, history, pseudonym, rate, show
from mmgen.store import Store, open_store
from mmgen.store.models import Feedback, Item, ModelRecord, Output, Prompt, Retrieval
from mmgen.store.repo import get_or_create_corpus, record_search


def _recorded(s: Any, **fields: Any) -> Prompt:
    """The Prompt row `record_search` wrote (it returns the id)."""
    prompt = s.get(Prompt, record_search(s, **fields))
    assert prompt is not None
    return prompt


runner = CliRunner()
# Names no path, text or parameter of the fixture contains, so finding one in an export means a leak.
ALICE, BOB, CAROL = "alice.quimby", "bob.xandre", "carol.wyvern"
SALT = "pepper-1"


@dataclass(frozen=True)
class World:
    """Two users' prompts (alice's to be forgotten), their files, and who rated what."""

    url: str
    ws: Path
    outputs_dir: Path
    alice_prompts: list[int]  # a search, and a generate refined from it
    alice_outputs: list[int]
    alice_files: list[Path]  # in the workspace's outputs folder
    outside: Path  # recorded for alice but outside the outputs folder: never deleted
    bob_search: int  # refined from alice's search
    bob_generate: int
    bob_file: Path


def _png(path: Path) -> str:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (200, 30, 30)).save(path)
    return str(path)


@pytest.fixture()
def store(db_url: str) -> Iterator[Store]:
    opened = open_store(db_url)
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture()
def world(store: Store, tmp_path: Path) -> World:
    ws = tmp_path / "ws"
    outputs = ws / "outputs"
    with store.session() as s:
        corpus = get_or_create_corpus(s, "tiny", "spec")
        items = [Item(corpus=corpus, key=f"k{i}", modality="text", text=f"shape {i}", sha256="0" * 64)
                 for i in range(3)]
        gen = ModelRecord(kind="generator", name="tiny-gen", version="aaaa")
        s.add_all([*items, gen])
        s.flush()
        a_search = _recorded(s, text="a red circle", image_uri=None, params={"k": 2, "encoder": "st:x"},
                                 hits=[(items[0].id, 0.9, "text"), (items[1].id, 0.4, "text")], latency_ms=1.0,
                                 user=ALICE)  # fmt: skip
        a_gen = Prompt(kind="generate", text="a red square", params={"seed": 1}, user=ALICE, parent_id=a_search.id)
        a_gen.retrievals = [Retrieval(rank=1, item_id=items[0].id, score=0.7, modality="image")]
        a_gen.outputs = [Output(file_uri=_png(outputs / f"a-{i}.png"), model_id=gen.id) for i in range(2)]
        a_gen.outputs.append(Output(file_uri=_png(tmp_path / "elsewhere" / "a-x.png"), model_id=gen.id))
        s.add(a_gen)
        s.flush()
        b_search = _recorded(s, text="a blue circle", image_uri=None, params={"k": 1, "encoder": "st:x"},
                                 hits=[(items[2].id, 0.8, "text")], latency_ms=2.0, user=BOB)  # fmt: skip
        b_search.parent_id = a_search.id
        b_gen = Prompt(kind="generate", text="a blue square", params={"seed": 2}, user=BOB)
        b_gen.retrievals = [Retrieval(rank=1, item_id=items[2].id, score=0.6, modality="image")]
        b_gen.outputs = [Output(file_uri=_png(outputs / "b-0.png"), model_id=gen.id)]
        s.add(b_gen)
        s.commit()
        alice_outputs = [o.id for p in (a_search, a_gen) for o in p.outputs]
        world = World(store.url, ws, outputs, [a_search.id, a_gen.id], alice_outputs,
                      [outputs / "a-0.png", outputs / "a-1.png"], tmp_path / "elsewhere" / "a-x.png",
                      b_search.id, b_gen.id, outputs / "b-0.png")  # fmt: skip
        b_out, b_gen_out = b_search.outputs[0].id, b_gen.outputs[0].id
    rate(store, b_out, 2, note="meh", user=ALICE)  # alice's rating of bob's output: forgotten with her
    rate(store, alice_outputs[1], 5, note="lovely", user=BOB)  # a rating of alice's output: forgotten too
    rate(store, b_out, 4, note="mine", user=BOB)
    rate(store, b_gen_out, 3, note="fine", user=CAROL)
    return world


def invoke(*args: str, **kw: Any) -> Any:
    return runner.invoke(app, list(args), catch_exceptions=False, **kw)


def _counts(store: Store) -> dict[str, int]:
    with store.session() as s:
        return {m.__tablename__: s.scalar(select(func.count()).select_from(m)) or 0
                for m in (Prompt, Retrieval, Output, Feedback)}  # fmt: skip


def _bobs(store: Store, w: World) -> list[dict[str, Any]]:
    return [show(store, p).to_json() for p in (w.bob_search, w.bob_generate)]


def _assert_alice_gone(store: Store, w: World) -> None:
    with store.session() as s:
        assert list(s.scalars(select(Prompt.id).where(or_(Prompt.user == ALICE, Prompt.id.in_(w.alice_prompts))))) == []
        assert list(s.scalars(select(Retrieval.id).where(Retrieval.prompt_id.in_(w.alice_prompts)))) == []
        gone = or_(Output.id.in_(w.alice_outputs), Output.prompt_id.in_(w.alice_prompts))
        assert list(s.scalars(select(Output.id).where(gone))) == []
        rated = or_(Feedback.user == ALICE, Feedback.output_id.in_(w.alice_outputs))
        assert list(s.scalars(select(Feedback.id).where(rated))) == []
        assert list(s.scalars(select(Prompt.id).where(Prompt.parent_id.in_(w.alice_prompts)))) == []
    assert history(store, user=ALICE) == []
    assert not any(f.exists() for f in w.alice_files)


# ---- forget --------------------------------------------------------------------------------------
def test_forget_deletes_a_user_and_keeps_everyone_else(store: Store, world: World) -> None:
    w = world
    before = _bobs(store, w)
    report = forget(store, ALICE, w.outputs_dir)
    assert report.deleted == {"prompts": 2, "retrievals": 3, "outputs": 4, "feedback": 2, "items": 0}
    assert (report.unlinked, report.dry_run, report.failed) == (1, False, ())
    assert sorted(report.files) == sorted(str(f.resolve()) for f in w.alice_files)
    assert report.kept == (str(w.outside),)
    _assert_alice_gone(store, w)
    assert w.outside.is_file() and w.bob_file.is_file()  # outside the outputs folder; another user's
    after = _bobs(store, w)
    assert after[0]["parent_id"] is None and before[0]["parent_id"] == w.alice_prompts[0]
    assert after[0]["outputs"][0]["feedback"] == [f for f in before[0]["outputs"][0]["feedback"] if f["user"] != ALICE]
    assert [f["user"] for f in after[0]["outputs"][0]["feedback"]] == [BOB]
    assert {**after[0], "parent_id": None, "outputs": None} == {**before[0], "parent_id": None, "outputs": None}
    assert after[1] == before[1]  # bob's generation, rated by carol: untouched
    assert _counts(store) == {"prompts": 2, "retrievals": 2, "outputs": 2, "feedback": 2}


def test_forget_dry_run_changes_nothing_and_unknown_users_are_refused(store: Store, world: World) -> None:
    w = world
    before = _counts(store)
    plan = forget(store, ALICE, w.outputs_dir, dry_run=True)
    assert plan.dry_run and plan.deleted == {"prompts": 2, "retrievals": 3, "outputs": 4, "feedback": 2, "items": 0}
    assert len(plan.files) == 2 and all(f.is_file() for f in w.alice_files)
    assert _counts(store) == before
    with pytest.raises(RecordNotFoundError, match="no prompts or ratings of user 'nobody'"):
        forget(store, "nobody", w.outputs_dir)
    with pytest.raises(ConfigError, match="give the user"):
        forget(store, "", w.outputs_dir)
    assert _counts(store) == before
    only_rated = forget(store, CAROL, w.outputs_dir)  # a user who only rated
    assert only_rated.deleted == {"prompts": 0, "retrievals": 0, "outputs": 0, "feedback": 1, "items": 0} and not only_rated.files


def test_forget_command_asks_first_and_reports(store: Store, world: World) -> None:
    w = world
    before = _counts(store)
    args = ("forget", "--user", ALICE, "-w", str(w.ws), "--db", w.url)
    declined = runner.invoke(app, list(args), input="n\n")
    assert declined.exit_code == 1 and "would delete 2 prompts, 3 retrievals, 4 outputs, 2 feedback" in declined.stdout
    assert "nothing forgotten" in declined.stdout and _counts(store) == before
    done = invoke(*args, input="y\n")
    assert done.exit_code == 0, done.output
    assert "deleted 2 prompts, 3 retrievals, 4 outputs, 2 feedback" in done.stdout and "removed 2 files" in done.stdout
    assert f"kept (outside the workspace's outputs folder): {w.outside}" in done.stdout
    _assert_alice_gone(store, w)
    unknown = runner.invoke(app, [*args[:2], "nobody", *args[3:], "--yes"])
    assert unknown.exit_code == 2 and "error: no prompts or ratings of user 'nobody'" in unknown.output
    assert "Traceback" not in unknown.output


def test_forget_command_json(store: Store, world: World) -> None:
    w = world
    done = invoke("forget", "--user", BOB, "-w", str(w.ws), "--db", w.url, "--json")
    report = json.loads(done.stdout)
    assert report["deleted"] == {"prompts": 2, "retrievals": 2, "outputs": 2, "feedback": 4, "items": 0}  # own rating counted once
    assert report["files"] == [str(w.bob_file.resolve())] and not w.bob_file.exists()
    assert history(store, user=BOB) == [] and all(f.is_file() for f in w.alice_files)
    assert [p.id for p in history(store, user=ALICE)] == sorted(w.alice_prompts, reverse=True)


# ---- exports -------------------------------------------------------------------------------------
def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_export_prompts_gives_each_prompt_with_hits_and_outputs(store: Store, world: World, tmp_path: Path) -> None:
    w = world
    path = tmp_path / "prompts.jsonl"
    done = invoke("export", "prompts", "-o", str(path), "--db", w.url)
    assert done.exit_code == 0 and "wrote 4 prompts" in done.stdout
    rows = _lines(path)
    assert [r["id"] for r in rows] == [*w.alice_prompts, w.bob_search, w.bob_generate]
    first, second, third = rows[0], rows[1], rows[2]
    assert set(first) == {"id", "kind", "created_at", "user", "parent_id", "text", "image", "params", "hits", "outputs"}
    assert (first["kind"], first["user"], first["parent_id"], first["text"]) == ("search", ALICE, None, "a red circle")
    assert [(h["rank"], h["score"]) for h in first["hits"]] == [(1, 0.9), (2, 0.4)]
    assert all(isinstance(h["item_id"], int) for h in first["hits"]) and first["params"] == {"k": 2, "encoder": "st:x"}
    assert first["outputs"] + second["outputs"] == w.alice_outputs and first["created_at"].endswith("+00:00")
    assert (second["parent_id"], third["parent_id"], third["user"]) == (w.alice_prompts[0], w.alice_prompts[0], BOB)


def test_anonymised_exports_hold_no_user_name_and_are_stable_for_a_salt(world: World, tmp_path: Path) -> None:
    w = world
    for what in ("prompts", "feedback"):
        paths = [tmp_path / f"{what}-{i}.jsonl" for i in range(3)]
        for path in paths[:2]:
            assert invoke("export", what, "-o", str(path), "--db", w.url, "--anonymise", "--salt", SALT).exit_code == 0
        assert invoke("export", what, "-o", str(paths[2]), "--db", w.url, "--anonymise").exit_code == 0
        body = paths[0].read_text(encoding="utf-8")
        assert not any(name in body or name in paths[2].read_text(encoding="utf-8") for name in (ALICE, BOB, CAROL))
        assert SALT not in body and paths[1].read_text(encoding="utf-8") == body  # one salt: the same file
        users = {r["user"] for r in _lines(paths[0])}
        assert users <= {pseudonym(n, SALT) for n in (ALICE, BOB, CAROL)} and len(users) > 1
        assert all(u.startswith("u-") and len(u) == 18 for u in users)
        assert {r["user"] for r in _lines(paths[2])}.isdisjoint(users)  # a random salt: other pseudonyms
    assert pseudonym(ALICE, SALT) == "u-" + hmac.new(SALT.encode(), ALICE.encode(), "sha256").hexdigest()[:16]


def test_a_drawn_salt_is_kept_nowhere(store: Store, world: World, tmp_path: Path) -> None:
    redact = Redaction.of(anonymise=True)
    assert redact.salt and redact.salt not in repr(redact)
    path = tmp_path / "p.jsonl"
    assert export_prompts(store, path, redact) == 4
    assert redact.salt not in path.read_text(encoding="utf-8")
    assert {r["user"] for r in _lines(path)} == {redact.user(ALICE), redact.user(BOB)}


def test_drop_text_removes_prompt_text_and_notes(store: Store, world: World, tmp_path: Path) -> None:
    w = world
    prompts, prefs = tmp_path / "p.jsonl", tmp_path / "f.jsonl"
    assert invoke("export", "prompts", "-o", str(prompts), "--db", w.url, "--drop-text").exit_code == 0
    assert invoke("export", "feedback", "-o", str(prefs), "--db", w.url, "--drop-text").exit_code == 0
    body = prompts.read_text(encoding="utf-8") + prefs.read_text(encoding="utf-8")
    for said in ("a red circle", "a red square", "a blue circle", "a blue square", "meh", "lovely", "mine", "fine"):
        assert said not in body
    assert all("text" not in r and "image" not in r and r["user"] in (ALICE, BOB) for r in _lines(prompts))
    rows = _lines(prefs)
    assert len(rows) == 4 and all("note" not in r and "text" not in r["prompt"] for r in rows)
    assert export_feedback(store, prefs, redact=Redaction.of(True, SALT, True)) == 4
    assert {r["user"] for r in _lines(prefs)} == {pseudonym(n, SALT) for n in (ALICE, BOB, CAROL)}


def test_salt_without_anonymise_is_refused(world: World, tmp_path: Path) -> None:
    done = runner.invoke(app, ["export", "prompts", "-o", str(tmp_path / "x.jsonl"), "--db", world.url, "--salt", "s"])
    assert done.exit_code == 2 and "error: --salt only applies with --anonymise" in done.output
    assert not (tmp_path / "x.jsonl").exists()
