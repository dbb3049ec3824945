"""When does an episode that starts from a demo state succeed, and when is it cut?

An episode started at demo frame ``start`` *succeeds* when the agent's score
since the start ties or beats what the demo scored from that frame to its end
(the *returns-to-go*). Success is what the curriculum counts.

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

from curriculum_ppo.errors import UserError

REASON_SUCCESS_EXTRA_DONE = "success_extra_done"
REASON_LAGGING = "lagging"
REASON_MAX_FRAMES = "max_frames"


@dataclass
class EpisodeRulesConfig:
    lag_allowance: int = 60
    """Frames the agent may fall behind the demo's score timeline before the episode is cut."""

    score_deficit_allowance: float = 0.0
    """Points the agent may be short of the demo's score (``lag_allowance`` frames ago) before being cut."""

    extra_frames_scale: float = 7.0
    """After success, play ``int(exp(U(0, scale)))`` more frames, then truncate."""

    max_episode_frames: int = 4500 * 4
    """Hard time limit of one episode, in emulator frames."""

    def __post_init__(self) -> None:
        if self.lag_allowance < 0:
            raise UserError(f"lag allowance must be >= 0 frames, got {self.lag_allowance}")
        if self.extra_frames_scale < 0:
            raise UserError(f"extra frames scale must be >= 0, got {self.extra_frames_scale}")
        if self.max_episode_frames < 1:
            raise UserError(f"max episode frames must be >= 1, got {self.max_episode_frames}")


@dataclass(frozen=True)
class Verdict:
    success: bool
    """The agent has tied or beaten the demo (at this step or earlier)."""

    truncated: bool
    """The episode must end now as a time limit (not a game over)."""

    reason: str | None
    """Why it was truncated: ``"success_extra_done"``, ``"lagging"``, ``"max_frames"``, or ``None``."""

    just_succeeded: bool = False
    """Success happened at this very step (for logging the moment of success)."""


def demo_cumulative_return(rewards: np.ndarray) -> np.ndarray:
    """``cum[t]`` = sum of demo rewards of frames ``< t``; length ``N + 1``."""
    rewards = np.asarray(rewards, dtype=np.float64)
    return np.concatenate([[0.0], np.cumsum(rewards)])


class DemoEpisodeTracker:
    """Applies the rules to one episode; call :meth:`step` after every agent step.

    ``demo_cumulative_return[t]`` is the demo's score accumulated before frame
    ``t`` (length ``N + 1``, see :func:`demo_cumulative_return`), so the demo's
    returns-to-go from ``start`` are ``cum[N] - cum[start]``.

    Success when there is nothing left to score (returns-to-go 0, e.g. the
    start is after the demo's last reward): tying the demo then means
    *surviving as long as the demo did*, i.e. success once ``frames_elapsed >=
    N - start`` with a score gain >= 0. Declaring success immediately would
    teach nothing and would let the curriculum pass the demo's tail without
    the agent ever playing it. (The caller ends episodes on game over, so an
    agent that dies before the demo's end does not succeed.) With ``start ==
    0`` this is the same rule: tie or beat the demo's full return.
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
        if self.returns_to_go > 0:
            return score_gain >= self.returns_to_go
        return score_gain >= 0 and frames_elapsed >= self.demo_length - self.start

    def step(self, frames_elapsed: int, score_gain: float) -> Verdict:
        """``frames_elapsed``: emulator frames since the start; ``score_gain``: raw game score since the start."""
        just_succeeded = False
        if self.success_frame is None and self._ties_demo(frames_elapsed, score_gain):
            self.success_frame = frames_elapsed
            self.extra_frames = int(math.exp(self.rng.uniform(0.0, self.config.extra_frames_scale)))
            just_succeeded = True

        reason = None
        if self.success_frame is not None:
            assert self.extra_frames is not None
            if frames_elapsed - self.success_frame >= self.extra_frames:
                reason = REASON_SUCCESS_EXTRA_DONE
        else:
            required = self._demo_score_at(frames_elapsed - self.config.lag_allowance)
            if score_gain < required - self.config.score_deficit_allowance:
                reason = REASON_LAGGING
        if reason is None and frames_elapsed >= self.config.max_episode_frames:
            reason = REASON_MAX_FRAMES
        return Verdict(
            success=self.success, truncated=reason is not None, reason=reason, just_succeeded=just_succeeded
        )
