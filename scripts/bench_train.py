#!/usr/bin/env python
"""Whole-training-loop speed: curriculum_ppo's Trainer vs. CleanRL-style loops, same run.

All train the same network (``--arch``, Nature CNN by default; the reference exists for that one
only) with the same PPO settings on the same env
(Montezuma's Revenge from the bundled demo's states, 84x84x4):

* ``cleanrl_reference``: CleanRL's ppo_atari.py as a user would run it (its
  own agent, float32 buffers and update code, written independently of ours),
  gymnasium SyncVectorEnv, collect ``steps`` steps with one policy call per
  step, then the PPO update, strictly in sequence;
* ``cleanrl_style``: the same sequential structure, but with our network and
  learner, so that its ratio to the Trainer isolates the loop (overlap,
  shared-memory workers) from the learner's code;
* ``curriculum_ppo``: the Trainer (shared-memory env workers, rollout of the
  next batch overlapped with the PPO update of the previous one), as ``train``
  runs it (metrics, final checkpoint and plots included).

Every contender does the same work: one run is ``--updates`` + 1 rollouts of
``--envs`` x ``--steps`` agent steps, each followed by its PPO update, in a
process of its own, and every run is timed the same way (``loop_timing.py``):

* whole run: the run's agent steps over the time from its process's start to
  its exit (imports, env and network set-up, the last update, closing): what a
  user waits for, for this frame budget;
* complete cycles: the agent steps of rollouts 2 onwards over the time from the
  start of rollout 2 to the end of the last update, so every step counted was
  both collected and trained on in the span, overlapped or not.

Also measured in the same run: the update alone on a random batch
(forward+backward samples/s), which caps any loop at
``samples_per_s / epochs`` agent steps/s, and ``env_only`` (the EnvPool
stepping with random actions, no policy), the other bound. Reports agent
steps/s, ratios, fraction of the cap, and peak RSS of learner + workers.

The loops run in turn, ``--rounds`` times; the tables give each loop's median
over the rounds and the median of its per-round ratios to the CleanRL loops,
so a slow minute on a shared machine moves one round, not the verdict. The
load average before the run and what other processes used during it are
recorded, with a warning when the machine was busy.

Usage: python scripts/bench_train.py [--rounds 3] [--updates 6] [--device auto|cpu|cuda] [--json OUT]
(default JSON: runs/bench/bench_train/bench_train_<device>.json)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # also when imported by a test or another script
from bench_common import LoadCheck, default_output, usable_cores, write_json  # noqa: E402
from bench_update import random_batch, sync  # noqa: E402
from loop_timing import LoopClock, LoopRecord, cycles_rate, whole_run_rate  # noqa: E402

from curriculum_ppo.atomic import check_destination  # noqa: E402
from curriculum_ppo.errors import UserError  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DEMO = str(ROOT / "demos" / "MontezumaRevenge-room1.h5")
SCRIPT = Path(__file__).resolve()


def bench_update_only(device, num_envs, steps, arch, repeats=2) -> float:
    from curriculum_ppo.ppo.learner import PPOConfig, PPOLearner
    from curriculum_ppo.ppo.policy import ActorCritic, PolicyConfig

    policy = ActorCritic(PolicyConfig(num_actions=18, arch=arch)).to(device)
    cfg = PPOConfig()
    learner = PPOLearner(policy, cfg, device)
    T, B = steps, num_envs
    batch = random_batch(policy, T, B, device, episode_length=float("inf"))  # training's obs layout, no episode ends
    learner.update(batch)
    sync(device)
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(repeats):
        learner.update(batch)
    sync(device)
    samples = repeats * T * B * cfg.num_epochs
    return samples / (time.perf_counter() - start), (time.process_time() - cpu_start) / samples


def bench_env_only(num_envs, workers, seconds) -> tuple[float, float]:
    """EnvPool stepping with random actions and the Trainer's start frames (a fresh curriculum):
    (agent steps/s, CPU seconds per agent step over the learner and worker processes)."""
    from bench_envs import curriculum_pool  # scripts/ is on sys.path when a script runs

    rng = np.random.default_rng(0)
    with ExitStack() as stack:
        pool, restart = curriculum_pool(num_envs, workers, stack)
        pids = [p.pid for p in pool.processes]
        steps, start = 0, time.perf_counter()
        cpu_start = _cpu_seconds(pids) + time.process_time()
        while time.perf_counter() - start < seconds:
            restart(pool.step(rng.integers(0, 18, num_envs)))
            steps += num_envs
        elapsed = time.perf_counter() - start
        cpu = _cpu_seconds(pids) + time.process_time() - cpu_start
        return steps / elapsed, cpu / steps


def _peak_rss_bytes(pids: list[int]) -> list[int]:
    """Peak resident memory (VmHWM, Linux /proc) of each of ``pids``, 0 where it cannot be read."""
    peaks = []
    for pid in pids:
        try:
            lines = Path(f"/proc/{pid}/status").read_text().splitlines()
            peaks.append(next(int(line.split()[1]) * 1024 for line in lines if line.startswith("VmHWM:")))
        except (OSError, StopIteration):
            peaks.append(0)
    return peaks


def _cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of other processes (Linux /proc), in seconds."""
    total = 0.0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _demo_start_sync_envs(num_envs):
    """gymnasium SyncVectorEnv of AtariEnvs that start where a fresh curriculum (the Trainer's) starts them."""
    import gymnasium as gym

    from curriculum_ppo.curriculum import CurriculumScheduler
    from curriculum_ppo.demo.store import load_demo
    from curriculum_ppo.envs.atari import AtariEnv

    demo = load_demo(DEMO)
    scheduler = CurriculumScheduler(len(demo))
    rng = np.random.default_rng(0)

    class DemoStart(gym.Wrapper):
        def __init__(self, env, index):
            super().__init__(env)
            self.index = index

        def reset(self, **kwargs):
            return self.env.reset(options={"start_frame": scheduler.sample_start(rng, self.index, num_envs)})

    return gym.vector.SyncVectorEnv([lambda i=i: DemoStart(AtariEnv(demo=demo, seed=i), i) for i in range(num_envs)])


def cleanrl_style_loop(clock: LoopClock, device, num_envs, steps, rollouts, arch) -> None:
    """Synchronous collect-then-update, as in CleanRL's ppo_atari.py (same net, learner and GAE)."""
    from curriculum_ppo.ppo.gae import compute_gae
    from curriculum_ppo.ppo.learner import PPOConfig, PPOLearner, RolloutBatch, rollout_obs_buffer
    from curriculum_ppo.ppo.policy import ActorCritic, PolicyConfig

    envs = _demo_start_sync_envs(num_envs)
    policy = ActorCritic(PolicyConfig(num_actions=18, arch=arch)).to(device)
    cfg = PPOConfig()
    learner = PPOLearner(policy, cfg, device)
    obs, _ = envs.reset(seed=0)
    T, B = steps, num_envs
    buf_obs = rollout_obs_buffer(T, B, policy.config.obs_shape)  # our learner's storage layout
    buf = {k: torch.zeros(T, B) for k in ("actions", "logprobs", "values", "rewards", "dones")}
    for _ in range(rollouts):
        clock.rollout_started()
        for t in range(T):
            buf_obs[t] = torch.from_numpy(obs)
            with torch.no_grad():
                action, logprob, value, _ = policy.act(buf_obs[t].to(device))
            obs, reward, term, trunc, _ = envs.step(action.cpu().numpy())
            buf["actions"][t], buf["logprobs"][t], buf["values"][t] = action.cpu(), logprob.cpu(), value.cpu()
            buf["rewards"][t] = torch.from_numpy(reward)
            buf["dones"][t] = torch.from_numpy(term | trunc)
        with torch.no_grad():
            _, _, last_value, _ = policy.act(torch.from_numpy(obs).to(device))
        adv, ret = compute_gae(buf["rewards"], buf["values"], buf["dones"], last_value.cpu(), 0.99, 0.95)
        batch = RolloutBatch(obs=buf_obs, actions=buf["actions"].long(), logprobs=buf["logprobs"],
                             values=buf["values"], advantages=adv, returns=ret, episode_starts=torch.zeros(T, B),
                             loss_mask=torch.ones(T, B))
        learner.update(batch.to(device))
        sync(device)
        clock.update_finished()
    envs.close()


def cleanrl_reference_loop(clock: LoopClock, device, num_envs, steps, rollouts, arch="nature") -> None:
    """CleanRL's ppo_atari.py as a user would run it, written independently of our PPO code.

    Its own Nature-CNN agent (NCHW, ``x / 255`` in the forward pass, ``torch.distributions.Categorical``),
    a float32 observation buffer, GAE as a Python loop over time, and the update loop of ppo_atari.py
    (shuffled minibatches, clipped policy and value losses, advantage normalization per minibatch,
    gradient clipping, Adam), including what CleanRL does by default beside the maths: cuDNN in
    deterministic mode (``torch_deterministic``) and the per-minibatch ``.item()`` of the clip fraction
    and per-update explained variance it logs. Batch, epochs and minibatches are training's defaults,
    so it does the same work per agent step as ``cleanrl_style``; what differs is our learner's code
    (uint8 rollouts, channels-last convolutions, no host syncs), which ``cleanrl_style`` shares with the
    Trainer. The envs are our AtariEnv with demo starts (as for the other contenders), not CleanRL's
    wrapper stack.
    """
    from torch import nn
    from torch.distributions import Categorical

    from curriculum_ppo.ppo.learner import PPOConfig

    cfg = PPOConfig()

    def init(layer, std=2 ** 0.5):
        nn.init.orthogonal_(layer.weight, std)
        nn.init.constant_(layer.bias, 0.0)
        return layer

    class Agent(nn.Module):
        def __init__(self, n_actions):
            super().__init__()
            self.network = nn.Sequential(
                init(nn.Conv2d(4, 32, 8, stride=4)), nn.ReLU(), init(nn.Conv2d(32, 64, 4, stride=2)), nn.ReLU(),
                init(nn.Conv2d(64, 64, 3, stride=1)), nn.ReLU(), nn.Flatten(), init(nn.Linear(64 * 7 * 7, 512)),
                nn.ReLU())
            self.actor = init(nn.Linear(512, n_actions), std=0.01)
            self.critic = init(nn.Linear(512, 1), std=1.0)

        def get_value(self, x):
            return self.critic(self.network(x / 255.0))

        def get_action_and_value(self, x, action=None):
            hidden = self.network(x / 255.0)
            probs = Categorical(logits=self.actor(hidden))
            if action is None:
                action = probs.sample()
            return action, probs.log_prob(action), probs.entropy(), self.critic(hidden)

    deterministic = torch.backends.cudnn.deterministic
    torch.backends.cudnn.deterministic = True  # CleanRL's default (--torch-deterministic); restored below
    envs = _demo_start_sync_envs(num_envs)
    agent = Agent(18).to(device)
    optimizer = torch.optim.Adam(agent.parameters(), lr=cfg.lr, eps=cfg.adam_eps)
    T, B = steps, num_envs
    obs = torch.zeros((T, B, 4, 84, 84), device=device)
    actions, logprobs, rewards, dones, values = (torch.zeros((T, B), device=device) for _ in range(5))
    next_obs, _ = envs.reset(seed=0)
    next_obs, next_done = torch.Tensor(next_obs).to(device), torch.zeros(B, device=device)
    batch_size = T * B
    minibatch_size = batch_size // cfg.num_minibatches
    for _ in range(rollouts):
        clock.rollout_started()
        for t in range(T):
            obs[t], dones[t] = next_obs, next_done
            with torch.no_grad():
                action, logprob, _, value = agent.get_action_and_value(next_obs)
                values[t] = value.flatten()
            actions[t], logprobs[t] = action, logprob
            next_obs, reward, term, trunc, _ = envs.step(action.cpu().numpy())
            rewards[t] = torch.tensor(reward, device=device).view(-1)
            next_obs = torch.Tensor(next_obs).to(device)
            next_done = torch.Tensor(np.logical_or(term, trunc)).to(device)
        with torch.no_grad():
            next_value = agent.get_value(next_obs).reshape(1, -1)
            advantages = torch.zeros_like(rewards)
            lastgaelam = 0
            for t in reversed(range(T)):
                if t == T - 1:
                    nextnonterminal, nextvalues = 1.0 - next_done, next_value
                else:
                    nextnonterminal, nextvalues = 1.0 - dones[t + 1], values[t + 1]
                delta = rewards[t] + cfg.gamma * nextvalues * nextnonterminal - values[t]
                advantages[t] = lastgaelam = delta + cfg.gamma * cfg.gae_lambda * nextnonterminal * lastgaelam
            returns = advantages + values
        b_obs, b_logprobs, b_actions = obs.reshape(-1, 4, 84, 84), logprobs.reshape(-1), actions.reshape(-1)
        b_advantages, b_returns, b_values = advantages.reshape(-1), returns.reshape(-1), values.reshape(-1)
        b_inds = np.arange(batch_size)
        clipfracs = []
        for _epoch in range(cfg.num_epochs):
            np.random.shuffle(b_inds)
            for lo in range(0, batch_size, minibatch_size):
                mb = b_inds[lo:lo + minibatch_size]
                _, newlogprob, entropy, newvalue = agent.get_action_and_value(b_obs[mb], b_actions.long()[mb])
                logratio = newlogprob - b_logprobs[mb]
                ratio = logratio.exp()
                with torch.no_grad():
                    approx_kl = ((ratio - 1) - logratio).mean()  # noqa: F841 (logged by CleanRL)
                    clipfracs.append(((ratio - 1.0).abs() > cfg.clip_coef).float().mean().item())
                mb_adv = b_advantages[mb]
                mb_adv = (mb_adv - mb_adv.mean()) / (mb_adv.std() + 1e-8)
                pg_loss = torch.max(-mb_adv * ratio, -mb_adv * torch.clamp(ratio, 1 - cfg.clip_coef,
                                                                          1 + cfg.clip_coef)).mean()
                newvalue = newvalue.view(-1)
                v_clipped = b_values[mb] + torch.clamp(newvalue - b_values[mb], -cfg.clip_coef, cfg.clip_coef)
                v_loss = 0.5 * torch.max((newvalue - b_returns[mb]) ** 2, (v_clipped - b_returns[mb]) ** 2).mean()
                loss = pg_loss - cfg.ent_coef * entropy.mean() + cfg.vf_coef * v_loss
                optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(agent.parameters(), cfg.max_grad_norm)
                optimizer.step()
        y_pred, y_true = b_values.cpu().numpy(), b_returns.cpu().numpy()
        explained_var = np.nan if np.var(y_true) == 0 else 1 - np.var(y_true - y_pred) / np.var(y_true)  # noqa: F841
        sync(device)
        clock.update_finished()
    envs.close()
    torch.backends.cudnn.deterministic = deterministic


def trainer_loop(clock: LoopClock, device, num_envs, steps, rollouts, arch, workers, overlap=True, compile=False,
                 threads=None, env_groups=1, learner_steps_envs=False, groups_by_worker=False,
                 spin_wait_us=0.0, cpu_bf16=False) -> int:
    """The Trainer as ``train`` runs it, for ``rollouts`` rollouts; returns the workers' peak RSS (bytes)."""
    from curriculum_ppo.training.config import TrainConfig
    from curriculum_ppo.training.loop import Trainer

    class TimedTrainer(Trainer):
        """Tells the clock when each rollout starts and when each update is done, and reads the env
        workers' peak RSS before they exit; changes nothing else."""

        worker_peak_rss: list[int] | tuple = ()

        def _collect(self, *args, **kwargs):
            clock.rollout_started()
            return super()._collect(*args, **kwargs)

        def _after_update(self, *args, **kwargs):
            super()._after_update(*args, **kwargs)
            sync(self.device)
            clock.update_finished()

        def _close_envs(self):
            if self.pool is not None and not self._envs_closed:
                self.worker_peak_rss = _peak_rss_bytes([p.pid for p in getattr(self.pool, "processes", [])])
            super()._close_envs()

    with tempfile.TemporaryDirectory() as tmp:
        config = TrainConfig(demo=DEMO, num_envs=num_envs, num_workers=workers, num_steps=steps,
                             device=str(device), status_every=1e9, latest_every=10_000, checkpoint_every=10_000,
                             arch=arch, overlap=overlap, compile=compile, torch_threads=threads,
                             env_groups=env_groups, learner_steps_envs=learner_steps_envs,
                             groups_by_worker=groups_by_worker, spin_wait_us=spin_wait_us)
        config.total_frames = rollouts * num_envs * steps * config.atari.frameskip
        config.ppo.cpu_bf16 = cpu_bf16
        trainer = TimedTrainer(config, Path(tmp) / "run", quiet=True)
        trainer.train()
        return sum(trainer.worker_peak_rss)


LOOPS = {"cleanrl_reference": cleanrl_reference_loop, "cleanrl_style": cleanrl_style_loop, "trainer": trainer_loop}


def run_contender(spec: dict, device: torch.device, num_envs: int, steps: int, rollouts: int, arch: str,
                  workers: int, compile: bool = False) -> dict:
    """One run of one loop in this process: its :class:`LoopRecord` and peak RSS, for the parent's JSON."""
    kwargs = dict(spec.get("kwargs", {}))
    clock = LoopClock(num_envs * steps)
    worker_rss = 0
    if spec["loop"] == "trainer":
        kwargs.setdefault("workers", workers)
        worker_rss = trainer_loop(clock, device, num_envs, steps, rollouts, arch, compile=compile, **kwargs)
    else:
        LOOPS[spec["loop"]](clock, device, num_envs, steps, rollouts, arch, **kwargs)
    record = clock.finished()
    if record.rollouts != rollouts:
        raise RuntimeError(f"{spec['name']}: {record.rollouts} rollouts timed, {rollouts} expected")
    learner_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"record": record.to_dict(), "peak_rss_learner_bytes": learner_rss, "peak_rss_workers_bytes": worker_rss}


class ContenderFailed(Exception):
    pass


def measure_process(argv: list[str], record_path: Path) -> dict:
    """Run ``argv`` (a process that writes a ``run_contender`` result to ``record_path``) and time it from
    its start to its exit: the whole-run and complete-cycles rates, both from :mod:`loop_timing`."""
    start = time.perf_counter()
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or proc.stdout.strip().splitlines() or ["no output"])[-1]
        raise ContenderFailed(f"exit {proc.returncode}: {last}")
    result = json.loads(record_path.read_text())
    record = LoopRecord.from_dict(result["record"])
    return {"whole_run": whole_run_rate(record, seconds), "cycles": cycles_rate(record), "seconds": seconds,
            "setup_seconds": record.rollout_starts[0] - record.begin, "agent_steps": record.total_steps,
            "peak_rss_learner_bytes": result["peak_rss_learner_bytes"],
            "peak_rss_workers_bytes": result["peak_rss_workers_bytes"]}


def measure(spec: dict, device: torch.device, num_envs: int, steps: int, updates: int, arch: str, workers: int,
            compile: bool = False) -> dict:
    """One run of the contender ``spec`` ({"name", "loop", "kwargs"}) in a process of its own, timed."""
    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        record_path = Path(tmp) / "record.json"
        argv = [sys.executable, str(SCRIPT), "--device", str(device), "--envs", str(num_envs), "--steps", str(steps),
                "--updates", str(updates), "--arch", arch, "--workers", str(workers),
                *(["--compile"] if compile else []), "--contender", json.dumps(spec), "--record", str(record_path)]
        try:
            return measure_process(argv, record_path)
        except ContenderFailed as exc:
            raise UserError(f"{spec['name']} failed ({exc})") from None


def contenders(args) -> list[dict]:
    specs = []
    if not args.skip_cleanrl:
        if args.arch == "nature" and not args.skip_reference:
            specs.append({"name": "cleanrl_reference", "loop": "cleanrl_reference"})
        specs.append({"name": "cleanrl_style", "loop": "cleanrl_style"})
    specs.append({"name": "curriculum_ppo", "loop": "trainer"})
    if args.cpu_bf16:
        specs.append({"name": "curriculum_ppo_cpu_bf16", "loop": "trainer", "kwargs": {"cpu_bf16": True}})
    for n in args.trainer_threads:
        specs.append({"name": f"curriculum_ppo_threads{n}", "loop": "trainer", "kwargs": {"threads": n}})
    if args.pool_variants:
        for name, kwargs in (("2_groups", {"env_groups": 2}), ("learner_worker", {"learner_steps_envs": True}),
                             ("groups_by_worker", {"env_groups": min(args.workers, args.envs), "groups_by_worker": True}),
                             ("learner_worker_spin", {"learner_steps_envs": True, "spin_wait_us": args.spin_us}),
                             ("learner_worker_2_groups_spin", {"learner_steps_envs": True, "env_groups": 2,
                                                               "spin_wait_us": args.spin_us}),
                             ("spin", {"spin_wait_us": args.spin_us})):
            specs.append({"name": f"curriculum_ppo_{name}", "loop": "trainer", "kwargs": kwargs})
    return specs


def ratios(rounds: dict[str, list[float]], base: str) -> dict[str, float] | None:
    """Each loop's median over rounds of its rate divided by ``base``'s in the same round."""
    if base not in rounds:
        return None
    return {name: float(np.median(np.array(v) / np.array(rounds[base]))) for name, v in rounds.items()}


def summary(rounds: dict[str, list[float]]) -> dict:
    return {"agent_steps_per_s": {name: float(np.median(v)) for name, v in rounds.items()}, "rounds": rounds,
            "ratio_vs_cleanrl_style": ratios(rounds, "cleanrl_style"),
            "ratio_vs_cleanrl_reference": ratios(rounds, "cleanrl_reference")}


def print_table(title: str, part: dict, extra=None) -> None:
    """One table (medians, ranges, ratios); ``extra(name, sps)`` adds columns."""
    vs_style, vs_ref = part["ratio_vs_cleanrl_style"], part["ratio_vs_cleanrl_reference"]
    print(title)
    print(f"  {'loop':<30} {'agent steps/s':>14} {'range':>11} {'vs cl-style':>11} {'vs reference':>13}"
          + (extra(None, None) if extra else ""))
    for name, sps in part["agent_steps_per_s"].items():
        values = part["rounds"][name]
        print(f"  {name:<30} {sps:>14.0f} {f'{min(values):.0f}-{max(values):.0f}':>11} "
              f"{(f'{vs_style[name]:.2f}x' if vs_style else '-'):>11} {(f'{vs_ref[name]:.2f}x' if vs_ref else '-'):>13}"
              + (extra(name, sps) if extra else ""))


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=6,
                        help="PPO updates per run after the first: each run is this + 1 collect+update cycles; the "
                             "whole-run time holds them all, the complete-cycles rate these last ones")
    parser.add_argument("--rounds", type=int, default=3,
                        help="the loops run in turn, this many times; the table shows medians")
    parser.add_argument("--envs", type=int, default=8)
    parser.add_argument("--steps", type=int, default=128)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--arch", default="nature")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--env-seconds", type=float, default=15.0)
    parser.add_argument("--skip-cleanrl", action="store_true", help="measure neither CleanRL-style loop")
    parser.add_argument("--skip-reference", action="store_true",
                        help="leave out cleanrl_reference (CleanRL's own code), keep cleanrl_style")
    parser.add_argument("--compile", action="store_true", help="torch.compile the Trainer's network")
    parser.add_argument("--trainer-threads", type=int, nargs="*", default=[],
                        help="also measure the Trainer with these torch thread counts (the default row uses train's "
                             "default: one per core on CPU, 1 with a GPU)")
    parser.add_argument("--cpu-bf16", action="store_true",
                        help="also measure the Trainer with --cpu-bf16 (bfloat16 conv trunk where the CPU has the kernels)")
    parser.add_argument("--pool-variants", action="store_true",
                        help="also measure the Trainer with --env-groups 2, --learner-steps-envs, "
                             "--env-groups WORKERS --groups-by-worker, and --spin-wait-us SPIN_US alone, with "
                             "--learner-steps-envs, and with --learner-steps-envs --env-groups 2")
    parser.add_argument("--spin-us", type=float, default=2000.0,
                        help="--spin-wait-us of the *_spin pool variants (microseconds)")
    parser.add_argument("--json", default=None,
                        help="results file (default runs/bench/bench_train/bench_train_DEVICE.json; the committed "
                             "figures in scripts/results/ change only when named here)")
    # One contender's run, in the process the parent times (not for direct use).
    parser.add_argument("--contender", help=argparse.SUPPRESS)
    parser.add_argument("--record", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.spin_us <= 0:
        parser.error(f"--spin-us must be positive, got {args.spin_us:g}")
    if args.rounds < 1 or args.updates < 1:
        parser.error(f"--rounds and --updates must be at least 1, got {args.rounds} and {args.updates}")
    if args.envs < 1 or args.steps < 1 or args.workers < 1:
        parser.error(f"--envs, --steps and --workers must be at least 1, got {args.envs}, {args.steps} and "
                     f"{args.workers}")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    from curriculum_ppo.device import pick_device

    device = pick_device(args.device)
    rollouts = args.updates + 1
    if args.contender:  # a child: one run of one loop
        result = run_contender(json.loads(args.contender), device, args.envs, args.steps, rollouts, args.arch,
                               args.workers, args.compile)
        write_json(args.record, result)
        return

    json_path = Path(args.json) if args.json else default_output("bench_train", f"bench_train_{device.type}.json")
    try:
        json_path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the directory of --json {json_path}: {exc.strerror or exc}") from None
    check_destination(json_path, "--json")  # before minutes of measuring
    from bench_learning import cpu_model
    from curriculum_ppo.ppo.learner import PPOConfig

    cores = usable_cores()
    load = LoadCheck("bench_train", cores_used=cores if device.type == "cpu" else min(cores, args.workers + 1),
                     cores_total=cores).start()
    epochs = PPOConfig().num_epochs
    update_sps, update_cpu = bench_update_only(device, args.envs, args.steps, args.arch)
    cap = update_sps / epochs
    env_only, env_cpu = bench_env_only(args.envs, args.workers, args.env_seconds)

    # An upper bound for any loop, however well it overlaps: on CPU, one agent step needs the CPU
    # time of its env step plus `epochs` update passes (both measured above, policy inference left
    # out), and the machine has its cores to spend; on GPU the update runs beside the CPU, so the
    # slower of the two sides bounds the loop.
    overlap_bound = cores / (env_cpu + epochs * update_cpu) if device.type == "cpu" else min(env_only, cap)
    base = {"date": None, "machine": platform.platform(), "cpu_model": cpu_model(), "cpus": os.cpu_count(),
            "device": str(device), "gpu": torch.cuda.get_device_name() if device.type == "cuda" else None,
            "config": {k: v for k, v in vars(args).items() if k not in ("contender", "record")},
            "timing": "each run is a process of its own doing --updates + 1 rollouts, each followed by its update; "
                      "whole_run: its agent steps over its process's start to exit; cycles: agent steps of rollouts "
                      "2 onwards over the start of rollout 2 to the end of the last update (scripts/loop_timing.py)",
            "rollouts_per_run": rollouts, "agent_steps_per_run": rollouts * args.envs * args.steps,
            "update_samples_per_s": update_sps, "cap_agent_steps_per_s": cap, "env_only_agent_steps_per_s": env_only,
            "cpu_seconds_per_agent_step": {"env": env_cpu, "update": epochs * update_cpu},
            "perfect_overlap_bound_agent_steps_per_s": overlap_bound}

    # The loops run in turn, round after round: on a noisy machine a ratio of two loops measured a
    # minute apart is steadier than a ratio of two loops measured in separate runs.
    specs = contenders(args)
    runs = {s["name"]: [] for s in specs}
    done = 0
    try:
        for r in range(args.rounds):
            for spec in specs:
                runs[spec["name"]].append(measure(spec, device, args.envs, args.steps, args.updates, args.arch,
                                                  args.workers, args.compile))
            print(f"round {r + 1}/{args.rounds}, whole run / complete cycles: " + ", ".join(
                f"{name} {v[-1]['whole_run']:.0f} / {v[-1]['cycles']:.0f}" for name, v in runs.items()), flush=True)
            out = report(base, runs, load.finish(warn=r + 1 == args.rounds))
            write_json(json_path, out)  # after every round: an interrupted run keeps the rounds it finished
            done = r + 1
    except KeyboardInterrupt:
        raise SystemExit(f"bench_train: interrupted; {json_path} holds the {done} round(s) finished before" if done
                         else "bench_train: interrupted before the first round ended; nothing written") from None

    print(f"device {device}, {args.envs} envs x {args.steps} steps, {epochs} epochs x "
          f"{PPOConfig().num_minibatches} minibatches, {args.arch} CNN; each run: {rollouts} rollouts + updates "
          f"({rollouts * args.envs * args.steps:,} agent steps), {args.rounds} round(s)")
    print(f"PPO update alone: {update_sps:.0f} samples/s -> cap {cap:.0f} agent steps/s")
    print(f"CPU time per agent step: env {env_cpu * 1e3:.2f} ms + update {epochs * update_cpu * 1e3:.2f} ms")
    print(f"perfect-overlap bound: {overlap_bound:.0f} agent steps/s; env workers alone (env_only): {env_only:.0f}")
    seconds, setup = out["whole_run"]["seconds"], out["whole_run"]["setup_seconds"]
    print_table(f"whole run: process start to exit, {rollouts * args.envs * args.steps:,} agent steps",
                out["whole_run"], lambda n, _: f" {'seconds':>8} {'set-up s':>9}" if n is None
                else f" {seconds[n]:>8.1f} {setup[n]:>9.1f}")
    print_table(f"complete cycles: start of rollout 2 to the end of update {rollouts}, "
                f"{args.updates * args.envs * args.steps:,} agent steps", out["cycles"],
                lambda n, sps: f" {'of cap':>7} {'of bound':>9} {'vs env-only':>12}" if n is None
                else f" {sps / cap:>7.0%} {sps / overlap_bound:>9.0%} {sps / env_only:>12.0%}")
    if args.rounds > 1:
        print(f"agent steps/s: medians of {args.rounds} rounds; ratios: medians of the per-round ratios")
    rss = out["peak_rss_bytes"]["curriculum_ppo"]
    print(f"peak RSS of the Trainer: learner {rss['learner'] / 2**20:.0f} MiB + workers "
          f"{rss['workers'] / 2**20:.0f} MiB")
    print(f"wrote {json_path}")


def report(base: dict, runs: dict[str, list[dict]], machine_load: dict) -> dict:
    """The JSON of the rounds so far: ``base`` (set-up measurements), medians and ratios of both rates."""
    whole = summary({name: [m["whole_run"] for m in v] for name, v in runs.items()})
    cycles = summary({name: [m["cycles"] for m in v] for name, v in runs.items()})
    whole["seconds"] = {name: float(np.median([m["seconds"] for m in v])) for name, v in runs.items()}
    whole["setup_seconds"] = {name: float(np.median([m["setup_seconds"] for m in v])) for name, v in runs.items()}
    trainer = cycles["agent_steps_per_s"]["curriculum_ppo"]
    return {**base, "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "rounds_done": len(next(iter(runs.values()))), "whole_run": whole, "cycles": cycles,
            "trainer_cycles_fraction_of_cap": trainer / base["cap_agent_steps_per_s"],
            "trainer_cycles_fraction_of_overlap_bound": trainer / base["perfect_overlap_bound_agent_steps_per_s"],
            "trainer_cycles_vs_env_only": trainer / base["env_only_agent_steps_per_s"],
            "peak_rss_bytes": {name: {"learner": max(m["peak_rss_learner_bytes"] for m in v),
                                      "workers": max(m["peak_rss_workers_bytes"] for m in v)}
                               for name, v in runs.items()},
            "machine_load": machine_load}


if __name__ == "__main__":
    try:
        main()
    except UserError as exc:
        raise SystemExit(f"bench_train: error: {exc}") from None
    except KeyboardInterrupt:
        raise SystemExit("bench_train: interrupted; nothing written") from None
