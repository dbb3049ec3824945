"""A small MLP actor-critic for vector observations (the toy combination lock).

Same interface as :class:`curriculum_ppo.ppo.policy.ActorCritic` (``forward``
with the ``sequence`` flag, ``act``, ``initial_state``, ``recurrent``,
``set_mixed_precision``), so the trainer and :class:`~curriculum_ppo.ppo.learner.PPOLearner`
use it unchanged. Separate policy and value MLPs, 2 x 64 tanh hidden units each,
orthogonal init (CleanRL's classic-control agent). Non-recurrent only.

Observations are used as they are (``obs.float()``; no /255 scaling: the
trainer stores them in a uint8 buffer, which holds the toy's 0/1 one-hot
vectors exactly).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from curriculum_ppo.errors import UserError
from curriculum_ppo.ppo.policy import PolicyConfig, choose_actions, layer_init


class MLPActorCritic(nn.Module):
    """``forward(obs [B, *obs_shape])`` -> ``(logits [B, A], value [B], None)`` (obs flattened);
    ``sequence=True``: obs [T, B, *obs_shape]."""

    def __init__(self, config: PolicyConfig, hidden: int = 64) -> None:
        super().__init__()
        if config.recurrent:
            raise UserError("the MLP policy (arch 'mlp') is not recurrent; drop --recurrent")
        if config.num_actions < 1:
            raise UserError(f"num_actions must be >= 1, got {config.num_actions}")
        self.config = config
        self.obs_dim = int(np.prod(config.obs_shape))
        self.autocast_dtype: torch.dtype | None = None

        def mlp(out: int, std: float) -> nn.Sequential:
            return nn.Sequential(
                layer_init(nn.Linear(self.obs_dim, hidden)), nn.Tanh(),
                layer_init(nn.Linear(hidden, hidden)), nn.Tanh(),
                layer_init(nn.Linear(hidden, out), std=std),
            )

        self.actor = mlp(config.num_actions, 0.01)
        self.critic = mlp(1, 1.0)

    @property
    def recurrent(self) -> bool:
        return False

    def set_mixed_precision(self, dtype: torch.dtype | None, device_type: str = "cuda") -> None:
        """Accepted for interface compatibility; the MLP always runs in float32 (it is tiny)."""
        self.autocast_dtype = dtype

    def initial_state(self, batch_size: int, device: torch.device | str = "cpu") -> None:
        return None

    def forward(self, obs: Tensor, state: Tensor | None = None, episode_starts: Tensor | None = None,
                sequence: bool = False) -> tuple[Tensor, Tensor, None]:
        lead = obs.shape[:2] if sequence else obs.shape[:1]
        x = obs.reshape(*lead, self.obs_dim).float()
        return self.actor(x), self.critic(x).squeeze(-1), None

    def forward_sequence(self, obs: Tensor, state0: Tensor | None, episode_starts: Tensor | None
                         ) -> tuple[Tensor, Tensor]:
        logits, values, _ = self.forward(obs, sequence=True)
        return logits, values

    @torch.no_grad()
    def act(self, obs: Tensor, state: Tensor | None = None, episode_starts: Tensor | None = None,
            deterministic: bool = False, epsilon: Tensor | None = None,
            temperature: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor, None]:
        """(action [B] int64, logprob [B], value [B], None), like ``ActorCritic.act`` (exploring too)."""
        logits, value, _ = self(obs)
        action, logprob = choose_actions(logits, deterministic, epsilon, temperature)
        return action, logprob, value, None

