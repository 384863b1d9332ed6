"""The one training loop shared by the encoder, hasher, captioner and generator trainers.

A trainer builds its model and data and hands `run_loop` a step function: given the step number
and the learning-rate factor of the schedule, it runs one optimiser step and returns the loss
and how many samples it saw. The loop owns everything else:

- the schedule: linear warm-up, then cosine decay (to a floor) or a constant rate (`Schedule`);
- the budget (`Budget`), with one meaning for each word in every `mmgen train` command:
  - `steps` or `epochs` fix the number of optimiser steps;
  - `minutes` is the time budget of the loop (its steps' wall-clock time, summed over resumed
    runs; data preparation and snapshots excluded). Without steps or epochs the loop times a few
    steps, then plans the schedule to end at that time. With them, it stops the loop at that time
    if the steps are not done. Either way the model is saved, with status "time-capped" when
    the clock, not the schedule, ended the run;
- the progress bar, the loss average (EMA) and the loss curve (one point per 1% of the run);
- `TrainingDivergedError` for a loss that is not finite;
- snapshots every `checkpoint_minutes`, and at the end, through the trainer's `snapshot` callback;
- Ctrl-C: the first finishes the current step, then stops (status "interrupted"); a second one
  interrupts at once.

`LoopState` holds the counters a training state saves, so a resumed run continues its
schedule and its curve.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mmgen.errors import ConfigError
from mmgen.train.state import StopOnInterrupt

# A time budget times this many steps before it plans the schedule.
CALIBRATION_STEPS = 8
# Warm-up used while a time budget is still calibrating (replaced once the schedule is planned).
PROVISIONAL_WARMUP = 200
# A planned schedule may overrun its minutes by this factor before the loop is stopped.
DEADLINE_FACTOR = 1.25
CURVE_POINTS = 100
STATUSES = ("completed", "time-capped", "interrupted")


class TrainingDivergedError(ConfigError):
    """The training loss became NaN or infinite."""


@dataclass(frozen=True)
class Schedule:
    """Linear warm-up over `warmup` steps, then `cosine` decay to `floor` x the base rate at the
    last step, or a `constant` rate."""

    decay: str = "cosine"
    floor: float = 0.0

    def factor(self, step: int, warmup: int, total: int | None) -> float:
        """The learning-rate factor at `step` (0-based) of a run of `total` steps (None: not planned yet)."""
        if step < warmup:
            return (step + 1) / warmup
        if self.decay == "constant" or total is None:
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return self.floor + (1.0 - self.floor) * 0.5 * (1 + math.cos(math.pi * progress))


@dataclass(frozen=True)
class Budget:
    """How long a run trains: `steps`, or `epochs` of `steps_per_epoch`, and/or `minutes` (see the module)."""

    steps: int | None = None
    epochs: float | None = None
    minutes: float | None = None
    steps_per_epoch: int = 1
    default_steps: int | None = None  # when nothing is given: this many steps ...
    default_minutes: float | None = None  # ... or a schedule planned to fill this many minutes

    def check(self) -> None:
        """ConfigError for contradictory or non-positive budgets."""
        if self.steps is not None and self.epochs is not None:
            raise ConfigError("give steps or epochs, not both")
        for key in ("steps", "epochs", "minutes"):
            value = getattr(self, key)
            if value is not None and value <= 0:
                raise ConfigError(f"{key} must be positive, not {value!r}")

    @property
    def effective_minutes(self) -> float | None:
        """The wall-clock budget that applies: `minutes`, else `default_minutes` when nothing else is given."""
        if self.minutes is not None:
            return self.minutes
        if self.steps is None and self.epochs is None and self.default_steps is None:
            return self.default_minutes
        return None

    def planned_steps(self) -> int | None:
        """Steps fixed before the run; None when the minutes alone decide (planned after calibration)."""
        if self.steps is not None:
            return int(self.steps)
        if self.epochs is not None:
            return max(1, math.ceil(self.epochs * self.steps_per_epoch))
        if self.effective_minutes is not None:
            return None
        if self.default_steps is None:
            raise ConfigError("give steps, epochs or minutes")
        return int(self.default_steps)


@dataclass
class LoopState:
    """The counters of a run, saved with a training state so that a resumed run continues."""

    step: int = 0
    total_steps: int | None = None
    warmup_steps: int | None = None
    samples_seen: int = 0
    elapsed_s: float = 0.0
    last_loss: float | None = None
    loss_ema: float | None = None
    stopped_early: bool = False
    curve: list[list[float]] = field(default_factory=list)  # [step, mean loss] per 1% of the run
    window: list[float] = field(default_factory=list)

    def record(self, loss: float, ema_decay: float) -> None:
        """Count one step's loss into the average and the curve."""
        self.last_loss = loss
        self.loss_ema = loss if self.loss_ema is None else ema_decay * self.loss_ema + (1 - ema_decay) * loss
        self.window.append(loss)
        if len(self.window) >= max(1, (self.total_steps or 1000) // CURVE_POINTS):
            self.curve.append([self.step, round(float(np.mean(self.window)), 5)])
            self.window.clear()

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LoopState:
        """A state saved with `dataclasses.asdict` (older names accepted: `_window`, `warmup`)."""
        data = dict(data)
        if "_window" in data:
            data["window"] = data.pop("_window")
        if "warmup" in data:
            data["warmup_steps"] = data.pop("warmup")
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class LoopSettings:
    """What the loop needs besides the step function."""

    label: str  # progress bar text
    budget: Budget
    warmup: Callable[[int], int]  # warm-up steps for a planned total
    schedule: Schedule = Schedule()
    ema_decay: float = 0.95
    progress: bool = True
    checkpoint_minutes: float | None = None
    snapshot: Callable[[], None] | None = None  # saves a training state (periodically and at the end)
    on_step: Callable[[LoopState, float], None] | None = None  # after each step, with the rate factor used
    postfix_digits: int = 3


StepFn = Callable[[int, float], tuple[float, int]]


def run_loop(step_fn: StepFn, state: LoopState, settings: LoopSettings) -> str:
    """Train until the budget is spent; returns the status ("completed", "time-capped" or "interrupted").

    `step_fn(step, lr_factor)` runs one optimiser step and returns (loss, samples in the batch).
    KeyboardInterrupt (also raised from `on_step`) ends the run as "interrupted"; the snapshot
    callback is called at the end whatever the status.
    """
    from tqdm.auto import tqdm

    budget = settings.budget
    budget.check()
    if state.total_steps is None:
        state.total_steps = budget.planned_steps()
    if state.total_steps is not None and state.warmup_steps is None:
        state.warmup_steps = settings.warmup(state.total_steps)
    planning = state.total_steps is None
    minutes = budget.effective_minutes
    deadline = None if minutes is None else minutes * 60 * (DEADLINE_FACTOR if planning else 1.0)
    bar = tqdm(
        total=state.total_steps, initial=state.step, desc=settings.label, unit="step",
        disable=not settings.progress, dynamic_ncols=True,
    )  # fmt: skip
    last_save = time.monotonic()
    calibration: tuple[float, int] | None = None
    status = "completed"
    stop = StopOnInterrupt()
    try:
        while (state.total_steps is None or state.step < state.total_steps) and not stop.requested:
            t0 = time.perf_counter()
            warmup = state.warmup_steps if state.warmup_steps is not None else PROVISIONAL_WARMUP
            factor = settings.schedule.factor(state.step, warmup, state.total_steps)
            loss, samples = step_fn(state.step, factor)
            if not math.isfinite(loss):
                raise TrainingDivergedError(f"{settings.label}: training diverged at step {state.step} (loss {loss}); "
                                            "lower the learning rate (--lr)")
            state.step += 1
            state.samples_seen += int(samples)
            state.elapsed_s += time.perf_counter() - t0
            state.record(loss, settings.ema_decay)
            rate = state.samples_seen / max(state.elapsed_s, 1e-9)
            bar.update(1)
            bar.set_postfix(loss=f"{state.loss_ema:.{settings.postfix_digits}f}", samples_s=f"{rate:.0f}", refresh=False)
            if state.total_steps is None:  # a time budget: time a few steps, then fix the schedule
                if calibration is None:
                    calibration = (state.elapsed_s, state.step)
                elif state.step - calibration[1] >= CALIBRATION_STEPS:
                    per_step = (state.elapsed_s - calibration[0]) / (state.step - calibration[1])
                    state.total_steps = max(state.step + 1, int((minutes or 0) * 60 / max(per_step, 1e-9)))
                    state.warmup_steps = settings.warmup(state.total_steps)
                    bar.reset(total=state.total_steps)
                    bar.update(state.step)
            if settings.on_step is not None:
                settings.on_step(state, factor)
            if deadline is not None and state.elapsed_s > deadline and (
                state.total_steps is None or state.step < state.total_steps
            ):
                state.stopped_early = True
                status = "time-capped"
                break
            if (
                settings.snapshot is not None
                and settings.checkpoint_minutes is not None
                and time.monotonic() - last_save > settings.checkpoint_minutes * 60
            ):
                settings.snapshot()
                last_save = time.monotonic()
    except KeyboardInterrupt:
        status = "interrupted"
    finally:
        stop.restore()
        bar.close()
    if stop.requested:
        status = "interrupted"
    if settings.snapshot is not None:
        settings.snapshot()
    return status


def resume_state(path: Any, fingerprint: str, mode: str) -> dict[str, Any] | None:
    """The saved training state to resume, by `mode`: "auto" (when it matches the configuration's
    fingerprint), "never", or "require" (ConfigError when there is none or it does not match)."""
    from mmgen.train.state import load_state

    if mode not in RESUME_MODES:
        raise ConfigError(f"--resume must be one of {', '.join(RESUME_MODES)}, not {mode!r}")
    if mode == "never":
        return None
    state = load_state(path)
    if state is not None and state.get("fingerprint") != fingerprint:
        if mode == "require":
            raise ConfigError(
                f"{path} was saved by another configuration or other data; cannot resume it "
                "(run with --resume never to start over)"
            )
        return None
    if state is None and mode == "require":
        raise ConfigError(f"no saved training state at {path} to resume (run with --resume auto or never)")
    return state


RESUME_MODES = ("auto", "never", "require")
