"""Vectorized envs: several envs per process, one batch of arrays per step, behind one interface.

Why not ``gymnasium.vector.AsyncVectorEnv``? It runs one env per process and
exchanges pickled messages per env; on a machine with few cores and 8+ envs that
spends more time in process switching than in the emulator (``scripts/bench_envs.py``
measures both side by side). Here each worker process owns a contiguous slice of
envs (one per env group) and steps them in a tight loop; actions, observations,
rewards and flags live in shared memory (:mod:`curriculum_ppo.vec.shared`), and the
only per-step messages are a short "step" command to each worker and a small list
of finished-episode summaries back.

The pools know no env type: they take an env *factory*, a picklable callable with
``factory(seed) -> env`` (see :class:`curriculum_ppo.envs.registry.EnvFactory`), and
build env ``i`` as ``factory(seed + i)``. Where an env's next episode begins is the
env's own reset option: :meth:`EnvPool.set_options` is the named channel for it (as
``set_options`` in Stable-Baselines3), and the options reach the env with the next
command, so each autoreset uses the options last set for that env.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from multiprocessing.connection import wait

import numpy as np

from curriculum_ppo.errors import UserError
from curriculum_ppo.vec.shared import FIELDS, SharedArrays, local_arrays
from curriculum_ppo.vec.worker import EnvSlots, spin_until_ready, worker_main

REAL_START = -1
"""Stands for the real game start (the reset option ``{"start_frame": None}``) in an integer array of
start frames, such as the Trainer's record of where each env was told to begin."""


def resolve_num_workers(num_envs: int, num_workers: int | None) -> int:
    """Worker processes an EnvPool really starts: ``num_workers`` (default one per core), at most one per env."""
    return min(num_envs, num_workers or os.cpu_count() or 1)


class WorkerError(RuntimeError):
    """A worker process died or raised; the message names the worker and its envs."""


def group_slices(num_envs: int, num_groups: int) -> list[slice]:
    """Env groups: ``num_groups`` contiguous, near-equal slices of the env indices."""
    if not 1 <= num_groups <= num_envs:
        raise UserError(f"env groups must be in 1..{num_envs} (the number of envs), got {num_groups}")
    bounds = np.linspace(0, num_envs, num_groups + 1).astype(int)
    return [slice(int(bounds[g]), int(bounds[g + 1])) for g in range(num_groups)]


def probe(factory) -> tuple[tuple, np.dtype, int]:
    """Build one env in this process to learn its observation shape and dtype and its action count."""
    env = factory(0)
    try:
        space = env.observation_space
        return tuple(space.shape), np.dtype(space.dtype), int(env.action_space.n)
    finally:
        env.close()


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


class _PoolBase:
    """What both pools share: the batch arrays as attributes, groups, their order, and the reset-options channel.

    After every step ``obs``, ``rewards``, ``terminated``, ``truncated``, ``final_obs`` and
    ``warmup`` hold the batch (views of the pool's arrays: copy what you keep).
    """

    def _setup(self, num_envs: int, num_groups: int, obs_shape: tuple, num_actions: int, arrays: dict) -> None:
        self.num_envs, self.num_groups = num_envs, num_groups
        self.group_slices = group_slices(num_envs, num_groups)
        self._order = _GroupOrder(num_groups)
        self.obs_shape, self.num_actions = tuple(obs_shape), int(num_actions)
        self._arrays = arrays
        for key in FIELDS:
            setattr(self, key, arrays[key])
        self._pending: dict[int, dict] = {}  # reset options not yet handed to the envs

    def set_options(self, options: dict | list[dict], indices: int | list[int] | None = None) -> None:
        """Reset options for the envs ``indices`` (default all): ``options`` for each, or one dict per index.

        The envs receive them with the next ``reset`` or ``step_async`` and use them for every reset
        (autoresets included) until they are replaced.
        """
        if indices is None:
            indices = range(self.num_envs)
        elif isinstance(indices, (int, np.integer)):
            indices = [int(indices)]
        indices = [int(i) for i in indices]
        if isinstance(options, dict):
            options = [options] * len(indices)
        if len(options) != len(indices):
            raise ValueError(f"{len(options)} reset options for {len(indices)} envs")
        for i, opts in zip(indices, options):
            if not 0 <= i < self.num_envs:
                raise IndexError(f"env {i} not in 0..{self.num_envs - 1}")
            self._pending[i] = dict(opts)

    def _take_pending(self) -> dict[int, dict]:
        pending, self._pending = self._pending, {}
        return pending

    def step(self, actions, group: int | None = None) -> list[dict]:
        """``step_async`` then ``step_wait``: the finished episodes' summaries (``info["episode"]`` plus ``"env"``)."""
        self.step_async(actions, group)
        return self.step_wait(group)

    def _write_actions(self, actions, group: int | None) -> None:
        self._order.started(group)
        self.actions[slice(None) if group is None else self.group_slices[group]] = actions

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class EnvPool(_PoolBase):
    """``num_envs`` environments in ``num_workers`` processes, stepped as one batch.

    ``step(actions)`` writes the actions, wakes all workers and waits for them;
    afterwards the batch attributes hold the results. ``step_async``/``step_wait``
    split the two halves so the caller can work while the envs step.

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
    preempts a worker on every message.

    With ``spin_seconds`` > 0, every process of the pool polls its pipe for up
    to that long before it blocks (:func:`~curriculum_ppo.vec.worker.spin_until_ready`),
    so a core that waits a moment for the other side's answer stays awake. This
    pays off only when no process competes for the cores: with a third process on
    the workers' cores, or a PPO update running beside the rollout, the spinning
    steals the CPU the others need, so the default is 0 (``scripts/bench_envs.py``
    measures each variant; docs/benchmarks.md has the figures).
    """

    def __init__(self, factory, num_envs: int, num_workers: int | None = None, seed: int = 0,
                 start_method: str = "spawn", timeout: float = 120.0, num_groups: int = 1,
                 learner_is_worker: bool = False, groups_by_worker: bool = False, spin_seconds: float = 0.0):
        num_workers = resolve_num_workers(num_envs, num_workers)
        if groups_by_worker and num_groups % num_workers:
            raise UserError(f"env groups by worker need a multiple of the {num_workers} workers as groups, "
                            f"got {num_groups}")
        self.factory, self.num_workers, self.timeout, self.spin_seconds = factory, num_workers, timeout, spin_seconds
        self.processes, self.conns, self._closed = [], [], False
        self.local = EnvSlots([])  # worker 0's envs when this process steps them, else none
        group_count = len(group_slices(num_envs, num_groups))  # validates before the probe builds an env
        obs_shape, obs_dtype, num_actions = probe(factory)
        self._batch = (num_envs, tuple(obs_shape), obs_dtype)
        self.shared = SharedArrays(*self._batch)
        self._setup(num_envs, group_count, obs_shape, num_actions, self.shared.arrays)
        self.worker_groups = self._assign(groups_by_worker)
        self._owner = np.zeros(num_envs, np.int64)  # the worker of each env
        for w, slices in enumerate(self.worker_groups):
            for lo, hi in slices:
                self._owner[lo:hi] = w
        self._in_flight: list[list[int]] = []  # per started step, oldest first: the processes it messaged
        self._remote = list(range(1 if learner_is_worker else 0, num_workers))  # worker index of each process
        try:
            if learner_is_worker:
                self.local = EnvSlots.build(factory, self.worker_groups[0], seed)
            ctx = mp.get_context(start_method)
            for w in self._remote:
                parent, child = ctx.Pipe()
                p = ctx.Process(target=worker_main, name=f"env-worker-{w}", daemon=True,
                                args=(factory, self.worker_groups[w], self._batch, self.shared.names(), seed, child,
                                      spin_seconds))
                p.start()
                child.close()
                self.processes.append(p)
                self.conns.append(parent)
            self._collect("ready")
        except BaseException:
            self.close()
            raise

    def _assign(self, groups_by_worker: bool) -> list[list[tuple[int, int]]]:
        """``worker_groups[w][g]``: the env slice of group g that worker w steps (possibly empty).

        By default worker w owns the w-th share of every group; by worker, group g belongs to one worker.
        """
        W = self.num_workers
        worker_groups: list[list[tuple[int, int]]] = [[] for _ in range(W)]
        for index, g in enumerate(self.group_slices):
            if groups_by_worker:
                for w in range(W):
                    worker_groups[w].append((g.start, g.stop) if w == index % W else (g.start, g.start))
                continue
            bounds = np.linspace(g.start, g.stop, W + 1).astype(int)
            for w in range(W):
                worker_groups[w].append((int(bounds[w]), int(bounds[w + 1])))
        return worker_groups

    # -- protocol -----------------------------------------------------------------------
    def _exit_code(self, k: int):
        self.processes[k].join(timeout=1.0)
        return self.processes[k].exitcode

    def _describe(self, k: int) -> str:
        """Name the k-th worker process."""
        w = self._remote[k]
        envs = ", ".join(f"{lo}..{hi - 1}" for lo, hi in self.worker_groups[w] if hi > lo)
        return f"env worker {w} (pid {self.processes[k].pid}, envs {envs})"

    def _died(self, k: int) -> WorkerError:
        return WorkerError(f"{self._describe(k)} died (exit code {self._exit_code(k)})")

    def _collect(self, expect: str = "ok", processes: list[int] | None = None) -> list[dict]:
        """Wait for one answer from each of ``processes`` (indices into ``self.conns``; default: all)."""
        pending = {k: self.conns[k] for k in (range(len(self.conns)) if processes is None else processes)}
        episodes: list[dict] = []
        # Watch only the processes still owed an answer: a dead worker that is not (or no longer)
        # waited for would otherwise wake every wait() at once and spin this loop.
        sentinels = {self.processes[k].sentinel: k for k in pending}
        while pending:
            spin_until_ready(list(pending.values()), self.spin_seconds)
            ready = wait(list(pending.values()) + [s for s, k in sentinels.items() if k in pending],
                         timeout=self.timeout)
            if not ready:
                raise WorkerError(f"{self._describe(next(iter(pending)))} did not answer within {self.timeout:.0f} s")
            for obj in ready:
                if obj in sentinels:
                    k = sentinels[obj]
                    if k in pending and not self.conns[k].poll():
                        raise self._died(k)
                    continue
                k = self.conns.index(obj)
                try:
                    kind, payload = obj.recv()
                except (EOFError, OSError):
                    raise self._died(k) from None
                if kind == "error":
                    raise WorkerError(f"{self._describe(k)} failed: {payload.splitlines()[0]}")
                if kind not in (expect, "ok"):
                    raise WorkerError(f"{self._describe(k)} sent unexpected '{kind}'")
                episodes.extend(payload or [])
                pending.pop(k, None)
        return episodes

    def _send(self, command: str, group: int | None = None) -> list[int]:
        """Send ``command`` to the worker processes with envs in ``group`` (all for None); return their indices.

        The reset options set since the last command travel with it to the processes that own their
        envs; a process this command does not reach gets them with its next one (an env can only be
        reset by a later command to its process).
        """
        by_worker: dict[int, dict[int, dict]] = {}
        for i, options in self._take_pending().items():
            by_worker.setdefault(int(self._owner[i]), {})[i] = options
        if self.local.groups:
            self.local.set_options(by_worker.pop(0, {}))
        targets = [k for k, w in enumerate(self._remote)
                   if group is None or self.worker_groups[w][group][1] > self.worker_groups[w][group][0]]
        for k in targets:
            try:
                self.conns[k].send((command, group, by_worker.pop(self._remote[k], {})))
            except (BrokenPipeError, OSError):
                raise self._died(k) from None
        for options in by_worker.values():
            self._pending.update(options)
        return targets

    def reset(self) -> np.ndarray:
        """Reset every env with its reset options; return ``obs``."""
        if self._in_flight:
            raise RuntimeError("reset() while env steps are in flight: wait for them first")
        self._send("reset")
        self.local.reset(self._arrays)
        self._collect()
        return self.obs

    def step_async(self, actions, group: int | None = None) -> None:
        """Start stepping every env (``group=None``, ``actions`` for all) or one group (its actions only)."""
        self._write_actions(actions, group)
        try:
            self._in_flight.append(self._send("step", group))
        except WorkerError:
            self._in_flight.append([])  # keep the two queues aligned; the pool is unusable anyway
            raise

    def step_wait(self, group: int | None = None) -> list[dict]:
        """Finish the oldest started step: this process's own envs first (if it is a worker), then the others'."""
        self._order.finished(group)
        processes = self._in_flight.pop(0)  # popped with the group order, so the two never drift apart
        episodes = self.local.step(group, self._arrays)
        return episodes + self._collect(processes=processes)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for conn in self.conns:
            try:
                conn.send(("close", None, None))
            except Exception:
                pass
        for p in self.processes:
            p.join(timeout=2)
            if p.is_alive():
                p.kill()
                p.join(timeout=2)
        for conn in self.conns:
            conn.close()
        self.local.close()
        if getattr(self, "shared", None) is not None:
            self.shared.close(unlink=True)

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


class InProcessEnvPool(_PoolBase):
    """The :class:`EnvPool` interface with the envs stepped in this process.

    For envs so cheap that inter-process messages would cost more than the
    step itself (the toy combination lock), and for debugging. Same batch
    arrays, autoreset and reset options as :class:`EnvPool`.
    """

    def __init__(self, factory, num_envs: int, seed: int = 0, num_groups: int = 1):
        self.factory, self.num_workers = factory, 0
        slices = [(g.start, g.stop) for g in group_slices(num_envs, num_groups)]
        self.slots = EnvSlots.build(factory, slices, seed)  # one slot group per env group
        self.envs = [env for _, envs in self.slots.groups for env in envs]
        space = self.envs[0].observation_space
        arrays = local_arrays(num_envs, tuple(space.shape), space.dtype)
        self._setup(num_envs, num_groups, tuple(space.shape), int(self.envs[0].action_space.n), arrays)

    def reset(self) -> np.ndarray:
        self.slots.set_options(self._take_pending())
        self.slots.reset(self._arrays)
        return self.obs

    def step_async(self, actions, group: int | None = None) -> None:
        self._write_actions(actions, group)
        self.slots.set_options(self._take_pending())

    def step_wait(self, group: int | None = None) -> list[dict]:
        self._order.finished(group)
        return self.slots.step(group, self._arrays)

    def close(self) -> None:
        self.slots.close()


def make_pool(factory, num_envs: int, num_workers: int | None, seed: int = 0, num_groups: int = 1,
              learner_is_worker: bool = False, groups_by_worker: bool = False, spin_seconds: float = 0.0):
    """``num_workers=0`` steps the envs in this process; otherwise worker processes."""
    if num_workers == 0:
        return InProcessEnvPool(factory, num_envs, seed, num_groups)
    return EnvPool(factory, num_envs, num_workers, seed, num_groups=num_groups, learner_is_worker=learner_is_worker,
                   groups_by_worker=groups_by_worker, spin_seconds=spin_seconds)
