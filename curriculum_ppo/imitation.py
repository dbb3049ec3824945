"""Behaviour cloning on the demo's own actions near the curriculum window (``--demo-bc-coef``).

The curriculum method of Salimans & Chen learns from the demo's *states* only: the agent must
find every action itself, by PPO, from starts a little earlier than where it already succeeds.
That search is what each move back of the window costs. The demo also holds the action it took
in each of those states; this module turns the stretch of the demo the agent is about to meet
into a supervised target. Each PPO minibatch gets ``samples`` demo frames drawn from the region
``[front - ahead, window end]`` (the window, and the frames the next moves will start from), and
the update adds ``coef`` times the cross-entropy of the policy against the demo's action there.

Why only that region: behind the window (later in the demo) the agent already ties the demo by
its own play, and cloning there would only pull it towards the demo's way of doing it, which it
must be free to beat. As the window moves back, the frames it passes leave the region, so their
cloning stops: the term decays as the curriculum passes them. The policy's rollout
log-probabilities are untouched (exploring and replayed steps keep theirs), and the demo samples
do not enter the PPO terms: replayed warm-up steps stay masked out of every loss.

The pure part is :func:`bc_region`; :class:`DemoFrames` renders the observations (an env of the
run's kind, reset at each demo frame, as a curriculum start would) and keeps those of the region.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from curriculum_ppo.config_flags import knob
from curriculum_ppo.errors import UserError
from curriculum_ppo.ppo.learner import rollout_obs_buffer

__all__ = ["DemoFrames", "DemoTargets", "ImitationConfig", "bc_region"]


@dataclass
class ImitationConfig:
    """The behaviour-cloning term on demo frames near the window (off by default)."""

    coef: float = knob(0.0, flag="--demo-bc-coef", metavar="C",
                       help="weight of a behaviour-cloning loss (cross-entropy against the demo's action) on demo "
                            "frames from --demo-bc-ahead frames before the curriculum window's front to its end; "
                            "frames the window has passed are no longer cloned (0 = off)")
    samples: int = knob(32, flag="--demo-bc-samples", metavar="N",
                        help="demo frames drawn (with replacement) into each PPO minibatch for that loss")
    ahead: int = knob(64, flag="--demo-bc-ahead", metavar="FRAMES",
                      help="how many demo frames before the window's front the behaviour-cloning region reaches")

    def __post_init__(self) -> None:
        if not self.coef >= 0:
            raise UserError("--demo-bc-coef must be >= 0 (0 = off)")
        if self.samples < 1:
            raise UserError("--demo-bc-samples must be >= 1")
        if self.ahead < 0:
            raise UserError("--demo-bc-ahead must be >= 0")

    @property
    def enabled(self) -> bool:
        return self.coef > 0


def bc_region(start_frame: int, window_end: int, ahead: int, demo_length: int) -> tuple[int, int]:
    """The demo frames ``[first, last]`` (inclusive) cloned while the window is ``[start_frame, window_end]``.

    ``last`` is at most ``demo_length - 1``: the demo's final frame has no action after it.
    """
    if demo_length < 1:
        raise ValueError("behaviour cloning needs a demo with at least one frame")
    last = min(int(window_end), demo_length - 1)
    first = min(max(0, int(start_frame) - int(ahead)), last)
    return first, last


@dataclass
class DemoTargets:
    """What one update clones: ``obs`` uint8 [R, C, H, W] of R demo frames, their ``actions`` int64 [R]."""

    obs: Tensor
    actions: Tensor
    coef: float
    samples: int
    first: int
    last: int

    def to(self, device: torch.device | str) -> DemoTargets:
        return DemoTargets(self.obs.to(device, non_blocking=True), self.actions.to(device, non_blocking=True),
                           self.coef, self.samples, self.first, self.last)


class DemoFrames:
    """The observations and actions of the demo frames in the cloning region, rendered once each.

    ``env`` is an env of the run's kind without warm-up steps: ``env.reset(options={"start_frame": t})``
    gives the observation a curriculum start at ``t`` gives, and ``env.demo_action(t)`` the demo's action
    there. Only the current region's frames are kept, so memory stays bounded on a long demo; the region
    moves by one window step at a time, so each move renders only the frames it adds.
    """

    def __init__(self, env, config: ImitationConfig, demo_length: int):
        if not hasattr(env, "demo_action"):
            raise UserError("--demo-bc-coef needs an env that knows the demo's actions")
        self.env, self.config, self.demo_length = env, config, int(demo_length)
        self._cache: dict[int, tuple[np.ndarray, int]] = {}
        self._targets: DemoTargets | None = None

    def _render(self, t: int) -> tuple[np.ndarray, int]:
        obs, _ = self.env.reset(options={"start_frame": t})
        return np.asarray(obs, dtype=np.uint8), int(self.env.demo_action(t))

    def targets(self, start_frame: int, window_end: int) -> DemoTargets:
        """The region's frames as tensors (the same objects while the region stays, new ones when it moves)."""
        first, last = bc_region(start_frame, window_end, self.config.ahead, self.demo_length)
        held = self._targets
        if held is not None and (held.first, held.last) == (first, last):
            return held
        frames = range(first, last + 1)
        self._cache = {t: self._cache.get(t) or self._render(t) for t in frames}
        shape = self._cache[first][0].shape
        obs = rollout_obs_buffer(1, len(frames), shape)[0]  # channels-last, like the rollout's frames
        obs.copy_(torch.from_numpy(np.stack([self._cache[t][0] for t in frames])))
        actions = torch.tensor([self._cache[t][1] for t in frames], dtype=torch.long)
        self._targets = DemoTargets(obs, actions, self.config.coef, self.config.samples, first, last)
        return self._targets

    def close(self) -> None:
        self.env.close()
