"""A tiny real workspace for hashing tests: seeded drawings + captions in a JSONL manifest, indexed with a real encoder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

COLORS = {"red": (220, 20, 20), "green": (20, 180, 40), "blue": (30, 40, 220), "yellow": (240, 220, 20)}
SHAPES = ("circle", "square")


def write_corpus(folder: Path, per_group: int = 5, seed: int = 0) -> Path:
    """Drawings of 8 concepts (colour x shape), `per_group` variants each; returns the manifest."""
    from PIL import Image, ImageDraw

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    lines = []
    for color, rgb in COLORS.items():
        for shape in SHAPES:
            for i in range(per_group):
                im = Image.new("RGB", (40, 40), (255, 255, 255))
                x0, y0 = (int(v) for v in rng.integers(0, 14, 2))
                box = [x0, y0, x0 + 24, y0 + 24]
                draw = ImageDraw.Draw(im)
                (draw.ellipse if shape == "circle" else draw.rectangle)(box, fill=rgb)
                name = f"{color}-{shape}-{i}"
                im.save(folder / f"{name}.png")
                lines.append({"id": name, "image": f"{name}.png", "text": f"a {color} {shape}, drawing {i}",
                              "group": f"{color}-{shape}", "meta": {"color": color}})  # fmt: skip
    manifest = folder / "corpus.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in lines), encoding="utf-8")
    return manifest


def build(root: Path, encoder: Any, per_group: int = 5) -> tuple[Any, Path]:
    """A workspace under `root` with index `default` over the corpus; returns (workspace, manifest)."""
    from mmgen.data.sources import open_sources
    from mmgen.indexer import Indexer, IndexOptions
    from mmgen.store.db import open_store
    from mmgen.workspace import Workspace

    manifest = write_corpus(root / "corpus", per_group)
    ws = Workspace.resolve(root / "ws")
    store = open_store(ws.db_url)
    try:
        Indexer(ws, store, encoder, IndexOptions(progress=False)).run(open_sources(str(manifest)))
    finally:
        store.close()
    return ws, manifest
