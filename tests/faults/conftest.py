"""Fault injection (issue 16): real `mmgen` processes killed with SIGKILL at seeded random moments
(or at exact places in the code), run again to completion, then checked against the durability
contracts (README: Indexing, `mmgen check`, Architecture): `mmgen check --json` clean, no item lost,
no duplicate, vectors equal to a clean run's, a search answers; for the trainers a loadable model.

- processes.py: `Launcher` and `Proc`, real processes forked from forkserver.py (or fresh
  `python -m mmgen` with MMGEN_FAULTS_FRESH=1);
- harness.py: the five commands, their clean references, a kill cycle, the verification, the summary;
- here: the session fixtures. `fault_summary` is written as JSON to $MMGEN_FAULTS_SUMMARY when set.

Nothing is mocked: SQLite in WAL mode, fsynced vector files, FAISS, the tiny open_clip checkpoints
of tests/conftest.py, the drawings corpus of tests/hashing/tiny_workspace.py. The one in-process
fault, a full disk (test_disk_full.py), is injected at the write layer (`os.write`, SQLite's page limit).
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent


def _load(name: str, path: Path) -> ModuleType:
    """A helper module loaded by path under one name (tests are imported with --import-mode=importlib)."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


processes = _load("mmgen_faults_processes", HERE / "processes.py")
harness = _load("mmgen_faults_harness", HERE / "harness.py")


def write_corpus(folder: Path, seed: int = 0) -> Path:
    """The seeded drawings corpus (tests/hashing/tiny_workspace.py, under the name tests/conftest.py gives it)."""
    module = _load("mmgen_tests_tiny_workspace", HERE.parent / "hashing" / "tiny_workspace.py")
    return module.write_corpus(folder, per_group=harness.PER_GROUP, seed=seed)


@pytest.fixture(scope="session")
def fault_summary() -> Iterator[dict[str, Any]]:
    """Collects the kill records and other findings of the session; written to $MMGEN_FAULTS_SUMMARY when set."""
    data: dict[str, Any] = {"records": [], "kill_points": [], "concurrency": {}, "timings_s": {}}
    started = time.monotonic()
    yield data
    target = os.environ.get("MMGEN_FAULTS_SUMMARY")
    if target and (data["records"] or data["kill_points"] or data["concurrency"] or data.get("pg_records")):
        data["timings_s"]["session"] = round(time.monotonic() - started, 1)
        data["summary"] = harness.summarize(data["records"]) if data["records"] else None
        data["kill_points_summary"] = harness.summarize_points(data["kill_points"])
        if data.get("pg_records"):
            data["pg_summary"] = harness.summarize(data["pg_records"])
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        Path(target).write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")


@pytest.fixture(scope="session")
def faults(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
           fault_summary: dict[str, Any]) -> Iterator[Any]:  # fmt: skip
    """The session's `Harness` (harness.py): launcher, corpus, encoders, clean references, kill records."""
    root = tmp_path_factory.mktemp("faults")
    logs = root / "logs"
    logs.mkdir()
    # The fork server imports torch & co while this process builds the tiny models and the corpus.
    launcher = processes.Launcher(logs, fresh=os.environ.get("MMGEN_FAULTS_FRESH") == "1")
    try:
        tiny_clip = request.getfixturevalue("tiny_clip")
        h = harness.Harness(launcher, root, write_corpus(root / "corpus"), f"openclip:{tiny_clip.folder}",
                            f"openclip:{tiny_clip.other_folder}", records=fault_summary["records"],
                            point_records=fault_summary["kill_points"], timings=fault_summary["timings_s"])  # fmt: skip
        fault_summary["setup"] = {**h.describe(), "launcher": launcher.mode, "child_env": processes.CHILD_ENV}
        yield h
        fault_summary["setup"].update(h.windows_report())
    finally:
        launcher.close()


@pytest.fixture(scope="session")
def pg_faults(request: pytest.FixtureRequest, faults: Any, pg_server_url: str,
              fault_summary: dict[str, Any]) -> Iterator[Any]:  # fmt: skip
    """The same harness on PostgreSQL: every workspace's store is its own database on the test server
    (cloned with the folder), the commands forked from the same preloaded server."""
    pg = harness.PgDatabases(pg_server_url)
    h = harness.Harness(faults.launcher, faults.root / "pg", faults.manifest, faults.encoder_a, faults.encoder_b,
                        records=fault_summary.setdefault("pg_records", []), pg=pg,
                        timings=fault_summary.setdefault("pg_timings_s", {}))  # fmt: skip
    h.root.mkdir()
    try:
        yield h
    finally:
        pg.drop_all()


@pytest.fixture(scope="session")
def second_manifest(faults: Any) -> Path:
    """256 more drawings (another seed) in another folder: another corpus (a manifest's corpus is its path)."""
    return write_corpus(faults.root / "corpus-b", seed=1)


@pytest.fixture(scope="session")
def fault_harness() -> ModuleType:
    """harness.py itself, for in-process fault tests that read workspaces as the kill tests do."""
    return harness


@pytest.fixture()
def small_corpus(tmp_path: Path) -> Path:
    """32 seeded captioned drawings (4 per concept) under tmp_path/corpus; returns their manifest."""
    module = _load("mmgen_tests_tiny_workspace", HERE.parent / "hashing" / "tiny_workspace.py")
    return module.write_corpus(tmp_path / "corpus", per_group=4)
