"""Vectorized environment workers: several envs per process, one shared-memory batch per step.

Why not ``gymnasium.vector.AsyncVectorEnv``? It runs one env per process and
exchanges pickled messages per env; on a 2-core laptop with 8+ envs that spends
more time in process switching than in the emulator (``scripts/bench_envs.py``
measures both side by side). Here each worker process owns a contiguous slice
of envs (one per env group) and steps them in a tight loop; actions,
observations, rewards and flags live in shared memory, and the only per-step
messages are a short "step" command to each worker and a small list of
finished-episode summaries back.

Autoreset: when an env's episode ends, the worker stores the last observation
in ``final_obs`` (needed to bootstrap truncated episodes), resets the env at
``next_start[i]`` (a demo frame chosen by the learner, or -1 for the real game
start) and returns the first observation of the new episode in ``obs``.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time
import traceback
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from multiprocessing.shared_memory import SharedMemory
from pathlib import Path

import numpy as np

from curriculum_ppo.errors import UserError

REAL_START = -1


@dataclass
class EnvSpec:
    """Everything a worker process needs to build its envs (picklable)."""

    game: str | None = None
    demo_path: str | None = None
    atari: dict = field(default_factory=dict)  # AtariConfig fields
    rules: dict = field(default_factory=dict)  # EpisodeRulesConfig fields
    kind: str = "atari"  # "atari" or "toy"
    toy: dict = field(default_factory=dict)  # toy env kwargs

    def make(self, seed: int):
        if self.kind == "toy":
            from curriculum_ppo.envs.toy import make_toy_env

            return make_toy_env(seed=seed, **self.toy)
        from curriculum_ppo.demo.shared import open_shared_demo
        from curriculum_ppo.envs.atari import AtariConfig, AtariEnv
        from curriculum_ppo.episode_rules import EpisodeRulesConfig

        # One read-only, memory-mapped copy of the demo per machine, whatever the number of envs.
        demo = open_shared_demo(self.demo_path) if self.demo_path else None
        return AtariEnv(game=self.game, demo=demo, config=AtariConfig(**self.atari),
                        rules=EpisodeRulesConfig(**self.rules), seed=seed)

    def probe(self):
        """Build one env in this process to learn observation shape and action count."""
        env = self.make(seed=0)
        return env.observation_space.shape, int(env.action_space.n)


def resolve_num_workers(num_envs: int, num_workers: int | None) -> int:
    """Worker processes an EnvPool really starts: ``num_workers`` (default one per core), at most one per env."""
    return min(num_envs, num_workers or os.cpu_count() or 1)


class WorkerError(RuntimeError):
    """A worker process died or raised; the message names the worker and its envs."""


class _Shared:
    """Named shared-memory arrays, created by the learner and attached by workers."""

    FIELDS = ("obs", "final_obs", "actions", "rewards", "raw_rewards", "terminated", "truncated", "warmup",
              "next_start")

    def __init__(self, num_envs: int, obs_shape: tuple, create: bool = True, names: dict | None = None):
        layout = {
            "obs": ((num_envs, *obs_shape), np.uint8),
            "final_obs": ((num_envs, *obs_shape), np.uint8),
            "actions": ((num_envs,), np.int64),
            "rewards": ((num_envs,), np.float32),
            "raw_rewards": ((num_envs,), np.float32),
            "terminated": ((num_envs,), np.bool_),
            "truncated": ((num_envs,), np.bool_),
            "warmup": ((num_envs,), np.bool_),
            "next_start": ((num_envs,), np.int64),
        }
        self.blocks: dict[str, SharedMemory] = {}
        self.arrays: dict[str, np.ndarray] = {}
        for name, (shape, dtype) in layout.items():
            size = max(1, int(np.prod(shape)) * np.dtype(dtype).itemsize)
            shm = SharedMemory(create=True, size=size) if create else SharedMemory(name=names[name])
            self.blocks[name] = shm
            self.arrays[name] = np.ndarray(shape, dtype=dtype, buffer=shm.buf)
        self.num_envs, self.obs_shape = num_envs, tuple(obs_shape)

    def names(self) -> dict:
        return {k: v.name for k, v in self.blocks.items()}

    def close(self, unlink: bool) -> None:
        self.arrays.clear()
        for shm in self.blocks.values():
            try:
                shm.close()
                if unlink:
                    shm.unlink()
            except (FileNotFoundError, BufferError):
                pass


def _reset_env(env, i: int, a: dict) -> None:
    """Reset env ``i`` at ``next_start[i]`` and publish its first observation."""
    start = int(a["next_start"][i])
    obs, info = env.reset(options={"start_frame": None if start == REAL_START else start})
    a["obs"][i] = obs
    a["warmup"][i] = bool(info.get("warmup", False))


def _step_envs(envs: list, first: int, a: dict) -> list[dict]:
    """Step envs ``first, first+1, ...`` with ``actions``; autoreset; return finished-episode summaries.

    Shared by worker processes (``a`` = shared-memory arrays) and :class:`InProcessEnvPool`.
    """
    episodes = []
    for offset, env in enumerate(envs):
        i = first + offset
        obs, reward, terminated, truncated, info = env.step(int(a["actions"][i]))
        a["rewards"][i] = reward
        a["raw_rewards"][i] = info.get("raw_reward", reward)
        a["terminated"][i] = terminated
        a["truncated"][i] = truncated
        if terminated or truncated:
            a["final_obs"][i] = obs
            episode = dict(info.get("episode", {}))
            episode["env"] = i
            episodes.append(episode)
            _reset_env(env, i, a)
        else:
            a["obs"][i] = obs
            a["warmup"][i] = bool(info.get("warmup", False))
    return episodes


def _step_groups(groups: list[tuple[int, list]], group: int | None, a: dict) -> list[dict]:
    """Step every group (``group=None``) or one of ``groups`` = [(first env index, envs), ...]."""
    chosen = groups if group is None else groups[group:group + 1]
    return [e for lo, envs in chosen for e in _step_envs(envs, lo, a)]


def _reset_groups(groups: list[tuple[int, list]], a: dict) -> None:
    for lo, envs in groups:
        for offset, env in enumerate(envs):
            _reset_env(env, lo + offset, a)


def _spin_until_ready(conns: list, spin_seconds: float) -> bool:
    """Busy-poll ``conns`` for up to ``spin_seconds``; True as soon as one has a message.

    Why spin at all: a process that blocks on a pipe lets its core go idle, and
    waking it again (on a VM, an idle virtual CPU) adds latency to every step
    of the pool. The peer's answer usually arrives within a fraction of a step,
    so a short poll first keeps the core awake; after ``spin_seconds`` the
    caller blocks as before, so an idle pool does not burn a core. What it is
    worth was measured, not derived: see :class:`EnvPool`.
    """
    if spin_seconds <= 0:
        return False
    deadline = time.perf_counter() + spin_seconds
    while True:
        for conn in conns:
            if conn.poll():
                return True
        if time.perf_counter() > deadline:
            return False


def _worker_main(index: int, spec: EnvSpec, group_slices: list[tuple[int, int]], num_envs: int, obs_shape: tuple,
                 names: dict, seed: int, conn, spin_seconds: float = 0.0) -> None:
    """Own the envs of ``group_slices`` (one contiguous slice per env group) and step them on command."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the learner handles Ctrl-C and shuts us down
    try:
        import cv2

        cv2.setNumThreads(1)
    except ImportError:
        pass
    shared = None
    try:
        shared = _Shared(num_envs, obs_shape, create=False, names=names)
        a = shared.arrays
        groups = [(lo, [spec.make(seed=seed + i) for i in range(lo, hi)]) for lo, hi in group_slices]

        conn.send(("ready", None))
        while True:
            _spin_until_ready([conn], spin_seconds)
            command, group = conn.recv()
            if command == "step":
                conn.send(("ok", _step_groups(groups, group, a)))
            elif command == "reset":
                _reset_groups(groups, a)
                conn.send(("ok", []))
            elif command == "close":
                break
    except (KeyboardInterrupt, EOFError, BrokenPipeError):
        pass
    except BaseException as exc:  # report, then die: the learner turns it into a WorkerError
        try:
            conn.send(("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))
        except Exception:
            pass
    finally:
        if shared is not None:
            shared.close(unlink=False)


def group_slices(num_envs: int, num_groups: int) -> list[slice]:
    """Env groups: ``num_groups`` contiguous, near-equal slices of the env indices."""
    if not 1 <= num_groups <= num_envs:
        raise UserError(f"env groups must be in 1..{num_envs} (the number of envs), got {num_groups}")
    bounds = np.linspace(0, num_envs, num_groups + 1).astype(int)
    return [slice(int(bounds[g]), int(bounds[g + 1])) for g in range(num_groups)]


class _GroupOrder:
    """Checks that groups are waited for in the order they were started (pipes answer in order)."""

    def __init__(self, num_groups: int) -> None:
        self.num_groups = num_groups
        self.pending: list[int | None] = []

    def started(self, group: int | None) -> None:
        if group is not None and not 0 <= group < self.num_groups:
            raise ValueError(f"group {group} not in 0..{self.num_groups - 1}")
        if group in self.pending or (self.pending and (group is None or None in self.pending)):
            raise RuntimeError(f"env group {group} started again before it was waited for")
        self.pending.append(group)

    def finished(self, group: int | None) -> None:
        if not self.pending or self.pending[0] != group:
            expected = self.pending[0] if self.pending else "nothing"
            raise RuntimeError(f"waited for env group {group}, but the next one to finish is {expected}")
        self.pending.pop(0)


class EnvPool:
    """``num_envs`` environments in ``num_workers`` processes, stepped as one batch.

    ``step(actions)`` writes the actions, wakes all workers and waits for them;
    afterwards ``obs``, ``rewards``, ``terminated``, ``truncated``,
    ``final_obs`` and ``warmup`` hold the batch (views into shared memory:
    copy what you keep). ``step_async``/``step_wait`` split the two halves so
    the caller can work while the envs step.

    Env groups (``num_groups`` > 1) pipeline the batch: the envs are cut into
    groups (``group_slices``), each spread over all workers, and
    ``step_async(actions, group=g)`` / ``step_wait(group=g)`` step one group.
    While the caller picks the actions of one group, the workers already step
    the other, so a worker with the next group's command already queued
    need not wait for the caller or for a slower worker (with one group, each
    step ends with every worker idle until the slowest one and the learner's
    round trip are done). ``step(actions)`` without a group still steps every
    env.

    With ``groups_by_worker`` each group lives in one worker (group g in
    worker ``g % num_workers``) instead of being spread over all of them, and
    a group's step messages only its own worker. There is no per-step
    barrier across workers any more (with spread groups the slowest worker,
    say the one restoring a demo state, sets the pace of every group's step);
    groups are still waited for in a fixed order, so a slow worker can hold
    the learner up, and with ``2 x num_workers`` groups each worker has a
    second step queued while it waits. Needs ``num_groups`` to be a multiple
    of the workers.

    With ``learner_is_worker`` the calling process is worker 0: it steps its
    share of the envs itself inside ``step_wait``/``reset`` while the
    ``num_workers - 1`` worker processes step theirs. On a machine with as
    many workers as cores this removes the third process that otherwise
    preempts a worker on every message (``scripts/bench_envs.py`` measures it).

    With ``spin_seconds`` > 0, every process of the pool polls its pipe for up
    to that long before it blocks (``_spin_until_ready``), so a core that waits
    a moment for the other side's answer stays awake. This pays off only when
    no process competes for the cores: with ``learner_is_worker``, 2 env
    groups and one worker per core, env stepping alone reached 84.8-88% of bare
    ALE in three runs on a 2-core VM, against 74-85% without spinning
    (``scripts/bench_envs.py``, README). With a third process on two cores
    (30%), or a PPO update running beside the rollout, the spinning steals the
    CPU the others need, so the default is 0.
    """

    def __init__(self, spec: EnvSpec, num_envs: int, num_workers: int | None = None, seed: int = 0,
                 start_method: str = "spawn", timeout: float = 120.0, num_groups: int = 1,
                 learner_is_worker: bool = False, groups_by_worker: bool = False, spin_seconds: float = 0.0):
        num_workers = resolve_num_workers(num_envs, num_workers)
        self.spin_seconds = spin_seconds
        if groups_by_worker and num_groups % num_workers:
            raise UserError(f"env groups by worker need a multiple of the {num_workers} workers as groups, "
                            f"got {num_groups}")
        self.spec, self.num_envs, self.num_workers, self.timeout = spec, num_envs, num_workers, timeout
        self.group_slices = group_slices(num_envs, num_groups)
        self.num_groups = num_groups
        self._order = _GroupOrder(num_groups)
        obs_shape, self.num_actions = spec.probe()
        self.obs_shape = tuple(obs_shape)
        self.shared = _Shared(num_envs, self.obs_shape, create=True)
        a = self.shared.arrays
        for key in _Shared.FIELDS:
            setattr(self, key, a[key])
        self.next_start[:] = REAL_START
        # worker_groups[w][g]: the env slice of group g that worker w steps (possibly empty). By default
        # worker w owns the w-th share of every group; by worker, group g belongs to one worker.
        self.worker_groups: list[list[tuple[int, int]]] = [[] for _ in range(num_workers)]
        for index, g in enumerate(self.group_slices):
            if groups_by_worker:
                owner = index % num_workers
                for w in range(num_workers):
                    self.worker_groups[w].append((g.start, g.stop) if w == owner else (g.start, g.start))
                continue
            bounds = np.linspace(g.start, g.stop, num_workers + 1).astype(int)
            for w in range(num_workers):
                self.worker_groups[w].append((int(bounds[w]), int(bounds[w + 1])))
        self._in_flight: list[list[int]] = []  # per started step, oldest first: the processes it messaged
        ctx = mp.get_context(start_method)
        self.processes, self.conns = [], []
        self._closed = False
        # Worker 0 in this process, or nobody: (first env index, envs) per group.
        self.local: list[tuple[int, list]] = []
        self._remote = list(range(1 if learner_is_worker else 0, num_workers))  # worker index of each process
        try:
            if learner_is_worker:
                self.local = [(lo, [spec.make(seed=seed + i) for i in range(lo, hi)])
                              for lo, hi in self.worker_groups[0]]
            for w in self._remote:
                slices = self.worker_groups[w]
                parent, child = ctx.Pipe()
                p = ctx.Process(target=_worker_main, name=f"env-worker-{w}",
                                args=(w, spec, slices, num_envs, self.obs_shape, self.shared.names(), seed, child,
                                      spin_seconds),
                                daemon=True)
                p.start()
                child.close()
                self.processes.append(p)
                self.conns.append(parent)
            self._collect("ready")
        except BaseException:
            self.close()
            raise

    # -- protocol -----------------------------------------------------------------------
    def _exit_code(self, w: int):
        self.processes[w].join(timeout=1.0)
        return self.processes[w].exitcode

    def _describe(self, k: int) -> str:
        """Name the k-th worker process."""
        w = self._remote[k]
        envs = ", ".join(f"{lo}..{hi - 1}" for lo, hi in self.worker_groups[w] if hi > lo)
        return f"env worker {w} (pid {self.processes[k].pid}, envs {envs})"

    def _collect(self, expect: str = "ok", processes: list[int] | None = None) -> list[dict]:
        """Wait for one answer from each of ``processes`` (indices into ``self.conns``; default: all)."""
        pending = {k: self.conns[k] for k in (range(len(self.conns)) if processes is None else processes)}
        episodes: list[dict] = []
        # Watch only the processes still owed an answer: a dead worker that is not (or no longer)
        # waited for would otherwise wake every wait() at once and spin this loop.
        sentinels = {self.processes[k].sentinel: k for k in pending}
        while pending:
            _spin_until_ready(list(pending.values()), self.spin_seconds)
            ready = wait(list(pending.values()) + [s for s, k in sentinels.items() if k in pending],
                         timeout=self.timeout)
            if not ready:
                raise WorkerError(f"{self._describe(next(iter(pending)))} did not answer within {self.timeout:.0f} s")
            for obj in ready:
                if obj in sentinels:
                    w = sentinels[obj]
                    if w in pending and not self.conns[w].poll():
                        code = self._exit_code(w)
                        raise WorkerError(f"{self._describe(w)} died (exit code {code})")
                    continue
                w = self.conns.index(obj)
                try:
                    kind, payload = obj.recv()
                except (EOFError, OSError):
                    raise WorkerError(f"{self._describe(w)} died (exit code {self._exit_code(w)})") from None
                if kind == "error":
                    first = payload.splitlines()[0]
                    raise WorkerError(f"{self._describe(w)} failed: {first}")
                if kind not in (expect, "ok"):
                    raise WorkerError(f"{self._describe(w)} sent unexpected '{kind}'")
                episodes.extend(payload or [])
                pending.pop(w, None)
        return episodes

    def _send(self, command: str, group: int | None = None) -> list[int]:
        """Send ``command`` to the worker processes with envs in ``group`` (all for None); return their indices."""
        targets = [k for k, w in enumerate(self._remote)
                   if group is None or self.worker_groups[w][group][1] > self.worker_groups[w][group][0]]
        for k in targets:
            try:
                self.conns[k].send((command, group))
            except (BrokenPipeError, OSError):
                raise WorkerError(f"{self._describe(k)} died (exit code {self._exit_code(k)})") from None
        return targets

    def reset(self) -> np.ndarray:
        if self._in_flight:
            raise RuntimeError("reset() while env steps are in flight: wait for them first")
        self._send("reset")
        _reset_groups(self.local, self.shared.arrays)
        self._collect()
        return self.obs

    def step_async(self, actions, group: int | None = None) -> None:
        """Start stepping every env (``group=None``, ``actions`` for all) or one group (its actions only)."""
        self._order.started(group)
        self.actions[slice(None) if group is None else self.group_slices[group]] = actions
        try:
            self._in_flight.append(self._send("step", group))
        except WorkerError:
            self._in_flight.append([])  # keep the two queues aligned; the pool is unusable anyway
            raise

    def step_wait(self, group: int | None = None) -> list[dict]:
        """Finish the oldest started step: this process's own envs first (if it is a worker), then the others'."""
        self._order.finished(group)
        processes = self._in_flight.pop(0)  # popped with the group order, so the two never drift apart
        episodes = _step_groups(self.local, group, self.shared.arrays)
        return episodes + self._collect(processes=processes)

    def step(self, actions, group: int | None = None) -> list[dict]:
        self.step_async(actions, group)
        return self.step_wait(group)

    def peak_rss_bytes(self) -> list[int]:
        """Peak resident memory (VmHWM) of each worker process, for memory reports."""
        peaks = []
        for p in self.processes:
            try:
                for line in Path(f"/proc/{p.pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        peaks.append(int(line.split()[1]) * 1024)
            except OSError:
                peaks.append(0)
        return peaks

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for conn in self.conns:
            try:
                conn.send(("close", None))
            except Exception:
                pass
        for p in self.processes:
            p.join(timeout=2)
            if p.is_alive():
                p.kill()
                p.join(timeout=2)
        for conn in self.conns:
            conn.close()
        for _, envs in self.local:
            for env in envs:
                env.close()
        self.local = []
        self.shared.close(unlink=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


class InProcessEnvPool:
    """The :class:`EnvPool` interface with the envs stepped in this process.

    For envs so cheap that inter-process messages would cost more than the
    step itself (the toy combination lock), and for debugging. Same autoreset
    and ``next_start`` semantics as :class:`EnvPool`.
    """

    def __init__(self, spec: EnvSpec, num_envs: int, seed: int = 0, num_groups: int = 1):
        self.spec, self.num_envs, self.num_workers = spec, num_envs, 0
        self.group_slices = group_slices(num_envs, num_groups)
        self.num_groups = num_groups
        self._order = _GroupOrder(num_groups)
        self.envs = [spec.make(seed=seed + i) for i in range(num_envs)]
        self.obs_shape = tuple(self.envs[0].observation_space.shape)
        self.num_actions = int(self.envs[0].action_space.n)
        self.obs = np.zeros((num_envs, *self.obs_shape), self.envs[0].observation_space.dtype)
        self.final_obs = np.zeros_like(self.obs)
        self.actions = np.zeros(num_envs, np.int64)
        self.rewards = np.zeros(num_envs, np.float32)
        self.raw_rewards = np.zeros(num_envs, np.float32)
        self.terminated = np.zeros(num_envs, np.bool_)
        self.truncated = np.zeros(num_envs, np.bool_)
        self.warmup = np.zeros(num_envs, np.bool_)
        self.next_start = np.full(num_envs, REAL_START, np.int64)
        self._arrays = {name: getattr(self, name) for name in _Shared.FIELDS}

    def reset(self) -> np.ndarray:
        for i, env in enumerate(self.envs):
            _reset_env(env, i, self._arrays)
        return self.obs

    def step_async(self, actions, group: int | None = None) -> None:
        self._order.started(group)
        self.actions[slice(None) if group is None else self.group_slices[group]] = actions

    def step_wait(self, group: int | None = None) -> list[dict]:
        self._order.finished(group)
        sl = slice(0, self.num_envs) if group is None else self.group_slices[group]
        return _step_envs(self.envs[sl], sl.start, self._arrays)

    def step(self, actions, group: int | None = None) -> list[dict]:
        self.step_async(actions, group)
        return self.step_wait(group)

    def peak_rss_bytes(self) -> list[int]:
        return []

    def close(self) -> None:
        for env in self.envs:
            env.close()


def make_pool(spec: EnvSpec, num_envs: int, num_workers: int | None, seed: int = 0, num_groups: int = 1,
              learner_is_worker: bool = False, groups_by_worker: bool = False, spin_seconds: float = 0.0):
    """``num_workers=0`` steps the envs in this process; otherwise worker processes."""
    if num_workers == 0:
        return InProcessEnvPool(spec, num_envs, seed, num_groups)
    return EnvPool(spec, num_envs, num_workers, seed, num_groups=num_groups, learner_is_worker=learner_is_worker,
                   groups_by_worker=groups_by_worker, spin_seconds=spin_seconds)
