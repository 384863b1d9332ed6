"""Fuzz tests (hypothesis): bounded, derandomised runs, so CI sees the same examples every time.

`MMGEN_FUZZ_EXAMPLES=N` raises the example count of every fuzz test (default 60) for a longer
local run; the examples stay derandomised, so a failure found that way reproduces with the same N.
Nothing is stored between runs (no `.hypothesis/` database): a failing example is printed, and
each one found so far is kept as a plain regression test beside its fuzz test.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

DEFAULT_EXAMPLES = 60


def _examples() -> int:
    raw = os.environ.get("MMGEN_FUZZ_EXAMPLES", "")
    try:
        return max(1, int(raw)) if raw else DEFAULT_EXAMPLES
    except ValueError:
        return DEFAULT_EXAMPLES


settings.register_profile(
    "mmgen-fuzz",
    max_examples=_examples(),
    deadline=None,  # file and database round trips vary with the machine; hangs are caught by timeouts
    derandomize=True,
    database=None,
    print_blob=True,
    # Examples write files and rows; huge fields and deep nesting are slow to generate on purpose.
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)
settings.load_profile("mmgen-fuzz")
