"""`mmgen index --engine ray`: decode and encode on a Ray cluster; plan, append and commit here.

The driver runs the local indexer's plan (content hashes: what is new or changed) and stays the
only writer: it appends the vectors (fsynced, append-only) and commits items and index rows one
batch per transaction, exactly as the local engine does, so a run killed at any point resumes
the same way. Only decoding and encoding move out, into a Ray Data actor pool (`EncodeWorker`:
one encoder loaded per actor, one GPU per actor when the cluster has GPUs, else one CPU).

Batches are committed in the order they arrive, not in plan order. Nothing depends on that order:
FAISS row ids map to items through SQL, never through their place in a vector file, and each
batch's commit is atomic whatever batch comes before it. Waiting for plan order would only stall
the writer behind the slowest worker. Ray restarts a worker that dies (Ray Data's actors default
to unlimited restarts and task retries) and re-runs the batch it held; a batch only counts once
its commit is done, and the driver skips any plan position it has committed already, so a retried
batch can neither be lost nor written twice.

Workers read the images at the paths the driver planned, so on a cluster of several machines
the corpus (and a checkpoint-folder encoder) must be at the same paths on every node, and each
node needs mmgen installed.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mmgen.encoders.batch import Embedded, embed_batch
from mmgen.errors import ConfigError, MissingDependencyError, MmgenError, ModelLoadError
from mmgen.indexer import IndexOptions, Indexer, IndexReport, _batches, _progress, _Todo

if TYPE_CHECKING:
    from mmgen.data.sources import Source
    from mmgen.encoders.base import Encoder
    from mmgen.store.db import Store
    from mmgen.workspace import Workspace

RAY_HINT = "the ray engine needs Ray: pip install 'mmgen[ray]' (or pip install 'ray[data]')"
DECODE_THREADS = 4  # image decoding threads inside each worker (PIL releases the GIL)
MODALITIES = ("image", "text")
PLAN_COLUMNS = ("pos", "image", "text", "embed")  # a plan batch as the workers receive it


class RayEngineError(MmgenError):
    """A Ray cluster that cannot be reached, or a worker that failed for good."""


def import_ray() -> Any:
    """The `ray` module with Ray Data, or MissingDependencyError with the install hint."""
    try:
        import ray
        import ray.data  # noqa: F401  (Ray Data is the `data` extra of ray)
    except ImportError as exc:
        raise MissingDependencyError(RAY_HINT) from exc
    return ray


class EncodeWorker:
    """A Ray Data actor: loads the encoder once, then decodes and encodes batches of plan rows."""

    def __init__(
        self, encoder: str, checksum: str, device: str, models_dir: str | None, image_side: int, untrusted: bool
    ) -> None:
        from mmgen.data.images import load_image
        from mmgen.encoders import load_encoder

        self.encoder = load_encoder(encoder, device=device, models_dir=Path(models_dir) if models_dir else None)
        if self.encoder.checksum() != checksum:
            raise ModelLoadError(f"encoder {encoder} on this worker has other weights than the driver's")
        self._load = partial(load_image, max_side=image_side, untrusted=untrusted)
        self._pool = ThreadPoolExecutor(max_workers=DECODE_THREADS, thread_name_prefix="mmgen-decode")
        self._text_cache: dict[str, np.ndarray] = {}

    def __call__(self, rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Plan batches (one per row) -> one row per record: pos, embed (what succeeded), failure, vectors, times."""
        parts = [self._batch(*(rows[c][i] for c in PLAN_COLUMNS)) for i in range(len(rows["pos"]))]
        return {k: np.concatenate([part[k] for part in parts]) for k in parts[0]}

    def _batch(self, pos: Sequence[int], images: Sequence[str], texts: Sequence[str], mods: Sequence[str]) -> dict:
        embed = [_split(m) for m in mods]
        n, dim = len(embed), self.encoder.dim
        loaders = [
            self._pool.submit(self._load, str(path)).result if "image" in e else None for path, e in zip(images, embed)
        ]
        wanted = [str(t) if "text" in e else None for t, e in zip(texts, embed)]
        out = embed_batch(self.encoder, embed, wanted, loaders, self._text_cache)
        failure = np.full(n, "", dtype=object)
        for j, reason in out.failures:  # only an image can fail, so one reason per record
            failure[j] = reason
        result: dict[str, np.ndarray] = {
            "pos": np.asarray(pos, dtype=np.int64),
            "embed": np.array([",".join(e) for e in embed], dtype=object),
            "failure": failure,
        }
        for modality in MODALITIES:
            vectors = np.zeros((n, dim), dtype=np.float32)
            if modality in out.rows:
                owners, found = out.rows[modality]
                vectors[owners] = found
            result[f"{modality}_vec"] = vectors
        for stage in ("decode", "encode"):  # a batch's time, spread over its rows so the driver can sum any block
            result[f"{stage}_s"] = np.full(n, out.timings.get(stage, 0.0) / max(n, 1))
        return result


def _split(mods: Any) -> list[str]:
    return [m for m in str(mods).split(",") if m]


class RayIndexer(Indexer):
    """The indexer with decoding and encoding on Ray actors (`--engine ray`)."""

    worker = EncodeWorker  # the actor class (tests swap in one that dies once)

    def __init__(
        self,
        ws: Workspace,
        store: Store,
        encoder: Encoder,
        options: IndexOptions,
        *,
        address: str | None = None,
        device: str | None = None,
    ) -> None:
        self._ray = import_ray()
        super().__init__(ws, store, encoder, options)
        self.address = address
        self.device = device or options.device
        self._started = False  # whether this run started Ray (and so shuts it down)

    def run(self, sources: Sequence[Source]) -> IndexReport:
        """Index every source; the cluster is joined (or a local one started) only once there is work."""
        try:
            return super().run(sources)
        finally:
            if self._started:
                self._ray.shutdown()
                self._started = False

    def _connect(self) -> None:
        ray = self._ray
        if ray.is_initialized():
            return
        try:
            ray.init(address=self.address, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = self.address or "RAY_ADDRESS, else local"
            raise RayEngineError(f"cannot start or join a Ray cluster ({where}): {exc}") from exc
        self._started = True
        # Ray Data logs every execution at INFO on stderr; the report and the progress bar say it all.
        logging.getLogger("ray.data").setLevel(logging.WARNING)

    def _embed(self, corpus_id: int, todo: list[_Todo], source: Source) -> None:
        # Records whose content is unchanged but whose item fields changed need no worker.
        for batch in _batches([t for t in todo if not t.embed], self.opts.batch_size):
            self._write(corpus_id, batch, [[] for _ in batch], Embedded())
        todo = [t for t in todo if t.embed]
        if not todo:
            return
        self._connect()
        bar = _progress(len(todo), f"{source.corpus} (ray)", self.opts.progress)
        done: set[int] = set()
        arrived = _ray_errors(self._ray, iter(self._dataset(todo).iter_batches(batch_size=None, batch_format="numpy")))
        try:
            for block in arrived:
                for start in range(0, len(block["pos"]), self.opts.batch_size):
                    bar(self._write_arrived(corpus_id, todo, block, slice(start, start + self.opts.batch_size), done))
        finally:
            arrived.close()  # stops the dataset's execution (and its actors) on Ctrl-C or an error
            bar(0, close=True)

    def _dataset(self, todo: list[_Todo]) -> Any:
        ray = self._ray
        # One row per plan batch, so the workers encode the very batches the local engine would.
        size = self.opts.batch_size
        rows = [
            {
                "pos": list(range(start, start + len(batch))),
                "image": [t.record.image or "" for t in batch],
                "text": [t.record.text or "" for t in batch],
                "embed": [",".join(t.embed) for t in batch],
            }
            for start, batch in zip(range(0, len(todo), size), _batches(todo, size))
        ]
        ds = ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows), 10_000)))
        workers, resources = self._actors()
        ds = ds.map_batches(
            self.worker,
            batch_size=1,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=min(workers, len(rows))),
            fn_constructor_kwargs={
                "encoder": self.encoder.name,
                "checksum": self.encoder.checksum(),
                "device": "cuda" if resources.get("num_gpus") else "cpu",
                "models_dir": str(self.ws.models_dir),
                "image_side": self.opts.image_side,
                "untrusted": self.opts.untrusted,
            },
            **resources,
        )
        ds.context.enable_progress_bars = False  # the driver's own bar counts committed items
        return ds

    def _actors(self) -> tuple[int, dict[str, float]]:
        """Pool size and per-actor resources: one GPU each when the cluster has GPUs (and --device allows)."""
        gpus = int(self._ray.cluster_resources().get("GPU", 0)) if self.device != "cpu" else 0
        if gpus:
            return min(self.opts.workers, gpus), {"num_gpus": 1}
        if self.device != "auto":
            raise ConfigError(f"device {self.device!r} requested but the Ray cluster has no GPU")
        return self.opts.workers, {"num_cpus": 1}

    def _write_arrived(
        self, corpus_id: int, todo: list[_Todo], block: dict[str, np.ndarray], part: slice, done: set[int]
    ) -> int:
        """Write and commit one arrived batch (the rows of `part`); returns how many records were new."""
        keep = [k for k in range(len(block["pos"]))[part] if int(block["pos"][k]) not in done]
        batch = [todo[int(block["pos"][k])] for k in keep]
        embed = [_split(block["embed"][k]) for k in keep]
        vectors = Embedded(
            failures=[(j, str(block["failure"][k])) for j, k in enumerate(keep) if block["failure"][k]],
            timings={stage: float(block[f"{stage}_s"][keep].sum()) for stage in ("decode", "encode")},
        )
        for modality in MODALITIES:
            owners = [j for j, mods in enumerate(embed) if modality in mods]
            if owners:
                vectors.rows[modality] = (owners, block[f"{modality}_vec"][[keep[j] for j in owners]])
        if batch:
            self._write(corpus_id, batch, embed, vectors)
            done.update(int(block["pos"][k]) for k in keep)
        return len(batch)


def _ray_errors(ray: Any, blocks: Iterator[dict[str, np.ndarray]]) -> Iterator[dict[str, np.ndarray]]:
    """Yield the blocks; a failure on the cluster becomes RayEngineError naming the worker's own error."""
    try:
        yield from blocks
    except ray.exceptions.RayError as exc:
        # The worker's exception reaches the driver as text inside Ray's: its first "Type: message" line.
        text = str(exc)
        found = re.search(r"^([\w.]+(?:Error|Exception): .*)$", text, re.MULTILINE)
        reason = found.group(1) if found else text.strip().splitlines()[-1]
        raise RayEngineError(f"a Ray worker failed: {reason}") from exc
