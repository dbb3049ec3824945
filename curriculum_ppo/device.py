"""Where the learner runs: the torch device named by ``--device`` and the learner's CPU threads."""

from __future__ import annotations

import torch

from curriculum_ppo.errors import UserError

GPU_LEARNER_THREADS = 1
"""Torch CPU threads of a learner that trains on a GPU (see :func:`learner_torch_threads`)."""


def pick_device(name: str) -> torch.device:
    """``auto`` (CUDA if PyTorch sees a GPU, else CPU), ``cpu`` or ``cuda[:N]``; anything else is a UserError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda was requested but PyTorch sees no CUDA GPU")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise UserError(f"unknown device '{name}' (use auto, cpu or cuda)")
    return torch.device(name)


def learner_torch_threads(requested: int | None, device_type: str) -> int | None:
    """Torch CPU threads for the learner process (None: leave torch's default, one per core).

    On CPU the PPO update needs every core. On a GPU the learner's CPU work is small, and torch's
    default of one thread per core makes those threads compete with the env workers for the same
    cores, so a GPU learner uses :data:`GPU_LEARNER_THREADS` (measured in docs/benchmarks.md).
    ``requested`` (``--threads``) wins in both cases.
    """
    if requested:
        return requested
    return GPU_LEARNER_THREADS if device_type == "cuda" else None
