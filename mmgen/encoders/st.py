"""sentence-transformers text encoders (`st:PATH_OR_NAME`)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from mmgen.encoders.base import Encoder, configure_torch_threads, sha256_files, sha256_state_dict
from mmgen.errors import MissingDependencyError, ModelLoadError

# Files that define a sentence-transformers folder's weights and behaviour (not its README or cards).
_MODEL_SUFFIXES = frozenset({".json", ".safetensors", ".bin", ".pt", ".pth", ".txt", ".model"})
# Alternative exports of the same weights that sentence-transformers does not load by default.
_SKIPPED_FOLDERS = frozenset({"onnx", "openvino"})
# Batches up to this size skip `SentenceTransformer.encode` (its length sort and conversions cost more than
# the forward pass of a short query on CPU): `_forward`, tested equal to `encode`. Larger ones do too where
# the fused layers take padded batches (oneDNN's), batched as `encode` batches them.
DIRECT_MAX = 8
_UNSET = object()


class SentenceTransformerEncoder(Encoder):
    """A text-only encoder backed by a `SentenceTransformer` model."""

    modalities = frozenset({"text"})

    def __init__(self, name: str, source: str, device: str) -> None:
        """Load `source` (a local folder, or a hub id where a network exists) onto `device`."""
        super().__init__()
        self.name = name
        self.device = device
        self._folder = Path(source) if Path(source).is_dir() else None
        self._model = _load(name, source, device)
        self._feature_keys: dict[str, Any] | None = None  # what `preprocess` returns (None: a tensor)
        self._fused: Any = _UNSET  # the first module's fused BERT layers (None where they do not apply)
        dim = _embedding_dim(self._model)
        if not dim:
            raise ModelLoadError(f"encoder {name}: the model does not report its embedding dimension")
        self.dim = int(dim)

    def _encode_text(self, texts: list[str], batch_size: int) -> np.ndarray:
        import torch

        with torch.inference_mode():
            direct = getattr(self._model, "default_prompt_name", None) is None  # `encode` would add a prompt
            if direct and len(texts) <= min(batch_size, DIRECT_MAX):
                return self._forward(texts)
            fused = self._fused_layers() if direct and not self._model.training else None
            if fused is not None and fused.batches:  # `encode`'s batches (longest first) on the fused layers
                order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
                out = np.empty((len(texts), self.dim), dtype=np.float32)
                for start in range(0, len(order), batch_size):
                    at = order[start : start + batch_size]
                    out[at] = self._forward([texts[i] for i in at])
                return out
            return self._model.encode(
                texts,
                batch_size=batch_size,
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )

    def _forward(self, texts: list[str]) -> np.ndarray:
        """One batch straight through the model's modules (what `encode` does per batch), without `encode`'s
        sorting, prompt and conversion steps: the path of a single query, and of batches on oneDNN's layers."""
        import torch

        model = self._model
        features = self._single(texts[0]) if len(texts) == 1 else None
        if features is None:
            prepare = getattr(model, "preprocess", None) or model.tokenize  # `tokenize` is deprecated in newer releases
            features = prepare(texts)
        features = {k: v.to(model.device) if hasattr(v, "to") else v for k, v in features.items()}
        mask = features.get("attention_mask")
        fused = self._fused_layers() if mask is not None and not model.training else None
        if fused is not None and not fused.batches and (len(texts) > 1 or not bool(mask.all())):
            fused = None  # the native kernel takes one unpadded text
        if fused is None:
            embeddings = model.forward(features)["sentence_embedding"]
        else:  # the first module's output from the fused layers, then the model's own later modules
            first = model[0]
            hidden = fused.hidden_states(features["input_ids"], features.get("token_type_ids"), mask)
            features[getattr(first, "module_output_name", "token_embeddings")] = hidden
            for module in list(model)[1:]:
                features = module(features)
            embeddings = features["sentence_embedding"]
        return torch.nn.functional.normalize(embeddings.float(), dim=1).cpu().numpy()

    def _single(self, text: str) -> dict[str, Any] | None:
        """The model's features of one text straight from its Rust tokenizer (0.03 ms, against 0.4 ms through
        sentence-transformers' `preprocess`, whose Python wrapping costs more than the tokenising); None where
        that would not give the same features (a slow tokenizer, lower-casing, a text at the length limit)."""
        import torch

        first = self._model[0]
        backend = getattr(getattr(first, "tokenizer", None), "backend_tokenizer", None)
        limit = getattr(first, "max_seq_length", None)
        if backend is None or not limit or getattr(first, "do_lower_case", False):
            return None
        if self._feature_keys is None:
            prepare = getattr(self._model, "preprocess", None) or self._model.tokenize
            self._feature_keys = {k: (None if hasattr(v, "to") else v) for k, v in prepare(["probe"]).items()}
        if not set(self._feature_keys) <= {"input_ids", "token_type_ids", "attention_mask", "modality"}:
            return None
        found = backend.encode(text.strip())
        n = sum(found.attention_mask)  # the backend may pad (its settings are the last call's): padding is cut off
        if found.overflowing or n >= int(limit):
            return None  # truncated: left to `preprocess`, which truncates at the model's own limit
        tensors = {"input_ids": found.ids[:n], "token_type_ids": found.type_ids[:n], "attention_mask": [1] * n}
        return {k: torch.tensor([tensors[k]]) if v is None else v for k, v in self._feature_keys.items()}

    def _fused_layers(self) -> Any:
        """The first module's BERT as fused layers (`mmgen.encoders.fused`), or None: another module or
        architecture, or a model whose first module's output is not plainly the last hidden state."""
        if self._fused is _UNSET:
            from mmgen.encoders.fused import fuse_bert

            first = self._model[0]
            bert = getattr(first, "auto_model", None)
            plain = {"method": "forward", "method_output_name": "last_hidden_state"}
            text = (getattr(first, "modality_config", None) or {"text": plain}).get("text")
            config = getattr(bert, "config", None)
            self._fused = None
            if bert is not None and text == plain and not getattr(config, "output_hidden_states", True):
                self._fused = fuse_bert(bert)
        return self._fused

    def _compute_checksum(self) -> str:
        if self._folder is None:  # loaded from a hub cache: identify the weights themselves
            return sha256_state_dict(self._model.state_dict())
        return sha256_files(model_files(self._folder), root=self._folder)


def model_files(folder: Path) -> list[Path]:
    """The weight, config and vocabulary files of a sentence-transformers folder."""
    files = []
    for path in folder.rglob("*"):
        parts = path.relative_to(folder).parts
        if any(p.startswith(".") or p in _SKIPPED_FOLDERS for p in parts[:-1]) or parts[-1].startswith("."):
            continue
        if path.is_file() and path.suffix in _MODEL_SUFFIXES:
            files.append(path)
    return files


def _load(name: str, source: str, device: str) -> Any:
    from mmgen.compat import ensure_torchvision

    ensure_torchvision()
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise MissingDependencyError(
            f"encoder {name} needs sentence-transformers: pip install sentence-transformers"
        ) from exc
    configure_torch_threads()
    try:
        with _quiet_weight_loading():
            model = SentenceTransformer(source, device=device)
    # The loader can fail in many third-party ways (hub, config, weights); all mean "cannot load".
    except Exception as exc:
        hint = "" if Path(source).is_dir() else " (a hub name needs a network or a warm Hugging Face cache)"
        raise ModelLoadError(
            f"encoder {name}: cannot load sentence-transformers model {source!r}{hint}: {exc}"
        ) from exc
    model.eval()
    return model


@contextlib.contextmanager
def _quiet_weight_loading() -> Iterator[None]:
    """Hide transformers' per-load "Loading weights" bar (mmgen shows its own progress)."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _embedding_dim(model: Any) -> int | None:
    get = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    return get()
