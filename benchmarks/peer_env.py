"""Peer tools in their own virtual environments under `build/peers/NAME`, so the project's venv never changes.

Each environment borrows the project's installed packages (numpy, PIL, torch, ...) through a .pth
file that points at the project venv's site-packages, then installs only what the peer adds, with
the project's constraints. A benchmark runs its peer code as a subprocess of that environment's
python (`benchmarks/compare_peers.py`: txtai; `benchmarks/dedup_bench.py`: imagededup).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _purelib(python: str | Path) -> str:
    return subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip


def peer_python(
    peers: Path, name: str, probe: str, no_deps: Sequence[str], with_deps: Sequence[str] = ()
) -> Path:
    """The python of environment `peers/name`, made on first use; `probe` is code (an import) that runs once it is complete.

    `no_deps` are installed with `--no-deps` (the peer itself, whose heavy requirements the project
    already has); `with_deps` are light packages installed with their own requirements.
    """
    env = peers / name
    python = env / "bin" / "python"
    if python.is_file() and _runs(python, probe):
        return python
    peers.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", str(env)], check=True)
    Path(_purelib(python), "project-deps.pth").write_text(_purelib(sys.executable) + "\n", encoding="utf-8")
    pip = [str(python), "-m", "pip", "install", "--quiet", "-c", str(ROOT / "constraints.txt")]
    if no_deps:
        subprocess.run([*pip, "--no-deps", *no_deps], check=True)
    if with_deps:
        subprocess.run([*pip, *with_deps], check=True)
    if not _runs(python, probe):
        raise SystemExit(f"peer environment {env} is incomplete: `{probe}` fails there")
    return python


def _runs(python: Path, code: str) -> bool:
    return subprocess.run([str(python), "-c", code], capture_output=True).returncode == 0
