"""`mmgen index` on PostgreSQL killed with SIGKILL at seeded moments, then run again: nothing lost,
nothing twice, vectors equal to a clean run's, `mmgen check` clean (the SQLite harness's guarantee,
test_kills.py, on the other store). Each cycle gets a fresh database and workspace folder; the store is
read back with psycopg, independently of the code under test."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytestmark = pytest.mark.postgres
KILLS = 3
MIN_DELAY_S = 0.3
BATCH = 16


def _pg() -> Any:
    return sys.modules["mmgen_tests_pgserver"]


def _mmgen(*args: str, wait: bool = True) -> Any:
    env = {**os.environ, "MMGEN_THREADS": "1"}
    cmd = [sys.executable, "-m", "mmgen", *args]
    if not wait:
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


def _index_args(manifest: Path, ws: Path, url: str, encoder: str) -> list[str]:
    return ["index", str(manifest), "--workspace", str(ws), "--db", url, "--encoder", encoder,
            "--batch-size", str(BATCH), "--quiet", "--json"]  # fmt: skip


def _read(ws: Path, url: str) -> tuple[list[str], dict[tuple[str, str], np.ndarray], int]:
    """(item keys, (key, modality) -> vector, index rows) of index `default`, read with psycopg and numpy."""
    import psycopg

    read_vectors = sys.modules["mmgen_faults_harness"].read_vectors  # tests/faults/harness.py, loaded by conftest
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as con:
        keys = [r[0] for r in con.execute("SELECT key FROM items")]
        rows = con.execute(
            "SELECT r.modality, r.row_id, i.key FROM index_rows r JOIN items i ON i.id = r.item_id "
            "JOIN indexes x ON x.id = r.index_id WHERE x.name = 'default'"
        ).fetchall()
    vectors = {m: read_vectors(ws / "default" / f"{m}.f32") for m in ("image", "text")}
    by_key = {(key, m): vectors[m][rid] for m, rid, key in rows if rid < len(vectors[m])}
    return keys, by_key, len(rows)


def test_killed_index_runs_on_postgres_lose_and_duplicate_nothing(
    tmp_path: Path, pg_server_url: str, tiny_clip: Any, build_tiny_workspace: Any
) -> None:
    # The harness's seeded drawings: 8 concepts x 32 (tests/hashing/tiny_workspace.py).
    corpus = sys.modules[build_tiny_workspace.__module__]
    manifest = corpus.write_corpus(tmp_path / "corpus", per_group=sys.modules["mmgen_faults_harness"].PER_GROUP)
    records = [json.loads(line)["id"] for line in manifest.read_text(encoding="utf-8").splitlines()]
    encoder = f"openclip:{tiny_clip.folder}"
    with _pg().fresh_database(pg_server_url) as url:
        started = time.monotonic()
        clean = _mmgen(*_index_args(manifest, tmp_path / "clean", url, encoder))
        wall = time.monotonic() - started
        assert clean.returncode == 0, clean.stderr[-2000:]
        _, reference, _ = _read(tmp_path / "clean", url)
    assert len(reference) == 2 * len(records)

    rng = random.Random(0)
    outcomes = []
    for cycle in range(KILLS):
        ws = tmp_path / f"ws{cycle}"
        delay = rng.uniform(MIN_DELAY_S, max(MIN_DELAY_S, wall))
        with _pg().fresh_database(pg_server_url) as url:
            proc = _mmgen(*_index_args(manifest, ws, url, encoder), wait=False)
            time.sleep(delay)
            finished_first = proc.poll() is not None
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            proc.stderr.close()
            rerun = _mmgen(*_index_args(manifest, ws, url, encoder))
            assert rerun.returncode == 0, f"cycle {cycle} (kill at {delay:.2f} s): {rerun.stderr[-2000:]}"
            keys, got, n_rows = _read(ws, url)
            check = _mmgen("check", "--workspace", str(ws), "--db", url, "--json")
        report = json.loads(check.stdout)
        problems = [p for p in report.get("problems", []) if p["severity"] != "info"]
        assert sorted(keys) == sorted(set(keys)) and len(keys) == len(records), f"cycle {cycle}: items"
        assert n_rows == len(got) == len(reference), f"cycle {cycle}: rows lost or doubled"
        for key, vec in reference.items():
            np.testing.assert_allclose(got[key], vec, atol=1e-5, err_msg=f"cycle {cycle}: {key}")
        assert check.returncode == 0 and report["ok"] and not problems, f"cycle {cycle}: {problems}"
        outcomes.append("exited first" if finished_first else "killed")
    assert outcomes.count("killed") >= 1, f"every run exited before its kill: {outcomes} (clean run {wall:.1f} s)"
