"""Make `import torchvision` work when its compiled ops (`torchvision/_C.so`) cannot load.

The pinned torchvision wheel is a CUDA build; beside the CPU build of torch its `_C.so` fails to
load, and torchvision's import then dies registering fake kernels for `torchvision::nms` and
`torchvision::qnms`, ops that only `_C.so` defines. That import sits under open_clip, timm and
sentence-transformers. `ensure_torchvision()` defines those two ops in Python (with a correct
greedy NMS) before torchvision is imported, so the import succeeds and `torchvision.ops.nms`
works; every other compiled op still fails with torchvision's own clear message.
"""

from __future__ import annotations

import importlib.util
import sys
import threading
from pathlib import Path
from typing import Any

_lock = threading.Lock()
_applied: bool | None = None  # None until the first call decides
# The Library that owns the op definitions; the ops vanish if it is garbage collected.
_library: Any = None

_NMS_SCHEMA = "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor"


def ensure_torchvision() -> bool:
    """Define torchvision's NMS ops when its compiled extension cannot load; True if the fix was applied."""
    global _applied
    with _lock:
        if _applied is None:
            _applied = _apply()
        return _applied


def _apply() -> bool:
    if "torchvision" in sys.modules:  # imported already (successfully, or it would not be listed)
        return False
    so_path = _extension_path()
    if so_path is None or _can_load(so_path):
        return False
    _define_ops()
    _allow_python_nms()
    return True


def _extension_path() -> Path | None:
    """Path of torchvision's compiled extension, found without importing torchvision."""
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        for name in ("_C.so", "_C.pyd"):
            candidate = Path(folder) / name
            if candidate.is_file():
                return candidate
    return None


def _can_load(path: Path) -> bool:
    import torch

    try:
        torch.ops.load_library(str(path))
    except (OSError, RuntimeError):
        return False
    return True


def _define_ops() -> None:
    global _library
    import torch

    if _op_exists("nms") and _op_exists("qnms"):  # someone else already supplied them
        return
    library = torch.library.Library("torchvision", "DEF")
    for op in ("nms", "qnms"):
        library.define(op + _NMS_SCHEMA)
        # A pure-torch kernel runs on any device; torchvision's own import adds the fake (Meta) kernels.
        for key in ("CPU", "CUDA"):
            library.impl(op, greedy_nms, key)
    _library = library


def _op_exists(name: str) -> bool:
    import torch

    try:
        torch._C._dispatch_find_schema_or_throw(f"torchvision::{name}", "")
    except RuntimeError:
        return False
    return True


def _allow_python_nms() -> None:
    """Let `torchvision.ops.nms` call the op defined here instead of refusing for want of `_C.so`."""
    import torchvision.ops.boxes as boxes

    # Only boxes.py is relaxed: roi_align, deform_conv and the rest keep torchvision's own check.
    boxes._assert_has_ops = _nms_ops_available


def _nms_ops_available() -> None:
    if not _op_exists("nms"):  # pragma: no cover - the op is defined before this is installed
        raise RuntimeError("torchvision::nms is not defined; call mmgen.compat.ensure_torchvision() first")


def greedy_nms(dets: Any, scores: Any, iou_threshold: float) -> Any:
    """Indices (int64) of the boxes kept by greedy NMS, highest score first, as torchvision's kernel returns."""
    import torch

    if dets.numel() == 0:
        return torch.empty((0,), dtype=torch.int64, device=dets.device)
    boxes = dets if dets.is_floating_point() else dets.to(torch.float64)
    x1, y1, x2, y2 = boxes.unbind(1)
    areas = (x2 - x1) * (y2 - y1)
    order = torch.argsort(scores, descending=True, stable=True)
    suppressed = torch.zeros(boxes.shape[0], dtype=torch.bool, device=dets.device)
    keep: list[int] = []
    for i in order.tolist():
        if suppressed[i]:
            continue
        keep.append(i)
        width = (torch.minimum(x2[i], x2) - torch.maximum(x1[i], x1)).clamp(min=0)
        height = (torch.minimum(y2[i], y2) - torch.maximum(y1[i], y1)).clamp(min=0)
        inter = width * height
        iou = inter / (areas[i] + areas - inter)
        suppressed |= iou > iou_threshold
    return torch.tensor(keep, dtype=torch.int64, device=dets.device)
