#!/usr/bin/env python
"""Whole-training-loop speed: curriculum_ppo's Trainer vs. a CleanRL-style loop, same run.

Both train the same network with the same PPO settings on the same env
(Montezuma's Revenge from the bundled demo's states, 84x84x4):

* ``cleanrl_style``: gymnasium SyncVectorEnv, collect ``steps`` steps with
  one policy call per step, then the PPO update, strictly in sequence (the
  structure of CleanRL's ppo_atari.py);
* ``curriculum_ppo``: the Trainer (shared-memory env workers, rollout of the
  next batch overlapped with the PPO update of the previous one).

Also measured in the same run: the update alone on a random batch
(forward+backward samples/s), which caps any loop at
``samples_per_s / epochs`` agent steps/s, and ``env_only`` (the EnvPool
stepping with random actions, no policy), the other bound. Reports agent
steps/s, ratios, fraction of the cap, and peak RSS of learner + workers.

Usage: python scripts/bench_train.py [--updates 6] [--device auto|cpu|cuda] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import tempfile
import time
from contextlib import ExitStack
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from curriculum_ppo.atomic import write_text_atomic

ROOT = Path(__file__).resolve().parent.parent
DEMO = str(ROOT / "demos" / "MontezumaRevenge-room1.h5")


def bench_update_only(device, num_envs, steps, arch, repeats=2) -> float:
    from curriculum_ppo.ppo.learner import PPOConfig, PPOLearner, RolloutBatch
    from curriculum_ppo.ppo.policy import ActorCritic, PolicyConfig

    policy = ActorCritic(PolicyConfig(num_actions=18, arch=arch)).to(device)
    cfg = PPOConfig()
    learner = PPOLearner(policy, cfg, device)
    T, B = steps, num_envs
    batch = RolloutBatch(obs=torch.randint(0, 255, (T, B, 4, 84, 84), dtype=torch.uint8),
                         actions=torch.randint(0, 18, (T, B)), logprobs=torch.full((T, B), -2.89),
                         values=torch.zeros(T, B), advantages=torch.randn(T, B), returns=torch.randn(T, B),
                         episode_starts=torch.zeros(T, B), loss_mask=torch.ones(T, B)).to(device)
    learner.update(batch)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(repeats):
        learner.update(batch)
    if device.type == "cuda":
        torch.cuda.synchronize()
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


def _cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of other processes (Linux /proc), in seconds."""
    total = 0.0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def bench_cleanrl_style(device, num_envs, steps, updates, arch) -> float:
    """Synchronous collect-then-update, as in CleanRL's ppo_atari.py (same net, learner and GAE)."""
    import gymnasium as gym

    from curriculum_ppo.demo.store import load_demo
    from curriculum_ppo.envs.atari import AtariEnv
    from curriculum_ppo.ppo.gae import compute_gae
    from curriculum_ppo.ppo.learner import PPOConfig, PPOLearner, RolloutBatch
    from curriculum_ppo.ppo.policy import ActorCritic, PolicyConfig

    demo = load_demo(DEMO)

    from curriculum_ppo.curriculum import CurriculumScheduler

    scheduler = CurriculumScheduler(len(demo))  # the same start frames as the Trainer's
    rng = np.random.default_rng(0)

    class DemoStart(gym.Wrapper):
        def __init__(self, env, index):
            super().__init__(env)
            self.index = index

        def reset(self, **kwargs):
            return self.env.reset(options={"start_frame": scheduler.sample_start(rng, self.index, num_envs)})

    envs = gym.vector.SyncVectorEnv([lambda i=i: DemoStart(AtariEnv(demo=demo, seed=i), i) for i in range(num_envs)])
    policy = ActorCritic(PolicyConfig(num_actions=18, arch=arch)).to(device)
    cfg = PPOConfig()
    learner = PPOLearner(policy, cfg, device)
    obs, _ = envs.reset(seed=0)
    T, B = steps, num_envs
    buf_obs = torch.zeros((T, B, 4, 84, 84), dtype=torch.uint8)
    buf = {k: torch.zeros(T, B) for k in ("actions", "logprobs", "values", "rewards", "dones")}
    start = None
    for update in range(updates + 1):
        if update == 1:
            start = time.perf_counter()
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
    elapsed = time.perf_counter() - start
    envs.close()
    return updates * T * B / elapsed


def bench_trainer(device, num_envs, steps, updates, workers, arch, overlap=True, compile=False, threads=None,
                  env_groups=1, learner_steps_envs=False, groups_by_worker=False):
    from curriculum_ppo.train import Trainer, TrainConfig

    with tempfile.TemporaryDirectory() as tmp:
        config = TrainConfig(demo=DEMO, total_frames=(updates + 1) * num_envs * steps * 4, num_envs=num_envs,
                             num_workers=workers, num_steps=steps, device=str(device), status_every=1e9,
                             latest_every=10_000, checkpoint_every=10_000, arch=arch, overlap=overlap, compile=compile,
                             torch_threads=threads, env_groups=env_groups, learner_steps_envs=learner_steps_envs,
                             groups_by_worker=groups_by_worker)
        trainer = Trainer(config, Path(tmp) / "run", quiet=True)
        trainer.train()
        rows = [json.loads(line) for line in (Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines()]
        first, last = rows[0], rows[-1]
        sps = (last["frames"] - first["frames"]) / 4 / (last["time"] - first["time"])
        return sps, sum(trainer.worker_peak_rss)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=6)
    parser.add_argument("--envs", type=int, default=8)
    parser.add_argument("--steps", type=int, default=128)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--arch", default="nature")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--env-seconds", type=float, default=15.0)
    parser.add_argument("--skip-cleanrl", action="store_true")
    parser.add_argument("--compile", action="store_true", help="torch.compile the Trainer's network")
    parser.add_argument("--trainer-threads", type=int, nargs="*", default=[],
                        help="also measure the Trainer with these torch thread counts (the default row uses train's "
                             "default: one per core on CPU, 1 with a GPU)")
    parser.add_argument("--pool-variants", action="store_true",
                        help="also measure the Trainer with --env-groups 2, --learner-steps-envs and "
                             "--env-groups WORKERS --groups-by-worker")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch_default_threads = torch.get_num_threads()  # before a Trainer on a GPU sets its learner's threads
    from curriculum_ppo.train import pick_device

    device = pick_device(args.device)
    json_path = Path(args.json or ROOT / "scripts" / "results" / f"bench_train_{device.type}.json")

    rows = {}
    from curriculum_ppo.ppo.learner import PPOConfig

    epochs = PPOConfig().num_epochs
    update_sps, update_cpu = bench_update_only(device, args.envs, args.steps, args.arch)
    cap = update_sps / epochs
    rows["env_only"], env_cpu = bench_env_only(args.envs, args.workers, args.env_seconds)
    if not args.skip_cleanrl:
        rows["cleanrl_style"] = bench_cleanrl_style(device, args.envs, args.steps, args.updates, args.arch)
    rows["curriculum_ppo"], worker_rss = bench_trainer(device, args.envs, args.steps, args.updates, args.workers,
                                                       args.arch, compile=args.compile)
    torch.set_num_threads(torch_default_threads)
    for n in args.trainer_threads:
        rows[f"curriculum_ppo_threads{n}"], _ = bench_trainer(device, args.envs, args.steps, args.updates,
                                                              args.workers, args.arch, compile=args.compile, threads=n)
        torch.set_num_threads(torch_default_threads)
    if args.pool_variants:
        for name, kwargs in (("2_groups", {"env_groups": 2}), ("learner_worker", {"learner_steps_envs": True}),
                             ("groups_by_worker", {"env_groups": min(args.workers, args.envs), "groups_by_worker": True})):
            rows[f"curriculum_ppo_{name}"], _ = bench_trainer(device, args.envs, args.steps, args.updates,
                                                              args.workers, args.arch, compile=args.compile, **kwargs)
    learner_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(f"device {device}, {args.envs} envs x {args.steps} steps, {epochs} epochs x "
          f"{PPOConfig().num_minibatches} minibatches, {args.arch} CNN")
    print(f"PPO update alone: {update_sps:.0f} samples/s -> cap {cap:.0f} agent steps/s")
    # An upper bound for any loop, however well it overlaps: on CPU, one agent step needs the CPU
    # time of its env step plus `epochs` update passes (both measured above, policy inference left
    # out), and the machine has os.cpu_count() cores to spend; on GPU the update runs beside the
    # CPU, so the slower of the two sides bounds the loop.
    if device.type == "cpu":
        overlap_bound = (os.cpu_count() or 1) / (env_cpu + epochs * update_cpu)
    else:
        overlap_bound = min(rows["env_only"], cap)
    print(f"CPU time per agent step: env {env_cpu * 1e3:.2f} ms + update {epochs * update_cpu * 1e3:.2f} ms")
    print(f"perfect-overlap bound: {overlap_bound:.0f} agent steps/s"
          + (f" = {overlap_bound / rows['cleanrl_style']:.2f}x the CleanRL-style loop" if "cleanrl_style" in rows else ""))
    print(f"{'loop':<30} {'agent steps/s':>14} {'frames/s':>9} {'of cap':>7} {'vs cleanrl':>11} {'vs env-only':>12}")
    base = rows.get("cleanrl_style")
    for name, sps in rows.items():
        print(f"{name:<30} {sps:>14.0f} {4 * sps:>9.0f} {sps / cap:>7.0%} "
              f"{(f'{sps / base:.2f}x' if base else '-'):>11} {sps / rows['env_only']:>11.0%}")
    print(f"peak RSS: learner {learner_rss / 2**20:.0f} MiB + workers {worker_rss / 2**20:.0f} MiB")
    out = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": platform.platform(),
           "cpus": os.cpu_count(), "device": str(device),
           "gpu": torch.cuda.get_device_name() if device.type == "cuda" else None,
           "config": vars(args), "update_samples_per_s": update_sps, "cap_agent_steps_per_s": cap,
           "agent_steps_per_s": rows, "fraction_of_cap": rows["curriculum_ppo"] / cap,
           "cpu_seconds_per_agent_step": {"env": env_cpu, "update": epochs * update_cpu},
           "perfect_overlap_bound_agent_steps_per_s": overlap_bound,
           "fraction_of_overlap_bound": rows["curriculum_ppo"] / overlap_bound,
           "speedup_vs_cleanrl_style": rows["curriculum_ppo"] / base if base else None,
           "training_vs_env_only": rows["curriculum_ppo"] / rows["env_only"],
           "peak_rss_learner_bytes": learner_rss, "peak_rss_workers_bytes": worker_rss}
    json_path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(json_path, json.dumps(out, indent=2))
    print(f"wrote {json_path}")


if __name__ == "__main__":
    main()
