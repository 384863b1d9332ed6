"""The fault and concurrency guarantees of test_kills.py and test_concurrency.py, on PostgreSQL.

- The five commands of test_kills.py (`index`, `index --hash`, `index --reembed`, `train encoder`,
  `train hasher`) killed with SIGKILL at seeded moments and run again, through the same harness
  (harness.py, fixture `pg_faults`): nothing lost, nothing twice, vectors and codes equal to a clean
  run's, `mmgen check` clean, models that load. Each workspace's store is its own database.
- Two `mmgen index` processes at once on one workspace and database: the second waits for the
  first's lock; their items never interleave; nothing lost or doubled; check clean.
- Searches looping in another process (a fresh and a long-lived `Searcher`, each search recorded)
  while `mmgen index` adds items: no search fails, every hit is a committed item, and its stored
  vector gives the reported score.

The store is read back with psycopg, and the vector files with numpy, independently of the code
under test. The commands are real processes forked from the fault harness's preloaded server
(processes.py, forkserver.py), as in the SQLite tests: the imports are done once, not per command."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytestmark = pytest.mark.postgres
COMMANDS = ("index", "index --hash", "index --reembed", "train encoder", "train hasher")  # as test_kills.py
SHORT_KILLS = 3
SLOW_KILLS = 20
BATCH = 16


def _pg() -> Any:
    return sys.modules["mmgen_tests_pgserver"]


class Commands:
    """`mmgen ARGS` (or a script) as real processes from the harness's launcher; `run` waits, `start` does not."""

    def __init__(self, faults: Any, cwd: Path) -> None:
        self.launcher, self.cwd = faults.launcher, cwd

    def start(self, *args: str, script: Path | None = None, env: dict[str, str] | None = None) -> Any:
        return self.launcher.start(list(args), self.cwd, "pg", script=script, env=env)

    def run(self, *args: str) -> Any:
        proc = self.start(*args)
        proc.wait()
        return proc


def _index_args(manifest: Path, ws: Path, url: str, encoder: str) -> list[str]:
    return ["index", str(manifest), "--workspace", str(ws), "--db", url, "--encoder", encoder,
            "--batch-size", str(BATCH), "--quiet", "--json"]  # fmt: skip


def _items(url: str) -> list[tuple[int, str, str]]:
    """(item id, corpus name, key) of every item, read with psycopg."""
    import psycopg

    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as con:
        return [tuple(r) for r in con.execute(
            "SELECT i.id, c.name, i.key FROM items i JOIN corpora c ON c.id = i.corpus_id ORDER BY i.id")]  # fmt: skip


def _check(mmgen: Commands, ws: Path, url: str) -> list[str]:
    """`mmgen check --json`: what it found beyond info notes (empty when clean)."""
    check = mmgen.run("check", "--workspace", str(ws), "--db", url, "--json")
    report = json.loads(check.stdout())
    problems = [f"{p['severity']}:{p['code']}" for p in report.get("problems", []) if p["severity"] != "info"]
    return problems if check.rc == 0 and report["ok"] else problems + [f"rc {check.rc}"]


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


def _corpus(folder: Path, build_tiny_workspace: Any, seed: int = 0) -> Path:
    """The harness's seeded drawings, 8 concepts x 32 (tests/hashing/tiny_workspace.py)."""
    module = sys.modules[build_tiny_workspace.__module__]
    return module.write_corpus(folder, per_group=sys.modules["mmgen_faults_harness"].PER_GROUP, seed=seed)


@pytest.mark.parametrize("name", COMMANDS)
def test_killed_then_rerun_on_postgres_loses_and_duplicates_nothing(pg_faults: Any, name: str) -> None:
    """test_kills.py's cycles, each workspace's store its own PostgreSQL database (cloned with the folder)."""
    records = pg_faults.kill_cycles(name, range(SHORT_KILLS))
    failed = [r for r in records if not r["ok"]]
    assert not failed, f"{name} on PostgreSQL: {len(failed)} of {len(records)} kills broke a guarantee: {failed}"
    assert all(r["lost"] == 0 and r["duplicates"] == 0 for r in records)


@pytest.mark.slow
@pytest.mark.parametrize("name", COMMANDS)
def test_many_kills_on_postgres_lose_and_duplicate_nothing(pg_faults: Any, name: str) -> None:
    records = pg_faults.kill_cycles(name, range(1000, 1000 + SLOW_KILLS))
    failed = [r for r in records if not r["ok"]]
    assert not failed, f"{name} on PostgreSQL: {len(failed)} of {len(records)} kills broke a guarantee: {failed}"
    during = sum(r["landed"] == "during" for r in records)
    assert during >= len(records) // 2, f"{name}: only {during} of {len(records)} kills landed mid-run"


def test_two_indexers_at_once_on_postgres_wait_and_never_interleave(
    tmp_path: Path, pg_server_url: str, tiny_clip: Any, build_tiny_workspace: Any, faults: Any
) -> None:
    mmgen = Commands(faults, tmp_path)
    first = _corpus(tmp_path / "corpus-a", build_tiny_workspace)
    second = _corpus(tmp_path / "corpus-b", build_tiny_workspace, seed=1)
    encoder, ws = f"openclip:{tiny_clip.folder}", tmp_path / "ws"
    with _pg().fresh_database(pg_server_url) as url:
        runs = [mmgen.start(*_index_args(m, ws, url, encoder)) for m in (first, second)]
        for proc in runs:
            proc.wait()
        assert [p.rc for p in runs] == [0, 0], [p.stderr()[-2000:] for p in runs]
        items = _items(url)
        problems = _check(mmgen, ws, url)
    by_corpus: dict[str, list[int]] = {}
    for item_id, corpus, _ in items:
        by_corpus.setdefault(corpus, []).append(item_id)
    assert len(items) == len({(c, k) for _, c, k in items}) == 512  # 256 + 256, none twice
    (a, b) = sorted(by_corpus.values(), key=min)
    assert max(a) < min(b), "the two runs' items interleave"
    assert not problems, problems


def test_searches_while_indexing_on_postgres_fail_never_and_return_only_committed_items(
    tmp_path: Path, pg_server_url: str, tiny_clip: Any, build_tiny_workspace: Any, faults: Any
) -> None:
    mmgen = Commands(faults, tmp_path)
    manifest = _corpus(tmp_path / "corpus", build_tiny_workspace)
    lines = manifest.read_text(encoding="utf-8").splitlines(keepends=True)
    encoder, ws = f"openclip:{tiny_clip.folder}", tmp_path / "ws"
    out, stop = tmp_path / "searches.jsonl", tmp_path / "stop"
    with _pg().fresh_database(pg_server_url) as url:
        manifest.write_text("".join(lines[::4]), encoding="utf-8")  # a quarter of every concept first
        assert mmgen.run(*_index_args(manifest, ws, url, encoder)).rc == 0
        first_max_id = max(i for i, _, _ in _items(url))
        manifest.write_text("".join(lines), encoding="utf-8")
        loop = mmgen.start(str(ws), str(out), str(stop), "a red circle",
                           script=Path(__file__).resolve().parent / "search_loop.py", env={"MMGEN_DB": url})  # fmt: skip
        try:
            deadline = time.monotonic() + 120
            while (not out.exists() or len(out.read_text().splitlines()) < 3) and loop.poll() is None:
                assert time.monotonic() < deadline, "the search loop never started"
                time.sleep(0.05)
            indexing = mmgen.run(*_index_args(manifest, ws, url, encoder))
            time.sleep(0.3)
        finally:
            stop.touch()
            loop.wait(timeout=120)
        assert loop.rc == 0, loop.stderr()[-3000:]
        assert indexing.rc == 0, indexing.stderr()[-3000:]
        items = {i: k for i, _, k in _items(url)}
        _, vectors, _ = _read(ws, url)
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    query = np.asarray(records[0]["query_vector"], dtype=np.float32)
    errors = [r["error"] for r in records[1:] if "error" in r]
    hits = [h for r in records[1:] if "hits" in r for h in r["hits"]]
    wrong = [h for h in hits if items.get(h[0]) != h[1] or abs(float(query @ vectors[(h[1], h[2])]) - h[3]) > 1e-4]
    assert not errors, errors[:2]
    assert len(records) > 5 and hits and not wrong, wrong[:5]
    assert any(h[0] > first_max_id for h in hits), "no search saw an item added while it ran"
