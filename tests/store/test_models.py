"""Schema behaviour on both backends: defaults, cascades, unique and check constraints."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mmgen.store import Store
from mmgen.store.models import (
    Corpus,
    IndexRecord,
    IndexRow,
    Item,
    ModelRecord,
    Output,
    Prompt,
    Retrieval,
)


def _item(corpus: Corpus, key: str, **kw: object) -> Item:
    return Item(corpus=corpus, key=key, modality=kw.pop("modality", "image"), sha256="0" * 64, **kw)


def _index(name: str = "idx") -> IndexRecord:
    return IndexRecord(name=name, encoder="enc", encoder_checksum="c" * 64, dim=4, factory="Flat", params={})


def _count(s: Session, model: type) -> int:
    return s.scalar(select(func.count()).select_from(model)) or 0


def test_server_defaults(store: Store) -> None:
    with store.session() as s:
        corpus = Corpus(name="c", source="spec")
        item = _item(corpus, "a", text="a bus", group_key="bus")
        model = ModelRecord(kind="encoder", name="enc")
        s.add_all([item, model])
        s.commit()
    with store.session() as s:
        item = s.get(Item, item.id)
        model = s.get(ModelRecord, model.id)
        assert item is not None and model is not None
        assert item.synthetic is False
        assert item.meta == {}
        assert item.created_at is not None and item.updated_at is not None
        assert item.corpus.name == "c"
        assert model.version == "1" and model.params == {}


def test_deleting_a_corpus_cascades_to_items_and_index_rows(store: Store) -> None:
    with store.session() as s:
        corpus = Corpus(name="c", source="spec")
        item = _item(corpus, "a")
        index = _index()
        s.add_all([item, index])
        s.flush()
        s.add(IndexRow(index_id=index.id, modality="image", row_id=0, item_id=item.id, sha256="0" * 64))
        prompt = Prompt(kind="search", params={}, retrievals=[Retrieval(rank=1, item_id=item.id, score=0.5, modality="image")])
        s.add(prompt)
        s.commit()
        s.execute(delete(Corpus))  # database-side cascades, not the ORM's
        s.commit()
        s.expire_all()
        assert _count(s, Item) == 0
        assert _count(s, IndexRow) == 0
        assert _count(s, IndexRecord) == 1
        retrieval = s.scalars(select(Retrieval)).one()
        assert retrieval.item_id is None  # SET NULL: the prompt's history stays


def test_deleting_an_index_or_prompt_or_model(store: Store) -> None:
    with store.session() as s:
        corpus = Corpus(name="c", source="spec")
        item = _item(corpus, "a")
        index = _index()
        model = ModelRecord(kind="captioner", name="cap", params={"beam": 3})
        s.add_all([item, index, model])
        s.flush()
        s.add(IndexRow(index_id=index.id, modality="text", row_id=7, item_id=item.id, sha256="0" * 64))
        prompt = Prompt(kind="caption", image_uri="x.png", params={})
        prompt.outputs = [Output(text="a bus", model_id=model.id, scores={}, latency_ms=1.5)]
        prompt.retrievals = [Retrieval(rank=1, item_id=item.id, score=0.9, modality="text")]
        s.add(prompt)
        s.commit()

        s.execute(delete(ModelRecord))
        s.commit()
        s.expire_all()
        assert s.scalars(select(Output.model_id)).one() is None

        s.execute(delete(IndexRecord))
        s.execute(delete(Prompt))
        s.commit()
        assert (_count(s, IndexRow), _count(s, Output), _count(s, Retrieval)) == (0, 0, 0)
        assert _count(s, Item) == 1


@dataclass(frozen=True)
class Seeded:
    """Ids of item `a` at row 0 of an index, item `b` not indexed, a prompt retrieving `a` at rank 1."""

    corpus: int
    item: int
    unindexed: int
    index: int
    prompt: int


def _seed(s: Session) -> Seeded:
    corpus = Corpus(name="c", source="spec")
    item = _item(corpus, "a")
    unindexed = _item(corpus, "b")
    index = _index()
    prompt = Prompt(kind="search", params={})
    s.add_all([item, unindexed, index, prompt])
    s.flush()
    s.add(IndexRow(index_id=index.id, modality="image", row_id=0, item_id=item.id, sha256="0" * 64))
    s.add(Retrieval(prompt_id=prompt.id, rank=1, item_id=item.id, score=1.0, modality="image"))
    s.add(ModelRecord(kind="encoder", name="enc", version="2"))
    s.flush()
    return Seeded(corpus.id, item.id, unindexed.id, index.id, prompt.id)


@pytest.fixture(scope="module")
def seeded(module_store: Store) -> Seeded:
    with module_store.session() as s:
        ids = _seed(s)
        s.commit()
    return ids


def _row(ids: Seeded, *, modality: str = "image", row_id: int, item_id: int) -> IndexRow:
    return IndexRow(index_id=ids.index, modality=modality, row_id=row_id, item_id=item_id, sha256="1")


VIOLATIONS: dict[str, Callable[[Seeded], object]] = {
    "corpus name": lambda ids: Corpus(name="c", source="other"),
    "item key in corpus": lambda ids: Item(corpus_id=ids.corpus, key="a", modality="text", sha256="1"),
    "index name": lambda ids: _index(),
    "faiss row id": lambda ids: _row(ids, row_id=0, item_id=ids.unindexed),
    "item per index and modality": lambda ids: _row(ids, row_id=1, item_id=ids.item),
    "retrieval rank": lambda ids: Retrieval(prompt_id=ids.prompt, rank=1, item_id=ids.unindexed, score=0.0, modality="text"),
    "model kind, name, version": lambda ids: ModelRecord(kind="encoder", name="enc", version="2"),
    "item modality": lambda ids: Item(corpus_id=ids.corpus, key="v", modality="video", sha256="1"),
    "row modality": lambda ids: _row(ids, modality="audio", row_id=9, item_id=ids.unindexed),
    "item of a missing corpus": lambda ids: Item(corpus_id=ids.corpus + 1000, key="z", modality="text", sha256="1"),
}


@pytest.mark.parametrize("violation", list(VIOLATIONS))
def test_constraints_reject(module_store: Store, seeded: Seeded, violation: str) -> None:
    with module_store.session() as s:
        s.add(VIOLATIONS[violation](seeded))
        with pytest.raises(IntegrityError):
            s.flush()
        s.rollback()


def test_same_key_in_another_corpus_and_same_row_id_in_another_modality_are_fine(store: Store) -> None:
    with store.session() as s:
        ids = _seed(s)
        other = _item(Corpus(name="d", source="spec"), "a")
        s.add(other)
        s.flush()
        s.add(_row(ids, modality="text", row_id=0, item_id=ids.item))
        s.add(_row(ids, row_id=1, item_id=other.id))
        s.commit()
        assert _count(s, IndexRow) == 3
