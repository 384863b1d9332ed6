"""The package namespaces: every exported name resolves, and importing a package loads no heavy library."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

PACKAGES = ("mmgen.eval", "mmgen.train", "mmgen.generate", "mmgen.hashing", "mmgen.encoders", "mmgen.index")


@pytest.mark.parametrize("name", PACKAGES)
def test_exported_names_resolve(name: str) -> None:
    package = importlib.import_module(name)
    for attr in getattr(package, "__all__", []):
        assert getattr(package, attr) is not None, f"{name}.{attr}"


def test_importing_the_packages_is_cheap() -> None:
    code = (
        "import sys\n"
        f"for name in {PACKAGES!r}:\n"
        "    __import__(name)\n"
        "print('HEAVY', [m for m in ('torch', 'faiss', 'open_clip', 'sentence_transformers') if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "HEAVY []" in out.stdout, out.stdout[-500:] + out.stderr[-500:]
