"""The training loop: env workers start episodes where the curriculum says, PPO learns.

One *update* = every env plays ``num_steps`` agent steps (the rollout, :mod:`.rollout`), then PPO
trains on them (:mod:`.updater`, in a background thread with ``overlap``), then the update is
logged (:mod:`.logger`) and, every few updates, checkpointed (:mod:`.run_dir`). Between rollouts
:mod:`.hooks` moves the curriculum, counts exploring episodes and applies the stop rules.

Under ``torchrun`` the same loop runs once per rank (see :mod:`curriculum_ppo.distributed`); rank 0
owns the run directory, and each other rank saves its own random streams and episode windows next
to the checkpoint.

Resume (``resume=True``) restores the weights, the optimizer, the curriculum, the stall detector,
the counters, each rank's learner RNGs (numpy, torch, CUDA, minibatch shuffle) and its episode
windows, and cuts ``metrics.jsonl`` back to the checkpoint's update. It does not restore the envs:
episodes in progress are dropped, every env starts anew where the curriculum says, with env seeds
drawn from ``(seed, rank, updates)``; and the rollout collected after the checkpoint is collected
again, by the saved policy.
"""

from __future__ import annotations

import copy
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from curriculum_ppo.curriculum import CurriculumScheduler, StallDetector
from curriculum_ppo.device import learner_torch_threads, pick_device
from curriculum_ppo.distributed import DistContext
from curriculum_ppo.errors import UserError
from curriculum_ppo.exploration import ExplorationBudget
from curriculum_ppo.imitation import DemoFrames
from curriculum_ppo.ppo.learner import PPOLearner
from curriculum_ppo.ppo.policy import PolicyConfig, build_policy
from curriculum_ppo.training.config import TrainConfig
from curriculum_ppo.training.hooks import CurriculumHooks, StopSignals, stop_reason
from curriculum_ppo.training.logger import Logger, rounded_rates, status_line
from curriculum_ppo.training.ranks import check_ranks_agree, rank_report
from curriculum_ppo.training.rollout import RolloutCollector, rollout_batch
from curriculum_ppo.training.run_dir import (RunDir, capture_rank_state, check_resumable, load_weights,
                                             pack_checkpoint, rank_state_digest, reseed_rank, restore_rank_state,
                                             saved_scheduler_state, saved_stall_state)
from curriculum_ppo.training.seeds import env_seed, learner_reseed, learner_seed
from curriculum_ppo.training.stats import EpisodeStats, success_by_start_table
from curriculum_ppo.training.updater import Updater
from curriculum_ppo.envs.registry import EnvFactory
from curriculum_ppo.vec.pool import WorkerError, make_pool


def env_factory(config: TrainConfig, warmup: bool = True) -> EnvFactory:
    """The registry's factory of the run's envs (:mod:`curriculum_ppo.envs.registry`); ``warmup=False``: the
    same envs without demo warm-up steps (a start at ``t`` then observes frame ``t`` itself)."""
    if config.env_kind == "atari":
        atari = asdict(config.atari) if warmup else {**asdict(config.atari), "warmup_steps": 0}
        return EnvFactory("atari", game=config.game, demo_path=config.demo, atari=atari, rules=asdict(config.rules))
    return EnvFactory(config.env_kind, **config.toy)


def demo_frames(config: TrainConfig, demo_length: int) -> DemoFrames | None:
    """The behaviour-cloning term's demo frames (:mod:`curriculum_ppo.imitation`), or None when it is off."""
    if not config.imitation.enabled:
        return None
    if not demo_length:
        raise UserError("--demo-bc-coef needs a demo: it clones the demo's actions")
    return DemoFrames(env_factory(config, warmup=False)(config.seed), config.imitation, demo_length)


class Trainer:
    """A run's parts (env pool, policy, learner, curriculum, run directory) and the loop that drives them.

    Subclasses may extend :meth:`_collect`, :meth:`_after_update`, :meth:`_plots` and
    :meth:`_close_envs` (the benchmarks in ``scripts/`` do).
    """

    def __init__(self, config: TrainConfig, run_dir: str | Path, resume: bool = False,
                 dist: DistContext | None = None, quiet: bool = False):
        self.config = config
        self.run_dir = Path(run_dir)
        self.store = RunDir(self.run_dir)  # rank 0 holds its lock for the whole run
        self.dist = dist or DistContext.from_env()
        self.quiet = quiet or not self.dist.is_main
        self.device = pick_device(config.device) if self.dist.device is None else self.dist.device
        threads = learner_torch_threads(config.torch_threads, self.device.type)
        if threads:
            torch.set_num_threads(threads)
        self.logger = Logger(self.store, self.dist.is_main, self.quiet)
        self.signals = StopSignals()
        self.pool = None
        self._envs_closed = False
        self._last_update_time: float | None = None
        self.resumed_rng: dict | None = None  # on resume: where this rank's random streams came from
        try:
            self._build(resume)
        except BaseException:
            self.close()
            raise

    def _build(self, resume: bool) -> None:
        config = self.config
        self.factory = env_factory(config)
        # Reading the demo validates it once (and builds the machine's shared copy) before any env,
        # worker process or file of the run exists: a bad demo is refused before the run dir is touched.
        self.demo_info = self.factory.demo_info()
        checkpoint = self.store.open(resume, self.dist.is_main, config.to_dict())
        torch.manual_seed(learner_seed(config.seed, self.dist.rank))
        self.rng = np.random.default_rng(learner_seed(config.seed, self.dist.rank))
        seed = env_seed(config.seed, self.dist.rank, int(checkpoint["updates"]) if checkpoint is not None else 0)
        self.pool = make_pool(self.factory, config.num_envs, config.num_workers, seed=seed,
                              num_groups=config.env_groups, learner_is_worker=config.learner_steps_envs,
                              groups_by_worker=config.groups_by_worker, spin_seconds=config.spin_wait_us * 1e-6)
        self.policy_config = PolicyConfig(num_actions=self.pool.num_actions, arch=config.arch,
                                          recurrent=config.recurrent, obs_shape=self.pool.obs_shape)
        self.policy = build_policy(self.policy_config).to(self.device)
        model = self.dist.wrap(self.policy)
        if config.compile:
            # Only the training passes are compiled; rollouts use the eager module (its
            # batch shape changes with truncations, which would trigger recompiles).
            model = torch.compile(model)
        self.learner = PPOLearner(model, config.ppo, self.device)
        self.behaviour = copy.deepcopy(self.policy) if config.overlap else self.policy
        self.scheduler = CurriculumScheduler(self.demo_info["length"], config.curriculum) \
            if self.demo_info["length"] else None
        self.stall = StallDetector(config.unstick)
        self.explore = ExplorationBudget(config.num_envs, config.explore)
        self.stats = EpisodeStats(demo_return=self.demo_info.get("total_return"))
        self.demo_frames = demo_frames(config, self.demo_info["length"])
        self.hooks = CurriculumHooks(self.scheduler, self.stall, self.explore, self.rng, self.dist, config.num_envs)
        self.rollout = RolloutCollector(self.pool, self.hooks, config.num_envs, config.num_steps, self.device)
        self.updater = Updater(self.learner, self.device, config.overlap, self._after_update)
        self.frames = self.updates = 0
        self.elapsed = 0.0
        if checkpoint is not None:
            self._resume_from(checkpoint)
        self.dist.broadcast_module(self.policy)
        if config.overlap:
            self.behaviour.load_state_dict(self.policy.state_dict())

    # -- checkpoints ---------------------------------------------------------------------------
    def checkpoint_state(self) -> dict:
        """What ``checkpoints/latest.pt`` holds (see :mod:`curriculum_ppo.training.run_dir`)."""
        return pack_checkpoint(config=self.config.to_dict(), policy_config=asdict(self.policy_config),
                               demo_info=self.demo_info, model=self.policy.state_dict(),
                               learner=self.learner.state_dict(),
                               scheduler=self.scheduler.state_dict() if self.scheduler else None,
                               stall=self.stall.state_dict(), frames=self.frames, updates=self.updates,
                               elapsed=self.elapsed, episodes=self.stats.count, rank_state=self.rank_state())

    def rank_state(self) -> dict:
        """This rank's own state: its learner RNGs and its episode windows. Ranks differ in these;
        everything else is rank 0's."""
        return capture_rank_state(self.rng, self.learner.generator, self.stats.state_dict(), self.device)

    def save_checkpoint(self, periodic: bool = False) -> Path | None:
        """Write ``checkpoints/latest.pt`` (rank 0; a copy too if ``periodic``); other ranks write their
        :meth:`rank_state` to ``checkpoints/rank<r>.pt``. No collective: a rank may save alone on a fault."""
        if not self.dist.is_main:
            self.store.save_rank_state(self.rank_state(), self.dist.rank, self.dist.world_size, self.updates)
            return None
        return self.store.save_checkpoint(self.checkpoint_state(), self.frames if periodic else None)

    def _resume_from(self, ckpt: dict) -> None:
        check_resumable(ckpt, self.config.to_dict(), self.demo_info, self.run_dir)
        load_weights(ckpt, self.policy, self.learner, self.run_dir)
        scheduler_state = saved_scheduler_state(ckpt)
        if self.scheduler and scheduler_state:
            self.scheduler.load_state_dict(scheduler_state)
        self.stall.load_state_dict(saved_stall_state(ckpt))
        self.frames, self.updates, self.elapsed = int(ckpt["frames"]), int(ckpt["updates"]), float(ckpt["elapsed"])
        self.stats.count = int(ckpt.get("episodes", 0))
        self._restore_rank_state(ckpt)
        if self.dist.is_main:
            dropped = self.store.cut_metrics(self.updates)
            if dropped:
                self.logger.info(f"resume: {dropped} metrics rows logged after the checkpoint (update {self.updates}) "
                                 "were dropped; those updates run again")
        self.logger.tensorboard.purge_step = self.frames + 1  # hides the events logged after the checkpoint too

    def _restore_rank_state(self, ckpt: dict) -> None:
        """Restore this rank's random streams and episode windows, or reseed from (seed, rank, updates)."""
        state, source = self.store.load_rank_state(ckpt, self.dist.rank, self.dist.world_size)
        if state is None or "numpy_rng_json" not in state:
            reseed_rank(learner_reseed(self.config.seed, self.dist.rank, self.updates), self.rng,
                        self.learner.generator)
            self.resumed_rng = {"source": "reseeded", "why": source}
            return
        episode_stats = restore_rank_state(state, self.rng, self.learner.generator, self.device)
        if episode_stats:
            self.stats.load_state_dict(episode_stats)
        self.resumed_rng = {"source": source, "sha256": rank_state_digest(state)}

    # -- the loop ------------------------------------------------------------------------------
    def train(self) -> int:
        """Run until the frame budget is spent, a stop rule fires or a signal arrives; returns an exit code.

        The run directory's lock is released when this returns or raises, after the last file is written.
        """
        try:
            return self._train()
        finally:
            self.store.release()

    def _train(self) -> int:
        self.signals.install()
        try:
            stop = self._loop()
        except WorkerError as exc:
            self.updater.abandon()
            path = self.save_checkpoint()
            raise UserError(f"{exc}; last checkpoint kept at {path}") from None
        except BaseException:
            self.updater.abandon()
            raise
        finally:
            self.signals.restore()
            self._close_envs()
        return self._finish(stop)

    def _loop(self) -> tuple[str, str]:
        """Collect a rollout → update on it → log, until the budget or a stop rule ends the run; returns
        (kind, reason) of the stop. With overlap the update runs while the next rollout is collected."""
        cfg = self.config
        buffers = self._start_envs()
        hidden = self.behaviour.initial_state(cfg.num_envs, self.device)
        last_status = t0 = time.time()
        frames0 = self.frames
        self._announce()
        stop = ("frames", "frame budget used")
        while self.frames < cfg.total_frames and self.signals.name is None:
            reason = stop_reason(cfg.max_seconds, cfg.stop_at_success, t0, self.scheduler, self.stats, self.dist)
            if reason is not None:
                if reason != "time":
                    self.logger.info(f"stopping: {reason}")
                stop = ("time", "time budget (--minutes) used") if reason == "time" else ("goal", reason)
                break
            tick = time.time()
            initial_hidden = None if hidden is None else hidden.clone()
            episodes, hidden = self._collect(self.behaviour, buffers, hidden)
            batch = rollout_batch(buffers, self.behaviour, initial_hidden, self.device, cfg.ppo.gamma,
                                  cfg.ppo.gae_lambda)
            if self.updater.wait():  # the previous update (overlap); its weights collect the next rollout
                self.behaviour.load_state_dict(self.policy.state_dict())
            self.hooks.record(episodes, self.stats)
            self.frames += self.frames_per_update
            self.updater.start(batch, self._lr_scale(), self.stall.scale, len(episodes), tick,
                               demo=self._demo_targets())
            if time.time() - last_status >= cfg.status_every and not self.quiet:
                last_status = self._print_status(t0, frames0)
        self.updater.wait()
        return stop

    def _demo_targets(self):
        """The demo frames the next update clones (None without ``--demo-bc-coef``), from the window as it is
        now: the window moves only between updates, in :meth:`_after_update`."""
        if self.demo_frames is None or self.scheduler is None:
            return None
        return self.demo_frames.targets(self.scheduler.start_frame, self.scheduler.window_end)

    @property
    def frames_per_update(self) -> int:
        """Emulator frames of one update over all ranks (the toy env counts agent steps)."""
        cfg = self.config
        per_step = 1 if cfg.env_kind == "toy" else cfg.atari.frameskip
        return cfg.num_steps * cfg.num_envs * per_step * self.dist.world_size

    def _lr_scale(self) -> float:
        """The stall detector's scale, times the linear decay of ``anneal_lr`` over the frame budget."""
        anneal = 1.0 - self.frames / self.config.total_frames if self.config.ppo.anneal_lr else 1.0
        return self.stall.scale * anneal

    def _announce(self) -> None:
        ranks = f" x {self.dist.world_size} ranks" if self.dist.world_size > 1 else ""
        bf16 = " (bfloat16 trunk)" if self.learner.trunk_dtype is not None else ""
        self.logger.info(f"training on {self.device}{bf16} with {self.config.num_envs} envs in {self.pool.num_workers} "
                         f"workers{ranks}; run dir {self.run_dir}")
        if self.config.ppo.cpu_bf16 and self.device.type == "cpu" and self.learner.trunk_dtype is None:
            self.logger.info("warning: --cpu-bf16: this CPU has no bfloat16 kernels (AMX or AVX-512-BF16); "
                             "training in float32")
        if self.demo_info.get("unreachable") and self.scheduler is not None:
            self.logger.info(f"warning: {self.demo_info['unreachable']}")

    def _print_status(self, t0: float, frames0: int) -> float:
        now = time.time()
        sched = self.scheduler
        self.logger.info(status_line(self.frames, (self.frames - frames0) / max(1e-9, now - t0), self.start_frame,
                                     self.demo_info["length"], bool(sched and sched.done),
                                     sched.stats().get("front_success_rate") if sched else None,
                                     self.stats.summary()))
        return now

    def _finish(self, stop: tuple[str, str]) -> int:
        """The end of a run that did not crash: checkpoint, plots, ``stop.json``, the ranks' check; the exit code."""
        path = self.save_checkpoint()
        signal_name = self.signals.name
        if signal_name is not None:
            stop = ("signal", f"stopped by {signal_name}")
        if self.dist.is_main:
            self._plots()
            self.store.write_stop(self.frames, *stop)
        if self.dist.world_size > 1:
            check_ranks_agree(rank_report(self.policy, self.scheduler, self.start_frame, self.dist, self.frames,
                                          self.updates, self.resumed_rng), self.store, self.dist)
        if signal_name is not None:
            self.logger.info(f"stopped by {signal_name} at {self.frames} frames; checkpoint saved to {path}; "
                             f"continue with --resume", file=sys.stderr)
            return 130 if signal_name == "SIGINT" else 143
        self.logger.info(f"done: {self.frames} frames; checkpoint {path}")
        return 0

    def _collect(self, policy, buffers: dict, hidden):
        """One rollout of every env with ``policy`` into ``buffers``; returns (finished episodes, hidden)."""
        return self.rollout.collect(policy, buffers, hidden)

    def _start_envs(self) -> dict:
        """Begin an episode in every env at a start the curriculum picks; return empty rollout buffers."""
        return self.rollout.start()

    def _after_update(self, stats: dict, num_episodes: int, tick: float) -> None:
        """An update finished: count it, move the curriculum, log the row, checkpoint every few updates."""
        self.updates += 1
        now = time.time()
        self.elapsed += now - (tick if self._last_update_time is None else self._last_update_time)
        self._last_update_time = now
        move, decayed = self.hooks.after_update(self.frames)
        start = self.start_frame
        if decayed is not None:
            self.logger.info(f"curriculum stalled at frame {start}: lr and entropy coefficient scaled to "
                             f"{decayed:.3g}x")
        if move:
            self.logger.info(f"curriculum: moved {move}; episodes now start at frame {start}")
        self.logger.log(self._metrics_row(stats, num_episodes, move))
        if self.updates % self.config.latest_every == 0:
            periodic = self.updates % self.config.checkpoint_every == 0
            self.save_checkpoint(periodic=periodic)
            if self.dist.is_main and periodic:
                self._plots()

    def _metrics_row(self, stats: dict, num_episodes: int, move: str | None) -> dict:
        """One ``metrics.jsonl`` row (docs/training.md lists its fields)."""
        sched, ppo, scale = self.scheduler, self.config.ppo, self.stall.scale
        curriculum = sched.stats() if sched else {}
        row = {"frames": self.frames, "updates": self.updates, "time": round(self.elapsed, 2),
               "fps": round(self.frames / max(self.elapsed, 1e-9), 1), "start_frame": self.start_frame,
               "curriculum_done": bool(sched.done) if sched else None,
               "curriculum_move": move, "demo_length": self.demo_info["length"],
               "demo_reward_frames": self.demo_info["reward_frames"],
               "success_rate": curriculum.get("front_success_rate"),
               "window_success_rate": curriculum.get("window_success_rate"),
               "window_bin_success_rates": rounded_rates(curriculum.get("window_bin_success_rates", [])),
               "lr": ppo.lr * scale, "ent_coef": ppo.ent_coef * scale, "unstick_scale": scale,
               "new_episodes": num_episodes, "explored_steps": self.explore.take_count(),
               "explored_episodes": self.hooks.explored_episodes, "explored_successes": self.hooks.explored_successes,
               "episode_ends": self.stats.take_ends()}
        row.update(self.stats.summary())
        row.update({k: (float(v) if v is not None else None) for k, v in stats.items()})
        return row

    def _plots(self) -> None:
        """Redraw the run's PNG plots and write ``success_by_start.json`` (rank 0)."""
        from curriculum_ppo.plots import plot_run, plot_success_by_start

        try:
            plot_run(self.run_dir)
        except UserError:
            pass
        if self.scheduler is not None:
            table = success_by_start_table(*self.scheduler.counts_by_start(), self.demo_info["length"])
            table.update({"frames": self.frames, "start_frame": self.scheduler.start_frame,
                          "window_end": self.scheduler.window_end})
            self.store.write_success_by_start(table)
            plot_success_by_start(self.run_dir, table)

    # -- what tests and scripts read -----------------------------------------------------------
    @property
    def start_frame(self) -> int | None:
        return self.hooks.start_frame

    @property
    def explored_episodes(self) -> int:
        return self.hooks.explored_episodes

    @property
    def explored_successes(self) -> int:
        return self.hooks.explored_successes

    def _sample_start(self, env_index: int) -> int:
        return self.hooks.sample_start(env_index)

    def _begin_episode(self, env_index: int) -> None:
        self.hooks.begin_episode(self.pool, env_index)

    @property
    def tb(self):
        """The TensorBoard writer: None before the first row, False when unavailable or turned off
        (``trainer.tb = False`` turns it off)."""
        return self.logger.tensorboard.writer

    @tb.setter
    def tb(self, writer) -> None:
        self.logger.tensorboard.writer = writer

    # -- the end -------------------------------------------------------------------------------
    def _close_envs(self) -> None:
        if self.pool is not None and not self._envs_closed:
            self._envs_closed = True
            self.pool.close()
            if getattr(self, "demo_frames", None) is not None:
                self.demo_frames.close()
        self.logger.close()

    def close(self) -> None:
        """Stop the env workers and give the run directory free (``train`` does both itself)."""
        self._close_envs()
        self.store.release()
