#!/usr/bin/env python3
"""Benchmark a long demo on this machine: file, restore speed, env starts, memory per env, start-up time.

The long demo (53,061 frames by default, the length of the original work's human Montezuma's
Revenge playthrough) is the bundled room-1 demo continued by a random-but-sticky player (each
frame keeps the previous action with probability 0.9), recorded through the recorder's own
code path (``DemoBuilder.from_demo``, as ``record --resume`` does, then ``save_demo``). A lost
life is rewound with ``DemoBuilder.truncate`` like a person would in the recorder, never into
the bundled part. It is cached under ``runs/bench/bench_demo_long/`` and reused by later runs;
``--long-demo FILE`` measures another demo instead. Same game as the bundled demo, so the two
differ only in length. Measured:

* the file: save and load time, size; the machine's shared copy (``open_shared_demo``): its
  one-time build and its size;
* ``Demo.restore`` to 1,000 random frames (nearest saved state + replay of the gap), on the
  loaded and on the shared (memory-mapped) demo, against ALE's raw ``restoreState``;
* an env's demo start (``reset`` at a random frame) replayed from the demo and from its
  start-state cache, and the cache's size per env;
* **PSS** of the whole process tree (the pool's process and every worker, from
  ``/proc/<pid>/smaps_rollup``) with 16 envs in an ``EnvPool``, after every env was reset at
  many different frames and stepped, so that its start cache is full: long demo against
  bundled demo. PSS, not RSS: a page shared by N processes counts 1/N in each, so the shared
  demo is counted once. Each pool runs in a fresh process;
* the time to start 64 envs (pool construction until the first reset returns), long against
  bundled.

    python scripts/bench_demo.py                 # 53,061 frames (a few minutes)
    python scripts/bench_demo.py --quick         # 5,000 frames, 4 envs, 8 to start
    python scripts/bench_demo.py --long-demo runs/bench/long_demo/Breakout-long.h5

Without ``--json`` the results go to ``runs/bench/bench_demo/bench_demo.json`` (git-ignored); the
committed figures in ``scripts/results/`` are replaced only when named with ``--json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import multiprocessing as mp
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # also when imported by a test
from bench_common import LoadCheck, bench_dir, default_output, usable_cores, write_json  # noqa: E402
from bench_learning import cpu_model  # noqa: E402
from curriculum_ppo.atomic import check_destination, write_text_atomic  # noqa: E402
from curriculum_ppo.demo import schema  # noqa: E402
from curriculum_ppo.demo.store import Demo, DemoBuilder, load_demo, save_demo  # noqa: E402
from curriculum_ppo.emulator import ale_version  # noqa: E402
from curriculum_ppo.errors import UserError  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BUNDLED = ROOT / "demos" / "MontezumaRevenge-room1.h5"
HUMAN_DEMO_FRAMES = 53_061
SYNTHETIC_VERSION = 1
"""Bump when the synthetic player changes: a cached long demo of another version is recorded again."""
GOAL_FILE_MB_PER_50K = 50.0
GOAL_RESTORE_MEDIAN_MS = 2.0
GOAL_PSS_MB_PER_ENV_MORE = 10.0
OLD_START_CACHE_SIZE = 1024
"""The start cache's bound before it was tied to the curriculum window, measured for comparison."""
STEPS_PER_START = 4
"""Agent steps (random actions) after each reset while the caches fill."""
MB = 1e6


# -- the long demo ----------------------------------------------------------------------------------
def record_long(prefix: Demo, frames: int, seed: int, state_interval: int,
                stickiness: float = 0.9) -> tuple[DemoBuilder, dict]:
    """Continue ``prefix`` to ``frames`` frames with a sticky random policy, rewinding every lost life.

    A random policy dies every few hundred frames and Montezuma stops at game over, so a
    lost life is undone: ``truncate`` back 120 frames (the fall and death animation take
    about that long) and play on with fresh random actions; rewind further while the
    policy keeps dying at the same place, but never into ``prefix``.
    """
    emu = prefix.make_emulator()
    builder = DemoBuilder.from_demo(prefix, emu)
    builder.state_interval = state_interval
    floor = len(prefix)
    rng = np.random.default_rng(seed)
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
            builder.truncate(max(floor, t - min(120 + 60 * stuck, 600)))
            rewinds += 1
            action = int(rng.integers(emu.num_actions))
        if steps % 50_000 == 0:
            print(f"  {steps:,} steps, demo at frame {len(builder):,}, {rewinds} rewinds", file=sys.stderr)
        if steps > 30 * frames + 100_000:
            raise SystemExit("bench_demo: error: the random policy makes no progress (dies too often); "
                             "try another --seed")
    wall = time.perf_counter() - start
    return builder, {
        "policy": f"the bundled demo ({floor} frames), then sticky random (keep action with p={stickiness}), "
                  f"lost lives rewound",
        "prefix_frames": floor,
        "emulator_steps": steps,
        "rewinds": rewinds,
        "record_wall_s": wall,
        "record_steps_per_s": steps / wall,
        "step_only_steps_per_s": steps / step_time,
    }


def synthetic_long_demo(frames: int, seed: int, state_interval: int, force: bool) -> tuple[Path, dict]:
    """The cached synthetic long demo (recorded if missing or made otherwise) and its recording record."""
    bundled_sha = hashlib.sha256(BUNDLED.read_bytes()).hexdigest()
    name = f"MontezumaRevenge-synthetic-{frames}-i{state_interval}-s{seed}-v{SYNTHETIC_VERSION}"
    directory = bench_dir("bench_demo_long")
    path, sidecar = directory / f"{name}.h5", directory / f"{name}.json"
    if not force and path.is_file() and sidecar.is_file():
        try:
            meta = json.loads(sidecar.read_text())
            if meta.get("prefix_sha256") == bundled_sha and meta.get("sha256") == _sha256(path):
                print(f"using the long demo recorded earlier: {path}", file=sys.stderr)
                return path, {**meta["recording"], "reused": True}
        except (OSError, ValueError, KeyError):
            pass
    print(f"recording a {frames:,}-frame long demo (bundled demo + sticky random play, seed {seed}) ...",
          file=sys.stderr)
    builder, rec = record_long(load_demo(BUNDLED), frames, seed, state_interval)
    demo = builder.build()
    del builder
    save_demo(demo, path, detail={"made_by": "scripts/bench_demo.py", "prefix": BUNDLED.name,
                                  "prefix_sha256": bundled_sha, "seed": seed, "version": SYNTHETIC_VERSION})
    write_text_atomic(sidecar, json.dumps({"prefix_sha256": bundled_sha, "sha256": _sha256(path),
                                           "recording": rec}, indent=2) + "\n")
    return path, {**rec, "reused": False}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- restore speed --------------------------------------------------------------------------------
def percentiles_ms(ns: np.ndarray) -> dict:
    ms = np.asarray(ns) / 1e6
    return {"median_ms": float(np.median(ms)), "p90_ms": float(np.percentile(ms, 90)),
            "p95_ms": float(np.percentile(ms, 95)), "max_ms": float(ms.max()), "mean_ms": float(ms.mean())}


def bench_restore(demo: Demo, count: int, seed: int, baselines: bool = True) -> dict:
    """``Demo.restore`` to ``count`` random frames, checked against the demo's RAM; with ALE's raw restores."""
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
    gaps = targets - demo.state_frames[np.searchsorted(demo.state_frames, targets, side="right") - 1]
    result = {"count": count, "wrong_ram": int(wrong), "mean_replayed_frames": float(gaps.mean()),
              "demo_restore": percentiles_ms(demo_ns), "demo_restore_cpu": percentiles_ms(demo_cpu_ns)}
    if not baselines:
        return result

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
    result.update({
        "raw_restoreState": percentiles_ms(raw_ns),
        "raw_restoreState_cpu": percentiles_ms(raw_cpu_ns),
        "restore_state_from_bytes": percentiles_ms(bytes_ns),
        "ratio_median_demo_vs_raw": result["demo_restore"]["median_ms"] / percentiles_ms(raw_ns)["median_ms"],
    })
    return result


def bench_env_start(demo: Demo, count: int, seed: int) -> dict:
    """An env's demo start at random frames: replayed from the demo, then the same frames from its cache.

    Every cached start is checked against the replayed one (observation and whole emulator state).
    """
    from curriculum_ppo.envs.atari import AtariConfig, AtariEnv

    rng = np.random.default_rng(seed + 2)
    frames = rng.choice(len(demo) + 1, size=min(count, len(demo) + 1), replace=False)
    result: dict = {"count": int(len(frames))}
    for mode in ("gray84", "rgb105x80"):
        config = AtariConfig(obs_mode=mode, start_cache_size=len(frames))
        replayed_env = AtariEnv(demo=demo, config=AtariConfig(obs_mode=mode, start_cache_size=0))
        env = AtariEnv(demo=demo, config=config)
        replay_ns, hit_ns, mismatches = [], [], 0
        for t in frames:
            t0 = time.perf_counter_ns()
            env.reset(options={"start_frame": int(t)})  # a miss: replayed, then kept
            replay_ns.append(time.perf_counter_ns() - t0)
        for t in frames:
            t0 = time.perf_counter_ns()
            obs, _ = env.reset(options={"start_frame": int(t)})  # a hit
            hit_ns.append(time.perf_counter_ns() - t0)
            if len(hit_ns) <= 50:  # check a sample against a start replayed in another env
                expected, _ = replayed_env.reset(options={"start_frame": int(t)})
                same = np.array_equal(obs, expected) and env.emulator.save_state() == replayed_env.emulator.save_state()
                mismatches += not same
        entry = [len(s) + stack.nbytes for s, stack in env._start_cache.values()]
        entry_bytes = float(np.mean(entry))
        result[mode] = {
            "replayed": percentiles_ms(np.array(replay_ns)), "cached": percentiles_ms(np.array(hit_ns)),
            "cached_checked": min(50, len(hit_ns)), "cached_mismatches": mismatches,
            "cache_entry_bytes": entry_bytes,
            "cache_mb_per_env": {"default": AtariConfig().start_cache_size * entry_bytes / MB,
                                 "old_1024": OLD_START_CACHE_SIZE * entry_bytes / MB},
        }
    result["default_start_cache_size"] = AtariConfig().start_cache_size
    return result


# -- memory and start-up of env pools (each in a fresh process) --------------------------------------
SMAPS_FIELDS = ("Rss", "Pss", "Pss_Anon", "Pss_File", "Pss_Shmem", "Private_Dirty")


def smaps_rollup(pid: int) -> dict | None:
    """The memory totals of one process in bytes (``/proc/<pid>/smaps_rollup``), or None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return None
    out = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in SMAPS_FIELDS:
            out[key] = int(rest.split()[0]) * 1024
    return out


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children, their children, ...), from the parent ids in /proc."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return sorted(found)


def tree_memory(pid: int) -> dict:
    """smaps_rollup of ``pid`` and of every process below it, each and summed."""
    processes = []
    for p in [pid, *descendants(pid)]:
        mem = smaps_rollup(p)
        if mem is None:
            continue
        try:
            name = Path(f"/proc/{p}/comm").read_text().strip()
        except OSError:
            name = "?"
        processes.append({"pid": p, "name": name, **mem})
    total = {key: sum(proc.get(key, 0) for proc in processes) for key in SMAPS_FIELDS}
    return {"processes": processes, "total": total}


def _pss_child(conn, demo_path: str, num_envs: int, num_workers: int | None, cache_size: int, fill: int,
               seed: int) -> None:
    """In a fresh process: an EnvPool on the demo; every env reset at ``fill`` different frames and stepped."""
    try:
        from curriculum_ppo.demo.shared import open_shared_demo
        from curriculum_ppo.envs.registry import EnvFactory
        from curriculum_ppo.vec import EnvPool

        n = len(open_shared_demo(demo_path))
        factory = EnvFactory("atari", demo_path=demo_path, atari={"start_cache_size": cache_size})
        rng = np.random.default_rng(seed)
        distinct = min(fill, n + 1)
        starts = np.stack([np.resize(rng.permutation(n + 1)[:distinct], fill) for _ in range(num_envs)])
        t0 = time.perf_counter()
        pool = EnvPool(factory, num_envs, num_workers=num_workers, seed=seed)
        try:
            for r in range(fill):
                pool.set_options([{"start_frame": int(t)} for t in starts[:, r]])
                pool.reset()
                for _ in range(STEPS_PER_START):
                    pool.step(rng.integers(pool.num_actions, size=num_envs))
            wall = time.perf_counter() - t0
            memory = tree_memory(os.getpid())
            workers = pool.num_workers
        finally:
            pool.close()
        env = factory(seed)  # after the reading: env 0's starts once more, to count what its cache holds
        for t in starts[0]:
            env.reset(options={"start_frame": int(t)})
        entries = len(env._start_cache)
        conn.send(("ok", {"demo_frames": n, "envs": num_envs, "workers": workers, "start_cache_size": cache_size,
                          "starts_per_env": fill, "distinct_starts_per_env": distinct,
                          "cache_entries_per_env": entries, "steps_per_start": STEPS_PER_START,
                          "fill_wall_s": wall, **memory}))
    except BaseException as exc:  # noqa: BLE001 -- reported to the parent as one line
        conn.send(("error", f"{type(exc).__name__}: {exc}"))


def _startup_child(conn, demo_path: str, num_envs: int, num_workers: int | None, seed: int) -> None:
    """In a fresh process: time EnvPool construction and its first reset in the curriculum's first window."""
    try:
        from curriculum_ppo.curriculum import CurriculumScheduler
        from curriculum_ppo.demo.shared import open_shared_demo
        from curriculum_ppo.envs.registry import EnvFactory
        from curriculum_ppo.vec import EnvPool

        n = len(open_shared_demo(demo_path))
        scheduler = CurriculumScheduler(n)
        rng = np.random.default_rng(seed)
        factory = EnvFactory("atari", demo_path=demo_path)
        t0 = time.perf_counter()
        pool = EnvPool(factory, num_envs, num_workers=num_workers, seed=seed)
        try:
            t1 = time.perf_counter()
            pool.set_options([{"start_frame": scheduler.sample_start(rng, i, num_envs)} for i in range(num_envs)])
            pool.reset()
            t2 = time.perf_counter()
            workers = pool.num_workers
        finally:
            pool.close()
        conn.send(("ok", {"construct_s": t1 - t0, "first_reset_s": t2 - t1, "total_s": t2 - t0,
                          "workers": workers}))
    except BaseException as exc:  # noqa: BLE001
        conn.send(("error", f"{type(exc).__name__}: {exc}"))


def in_fresh_process(target, *args, timeout: float = 1800.0) -> dict:
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    process = ctx.Process(target=target, args=(child, *args))
    process.start()
    child.close()
    try:
        if not parent.poll(timeout):
            raise SystemExit(f"bench_demo: error: a measurement process gave no answer in {timeout:.0f} s")
        kind, payload = parent.recv()
    except EOFError:
        raise SystemExit(f"bench_demo: error: a measurement process died (exit code {process.exitcode})") from None
    finally:
        process.join(timeout=30)
        if process.is_alive():
            process.kill()
            process.join()
    if kind != "ok":
        raise SystemExit(f"bench_demo: error: {payload}")
    return payload


def bench_memory(demos: dict[str, str], num_envs: int, num_workers: int | None, cache_sizes: list[int],
                 seed: int) -> dict:
    """PSS of a pool of ``num_envs`` envs with full start caches, per demo and cache bound."""
    runs = []
    for cache_size in cache_sizes:
        fill = cache_size + 64  # every env sees more different starts than its cache holds
        row = {"start_cache_size": cache_size}
        for label, path in demos.items():
            print(f"memory: {num_envs} envs on the {label} demo, start cache {cache_size}, {fill} starts per env ...",
                  file=sys.stderr)
            row[label] = in_fresh_process(_pss_child, path, num_envs, num_workers, cache_size, fill, seed)
        pss = {label: row[label]["total"]["Pss"] for label in demos}
        row["pss_mb_per_env"] = {label: pss[label] / num_envs / MB for label in demos}
        row["pss_mb_per_env_more_long_vs_bundled"] = (pss["long"] - pss["bundled"]) / num_envs / MB
        runs.append(row)
    return {"envs": num_envs, "runs": runs}


def bench_startup(demos: dict[str, str], num_envs: int, num_workers: int | None, repeats: int, seed: int) -> dict:
    out: dict = {"envs": num_envs, "repeats": repeats}
    samples: dict[str, list[dict]] = {label: [] for label in demos}
    for r in range(repeats):  # interleaved, so that a busy spell of the machine hits both demos alike
        for label, path in demos.items():
            print(f"start-up: {num_envs} envs on the {label} demo ({r + 1}/{repeats}) ...", file=sys.stderr)
            samples[label].append(in_fresh_process(_startup_child, path, num_envs, num_workers, seed))
    for label, runs in samples.items():
        out[label] = {"runs": runs, "median_total_s": float(np.median([x["total_s"] for x in runs])),
                      "workers": runs[0]["workers"]}
    return out


# -- the report -----------------------------------------------------------------------------------
def machine() -> dict:
    import h5py

    return {
        "cpu": cpu_model(), "cpu_count": os.cpu_count(), "platform": platform.platform(),
        "python": platform.python_version(), "ale_py": ale_version(), "h5py": h5py.version.version,
        "hdf5": h5py.version.hdf5_version, "numpy": np.__version__,
    }


def file_stats(path: Path, demo: Demo) -> dict:
    """Save ``demo`` again (a temporary copy) and load it 3 times: the file's size and speed."""
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "bench.h5"
        t0 = time.perf_counter()
        save_demo(dataclasses.replace(demo), copy)  # a copy: save_demo sets the path and attributes it wrote
        save_s = time.perf_counter() - t0
    load_times = []
    for _ in range(3):
        t0 = time.perf_counter()
        loaded = load_demo(path)
        load_times.append(time.perf_counter() - t0)
    return {"save_s": save_s, "file_size_mb": path.stat().st_size / MB,
            "load_s": {"median": float(np.median(load_times)), "all": load_times}, "loaded": loaded}


def shared_copy(path: Path) -> dict:
    """Build the machine's shared copy of ``path`` (cold), then open it as an env does (warm)."""
    from curriculum_ppo.demo.shared import open_shared_demo, shared_demo_cache

    t0 = time.perf_counter()
    directory = shared_demo_cache(path)
    build_s = time.perf_counter() - t0
    opens = []
    for _ in range(5):
        t0 = time.perf_counter()
        open_shared_demo(path)
        opens.append(time.perf_counter() - t0)
    size = sum(f.stat().st_size for f in directory.iterdir())
    return {"build_s": build_s, "open_s_median": float(np.median(opens)), "size_mb": size / MB}


def table(results: dict) -> list[tuple[str, str, str]]:
    ok = lambda flag: "ok" if flag else "MISSED"  # noqa: E731
    fmt = lambda s: f"median {s['median_ms']:.3f} / p95 {s['p95_ms']:.3f} / max {s['max_ms']:.3f} ms"  # noqa: E731
    long, rec, restore = results["long_demo"], results["recording"], results["restore"]
    shared, start = results["restore_shared"], results["env_start"]
    frames = results["frames"]
    rows = [("long demo", f"{frames:,} frames ({results['saved_states']:,} states every "
                          f"{results['state_interval']})", long["source"])]
    if rec:
        rows.append(("recording speed", f"{rec['record_steps_per_s']:,.0f} frames/s "
                                        f"(DemoBuilder.step alone {rec['step_only_steps_per_s']:,.0f}/s)",
                     f"{rec['emulator_steps']:,} steps, {rec['rewinds']} death rewinds"
                     + (" (recorded by an earlier run)" if rec.get("reused") else "")))
    rows += [
        ("save time", f"{results['save_s']:.2f} s", ""),
        ("file size", f"{results['file_size_mb']:.1f} MB",
         f"goal <= {results['file_size_goal_mb']:g} MB: {ok(results['goals_met']['file_size'])}"),
        ("load time", f"{results['load_s']['median'] * 1e3:.0f} ms", "load_demo, median of 3"),
        ("shared copy", f"{long['shared']['size_mb']:.1f} MB, built once in {long['shared']['build_s']:.2f} s",
         f"opened by each env in {long['shared']['open_s_median'] * 1e3:.1f} ms"),
        ("restore, shared demo", fmt(shared["demo_restore"]),
         f"goal median <= {GOAL_RESTORE_MEDIAN_MS:g} ms: {ok(results['goals_met']['restore_median'])}"),
        ("  same, CPU time", fmt(shared["demo_restore_cpu"]), "thread CPU time (excludes waiting for a core)"),
        ("restore, loaded demo", fmt(restore["demo_restore"]),
         f"replays {restore['mean_replayed_frames']:.1f} frames on average"),
        ("raw ALE restoreState", fmt(restore["raw_restoreState"]), "baseline, same run"),
        ("restore_state(bytes)", fmt(restore["restore_state_from_bytes"]), "deserialize + restoreState"),
        ("restored RAM wrong", f"{restore['wrong_ram'] + shared['wrong_ram']} of "
                               f"{restore['count'] + shared['count']}", "loaded + shared"),
    ]
    for mode in ("gray84", "rgb105x80"):
        s = start[mode]
        rows += [
            (f"env start, {mode}", f"replayed {s['replayed']['median_ms']:.2f} ms, cached "
                                   f"{s['cached']['median_ms']:.2f} ms (medians)",
             f"p95 {s['replayed']['p95_ms']:.2f} / {s['cached']['p95_ms']:.2f} ms; "
             f"{s['cached_mismatches']} of {s['cached_checked']} cached starts differ"),
            ("  start cache per env",
             f"{s['cache_entry_bytes'] / 1e3:.1f} KB a start: {s['cache_mb_per_env']['default']:.1f} MB at "
             f"{start['default_start_cache_size']}",
             f"{s['cache_mb_per_env']['old_1024']:.1f} MB at the old {OLD_START_CACHE_SIZE}"),
        ]
    mem = results["memory"]
    for run in mem["runs"]:
        b, lg = run["bundled"], run["long"]
        more = run["pss_mb_per_env_more_long_vs_bundled"]
        default = run["start_cache_size"] == start["default_start_cache_size"]
        note = (f"goal <= {GOAL_PSS_MB_PER_ENV_MORE:g} MB more: {ok(more <= GOAL_PSS_MB_PER_ENV_MORE)}" if default
                else "the old bound, for comparison")
        rows.append((f"PSS, {mem['envs']} envs, cache {run['start_cache_size']}",
                     f"bundled {b['total']['Pss'] / MB:.0f} MB ({run['pss_mb_per_env']['bundled']:.1f}/env), "
                     f"long {lg['total']['Pss'] / MB:.0f} MB ({run['pss_mb_per_env']['long']:.1f}/env): "
                     f"{more:+.1f} MB/env", note))
        rows.append(("  RSS for contrast",
                     f"bundled {b['total']['Rss'] / MB:.0f} MB, long {lg['total']['Rss'] / MB:.0f} MB",
                     f"{b['workers']} workers, {len(b['processes'])} processes"))
    up = results["startup"]
    rows.append((f"start {up['envs']} envs", f"bundled {up['bundled']['median_total_s']:.2f} s, "
                                             f"long {up['long']['median_total_s']:.2f} s",
                 f"pool construction to first reset, median of {up['repeats']}, {up['long']['workers']} workers"))
    return rows


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=positive,
                        help=f"length of the synthetic long demo (default {HUMAN_DEMO_FRAMES:,}; --quick: 5,000)")
    parser.add_argument("--quick", action="store_true",
                        help="5,000 frames, 200 restores, 4 envs for memory, 8 to start once, no old-cache comparison")
    parser.add_argument("--long-demo", type=Path, help="measure this demo file instead of the synthetic one")
    parser.add_argument("--restores", type=positive, help="random frames to restore (default 1,000)")
    parser.add_argument("--state-interval", type=positive, default=schema.DEFAULT_STATE_INTERVAL)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--envs", type=positive, help="envs of the memory measurement (default 16)")
    parser.add_argument("--start-envs", type=positive, help="envs of the start-up time (default 64)")
    parser.add_argument("--start-repeats", type=positive, help="start-up runs per demo (default 3)")
    parser.add_argument("--workers", type=positive, help="env worker processes (default: one per core)")
    parser.add_argument("--force", action="store_true", help="record the synthetic long demo again")
    parser.add_argument("--json", type=Path, default=None,
                        help="results file (default runs/bench/bench_demo/bench_demo.json)")
    parser.add_argument("--keep", type=Path, help="also keep a copy of the long demo at this path")
    args = parser.parse_args(argv)
    defaults = ({"frames": 5_000, "restores": 200, "envs": 4, "start_envs": 8, "start_repeats": 1} if args.quick else
                {"frames": HUMAN_DEMO_FRAMES, "restores": 1000, "envs": 16, "start_envs": 64, "start_repeats": 3})
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    try:  # before minutes of recording
        if args.json is None:
            args.json = default_output("bench_demo", "bench_demo.json")
        args.json.parent.mkdir(parents=True, exist_ok=True)
        check_destination(args.json, "--json")
        if args.keep is not None:
            check_destination(args.keep, "--keep")
        if args.long_demo is not None:
            long_path = args.long_demo.resolve()
            load_demo(long_path)  # a bad file is one line, now
    except (UserError, OSError) as exc:
        raise SystemExit(f"bench_demo: error: {exc}") from None

    from curriculum_ppo.demo import shared as shared_module
    from curriculum_ppo.demo.shared import open_shared_demo

    info = machine()
    cores = usable_cores()
    load = LoadCheck("bench_demo", cores_used=min(cores, args.workers or cores)).start()
    info["load_average_at_start"] = load.record["load_average_before"]
    cache_root = tempfile.mkdtemp(prefix="bench_demo-shared-")
    previous_cache = os.environ.get(shared_module.CACHE_ENV)
    os.environ[shared_module.CACHE_ENV] = cache_root  # a cold shared copy to build; the pools inherit it
    try:
        try:
            if args.long_demo is None:
                long_path, rec = synthetic_long_demo(args.frames, args.seed, args.state_interval, args.force)
                source = f"synthetic: bundled demo + sticky random play, seed {args.seed}"
            else:
                rec, source = None, str(args.long_demo)
            if args.keep is not None:
                shutil.copyfile(long_path, args.keep)
        except UserError as exc:
            raise SystemExit(f"bench_demo: error: {exc}") from None
        demo = load_demo(long_path)
        frames = len(demo)
        files = file_stats(long_path, demo)
        loaded = files.pop("loaded")
        assert len(loaded) == frames and list(loaded.states) == list(demo.states)
        long_info = {"source": source, "path": str(long_path), "shared": shared_copy(long_path)}
        shared_copy(BUNDLED)
        shared_demo = open_shared_demo(long_path)

        print(f"restoring {args.restores} random frames ...", file=sys.stderr)
        restore = bench_restore(loaded, args.restores, args.seed)
        restore_shared = bench_restore(shared_demo, args.restores, args.seed, baselines=False)
        print("env starts, replayed and cached ...", file=sys.stderr)
        env_start = bench_env_start(shared_demo, min(args.restores, 500), args.seed)
        del loaded, demo, shared_demo

        demos = {"bundled": str(BUNDLED), "long": str(long_path)}
        from curriculum_ppo.envs.atari import AtariConfig

        cache_sizes = [AtariConfig().start_cache_size] + ([] if args.quick else [OLD_START_CACHE_SIZE])
        memory = bench_memory(demos, args.envs, args.workers, cache_sizes, args.seed)
        startup = bench_startup(demos, args.start_envs, args.workers, args.start_repeats, args.seed)
    finally:
        shutil.rmtree(cache_root, ignore_errors=True)
        if previous_cache is None:
            os.environ.pop(shared_module.CACHE_ENV, None)
        else:
            os.environ[shared_module.CACHE_ENV] = previous_cache

    reloaded = load_demo(long_path)
    goal_mb = GOAL_FILE_MB_PER_50K * frames / 50_000
    default_run = memory["runs"][0]
    results = {
        "frames": frames,
        "state_interval": int(reloaded.attrs.get("state_interval", args.state_interval)),
        "saved_states": len(reloaded.states),
        "state_bytes": int(np.mean([len(s) for s in reloaded.states])),
        "lives_lost_in_demo": len(reloaded.life_losses()),
        "total_return": reloaded.total_return,
        "long_demo": long_info,
        "recording": rec,
        **files,
        "file_size_goal_mb": goal_mb,
        "restore": restore,
        "restore_shared": restore_shared,
        "env_start": env_start,
        "memory": memory,
        "startup": startup,
        "goals_met": {
            "file_size": files["file_size_mb"] <= goal_mb,
            "restore_median": restore_shared["demo_restore"]["median_ms"] <= GOAL_RESTORE_MEDIAN_MS,
            "pss_per_env_more": default_run["pss_mb_per_env_more_long_vs_bundled"] <= GOAL_PSS_MB_PER_ENV_MORE,
        },
        "goals": {"file_mb_per_50k_frames": GOAL_FILE_MB_PER_50K, "restore_median_ms": GOAL_RESTORE_MEDIAN_MS,
                  "pss_mb_per_env_more": GOAL_PSS_MB_PER_ENV_MORE},
        "machine": info,
    }
    results["machine_load"] = load.finish()
    info["load_average_at_end"] = results["machine_load"]["load_average_after"]
    write_json(args.json, results)

    rows = table(results)
    width = max(len(r[0]) for r in rows)
    vwidth = max(len(r[1]) for r in rows)
    load_text = "/".join(f"{x:.1f}" for x in info["load_average_at_start"] or ())
    print(f"\ncurriculum_ppo demo benchmark -- {info['cpu']} ({info['cpu_count']} CPUs, load average "
          f"{load_text} at start), ale-py {info['ale_py']}, h5py {info['h5py']} / HDF5 {info['hdf5']}")
    for name, value, note in rows:
        print(f"  {name:<{width}}  {value:<{vwidth}}  {note}".rstrip())
    print(f"\nresults written to {args.json}")
    wrong = restore["wrong_ram"] + restore_shared["wrong_ram"]
    mismatches = sum(env_start[m]["cached_mismatches"] for m in ("gray84", "rgb105x80"))
    return 0 if wrong == 0 and mismatches == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
