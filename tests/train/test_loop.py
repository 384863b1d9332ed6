"""The shared training loop: schedules, budgets, time caps, divergence, interrupts and resume modes."""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest

from mmgen.errors import ConfigError
from mmgen.train.loop import (
    Budget,
    LoopSettings,
    LoopState,
    Schedule,
    TrainingDivergedError,
    resume_state,
    run_loop,
)
from mmgen.train.state import save_state


def _settings(budget: Budget, **kw: object) -> LoopSettings:
    return LoopSettings(label="test", budget=budget, warmup=lambda total: 2, progress=False, **kw)  # type: ignore[arg-type]


def test_schedule_warms_up_then_decays_to_its_floor_or_stays_constant() -> None:
    cosine = Schedule("cosine", floor=0.1)
    assert cosine.factor(0, 4, 20) == pytest.approx(0.25) and cosine.factor(3, 4, 20) == pytest.approx(1.0)
    assert cosine.factor(4, 4, 20) == pytest.approx(1.0) and cosine.factor(20, 4, 20) == pytest.approx(0.1)
    assert cosine.factor(12, 4, 20) == pytest.approx(0.1 + 0.9 * 0.5)
    assert Schedule("constant").factor(19, 4, 20) == 1.0
    assert cosine.factor(50, 4, None) == 1.0  # not planned yet


def test_budget_words_have_one_meaning() -> None:
    assert Budget(steps=7).planned_steps() == 7
    assert Budget(epochs=1.5, steps_per_epoch=10).planned_steps() == 15
    assert Budget(minutes=1).planned_steps() is None  # planned after calibration
    assert Budget(default_steps=9).planned_steps() == 9
    assert Budget(default_minutes=3).planned_steps() is None and Budget(default_minutes=3).effective_minutes == 3
    assert Budget(steps=5, minutes=2).effective_minutes == 2  # with steps, minutes caps the loop
    assert Budget(steps=5, default_minutes=3).effective_minutes is None
    with pytest.raises(ConfigError, match="not both"):
        Budget(steps=1, epochs=1).check()
    with pytest.raises(ConfigError, match="positive"):
        Budget(minutes=0).check()


def test_loop_runs_the_planned_steps_with_the_schedule_and_records_the_curve() -> None:
    seen: list[tuple[int, float]] = []

    def step(n: int, factor: float) -> tuple[float, int]:
        seen.append((n, factor))
        return 1.0 / (n + 1), 4

    state = LoopState()
    snapshots: list[int] = []
    status = run_loop(step, state, _settings(Budget(steps=10), snapshot=lambda: snapshots.append(state.step)))
    assert status == "completed" and state.step == 10 and state.samples_seen == 40
    assert [n for n, _ in seen] == list(range(10)) and seen[0][1] == pytest.approx(0.5)
    assert seen[-1][1] < seen[2][1] and len(state.curve) == 10 and snapshots == [10]


def test_minutes_cap_a_fixed_run_and_plan_an_open_one() -> None:
    def slow(n: int, factor: float) -> tuple[float, int]:
        time.sleep(0.01)
        return 1.0, 1

    capped = LoopState()
    assert run_loop(slow, capped, _settings(Budget(steps=10_000, minutes=0.05 / 60))) == "time-capped"
    assert capped.stopped_early and 1 <= capped.step < 10_000
    planned = LoopState()
    status = run_loop(slow, planned, _settings(Budget(minutes=0.3 / 60)))
    assert planned.total_steps is not None and planned.warmup_steps == 2
    assert status in ("completed", "time-capped") and planned.step <= planned.total_steps


def test_divergence_is_a_typed_error_and_interrupts_end_the_run() -> None:
    with pytest.raises(TrainingDivergedError, match="diverged at step 2"):
        run_loop(lambda n, f: (math.nan if n == 2 else 1.0, 1), LoopState(), _settings(Budget(steps=5)))

    def stop_at_3(state: LoopState, factor: float) -> None:
        if state.step == 3:
            raise KeyboardInterrupt

    state = LoopState()
    assert run_loop(lambda n, f: (1.0, 1), state, _settings(Budget(steps=9), on_step=stop_at_3)) == "interrupted"
    assert state.step == 3


def test_resume_modes(tmp_path: Path) -> None:
    path = tmp_path / "state.pt"
    assert resume_state(path, "abc", "auto") is None and resume_state(path, "abc", "never") is None
    with pytest.raises(ConfigError, match="no saved training state"):
        resume_state(path, "abc", "require")
    save_state(path, {"fingerprint": "abc", "run": {"step": 4}})
    assert resume_state(path, "abc", "require")["run"]["step"] == 4
    assert resume_state(path, "abc", "never") is None
    assert resume_state(path, "other", "auto") is None
    with pytest.raises(ConfigError, match="another configuration"):
        resume_state(path, "other", "require")
    with pytest.raises(ConfigError, match="--resume must be one of"):
        resume_state(path, "abc", "sometimes")


def test_states_saved_by_the_old_loops_load() -> None:
    state = LoopState.from_json({"step": 3, "warmup": 7, "_window": [1.0], "unknown": 1})
    assert state.step == 3 and state.warmup_steps == 7 and state.window == [1.0]
