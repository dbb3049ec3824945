"""Shared fixtures for the demo tests: the bundled demo and a way to run the CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def bundled_demo_path() -> Path:
    """``demos/MontezumaRevenge-room1.h5``: 635 frames, 400 points (do not modify it)."""
    path = ROOT / "demos" / "MontezumaRevenge-room1.h5"
    assert path.is_file(), f"bundled demo missing: {path}"
    return path


@pytest.fixture(scope="session")
def bundled_script_path(bundled_demo_path) -> Path:
    """The action script the bundled demo was recorded from."""
    return bundled_demo_path.with_suffix(".actions")


@pytest.fixture(scope="session")
def bundled_demo(bundled_demo_path):
    """The bundled demo loaded once; treat it as read-only."""
    from curriculum_ppo.demo.store import load_demo

    return load_demo(bundled_demo_path)


@pytest.fixture(scope="session")
def start_cli():
    """``start_cli(*args, **popen_kwargs)`` starts ``python -m curriculum_ppo ARGS`` in the repo root.

    Returns the :class:`subprocess.Popen`; call ``.communicate()`` for (stdout, stderr).
    Starting several before waiting runs them in parallel.
    """
    def start(*args, **kwargs) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "curriculum_ppo", *map(str, args)], cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)
    return start


@pytest.fixture
def one_torch_thread():
    """Tiny networks: extra intra-op threads only add overhead (and stall badly on a loaded machine)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
