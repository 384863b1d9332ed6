"""Work-arounds for third-party packages; nothing here runs until a caller asks for it."""

from mmgen.compat.torchvision_fix import ensure_torchvision

__all__ = ["ensure_torchvision"]
