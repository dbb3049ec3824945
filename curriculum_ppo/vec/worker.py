"""What holds envs does: step them into the batch arrays, autoreset, and (in a process) obey the pool.

:class:`EnvSlots` is the env side of both pools: the in-process pool keeps one for all its envs,
each worker process of :class:`~curriculum_ppo.vec.pool.EnvPool` one for its share (and the
learner one for worker 0's share when it steps envs itself). Autoreset: when an env's episode
ends, its last observation goes to ``final_obs`` (to bootstrap a truncated episode), the env is
reset with its reset options, and ``obs`` gets the first observation of the new episode.

Reset options are the env's own business: an env's options (set through the pool's
``set_options``) are passed to ``env.reset(options=...)`` at every reset of that env until they
are replaced; nothing here reads them.
"""

from __future__ import annotations

import signal
import time
import traceback

from curriculum_ppo.vec.shared import SharedArrays


class EnvSlots:
    """Envs ``first, first + 1, ...`` of each group: ``groups = [(first env index, [env, ...]), ...]``."""

    def __init__(self, groups: list[tuple[int, list]]):
        self.groups = groups
        self.options: dict[int, dict] = {}

    @classmethod
    def build(cls, factory, slices: list[tuple[int, int]], seed: int) -> "EnvSlots":
        """Build env ``i`` of every ``(lo, hi)`` slice as ``factory(seed + i)``."""
        return cls([(lo, [factory(seed + i) for i in range(lo, hi)]) for lo, hi in slices])

    def set_options(self, options: dict[int, dict]) -> None:
        """``{env index: reset options}`` for the next resets of those envs."""
        self.options.update(options)

    def _reset(self, env, i: int, a: dict) -> None:
        obs, info = env.reset(options=self.options.get(i, {}))
        a["obs"][i] = obs
        a["warmup"][i] = bool(info.get("warmup", False))

    def reset(self, a: dict) -> None:
        for lo, envs in self.groups:
            for offset, env in enumerate(envs):
                self._reset(env, lo + offset, a)

    def step(self, group: int | None, a: dict) -> list[dict]:
        """Step every group (``None``) or group ``group`` with ``a["actions"]``; return finished-episode summaries.

        A summary is the env's ``info["episode"]`` plus ``"env"``, the env's index in the batch.
        """
        chosen = self.groups if group is None else self.groups[group:group + 1]
        episodes = []
        for lo, envs in chosen:
            for offset, env in enumerate(envs):
                i = lo + offset
                obs, reward, terminated, truncated, info = env.step(int(a["actions"][i]))
                a["rewards"][i] = reward
                a["terminated"][i] = terminated
                a["truncated"][i] = truncated
                if terminated or truncated:
                    a["final_obs"][i] = obs
                    episodes.append({**info.get("episode", {}), "env": i})
                    self._reset(env, i, a)
                else:
                    a["obs"][i] = obs
                    a["warmup"][i] = bool(info.get("warmup", False))
        return episodes

    def close(self) -> None:
        for _, envs in self.groups:
            for env in envs:
                env.close()
        self.groups = []


def spin_until_ready(conns: list, spin_seconds: float) -> bool:
    """Busy-poll ``conns`` for up to ``spin_seconds``; True as soon as one has a message.

    Why spin at all: a process that blocks on a pipe lets its core go idle, and
    waking it again (on a VM, an idle virtual CPU) adds latency to every step
    of the pool. The peer's answer usually arrives within a fraction of a step,
    so a short poll first keeps the core awake; after ``spin_seconds`` the
    caller blocks as before, so an idle pool does not burn a core. Whether it
    pays is measured by ``scripts/bench_envs.py`` (see :class:`~curriculum_ppo.vec.pool.EnvPool`).
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


def worker_main(factory, slices: list[tuple[int, int]], batch: tuple, names: dict, seed: int, conn,
                spin_seconds: float = 0.0) -> None:
    """A worker process: own the envs of ``slices`` (one contiguous slice per env group), step them on command.

    ``batch`` is ``(num_envs, obs_shape, obs_dtype)`` of the shared arrays named by ``names``.
    Messages are ``(command, group, {env index: reset options})``; every one is answered with
    ``("ok", finished episodes)``, or ``("error", text)`` before the process dies.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the learner handles Ctrl-C and shuts us down
    try:
        import cv2

        cv2.setNumThreads(1)
    except ImportError:
        pass
    shared = None
    try:
        shared = SharedArrays(*batch, names=names)
        a = shared.arrays
        slots = EnvSlots.build(factory, slices, seed)
        conn.send(("ready", None))
        while True:
            spin_until_ready([conn], spin_seconds)
            command, group, options = conn.recv()
            if options:
                slots.set_options(options)
            if command == "step":
                conn.send(("ok", slots.step(group, a)))
            elif command == "reset":
                slots.reset(a)
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
