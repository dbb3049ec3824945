"""Exploration right after a curriculum start: an epsilon mixture, and optionally a temperature.

Why: a policy trained for millions of frames on the later part of the demo
becomes near-deterministic, also in states where its action did not matter
(mid-air, say). When the curriculum moves the start back to just before a
point that needs one precise action (the bundled demo's skull jump: one of 3
actions at exactly one agent step), such a policy almost never tries it.
Measured on the bundled demo (README, Results): starts 155-189 had 0
successes in 3,152 episodes, and the stalled policy put 3.1e-06 on the jump
in the one state where it saves the agent (``python
scripts/probe_jump_timing.py --checkpoint RUN/checkpoints/latest.pt``). PPO
cannot reinforce what it never samples.

The fix here: a fraction of the episodes that start in the curriculum window
*explore*: for their first ``steps`` agent steps (after any warm-up steps
that replay the demo) the action comes from the
mixture ``(1 - epsilon) * policy + epsilon * uniform``. The logged
log-probability is that of the mixture, the distribution the action was really
drawn from, so PPO's ratio ``pi_new / behaviour`` stays an honest importance
weight. Exploring episodes train the policy but are left out of the
curriculum's success statistics: the window moves on what the policy does on
its own (measured: with every window episode exploring, the first move of the
bundled demo's curriculum took 0.43M frames instead of 0.18M). Episodes from
the real game start and evaluation never explore.

An opt-in alternative, ``temperature`` (``--explore-temperature``): the
exploring steps sample from ``softmax(logits / T)``, the original atari-reset
code's softer policy right after a demo start. Where the mixture gives every
action the same floor, a temperature keeps the policy's ranking and lifts its
unlikely actions by their own weight. The two compose (temper first, then mix;
see :func:`behaviour_log_probs`), so ``--explore-epsilon 0 --explore-temperature
2`` is a softening like the original's alone and both flags together are one
more arm of the ablation; the log-probability stored is again that of the distribution
sampled from.

Pure logic (torch tensors, no env, no I/O): testable alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from curriculum_ppo.config_flags import knob
from curriculum_ppo.errors import UserError


@dataclass
class ExploreConfig:
    """How much to explore right after a start in the curriculum window."""

    epsilon: float = knob(0.2, flag="--explore-epsilon", metavar="EPS",
                          help="for the first --explore-steps agent steps of an exploring episode, mix this much "
                               "uniform-random choice into the policy (0 = off)")
    """Probability mass moved to a uniformly random action."""

    temperature: float = knob(1.0, flag="--explore-temperature", metavar="T",
                              help="for the same exploring steps, sample from softmax(logits / T), a softer "
                                   "policy (1 = off; with --explore-epsilon above 0 its uniform share is mixed "
                                   "into the softened policy)")
    """Divides the logits during exploring steps (the original divided them by 2 after a demo start).

    Composed with :attr:`epsilon` rather than replacing it, so that each flag keeps one meaning and
    the ablation can run the mixture alone (``T = 1``, the default), the temperature alone
    (``epsilon = 0``) and both. Off by default until the learning ablation of issue #22 measures it.
    """

    steps: int = knob(8, flag="--explore-steps", metavar="K",
                      help="agent steps after a window start that explore (after any --warmup-steps)")
    """The new stretch of the demo: 8 agent steps are 32 frames, the default window's step."""

    fraction: float = knob(0.5, flag="--explore-fraction", metavar="P",
                           help="fraction of the episodes started in the curriculum window that explore; they "
                                "train the policy but do not count for the curriculum's success rate")

    def __post_init__(self) -> None:
        if not 0.0 <= self.epsilon <= 1.0:
            raise UserError("--explore-epsilon must be in [0, 1]")
        if not 1.0 <= self.temperature < math.inf:
            raise UserError("--explore-temperature must be a number >= 1 (1 = off; above 1: a softer policy)")
        if self.steps < 0:
            raise UserError("--explore-steps must be >= 0")
        if not 0.0 <= self.fraction <= 1.0:
            raise UserError("--explore-fraction must be in [0, 1]")


def epsilon_mixture(log_probs: Tensor, epsilon: Tensor) -> Tensor:
    """Log-probabilities of ``(1 - eps) * softmax + eps * uniform``, row by row.

    ``log_probs``: [B, A] normalized log-probabilities; ``epsilon``: [B] in [0, 1].
    Rows with ``eps == 0`` come back unchanged (exactly, not just numerically close).
    """
    num_actions = log_probs.shape[-1]
    eps = epsilon.to(log_probs.dtype).unsqueeze(-1)
    mixed = torch.logaddexp(torch.log1p(-eps.clamp(max=1.0 - 1e-7)) + log_probs,
                            torch.log(eps) - math.log(num_actions))
    return torch.where(eps > 0, mixed, log_probs)


def behaviour_log_probs(logits: Tensor, epsilon: Tensor | None = None, temperature: Tensor | None = None) -> Tensor:
    """Log-probabilities of the distribution a step samples from: the policy ``softmax(logits)``, or for
    exploring rows ``(1 - eps) * softmax(logits / T) + eps * uniform``.

    ``logits``: [B, A] float; ``epsilon``, ``temperature``: [B] or None (off). The temperature applies
    first so that the mixture's uniform share stays the floor it is on its own. With both None this is
    ``log_softmax(logits)``; rows with ``T == 1`` and ``eps == 0`` are the policy's exactly (dividing by 1
    is exact).
    """
    if temperature is not None:
        logits = logits / temperature.to(logits.device, logits.dtype).unsqueeze(-1)
    log_probs = torch.log_softmax(logits, dim=-1)
    if epsilon is not None:
        log_probs = epsilon_mixture(log_probs, epsilon.to(logits.device))
    return log_probs


class ExploringStep(NamedTuple):
    """What one step's exploring envs sample from: per env ``epsilon`` and ``temperature`` (each [B],
    0 and 1 for envs that do not explore), or None where that lever is off."""

    epsilon: Tensor | None
    temperature: Tensor | None


class ExplorationBudget:
    """Which env's current episode explores, and how many exploring steps it has left."""

    def __init__(self, num_envs: int, config: ExploreConfig) -> None:
        self.config = config
        self.left = np.zeros(num_envs, dtype=np.int64)
        self.exploring = np.zeros(num_envs, dtype=bool)  # the env's current episode explores
        self.explored_steps = 0  # steps that used epsilon since the last ``take_count``

    @property
    def enabled(self) -> bool:
        explores = self.config.epsilon > 0 or self.config.temperature != 1
        return explores and self.config.steps > 0 and self.config.fraction > 0

    def begin(self, env: int, in_window: bool, rng: np.random.Generator) -> bool:
        """Env ``env`` begins an episode; it explores with probability ``fraction`` if it starts in the
        curriculum window. Returns whether it explores."""
        explores = bool(in_window and self.enabled and rng.random() < self.config.fraction)
        self.exploring[env] = explores
        self.left[env] = self.config.steps if explores else 0
        return explores

    def step(self, envs: slice, replayed: np.ndarray | None = None) -> ExploringStep | None:
        """What each env of ``envs`` samples from at this step (consumes one step of each budget); ``None``
        if none explores.

        ``replayed`` (bool per env of ``envs``): envs whose step replays the demo (warm-up). Their action
        is ignored, so they neither explore nor spend their budget: the ``steps`` exploring steps are the
        episode's first real decisions."""
        left = self.left[envs]
        active = left > 0
        if replayed is not None:
            active &= ~np.asarray(replayed, dtype=bool)
        if not active.any():
            return None
        left[active] -= 1
        self.explored_steps += int(active.sum())
        epsilon = torch.from_numpy(active * self.config.epsilon).float() if self.config.epsilon > 0 else None
        temperature = None
        if self.config.temperature != 1:
            temperature = torch.from_numpy(np.where(active, self.config.temperature, 1.0)).float()
        return ExploringStep(epsilon, temperature)

    def take_count(self) -> int:
        count, self.explored_steps = self.explored_steps, 0
        return count
