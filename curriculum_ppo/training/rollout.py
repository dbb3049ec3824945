"""Rollout collection: every env plays ``num_steps`` agent steps with the behaviour policy, into buffers.

The buffers are a dict of ``[T, B]`` tensors (pinned when the learner is on a GPU): ``obs``,
``actions``, ``logprobs``, ``values``, ``rewards``, ``terminations``, ``truncations`` (with
``truncation_values``, the value of the final observation of a cut episode, which GAE bootstraps
from), ``episode_starts`` and ``loss_mask`` (False where the step replays the demo), plus
``next_episode_starts``, ``last_obs`` and ``last_hidden`` for the step after the rollout.
:func:`rollout_batch` turns them into the learner's :class:`~curriculum_ppo.ppo.learner.RolloutBatch`.
"""

from __future__ import annotations

import torch

from curriculum_ppo.ppo.gae import compute_gae
from curriculum_ppo.ppo.learner import RolloutBatch, rollout_obs_buffer
from curriculum_ppo.training.hooks import CurriculumHooks


def make_buffers(num_steps: int, num_envs: int, obs_shape: tuple, pin_memory: bool) -> dict:
    """Empty rollout buffers (see the module doc)."""
    T, B = num_steps, num_envs

    def z(*shape, dtype=torch.float32):
        t = torch.zeros(*shape, dtype=dtype)
        return t.pin_memory() if pin_memory else t
    return {
        "obs": rollout_obs_buffer(T, B, obs_shape, pin_memory=pin_memory),
        "actions": z(T, B, dtype=torch.long), "logprobs": z(T, B), "values": z(T, B), "rewards": z(T, B),
        "terminations": z(T, B, dtype=torch.bool), "truncations": z(T, B, dtype=torch.bool),
        "truncation_values": z(T, B), "episode_starts": z(T, B, dtype=torch.bool),
        "loss_mask": z(T, B, dtype=torch.bool),
    }


class RolloutCollector:
    """Steps the env pool with a policy for one rollout at a time; the hooks choose where episodes start.

    With env groups the steps of the groups are pipelined: group g's result is read and its next
    action chosen while the workers step the other groups (see :class:`~curriculum_ppo.vec.pool.EnvPool`).
    """

    def __init__(self, pool, hooks: CurriculumHooks, num_envs: int, num_steps: int, device: torch.device):
        self.pool, self.hooks, self.num_envs, self.num_steps, self.device = pool, hooks, num_envs, num_steps, device
        self.explore = hooks.explore

    def start(self) -> dict:
        """Begin an episode in every env; return empty rollout buffers whose first step starts episodes."""
        self.hooks.start_envs(self.pool)
        buffers = make_buffers(self.num_steps, self.num_envs, self.pool.obs_shape, self.device.type == "cuda")
        buffers["episode_starts"][0] = True
        return buffers

    def collect(self, policy, buffers: dict, hidden):
        """Play ``num_steps`` steps in every env with ``policy``; fill ``buffers``; return (episodes, hidden)."""
        T, pool = self.num_steps, self.pool
        groups = [(None, slice(None))] if pool.num_groups == 1 else list(enumerate(pool.group_slices))
        buffers["next_episode_starts"] = torch.zeros(self.num_envs, dtype=torch.bool)
        finished: list[dict] = []
        with torch.no_grad():
            for t in range(T + 1):
                for group, envs in groups:
                    if t > 0:
                        finished += self._finish_step(policy, buffers, hidden, t - 1, group, envs)
                    if t < T:
                        hidden = self._start_step(policy, buffers, hidden, t, group, envs)
            buffers["last_obs"] = torch.from_numpy(pool.obs.copy())
            buffers["last_hidden"] = hidden
        return finished, hidden

    def _start_step(self, policy, buffers: dict, hidden, t: int, group: int | None, envs: slice):
        """Record step t's observations of ``envs``, choose their actions and start stepping them."""
        pool = self.pool
        buffers["obs"][t, envs].copy_(torch.from_numpy(pool.obs[envs]))
        # pool.warmup: this observation's step replays the demo (the action is ignored), so it is not
        # trained on and does not use up the episode's exploring steps.
        replayed = pool.warmup[envs].copy()
        buffers["loss_mask"][t, envs] = torch.from_numpy(~replayed)
        obs = buffers["obs"][t, envs].to(self.device, non_blocking=True)
        starts = buffers["episode_starts"][t, envs].to(self.device)
        exploring = self.explore.step(envs, replayed) if self.explore.enabled else None
        epsilon, temperature = exploring if exploring is not None else (None, None)
        action, logprob, value, new_hidden = policy.act(obs, None if hidden is None else hidden[envs], starts,
                                                        epsilon=epsilon, temperature=temperature)
        action_cpu = action.cpu()
        pool.step_async(action_cpu.numpy(), group)
        buffers["actions"][t, envs] = action_cpu
        buffers["logprobs"][t, envs] = logprob.float().cpu()
        buffers["values"][t, envs] = value.float().cpu()
        if group is None or new_hidden is None:
            return new_hidden
        hidden[envs] = new_hidden
        return hidden

    def _finish_step(self, policy, buffers: dict, hidden, t: int, group: int | None, envs: slice) -> list[dict]:
        """Wait for step t of ``envs``; record rewards and episode ends; pick restarts; return finished episodes."""
        pool = self.pool
        episodes = pool.step_wait(group)
        buffers["rewards"][t, envs] = torch.from_numpy(pool.rewards[envs])
        term = torch.from_numpy(pool.terminated[envs].copy())
        trunc = torch.from_numpy(pool.truncated[envs].copy())
        buffers["terminations"][t, envs] = term
        buffers["truncations"][t, envs] = trunc
        if trunc.any():
            idx = torch.nonzero(trunc).squeeze(-1) + (envs.start or 0)
            final = torch.from_numpy(pool.final_obs[idx.numpy()]).to(self.device)
            h = None if hidden is None else hidden[idx.to(hidden.device)]
            _, _, v, _ = policy.act(final, h, None)
            buffers["truncation_values"][t, idx] = v.float().cpu()
        ended = term | trunc
        if t + 1 < self.num_steps:
            buffers["episode_starts"][t + 1, envs] = ended
        else:
            buffers["next_episode_starts"][envs] = ended
        for episode in episodes:
            episode["explored"] = bool(self.explore.exploring[episode["env"]])
            self.hooks.begin_episode(pool, episode["env"])
        return episodes


def rollout_batch(buffers: dict, policy, initial_hidden, device: torch.device, gamma: float,
                  gae_lambda: float) -> RolloutBatch:
    """The learner's batch of a collected rollout: a copy of the buffers plus GAE advantages and returns.

    Afterwards the buffers are ready for the next rollout: its first step starts the episodes that
    ended at this rollout's last step.
    """
    with torch.no_grad():
        obs = buffers["last_obs"].to(device)
        _, _, last_value, _ = policy.act(obs, buffers["last_hidden"], buffers["next_episode_starts"].to(device))
    advantages, returns = compute_gae(buffers["rewards"], buffers["values"], buffers["terminations"],
                                      last_value.float().cpu(), gamma, gae_lambda,
                                      buffers["truncations"], buffers["truncation_values"])
    batch = RolloutBatch(obs=buffers["obs"].clone(), actions=buffers["actions"].clone(),
                         logprobs=buffers["logprobs"].clone(), values=buffers["values"].clone(),
                         advantages=advantages, returns=returns,
                         episode_starts=buffers["episode_starts"].float().clone(),
                         loss_mask=buffers["loss_mask"].float().clone(),
                         initial_state=None if initial_hidden is None else initial_hidden.clone())
    buffers["episode_starts"][0] = buffers["next_episode_starts"]
    return batch
