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


@pytest.mark.parametrize("args", [["--rounds", "0"], ["--updates", "0"], ["--spin-us", "-1"]])
def test_bench_train_refuses_bad_counts_before_any_work(tmp_path, args):
    out = tmp_path / "train.json"
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_train.py"), *args, "--json", str(out)],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "bench_train.py: error:" in result.stderr.strip().splitlines()[-1]
    assert "Traceback" not in result.stderr
    assert not out.exists()


BENCH_LEARNING = ROOT / "scripts" / "bench_learning.py"


def _bench_learning(tmp_path, *args, **kwargs):
    cmd = [sys.executable, str(BENCH_LEARNING), "--num-envs", "2", "--skip-baseline", "--report-every", "1",
           "--out-dir", tmp_path / "runs", "--json", tmp_path / "report.json", *args]
    return subprocess.Popen(list(map(str, cmd)), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, **kwargs)


def test_bench_learning_tiny_run_then_resume_keeps_the_session_history(tmp_path):
    """The real benchmark with a tiny budget: train, evaluate from the game start, report; then a second
    invocation resumes the same run (a 10M-frame run on 2 cores spans sessions) and the report says so."""
    import json

    first = _bench_learning(tmp_path, "--frames", "2048", "--episodes", "2")
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err[-2000:]
    report = json.loads((tmp_path / "report.json").read_text())
    cur = report["curriculum"]
    assert cur["frames"] >= 2048 and cur["stopped_by"] == "frame budget used"
    assert len(cur["eval_from_game_start"]["scores"]) == 2 and cur["goal_met"] is False
    assert [(s["frames_before"], s["frames_after"]) for s in report["sessions"]] == [(0, cur["frames"])]
    assert report["cpu"] and report["cpus"] >= 1
    assert (tmp_path / "report.png").stat().st_size > 0
    assert "stopped by: frame budget used" in out

    second = _bench_learning(tmp_path, "--frames", "4096", "--episodes", "2")
    out, err = second.communicate(timeout=300)
    assert second.returncode == 0, err[-2000:]
    assert "--resume" in out  # the same run dir trained on
    report2 = json.loads((tmp_path / "report.json").read_text())
    sessions = report2["sessions"]
    assert len(sessions) == 2 and sessions[0] == report["sessions"][0]
    assert sessions[1]["frames_before"] == cur["frames"] < sessions[1]["frames_after"] == report2["curriculum"]["frames"]
    assert report2["seed"] == 1

    before = (tmp_path / "report.json").read_bytes()
    other_seed = _bench_learning(tmp_path, "--frames", "8192", "--episodes", "2", "--seed", "7")
    out, err = other_seed.communicate(timeout=120)
    assert other_seed.returncode != 0 and "holds a run with seed 1, not --seed 7" in err
    assert len(err.strip().splitlines()) == 1 and (tmp_path / "report.json").read_bytes() == before


def test_bench_learning_interrupted_keeps_checkpoint_and_report(tmp_path):
    """Ctrl-C in a terminal (SIGINT to the script's process group): the training saves its checkpoint,
    nothing is evaluated, the report says how it stopped, one line on stderr, exit 130."""
    import json
    import os
    import signal
    import time

    # SIGINT ignored at the start, as in a background job of a shell script (`.ci/run &`): the script must
    # still handle it.
    proc = _bench_learning(tmp_path, "--frames", "10000000", "--minutes", "5", start_new_session=True,
                           preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        metrics = tmp_path / "runs" / "curriculum" / "metrics.jsonl"
        deadline = time.time() + 240
        while time.time() < deadline and not (metrics.exists() and metrics.read_text().count("\n") >= 2):
            assert proc.poll() is None, proc.communicate()[1][-2000:]
            time.sleep(0.5)
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == 130, err[-1000:]
    assert err.strip().splitlines()[-1].startswith("bench_learning: training stopped (exit 130)"), err[-1000:]
    assert "Traceback" not in err
    assert (tmp_path / "runs" / "curriculum" / "checkpoints" / "latest.pt").exists()
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["curriculum"]["stopped_by"].startswith("interrupted by a signal (exit 130)")
    assert "eval_from_game_start" not in report["curriculum"]
    assert not (tmp_path / "runs" / "curriculum_eval.json").exists()


def test_bench_learning_refuses_an_unwritable_report_before_training(tmp_path):
    proc = _bench_learning(tmp_path, "--frames", "2048", "--json", tmp_path / "missing" / "report.json")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert err.strip().splitlines() == [f"bench_learning: cannot write --json {tmp_path / 'missing' / 'report.json'}: "
                                        f"directory {tmp_path / 'missing'} does not exist"]
    assert not (tmp_path / "runs" / "curriculum").exists()


def _load_bench_learning():
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_learning", BENCH_LEARNING)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_bench_learning_stopped_by_names_the_reason():
    bench = _load_bench_learning()
    row = {"frames": 5_000_000, "start_frame": 0, "from_start_success_rate": 0.55}

    def why(row, seconds=100.0, goal=0.5, rc=0, signalled=False, record=None):
        return bench.stopped_by(row, 10_000_000, 3600.0, seconds, goal, rc, signalled, record)

    assert why(row, rc=130, signalled=True).startswith("interrupted by a signal (exit 130)")
    assert why(row, rc=1).startswith("training failed (exit 1)")  # a crash is not called an interruption
    assert why({**row, "frames": 10_000_000}) == "frame budget used"
    assert why(row, seconds=3600.5).startswith("time budget of this session")
    assert why(row).startswith("goal rule met (--stop-at-success 0.5: 55%")
    for not_yet in ({**row, "start_frame": 27}, {**row, "from_start_success_rate": 0.4},
                    {**row, "from_start_success_rate": None}):
        assert why(not_yet).startswith("ended before its budgets"), not_yet
    assert why(row, goal=None).startswith("ended before its budgets")  # goal rule off
    # train's own account (RUN/stop.json) wins over inference: a goal stop at the end of --minutes
    goal = {"kind": "goal", "reason": "50% of the last 42 episodes from the game start beat the demo"}
    assert why(row, seconds=3650.0, record=goal) == ("goal rule met (--stop-at-success 0.5: 50% of the last 42 "
                                                     "episodes from the game start beat the demo)")
    assert why({**row, "from_start_success_rate": 0.9}, record={"kind": "time"}).startswith("time budget")
    assert why(row, record={"kind": "frames"}) == "frame budget used"
    assert why(row, rc=1, record=goal).startswith("training failed")  # a stale record does not hide a crash


def test_bench_learning_reuses_only_an_evaluation_of_the_last_checkpoint(tmp_path):
    import json

    bench = _load_bench_learning()
    path = tmp_path / "eval.json"
    assert not bench.eval_is_current(path, 2048)  # missing
    path.write_text("{not json")
    assert not bench.eval_is_current(path, 2048)
    path.write_text(json.dumps({"training_frames": 2048, "protocols": []}))
    assert bench.eval_is_current(path, 2048) and not bench.eval_is_current(path, 4096)
