"""`train_generator`: a conditional diffusion model on a workspace's indexed images (RDM / KNN-Diffusion style).

Data flow: index -> image items with their caption vectors (SQL rows + vector files) -> decoded,
content-cropped uint8 pixel cache (`mmgen.train.data.decode_pixels`, shared with the encoder)
-> for each image, its k nearest indexed images by its caption's text embedding, its own group
(other styles of the same concept) excluded -> seeded batches -> v-prediction loss with
condition dropout -> AdamW + EMA -> resumable state -> `generator.safetensors` + manifest + SQL row.

`retrieval=False` trains the baseline on the same data, budget and network, text only.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

import mmgen
from mmgen.artifacts import register_model
from mmgen.train.loop import Budget, LoopSettings, LoopState, Schedule, resume_state, run_loop
from mmgen.errors import ConfigError, DataError, UnknownNameError
from mmgen.generate.image_model import DEFAULT_BASELINE, DEFAULT_GENERATOR

if TYPE_CHECKING:
    import torch

    from mmgen.generate.image_neighbours import IndexedImages
    from mmgen.generate.unet import UNetConfig
    from mmgen.workspace import Workspace

PRESETS_FILE = Path(__file__).resolve().parents[1] / "generate" / "unet_presets.json"
STATE_NAME = "train-state.pt"
_NAME_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-"


def presets() -> dict[str, dict[str, Any]]:
    """The shipped training presets (network shape, batch size, steps, learning rate) by name."""
    return dict(json.loads(PRESETS_FILE.read_text(encoding="utf-8")))


@dataclass
class GeneratorConfig:
    """Settings of one generator training run; None fields come from the preset."""

    name: str | None = None  # default: "generator", or "generator-noretrieval" without retrieval
    index: str | None = None
    retrieval: bool = True
    neighbours: int = 4
    preset: str = "auto"  # auto: "gpu" on CUDA, else "cpu"
    steps: int | None = None
    minutes: float | None = None  # wall-clock cap of this invocation's training loop
    batch_size: int | None = None
    lr: float | None = None
    prediction: str | None = None  # "v" or "x0" (see mmgen.generate.diffusion)
    warmup_steps: int | None = None  # default: a tenth of the steps, at most 200
    ema_decay: float = 0.999
    cond_drop: float = 0.1  # chance that a sample's conditions are all replaced by null vectors
    image_size: int = 64
    crop: str = "content"
    seed: int = 0
    unet: dict[str, Any] | None = None  # overrides of the preset's network shape (UNetConfig fields)
    workers: int = 0
    device: str = "auto"
    checkpoint_minutes: float = 2.0
    resume: str | bool = "auto"  # auto | require | never (mmgen.train.loop.resume_state); True: require
    progress: bool = True

    @property
    def model_name(self) -> str:
        """The folder name under `models/`."""
        return self.name or (DEFAULT_GENERATOR if self.retrieval else DEFAULT_BASELINE)

    def check(self) -> None:
        """Raise ConfigError for invalid settings."""
        name = self.model_name
        if not name or len(name) > 128 or name[0] in "._-" or any(c not in _NAME_CHARS for c in name):
            raise ConfigError(f"generator name {name!r} must be letters, digits, '.', '_' or '-' (a folder name)")
        if self.retrieval and not 1 <= self.neighbours <= 64:
            raise ConfigError(f"neighbours must be in 1..64, not {self.neighbours}")
        for key in ("steps", "minutes", "batch_size", "lr", "checkpoint_minutes"):
            value = getattr(self, key)
            if value is not None and (value <= 0 or (key in ("steps", "batch_size") and int(value) != value)):
                raise ConfigError(f"{key} must be a positive {'integer' if key in ('steps', 'batch_size') else 'number'}")
        if not 0 <= self.cond_drop < 1 or not 0 <= self.ema_decay < 1 or (self.warmup_steps or 0) < 0:
            raise ConfigError("cond_drop and ema_decay must be in [0, 1), warmup_steps >= 0")
        if self.crop not in ("content", "none"):
            raise ConfigError(f"crop must be content or none, not {self.crop!r}")
        if self.prediction is not None:
            from mmgen.generate.diffusion import check_prediction

            check_prediction(self.prediction)
        if self.preset != "auto" and self.preset not in presets():
            raise UnknownNameError("generator preset", self.preset, ["auto", *presets()])


@dataclass
class GeneratorStep:
    """What `on_step` callbacks see after each optimisation step."""

    step: int
    total_steps: int
    loss: float
    elapsed_s: float


@dataclass
class GeneratorResult:
    """Outcome of `train_generator`."""

    name: str
    status: str  # "completed", "time-capped" (exported, can be resumed to the full budget) or "interrupted"
    path: Path | None
    steps: int
    total_steps: int
    train_seconds: float
    final_loss: float | None
    resumed_from: int
    images: int
    skipped: dict[str, int] = field(default_factory=dict)
    model_id: int | None = None
    manifest: dict[str, Any] = field(default_factory=dict)


def train_generator(
    ws: Workspace, cfg: GeneratorConfig, on_step: Callable[[GeneratorStep], None] | None = None
) -> GeneratorResult:
    """Train (or resume) a generator on the images of a workspace index; export and register it when done.

    Ctrl-C (KeyboardInterrupt, also from `on_step`) saves the state and returns status "interrupted".
    """
    cfg.check()
    import torch

    from mmgen.devices import cpu_threads, torch_device
    from mmgen.encoders.base import configure_torch_threads
    from mmgen.generate.diffusion import diffusion_loss, from_uint8
    from mmgen.generate.image_neighbours import load_indexed_images
    from mmgen.generate.unet import ConditionalUNet, Conditions
    from mmgen.store.db import open_store
    from mmgen.train.data import decode_pixels
    from mmgen.train.state import rng_state, save_state, seed_everything, set_rng_state

    device = torch_device(cfg.device)
    configure_torch_threads()
    preset_name, preset = _preset(cfg, device)
    budget = Budget(steps=cfg.steps, minutes=cfg.minutes, default_steps=int(preset["steps"]))
    batch_size = int(cfg.batch_size or preset["batch_size"])
    lr = float(cfg.lr or preset["lr"])
    prediction = cfg.prediction or str(preset.get("prediction", "v"))
    out_dir = ws.models_dir / cfg.model_name
    state_path = out_dir / STATE_NAME

    # ---- data: indexed images with caption vectors -> pixels, neighbours ---------------------
    with open_store(ws.db_url) as store:
        indexed = load_indexed_images(ws, store, cfg.index, with_text=True)
    skipped = {"no_caption": int((~indexed.has_text).sum()), "unreadable": 0}
    usable = np.flatnonzero(indexed.has_text)
    if len(usable) == 0:
        raise DataError(f"index {indexed.index!r} has no image with an indexed caption to train on")
    unet_cfg = _unet_config(cfg, preset, indexed.dim)
    pixels, errors = decode_pixels(
        [indexed.uris[i] for i in usable], cfg.image_size, cfg.crop, ws.root / "cache" / "train",
        cfg.workers or cpu_threads(), cfg.progress,
    )  # fmt: skip
    ok = np.asarray([e is None for e in errors], dtype=bool)
    skipped["unreadable"] = int((~ok).sum())
    usable, pixels = usable[ok], pixels[ok]
    if len(usable) < 2:
        raise DataError(f"index {indexed.index!r}: fewer than 2 decodable images with captions")
    text_vectors = indexed.text_vectors[usable] if indexed.text_vectors is not None else None
    if text_vectors is None:  # unreachable while has_text.any(); keeps the type checker honest
        raise DataError(f"index {indexed.index!r} has no caption vectors")
    neighbour_rows = training_neighbours(indexed, usable, cfg.neighbours) if cfg.retrieval else None
    fingerprint = _fingerprint(cfg, unet_cfg, batch_size, lr, indexed, usable, prediction)

    # ---- model, optimiser, resume ------------------------------------------------------------
    seed_everything(cfg.seed)
    net = ConditionalUNet(unet_cfg).to(device)
    ema = ConditionalUNet(unet_cfg).to(device)
    ema.load_state_dict(net.state_dict())
    ema.requires_grad_(False)
    optimizer = torch.optim.AdamW(net.parameters(), lr=lr, betas=(0.9, 0.99), weight_decay=0.0)
    run = LoopState()
    state = resume_state(state_path, fingerprint, _resume_mode(cfg.resume))
    if state is not None:
        net.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        set_rng_state(state["rng"])
        run = LoopState.from_json(state["run"])
        planned = budget.planned_steps()
        if planned is not None:  # resuming with another --steps: the warm-up stays, the length follows --steps
            run.total_steps = planned
    resumed_from = run.step

    def snapshot() -> None:
        save_state(
            state_path,
            {
                "fingerprint": fingerprint,
                "config": dataclasses.asdict(cfg),
                "run": dataclasses.asdict(run),
                "model": {k: v.detach().cpu() for k, v in net.state_dict().items()},
                "ema": {k: v.detach().cpu() for k, v in ema.state_dict().items()},
                "optimizer": optimizer.state_dict(),
                "rng": rng_state(),
            },
        )

    pixel_store = torch.from_numpy(pixels)
    text_store = torch.from_numpy(np.ascontiguousarray(text_vectors, dtype=np.float32))
    image_store = torch.from_numpy(np.ascontiguousarray(indexed.image_vectors, dtype=np.float32))
    if device != "cpu":  # the whole set fits on any GPU: no per-step host transfers
        pixel_store, text_store, image_store = pixel_store.to(device), text_store.to(device), image_store.to(device)
    rows_store = torch.from_numpy(neighbour_rows).to(device) if neighbour_rows is not None else None
    amp = torch.bfloat16 if device.startswith("cuda") and torch.cuda.is_bf16_supported() else None

    # ---- loop --------------------------------------------------------------------------------
    n = len(usable)
    steps_per_epoch = max(1, n // min(batch_size, n))

    def step(i: int, factor: float) -> tuple[float, int]:
        epoch, position = divmod(i, steps_per_epoch)
        order = np.random.default_rng([cfg.seed, epoch]).permutation(n)
        batch = torch.from_numpy(order[position * min(batch_size, n) : (position + 1) * min(batch_size, n)])
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + i)
        x0 = from_uint8(pixel_store[batch.to(pixel_store.device)].to(device))
        keep = (torch.rand(len(batch), generator=gen) >= cfg.cond_drop).to(device)
        cond = Conditions(
            text=text_store[batch.to(text_store.device)].to(device),
            neighbours=image_store[rows_store[batch.to(device)]].to(device) if rows_store is not None else None,
            keep_text=keep,
            keep_neighbours=keep,
        )
        for group in optimizer.param_groups:
            group["lr"] = lr * factor
        with torch.autocast(device.split(":")[0], dtype=amp, enabled=amp is not None):
            loss = diffusion_loss(lambda z, t, c=cond: net(z, t, c), x0, gen, prediction)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        optimizer.step()
        _ema_update(ema, net, min(cfg.ema_decay, (1 + i) / (10 + i)))
        return float(loss.detach()), len(batch)

    def report(state: LoopState, factor: float) -> None:
        if on_step is not None:
            on_step(GeneratorStep(state.step, int(state.total_steps or 0), float(state.last_loss or 0.0), state.elapsed_s))

    net.train()
    settings = LoopSettings(
        label=f"train {cfg.model_name}",
        budget=budget,
        # fixed by the first run: resuming with another --steps keeps the warm-up
        warmup=lambda total: max(1, cfg.warmup_steps if cfg.warmup_steps is not None else min(200, total // 10)),
        schedule=Schedule("constant"),
        ema_decay=0.98,
        progress=cfg.progress,
        checkpoint_minutes=cfg.checkpoint_minutes,
        snapshot=snapshot,
        on_step=report,
        postfix_digits=4,
    )
    status = run_loop(step, run, settings)
    total_steps = int(run.total_steps or run.step)
    result = GeneratorResult(
        name=cfg.model_name,
        status=status,
        path=None,
        steps=run.step,
        total_steps=total_steps,
        train_seconds=run.elapsed_s,
        final_loss=run.loss_ema,
        resumed_from=resumed_from,
        images=len(usable),
        skipped=skipped,
    )
    if status == "interrupted":
        return result

    from mmgen.generate.image_model import save_generator

    manifest = {
        "name": cfg.model_name,
        "family": "ddpm",
        "encoder": indexed.encoder,
        "encoder_checksum": indexed.encoder_checksum,
        "index": indexed.index,
        "dim": indexed.dim,
        "image_size": cfg.image_size,
        "crop": cfg.crop,
        "retrieval": cfg.retrieval,
        "neighbours": cfg.neighbours if cfg.retrieval else 0,
        "diffusion": {"schedule": "cosine-logsnr", "prediction": prediction, "loss": "truncated-min-snr-1-5", "sampler": "ddim"},
        "preset": preset_name,
        "config": dataclasses.asdict(cfg),
        "batch_size": batch_size,
        "lr": lr,
        "steps": run.step,
        "planned_steps": total_steps,
        "stopped_by": "minutes" if status == "time-capped" else "steps",
        "samples_seen": run.samples_seen,
        "train_seconds": round(run.elapsed_s, 1),
        "device": device,
        "final_loss": run.loss_ema,
        "loss_curve": run.curve,
        "data": {"images": len(usable), "skipped": skipped},
        "code_version": mmgen.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    ema.eval()
    from mmgen.versions import set_aside, settle

    prior = set_aside(ws, "generator", cfg.model_name)  # the version this one replaces stays loadable as NAME@N
    manifest = save_generator(ema.cpu(), out_dir, manifest)
    params = {k: v for k, v in manifest.items() if k != "loss_curve"}
    model_id = register_model(ws, "generator", cfg.model_name, out_dir, str(manifest["checksum"]), params)
    settle(ws, "generator", cfg.model_name, prior, str(manifest["checksum"]))
    return dataclasses.replace(result, path=out_dir, model_id=model_id, manifest=manifest)


def training_neighbours(indexed: IndexedImages, rows: np.ndarray, k: int) -> np.ndarray:
    """For each training row, the k indexed images nearest to its caption's embedding, its own group excluded.

    Text -> image, as at generation time; leaving out the other styles of the same concept makes
    the model learn to draw from related pictures instead of copying its target.
    """
    from mmgen.index.knn import exact_knn

    if indexed.text_vectors is None:
        raise DataError(f"index {indexed.index!r} has no caption vectors to retrieve training neighbours with")
    codes = indexed.group_codes()
    _, found = exact_knn(
        indexed.text_vectors[rows], indexed.image_vectors, k, query_groups=codes[rows], database_groups=codes
    )
    return found


def _preset(cfg: GeneratorConfig, device: str) -> tuple[str, dict[str, Any]]:
    name = cfg.preset if cfg.preset != "auto" else ("gpu" if device.startswith("cuda") else "cpu")
    return name, presets()[name]


def _unet_config(cfg: GeneratorConfig, preset: dict[str, Any], dim: int) -> UNetConfig:
    from mmgen.generate.unet import UNetConfig

    shape = {**preset["unet"], **(cfg.unet or {})}
    shape.update(image_size=cfg.image_size, cond_dim=dim, neighbours=cfg.neighbours if cfg.retrieval else 0)
    return UNetConfig.from_json(shape)


def _ema_update(ema: torch.nn.Module, net: torch.nn.Module, decay: float) -> None:
    import torch

    with torch.no_grad():
        for e, p in zip(ema.parameters(), net.parameters()):
            e.lerp_(p.detach(), 1.0 - decay)
        for e, b in zip(ema.buffers(), net.buffers()):
            e.copy_(b)


def _resume_mode(resume: str | bool) -> str:
    """`GeneratorConfig.resume` as a mode of `resume_state` (True: require, False: never)."""
    if isinstance(resume, bool):
        return "require" if resume else "never"
    return resume


def _fingerprint(
    cfg: GeneratorConfig,
    unet_cfg: UNetConfig,
    batch_size: int,
    lr: float,
    indexed: IndexedImages,
    usable: np.ndarray,
    prediction: str,
) -> str:
    """What a saved state must share to be resumed: settings that shape the run, and the data itself."""
    skip = {"steps", "minutes", "workers", "device", "checkpoint_minutes", "resume", "progress", "name"}
    key = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in skip}
    digest = hashlib.sha256(
        json.dumps([key, unet_cfg.to_json(), batch_size, lr, prediction, indexed.encoder_checksum], sort_keys=True).encode()
    )
    digest.update(np.ascontiguousarray(indexed.item_ids[usable]).tobytes())
    return digest.hexdigest()
