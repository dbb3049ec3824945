"""The examples in examples/ run as a user runs them (short budgets)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_sb3_trains_from_a_demo_start():
    pytest.importorskip("stable_baselines3")  # the sb3 extra; .ci/run installs it
    result = subprocess.run([sys.executable, "examples/sb3_demo_start.py", "--steps", "128"], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    match = re.search(r"SB3 PPO, 128 steps from demo frame 600: (\d+) of (\d+) episodes tied the demo", result.stdout)
    assert match, result.stdout
    successes, episodes = map(int, match.groups())
    assert episodes >= 1 and 0 <= successes <= episodes
