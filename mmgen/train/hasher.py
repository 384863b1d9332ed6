"""`train_hasher`: the semantic-hashing autoencoder, trained on the float vectors an index already holds
(or, with `method` lsh / itq / pca, a FAISS baseline fitted on them in one call: `mmgen.hashing.saved`).

Data flow: SQL live rows + vector files -> seeded split by group (held-out groups are the
evaluation queries of `mmgen eval hashing`, recorded in the manifest) -> exact neighbours of every
training vector (FAISS, within and across modalities) -> batches = random anchors + some of their
true neighbours + random others -> loss -> AdamW with cosine decay -> weights + manifest + SQL row.

The loss, per direction (text->image, image->text, and with a smaller weight text->text and
image->image): the softmax over the batch of code inner products (+-1 codes through a
straight-through sign) must match the softmax of the embedding cosines at a low temperature
(KL divergence). That is what ranking by Hamming distance needs: the true nearest neighbours on
top, in order; the low temperature spends the bits on the top of each list, not on its tail.
Beside it: the decoder reconstructs the embedding from the code (cosine loss), every bit is
balanced over the batch (mean 0) and bits are decorrelated (code covariance near identity).
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

import mmgen
from mmgen.artifacts import register_model
from mmgen.train.loop import Budget, LoopSettings, LoopState, run_loop
from mmgen.errors import ConfigError
from mmgen.index.codes import check_bits
from mmgen.hashing.base import AUTOENCODER
from mmgen.hashing.baselines import BASELINES
from mmgen.hashing.data import IndexVectors, heldout_groups, load_index_vectors
from mmgen.hashing.model import (
    MODALITY_IDS,
    NetConfig,
    build_net,
    check_name,
    save_hasher,
)
from mmgen.hashing.saved import DEFAULT_HOLDOUT, DEFAULT_HOLDOUT_SEED, train_baseline

if TYPE_CHECKING:
    import torch

    from mmgen.hashing.base import BaseHasher
    from mmgen.workspace import Workspace

MODEL_KIND = "hasher"
DEFAULT_STEPS = 1500
METHODS = (AUTOENCODER, *BASELINES)


@dataclass
class HasherConfig:
    """Settings of one hasher training run (the CLI maps its options onto these fields)."""

    bits: int = 64
    index: str | None = None  # None: the workspace's default (or only) index
    name: str | None = None  # None: "{index}-{bits}b" (autoencoder), "{index}-{method}-{bits}b" (baselines)
    method: str = AUTOENCODER  # or a FAISS baseline fitted in one call: lsh, itq, pca (the settings below: unused)
    hidden: int = 512  # hidden width of encoder and decoder MLPs (0: linear)
    steps: int | None = None  # None: DEFAULT_STEPS, or what `minutes` plans (mmgen.train.loop)
    minutes: float | None = None  # the loop's wall-clock budget (mmgen.train.loop)
    anchors: int = 256  # random vectors per modality per batch (their neighbours join the batch)
    neighbours: int = 16  # exact neighbours per vector a batch samples from
    lr: float = 1e-3
    weight_decay: float = 1e-4
    temperature: float = 0.03  # of the target softmax over embedding cosines (chosen on a validation split)
    same_modality_weight: float = 0.3
    reconstruction_weight: float = 0.1
    balance_weight: float = 0.1
    decorrelation_weight: float = 0.1
    holdout_fraction: float = DEFAULT_HOLDOUT  # of the groups, kept out as evaluation queries
    holdout_seed: int = DEFAULT_HOLDOUT_SEED
    seed: int = 0
    device: str = "auto"
    progress: bool = True

    def check(self) -> None:
        """Raise ConfigError for invalid settings."""
        check_bits(self.bits)
        if self.method not in METHODS:
            raise ConfigError(f"method must be one of {', '.join(METHODS)}, not {self.method!r}")
        if self.method != AUTOENCODER and (self.steps is not None or self.minutes is not None):
            raise ConfigError(f"{self.method} is fitted in one call, with no training loop: --steps and --minutes "
                              "apply to --method autoencoder")  # fmt: skip
        if self.name is not None:
            check_name(self.name)
        for key in ("anchors", "neighbours", "lr", "temperature"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"{key} must be positive, not {getattr(self, key)!r}")
        Budget(steps=self.steps, minutes=self.minutes).check()
        if self.hidden < 0:
            raise ConfigError(f"hidden must be >= 0, not {self.hidden}")
        for key in ("same_modality_weight", "reconstruction_weight", "balance_weight", "decorrelation_weight", "weight_decay"):
            if getattr(self, key) < 0:
                raise ConfigError(f"{key} must be >= 0, not {getattr(self, key)!r}")
        if not 0 <= self.holdout_fraction < 1:
            raise ConfigError(f"holdout_fraction must be in [0, 1), not {self.holdout_fraction}")


@dataclass
class HasherResult:
    """Outcome of `train_hasher`."""

    hasher: BaseHasher
    path: Path
    model_id: int
    steps: int  # 0 for a baseline (one FAISS train call)
    train_seconds: float
    final_loss: float | None  # None for a baseline
    stopped_by_time: bool = False
    manifest: dict[str, Any] = field(default_factory=dict)


def train_hasher(ws: Workspace, cfg: HasherConfig) -> HasherResult:
    """Train a hasher on an index's vectors (held-out groups excluded), save it, register it in SQL.

    `cfg.method` lsh / itq / pca fits that FAISS baseline instead (both modalities' training vectors
    concatenated, as `mmgen eval hashing` does), saved and registered the same way.
    """
    cfg.check()
    from mmgen.catalog import pick_index_name
    from mmgen.store.db import open_store

    store = open_store(ws.db_url)
    try:
        index = pick_index_name(store, cfg.index)
        data = load_index_vectors(ws, store, index)
    finally:
        store.close()
    if cfg.method != AUTOENCODER:
        baseline, baseline_id = train_baseline(
            ws, data, cfg.method, cfg.bits, cfg.name, holdout_fraction=cfg.holdout_fraction,
            holdout_seed=cfg.holdout_seed, seed=cfg.seed, config=dataclasses.asdict(cfg),
        )  # fmt: skip
        m = baseline.manifest
        return HasherResult(baseline, ws.models_dir / baseline.name, baseline_id, 0, m["train_seconds"], None, False, m)
    name = cfg.name or f"{index}-{cfg.bits}b"
    check_name(name)
    held = heldout_groups(data.groups(), cfg.holdout_fraction, cfg.holdout_seed)
    train, _ = data.split(set(held))
    net, run = fit(train, cfg)
    manifest: dict[str, Any] = {
        "name": name,
        "kind": MODEL_KIND,
        "method": AUTOENCODER,
        "code_version": mmgen.__version__,
        "index": index,
        "encoder": data.encoder,
        "encoder_checksum": data.encoder_checksum,
        **NetConfig(data.dim, cfg.bits, cfg.hidden).to_json(),
        "holdout": {"fraction": cfg.holdout_fraction, "seed": cfg.holdout_seed, "groups": held},
        "training_vectors": {m: len(v) for m, v in train.modalities.items()},
        "config": dataclasses.asdict(cfg),
        "steps": run["steps"],
        "stopped_by_time": run["stopped_by_time"],
        "train_seconds": round(run["seconds"], 2),
        "final_loss": run["final_loss"],
        "loss_curve": run["curve"],
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    folder = ws.models_dir / name
    from mmgen.versions import set_aside, settle

    prior = set_aside(ws, MODEL_KIND, name)
    hasher = save_hasher(net.cpu(), manifest, folder)
    params = {k: v for k, v in hasher.manifest.items() if k != "loss_curve"}
    model_id = register_model(ws, MODEL_KIND, hasher.name, hasher.path, hasher.checksum, params)
    settle(ws, MODEL_KIND, name, prior, hasher.checksum)
    return HasherResult(
        hasher, folder, model_id, run["steps"], run["seconds"], run["final_loss"], run["stopped_by_time"], hasher.manifest
    )


def fit(train: IndexVectors, cfg: HasherConfig) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The training loop on in-memory vectors; returns the network (on CPU) and run statistics."""
    import torch

    from mmgen.devices import torch_device
    from mmgen.encoders.base import configure_torch_threads
    from mmgen.train.state import seed_everything

    mods = [m for m in MODALITY_IDS if m in train.modalities and len(train.modalities[m]) > 1]
    if not mods:
        raise ConfigError(f"index {train.index!r} has too few training vectors for a hasher (after the hold-out)")
    device = torch_device(cfg.device)
    configure_torch_threads()
    seed_everything(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    vectors = {
        m: torch.from_numpy(np.ascontiguousarray(train.modalities[m].vectors, dtype=np.float32)).to(device) for m in mods
    }
    directions = _directions(mods, cfg.same_modality_weight)
    neighbours = {(q, d): _neighbours(train.modalities[q].vectors, train.modalities[d].vectors, cfg.neighbours, q == d)
                  for q, d, _ in directions}  # fmt: skip

    net = build_net(NetConfig(train.dim, cfg.bits, cfg.hidden)).to(device)
    with torch.no_grad():
        for m in mods:  # start centred: the learned centres move from the modality means
            net.centre[MODALITY_IDS[m]] = vectors[m].mean(dim=0)
    log_scale = torch.nn.Parameter(torch.tensor(math.log(10.0), device=device))
    optimizer = torch.optim.AdamW(
        [{"params": net.parameters(), "weight_decay": cfg.weight_decay}, {"params": [log_scale], "weight_decay": 0.0}],
        lr=cfg.lr,
    )
    sizes = {m: len(train.modalities[m]) for m in mods}

    def step(n: int, factor: float) -> tuple[float, int]:
        for group in optimizer.param_groups:
            group["lr"] = cfg.lr * factor
        pools = _batch(rng, sizes, neighbours, cfg.anchors)
        batch = {m: vectors[m][torch.from_numpy(pools[m]).to(device)] for m in mods}
        loss = hashing_loss(net, batch, directions, log_scale, cfg)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return float(loss.detach()), sum(len(p) for p in pools.values())

    state = LoopState()
    settings = LoopSettings(
        label=f"train hasher {cfg.bits}b",
        budget=Budget(steps=cfg.steps, minutes=cfg.minutes, default_steps=DEFAULT_STEPS),
        warmup=lambda total: 0,  # cosine from the first step
        progress=cfg.progress,
        postfix_digits=4,
    )
    net.train()
    status = run_loop(step, state, settings)
    if status == "interrupted":
        raise KeyboardInterrupt
    net.eval()
    run = {
        "steps": state.step,
        "seconds": state.elapsed_s,
        "final_loss": round(float(state.loss_ema or 0.0), 5),
        "stopped_by_time": status == "time-capped",
        "curve": state.curve,
    }
    return net.cpu(), run


def hashing_loss(
    net: torch.nn.Module,
    batch: dict[str, torch.Tensor],
    directions: list[tuple[str, str, float]],
    log_scale: torch.Tensor,
    cfg: HasherConfig,
) -> torch.Tensor:
    """Ranking distillation (per direction) + reconstruction + bit balance + decorrelation, on one batch."""
    import torch
    import torch.nn.functional as F

    soft: dict[str, torch.Tensor] = {}
    codes: dict[str, torch.Tensor] = {}
    for m, x in batch.items():
        h = torch.tanh(net(x, MODALITY_IDS[m]))
        soft[m] = h
        codes[m] = h + (torch.sign(h) - h).detach()  # straight-through: forward +-1, backward tanh
    bits = next(iter(codes.values())).shape[1]
    loss = torch.zeros((), device=log_scale.device)
    for q, d, weight in directions:
        cosines = batch[q] @ batch[d].T / cfg.temperature
        logits = log_scale.exp() * (codes[q] @ codes[d].T) / bits
        if q == d:  # a vector is trivially its own nearest neighbour: leave the diagonal out
            eye = torch.eye(len(logits), dtype=torch.bool, device=logits.device)
            cosines, logits = cosines.masked_fill(eye, -1e9), logits.masked_fill(eye, -1e9)
        target = torch.softmax(cosines, dim=1)
        loss = loss + weight * F.kl_div(torch.log_softmax(logits, dim=1), target, reduction="batchmean")
    # Balance and decorrelation per modality: a bit that is constant over the image database
    # cannot rank images for a text query, however it behaves over both modalities together.
    eye = torch.eye(bits, device=log_scale.device)
    for h in soft.values():
        if cfg.balance_weight:
            loss = loss + cfg.balance_weight * h.mean(dim=0).pow(2).mean() / len(soft)
        if cfg.decorrelation_weight:
            loss = loss + cfg.decorrelation_weight * (h.T @ h / len(h) - eye).pow(2).mean() / len(soft)
    if cfg.reconstruction_weight:
        rec = sum((1 - F.cosine_similarity(net.decoder(codes[m]), batch[m], dim=1)).mean() for m in batch)
        loss = loss + cfg.reconstruction_weight * rec / len(batch)
    return loss


def _directions(mods: list[str], same_weight: float) -> list[tuple[str, str, float]]:
    """(query modality, database modality, weight): cross-modal at weight 1, same-modality at `same_weight`."""
    if len(mods) == 1:
        return [(mods[0], mods[0], 1.0)]
    out = [("text", "image", 1.0), ("image", "text", 1.0)]
    if same_weight:
        out += [("text", "text", same_weight), ("image", "image", same_weight)]
    return out


def _neighbours(queries: np.ndarray, database: np.ndarray, k: int, same: bool) -> np.ndarray:
    """Exact top-k database positions per query; within one modality a vector is not its own neighbour."""
    from mmgen.index.knn import exact_knn

    return exact_knn(queries, database, min(k, len(database) - int(same)), exclude_self=same)[1]


def _batch(
    rng: np.random.Generator, sizes: dict[str, int], neighbours: dict[tuple[str, str], np.ndarray], anchors: int
) -> dict[str, np.ndarray]:
    """Per modality, the positions of one batch: anchors, one true neighbour of each anchor per direction, random others."""
    picked = {m: rng.choice(n, min(anchors, n), replace=False) for m, n in sizes.items()}
    pools = {m: [picked[m], rng.choice(n, min(anchors, n))] for m, n in sizes.items()}
    for (q, d), nn in neighbours.items():
        rows = nn[picked[q]]
        pools[d].append(rows[np.arange(len(rows)), rng.integers(0, rows.shape[1], len(rows))])
    return {m: np.unique(np.concatenate(parts)) for m, parts in pools.items()}
