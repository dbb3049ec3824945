"""Generalized Advantage Estimation that tells terminations from truncations.

Episodes in this project end in two very different ways:

* **terminated**: the game is really over (game over, or a life loss if the
  caller treats it as terminal). The future is worth 0, so no bootstrap.
* **truncated**: the episode was *cut* (time limit, the curriculum's
  post-success extra frames, the lagging rule). The game would have gone on,
  so the return must bootstrap from the value of the episode's final
  observation. Treating a cut as a game over would teach the agent that
  doing well (success -> cut soon after) leads to nothing.

Convention, for a rollout of T steps in B environments (all tensors [T, B]):

* ``values[t]`` = V(obs_t), the observation the action at step t was taken in.
* ``rewards[t]``, ``terminations[t]``, ``truncations[t]`` describe the
  transition of step t: the reward received and whether the episode ended
  right after it.
* ``truncation_values[t]`` = V(final obs of the episode) for steps with
  ``truncations[t]`` set, anything (e.g. 0) elsewhere. With vectorised envs
  that auto-reset, the next observation is already the new episode's first
  one, so the final observation must be evaluated separately.
* ``last_value`` [B] = V(obs_T), the observation after the rollout's last
  step; used only where step T-1 did not end the episode.

If a step is both terminated and truncated, termination wins (no bootstrap).
"""

from __future__ import annotations

import torch


def compute_gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    terminations: torch.Tensor,
    last_value: torch.Tensor,
    gamma: float,
    lam: float,
    truncations: torch.Tensor | None = None,
    truncation_values: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(advantages, returns)``, both float32 [T, B]; ``returns = advantages + values``.

    ``truncations`` and ``truncation_values`` go together; leaving both out
    means no step was truncated.
    """
    if (truncations is None) != (truncation_values is None):
        raise ValueError("pass truncations and truncation_values together")
    rewards = rewards.float()
    values = values.float()
    terminated = terminations.float()
    if truncations is None:
        truncated = torch.zeros_like(rewards)
        truncation_values = torch.zeros_like(rewards)
    else:
        truncated = truncations.float() * (1.0 - terminated)  # termination wins
        truncation_values = truncation_values.float()
    ended = torch.clamp(terminated + truncated, max=1.0)

    num_steps = rewards.shape[0]
    advantages = torch.zeros_like(rewards)
    last_gae = torch.zeros_like(last_value, dtype=torch.float32)
    for t in reversed(range(num_steps)):
        next_value = last_value.float() if t == num_steps - 1 else values[t + 1]
        # Value of what follows step t: 0 after a termination, V(final obs)
        # after a truncation, V(next obs) when the episode goes on.
        bootstrap = (1.0 - ended[t]) * next_value + truncated[t] * truncation_values[t]
        delta = rewards[t] + gamma * bootstrap - values[t]
        # The advantage recursion never crosses an episode boundary.
        last_gae = delta + gamma * lam * (1.0 - ended[t]) * last_gae
        advantages[t] = last_gae
    return advantages, advantages + values
