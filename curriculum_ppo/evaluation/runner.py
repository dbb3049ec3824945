"""Playing an evaluation plan: the env worker pool stepped as one batch, the policy run once per step.

Jobs reach the envs through the pool's ``set_options`` channel (:class:`JobQueue`); the results
and the best episode are kept by :class:`~curriculum_ppo.evaluation.episodes.EpisodeRecords`.
"""

from __future__ import annotations

import os

import numpy as np

from curriculum_ppo.errors import UserError
from curriculum_ppo.evaluation.checkpoint import LoadedCheckpoint
from curriculum_ppo.evaluation.episodes import EpisodeRecords
from curriculum_ppo.evaluation.plan import EvalPlan
from curriculum_ppo.evaluation.progress import Progress
from curriculum_ppo.evaluation.protocols import EvalSettings


class JobQueue:
    """Hands the plan's jobs to the envs in order, through the pool's reset options.

    A pool resets an env as soon as its episode ends, so every env plays one job (``playing[i]``,
    ``None`` when idle) and already has the next one queued.
    """

    def __init__(self, plan: EvalPlan, pool):
        self.plan, self.pool, self.next = plan, pool, 0
        self.playing = [self._queue(i) for i in range(pool.num_envs)]
        pool.reset()
        self.queued = [self._queue(i) for i in range(pool.num_envs)]

    def _queue(self, env: int) -> int | None:
        job = self.next if self.next < len(self.plan.jobs) else None
        self.next += job is not None
        self.pool.set_options(self.plan.options(job), env)
        return job

    def finished(self, env: int) -> int | None:
        """Env ``env`` ended its episode and began its queued job: return the job it finished."""
        job = self.playing[env]
        self.playing[env], self.queued[env] = self.queued[env], self._queue(env)
        return job


def _play(ckpt: LoadedCheckpoint, plan: EvalPlan, pool, settings: EvalSettings, device,
          quiet: bool) -> tuple[list[dict], dict | None]:
    """Step the pool with the policy until every job has been played."""
    import torch

    jobs, record = JobQueue(plan, pool), EpisodeRecords(plan.jobs, pool.num_envs)
    starts = torch.ones(pool.num_envs, dtype=torch.bool, device=device)
    hidden = ckpt.policy.initial_state(pool.num_envs, device)
    progress = None if quiet else Progress(len(plan.jobs), settings.progress_every)
    frameskip, frames = int(plan.factory.atari.get("frameskip", 4)), 0
    with torch.no_grad():
        while record.done < len(plan.jobs):
            obs = torch.from_numpy(pool.obs).to(device)
            action, _, _, hidden = ckpt.policy.act(obs, hidden, starts, deterministic=settings.greedy)
            action_np = action.cpu().numpy()
            record.acted(jobs.playing, action_np)
            episodes = pool.step(action_np)
            frames += frameskip * sum(job is not None for job in jobs.playing)
            starts = torch.from_numpy(np.asarray(pool.terminated) | np.asarray(pool.truncated)).to(device)
            for episode in episodes:
                env = int(episode["env"])
                record.finished(env, jobs.finished(env), episode)
            if progress:
                progress.update(record.done, frames)
    if progress:
        progress.finish(record.done, frames)
    return record.results, record.best


def run_episodes(ckpt: LoadedCheckpoint, plan: EvalPlan, settings: EvalSettings, device,
                 quiet: bool = False) -> tuple[list[dict], dict | None]:
    """Play every job of ``plan``; return per-job results and the best episode's replay record."""
    import torch

    from curriculum_ppo.vec.pool import WorkerError, make_pool, resolve_num_workers

    num_envs = min(settings.envs, len(plan.jobs))
    workers = settings.workers
    if workers is None:
        workers = resolve_num_workers(num_envs, None)
    if device.type == "cpu":
        # Intra-op threads fighting the env workers for the same cores slow the forward pass down
        # many times over; by default use only the cores the workers leave free.
        torch.set_num_threads(settings.threads or max(1, (os.cpu_count() or 1) - workers))
    pool_seed = (settings.seed * 1000) % (2**31 - 2**16)  # emulator seeds (env i gets pool_seed + i) fit an int32
    try:
        pool = make_pool(plan.factory, num_envs, workers, seed=pool_seed)
    except WorkerError as exc:
        raise UserError(f"could not start the environments: {exc}") from None
    try:
        net = ckpt.policy.config
        if tuple(pool.obs_shape) != tuple(net.obs_shape) or pool.num_actions != net.num_actions:
            raise UserError(f"the checkpoint's network expects observations {tuple(net.obs_shape)} "
                            f"and {net.num_actions} actions, the game gives {tuple(pool.obs_shape)} "
                            f"and {pool.num_actions}")
        torch.manual_seed(settings.seed)
        results, best = _play(ckpt, plan, pool, settings, device, quiet)
    except WorkerError as exc:
        raise UserError(f"evaluation stopped: {exc}") from None
    finally:
        pool.close()
    if best is not None:
        best["pool_seed"] = pool_seed
    return results, best
