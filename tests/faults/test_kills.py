"""SIGKILL at seeded random moments, then the same command again: nothing lost, nothing twice, a clean check.

Each kill: a fresh starting workspace, the command started as a real process, SIGKILL after a
delay drawn uniformly in [0.3 s, the command's uninterrupted wall time (conftest: `calibrate`)],
the same command run to completion,
then `mmgen check --json` (clean but for info notes), items and index rows against the manifest,
vectors (and codes) against a clean run's, a search; for the trainers a loadable model with its
manifest and one models row. Every kill is recorded with where it landed (before the command
changed anything durable, during, or after it had exited) so the coverage is visible, not assumed.
"""

from __future__ import annotations

from typing import Any

import pytest

# The killed commands (tests/faults/conftest.py builds each one's clean reference and verification).
COMMANDS = ("index", "index --hash", "index --reembed", "train encoder", "train hasher")
SHORT_KILLS = 3
SLOW_KILLS = 20


def _kills(faults: Any, name: str, seeds: range) -> list[dict[str, Any]]:
    records = faults.kill_cycles(name, seeds)
    failed = [r for r in records if not r["ok"]]
    assert not failed, f"{name}: {len(failed)} of {len(records)} kills broke a guarantee:\n" + _failures(failed)
    return records


def _failures(records: list[dict[str, Any]]) -> str:
    keep = ("seed", "delay_s", "landed", "detail", "rerun_rc", "rerun_error", "lost", "duplicates", "stray_items",
            "max_vector_diff", "codes_differing", "check_problems", "search_error", "load_error", "completed",
            "workspace")  # fmt: skip
    return "\n".join(str({k: r[k] for k in keep if k in r}) for r in records)


@pytest.mark.parametrize("name", COMMANDS)
def test_killed_then_rerun_loses_and_duplicates_nothing(faults: Any, name: str) -> None:
    records = _kills(faults, name, range(SHORT_KILLS))
    assert all(r["lost"] == 0 and r["duplicates"] == 0 for r in records)


@pytest.mark.slow
@pytest.mark.parametrize("name", COMMANDS)
def test_many_kills_lose_and_duplicate_nothing(faults: Any, name: str) -> None:
    records = _kills(faults, name, range(1000, 1000 + SLOW_KILLS))
    assert all(r["lost"] == 0 and r["duplicates"] == 0 for r in records)
    # Honest coverage: most kills must land while the command works, not before it starts or after it ends.
    during = sum(r["landed"] == "during" for r in records)
    assert during >= len(records) // 2, f"{name}: only {during} of {len(records)} kills landed mid-run"
