"""A contact sheet of one prompt's pictures (`mmgen show --sheet`), drawn by `mmgen.generate.sheet`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mmgen.errors import ConfigError
from mmgen.records.history import PromptDetail

SHEET_SIDE = 96


def _square(uri: str | None, side: int = SHEET_SIDE) -> Any:
    """An image file as a uint8 (side, side, 3) array on white; a grey square when it cannot be read."""
    import numpy as np
    from PIL import Image

    from mmgen.data.images import load_image
    from mmgen.errors import ImageLoadError

    box = Image.new("RGB", (side, side), (255, 255, 255))
    try:
        img = load_image(str(uri), max_side=side)
    except (ImageLoadError, ConfigError):
        box.paste((200, 200, 200), (0, 0, side, side))
        return np.asarray(box, dtype=np.uint8)
    box.paste(img, ((side - img.width) // 2, (side - img.height) // 2))
    return np.asarray(box, dtype=np.uint8)


def contact_sheet(detail: PromptDetail, path: Path) -> Path:
    """A PNG of a prompt's pictures: generated images beside their retrieved neighbours, else its image hits.

    A caption prompt shows its query image with the caption; a prompt without pictures is a ConfigError.
    """
    from mmgen.generate.sheet import SheetRow, save_sheet

    label = detail.text or (Path(detail.image_uri).name if detail.image_uri else f"prompt {detail.id}")
    files = [o.file_uri for o in detail.outputs if o.file_uri]
    image_hits = [h for h in detail.retrievals if h.modality == "image" and h.uri]
    if files:
        row = SheetRow(label, [_square(f) for f in files], [h.uri for h in image_hits if h.uri][:8],
                       note=f"prompt {detail.id}")  # fmt: skip
        header = "generated"
    elif image_hits:
        row = SheetRow(label, [_square(h.uri) for h in image_hits],
                       note=f"prompt {detail.id}, {len(image_hits)} image hits")  # fmt: skip
        header = "hits, best first"
    elif detail.image_uri:
        caption = next((o.text for o in detail.outputs if o.text), "")
        row = SheetRow(label, [_square(detail.image_uri)], note=caption[:40])
        header = "query image"
    else:
        raise ConfigError(f"prompt {detail.id} has no pictures for a sheet (no image hits, files or query image)")
    return save_sheet([row], path, scale=1, title=f"{detail.kind} #{detail.id}", header=header)
