"""`mmgen data manifest`: exported ids are unique and corpus-qualified, and re-indexing the export adds nothing."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from mmgen.cli import app
from mmgen.data import Record, qualify, read_records, unqualify
from mmgen.data.sources import open_sources
from mmgen.indexer import Indexer, IndexOptions
from mmgen.store.db import open_store
from mmgen.store.models import Corpus, Item
from mmgen.workspace import Workspace


def index(ws: Workspace, encoder: Any, spec: str, data_dir: Path) -> Any:
    store = open_store(ws.db_url)
    try:
        return Indexer(ws, store, encoder, IndexOptions(progress=False)).run(open_sources(spec, data_dir))
    finally:
        store.close()


@pytest.mark.parametrize("name", ["emoji.jsonl", "emoji.csv"])
def test_exported_manifest_round_trips_through_the_indexer(emoji_data: Path, tmp_path: Path, tiny_encoder: Any,
                                                           name: str) -> None:  # fmt: skip
    out = tmp_path / name
    result = CliRunner().invoke(app, ["data", "manifest", "emoji", "-o", str(out), "--data-dir", str(emoji_data)])
    assert result.exit_code == 0, result.output
    records = list(read_records(out))
    ids = [r.key for r in records]
    assert len(ids) == len(set(ids)) and all(r.error is None for r in records)  # unique: 1F68C is in every style
    assert {"openmoji-color:1F68C", "openmoji-black:1F68C", "twemoji:1F68C"} <= set(ids)
    assert all(r.key == f"{r.corpus}:{unqualify(r).key}" for r in records)
    by_corpus = Counter(r.corpus for r in records)
    assert list(by_corpus) == ["openmoji-color", "openmoji-black", "twemoji"]

    # the manifest's sources are the source's corpora, keyed as the source keys them
    sources = {s.corpus: s for s in open_sources("emoji", emoji_data)}
    exported = open_sources(str(out))
    assert [s.corpus for s in exported] == list(sources)
    for s in exported:
        assert [r.key for r in s.records()] == [r.key for r in sources[s.corpus].records() if r.error is None]

    ws = Workspace.resolve(tmp_path / "ws")
    first = index(ws, tiny_encoder, "emoji", emoji_data)
    assert first.added == len(records) and first.failed_count == 1  # twemoji's missing heart PNG
    again = index(ws, tiny_encoder, str(out), emoji_data)
    assert (again.added, again.updated, again.missing, again.failed_count) == (0, 0, 0, 0)
    assert again.unchanged == len(records) and again.vectors_added == {}
    store = open_store(ws.db_url)
    with store.session() as s:
        assert sorted(s.scalars(select(Corpus.name))) == sorted(sources)  # no corpus named after the manifest
        assert len(s.scalars(select(Item.id)).all()) == len(records)
    store.close()


def test_qualify_and_unqualify_are_inverse_and_manifests_mix_corpora(tmp_path: Path) -> None:
    rec = Record(key="1F600", text="grinning face", group="1F600")
    assert qualify(rec, "twemoji") == Record(key="twemoji:1F600", text="grinning face", group="1F600", corpus="twemoji")
    assert unqualify(qualify(rec, "twemoji")) == rec and unqualify(rec) is rec
    lines = [
        {"id": "a:1", "text": "one", "corpus": "a"},
        {"id": "b:1", "text": "one", "corpus": "b"},
        {"id": "x", "text": "no corpus: the manifest's own"},
        {"id": "1", "text": "an unprefixed id keeps its key", "corpus": "c"},
    ]
    path = tmp_path / "m.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    sources = open_sources(str(path))
    assert [s.corpus for s in sources] == [str(path.resolve()), "a", "b", "c"]
    assert [[r.key for r in s.records()] for s in sources] == [["x"], ["1"], ["1"], ["1"]]
    assert all(r.corpus is None for s in sources for r in s.records())
