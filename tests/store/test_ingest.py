"""`mmgen.store.ingest.write_batch`: the indexer's bulk writes, on SQLite and PostgreSQL."""

from __future__ import annotations

from sqlalchemy import delete, select

from mmgen.store.db import Store
from mmgen.store.ingest import BatchItem, write_batch
from mmgen.store.models import IndexRow, Item
from mmgen.store.repo import get_or_create_corpus, get_or_create_index

INDEX = {"encoder": "st:x", "encoder_checksum": "c", "dim": 8, "factory": "Flat"}


def _fields(text: str, sha: str = "1") -> dict:
    return {"modality": "text", "uri": None, "text": text, "sha256": sha * 64, "group_key": None,
            "meta": {"n": text}, "synthetic": False}  # fmt: skip


def test_write_batch_inserts_updates_and_replaces_rows(store: Store) -> None:
    with store.session(write=True) as s:
        corpus = get_or_create_corpus(s, "c", "spec")
        index = get_or_create_index(s, "main", params={}, **INDEX)
        first = [BatchItem(key=f"k{i}", fields=_fields(f"t{i}"), rows={"text": (i, "a" * 64)}) for i in range(4)]
        written = write_batch(s, index.id, corpus.id, first)
        s.commit()
        assert (written.added, written.updated, written.vectors) == (4, 0, {"text": 4})
        ids = {key: iid for iid, key in s.execute(select(Item.id, Item.key))}
        rows = dict(s.execute(select(IndexRow.row_id, IndexRow.item_id)).all())
        assert rows == {i: ids[f"k{i}"] for i in range(4)}  # each row points at its own item, read back by key
        assert s.get(Item, ids["k2"]).meta == {"n": "t2"}

        # k1 re-embedded into row 10; k3's item deleted meanwhile, so it comes back as a new item
        s.execute(delete(Item).where(Item.id == ids["k3"]))
        again = [
            BatchItem(key="k1", fields=_fields("new one", "2"), existing=ids["k1"], rows={"text": (10, "b" * 64)}),
            BatchItem(key="k3", fields=_fields("t3"), existing=ids["k3"], rows={"text": (11, "a" * 64)}),
            BatchItem(key="k0", fields=_fields("t0 renamed"), existing=ids["k0"]),  # fields only, rows kept
        ]
        written = write_batch(s, index.id, corpus.id, again)
        s.commit()
        assert (written.added, written.updated, written.vectors) == (1, 2, {"text": 2})
        s.expire_all()
        assert (s.get(Item, ids["k1"]).text, s.get(Item, ids["k1"]).sha256) == ("new one", "2" * 64)
        assert s.get(Item, ids["k0"]).text == "t0 renamed"
        rows = dict(s.execute(select(IndexRow.row_id, IndexRow.item_id)).all())
        new_k3 = s.scalar(select(Item.id).where(Item.key == "k3"))
        assert s.get(Item, new_k3).text == "t3"  # inserted again (SQLite may hand out the freed id anew)
        assert rows == {0: ids["k0"], 2: ids["k2"], 10: ids["k1"], 11: new_k3}


def test_a_batch_larger_than_one_key_lookup_maps_every_row_to_its_own_item(store: Store) -> None:
    """New items' ids are read back by (corpus, key) in chunks of keys: 1,234 of them, keys in no sorted
    order, two corpora holding the same keys."""
    with store.session(write=True) as s:
        index = get_or_create_index(s, "main", params={}, **INDEX)
        for name in ("a", "b"):
            corpus = get_or_create_corpus(s, name, "spec")
            batch = [BatchItem(key=f"k{(i * 7919) % 1234}", fields=_fields(f"{name}{(i * 7919) % 1234}"),
                               rows={"text": (i if name == "a" else 5000 + i, "a" * 64)}) for i in range(1234)]  # fmt: skip
            assert write_batch(s, index.id, corpus.id, batch).added == 1234
        s.commit()
        joined = s.execute(select(IndexRow.row_id, Item.text).join(Item, Item.id == IndexRow.item_id)).all()
    assert len(joined) == 2468
    assert all(text == (f"a{(r * 7919) % 1234}" if r < 5000 else f"b{((r - 5000) * 7919) % 1234}") for r, text in joined)
