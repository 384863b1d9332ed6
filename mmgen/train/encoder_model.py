"""The encoder trainer's model parts: building the CLIP model, loading and locking weights, the
optimiser, mixed precision, the preprocessing config, and the cached caption embeddings."""

from __future__ import annotations

import contextlib
import hashlib
import math
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmgen.encoders.openclip import trim_padding
from mmgen.errors import ConfigError, ModelLoadError
from mmgen.train.towers import TEXT_DIM

if TYPE_CHECKING:
    import torch

    from mmgen.train.encoder import TrainConfig

LOGIT_SCALE_INIT = math.log(1 / 0.07)
TEXT_BATCH = 256  # captions per batch when their embeddings are cached


def build_model(resolved_cfg: dict[str, Any], cfg: TrainConfig) -> Any:
    from mmgen.compat import ensure_torchvision

    ensure_torchvision()
    from open_clip.model import CustomTextCLIP

    from mmgen.encoders.timm_towers import names_timm_tower, register_timm_towers

    if names_timm_tower(resolved_cfg):
        register_timm_towers()
    text_cfg = {**resolved_cfg["text_cfg"], "hf_model_pretrained": True}
    with quiet_transformers():
        model = CustomTextCLIP(
            embed_dim=resolved_cfg["embed_dim"],
            vision_cfg=resolved_cfg["vision_cfg"],
            text_cfg=text_cfg,
            init_logit_scale=LOGIT_SCALE_INIT,
        )
    if cfg.init is not None:
        load_image_weights(model, cfg.init, cfg.name)
    return model


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Hide transformers' weight-loading bar and its report on MiniLM's unused pooler (expected: mean pooling)."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bar:
            hf_logging.enable_progress_bar()


def load_image_weights(model: Any, init: str, name: str) -> None:
    """Copy a pretrained open_clip model's image tower (shape-matching tensors) into `model.visual`.

    A pretrained tag downloads where a network (or a warm open_clip cache) exists; offline, a
    local checkpoint file (`openclip:ARCH/PATH.pt`) is the way. The projection to 384-d is new.
    """
    import open_clip
    from open_clip.factory import load_state_dict
    from open_clip.model import resize_pos_embed

    from mmgen.encoders.openclip import _fetch_pretrained

    arch, _, weights = init.removeprefix("openclip:").partition("/")
    pretrained_cfg = open_clip.get_pretrained_cfg(arch, weights)
    if pretrained_cfg:
        path = _fetch_pretrained(f"init {init}", pretrained_cfg)
    else:
        path = Path(weights).expanduser()
        if not path.is_file():
            tags = open_clip.list_pretrained_tags_by_model(arch)
            raise ModelLoadError(f"init {init}: no such checkpoint file or pretrained tag (tags: {', '.join(tags)})")
    try:
        state = load_state_dict(str(path))
    except (OSError, RuntimeError, ValueError) as exc:
        raise ModelLoadError(f"init {init}: cannot read {path} ({exc})") from exc
    visual = {k: v for k, v in state.items() if k.startswith("visual.")}
    resize_pos_embed(visual, model)
    own = model.visual.state_dict()
    matched = {
        k.removeprefix("visual."): v
        for k, v in visual.items()
        if k.removeprefix("visual.") in own and own[k.removeprefix("visual.")].shape == v.shape
    }
    if not matched:
        raise ModelLoadError(f"init {init}: no image tower weight of {path} fits the {arch} tower")
    model.visual.load_state_dict(matched, strict=False)


def lock_text(model: Any, unlocked_layers: int) -> None:
    """Freeze MiniLM except its top `unlocked_layers` transformer layers (open_clip's lock lacks BERT's layer names)."""
    text = model.text
    for p in text.parameters():
        p.requires_grad = False
    if unlocked_layers:
        layers = text.transformer.encoder.layer
        if unlocked_layers > len(layers):
            raise ConfigError(f"unlocked_text_layers={unlocked_layers} but MiniLM has {len(layers)} layers")
        for layer in layers[len(layers) - unlocked_layers :]:
            for p in layer.parameters():
                p.requires_grad = True


def make_optimizer(model: Any, cfg: TrainConfig) -> Any:
    import torch

    decay, no_decay, text = [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name.startswith("text."):
            text.append(p)
        elif p.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or name == "logit_scale":
            no_decay.append(p)
        else:
            decay.append(p)
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay, "name": "decay"},
        {"params": no_decay, "weight_decay": 0.0, "name": "no_decay"},
    ]
    if text:
        groups.append({"params": text, "weight_decay": cfg.weight_decay, "name": "text"})
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6)


def pick_amp_dtype(device: str, precision: str) -> Any:
    import torch

    if precision == "fp32" or (precision == "auto" and not device.startswith("cuda")):
        return None
    if precision == "fp16":
        return torch.float16
    if precision == "bf16":
        return torch.bfloat16
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def preprocess_config(image_size: int) -> dict[str, Any]:
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    return {
        "size": image_size,
        "mode": "RGB",
        "mean": list(OPENAI_DATASET_MEAN),
        "std": list(OPENAI_DATASET_STD),
        "interpolation": "bicubic",
        "resize_mode": "shortest",
        "fill_color": 0,
    }


def tokenize(tokenizer: Any, captions: list[str]) -> torch.Tensor:
    import torch

    return torch.cat([tokenizer(captions[i : i + TEXT_BATCH]) for i in range(0, len(captions), TEXT_BATCH)])


def caption_embeddings(
    model: Any, tokenizer: Any, captions: list[str], out_dir: Path, text_checksum: str, device: str, cfg: TrainConfig
) -> torch.Tensor:
    """L2-normalised MiniLM embeddings of every caption, computed once and cached under the model folder."""
    import torch
    from tqdm.auto import tqdm

    digest = hashlib.sha256(f"{tokenizer.context_length}\0".encode())
    for c in captions:
        digest.update(c.encode("utf-8", "surrogatepass") + b"\0")
    path = out_dir / "text-cache" / f"{text_checksum[:16]}-{digest.hexdigest()[:16]}.pt"
    if path.is_file():
        try:
            cached = torch.load(path, map_location="cpu", weights_only=True)
            if cached.shape == (len(captions), TEXT_DIM):
                return cached.to(device)
        except (OSError, RuntimeError, EOFError):
            pass  # rebuilt below
    order = sorted(range(len(captions)), key=lambda i: len(captions[i]))
    out = torch.empty(len(captions), TEXT_DIM)
    was_training = model.text.training
    model.text.eval()  # MiniLM's dropout must be off for the embeddings it serves at inference
    with torch.inference_mode():
        for start in tqdm(
            range(0, len(order), TEXT_BATCH), desc="caption embeddings", unit="batch",
            disable=not cfg.progress, leave=False,
        ):  # fmt: skip
            idx = order[start : start + TEXT_BATCH]
            tokens = trim_padding(tokenizer([captions[i] for i in idx])).to(device)
            out[idx] = torch.nn.functional.normalize(model.encode_text(tokens).float(), dim=-1).cpu()
    model.text.train(was_training)
    from mmgen.durable import replacing

    with replacing(path, "the caption embeddings cache", tmp=path.with_suffix(".tmp")) as tmp:
        torch.save(out, tmp)
    return out.to(device)


def minilm_checksum(folder: Path) -> str:
    from mmgen.encoders.base import sha256_files
    from mmgen.encoders.st import model_files

    return sha256_files(model_files(folder), root=folder)
