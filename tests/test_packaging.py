"""The wheel's contents: every folder of mmgen/ is a listed package, and the shipped resources resolve."""

from __future__ import annotations

import tomllib
from pathlib import Path

import mmgen
from mmgen.resources import migrations_path, presets_path

ROOT = Path(mmgen.__file__).resolve().parent
PYPROJECT = ROOT.parent / "pyproject.toml"


def test_every_folder_of_the_package_is_listed_in_pyproject() -> None:
    config = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["tool"]["setuptools"]
    listed = set(config["packages"])
    folders = {
        ".".join(p.relative_to(ROOT.parent).parts)
        for p in [ROOT, *ROOT.rglob("*")]
        if p.is_dir() and p.name != "__pycache__" and any(f.is_file() for f in p.iterdir())
    }
    assert folders - listed == set(), "add these to [tool.setuptools] packages in pyproject.toml"
    mapped = config["package-dir"]
    unmapped = {k for k in listed - folders if not any(k == m or k.startswith(m + ".") for m in mapped)}
    assert unmapped == set(), "packages that are neither folders of mmgen/ nor mapped by package-dir"
    for package, folder in mapped.items():
        assert (ROOT.parent / folder).is_dir(), f"{package} maps to a missing folder {folder}"


def test_resources_resolve_to_the_shipped_folders() -> None:
    assert (migrations_path() / "env.py").is_file()
    assert (migrations_path() / "versions").is_dir()
    assert (presets_path() / "flat.json").is_file()
