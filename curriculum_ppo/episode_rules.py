"""When does an episode that starts from a demo state succeed, and when is it cut?

An episode started at demo frame ``start`` *succeeds* when the agent's score
since the start ties or beats what the demo scored from that frame up to a
*target* frame. Success is what the curriculum counts. Two success rules pick
the target (``EpisodeRulesConfig.success_rule``):

* ``"demo_end"`` (the original work's rule): the target is the demo's end, so
  the agent must tie the demo's whole *returns-to-go*. A successful episode
  plays everything that is left of the demo, so an episode's cost grows with
  the distance to the demo's last reward, and a start further before it than
  ``max_episode_frames`` can never succeed.
* ``"horizon"``: the target is the demo's first *reward event* (a frame whose
  reward is positive) at or after ``start + success_horizon``; the agent must
  reach the score the demo had right after that event. A successful episode
  therefore needs about ``success_horizon`` frames plus the reward-free gap that
  follows, whatever is left of the demo. Requiring a future reward event (and
  not "survive ``success_horizon`` frames") is what keeps an agent that stands
  still from passing a reward-free stretch: from every start it must reach at
  least one more of the demo's rewards. Where no reward event lies at or after
  ``start + success_horizon``, the target is ``start + success_horizon`` (or
  the demo's end, if that comes first); a demo shorter than the horizon is
  judged exactly as under ``"demo_end"``.

Where nothing positive is left to score before the target (e.g. after the
demo's last reward), tying the demo means *surviving as long as the demo did*
up to the target, with a score gain of at least 0.

Two rules keep episodes short and informative (both end the episode as a
*truncation*, i.e. a time limit, not a game over, so the value function
bootstraps through them):

* After success the agent plays a random number of extra frames,
  ``int(exp(U(0, scale)))`` (the original used ``exp(U * 7)``: mostly short,
  occasionally ~1000 frames). The agent thus also learns what happens right
  after the demo's achievement without every episode running to the end.
* *Lagging*: an agent that falls too far behind the demo's score timeline
  (it has not collected the points the demo had collected ``lag_allowance``
  frames ago) is cut; it is unlikely to still catch up, and the frames are
  better spent on new episodes.

Everything is measured in emulator frames, which are also demo frames (the
demo is recorded one state per emulator frame). An agent acting with
frameskip 4 therefore advances ``frames_elapsed`` by 4 per step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from curriculum_ppo.config_flags import knob
from curriculum_ppo.errors import UserError

REASON_SUCCESS_EXTRA_DONE = "success_extra_done"
REASON_HORIZON = "horizon"
REASON_LAGGING = "lagging"
REASON_MAX_FRAMES = "max_frames"
SUCCESS_RULES = ("horizon", "demo_end")


@dataclass
class EpisodeRulesConfig:
    """When an episode from a demo start succeeds and when it is cut (the module docstring says why)."""

    success_rule: str = knob("horizon", flag="--success-rule", choices=SUCCESS_RULES,
                             help="horizon: tie the demo's score at its first reward event at or after start + "
                                  "--success-horizon; demo_end: tie the demo's whole remaining return (the "
                                  "original rule; an episode's cost grows with what is left of the demo)")

    success_horizon: int = knob(2000, flag="--success-horizon", metavar="FRAMES",
                                help="frames past the start after which the horizon rule's target reward event "
                                     "may lie")

    lag_allowance: int = knob(60, flag="--lag-allowance", metavar="FRAMES",
                              help="frames the agent may fall behind the demo's score timeline before the episode "
                                   "is cut (60 frames = 15 agent steps)")

    score_deficit_allowance: float = 0.0
    """Points the agent may be short of the demo's score (``lag_allowance`` frames ago) before being cut."""

    extra_frames_scale: float = 7.0
    """After success, play ``int(exp(U(0, scale)))`` more frames, then truncate."""

    max_episode_frames: int = knob(4500 * 4, flag="--max-episode-frames", metavar="FRAMES",
                                   help="time limit of one episode from a demo start, in emulator frames: the "
                                        "episode rules' limit, not the env's own hard cap (which has no flag and "
                                        "also ends episodes from the game start)")
    """Not the env's cap (``AtariConfig.max_episode_frames``), which ends every episode, demo start or not."""

    def __post_init__(self) -> None:
        if self.success_rule not in SUCCESS_RULES:
            raise UserError(f"--success-rule must be one of {', '.join(SUCCESS_RULES)}, got {self.success_rule!r}")
        if self.success_horizon < 1:
            raise UserError(f"--success-horizon must be >= 1 frame, got {self.success_horizon}")
        if self.lag_allowance < 0:
            raise UserError(f"--lag-allowance must be >= 0 frames, got {self.lag_allowance}")
        if self.extra_frames_scale < 0:
            raise UserError(f"extra frames scale must be >= 0, got {self.extra_frames_scale}")
        if self.max_episode_frames < 1:
            raise UserError(f"--max-episode-frames must be >= 1, got {self.max_episode_frames}")


@dataclass(frozen=True)
class Verdict:
    success: bool
    """The agent has tied or beaten the demo (at this step or earlier)."""

    truncated: bool
    """The episode must end now as a time limit (not a game over)."""

    reason: str | None
    """Why it was truncated: ``"success_extra_done"`` (the demo's end tied, extra frames played),
    ``"horizon"`` (a horizon target before the demo's end tied, extra frames played), ``"lagging"``,
    ``"max_frames"``, or ``None``."""


def demo_cumulative_return(rewards: np.ndarray) -> np.ndarray:
    """``cum[t]`` = sum of demo rewards of frames ``< t``; length ``N + 1``."""
    rewards = np.asarray(rewards, dtype=np.float64)
    return np.concatenate([[0.0], np.cumsum(rewards)])


def success_targets(demo_cumulative_return: np.ndarray, config: EpisodeRulesConfig | None = None,
                    starts: np.ndarray | None = None) -> np.ndarray:
    """``target[t]``: the demo frame whose score an episode started at frame ``t`` must tie (length ``N + 1``,
    or one per given ``starts``: an episode's tracker asks for its own start only).

    The demo has that score at frame ``target[t]``, i.e. after its action ``target[t] - 1``. Under
    ``"demo_end"`` every target is ``N``. Under ``"horizon"`` it is one past the first positive reward
    event at or after ``t + success_horizon``; where there is none, ``min(N, t + success_horizon)`` (so a
    reward-free tail is survived for at most the horizon, not to its end). Pure and vectorized, so the
    whole demo's targets (and the stretch each start needs, ``target - t``) cost one pass.
    """
    config = config if config is not None else EpisodeRulesConfig()
    cum = np.asarray(demo_cumulative_return, dtype=np.float64)
    n = len(cum) - 1
    starts = np.arange(n + 1) if starts is None else np.asarray(starts, dtype=np.int64)
    if config.success_rule == "demo_end":
        return np.full(len(starts), n, dtype=np.int64)
    events = np.flatnonzero(np.diff(cum) > 0)  # frames f whose action f earned a positive reward
    first = np.searchsorted(events, starts + config.success_horizon, side="left")
    target = np.minimum(n, starts + config.success_horizon).astype(np.int64)
    found = first < len(events)
    target[found] = events[first[found]] + 1
    return target


def success_stretches(demo_cumulative_return: np.ndarray, config: EpisodeRulesConfig | None = None) -> np.ndarray:
    """``stretch[t]``: frames the demo itself took, from frame ``t``, to reach what an episode started there must tie.

    Where something positive is left to score before the target, that is one past the last positive reward
    event before the target; otherwise the survival time to the target. An agent playing exactly as the demo
    succeeds after ``stretch[t]`` frames, so this is the least an episode from ``t`` must last.
    """
    cum = np.asarray(demo_cumulative_return, dtype=np.float64)
    targets = success_targets(cum, config)
    starts = np.arange(len(cum))
    events = np.flatnonzero(np.diff(cum) > 0)
    last = np.searchsorted(events, targets, side="left") - 1  # last event f < target
    scoring = (cum[targets] - cum[starts] > 0) & (last >= 0)
    reach = targets.copy()
    reach[scoring] = events[last[scoring]] + 1
    return reach - starts


def unreachable_starts(demo_cumulative_return: np.ndarray, config: EpisodeRulesConfig | None = None) -> np.ndarray:
    """Demo frames from which success is impossible within ``max_episode_frames``, even playing as fast as the demo.

    The curriculum would stall there without saying why; training reports them (see
    :func:`unreachable_message`).
    """
    config = config if config is not None else EpisodeRulesConfig()
    return np.flatnonzero(success_stretches(demo_cumulative_return, config) > config.max_episode_frames)


def unreachable_message(demo_cumulative_return: np.ndarray, config: EpisodeRulesConfig | None = None) -> str | None:
    """One line saying which starts can never succeed and which flag to change, or ``None`` if every start can."""
    config = config if config is not None else EpisodeRulesConfig()
    bad = unreachable_starts(demo_cumulative_return, config)
    if len(bad) == 0:
        return None
    longest = int(success_stretches(demo_cumulative_return, config).max())
    fix = ("raise --max-episode-frames or use --success-rule horizon" if config.success_rule == "demo_end"
           else "raise --max-episode-frames or lower --success-horizon")
    return (f"demo starts at frames {int(bad.min())}..{int(bad.max())} ({len(bad)} frames) can never succeed: "
            f"tying the demo from there takes up to {longest} frames, over the episode cap of "
            f"{config.max_episode_frames} (--max-episode-frames); the curriculum will stall before them; {fix}")


class DemoEpisodeTracker:
    """Applies the rules to one episode; call :meth:`step` after every agent step.

    ``demo_cumulative_return[t]`` is the demo's score accumulated before frame
    ``t`` (length ``N + 1``, see :func:`demo_cumulative_return`), so the demo's
    score from ``start`` to the target frame ``T`` is ``cum[T] - cum[start]``
    (see :func:`success_targets` for ``T``).

    Success when there is nothing positive to score up to the target (e.g. the
    start is after the demo's last reward): tying the demo then means
    *surviving as long as the demo did*, i.e. success once ``frames_elapsed >=
    T - start`` with a score gain >= 0. Declaring success immediately would
    teach nothing and would let the curriculum pass the demo's tail without
    the agent ever playing it. (The caller ends episodes on game over, so an
    agent that dies before the target does not succeed.) With ``start == 0``
    and a demo shorter than the horizon, this is the original rule: tie or
    beat the demo's full return.
    """

    def __init__(
        self,
        demo_cumulative_return: np.ndarray,
        start: int,
        config: EpisodeRulesConfig | None = None,
        rng: np.random.Generator | None = None,
    ) -> None:
        self.cum = np.asarray(demo_cumulative_return, dtype=np.float64)
        if self.cum.ndim != 1 or len(self.cum) < 2:
            raise ValueError("demo_cumulative_return must be a 1-D array of length N + 1 >= 2")
        self.demo_length = len(self.cum) - 1
        if not 0 <= start <= self.demo_length:
            raise ValueError(f"start {start} is outside the demo (0..{self.demo_length})")
        self.start = start
        self.config = config if config is not None else EpisodeRulesConfig()
        self.rng = rng if rng is not None else np.random.default_rng()
        self.returns_to_go = float(self.cum[-1] - self.cum[start])
        self.target_frame = int(success_targets(self.cum, self.config, starts=[start])[0])
        self.target_score = float(self.cum[self.target_frame] - self.cum[start])
        """The demo's score gain from ``start`` to its target frame: what the agent must tie."""
        self.success_frame: int | None = None  # frames_elapsed at which success happened
        self.extra_frames: int | None = None  # drawn at success

    @property
    def success(self) -> bool:
        return self.success_frame is not None

    def _demo_score_at(self, frames_elapsed: int) -> float:
        """What the demo had scored ``frames_elapsed`` frames after ``start`` (clipped to the demo)."""
        index = min(self.demo_length, max(self.start, self.start + frames_elapsed))
        return float(self.cum[index] - self.cum[self.start])

    def _ties_demo(self, frames_elapsed: int, score_gain: float) -> bool:
        if self.target_score > 0:
            return score_gain >= self.target_score
        return score_gain >= 0 and frames_elapsed >= self.target_frame - self.start

    def step(self, frames_elapsed: int, score_gain: float) -> Verdict:
        """``frames_elapsed``: emulator frames since the start; ``score_gain``: raw game score since the start."""
        if self.success_frame is None and self._ties_demo(frames_elapsed, score_gain):
            self.success_frame = frames_elapsed
            self.extra_frames = int(math.exp(self.rng.uniform(0.0, self.config.extra_frames_scale)))

        reason = None
        if self.success_frame is not None:
            assert self.extra_frames is not None
            if frames_elapsed - self.success_frame >= self.extra_frames:
                reason = REASON_HORIZON if self.target_frame < self.demo_length else REASON_SUCCESS_EXTRA_DONE
        else:
            required = self._demo_score_at(frames_elapsed - self.config.lag_allowance)
            if score_gain < required - self.config.score_deficit_allowance:
                reason = REASON_LAGGING
        if reason is None and frames_elapsed >= self.config.max_episode_frames:
            reason = REASON_MAX_FRAMES
        return Verdict(success=self.success, truncated=reason is not None, reason=reason)
