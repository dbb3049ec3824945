"""How bench_train.py times a training loop: the same events and the same arithmetic for every contender.

A loop tells a :class:`LoopClock` when it begins (before it builds its envs and network), when each
rollout starts, when each PPO update has finished (on the device), and when it has closed everything.
Two rates come out of the :class:`LoopRecord`:

* :func:`whole_run_rate`: all agent steps of the run over the whole run's time, set-up and the last
  update included (:func:`bench_train.measure` passes the time from the contender's process start to
  its exit): what a user waits for, for that frame budget;
* :func:`cycles_rate`: the agent steps of rollouts ``skip`` onwards over the time from the start of
  rollout ``skip`` to the end of the last update. Every step counted was collected and trained on
  inside that span, whether the loop runs its rollouts and updates in turn or overlaps them, and the
  first cycle (first calls, allocations) is left out.

Counting from the end of the first update to the end of the last one instead credits an overlapped
loop, whose first rollout after that point is already under way, with one rollout more than it was
timed for.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field


@dataclass
class LoopRecord:
    """The event times (seconds, one clock) of one run of a training loop."""

    steps_per_rollout: int
    begin: float
    rollout_starts: list[float] = field(default_factory=list)
    update_ends: list[float] = field(default_factory=list)
    end: float | None = None

    @property
    def rollouts(self) -> int:
        return len(self.rollout_starts)

    @property
    def total_steps(self) -> int:
        return self.rollouts * self.steps_per_rollout

    def check(self) -> LoopRecord:
        """Raise ValueError unless every rollout was trained on and the events are in order."""
        if self.end is None:
            raise ValueError("the loop never finished")
        if len(self.update_ends) != len(self.rollout_starts):
            raise ValueError(f"{len(self.rollout_starts)} rollouts but {len(self.update_ends)} updates")
        if not self.rollout_starts:
            raise ValueError("no rollout")
        times = [self.begin, *self.rollout_starts, self.end]
        if sorted(times) != times or sorted(self.update_ends) != self.update_ends:
            raise ValueError("events out of order")
        if any(u < r for r, u in zip(self.rollout_starts, self.update_ends)) or self.update_ends[-1] > self.end:
            raise ValueError("an update ended before its rollout started, or after the loop")
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> LoopRecord:
        return cls(**data)


class LoopClock:
    """Collects a :class:`LoopRecord`; the loop calls it at each event, nothing else."""

    def __init__(self, steps_per_rollout: int, clock: Callable[[], float] = time.perf_counter):
        self._clock = clock
        self.record = LoopRecord(steps_per_rollout=steps_per_rollout, begin=clock())

    def rollout_started(self) -> None:
        self.record.rollout_starts.append(self._clock())

    def update_finished(self) -> None:
        """Call once the update's work is done (on a GPU: after a device synchronize)."""
        self.record.update_ends.append(self._clock())

    def finished(self) -> LoopRecord:
        self.record.end = self._clock()
        return self.record.check()


def whole_run_rate(record: LoopRecord, seconds: float | None = None) -> float:
    """Agent steps per second over the whole run: ``seconds`` if given (e.g. process start to exit),
    else from the clock's begin to the loop's end."""
    record.check()
    span = record.end - record.begin if seconds is None else seconds
    return record.total_steps / span


def cycles_rate(record: LoopRecord, skip: int = 1) -> float:
    """Agent steps per second of complete collect+update cycles, from the start of rollout ``skip``
    (0-based) to the end of the last update, credited with the rollouts started in that span."""
    record.check()
    if not 0 <= skip < record.rollouts:
        raise ValueError(f"cannot skip {skip} of {record.rollouts} rollouts")
    span = record.update_ends[-1] - record.rollout_starts[skip]
    return (record.rollouts - skip) * record.steps_per_rollout / span
