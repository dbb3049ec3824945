#!/usr/bin/env python
"""Env stepping speed with demo-state resets vs. the emulator's limit, measured side by side.

All contenders do the same work per agent step (frameskip 4, max over the
last two frames, 84x84 grayscale via cv2.INTER_AREA, 4-frame stack, random
actions) in short timed slices taken in turn (every contender stays alive,
idle, while the others run, so a slow spell of this noisy machine hits all
of them alike; the table shows medians), and all but one start their
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
  worker) over AtariEnv, with the same starts, all envs stepped as one batch
  (``train --env-groups 1``, the default);
* ``env_pool_2_groups``: the same pool with its envs in two pipelined groups
  (``train --env-groups 2``): while one group's actions are chosen, the
  workers step the other;
* ``gym_async``: gymnasium.vector.AsyncVectorEnv over the same AtariEnv
  (one process per env, shared memory), same starts;
* ``atari_env_no_pool``: AtariEnv in the raw loops' processes with no pool
  around it (no learner process, no messages): separates what the env
  costs from what the pool's step handshake costs;
* ``env_pool_learner_worker``: the pool with the learner process stepping
  worker 0's envs (``train --learner-steps-envs``), one process fewer;
* ``env_pool_groups_by_worker``: one env group per worker, each group living
  in its worker alone (``train --env-groups W --groups-by-worker``): workers
  no longer meet at a barrier after every step (groups are still waited for in order);
* ``env_pool_learner_worker_groups_by_worker``: both: the learner process
  steps group 0 itself while worker 1 steps group 1 (no barrier, no third
  process).

Usage: python scripts/bench_envs.py [--seconds 3] [--rounds 15] [--envs 8] [--json OUT]
(default JSON: runs/bench/bench_envs/bench_envs.json; the load average before the run and what
other processes used during it are recorded, with a warning when the machine was busy)
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import time
from contextlib import ExitStack
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from bench_common import LoadCheck, default_output, usable_cores, write_json  # scripts/ is on sys.path
from bench_learning import cpu_model
from curriculum_ppo.atomic import check_destination
from curriculum_ppo.errors import UserError

DEMO = str(Path(__file__).resolve().parent.parent / "demos" / "MontezumaRevenge-room1.h5")


def _starts(num_envs: int, seed: int):
    """``draw(env_index) -> demo frame``, as the Trainer draws starts from a fresh curriculum."""
    from curriculum_ppo.curriculum import CurriculumScheduler
    from curriculum_ppo.demo.store import load_demo

    scheduler = CurriculumScheduler(len(load_demo(DEMO)))
    rng = np.random.default_rng(seed)
    return lambda i: scheduler.sample_start(rng, i, num_envs)


def _serve_timed_slices(one_pass, barrier, conn) -> None:
    """Each ``conn.recv()`` of a duration: run ``one_pass() -> agent steps`` that long (all processes start
    their clocks together) and answer the step count; ``None`` ends the process."""
    conn.send("ready")
    while (seconds := conn.recv()) is not None:
        steps = 0
        barrier.wait()
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            steps += one_pass()
        conn.send(steps)


def _raw_ale_worker(seed: int, env_indices: list[int], num_envs: int, demo_starts: bool, barrier, conn) -> None:
    """Bare ale-py loops, one emulator per env."""
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

    def one_pass() -> int:
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
            if demo_starts:
                scores[i] += reward
                elapsed[i] += 4
                verdict = trackers[i].step(elapsed[i], scores[i])
                if emu.ale.lives() < lives[i] or emu.ale.game_over() or verdict.truncated:
                    new_episode(i, emu)
            elif emu.ale.game_over():
                emu.reset()
        return len(emus)
    _serve_timed_slices(one_pass, barrier, conn)


def _atari_env_worker(seed: int, env_indices: list[int], num_envs: int, demo_starts: bool, barrier, conn) -> None:
    """curriculum_ppo's AtariEnv in a bare loop: the pool's per-env work without its messages."""
    import cv2

    cv2.setNumThreads(1)
    from curriculum_ppo.demo.store import load_demo
    from curriculum_ppo.envs.atari import AtariEnv

    draw = _starts(num_envs, seed)
    rng = np.random.default_rng(seed)
    envs = {i: AtariEnv(demo=load_demo(DEMO), seed=i) for i in env_indices}
    for i, env in envs.items():
        env.reset(options={"start_frame": draw(i)})

    def one_pass() -> int:
        for i, env in envs.items():
            _, _, terminated, truncated, _ = env.step(int(rng.integers(18)))
            if terminated or truncated:
                env.reset(options={"start_frame": draw(i)})
        return len(envs)
    _serve_timed_slices(one_pass, barrier, conn)


class LoopProcesses:
    """Loops in ``processes`` processes, kept alive between timed slices: bare ale-py (``_raw_ale_worker``,
    the emulator's limit) or AtariEnv without any pool around it (``_atari_env_worker``)."""

    def __init__(self, processes: int, num_envs: int, demo_starts: bool = True, target=_raw_ale_worker):
        ctx = mp.get_context("spawn")
        processes = min(processes, num_envs)  # as EnvPool: never more processes than envs
        barrier = ctx.Barrier(processes)
        self.conns, self.procs = [], []
        for i, group in enumerate(np.array_split(np.arange(num_envs), processes)):
            parent, child = ctx.Pipe()
            p = ctx.Process(target=target, daemon=True,
                            args=(i, [int(e) for e in group], num_envs, demo_starts, barrier, child))
            p.start()
            self.conns.append(parent)
            self.procs.append(p)
        for conn in self.conns:
            conn.recv()

    def __call__(self, seconds: float) -> float:
        for conn in self.conns:
            conn.send(seconds)
        return sum(conn.recv() for conn in self.conns) / seconds

    def close(self) -> None:
        for conn in self.conns:
            conn.send(None)
        for p in self.procs:
            p.join()


def _driver(step, num_envs):
    """``run(seconds) -> agent steps/s`` for a batched ``step(actions)``."""
    rng = np.random.default_rng(0)

    def run(seconds: float) -> float:
        steps, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            step(rng.integers(0, 18, num_envs))
            steps += num_envs
        return steps / (time.perf_counter() - start)
    return run


def curriculum_pool(num_envs: int, workers: int, stack: ExitStack, groups: int = 1, learner_is_worker: bool = False,
                    by_worker: bool = False, spin_seconds: float = 0.0):
    """An EnvPool (closed by ``stack``) whose envs start where a fresh curriculum puts them, as in training.

    Returns ``(pool, restart)``: pass each step's finished episodes to ``restart(episodes)`` to choose
    where those envs start next (the Trainer does the same).
    """
    from curriculum_ppo.envs.registry import EnvFactory
    from curriculum_ppo.vec import EnvPool

    draw = _starts(num_envs, seed=1)
    pool = stack.enter_context(EnvPool(EnvFactory("atari", demo_path=DEMO), num_envs, workers, num_groups=groups,
                                       learner_is_worker=learner_is_worker, groups_by_worker=by_worker,
                                       spin_seconds=spin_seconds))
    pool.set_options([{"start_frame": draw(i)} for i in range(num_envs)])
    pool.reset()
    pool.set_options([{"start_frame": draw(i)} for i in range(num_envs)])

    def restart(episodes):
        for episode in episodes:
            pool.set_options({"start_frame": draw(episode["env"])}, episode["env"])
    return pool, restart


def env_pool(num_envs: int, workers: int, stack: ExitStack, groups: int = 1, learner_is_worker: bool = False,
             by_worker: bool = False, spin_seconds: float = 0.0):
    pool, restart = curriculum_pool(num_envs, workers, stack, groups, learner_is_worker, by_worker, spin_seconds)
    rng = np.random.default_rng(0)
    if groups == 1:
        return _driver(lambda actions: restart(pool.step(actions)), num_envs)

    # Pipelined as the Trainer does with env_groups: every group stays in flight; as soon as one
    # group's step is back, its next actions are chosen and sent while the others step.
    for g, sl in enumerate(pool.group_slices):
        pool.step_async(rng.integers(0, 18, sl.stop - sl.start), group=g)

    def run(seconds: float) -> float:
        steps, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            for g, sl in enumerate(pool.group_slices):
                restart(pool.step_wait(group=g))
                pool.step_async(rng.integers(0, 18, sl.stop - sl.start), group=g)
                steps += sl.stop - sl.start
        return steps / (time.perf_counter() - start)
    return run


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


def gym_async(num_envs: int, stack: ExitStack):
    import gymnasium as gym

    envs = gym.vector.AsyncVectorEnv([_make_gym_env(i, num_envs) for i in range(num_envs)], shared_memory=True,
                                     context="spawn")
    stack.callback(envs.close)
    envs.reset(seed=0)
    return _driver(envs.step, num_envs)


def loops(processes: int, num_envs: int, stack: ExitStack, demo_starts: bool = True, target=_raw_ale_worker):
    runner = LoopProcesses(processes, num_envs, demo_starts, target)
    stack.callback(runner.close)
    return runner


def summarize(rounds: dict[str, list[float]]) -> dict:
    """Medians of throughput, and of the ratio to the raw loop run in the same round (the figure quoted:
    a ratio of two runs seconds apart is far steadier on a noisy machine than a ratio of medians)."""
    ratios = {name: [v / r for v, r in zip(values, rounds["raw_ale"])] for name, values in rounds.items()}
    return {"agent_steps_per_s": {name: float(np.median(v)) for name, v in rounds.items()},
            "ratio_vs_raw_ale": {name: float(np.median(r)) for name, r in ratios.items()},
            "ratio_vs_raw_ale_range": {name: [float(min(r)), float(max(r))] for name, r in ratios.items()}}


def report(out: dict) -> None:
    print(f"{'contender':<42} {'agent steps/s':>14} {'frames/s':>10} {'vs raw ALE':>11} {'(range)':>12}"
          f"   medians of {out['rounds']} rounds")
    for name, sps in out["agent_steps_per_s"].items():
        lo, hi = out["ratio_vs_raw_ale_range"][name]
        print(f"{name:<42} {sps:>14.0f} {4 * sps:>10.0f} {out['ratio_vs_raw_ale'][name]:>10.0%} "
              f"{f'{lo:.0%}-{hi:.0%}':>12}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per contender per round")
    parser.add_argument("--rounds", type=int, default=15,
                        help="contenders run in turn, this many times; the table shows medians")
    parser.add_argument("--warmup", type=float, default=10.0,
                        help="untimed seconds each contender runs first, so the pools' per-env start caches are "
                             "filled as in a training run (the raw reference clones every start state up front)")
    parser.add_argument("--envs", type=int, default=8)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--skip-gym", action="store_true")
    parser.add_argument("--spin-us", type=float, default=2000.0,
                        help="spin_seconds (in microseconds) of the *_spin contenders: pool processes poll their "
                             "pipe this long before blocking")
    parser.add_argument("--json", default=None,
                        help="results file (default runs/bench/bench_envs/bench_envs.json; the committed figures in "
                             "scripts/results/ change only when named here)")
    parser.add_argument("--report", metavar="JSON", help="print the table of an earlier run's JSON and exit")
    args = parser.parse_args()
    if args.spin_us <= 0:
        parser.error(f"--spin-us must be positive (the *_spin contenders spin), got {args.spin_us:g}")
    if args.report:
        saved = json.loads(Path(args.report).read_text())
        saved.update(summarize(saved["agent_steps_per_s_by_round"]))
        print(f"{saved['date']}, {saved['machine']}, {saved.get('cpu_model', 'CPU not recorded')}, {saved['cpus']} CPUs, "
              f"{saved['envs']} envs")
        report(saved)
        return

    try:  # before minutes of measuring
        json_path = Path(args.json) if args.json else default_output("bench_envs", "bench_envs.json")
        json_path.parent.mkdir(parents=True, exist_ok=True)
        check_destination(json_path, "--json")
    except (UserError, OSError) as exc:
        raise SystemExit(f"bench_envs: error: {exc}") from None
    load = LoadCheck("bench_envs", cores_used=usable_cores()).start()
    rounds: dict[str, list[float]] = {}
    spin = args.spin_us * 1e-6
    with ExitStack() as stack:
        # Every contender is built once and stays alive (idle, blocked on a pipe) while the others run:
        # short slices in turn, so a slow spell of a noisy machine hits all of them alike.
        contenders = {"raw_ale": loops(args.workers, args.envs, stack),
                      "env_pool": env_pool(args.envs, args.workers, stack),
                      "env_pool_2_groups": env_pool(args.envs, args.workers, stack, groups=2),
                      "env_pool_learner_worker": env_pool(args.envs, args.workers, stack, learner_is_worker=True),
                      "env_pool_learner_worker_2_groups": env_pool(args.envs, args.workers, stack, groups=2,
                                                                   learner_is_worker=True),
                      "env_pool_groups_by_worker": env_pool(args.envs, args.workers, stack, groups=min(args.workers, args.envs),
                                                            by_worker=True),
                      "env_pool_learner_worker_groups_by_worker": env_pool(
                          args.envs, args.workers, stack, groups=min(args.workers, args.envs), learner_is_worker=True,
                          by_worker=True),
                      "env_pool_spin": env_pool(args.envs, args.workers, stack, spin_seconds=spin),
                      "env_pool_learner_worker_spin": env_pool(args.envs, args.workers, stack, learner_is_worker=True,
                                                               spin_seconds=spin),
                      "env_pool_learner_worker_2_groups_spin": env_pool(args.envs, args.workers, stack, groups=2,
                                                                        learner_is_worker=True, spin_seconds=spin)}
        if not args.skip_gym:
            contenders["gym_async"] = gym_async(args.envs, stack)
        contenders["atari_env_no_pool"] = loops(args.workers, args.envs, stack, target=_atari_env_worker)
        contenders["raw_ale_game_start"] = loops(args.workers, args.envs, stack, demo_starts=False)
        for name, run in contenders.items():
            run(args.warmup)
            rounds[name] = []
        for r in range(args.rounds):
            for name, run in contenders.items():
                rounds[name].append(run(args.seconds))
            print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{n} {v[-1]:.0f}" for n, v in rounds.items()),
                  flush=True)
    out = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": platform.platform(),
           "cpus": os.cpu_count(), "seconds": args.seconds, "warmup_seconds": args.warmup, "rounds": args.rounds,
           "cpu_model": cpu_model(), "envs": args.envs, "workers": args.workers, "spin_us": args.spin_us,
           "agent_steps_per_s_by_round": rounds,
           "starts": "curriculum scheduler, initial window, one stratum per env; new start after each life loss",
           "machine_load": load.finish()}  # after the stack closed: every contender's processes have ended
    out.update(summarize(rounds))
    report(out)
    write_json(json_path, out)
    print(f"wrote {json_path}")


if __name__ == "__main__":
    main()
