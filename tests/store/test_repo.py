"""Shared queries: get-or-create, search records, row-to-item mapping and `--where` filters."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mmgen.errors import ConfigError, ManifestMismatchError
from mmgen.store import Store
from mmgen.store.models import Corpus, IndexRow, Item, Output, Prompt, Retrieval
from mmgen.store.repo import (
    filter_items_by_meta,
    get_or_create_corpus,
    get_or_create_index,
    hit_rows,
    items_for_rows,
    record_search,
)

INDEX = {"encoder": "openclip:ViT-B-32/x", "encoder_checksum": "a" * 64, "dim": 512, "factory": "Flat"}


def test_get_or_create_corpus_returns_the_existing_row(store: Store) -> None:
    with store.session() as s:
        first = get_or_create_corpus(s, "emoji", "emoji:openmoji")
        s.commit()
    with store.session() as s:
        again = get_or_create_corpus(s, "emoji", "ignored")
        assert (again.id, again.source) == (first.id, "emoji:openmoji")
        assert s.scalar(select(func.count()).select_from(Corpus)) == 1
        assert again.licence is None
        licensed = get_or_create_corpus(s, "emoji", "ignored", "CC BY-SA 4.0 (OpenMoji)")
        s.commit()
    with store.session() as s:
        assert s.get(Corpus, licensed.id).licence == "CC BY-SA 4.0 (OpenMoji)"  # recorded on the existing row


def test_get_or_create_index_checks_encoder_dim_and_factory(store: Store) -> None:
    with store.session() as s:
        record = get_or_create_index(s, "main", params={"bits": 64}, **INDEX)
        s.commit()
        assert get_or_create_index(s, "main", params={"other": 1}, **INDEX).id == record.id
        wrong = {**INDEX, "encoder": "st:minilm", "dim": 384}
        with pytest.raises(ManifestMismatchError, match="encoder is 'openclip:ViT-B-32/x', not 'st:minilm'.*dim"):
            get_or_create_index(s, "main", params={}, **wrong)


def test_record_search_writes_prompt_retrievals_and_output(store: Store) -> None:
    with store.session() as s:
        corpus = get_or_create_corpus(s, "c", "spec")
        items = [Item(corpus=corpus, key=f"k{i}", modality="image+text", sha256="0" * 64) for i in range(3)]
        s.add_all(items)
        s.flush()
        hits = [(items[2].id, 0.9, "image"), (items[0].id, 0.5, "text"), (items[1].id, 0.1, "image")]
        prompt_id = record_search(
            s, text="a bus", image_uri=None, params={"k": 3, "to": "image"}, hits=hits, latency_ms=12.5, user="ada"
        )
        s.commit()
    with store.session() as s:
        loaded = s.get(Prompt, prompt_id)
        assert loaded is not None
        assert (loaded.kind, loaded.text, loaded.user, loaded.params) == ("search", "a bus", "ada", {"k": 3, "to": "image"})
        assert [(r.rank, r.item_id, r.modality) for r in loaded.retrievals] == [
            (1, items[2].id, "image"),
            (2, items[0].id, "text"),
            (3, items[1].id, "image"),
        ]
        assert loaded.retrievals[0].score == pytest.approx(0.9)
        (output,) = loaded.outputs
        assert output.latency_ms == pytest.approx(12.5)
        assert output.scores == {"k": 3, "top": pytest.approx(0.9)}


def test_record_search_without_hits(store: Store) -> None:
    with store.session() as s:
        prompt_id = record_search(s, text=None, image_uri="q.png", params={}, hits=[], latency_ms=1.0, user=None)
        s.commit()
        prompt = s.get(Prompt, prompt_id)
        assert prompt is not None and prompt.retrievals == [] and prompt.image_uri == "q.png"
        assert s.scalars(select(Output.scores)).one() == {"k": 0, "top": None}
        assert s.scalar(select(func.count()).select_from(Retrieval)) == 0


METAS: dict[str, dict[str, Any]] = {
    "bus": {"style": "openmoji-color", "tags": ["school", "vehicle"], "animated": False, "size": 72},
    "car": {"style": "openmoji-black", "tags": ["vehicle"], "animated": True, "size": 72.5},
    "cat": {"style": "openmoji-color", "tags": "animal", "license": {"name": "cc-by-sa"}, "group": "pets"},
    "dog": {"style": None},
    "odd": {"a-b.c": "dotted", "tags": [["nested"]], "x' OR 1=1 --": "y"},
}


def _populate(s: Session) -> None:
    vehicles = get_or_create_corpus(s, "vehicles", "manifest.jsonl")
    animals = get_or_create_corpus(s, "animals", "folder:animals")
    for key, meta in METAS.items():
        corpus = animals if key in ("cat", "dog") else vehicles
        modality = "text" if key == "dog" else "image+text"
        s.add(Item(corpus=corpus, key=key, modality=modality, sha256="0" * 64, group_key=key.upper(), meta=meta))
    s.flush()


CASES: list[tuple[dict[str, Any], list[str]]] = [
    ({}, ["bus", "car", "cat", "dog", "odd"]),
    ({"style": "openmoji-color"}, ["bus", "cat"]),
    ({"tags": "vehicle"}, ["bus", "car"]),  # list membership
    ({"tags": "animal"}, ["cat"]),  # scalar
    ({"tags": "nested"}, []),  # only one level of list
    ({"animated": "true"}, ["car"]),
    ({"animated": "false"}, ["bus"]),
    ({"animated": True}, ["car"]),
    ({"size": "72"}, ["bus"]),
    ({"size": "72.5"}, ["car"]),
    ({"license": "cc-by-sa"}, []),  # objects are not looked into
    ({"style": "None"}, []),  # JSON null matches nothing
    ({"style": "openmoji-color", "tags": "vehicle"}, ["bus"]),
    ({"a-b.c": "dotted"}, ["odd"]),
    ({"corpus": "animals"}, ["cat", "dog"]),
    ({"modality": "text"}, ["dog"]),
    ({"group": "CAR"}, ["car"]),
    ({"meta.group": "pets"}, ["cat"]),
    ({"missing": "x"}, []),
    ({"style": "x' OR 1=1 --"}, []),
    ({"style": "openmoji-color' OR '1'='1"}, []),
    ({"tags": '"] OR 1=1 --'}, []),
    ({"corpus": "animals' OR 1=1 --"}, []),
    ({"style": "openmoji-color'); DROP TABLE items; --"}, []),
]


@pytest.fixture(scope="module")
def populated(module_store: Store) -> Store:
    with module_store.session() as s:
        _populate(s)
        s.commit()
    return module_store


@pytest.mark.parametrize(("where", "expected"), CASES, ids=[repr(w) for w, _ in CASES])
def test_filter_items_by_meta(populated: Store, where: dict[str, Any], expected: list[str]) -> None:
    with populated.session() as s:
        found = s.scalars(filter_items_by_meta(select(Item.key), where).order_by(Item.key)).all()
        assert found == expected
        assert s.scalar(select(func.count()).select_from(Item)) == len(METAS)


@pytest.mark.parametrize("key", ["x' OR 1=1 --", "a b", "", "tags[0]", "$.style", 'a"b', "é"])
def test_filter_keys_outside_the_safe_alphabet_are_refused(key: str) -> None:
    with pytest.raises(ConfigError, match="invalid filter key"):
        filter_items_by_meta(select(Item.key), {key: "x"})


def test_items_for_rows_maps_faiss_ids_through_sql(store: Store) -> None:
    with store.session() as s:
        _populate(s)
        index = get_or_create_index(s, "main", params={}, **INDEX)
        items = {i.key: i for i in s.scalars(select(Item))}
        # Row ids deliberately out of insertion order: nothing may rely on implicit order.
        for row_id, key in [(5, "bus"), (0, "car"), (3, "cat")]:
            s.add(IndexRow(index_id=index.id, modality="image", row_id=row_id, item_id=items[key].id, sha256="0"))
        s.add(IndexRow(index_id=index.id, modality="text", row_id=5, item_id=items["dog"].id, sha256="0"))
        s.flush()
        mapped = items_for_rows(s, index.id, "image", [3, 5, -1, 42])
        assert {row: item.key for row, item in mapped.items()} == {3: "cat", 5: "bus"}
        assert items_for_rows(s, index.id, "text", [5])[5].key == "dog"
        filtered = items_for_rows(s, index.id, "image", [0, 3, 5], where={"tags": "vehicle"})
        assert sorted(item.key for item in filtered.values()) == ["bus", "car"]
        assert items_for_rows(s, index.id, "image", [-1]) == {}


def test_hit_rows_reads_the_fields_of_a_hit(store: Store) -> None:
    with store.session() as s:
        _populate(s)
        index = get_or_create_index(s, "main", params={}, **INDEX)
        items = {i.key: i for i in s.scalars(select(Item))}
        for row_id, key in [(5, "bus"), (0, "car")]:
            s.add(IndexRow(index_id=index.id, modality="image", row_id=row_id, item_id=items[key].id, sha256="0"))
        s.add(IndexRow(index_id=index.id, modality="text", row_id=0, item_id=items["dog"].id, sha256="0"))
        s.flush()
        rows = hit_rows(s, index.id, "image", [5, 0, -1, 42])
        assert sorted(rows) == [0, 5]
        bus = items["bus"]
        assert (rows[5].id, rows[5].key, rows[5].meta, rows[5].corpus_id) == (bus.id, "bus", bus.meta, bus.corpus_id)
        assert hit_rows(s, index.id, "text", [0])[0].key == "dog"
        assert hit_rows(s, index.id, "image", [-1]) == {}
