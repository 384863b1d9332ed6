"""Migration 0004 (prompts.parent_id, feedback) upgrades a store at 0003 in place and downgrades back."""

from __future__ import annotations

from sqlalchemy import inspect, text

from mmgen.records import history, link, rate, show
from mmgen.store import current_revision, downgrade, open_store, upgrade


def _fill_0003(url: str) -> None:
    """Rows as mmgen at 0003 wrote them: a corpus, an item, a search and a caption with outputs and retrievals."""
    with open_store(url, upgrade=False) as old, old.engine.begin() as conn:
        conn.execute(text("INSERT INTO corpora (name, source) VALUES ('c', 'spec')"))
        conn.execute(text("INSERT INTO items (corpus_id, key, modality, text, sha256) "
                          "SELECT id, 'k1', 'text', 'a red apple', :sha FROM corpora"), {"sha": "0" * 64})  # fmt: skip
        conn.execute(text("INSERT INTO models (kind, name, version) VALUES ('captioner', 'cap', 'v1')"))
        for kind, words in (("search", "red apple"), ("caption", None)):
            conn.execute(text("INSERT INTO prompts (kind, text, \"user\") VALUES (:kind, :words, 'ada')"),
                         {"kind": kind, "words": words})  # fmt: skip
        conn.execute(text("INSERT INTO retrievals (prompt_id, rank, item_id, score, modality) "
                          "SELECT p.id, 1, i.id, 0.75, 'text' FROM prompts p, items i WHERE p.kind = 'search'"))  # fmt: skip
        conn.execute(text("INSERT INTO outputs (prompt_id, latency_ms) SELECT id, 5.0 FROM prompts WHERE kind = 'search'"))
        conn.execute(text("INSERT INTO outputs (prompt_id, text, model_id, latency_ms) "
                          "SELECT p.id, 'an apple', m.id, 9.0 FROM prompts p, models m WHERE p.kind = 'caption'"))  # fmt: skip


def test_a_0003_store_upgrades_keeping_prompts_outputs_and_retrievals(db_url: str) -> None:
    upgrade(db_url, "0003")
    _fill_0003(db_url)
    with open_store(db_url) as store:  # opening migrates to head
        assert current_revision(db_url) == "0004"
        listed = history(store)
        assert [(p.kind, p.user, p.parent_id) for p in listed] == [("caption", "ada", None), ("search", "ada", None)]
        caption, search = listed
        assert caption.outputs[0].text == "an apple" and caption.outputs[0].model is not None
        assert caption.outputs[0].model.label == "cap@v1"
        detail = show(store, search.id)
        assert [(h.rank, h.key, h.text, h.score) for h in detail.retrievals] == [(1, "k1", "a red apple", 0.75)]
        link(store, caption.id, search.id)
        rate(store, caption.outputs[0].id, 5, user="ada")
        assert show(store, caption.id).parent_id == search.id
        with store.engine.begin() as conn:  # the rebuilt prompts table still cascades to its outputs
            conn.execute(text("DELETE FROM prompts WHERE id = :id"), {"id": search.id})
        assert show(store, caption.id).parent_id is None
        assert [p.kind for p in history(store)] == ["caption"]
    downgrade(db_url, "0003")
    assert current_revision(db_url) == "0003"
    with open_store(db_url, upgrade=False) as back, back.engine.connect() as conn:
        assert "feedback" not in inspect(back.engine).get_table_names()
        assert "parent_id" not in {c["name"] for c in inspect(back.engine).get_columns("prompts")}
        assert conn.execute(text("SELECT kind, \"user\" FROM prompts")).all() == [("caption", "ada")]
        assert conn.execute(text("SELECT text FROM outputs")).scalars().all() == ["an apple"]
    upgrade(db_url)  # and up again
    assert current_revision(db_url) == "0004"


def test_a_0003_store_keeps_its_keyword_index_through_0004(db_url: str) -> None:
    from mmgen.store.keywords import KEYWORD_TABLES

    upgrade(db_url, "0003")
    _fill_0003(db_url)
    with open_store(db_url) as store:
        names = set(inspect(store.engine).get_table_names())
        columns = {c["name"] for c in inspect(store.engine).get_columns("items")}
        assert (KEYWORD_TABLES[0] in names) if store.dialect == "sqlite" else ("search_tsv" in columns)


def test_offline_sqlite_sql_includes_0004() -> None:
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-m", "alembic", "-c", str(repo / "alembic.ini"), "-x", "url=sqlite:///offline.db",
         "upgrade", "head", "--sql"],
        capture_output=True, text=True, check=False, cwd=repo / "migrations",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr  # the SQLite batch needs no live table to reflect
    assert "CREATE TABLE feedback" in done.stdout and "ALTER TABLE _alembic_tmp_prompts RENAME TO prompts" in done.stdout
