"""Training state on disk (resume) and the exported model: checkpoint folder, manifest, SQL registry."""

from __future__ import annotations

import os
import random
import shutil
import signal
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mmgen.artifacts import write_json_atomic
from mmgen.errors import ModelLoadError

if TYPE_CHECKING:
    import torch


STATE_NAME = "train-state.pt"
STATE_VERSION = 1
MANIFEST_TYPE = "mmgen.encoder"
# Tokenizer files copied beside the weights: open_clip's `local-dir:` loads its HF tokenizer from there.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


def rng_state() -> dict[str, Any]:
    """Python, numpy and torch (CPU and CUDA) generator states."""
    import torch

    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` saved."""
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch."""
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def save_state(path: Path, state: dict[str, Any]) -> None:
    """Write a training state atomically (a crash never leaves a half-written file that loads)."""
    import torch

    from mmgen.durable import replacing

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    with replacing(path, "the training state", tmp=tmp) as temp:
        torch.save({"version": STATE_VERSION, **state}, temp)


def load_state(path: Path) -> dict[str, Any] | None:
    """A saved training state, or None when there is none or it is unreadable / from another version."""
    import torch

    if not path.is_file():
        return None
    try:
        # Python and numpy RNG states are pickled tuples, so this file is trusted like any own checkpoint.
        state = torch.load(path, map_location="cpu", weights_only=False)
    except (OSError, RuntimeError, EOFError, ValueError) as exc:
        raise ModelLoadError(f"training state {path} is unreadable ({exc}); delete it to start fresh") from exc
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        return None
    return state


def trainable_state_dict(model: torch.nn.Module, text_locked: bool) -> dict[str, Any]:
    """The model weights a training state must keep (a locked text tower is restored from MiniLM itself)."""
    return {
        k: v.detach().cpu().clone()
        for k, v in model.state_dict().items()
        if not (text_locked and k.startswith("text."))
    }


def export_model(
    model: torch.nn.Module,
    model_cfg: dict[str, Any],
    preprocess_cfg: dict[str, Any],
    tokenizer_dir: Path,
    out_dir: Path,
    manifest: dict[str, Any],
) -> Path:
    """Save the open_clip checkpoint folder, its tokenizer files and `manifest.json`; returns the folder."""
    from mmgen.encoders import save_openclip_checkpoint

    save_openclip_checkpoint(model, model_cfg, preprocess_cfg, out_dir)
    for name in TOKENIZER_FILES:
        if (tokenizer_dir / name).is_file():
            shutil.copyfile(tokenizer_dir / name, out_dir / name)
    write_json_atomic(out_dir / "manifest.json", manifest)
    return out_dir


class StopOnInterrupt:
    """First Ctrl-C: finish the current step, then stop and save; a second one interrupts at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def restore(self) -> None:
        """Put back the SIGINT handler that was there before training."""
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None
