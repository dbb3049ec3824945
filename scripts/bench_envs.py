#!/usr/bin/env python
"""Env stepping speed with demo-state resets vs. the emulator's limit, measured side by side.

Three contenders, all with the same preprocessing (frameskip 4, max over the
last two frames, 84x84 grayscale via cv2.INTER_AREA, 4-frame stack) and random
actions, for the same wall-clock duration each:

* ``raw_ale``: the limit -- bare ale-py loops in as many processes as cores,
  no Gymnasium, no IPC, no resets from demo states (plain reset_game on game over);
* ``env_pool``: curriculum_ppo's EnvPool (shared memory, several envs per
  worker), episodes starting from random demo frames (restore + replay), life
  loss ends the episode;
* ``gym_async``: gymnasium.vector.AsyncVectorEnv over the same AtariEnv
  (one process per env, shared memory), same demo-start resets.

Usage: python scripts/bench_envs.py [--seconds 20] [--envs 8] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

DEMO = str(Path(__file__).resolve().parent.parent / "demos" / "MontezumaRevenge-room1.h5")


def _raw_ale_worker(seconds: float, seed: int, queue) -> None:
    import cv2

    cv2.setNumThreads(1)
    from curriculum_ppo.emulator import Emulator

    emu = Emulator("montezuma_revenge")
    rng = np.random.default_rng(seed)
    screens = [np.zeros((210, 160), np.uint8), np.zeros((210, 160), np.uint8)]
    stack = np.zeros((4, 84, 84), np.uint8)
    steps = 0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        a = int(rng.integers(emu.num_actions))
        for i in range(4):
            emu.ale.act(emu.actions[a])
            if i >= 2:
                emu.ale.getScreenGrayscale(screens[i - 2])
        small = cv2.resize(np.maximum(screens[0], screens[1]), (84, 84), interpolation=cv2.INTER_AREA)
        stack[:-1] = stack[1:]
        stack[-1] = small
        steps += 1
        if emu.ale.game_over():
            emu.reset()
    queue.put(steps)


def bench_raw_ale(seconds: float, processes: int) -> float:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_raw_ale_worker, args=(seconds, i, queue)) for i in range(processes)]
    for p in procs:
        p.start()
    total = sum(queue.get() for _ in procs)
    for p in procs:
        p.join()
    return total / seconds


def _drive(step, num_envs, seconds, on_done=None) -> float:
    rng = np.random.default_rng(0)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        step(rng.integers(0, 18, num_envs))
        steps += num_envs
    return steps / (time.perf_counter() - start)


def bench_env_pool(seconds: float, num_envs: int, workers: int) -> float:
    from curriculum_ppo.demo.store import load_demo
    from curriculum_ppo.workers import EnvPool, EnvSpec

    n = len(load_demo(DEMO))
    rng = np.random.default_rng(1)
    with EnvPool(EnvSpec(demo_path=DEMO), num_envs, workers) as pool:
        pool.next_start[:] = rng.integers(0, n, num_envs)
        pool.reset()

        def step(actions):
            for episode in pool.step(actions):
                pool.next_start[episode["env"]] = rng.integers(0, n)
        step(np.zeros(num_envs, int))  # warm up
        return _drive(step, num_envs, seconds)


def _make_gym_env(seed):
    def thunk():
        import gymnasium as gym

        from curriculum_ppo.demo.store import load_demo
        from curriculum_ppo.envs.atari import AtariEnv

        demo = load_demo(DEMO)

        class RandomDemoStart(gym.Wrapper):
            def reset(self, **kwargs):
                start = int(self.np_random.integers(0, len(demo)))
                return self.env.reset(options={"start_frame": start})
        return RandomDemoStart(AtariEnv(demo=demo, seed=seed))
    return thunk


def bench_gym_async(seconds: float, num_envs: int) -> float:
    import gymnasium as gym

    envs = gym.vector.AsyncVectorEnv([_make_gym_env(i) for i in range(num_envs)], shared_memory=True,
                                     context="spawn")
    try:
        envs.reset(seed=0)
        envs.step(np.zeros(num_envs, int))
        return _drive(lambda a: envs.step(a), num_envs, seconds)
    finally:
        envs.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--envs", type=int, default=8)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--skip-gym", action="store_true")
    parser.add_argument("--json", default=str(Path(__file__).parent / "results" / "bench_envs.json"))
    args = parser.parse_args()

    results = {"raw_ale": bench_raw_ale(args.seconds, args.workers),
               "env_pool": bench_env_pool(args.seconds, args.envs, args.workers)}
    if not args.skip_gym:
        results["gym_async"] = bench_gym_async(args.seconds, args.envs)
    limit = results["raw_ale"]
    print(f"{'contender':<12} {'agent steps/s':>14} {'frames/s':>10} {'vs raw ALE':>11}")
    for name, sps in results.items():
        print(f"{name:<12} {sps:>14.0f} {4 * sps:>10.0f} {sps / limit:>10.0%}")
    out = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": platform.platform(),
           "cpus": os.cpu_count(), "seconds": args.seconds, "envs": args.envs, "workers": args.workers,
           "agent_steps_per_s": results, "ratio_env_pool_vs_raw": results["env_pool"] / limit,
           "ratio_gym_async_vs_raw": results.get("gym_async", float("nan")) / limit}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
