"""Two writers and a reader at once, as real processes on one workspace.

- Two `mmgen index` runs on one index: the second waits for the first's lock (or refuses with a
  clear message, and then finishes when run again); their batches never interleave, nothing is
  lost or doubled, and the check is clean.
- Searches looping in another process while `mmgen index` adds items (and `mmgen search` run over
  and over beside them): no search fails, and every hit is a committed item whose stored vector
  gives the score the search reported.
"""

from __future__ import annotations

import itertools
import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

SEARCH_LOOP = Path(__file__).resolve().parent / "search_loop.py"
QUERY = "a red circle"
CLEAR_REFUSAL = ("another", "lock", "in use", "busy", "running")
SCORE_TOLERANCE = 1e-4


def _swap_manifest(argv: list[str], old: Path, new: Path) -> list[str]:
    return [str(new) if a == str(old) else a for a in argv]


@pytest.mark.parametrize(("second", "gap_s"), [("other", 0.0), pytest.param("other", 0.6, marks=pytest.mark.slow),
                                               ("same", 0.0)])  # fmt: skip
def test_two_indexers_at_once_wait_and_never_interleave(faults: Any, second_manifest: Path, fault_summary: dict,
                                                        second: str, gap_s: float) -> None:  # fmt: skip
    ws = faults.root / "concurrent" / f"{second}-{gap_s}" / "ws"
    first_argv = faults.index_argv(ws, "--encoder", faults.encoder_a)
    manifest_b = second_manifest if second == "other" else faults.manifest
    second_argv = _swap_manifest(first_argv, faults.manifest, manifest_b)
    one = faults.launcher.start(first_argv, faults.root, f"both-1-{second}")
    if gap_s:
        time.sleep(gap_s)
    two = faults.launcher.start(second_argv, faults.root, f"both-2-{second}")
    rc1, rc2 = one.wait(), two.wait()
    outcome: dict[str, Any] = {"rc": [rc1, rc2]}
    for proc, argv, rc in ((one, first_argv, rc1), (two, second_argv, rc2)):
        if rc != 0:  # a refusal must say why; the same command run again must then finish
            message = proc.stderr()
            outcome.setdefault("refusals", []).append(message.strip()[-400:])
            clear = rc == 2 and any(word in message.lower() for word in CLEAR_REFUSAL)
            assert clear, f"a failure, not a clear refusal ({rc}): {message[-3000:]}"
            faults.run_ok(argv, "after-refusal")
    outcome["added"] = [json.loads(p.stdout())["added"] for p, rc in ((one, rc1), (two, rc2)) if rc == 0]

    state = faults.read_index(ws)
    keys_b = [json.loads(line)["id"] for line in manifest_b.read_text().splitlines()]
    expected = {(str(faults.manifest), k) for k in faults.keys} | {(str(manifest_b), k) for k in keys_b}
    items = [(corpus, key) for _, corpus, key in state.items]
    assert len(items) == len(set(items)), "an item was stored twice"
    assert set(items) == expected, f"items lost: {len(expected - set(items))}, unexpected: {len(set(items) - expected)}"
    corpus_of = {iid: corpus for iid, corpus, _ in state.items}
    for modality in ("image", "text"):
        rows = sorted((rid, corpus_of[iid]) for m, rid, iid in state.rows if m == modality)
        assert len(rows) == len(expected) == len({r for r, _ in rows}), f"{modality}: rows lost or doubled"
        # Never interleaved: in slot order the corpus changes at most once (one run's batches, then the other's).
        switches = sum(a[1] != b[1] for a, b in itertools.pairwise(rows))
        outcome[f"{modality}_corpus_switches"] = switches
        assert switches <= 1, f"{modality}: the two runs' batches interleaved ({switches} switches in slot order)"
    outcome.update(faults.check(ws))
    fault_summary["concurrency"][f"two indexers, {second} manifest, second started {gap_s} s later"] = outcome
    assert outcome["check_ok"], outcome


def test_searches_while_indexing_fail_never_and_return_only_committed_items(faults: Any, fault_summary: dict) -> None:
    base = faults.root / "reading"
    shutil.rmtree(base, ignore_errors=True)
    corpus = Path(shutil.copytree(faults.manifest.parent, base / "corpus"))
    manifest = corpus / faults.manifest.name
    lines = manifest.read_text(encoding="utf-8").splitlines(keepends=True)
    ws = base / "ws"
    argv = _swap_manifest(faults.index_argv(ws, "--encoder", faults.encoder_a), faults.manifest, manifest)
    manifest.write_text("".join(lines[::4]), encoding="utf-8")  # a quarter of every concept first
    faults.run_ok(argv, "reading-first")
    first_max_id = max(iid for iid, _, _ in faults.read_index(ws).items)
    manifest.write_text("".join(lines), encoding="utf-8")

    out, stop = base / "searches.jsonl", base / "stop"
    loop = faults.launcher.start([str(ws), str(out), str(stop), QUERY], faults.root, "search-loop", script=SEARCH_LOOP)
    indexer = None
    try:
        deadline = time.monotonic() + 120
        while (not out.exists() or len(out.read_text().splitlines()) < 3) and loop.poll() is None:
            assert time.monotonic() < deadline, "the search loop never started"
            time.sleep(0.05)
        assert loop.poll() is None, loop.stderr()[-3000:]

        indexer = faults.launcher.start(argv, faults.root, "reading-index")
        started = time.time()
        cli: list[tuple[int | None, str, str]] = []
        while indexer.poll() is None:  # `mmgen search` processes too, one after another, while it runs
            proc, _ = faults.launcher.run(["search", QUERY, *faults.ws_args(ws), "-k", "10", "--json"], faults.root,
                                          "reading-cli")  # fmt: skip
            cli.append((proc.rc, proc.stdout(), proc.stderr()))
        ended = time.time()
        time.sleep(0.3)
    finally:
        stop.touch()
        loop.wait(timeout=60)
        if indexer is not None:
            indexer.kill()
    assert loop.rc == 0, loop.stderr()[-3000:]
    assert indexer.rc == 0, indexer.stderr()[-3000:]

    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    query = np.asarray(records[0]["query_vector"], dtype=np.float32)
    searches = [r for r in records[1:] if "hits" in r]
    errors = [r["error"] for r in records[1:] if "error" in r]
    errors += [f"mmgen search rc {rc}: {err[-1500:]}" for rc, _, err in cli if rc != 0]
    state = faults.read_index(ws)
    key_of = {iid: key for iid, _, key in state.items}
    vectors = state.by_key()
    hits = [(h, r["t"]) for r in searches for h in r["hits"]]
    hits += [((h["id"], h["key"], h["modality"], h["score"]), ended) for rc, text, _ in cli if rc == 0
             for h in json.loads(text)["hits"]]  # fmt: skip
    wrong = [h for h, _ in hits if key_of.get(h[0]) != h[1]
             or abs(float(query @ vectors[(h[1], h[2])]) - h[3]) > SCORE_TOLERANCE]  # fmt: skip
    during = [r for r in searches if started <= r["t"] <= ended]
    new_seen = sum(h[0] > first_max_id for h, t in hits if t <= ended)
    outcome = {"searches": len(searches) + len(cli), "during_indexing": len(during) + len(cli),
               "cli_searches": len(cli), "errors": len(errors), "hits_checked": len(hits), "wrong_hits": len(wrong),
               "hits_on_items_committed_mid_run": new_seen, "indexing_s": round(ended - started, 2)}  # fmt: skip
    fault_summary["concurrency"]["searches while indexing"] = outcome
    assert not errors, "searches failed while indexing:\n" + "\n".join(errors[:5])
    assert not wrong, f"hits that are not committed items or carry another item's score: {wrong[:5]}"
    assert len(during) >= 4, f"only {len(during)} searches ran while the indexer did: {outcome}"
    assert new_seen > 0, f"no search saw an item committed mid-run, so none observed the index changing: {outcome}"
