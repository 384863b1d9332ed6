"""Fixtures of the hashing tests: a tiny indexed workspace, built fresh for each test that asks."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest


def load_tiny_workspace() -> ModuleType:
    """tests/hashing/tiny_workspace.py, loaded by path under one name (tests import it from several folders)."""
    name = "mmgen_tests_tiny_workspace"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parent / "tiny_workspace.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture()
def hash_ws(tmp_path: Path, tiny_encoder) -> tuple[object, Path]:
    """(workspace, corpus manifest): index `default` over 40 drawings with captions, 8 groups, tiny_clip vectors."""
    return load_tiny_workspace().build(tmp_path, tiny_encoder)


@pytest.fixture()
def build_tiny_workspace():
    """The builder behind `hash_ws`: build(root, encoder, per_group=5) -> (workspace, manifest)."""
    return load_tiny_workspace().build
