"""Vectorized envs: the worker pools (:mod:`.pool`), what steps the envs (:mod:`.worker`) and the
batch arrays they share (:mod:`.shared`)."""

from curriculum_ppo.vec.pool import (REAL_START, EnvPool, InProcessEnvPool, WorkerError, group_slices, make_pool,
                                     probe, resolve_num_workers)

__all__ = ["REAL_START", "EnvPool", "InProcessEnvPool", "WorkerError", "group_slices", "make_pool", "probe",
           "resolve_num_workers"]
