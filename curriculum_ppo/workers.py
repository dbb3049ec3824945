"""The worker pool's former home: re-exports :mod:`curriculum_ppo.vec`, so that ``curriculum_ppo.workers``
imports keep working.

New code imports the pools from :mod:`curriculum_ppo.vec` and builds envs with the registry's
:class:`~curriculum_ppo.envs.registry.EnvFactory`.
"""

from __future__ import annotations

from curriculum_ppo.vec import (REAL_START, EnvPool, InProcessEnvPool, WorkerError, group_slices, make_pool, probe,
                                resolve_num_workers)

__all__ = ["REAL_START", "EnvPool", "InProcessEnvPool", "WorkerError", "group_slices", "make_pool", "probe",
           "resolve_num_workers"]
