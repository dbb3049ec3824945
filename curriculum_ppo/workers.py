"""The worker pool's former home, kept so that ``curriculum_ppo.workers`` imports keep working.

The pools live in :mod:`curriculum_ppo.vec` and env kinds in :mod:`curriculum_ppo.envs.registry`;
:class:`EnvSpec` is the env description the pools took before they took factories.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from curriculum_ppo.envs.registry import EnvFactory
from curriculum_ppo.vec.pool import (REAL_START, EnvPool, InProcessEnvPool, WorkerError, group_slices, make_pool,
                                     probe, resolve_num_workers)
from curriculum_ppo.vec.worker import spin_until_ready as _spin_until_ready

__all__ = ["REAL_START", "EnvPool", "EnvSpec", "InProcessEnvPool", "WorkerError", "group_slices", "make_pool",
           "resolve_num_workers", "_spin_until_ready"]


@dataclass
class EnvSpec:
    """An env factory in the old shape: the Atari fields, or ``kind="toy"`` with the toy's kwargs.

    ``spec(seed)`` and ``spec.make(seed)`` build an env through :meth:`factory`, the registry's
    :class:`~curriculum_ppo.envs.registry.EnvFactory`.
    """

    game: str | None = None
    demo_path: str | None = None
    atari: dict = field(default_factory=dict)  # AtariConfig fields
    rules: dict = field(default_factory=dict)  # EpisodeRulesConfig fields
    kind: str = "atari"  # "atari" or "toy"
    toy: dict = field(default_factory=dict)  # toy env kwargs

    def factory(self) -> EnvFactory:
        if self.kind == "atari":
            return EnvFactory("atari", game=self.game, demo_path=self.demo_path, atari=self.atari, rules=self.rules)
        return EnvFactory(self.kind, **self.toy)

    def make(self, seed: int):
        return self.factory()(seed)

    def __call__(self, seed: int):
        return self.make(seed)

    def probe(self):
        """Observation shape and action count of one env built in this process."""
        shape, _, num_actions = probe(self.factory())
        return shape, num_actions
