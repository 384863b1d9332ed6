"""Fixtures of the hashing tests: a tiny indexed workspace, built fresh for each test that asks."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture()
def hash_ws(tmp_path: Path, tiny_encoder, build_tiny_workspace) -> tuple[object, Path]:
    """(workspace, corpus manifest): index `default` over 40 drawings with captions, 8 groups, tiny_clip vectors."""
    return build_tiny_workspace(tmp_path, tiny_encoder)


# A 32-d joint encoder: ITQ and PCA make at most as many bits as the vectors have dimensions, and the
# shared tiny encoder (tests/conftest.py) is 16-d, under the smallest code width (32 bits).
WIDE_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="session")
def wide_encoder(tiny_clip, tmp_path_factory):
    """A seeded tiny open_clip model with 32-d embeddings, saved as a checkpoint folder and loaded as `openclip:DIR`."""
    import json

    import open_clip
    import torch

    from mmgen.encoders import load_encoder, save_openclip_checkpoint

    torch.manual_seed(0)
    model = open_clip.CLIP(**json.loads(json.dumps(WIDE_CFG))).eval()
    folder = save_openclip_checkpoint(model, WIDE_CFG, None, tmp_path_factory.mktemp("wide_clip") / "wide")
    return load_encoder(f"openclip:{folder}", device="cpu")
