"""Bad input to the scripts in ``scripts/``: one readable line, a nonzero exit, no JSON written.

The benchmarks themselves take minutes to hours and are not run here; these
tests only check the paths that end a script before any long work.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROBE = ROOT / "scripts" / "probe_jump_timing.py"


def _run_probe(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(PROBE), *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("case", ["missing checkpoint", "checkpoint that is not one", "missing demo"])
def test_probe_jump_timing_bad_input_is_one_line_and_writes_nothing(tmp_path, case):
    out = tmp_path / "probe.json"
    args = ["--first", "190", "--last", "190", "--json", out]
    if case == "missing checkpoint":
        args += ["--checkpoint", tmp_path / "nope.pt"]
        expected = "nope.pt"
    elif case == "checkpoint that is not one":
        fake = tmp_path / "notes.pt"
        fake.write_text("these are notes, not a PyTorch checkpoint\n")
        args += ["--checkpoint", fake]
        expected = "notes.pt"
    else:
        args += ["--demo", tmp_path / "nope.h5"]
        expected = "nope.h5"
    result = _run_probe(*args)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("probe_jump_timing: error:") and expected in lines[0], lines[0]
    assert "Traceback" not in result.stderr
    assert not out.exists()
    assert list(tmp_path.glob(".probe.json.*")) == []
