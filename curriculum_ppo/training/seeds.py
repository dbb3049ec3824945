"""Seeds of a rank's envs and learner RNGs, fresh and on resume, drawn from ``(seed, rank, updates)``."""

from __future__ import annotations

import numpy as np


def _seed_words(seed: int, rank: int, updates: int, *more: int) -> list[int]:
    return [seed % 2**64, rank, updates, *more]


def learner_seed(seed: int, rank: int) -> int:
    """Seed of a fresh rank's learner RNGs (numpy, torch)."""
    return seed + 1000 * rank


def env_seed(seed: int, rank: int, updates: int) -> int:
    """Seed of a rank's first env (env ``i`` gets this ``+ i``), for a run at ``updates`` updates.

    A fresh run keeps the seeds runs always had. A resumed run draws new ones from ``(seed, rank,
    updates)``: seeded as at the start, its envs would replay the random streams (no-op starts, sticky
    actions, the episode rules' draws) of the run's first updates on every resume.
    """
    if updates == 0:
        return learner_seed(seed, rank) * 100
    return int(np.random.SeedSequence(_seed_words(seed, rank, updates)).generate_state(1)[0] % 2**30)


def learner_reseed(seed: int, rank: int, updates: int) -> int:
    """Seed of a rank's learner RNGs when a resume finds no saved state for it (another world size)."""
    return int(np.random.SeedSequence(_seed_words(seed, rank, updates, 1)).generate_state(1)[0] % 2**62)
