"""Shared fixtures: tiny seeded data, real components, nothing mocked."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from mmgen.compat import ensure_torchvision
from mmgen.encoders import Encoder, clear_encoder_cache, load_encoder, save_openclip_checkpoint

# Tests never reach a model hub; everything they load is local.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# ---- databases: `db_url` runs a test on SQLite and on PostgreSQL (see tests/pgserver.py) ----
def _load_pgserver() -> ModuleType:
    # Loaded by path under one module name, so every conftest that does this shares one server.
    name = "mmgen_tests_pgserver"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parent / "pgserver.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


pgserver = _load_pgserver()
pg_server_url = pgserver.pg_server_url
db_url = pgserver.db_url



# ---- encoders: a tiny seeded open_clip model saved in every supported form, and the real MiniLM ----


TINY_ARCH = "mmgen-tiny-test"
TINY_CFG: dict[str, Any] = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
TEXTS = ["a red apple", "an apple that is red", "a yellow school bus", "a cat", "", "a dog on a skateboard"] * 2


@dataclass(frozen=True)
class TinyClip:
    """One seeded tiny model, its saved forms, and a second model from another seed."""

    arch: str  # registered with open_clip for the session
    model: Any  # the in-memory open_clip CLIP the files were saved from
    checkpoint: Path  # plain state dict: openclip:ARCH/PATH
    folder: Path  # checkpoint folder: openclip:DIR
    other_folder: Path  # same architecture, seed 1

    @property
    def ckpt_name(self) -> str:
        return f"openclip:{self.arch}/{self.checkpoint}"

    @property
    def dir_name(self) -> str:
        return f"openclip:{self.folder}"


def _tiny_model(seed: int) -> Any:
    import open_clip
    import torch

    torch.manual_seed(seed)
    return open_clip.CLIP(**json.loads(json.dumps(TINY_CFG))).eval()


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TinyClip]:
    ensure_torchvision()
    import open_clip
    import open_clip.factory
    import torch

    root = tmp_path_factory.mktemp("tiny_clip")
    configs = root / "configs"
    configs.mkdir()
    (configs / f"{TINY_ARCH}.json").write_text(json.dumps(TINY_CFG))
    open_clip.add_model_config(configs)  # makes openclip:mmgen-tiny-test/CKPT resolvable

    model = _tiny_model(0)
    torch.save(model.state_dict(), root / "tiny.pt")
    save_openclip_checkpoint(model, TINY_CFG, None, root / "tiny")
    save_openclip_checkpoint(_tiny_model(1), TINY_CFG, None, root / "other")
    yield TinyClip(TINY_ARCH, model, root / "tiny.pt", root / "tiny", root / "other")

    # open_clip has no public way to forget a config; undo add_model_config so no other module sees it.
    open_clip.factory._MODEL_CONFIG_PATHS.remove(configs)
    open_clip.factory._MODEL_CONFIGS.pop(TINY_ARCH, None)
    clear_encoder_cache()


@pytest.fixture(scope="session")
def texts() -> list[str]:
    """Short captions, an empty one included."""
    return list(TEXTS)


@pytest.fixture(scope="session")
def tiny_encoder(tiny_clip: TinyClip) -> Encoder:
    return load_encoder(tiny_clip.dir_name, device="cpu")


@pytest.fixture(scope="session")
def minilm_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint folder as `mmgen train` writes it: the real MiniLM text tower beside a tiny seeded image tower."""
    ensure_torchvision()
    import shutil

    import torch
    from open_clip.model import CustomTextCLIP

    from mmgen.encoders.openclip import minilm_folder, resolve_text_markers
    from mmgen.train.state import TOKENIZER_FILES
    from mmgen.train.towers import TEXT_CFG, TEXT_DIM

    model_cfg = {"embed_dim": TEXT_DIM, "vision_cfg": TINY_CFG["vision_cfg"], "text_cfg": dict(TEXT_CFG)}
    text_cfg = {**resolve_text_markers(model_cfg)["text_cfg"], "hf_model_pretrained": True}
    torch.manual_seed(0)
    model = CustomTextCLIP(embed_dim=TEXT_DIM, vision_cfg=model_cfg["vision_cfg"], text_cfg=text_cfg).eval()
    folder = save_openclip_checkpoint(model, model_cfg, None, tmp_path_factory.mktemp("minilm_clip") / "model")
    for name in TOKENIZER_FILES:
        shutil.copyfile(minilm_folder() / name, folder / name)
    return folder


@pytest.fixture(scope="session")
def minilm() -> Encoder:
    return load_encoder("st:all-MiniLM-L6-v2", device="cpu")


@pytest.fixture(scope="session")
def images() -> list[Any]:
    """Seeded RGB noise images of mixed sizes (the encoder resizes and crops)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    sizes = [(32, 32), (48, 40), (20, 64), (100, 90), (33, 31)] * 2
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB") for w, h in sizes]


# ---- corpora on disk ----------------------------------------------------------------------
@pytest.fixture()
def text_folder(tmp_path: Path) -> Path:
    """30 captions as .txt files, plus one that is not UTF-8."""
    folder = tmp_path / "texts"
    folder.mkdir()
    topics = ["apple", "bus", "cat", "dog", "house", "tree"]
    for i in range(30):
        (folder / f"c{i:03d}.txt").write_text(f"a picture of a {topics[i % 6]} number {i}", encoding="utf-8")
    (folder / "latin1.txt").write_bytes("caf\xe9 cr\xe8me".encode("latin-1"))
    return folder


COLORS = {"red": (220, 20, 20), "green": (20, 180, 40), "blue": (30, 40, 220), "yellow": (240, 220, 20)}


@pytest.fixture()
def image_folder(tmp_path: Path) -> Path:
    """12 good images with captions, and four bad ones (corrupt, truncated, empty, not an image) with captions."""
    from PIL import Image, ImageDraw

    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    names = list(COLORS)
    for i in range(12):
        color = names[i % 4]
        im = Image.new("RGBA", (48, 48), (0, 0, 0, 0))
        x0, y0 = (int(v) for v in rng.integers(0, 16, 2))
        ImageDraw.Draw(im).ellipse([x0, y0, x0 + 30, y0 + 30], fill=COLORS[color] + (255,))
        im.save(folder / f"img{i:03d}.png")
        (folder / f"img{i:03d}.txt").write_text(f"a {color} circle", encoding="utf-8")
    good = (folder / "img000.png").read_bytes()
    (folder / "corrupt.png").write_bytes(good[:8] + bytes(rng.integers(0, 256, 200, dtype=np.uint8)))
    (folder / "truncated.png").write_bytes(good[: len(good) // 2])
    (folder / "empty.png").write_bytes(b"")
    (folder / "notanimage.png").write_text("this is plain text, not a PNG", encoding="utf-8")
    for bad in ("corrupt", "truncated", "empty", "notanimage"):
        (folder / f"{bad}.txt").write_text(f"the {bad} file", encoding="utf-8")
    return folder


def load_tiny_workspace() -> ModuleType:
    """tests/hashing/tiny_workspace.py, loaded by path under one name (tests import it from several folders)."""
    name = "mmgen_tests_tiny_workspace"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parent / "hashing" / "tiny_workspace.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture()
def build_tiny_workspace():
    """build(root, encoder, per_group=5) -> (workspace, manifest): index `default` over captioned drawings."""
    return load_tiny_workspace().build
