"""The search join and record on the raw driver (SQLite) read and write what the Core statements do."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from mmgen.errors import StoreError
from mmgen.store import Store
from mmgen.store.hotpath import QueryPath
from mmgen.store.models import IndexRow, Item, Output, Prompt, Retrieval
from mmgen.store.repo import get_or_create_corpus, get_or_create_index, hit_rows, record_search

INDEX = {"encoder": "openclip:ViT-B-32/x", "encoder_checksum": "a" * 64, "dim": 512, "factory": "Flat"}
METAS = {"bus": {"style": "openmoji-color", "tags": ["school", "vehicle"]}, "car": {}, "dog": {"style": None, "name": "Ümit"}}


def _populate(store: Store) -> tuple[int, dict[str, int]]:
    with store.session() as s:
        corpus = get_or_create_corpus(s, "c", "spec")
        for key, meta in METAS.items():
            s.add(Item(corpus=corpus, key=key, modality="image+text", sha256="0" * 64, text=f"a {key}",
                       uri=f"/x/{key}.png", group_key=key.upper() if key != "car" else None, meta=meta))  # fmt: skip
        s.flush()
        index = get_or_create_index(s, "main", params={}, **INDEX)
        items = {i.key: i.id for i in s.scalars(select(Item))}
        for row_id, key in [(5, "bus"), (0, "car"), (7, "dog")]:
            s.add(IndexRow(index_id=index.id, modality="image", row_id=row_id, item_id=items[key], sha256="0"))
        s.add(IndexRow(index_id=index.id, modality="text", row_id=0, item_id=items["dog"], sha256="0"))
        s.commit()
        return index.id, items


def test_hit_rows_match_the_core_statement(store: Store) -> None:
    index_id, _ = _populate(store)
    path = QueryPath(store.engine)
    assert path.raw == (store.engine.dialect.name == "sqlite")
    fast = path.hit_rows(index_id, "image", [5, 0, 7, -1, 42, 5])
    with store.engine.connect() as conn:
        core = hit_rows(conn, index_id, "image", [5, 0, 7, -1, 42, 5])
    assert sorted(fast) == sorted(core) == [0, 5, 7]
    fields = ("row_id", "id", "text", "uri", "key", "corpus_id", "group_key")
    for row in fast:
        assert [getattr(fast[row], f) for f in fields] == [getattr(core[row], f) for f in fields]
        assert fast[row].meta == (core[row].meta or {})
    assert fast[7].meta == {"style": None, "name": "Ümit"} and fast[0].group_key is None
    assert path.hit_rows(index_id, "text", [0])[0].key == "dog"
    assert path.hit_rows(index_id, "image", [-1, 99]) == {}


def test_record_search_writes_what_the_core_path_writes(store: Store) -> None:
    _, items = _populate(store)
    hits = [(items["dog"], 0.9, "image"), (items["bus"], 0.25, "text")]
    params = {"k": 2, "to": "image", "where": {"style": "ü"}}
    fast_id = QueryPath(store.engine).record_search(text="a dög", image_uri=None, params=params, hits=hits,
                                                    latency_ms=12.5, user="ada")  # fmt: skip
    with store.session() as s:
        core_id = record_search(s, text="a dög", image_uri=None, params=params, hits=hits, latency_ms=12.5, user="ada")
        s.commit()
    with store.session() as s:
        fast, core = s.get(Prompt, fast_id), s.get(Prompt, core_id)
        assert fast is not None and core is not None
        for prompt in (fast, core):
            assert (prompt.kind, prompt.text, prompt.user, prompt.params) == ("search", "a dög", "ada", params)
            assert prompt.created_at is not None and prompt.image_uri is None
            assert [(r.rank, r.item_id, r.modality, r.score) for r in prompt.retrievals] == [
                (1, items["dog"], "image", pytest.approx(0.9)), (2, items["bus"], "text", pytest.approx(0.25))
            ]  # fmt: skip
            (output,) = prompt.outputs
            assert (output.scores, output.latency_ms, output.model_id) == ({"k": 2, "top": pytest.approx(0.9)}, 12.5, None)
            assert output.created_at is not None


def test_record_search_without_hits(store: Store) -> None:
    prompt_id = QueryPath(store.engine).record_search(text=None, image_uri="q.png", params={}, hits=[], latency_ms=1.0, user=None)
    with store.session() as s:
        prompt = s.get(Prompt, prompt_id)
        assert prompt is not None and prompt.retrievals == [] and prompt.image_uri == "q.png" and prompt.user is None
        assert s.scalars(select(Output.scores)).one() == {"k": 0, "top": None}


def test_a_failed_record_writes_nothing_and_names_the_store(store: Store) -> None:
    _, items = _populate(store)
    path = QueryPath(store.engine)
    bad = [(items["bus"], 0.5, "image"), (10**9, 0.4, "image")]  # no such item: the foreign key refuses it
    with pytest.raises(StoreError, match="cannot record a search"):
        path.record_search(text="x", image_uri=None, params={}, hits=bad, latency_ms=1.0, user=None)
    with store.session() as s:
        assert s.scalar(select(func.count()).select_from(Prompt)) == 0
        assert s.scalar(select(func.count()).select_from(Retrieval)) == 0
    # the connection went back to the pool usable: the next record lands
    path.record_search(text="y", image_uri=None, params={}, hits=[(items["bus"], 0.5, "image")], latency_ms=1.0, user=None)
    with store.session() as s:
        assert s.scalars(select(Prompt.text)).all() == ["y"]
