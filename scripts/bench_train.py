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
  next batch overlapped with the PPO update of the previous one).

Also measured in the same run: the update alone on a random batch
(forward+backward samples/s), which caps any loop at
``samples_per_s / epochs`` agent steps/s, and ``env_only`` (the EnvPool
stepping with random actions, no policy), the other bound. Reports agent
steps/s, ratios, fraction of the cap, and peak RSS of learner + workers.

The loops run in turn, ``--rounds`` times (each run: one untimed update, then
``--updates`` timed ones); the table gives each loop's median over the rounds
and the median of its per-round ratios to the CleanRL loops, so a slow minute
on a shared machine moves one round, not the verdict.

Usage: python scripts/bench_train.py [--rounds 3] [--updates 6] [--device auto|cpu|cuda] [--json OUT]
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

from bench_update import random_batch, sync  # scripts/ is on sys.path when a script runs
from curriculum_ppo.atomic import write_text_atomic

ROOT = Path(__file__).resolve().parent.parent
DEMO = str(ROOT / "demos" / "MontezumaRevenge-room1.h5")


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


def bench_cleanrl_style(device, num_envs, steps, updates, arch) -> float:
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


def bench_cleanrl_reference(device, num_envs, steps, updates) -> float:
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
    start = None
    for update in range(updates + 1):
        if update == 1:
            sync(device)
            start = time.perf_counter()
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
    elapsed = time.perf_counter() - start
    envs.close()
    torch.backends.cudnn.deterministic = deterministic
    return updates * T * B / elapsed


def bench_trainer(device, num_envs, steps, updates, workers, arch, overlap=True, compile=False, threads=None,
                  env_groups=1, learner_steps_envs=False, groups_by_worker=False, spin_wait_us=0.0):
    from curriculum_ppo.train import Trainer, TrainConfig

    with tempfile.TemporaryDirectory() as tmp:
        config = TrainConfig(demo=DEMO, total_frames=(updates + 1) * num_envs * steps * 4, num_envs=num_envs,
                             num_workers=workers, num_steps=steps, device=str(device), status_every=1e9,
                             latest_every=10_000, checkpoint_every=10_000, arch=arch, overlap=overlap, compile=compile,
                             torch_threads=threads, env_groups=env_groups, learner_steps_envs=learner_steps_envs,
                             groups_by_worker=groups_by_worker, spin_wait_us=spin_wait_us)
        trainer = Trainer(config, Path(tmp) / "run", quiet=True)
        trainer.train()
        rows = [json.loads(line) for line in (Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines()]
        first, last = rows[0], rows[-1]
        sps = (last["frames"] - first["frames"]) / 4 / (last["time"] - first["time"])
        return sps, sum(trainer.worker_peak_rss)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=6, help="timed PPO updates per loop per round")
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
    parser.add_argument("--pool-variants", action="store_true",
                        help="also measure the Trainer with --env-groups 2, --learner-steps-envs, "
                             "--env-groups WORKERS --groups-by-worker, and --spin-wait-us SPIN_US alone, with "
                             "--learner-steps-envs, and with --learner-steps-envs --env-groups 2")
    parser.add_argument("--spin-us", type=float, default=2000.0,
                        help="--spin-wait-us of the *_spin pool variants (microseconds)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    if args.spin_us <= 0:
        parser.error(f"--spin-us must be positive, got {args.spin_us:g}")
    if args.rounds < 1 or args.updates < 1:
        parser.error(f"--rounds and --updates must be at least 1, got {args.rounds} and {args.updates}")
    torch_default_threads = torch.get_num_threads()  # before a Trainer on a GPU sets its learner's threads
    from curriculum_ppo.train import pick_device

    device = pick_device(args.device)
    json_path = Path(args.json or ROOT / "scripts" / "results" / f"bench_train_{device.type}.json")

    from curriculum_ppo.ppo.learner import PPOConfig

    epochs = PPOConfig().num_epochs
    update_sps, update_cpu = bench_update_only(device, args.envs, args.steps, args.arch)
    cap = update_sps / epochs
    env_only, env_cpu = bench_env_only(args.envs, args.workers, args.env_seconds)

    worker_rss = 0  # the peak over all Trainer runs

    def trainer(**kwargs):
        def run():
            nonlocal worker_rss
            sps, rss = bench_trainer(device, args.envs, args.steps, args.updates, args.workers, args.arch,
                                     compile=args.compile, **kwargs)
            worker_rss = max(worker_rss, rss)
            torch.set_num_threads(torch_default_threads)  # a Trainer on a GPU sets its learner's threads
            return sps
        return run

    contenders = {}
    if not args.skip_cleanrl:
        if args.arch == "nature" and not args.skip_reference:
            contenders["cleanrl_reference"] = lambda: bench_cleanrl_reference(device, args.envs, args.steps,
                                                                              args.updates)
        contenders["cleanrl_style"] = lambda: bench_cleanrl_style(device, args.envs, args.steps, args.updates,
                                                                  args.arch)
    contenders["curriculum_ppo"] = trainer()
    for n in args.trainer_threads:
        contenders[f"curriculum_ppo_threads{n}"] = trainer(threads=n)
    if args.pool_variants:
        for name, kwargs in (("2_groups", {"env_groups": 2}), ("learner_worker", {"learner_steps_envs": True}),
                             ("groups_by_worker", {"env_groups": min(args.workers, args.envs), "groups_by_worker": True}),
                             ("learner_worker_spin", {"learner_steps_envs": True, "spin_wait_us": args.spin_us}),
                             ("learner_worker_2_groups_spin", {"learner_steps_envs": True, "env_groups": 2,
                                                               "spin_wait_us": args.spin_us}),
                             ("spin", {"spin_wait_us": args.spin_us})):
            contenders[f"curriculum_ppo_{name}"] = trainer(**kwargs)
    # The loops run in turn, round after round: on a noisy machine a ratio of two loops measured a
    # minute apart is steadier than a ratio of two loops measured in separate runs.
    rounds = {name: [] for name in contenders}
    for r in range(args.rounds):
        for name, run in contenders.items():
            rounds[name].append(run())
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{name} {v[-1]:.0f}" for name, v in rounds.items()),
              flush=True)
    rows = {"env_only": env_only, **{name: float(np.median(v)) for name, v in rounds.items()}}

    def ratio_to(base: str) -> dict[str, float] | None:
        """Each loop's median over rounds of its agent steps/s divided by ``base``'s in the same round."""
        if base not in rounds:
            return None
        return {name: float(np.median(np.array(v) / np.array(rounds[base]))) for name, v in rounds.items()}

    vs_style, vs_reference = ratio_to("cleanrl_style"), ratio_to("cleanrl_reference")
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
    print(f"{'loop':<30} {'agent steps/s':>14} {'range':>11} {'frames/s':>9} {'of cap':>7} {'vs cl-style':>11} "
          f"{'vs reference':>13} {'vs env-only':>12}")
    for name, sps in rows.items():
        spread = f"{min(rounds[name]):.0f}-{max(rounds[name]):.0f}" if name in rounds else "-"
        print(f"{name:<30} {sps:>14.0f} {spread:>11} {4 * sps:>9.0f} {sps / cap:>7.0%} "
              f"{(f'{vs_style[name]:.2f}x' if vs_style and name in rounds else '-'):>11} "
              f"{(f'{vs_reference[name]:.2f}x' if vs_reference and name in rounds else '-'):>13} "
              f"{sps / rows['env_only']:>11.0%}")
    if args.rounds > 1:
        print(f"agent steps/s: medians of {args.rounds} rounds; ratios: medians of the per-round ratios")
    print(f"peak RSS: learner {learner_rss / 2**20:.0f} MiB + workers {worker_rss / 2**20:.0f} MiB")
    out = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": platform.platform(),
           "cpus": os.cpu_count(), "device": str(device),
           "gpu": torch.cuda.get_device_name() if device.type == "cuda" else None,
           "config": vars(args), "update_samples_per_s": update_sps, "cap_agent_steps_per_s": cap,
           "agent_steps_per_s": rows, "agent_steps_per_s_rounds": rounds,
           "ratio_vs_cleanrl_style": vs_style, "ratio_vs_cleanrl_reference": vs_reference,
           "fraction_of_cap": rows["curriculum_ppo"] / cap,
           "cpu_seconds_per_agent_step": {"env": env_cpu, "update": epochs * update_cpu},
           "perfect_overlap_bound_agent_steps_per_s": overlap_bound,
           "fraction_of_overlap_bound": rows["curriculum_ppo"] / overlap_bound,
           "speedup_vs_cleanrl_style": vs_style["curriculum_ppo"] if vs_style else None,
           "speedup_vs_cleanrl_reference": vs_reference["curriculum_ppo"] if vs_reference else None,
           "training_vs_env_only": rows["curriculum_ppo"] / rows["env_only"],
           "peak_rss_learner_bytes": learner_rss, "peak_rss_workers_bytes": worker_rss}
    json_path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(json_path, json.dumps(out, indent=2))
    print(f"wrote {json_path}")


if __name__ == "__main__":
    main()
