#!/usr/bin/env python
"""Speed of the PPO update alone (forward + backward + Adam), per network, on this machine.

A rollout of ``envs x steps`` random uint8 frames is trained on for ``epochs``
epochs of ``minibatches`` minibatches, exactly as in training
(:class:`curriculum_ppo.ppo.learner.PPOLearner`). Two rates are reported:

* ``fwd_bwd_samples_per_s`` = steps * envs * epochs / seconds: frames pushed
  through forward + backward per second (what the hardware does);
* ``rollout_samples_per_s`` = steps * envs / seconds: agent steps per second the
  update can absorb, i.e. the ceiling any training loop with these settings
  can reach, however fast the emulators are.

Wall time is what counts, but on a shared machine it includes time spent
waiting for the CPU; the process CPU time per update is printed next to it,
and a warning when the machine was busy (load average before the run, other
processes' CPU use during it; recorded in the JSON).

Usage:
    python scripts/bench_update.py [--device auto|cpu|cuda] [--threads N] [--archs nature,large]
                                   [--recurrent both|no|yes] [--repeats 3] [--json OUT]
"""

from __future__ import annotations

import argparse
import platform
import time
from datetime import datetime, timezone

import torch

from bench_common import LoadCheck, usable_cores, write_json  # scripts/ is on sys.path when a script runs
from curriculum_ppo.atomic import check_destination
from curriculum_ppo.errors import UserError
from curriculum_ppo.ppo.learner import PPOConfig, PPOLearner, RolloutBatch, rollout_obs_buffer
from curriculum_ppo.ppo.policy import ActorCritic, PolicyConfig


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    return torch.device(name)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def random_batch(policy: ActorCritic, steps: int, envs: int, device: torch.device,
                 episode_length: float = 100.0) -> RolloutBatch:
    T, B, A = steps, envs, policy.config.num_actions
    obs = rollout_obs_buffer(T, B, policy.config.obs_shape)  # training's layout
    obs.copy_(torch.randint(0, 256, obs.shape, dtype=torch.uint8))
    return RolloutBatch(
        obs=obs,
        actions=torch.randint(0, A, (T, B)),
        logprobs=torch.full((T, B), -float(torch.log(torch.tensor(float(A))))),
        values=torch.zeros(T, B),
        advantages=torch.randn(T, B),
        returns=torch.randn(T, B),
        episode_starts=torch.rand(T, B) < 1.0 / episode_length,
        loss_mask=torch.ones(T, B),
        initial_state=policy.initial_state(B),
    ).to(device)


def bench_one(arch: str, recurrent: bool, args: argparse.Namespace, device: torch.device) -> dict:
    torch.manual_seed(0)
    policy = ActorCritic(
        PolicyConfig(num_actions=18, arch=arch, recurrent=recurrent, obs_shape=tuple(args.obs_shape))
    ).to(device)
    policy.gru_packed = {"auto": None, "packed": True, "stretches": False}[args.gru_path]
    config = PPOConfig(num_epochs=args.epochs, num_minibatches=args.minibatches, amp=not args.no_amp)
    learner = PPOLearner(policy, config, device)
    batch = random_batch(policy, args.steps, args.envs, device, args.episode_length)
    for _ in range(args.warmup):  # allocator, cuDNN algorithm choice, oneDNN primitive caches
        learner.update(batch)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    sync(device)
    times, cpu_times = [], []
    for _ in range(args.repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        learner.update(batch)
        sync(device)
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
    best, mean = min(times), sum(times) / len(times)
    samples = args.steps * args.envs
    return {
        "arch": arch,
        "recurrent": recurrent,
        "params": sum(p.numel() for p in policy.parameters()),
        "seconds_per_update_mean": mean,
        "seconds_per_update_best": best,
        # Process CPU time: on a shared, loaded machine wall time overstates the cost; CPU time / threads does not.
        "cpu_seconds_per_update_mean": sum(cpu_times) / len(cpu_times),
        "fwd_bwd_samples_per_s": samples * args.epochs / mean,
        "rollout_samples_per_s": samples / mean,
        "peak_gpu_mem_mib": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--archs", default="nature,large")
    parser.add_argument("--recurrent", default="both", choices=["both", "no", "yes"])
    parser.add_argument("--envs", type=int, default=8)
    parser.add_argument("--steps", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=PPOConfig().num_epochs, help="default: training's")
    parser.add_argument("--minibatches", type=int, default=PPOConfig().num_minibatches, help="default: training's")
    parser.add_argument("--obs-shape", type=lambda s: [int(x) for x in s.split(",")], default=[4, 84, 84],
                        help="C,H,W (default 4,84,84; 12,105,80 for 4 RGB frames)")
    parser.add_argument("--episode-length", type=float, default=100.0,
                        help="mean episode length in agent steps: each step starts an episode with probability "
                             "1/L. Recurrent policies cut each env's steps at its episode starts, so this "
                             "changes their cost (default 100)")
    parser.add_argument("--gru-path", default="auto", choices=["auto", "packed", "stretches"],
                        help="how the GRU handles episode starts (ActorCritic._gru_sequence); auto: packed on "
                             "GPUs, and on CPUs for minibatches of at most 4 envs or when the longest episode piece is "
                             "at most half the segment")
    parser.add_argument("--warmup", type=int, default=1, help="untimed updates per network")
    parser.add_argument("--repeats", type=int, default=3, help="timed updates per network")
    parser.add_argument("--no-amp", action="store_true", help="float32 on CUDA too (default: bf16 trunk)")
    parser.add_argument("--json", metavar="OUT", help="also write the results to this JSON file")
    args = parser.parse_args()

    if args.json:
        try:  # before minutes of measuring
            check_destination(args.json, "--json")
        except UserError as exc:
            raise SystemExit(f"bench_update: error: {exc}") from None
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    load = LoadCheck("bench_update", cores_used=min(usable_cores(), torch.get_num_threads())
                     if device.type == "cpu" else 1).start()
    variants = {"both": [False, True], "no": [False], "yes": [True]}[args.recurrent]
    archs = [a.strip() for a in args.archs.split(",") if a.strip()]
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    amp = device.type == "cuda" and not args.no_amp

    print(f"PPO update on {device} ({device_name}), {torch.get_num_threads()} threads, "
          f"batch {args.envs} envs x {args.steps} steps, {args.epochs} epochs x {args.minibatches} minibatches, "
          f"obs {tuple(args.obs_shape)}, {'bf16 trunk' if amp else 'fp32'}")
    header = (f"{'net':<14} {'params':>9} {'s/update':>9} {'cpu s/update':>12} "
              f"{'fwd+bwd samples/s':>18} {'rollout samples/s':>18}")
    print(header)
    print("-" * len(header))
    results = []
    for arch in archs:
        for recurrent in variants:
            r = bench_one(arch, recurrent, args, device)
            results.append(r)
            name = arch + ("+gru" if recurrent else "")
            print(f"{name:<14} {r['params'] / 1e6:>8.2f}M {r['seconds_per_update_mean']:>9.3f} "
                  f"{r['cpu_seconds_per_update_mean']:>12.3f} "
                  f"{r['fwd_bwd_samples_per_s']:>18.0f} {r['rollout_samples_per_s']:>18.0f}", flush=True)
    machine_load = load.finish()

    if args.json:
        report = {
            "benchmark": "ppo_update",
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "device": str(device),
            "device_name": device_name,
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "amp_bf16": amp,
            "settings": {k: v for k, v in vars(args).items() if k != "json"},
            "results": results,
            "machine_load": machine_load,
        }
        write_json(args.json, report)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
