"""Vectorized environment workers: several envs per process, one shared-memory batch per step.

Why not ``gymnasium.vector.AsyncVectorEnv``? It runs one env per process and
exchanges pickled messages per env; on a 2-core laptop with 8+ envs that spends
more time in process switching than in the emulator (``scripts/bench_envs.py``
measures both side by side). Here each worker process owns a contiguous slice
of envs and steps them in a tight loop; actions, observations, rewards and
flags live in shared memory, and the only per-step message is a one-byte
"step" to each worker and a small list of finished-episode summaries back.

Autoreset: when an env's episode ends, the worker stores the last observation
in ``final_obs`` (needed to bootstrap truncated episodes), resets the env at
``next_start[i]`` (a demo frame chosen by the learner, or -1 for the real game
start) and returns the first observation of the new episode in ``obs``.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
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
        from curriculum_ppo.demo.store import load_demo
        from curriculum_ppo.envs.atari import AtariConfig, AtariEnv
        from curriculum_ppo.episode_rules import EpisodeRulesConfig

        demo = load_demo(self.demo_path) if self.demo_path else None
        return AtariEnv(game=self.game, demo=demo, config=AtariConfig(**self.atari),
                        rules=EpisodeRulesConfig(**self.rules), seed=seed)

    def probe(self):
        """Build one env in this process to learn observation shape and action count."""
        env = self.make(seed=0)
        return env.observation_space.shape, int(env.action_space.n)


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


def _worker_main(index: int, spec: EnvSpec, env_slice: tuple[int, int], num_envs: int, obs_shape: tuple,
                 names: dict, seed: int, conn) -> None:
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
        lo, hi = env_slice
        envs = [spec.make(seed=seed + i) for i in range(lo, hi)]

        conn.send(("ready", None))
        while True:
            command = conn.recv()
            if command == "step":
                conn.send(("ok", _step_envs(envs, lo, a)))
            elif command == "reset":
                for offset, env in enumerate(envs):
                    _reset_env(env, lo + offset, a)
                conn.send(("ok", []))
            elif command == "crash":  # used by tests to simulate a dying worker
                os._exit(3)
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


class EnvPool:
    """``num_envs`` environments in ``num_workers`` processes, stepped as one batch.

    ``step(actions)`` writes the actions, wakes all workers and waits for them;
    afterwards ``obs``, ``rewards``, ``terminated``, ``truncated``,
    ``final_obs`` and ``warmup`` hold the batch (views into shared memory:
    copy what you keep). ``step_async``/``step_wait`` split the two halves so
    the caller can work while the envs step.
    """

    def __init__(self, spec: EnvSpec, num_envs: int, num_workers: int | None = None, seed: int = 0,
                 start_method: str = "spawn", timeout: float = 120.0):
        num_workers = min(num_envs, num_workers or os.cpu_count() or 1)
        self.spec, self.num_envs, self.num_workers, self.timeout = spec, num_envs, num_workers, timeout
        obs_shape, self.num_actions = spec.probe()
        self.obs_shape = tuple(obs_shape)
        self.shared = _Shared(num_envs, self.obs_shape, create=True)
        a = self.shared.arrays
        for key in _Shared.FIELDS:
            setattr(self, key, a[key])
        self.next_start[:] = REAL_START
        bounds = np.linspace(0, num_envs, num_workers + 1).astype(int)
        self.slices = [(int(bounds[w]), int(bounds[w + 1])) for w in range(num_workers)]
        ctx = mp.get_context(start_method)
        self.processes, self.conns = [], []
        self._closed = False
        try:
            for w, sl in enumerate(self.slices):
                parent, child = ctx.Pipe()
                p = ctx.Process(target=_worker_main, name=f"env-worker-{w}",
                                args=(w, spec, sl, num_envs, self.obs_shape, self.shared.names(), seed, child),
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

    def _describe(self, w: int) -> str:
        lo, hi = self.slices[w]
        return f"env worker {w} (pid {self.processes[w].pid}, envs {lo}..{hi - 1})"

    def _collect(self, expect: str = "ok") -> list[dict]:
        pending = dict(enumerate(self.conns))
        episodes: list[dict] = []
        sentinels = {p.sentinel: w for w, p in enumerate(self.processes)}
        while pending:
            ready = wait(list(pending.values()) + list(sentinels), timeout=self.timeout)
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

    def _send(self, command: str) -> None:
        for w, conn in enumerate(self.conns):
            try:
                conn.send(command)
            except (BrokenPipeError, OSError):
                raise WorkerError(f"{self._describe(w)} died (exit code {self._exit_code(w)})") from None

    def reset(self) -> np.ndarray:
        self._send("reset")
        self._collect()
        return self.obs

    def step_async(self, actions) -> None:
        self.actions[:] = actions
        self._send("step")

    def step_wait(self) -> list[dict]:
        return self._collect()

    def step(self, actions) -> list[dict]:
        self.step_async(actions)
        return self.step_wait()

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
                conn.send("close")
            except Exception:
                pass
        for p in self.processes:
            p.join(timeout=2)
            if p.is_alive():
                p.kill()
                p.join(timeout=2)
        for conn in self.conns:
            conn.close()
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

    def __init__(self, spec: EnvSpec, num_envs: int, seed: int = 0):
        self.spec, self.num_envs, self.num_workers = spec, num_envs, 0
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

    def step_async(self, actions) -> None:
        self.actions[:] = actions

    def step_wait(self) -> list[dict]:
        return _step_envs(self.envs, 0, self._arrays)

    def step(self, actions) -> list[dict]:
        self.step_async(actions)
        return self.step_wait()

    def peak_rss_bytes(self) -> list[int]:
        return []

    def close(self) -> None:
        for env in self.envs:
            env.close()


def make_pool(spec: EnvSpec, num_envs: int, num_workers: int | None, seed: int = 0):
    """``num_workers=0`` steps the envs in this process; otherwise worker processes."""
    if num_workers == 0:
        return InProcessEnvPool(spec, num_envs, seed)
    return EnvPool(spec, num_envs, num_workers, seed)
