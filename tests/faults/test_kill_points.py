"""SIGKILL at exact places in the code: the narrow windows between a durable step and the next.

A random delay lands in a window a few milliseconds wide (a folder created before the SQL row
that names it, vectors fsynced before their commit, FAISS saved before its codes, weights
replaced before their manifest) only by luck. Here the process kills itself right there
(forkserver.py, `MMGEN_FAULTS_KILL_AT`), then the same command runs again and is verified as
after a random kill (tests/faults/test_kills.py).
"""

from __future__ import annotations

from typing import Any

import pytest

# (command, kill point, in the default run): the rest run with `-m slow`.
POINTS = [
    # a new index: its folder and manifest exist, the SQL row naming it was never committed
    ("index", "after:mmgen.index.folder:IndexFolder.create:1", True),
    # the first batch's image and then text vectors fsynced, nothing of that batch committed
    ("index", "after:mmgen.index.vectors:VectorFile.append:1", False),
    ("index", "after:mmgen.index.vectors:VectorFile.append:2", False),
    # every batch committed; image FAISS saved, text FAISS not (the end-of-run sync)
    ("index", "before:mmgen.index.folder:IndexFolder.save:2", False),
    # FAISS saved, no codes / the image codes only
    ("index --hash", "before:mmgen.index.folder:IndexFolder.save_codes:1", False),
    ("index --hash", "before:mmgen.index.folder:IndexFolder.save_codes:2", False),
    # re-embedding: the old vector files removed, their SQL rows still there
    ("index --reembed", "after:mmgen.catalog:_discard_folder:1", False),
    # re-embedding: the old index dropped, the new folder made, its SQL row not committed
    ("index --reembed", "after:mmgen.index.folder:IndexFolder.create:1", True),
    # the caption cache written; the final training state saved, nothing exported; exported, not registered
    ("train encoder", "after:mmgen.train.encoder:caption_embeddings:1", False),
    ("train encoder", "before:mmgen.train.encoder:export_model:1", False),
    ("train encoder", "before:mmgen.train.encoder:register_model:1", False),
    # the hasher's weights in place, its manifest not written; saved, not registered
    ("train hasher", "before:mmgen.hashing.model:write_json_atomic:1", False),
    ("train hasher", "before:mmgen.train.hasher:register_model:1", False),
]


CASES = [pytest.param(name, point, id=f"{name}@{point.split(':', 1)[1]}", marks=() if default else pytest.mark.slow)
         for name, point, default in POINTS]  # fmt: skip


@pytest.mark.parametrize(("name", "point"), CASES)
def test_a_kill_at_an_exact_point_then_a_rerun_loses_and_duplicates_nothing(faults: Any, name: str,
                                                                           point: str) -> None:  # fmt: skip
    record = faults.point_cycle(name, point)
    assert record["exit_at_kill"] == -9, f"the kill point was never reached: {record}"
    assert record["ok"], f"{name} killed at {point} broke a guarantee: {record}"
    assert record["lost"] == 0 and record["duplicates"] == 0
