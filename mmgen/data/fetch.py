"""Fetch the demo corpora: emoji via npm (then rasterise OpenMoji SVGs), OpenClipart via apt."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from mmgen.data import emoji, openclipart
from mmgen.errors import DataError, MissingDependencyError

NPM_TIMEOUT_S = 600
APT_TIMEOUT_S = 1800
OPENCLIPART_PACKAGES = ("openclipart-svg", "openclipart-png")
_NPM_HINT = "npm is needed to fetch the emoji corpora; install Node.js: apt-get install -y npm"


def fetch_emoji(data_dir: Path, progress: bool = True) -> dict[str, Any]:
    """Install OpenMoji and Twemoji with npm into data_dir/npm, then rasterise OpenMoji to 128 px PNGs.

    Both steps skip work already done (same package versions, PNGs newer than their SVG). SVGs are
    rendered in process by libvips (pyvips-binary ships librsvg), in parallel threads.
    """
    data_dir = Path(data_dir).expanduser().resolve()
    installed = _npm_install(data_dir, emoji.NPM_PACKAGES)
    counts: dict[str, Any] = {"data_dir": str(data_dir), "npm_installed": installed, "packages": emoji.NPM_PACKAGES}
    jobs: list[tuple[Path, Path]] = []
    for style in emoji.OPENMOJI_STYLES:
        svg_dir = emoji.openmoji_svg_dir(data_dir, style)
        png_dir = emoji.openmoji_png_dir(data_dir, style)
        png_dir.mkdir(parents=True, exist_ok=True)
        svgs = sorted(svg_dir.glob("*.svg"))
        if not svgs:
            raise DataError(f"no OpenMoji SVGs in {svg_dir}; delete {data_dir / 'npm'} and fetch again")
        counts[style] = len(svgs)
        for svg in svgs:
            png = png_dir / f"{svg.stem}.png"
            if not (png.is_file() and png.stat().st_mtime >= svg.stat().st_mtime):
                jobs.append((svg, png))
    failures = _render_all(jobs, progress)
    counts["rendered"] = len(jobs) - len(failures)
    counts["up_to_date"] = sum(counts[s] for s in emoji.OPENMOJI_STYLES) - len(jobs)
    counts["twemoji"] = len(list((emoji.twemoji_dir(data_dir) / "img" / "twitter" / "64").glob("*.png")))
    if failures:
        svg, reason = failures[0]
        raise DataError(f"{len(failures)} of {len(jobs)} OpenMoji SVGs failed to render, e.g. {svg}: {reason}")
    return counts


def _npm_install(data_dir: Path, packages: dict[str, str | None]) -> bool:
    """Install npm packages (name -> pinned version, or None: any) unless they are there; return whether npm ran."""
    npm_dir = data_dir / "npm"
    modules = emoji.node_modules(data_dir)

    def present(name: str, version: str | None) -> bool:
        found = _package_version(modules / name)
        return found is not None and (version is None or found == version)

    if all(present(name, version) for name, version in packages.items()):
        return False
    npm = shutil.which("npm")
    if npm is None:
        raise MissingDependencyError(_NPM_HINT)
    npm_dir.mkdir(parents=True, exist_ok=True)
    if not (npm_dir / "package.json").is_file():
        manifest = {"name": "mmgen-data", "version": "0.0.0", "private": True, "description": "mmgen demo corpora"}
        (npm_dir / "package.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    specs = [f"{name}@{version}" if version else name for name, version in packages.items()]
    cmd = [npm, "install", "--ignore-scripts", "--no-audit", "--no-fund", "--save-exact", *specs]
    try:
        done = subprocess.run(cmd, cwd=npm_dir, capture_output=True, text=True, timeout=NPM_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as e:
        raise DataError(f"npm install took longer than {NPM_TIMEOUT_S} s in {npm_dir}") from e
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise DataError(f"npm install failed in {npm_dir} (exit {done.returncode}): {' | '.join(tail)}")
    for name, version in packages.items():
        if not present(name, version):
            raise DataError(f"npm did not install {name}@{version or 'latest'} into {modules}")
    return True


def fetch_iconify(data_dir: Path, prefixes: dict[str, str | None], progress: bool = True) -> dict[str, Any]:
    """Install Iconify sets (prefix -> pinned version, None: latest) with npm, then render each to PNG once.

    A set whose JSON is malformed, or an icon that fails to render, is reported; the others go on.
    """
    from mmgen.data import iconify

    data_dir = Path(data_dir).expanduser().resolve()
    for prefix in prefixes:
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,63}", prefix):
            raise DataError(f"not an Iconify set prefix: {prefix!r} (lower-case letters, digits and '-')")
    packages = {iconify.package_name(p): v for p, v in prefixes.items()}
    installed = _npm_install(data_dir, packages)
    out: dict[str, Any] = {"data_dir": str(data_dir), "npm_installed": installed, "sets": {}}
    table = None
    problems: list[str] = []
    for prefix in prefixes:
        try:
            done = iconify.render_set(data_dir, prefix, progress=progress)
            if iconify.is_emoji_set(prefix):
                table = table if table is not None else iconify.emoji_join_table(data_dir)
                done["join"] = iconify.join_coverage(data_dir, prefix, table)
        except DataError as e:
            problems.append(f"{prefix}: {e}")
            done = {"error": str(e)}
        out["sets"][prefix] = done
    if problems:
        out["errors"] = problems
    return out


def _package_version(package_dir: Path) -> str | None:
    try:
        version = json.loads((package_dir / "package.json").read_text(encoding="utf-8")).get("version")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return None
    return version if isinstance(version, str) else None


def _render_one(svg: Path, png: Path) -> str | None:
    """Render one SVG to PNG atomically (temp file + rename); return an error reason or None."""
    from mmgen.data.images import render_svg_buffer
    from mmgen.errors import ImageLoadError

    try:
        data = render_svg_buffer(svg.read_bytes(), emoji.PNG_SIDE)
    except (OSError, ImageLoadError) as e:
        return str(e)
    fd, tmp = tempfile.mkstemp(prefix=f".{png.stem}.", suffix=".png", dir=png.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, png)
        return None
    finally:
        Path(tmp).unlink(missing_ok=True)


def _render_all(jobs: list[tuple[Path, Path]], progress: bool) -> list[tuple[Path, str]]:
    """Render in parallel threads (libvips releases the GIL); return (svg, reason) failures."""
    if not jobs:
        return []
    from tqdm import tqdm

    workers = max(2, os.cpu_count() or 2)
    failures: list[tuple[Path, str]] = []
    with (
        ThreadPoolExecutor(max_workers=workers) as pool,
        tqdm(total=len(jobs), desc="rasterise OpenMoji", unit="svg", disable=not progress) as bar,
    ):
        for (svg, _png), reason in zip(jobs, pool.map(lambda job: _render_one(*job), jobs), strict=True):
            if reason is not None:
                failures.append((svg, reason))
            bar.update(1)
    return failures


def fetch_openclipart(data_dir: Path) -> dict[str, Any]:
    """Make sure OpenClipart's svg/ and png/ trees exist (apt-get when root) and record where in data_dir."""
    data_dir = Path(data_dir).expanduser().resolve()
    root = openclipart.openclipart_root(None)
    installed = False
    if not ((root / "svg").is_dir() and (root / "png").is_dir()):
        install = f"apt-get install -y {' '.join(OPENCLIPART_PACKAGES)}"
        if root != openclipart.DEFAULT_ROOT:
            raise DataError(f"{openclipart.ENV_ROOT}={root} has no svg/ and png/ folders")
        apt = shutil.which("apt-get")
        if apt is None or os.geteuid() != 0:
            raise MissingDependencyError(f"OpenClipart is not installed at {root}; run: sudo {install}")
        _apt_install(apt)
        installed = True
        if not ((root / "svg").is_dir() and (root / "png").is_dir()):
            raise DataError(f"{install} succeeded but {root}/svg and {root}/png are still missing")
    data_dir.mkdir(parents=True, exist_ok=True)
    location = {"root": str(root), "svg": str(root / "svg"), "png": str(root / "png")}
    loc_file = data_dir / openclipart.LOCATION_FILE
    tmp = loc_file.with_name(f".{loc_file.name}.tmp")
    tmp.write_text(json.dumps(location, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, loc_file)
    n_png = sum(1 for _ in (root / "png").rglob("*.png"))
    n_svg = sum(1 for _ in (root / "svg").rglob("*.svg"))
    return {
        "root": str(root),
        "installed": installed,
        "png_paths": n_png,
        "svg_paths": n_svg,
        "recorded": str(loc_file),
    }


def _apt_install(apt: str) -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = [apt, "install", "-y", "--no-install-recommends", *OPENCLIPART_PACKAGES]

    def run(args: list[str]) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(args, capture_output=True, text=True, env=env, timeout=APT_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired as e:
            raise DataError(f"{' '.join(args)} took longer than {APT_TIMEOUT_S} s") from e

    done = run(cmd)
    if done.returncode != 0 and "Unable to locate package" in (done.stderr + done.stdout):
        update = run([apt, "update"])
        if update.returncode != 0:
            raise DataError(f"apt-get update failed: {update.stderr.strip().splitlines()[-1:]}")
        done = run(cmd)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-2:]
        raise DataError(f"{' '.join(cmd)} failed (exit {done.returncode}): {' | '.join(tail)}")
