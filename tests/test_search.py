"""`Searcher`: a search recorded by the writer thread after the answer (`background_records`, the default) or
before it returns, with the same record either way."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import select

from mmgen.search import Searcher
from mmgen.store.db import open_store
from mmgen.store.models import Output, Prompt, Retrieval
from mmgen.store.writer import shared_writer


def _record(store: Any, prompt_id: int) -> tuple[Any, ...]:
    with store.session() as s:
        prompt = s.get(Prompt, prompt_id)
        assert prompt is not None
        ranks = s.execute(select(Retrieval.rank, Retrieval.item_id).where(Retrieval.prompt_id == prompt_id)
                          .order_by(Retrieval.rank)).all()  # fmt: skip
        (k,) = s.scalars(select(Output.scores).where(Output.prompt_id == prompt_id)).all()
        return prompt.kind, prompt.text, prompt.params, [tuple(r) for r in ranks], k["k"]


def test_background_records_equal_the_synchronous_ones(tmp_path: Path, tiny_encoder: Any, build_tiny_workspace: Any) -> None:
    ws, _ = build_tiny_workspace(tmp_path, tiny_encoder)
    store = open_store(ws.db_url)
    try:
        now = Searcher(ws, store, background_records=False).search(text="a red circle", k=3)
        assert now._prompt_id is not None  # written before search returned
        later = Searcher(ws, store)
        results = [later.search(text="a red circle", k=3) for _ in range(5)]
        ids = [r.prompt_id for r in results]  # each read waits for its own record
        assert all(i is not None for i in ids) and len(set(ids)) == 5  # every one written, none lost
        assert [h.id for h in results[0].hits] == [h.id for h in now.hits]
        for prompt_id in ids:
            assert _record(store, prompt_id) == _record(store, now.prompt_id)  # type: ignore[arg-type]
        unrecorded = later.search(text="a blue square", k=3, record=False)
        later.flush()
        assert unrecorded.prompt_id is None
        later.close()  # waits for the queue; later searches record at once
        assert later.search(text="a red circle", k=3).prompt_id is not None
        with store.session() as s:
            assert len(s.scalars(select(Prompt.id)).all()) == 7
    finally:
        store.close()


def test_a_background_record_that_fails_leaves_no_prompt_id_and_no_wait(
    tmp_path: Path, tiny_encoder: Any, build_tiny_workspace: Any
) -> None:
    """The store refuses the record (its prompts table is gone): the answer stands, `prompt_id` is None at
    once, the writer counts the failure, and the next search is answered too."""
    ws, _ = build_tiny_workspace(tmp_path, tiny_encoder)
    store = open_store(ws.db_url)
    try:
        searcher = Searcher(ws, store)
        assert searcher.writer is None  # taken by the first search that records
        assert searcher.search(text="a red circle", k=3).prompt_id is not None
        assert searcher.writer is shared_writer() and Searcher(ws, store).writer is None  # one thread per process
        failed = searcher.writer.failed
        with store.engine.begin() as conn:
            conn.exec_driver_sql("ALTER TABLE prompts RENAME TO prompts_away")
        broken = searcher.search(text="a red circle", k=3)
        assert broken.hits and broken.prompt_id is None
        searcher.flush()
        assert searcher.writer.failed == failed + 1
        with store.engine.begin() as conn:
            conn.exec_driver_sql("ALTER TABLE prompts_away RENAME TO prompts")
        assert searcher.search(text="a red circle", k=3).prompt_id is not None
        searcher.close()
    finally:
        store.close()


def test_the_fp16_preset_answers_with_the_flat_presets_hits_and_scores(
    tmp_path: Path, tiny_encoder: Any, build_tiny_workspace: Any
) -> None:
    """flat-fp16 holds 16-bit vectors and re-scores its best 4k exactly: the same hits and float32 scores as flat,
    with and without a filter, in both directions."""
    import numpy as np

    from mmgen.data.sources import open_sources
    from mmgen.indexer import Indexer, IndexOptions
    from mmgen.workspace import Workspace

    import sys

    manifest = sys.modules[build_tiny_workspace.__module__].write_corpus(tmp_path / "corpus", 5)
    found = {}
    for preset in ("flat", "flat-fp16"):
        ws = Workspace.resolve(tmp_path / preset)
        store = open_store(ws.db_url)
        try:
            Indexer(ws, store, tiny_encoder, IndexOptions(progress=False, preset=preset)).run(open_sources(str(manifest)))
            searcher = Searcher(ws, store)
            assert searcher.folder.preset.name == preset
            found[preset] = [
                [(h.key, h.score) for h in searcher.search(text=q, k=k, to=to, where=where, record=False).hits]
                for q, k, to, where in [("a red circle", 5, "image", None), ("a blue square", 3, "text", None),
                                        ("a red circle", 4, "image", {"color": "blue"}), ("x", 500, None, None)]
            ]  # fmt: skip
        finally:
            store.close()
    for flat, fp16 in zip(found["flat"], found["flat-fp16"]):
        assert len(flat) == len(fp16) > 0
        np.testing.assert_allclose([s for _, s in fp16], [s for _, s in flat], atol=1e-6)
        assert {key for key, _ in fp16} == {key for key, _ in flat}
