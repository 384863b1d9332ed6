"""Indexing engines, chosen by name: `local` (this process, the default) and `ray` (a Ray cluster).

Every engine runs the same plan (mmgen.indexer: content hashes decide what is new or changed) and
the same writer (fsynced vector appends, then one SQL commit per batch); they differ only in
where records are decoded and encoded.
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING, Any

from mmgen.errors import UnknownNameError

if TYPE_CHECKING:
    from mmgen.indexer import IndexOptions, IndexReport
    from mmgen.workspace import Workspace

ENGINES = ("local", "ray")


def run_index(
    spec: str,
    ws: Workspace,
    options: IndexOptions,
    data_dir: Any = None,
    *,
    engine: str = "local",
    ray_address: str | None = None,
) -> IndexReport:
    """`mmgen index` on the named engine; `ray_address` (auto, HOST:PORT) picks the cluster for `ray`."""
    from mmgen.indexer import index_sources

    if engine not in ENGINES:
        raise UnknownNameError("engine", engine, ENGINES)
    if engine == "local":
        return index_sources(spec, ws, options, data_dir)
    from mmgen.engines.ray_engine import RayIndexer, import_ray

    import_ray()  # before the store and encoder are opened: a missing extra fails at once
    # The driver only plans and writes: its copy of the encoder (for name, checksum, dimension) stays
    # on the CPU, leaving the GPUs to the workers, which load theirs on `options.device`.
    driver = replace(options, device="cpu")
    return index_sources(spec, ws, driver, data_dir, partial(RayIndexer, address=ray_address, device=options.device))
