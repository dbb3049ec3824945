#!/usr/bin/env python
"""Env stepping speed with demo-state resets vs. the emulator's limit, measured side by side.

All contenders do the same work per agent step (frameskip 4, max over the
last two frames, 84x84 grayscale via cv2.INTER_AREA, 4-frame stack, random
actions) for the same wall-clock duration each, and all but one start their
episodes the way training does: at demo frames drawn by the curriculum
scheduler in its initial state (each env in its own stratum of the window),
a new start after every life loss.

* ``raw_ale`` (the limit): bare ale-py loops in as many processes as cores,
  one emulator per env, no Gymnasium, no IPC; episodes end where AtariEnv's
  do (life loss, or the default lag rule, checked with the same pure
  ``DemoEpisodeTracker``), and a new start is a plain ``restoreState`` of a
  state cloned beforehand (no frame-stack refill);
* ``raw_ale_game_start``: the same bare loops playing from the game start and
  resetting only on game over -- a different workload (death animations and
  the game-over screen emulate faster than room-1 play), kept for comparison
  with earlier figures;
* ``env_pool``: curriculum_ppo's EnvPool (shared memory, several envs per
  worker) over AtariEnv, with the same starts;
* ``gym_async``: gymnasium.vector.AsyncVectorEnv over the same AtariEnv
  (one process per env, shared memory), same starts.

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


def _starts(num_envs: int, seed: int):
    """``draw(env_index) -> demo frame``, as the Trainer draws starts from a fresh curriculum."""
    from curriculum_ppo.curriculum import CurriculumScheduler
    from curriculum_ppo.demo.store import load_demo

    scheduler = CurriculumScheduler(len(load_demo(DEMO)))
    rng = np.random.default_rng(seed)
    return lambda i: scheduler.sample_start(rng, i, num_envs)


def _raw_ale_worker(seconds: float, seed: int, env_indices: list[int], num_envs: int, demo_starts: bool,
                    barrier, queue) -> None:
    import cv2

    cv2.setNumThreads(1)
    from curriculum_ppo.demo.store import load_demo
    from curriculum_ppo.emulator import Emulator

    from curriculum_ppo.episode_rules import DemoEpisodeTracker

    emus = {i: Emulator("montezuma_revenge") for i in env_indices}  # one emulator per env, as in the pool
    states = {}
    demo = load_demo(DEMO)
    if demo_starts:  # clone every start state up front: the limit pays nothing per reset but restoreState
        probe = emus[env_indices[0]]
        for t in range(len(demo)):
            demo.restore(probe, t)
            states[t] = probe.ale.cloneState(include_rng=True)
    draw = _starts(num_envs, seed)
    rng = np.random.default_rng(seed)
    screens = [np.zeros((210, 160), np.uint8), np.zeros((210, 160), np.uint8)]
    stacks = {i: np.zeros((4, 84, 84), np.uint8) for i in env_indices}
    lives, trackers, scores, elapsed = {}, {}, {}, {}

    def new_episode(i, emu):
        # The same episode ends as AtariEnv's: life loss, or the lag rule of the default episode rules.
        start = draw(i)
        emu.ale.restoreState(states[start])
        lives[i], scores[i], elapsed[i] = emu.ale.lives(), 0.0, 0
        trackers[i] = DemoEpisodeTracker(demo.cumulative_return, start, rng=rng)

    for i, emu in emus.items():
        if demo_starts:
            new_episode(i, emu)
        else:
            emu.reset()
            lives[i] = emu.ale.lives()
    steps = 0
    barrier.wait()  # every process starts its clock together
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        for i, emu in emus.items():
            a = int(rng.integers(emu.num_actions))
            reward = 0.0
            for k in range(4):
                reward += emu.ale.act(emu.actions[a])
                if k >= 2:
                    emu.ale.getScreenGrayscale(screens[k - 2])
            small = cv2.resize(np.maximum(screens[0], screens[1]), (84, 84), interpolation=cv2.INTER_AREA)
            stack = stacks[i]
            stack[:-1] = stack[1:]
            stack[-1] = small
            steps += 1
            if demo_starts:
                scores[i] += reward
                elapsed[i] += 4
                verdict = trackers[i].step(elapsed[i], scores[i])
                if emu.ale.lives() < lives[i] or emu.ale.game_over() or verdict.truncated:
                    new_episode(i, emu)
            elif emu.ale.game_over():
                emu.reset()
    queue.put(steps)


def bench_raw_ale(seconds: float, processes: int, num_envs: int, demo_starts: bool = True) -> float:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    processes = min(processes, num_envs)  # as EnvPool: never more processes than envs
    barrier = ctx.Barrier(processes)
    groups = np.array_split(np.arange(num_envs), processes)
    procs = [ctx.Process(target=_raw_ale_worker,
                         args=(seconds, i, [int(e) for e in g], num_envs, demo_starts, barrier, queue))
             for i, g in enumerate(groups)]
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
    from curriculum_ppo.workers import EnvPool, EnvSpec

    draw = _starts(num_envs, seed=1)
    with EnvPool(EnvSpec(demo_path=DEMO), num_envs, workers) as pool:
        pool.next_start[:] = [draw(i) for i in range(num_envs)]
        pool.reset()
        pool.next_start[:] = [draw(i) for i in range(num_envs)]  # where each env restarts (the Trainer does this)

        def step(actions):
            for episode in pool.step(actions):
                pool.next_start[episode["env"]] = draw(episode["env"])
        step(np.zeros(num_envs, int))  # warm up
        return _drive(step, num_envs, seconds)


def _make_gym_env(index: int, num_envs: int):
    def thunk():
        import gymnasium as gym

        from curriculum_ppo.demo.store import load_demo
        from curriculum_ppo.envs.atari import AtariEnv

        draw = _starts(num_envs, seed=100 + index)

        class CurriculumStart(gym.Wrapper):
            def reset(self, **kwargs):
                return self.env.reset(options={"start_frame": draw(index)})
        return CurriculumStart(AtariEnv(demo=load_demo(DEMO), seed=index))
    return thunk


def bench_gym_async(seconds: float, num_envs: int) -> float:
    import gymnasium as gym

    envs = gym.vector.AsyncVectorEnv([_make_gym_env(i, num_envs) for i in range(num_envs)], shared_memory=True,
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

    results = {"raw_ale": bench_raw_ale(args.seconds, args.workers, args.envs),
               "env_pool": bench_env_pool(args.seconds, args.envs, args.workers)}
    if not args.skip_gym:
        results["gym_async"] = bench_gym_async(args.seconds, args.envs)
    results["raw_ale_game_start"] = bench_raw_ale(args.seconds, args.workers, args.envs, demo_starts=False)
    limit = results["raw_ale"]
    print(f"{'contender':<20} {'agent steps/s':>14} {'frames/s':>10} {'vs raw ALE':>11}")
    for name, sps in results.items():
        print(f"{name:<20} {sps:>14.0f} {4 * sps:>10.0f} {sps / limit:>10.0%}")
    out = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": platform.platform(),
           "cpus": os.cpu_count(), "seconds": args.seconds, "envs": args.envs, "workers": args.workers,
           "agent_steps_per_s": results, "ratio_env_pool_vs_raw": results["env_pool"] / limit,
           "ratio_gym_async_vs_raw": results["gym_async"] / limit if "gym_async" in results else None,
           "starts": "curriculum scheduler, initial window, one stratum per env; new start after each life loss"}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
