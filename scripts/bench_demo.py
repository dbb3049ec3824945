#!/usr/bin/env python3
"""Benchmark demo files on this machine: recording speed, file size, load time, restore time.

A synthetic long demo is recorded on Montezuma's Revenge with a random-but-sticky policy
(each frame keeps the previous action with probability 0.9). Lost lives are rewound with
``DemoBuilder.truncate`` like a person would in the recorder (Montezuma stops emulating at
game over, so a plain random policy could not make a long demo). Then it is saved, loaded, and
1,000 random frames are restored with ``Demo.restore`` (nearest saved state + replay of
the gap); the emulator's raw ``restoreState`` alone, in the same run, is the baseline.

    python scripts/bench_demo.py                 # 50,000 frames (a few minutes)
    python scripts/bench_demo.py --quick         # 5,000 frames
    python scripts/bench_demo.py --frames 20000 --json /tmp/bench.json

Without ``--json`` the results go to ``runs/bench/bench_demo/bench_demo.json`` (git-ignored); the
README's figures are ``scripts/results/bench_demo.json``, replaced only when named with ``--json``.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from bench_common import LoadCheck, default_output, write_json  # scripts/ is on sys.path when a script runs
from bench_learning import cpu_model
from curriculum_ppo.atomic import check_destination
from curriculum_ppo.errors import UserError

import numpy as np

from curriculum_ppo.demo import schema
from curriculum_ppo.demo.store import DemoBuilder, load_demo, save_demo
from curriculum_ppo.emulator import Emulator, EmulatorSettings, ale_version

GAME = "montezuma_revenge"
GOAL_FILE_MB_PER_50K = 50.0
GOAL_RESTORE_MEDIAN_MS = 2.0


def record(frames: int, seed: int, state_interval: int, stickiness: float = 0.9) -> tuple[DemoBuilder, dict]:
    """Record ``frames`` frames with a sticky random policy, rewinding every lost life.

    A random policy dies every few hundred frames and Montezuma stops at game over, so a
    lost life is undone: ``truncate`` back 120 frames (the fall and death animation take
    about that long) and play on with fresh random actions; rewind further while the
    policy keeps dying at the same place.
    """
    emu = Emulator(EmulatorSettings(GAME))
    rng = np.random.default_rng(seed)
    builder = DemoBuilder(emu, state_interval=state_interval)
    action, steps, rewinds, stuck, last_death = 0, 0, 0, 0, -1
    step_time = 0.0
    start = time.perf_counter()
    while len(builder) < frames:
        if rng.random() > stickiness:
            action = int(rng.integers(emu.num_actions))
        lives = builder.lives[-1]
        t0 = time.perf_counter()
        builder.step(action)
        step_time += time.perf_counter() - t0
        steps += 1
        if builder.lives[-1] < lives or emu.game_over():
            t = len(builder)
            stuck = stuck + 1 if abs(t - last_death) <= 60 else 0
            last_death = t
            builder.truncate(max(0, t - min(120 + 60 * stuck, 600)))
            rewinds += 1
            action = int(rng.integers(emu.num_actions))
        if steps % 50_000 == 0:
            print(f"  {steps:,} steps, demo at frame {len(builder):,}, {rewinds} rewinds", file=sys.stderr)
        if steps > 30 * frames + 100_000:
            raise SystemExit("the random policy makes no progress (dies too often); try another --seed")
    wall = time.perf_counter() - start
    return builder, {
        "policy": f"sticky random (keep action with p={stickiness}), lost lives rewound",
        "emulator_steps": steps,
        "rewinds": rewinds,
        "record_wall_s": wall,
        "record_steps_per_s": steps / wall,
        "step_only_steps_per_s": steps / step_time,
    }


def percentiles_ms(ns: np.ndarray) -> dict:
    ms = ns / 1e6
    return {"median_ms": float(np.median(ms)), "p90_ms": float(np.percentile(ms, 90)),
            "max_ms": float(ms.max()), "mean_ms": float(ms.mean())}


def bench_restore(demo, count: int, seed: int) -> dict:
    from ale_py import ALEState

    emu = demo.make_emulator()
    rng = np.random.default_rng(seed + 1)
    targets = rng.integers(0, len(demo) + 1, count)
    for t in targets[:20]:  # warm-up
        demo.restore(emu, int(t))

    demo_ns = np.empty(count, dtype=np.int64)
    demo_cpu_ns = np.empty(count, dtype=np.int64)  # CPU time: less sensitive to a busy machine
    wrong = 0
    for i, t in enumerate(targets):
        t = int(t)
        c0, t0 = time.thread_time_ns(), time.perf_counter_ns()
        demo.restore(emu, t)
        demo_ns[i] = time.perf_counter_ns() - t0
        demo_cpu_ns[i] = time.thread_time_ns() - c0
        wrong += not np.array_equal(emu.ram(), demo.ram[t])

    # Baseline 1: the raw emulator restoreState of an already deserialized state (no replay).
    k_targets = rng.integers(0, len(demo.states), count)
    ale_states = {int(k): ALEState(demo.states[int(k)]) for k in set(k_targets.tolist())}
    raw_ns = np.empty(count, dtype=np.int64)
    raw_cpu_ns = np.empty(count, dtype=np.int64)
    for i, k in enumerate(k_targets):
        state = ale_states[int(k)]
        c0, t0 = time.thread_time_ns(), time.perf_counter_ns()
        emu.ale.restoreState(state)
        raw_ns[i] = time.perf_counter_ns() - t0
        raw_cpu_ns[i] = time.thread_time_ns() - c0
    # Baseline 2: Emulator.restore_state(bytes): deserialization + restoreState.
    bytes_ns = np.empty(count, dtype=np.int64)
    for i, k in enumerate(k_targets):
        t0 = time.perf_counter_ns()
        emu.restore_state(demo.states[int(k)])
        bytes_ns[i] = time.perf_counter_ns() - t0

    gaps = targets - demo.state_frames[np.searchsorted(demo.state_frames, targets, side="right") - 1]
    demo_stats = percentiles_ms(demo_ns)
    raw_stats = percentiles_ms(raw_ns)
    return {
        "count": count,
        "wrong_ram": int(wrong),
        "mean_replayed_frames": float(gaps.mean()),
        "demo_restore": demo_stats,
        "raw_restoreState": raw_stats,
        "demo_restore_cpu": percentiles_ms(demo_cpu_ns),
        "raw_restoreState_cpu": percentiles_ms(raw_cpu_ns),
        "restore_state_from_bytes": percentiles_ms(bytes_ns),
        "ratio_median_demo_vs_raw": demo_stats["median_ms"] / raw_stats["median_ms"],
    }


def machine() -> dict:
    import h5py

    return {
        "cpu": cpu_model(), "cpu_count": os.cpu_count(), "platform": platform.platform(),
        "python": platform.python_version(), "ale_py": ale_version(), "h5py": h5py.version.version,
        "hdf5": h5py.version.hdf5_version, "numpy": np.__version__,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=50_000, help="demo length (default 50,000)")
    parser.add_argument("--quick", action="store_true", help="5,000 frames")
    parser.add_argument("--restores", type=int, default=1000, help="random frames to restore")
    parser.add_argument("--state-interval", type=int, default=schema.DEFAULT_STATE_INTERVAL)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None,
                        help="results file (default runs/bench/bench_demo/bench_demo.json)")
    parser.add_argument("--keep", type=Path, help="also keep the recorded demo at this path")
    args = parser.parse_args(argv)
    frames = 5_000 if args.quick else args.frames
    try:  # before minutes of recording
        if args.json is None:
            args.json = default_output("bench_demo", "bench_demo.json")
        args.json.parent.mkdir(parents=True, exist_ok=True)
        check_destination(args.json, "--json")
    except (UserError, OSError) as exc:
        raise SystemExit(f"bench_demo: error: {exc}") from None
    info = machine()
    load = LoadCheck("bench_demo", cores_used=1).start()  # one emulator in this process
    info["load_average_at_start"] = load.record["load_average_before"]

    print(f"recording {frames:,} frames of {GAME} (sticky random policy, seed {args.seed}) ...", file=sys.stderr)
    builder, rec = record(frames, args.seed, args.state_interval)
    demo = builder.build()
    del builder

    with tempfile.TemporaryDirectory() as tmp:
        path = args.keep or Path(tmp) / "bench.h5"
        t0 = time.perf_counter()
        save_demo(demo, path)
        save_s = time.perf_counter() - t0
        size_mb = path.stat().st_size / 1e6
        load_times = []
        for _ in range(3):
            t0 = time.perf_counter()
            loaded = load_demo(path)
            load_times.append(time.perf_counter() - t0)
    assert len(loaded) == frames and loaded.states == demo.states
    print(f"restoring {args.restores} random frames ...", file=sys.stderr)
    restore = bench_restore(loaded, args.restores, args.seed)

    goal_mb = GOAL_FILE_MB_PER_50K * frames / 50_000
    results = {
        "frames": frames,
        "state_interval": args.state_interval,
        "saved_states": len(loaded.states),
        "state_bytes": int(np.mean([len(s) for s in loaded.states])),
        "lives_lost_in_demo": len(loaded.life_losses()),
        "total_return": loaded.total_return,
        "recording": rec,
        "save_s": save_s,
        "file_size_mb": size_mb,
        "file_size_goal_mb": goal_mb,
        "load_s": {"median": float(np.median(load_times)), "all": load_times},
        "restore": restore,
        "goals_met": {"file_size": size_mb <= goal_mb,
                      "restore_median": restore["demo_restore"]["median_ms"] <= GOAL_RESTORE_MEDIAN_MS},
        "machine": info,
    }
    results["machine_load"] = load.finish()
    info["load_average_at_end"] = results["machine_load"]["load_average_after"]
    write_json(args.json, results)

    d, r, b = restore["demo_restore"], restore["raw_restoreState"], restore["restore_state_from_bytes"]
    ok = lambda flag: "ok" if flag else "MISSED"  # noqa: E731
    fmt = lambda s: f"median {s['median_ms']:.3f} / p90 {s['p90_ms']:.3f} / max {s['max_ms']:.3f} ms"  # noqa: E731
    rows = [
        ("demo length", f"{frames:,} frames ({len(loaded.states):,} states every {args.state_interval})", ""),
        ("recording speed", f"{rec['record_steps_per_s']:,.0f} frames/s "
                            f"(DemoBuilder.step alone {rec['step_only_steps_per_s']:,.0f}/s)",
         f"{rec['emulator_steps']:,} steps, {rec['rewinds']} death rewinds"),
        ("save time", f"{save_s:.2f} s", ""),
        ("file size", f"{size_mb:.1f} MB", f"goal <= {goal_mb:g} MB: {ok(size_mb <= goal_mb)}"),
        ("load time", f"{np.median(load_times) * 1e3:.0f} ms", "median of 3"),
        ("restore (Demo.restore)", f"median {d['median_ms']:.3f} / p90 {d['p90_ms']:.3f} / max {d['max_ms']:.3f} ms",
         f"goal median <= {GOAL_RESTORE_MEDIAN_MS:g} ms: {ok(d['median_ms'] <= GOAL_RESTORE_MEDIAN_MS)}"),
        ("  same, CPU time", fmt(restore["demo_restore_cpu"]), "thread CPU time (excludes waiting for a core)"),
        ("raw ALE restoreState", f"median {r['median_ms']:.3f} / p90 {r['p90_ms']:.3f} / max {r['max_ms']:.3f} ms",
         "baseline, same run"),
        ("  same, CPU time", fmt(restore["raw_restoreState_cpu"]), ""),
        ("restore_state(bytes)", f"median {b['median_ms']:.3f} / p90 {b['p90_ms']:.3f} / max {b['max_ms']:.3f} ms",
         "deserialize + restoreState"),
        ("ratio (median)", f"{restore['ratio_median_demo_vs_raw']:.1f}x raw restoreState",
         f"replays {restore['mean_replayed_frames']:.1f} frames on average"),
        ("restored RAM wrong", f"{restore['wrong_ram']} of {restore['count']}", ""),
    ]
    width = max(len(r[0]) for r in rows)
    vwidth = max(len(r[1]) for r in rows)
    load_text = "/".join(f"{x:.1f}" for x in info["load_average_at_start"] or ())
    print(f"\ncurriculum_ppo demo benchmark -- {info['cpu']} ({info['cpu_count']} CPUs, load average "
          f"{load_text} at start), ale-py {info['ale_py']}, h5py {info['h5py']} / HDF5 {info['hdf5']}")
    for name, value, note in rows:
        print(f"  {name:<{width}}  {value:<{vwidth}}  {note}".rstrip())
    print(f"\nresults written to {args.json}")
    return 0 if restore["wrong_ram"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
