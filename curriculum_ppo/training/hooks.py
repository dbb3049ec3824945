"""What the training loop asks between rollouts and updates: where episodes start, which explore,
what the curriculum learns from the finished ones, and whether to stop.

* :class:`CurriculumHooks` picks each env's next start frame, decides at the start of every
  episode whether it explores (:mod:`curriculum_ppo.exploration`), feeds finished episodes to the
  scheduler and the episode statistics, and moves the curriculum and the stall detector after
  each update.
* :func:`stop_reason` and :class:`StopSignals` are the stop rules: a time budget, the goal of
  ``--stop-at-success``, and SIGINT/SIGTERM.
"""

from __future__ import annotations

import signal
import threading
import time

import numpy as np

from curriculum_ppo.curriculum import CurriculumScheduler, StallDetector
from curriculum_ppo.distributed import DistContext
from curriculum_ppo.exploration import ExplorationBudget
from curriculum_ppo.training.stats import EpisodeStats
from curriculum_ppo.vec.pool import REAL_START

SUCCESS_STOP_MIN_EPISODES = 20
"""``--stop-at-success`` decides on at least this many episodes from the game start (all ranks together)."""


class CurriculumHooks:
    """The curriculum's and the exploration budget's side of the loop, for this rank's ``num_envs`` envs.

    Start frames are drawn over the envs of all ranks (env ``i`` of rank ``r`` is env
    ``r * num_envs + i`` of ``world_size * num_envs``), so that the ranks together cover the window.
    """

    def __init__(self, scheduler: CurriculumScheduler | None, stall: StallDetector, explore: ExplorationBudget,
                 rng: np.random.Generator, dist: DistContext, num_envs: int):
        self.scheduler, self.stall, self.explore, self.rng = scheduler, stall, explore, rng
        self.dist, self.num_envs = dist, num_envs
        self.next_start = np.full(num_envs, REAL_START, np.int64)
        """The start frame each env was last told to use for its next episode (:data:`REAL_START`: the game start)."""
        # This session's exploring episodes (and how many tied the demo): not in the curriculum's statistics.
        self.explored_episodes = self.explored_successes = 0

    @property
    def start_frame(self) -> int | None:
        """Where the curriculum starts episodes now: None without a curriculum, 0 once it is done."""
        if self.scheduler is None:
            return None
        return 0 if self.scheduler.done else self.scheduler.start_frame

    def sample_start(self, env_index: int) -> int:
        """The start frame of env ``env_index``'s next episode (:data:`REAL_START` for the game start)."""
        if self.scheduler is None or self.scheduler.done:
            return REAL_START
        global_index = self.dist.rank * self.num_envs + env_index
        return self.scheduler.sample_start(self.rng, global_index, self.dist.world_size * self.num_envs)

    def set_start(self, pool, env_index: int, start: int) -> None:
        """Tell env ``env_index`` where its next episode starts, on the pool's reset-options channel."""
        self.next_start[env_index] = start
        pool.set_options({"start_frame": None if start == REAL_START else int(start)}, env_index)

    def begin_episode(self, pool, env_index: int) -> None:
        """Env ``env_index`` just began an episode at ``next_start[env_index]`` (the envs restart as soon
        as an episode ends): decide whether it explores (only starts in the curriculum window may),
        then choose where its following episode will start."""
        start = int(self.next_start[env_index])
        sched = self.scheduler
        in_window = sched is not None and not sched.done and start != REAL_START and sched.in_window(start)
        self.explore.begin(env_index, in_window, self.rng)
        self.set_start(pool, env_index, self.sample_start(env_index))

    def start_envs(self, pool) -> None:
        """Begin an episode in every env at a start the curriculum picks."""
        for i in range(self.num_envs):
            self.set_start(pool, i, self.sample_start(i))
        pool.reset()
        for i in range(self.num_envs):
            self.begin_episode(pool, i)

    def record(self, episodes: list[dict], stats: EpisodeStats) -> None:
        """Count finished episodes. Exploring ones train the policy; the curriculum judges the policy on the others."""
        for episode in episodes:
            stats.add(episode)
            if episode.get("explored"):
                self.explored_episodes += 1
                self.explored_successes += bool(episode.get("success"))
            elif self.scheduler is not None and episode.get("start_frame") is not None:
                self.scheduler.record(int(episode["start_frame"]), bool(episode.get("success")))

    def after_update(self, frames: int) -> tuple[str | None, float | None]:
        """Let the curriculum decide (on the counts of all ranks) and the stall detector watch it;
        returns (the curriculum's move or None, the stall detector's new scale if it decayed)."""
        move = None
        if self.scheduler is not None:
            move = self.scheduler.update(self.dist.all_reduce_sum if self.dist.world_size > 1 else None)
        start = self.start_frame
        decayed = self.stall.update(frames, start if start is not None else 0)
        return move, decayed


def stop_reason(max_seconds: float | None, stop_at_success: float | None, started: float,
                scheduler: CurriculumScheduler | None, stats: EpisodeStats, dist: DistContext) -> str | None:
    """Why the run should stop now: ``"time"`` (the time budget), a sentence (the goal), or None.

    Decided jointly by all ranks: every rank calls this at the same point of every iteration and the
    local verdicts are summed in one all-reduce, so that no rank leaves the loop while the others
    still wait for it in a collective (which would hang).
    """
    if max_seconds is None and stop_at_success is None:
        return None
    over_time = max_seconds is not None and time.time() - started >= max_seconds
    at_start = scheduler is None or scheduler.start_frame == 0
    wins = stats.from_start_success
    local = np.array([float(over_time), float(sum(wins)), float(len(wins)), float(at_start)])
    total = dist.all_reduce_sum(local) if dist.world_size > 1 else local
    if total[0] > 0:
        return "time"
    if stop_at_success is not None and total[3] == dist.world_size and total[2] >= SUCCESS_STOP_MIN_EPISODES \
            and total[1] / total[2] >= stop_at_success:
        return f"{total[1] / total[2]:.0%} of the last {int(total[2])} episodes from the game start beat the demo"
    return None


class StopSignals:
    """SIGINT and SIGTERM end the run after the current iteration (with a checkpoint) instead of at once.

    Installed only in the main thread (Python delivers signals there); :attr:`name` is the signal
    that arrived, if any.
    """

    def __init__(self):
        self.name: str | None = None
        self._previous: dict = {}

    def install(self) -> None:
        def handler(signum, _frame):
            self.name = signal.Signals(signum).name
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, handler)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}
