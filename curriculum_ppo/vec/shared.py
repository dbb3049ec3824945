"""The batch arrays a pool publishes after every step, laid out once for both pools.

One row per env: its observation (``obs``; after an episode end, the first observation of
the next episode), the last observation of an episode that just ended (``final_obs``, to
bootstrap a truncated one), the action the learner chose, the reward, the two end flags and
``warmup`` (the next step from this observation replays a demo, so the learner ignores its
action). :class:`~curriculum_ppo.vec.pool.EnvPool` keeps these arrays in named shared memory so
that its worker processes write them in place; :class:`~curriculum_ppo.vec.pool.InProcessEnvPool`
keeps the same arrays in ordinary memory. Both build them from :func:`layout`, so a field added
here reaches both.
"""

from __future__ import annotations

from multiprocessing.shared_memory import SharedMemory

import numpy as np

FIELDS = ("obs", "final_obs", "actions", "rewards", "terminated", "truncated", "warmup")


def layout(num_envs: int, obs_shape: tuple, obs_dtype) -> dict[str, tuple[tuple, np.dtype]]:
    """Shape and dtype of every field of :data:`FIELDS` for ``num_envs`` envs."""
    obs = ((num_envs, *obs_shape), np.dtype(obs_dtype))
    return {
        "obs": obs,
        "final_obs": obs,
        "actions": ((num_envs,), np.dtype(np.int64)),
        "rewards": ((num_envs,), np.dtype(np.float32)),
        "terminated": ((num_envs,), np.dtype(np.bool_)),
        "truncated": ((num_envs,), np.dtype(np.bool_)),
        "warmup": ((num_envs,), np.dtype(np.bool_)),
    }


def local_arrays(num_envs: int, obs_shape: tuple, obs_dtype) -> dict[str, np.ndarray]:
    """The fields of :func:`layout` as zeroed arrays of this process."""
    return {name: np.zeros(shape, dtype) for name, (shape, dtype) in layout(num_envs, obs_shape, obs_dtype).items()}


class SharedArrays:
    """The fields of :func:`layout` in named shared memory: created by the pool, attached by its workers.

    ``names`` (from :meth:`names` of the creating side) attaches to existing blocks; without it,
    new blocks are created. ``arrays`` maps each field to its array.
    """

    def __init__(self, num_envs: int, obs_shape: tuple, obs_dtype, names: dict | None = None):
        self.blocks: dict[str, SharedMemory] = {}
        self.arrays: dict[str, np.ndarray] = {}
        try:
            for name, (shape, dtype) in layout(num_envs, obs_shape, obs_dtype).items():
                size = max(1, int(np.prod(shape)) * dtype.itemsize)
                shm = SharedMemory(create=True, size=size) if names is None else SharedMemory(name=names[name])
                self.blocks[name] = shm
                self.arrays[name] = np.ndarray(shape, dtype=dtype, buffer=shm.buf)
        except BaseException:
            self.close(unlink=names is None)
            raise

    def names(self) -> dict:
        return {k: v.name for k, v in self.blocks.items()}

    def close(self, unlink: bool) -> None:
        """Detach; ``unlink`` (the creator only) also frees the blocks."""
        self.arrays.clear()
        for shm in self.blocks.values():
            try:
                shm.close()
                if unlink:
                    shm.unlink()
            except (FileNotFoundError, BufferError):
                pass
        self.blocks.clear()
