"""Bad input to the scripts in ``scripts/``: one readable line, a nonzero exit, no JSON written.

The benchmarks themselves take minutes to hours and are not run here; these
tests only check the paths that end a script before any long work.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
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


# -- ablate_learning.py: every variant x seed, resumable ---------------------------------------------------------
ABLATE = ROOT / "scripts" / "ablate_learning.py"
# Two variants with a 256-frame budget (one update of 2 envs x 32 steps x frameskip 4): the curriculum and plain PPO.
ABLATE_ARGS = ["--no-default", "--variant", "cur=--steps 32", "--variant", "ppo=--no-curriculum --steps 32",
               "--seeds", "1", "2", "--frames", "256", "--num-envs", "2", "--episodes", "1", "--eval-max-frames",
               "200", "--protocols", "sticky"]


def _ablate(tmp_path, *args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ABLATE), *map(str, args)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=600, env=env)


def _ablate_runs(report: dict) -> dict:
    return {(v["name"], r["seed"]): r for v in report["variants"] for r in v["runs"]}


def test_ablate_learning_trains_every_run_keeps_the_others_when_one_fails_and_resumes_without_retraining(tmp_path):
    """The real ablation on tiny budgets: 2 variants x 2 seeds trained and evaluated from the game start, one
    JSON and one PNG; a run whose training fails is named with its log while the others are kept; the same
    command then trains only that run, and once more trains nothing and gives the same report."""
    import json

    blocker = tmp_path / "runs" / "ppo" / "seed2" / "checkpoints"  # a file where train makes its directory
    blocker.parent.mkdir(parents=True)
    blocker.write_text("not a directory\n")
    args = [*ABLATE_ARGS, "--out-dir", tmp_path / "runs", "--json", tmp_path / "report.json"]
    first = _ablate(tmp_path, *args)
    assert first.returncode == 1, first.stderr[-2000:]
    log = tmp_path / "runs" / "ppo" / "seed2" / "ablation.log"
    failures = [line for line in first.stderr.splitlines() if "failed" in line]
    assert failures == [f"ablate_learning: ppo seed 2: training failed (exit 2); see {log}"], first.stderr[-2000:]
    assert "Traceback" not in first.stderr and "curriculum-ppo train: error: cannot create" in log.read_text()
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["demo"] == {"path": "demos/MontezumaRevenge-room1.h5", "game": "montezuma_revenge", "frames": 635,
                              "return": 400.0}
    assert report["evaluation"] == {"start": "game", "episodes": 1, "protocols": ["plain", "sticky"],
                                    "max_frames": 200}
    assert [(v["name"], v["flags"], v["curriculum"]) for v in report["variants"]] == [
        ("cur", ["--steps", "32"], True), ("ppo", ["--no-curriculum", "--steps", "32"], False)]
    assert report["cpu"] and report["machine_load"]["cores"] >= 1
    runs = _ablate_runs(report)
    for key in (("cur", 1), ("cur", 2), ("ppo", 1)):
        run = runs[key]
        assert (run["status"], run["stopped_by"], run["frames"]) == ("finished", "frame budget used", 256), key
        assert [(s["frames_before"], s["frames_after"], s["exit_code"]) for s in run["sessions"]] == [(0, 256, 0)]
        assert run["evaluation"]["training_frames"] == 256 and run["evaluation"]["max_frames"] == 200
        assert sorted(run["evaluation"]["protocols"]) == ["plain", "sticky"] and run["eval_episodes"] == 1
        assert run["eval_ge_demo_return"] == 0 and run["frames_to_goal"] is None and run["reached_goal"] is False
    for seed in (1, 2):  # the curriculum started behind the demo's end and has not reached the game start
        assert 0 < runs[("cur", seed)]["final_start_frame"] < 635 and runs[("cur", seed)]["frames_to_start_frame_0"] is None
    assert runs[("ppo", 1)]["final_start_frame"] is None  # plain PPO has no start frame
    failed = runs[("ppo", 2)]
    assert failed["status"] == "failed" and failed["evaluation"] is None and failed["frames"] == 0
    assert failed["stopped_by"].startswith("training failed (exit 2)")
    cur_summary = report["variants"][0]["summary"]
    assert cur_summary["seeds"] == cur_summary["seeds_finished"] == 2 and cur_summary["seeds_reached_goal"] == 0
    assert cur_summary["frames"] == {"median": 256, "min": 256, "max": 256, "n": 2}
    assert cur_summary["frames_to_goal"]["n"] == 0 and report["variants"][1]["summary"]["eval_mean"]["n"] == 1
    assert (tmp_path / "report.png").stat().st_size > 0
    assert [line.split()[:2] for line in first.stdout.splitlines() if line.startswith(("cur ", "ppo "))] == [
        ["cur", "0/2"], ["ppo", "0/2"]]

    blocker.unlink()
    second = _ablate(tmp_path, *args)
    assert second.returncode == 0, second.stderr[-2000:]
    said = [line for line in second.stdout.splitlines() if line.startswith("ablate_learning: ")]
    assert [line.split(": ")[1:3] for line in said] == [["ppo seed 2", "training from 0 frames (log"],
                                                        ["ppo seed 2", "evaluating 1 episodes from the game start (log"]]
    report2 = json.loads((tmp_path / "report.json").read_text())
    runs2 = _ablate_runs(report2)
    assert all(runs2[key] == runs[key] for key in (("cur", 1), ("cur", 2), ("ppo", 1)))
    assert runs2[("ppo", 2)]["status"] == "finished" and runs2[("ppo", 2)]["eval_episodes"] == 1
    assert [s["exit_code"] for s in runs2[("ppo", 2)]["sessions"]] == [2, 0]

    third = _ablate(tmp_path, *args)
    assert third.returncode == 0, third.stderr[-2000:]
    assert not [line for line in third.stdout.splitlines() if line.startswith("ablate_learning: ")]
    assert json.loads((tmp_path / "report.json").read_text())["variants"] == report2["variants"]
    rebuilt = _ablate(tmp_path, *args, "--report-only")
    assert rebuilt.returncode == 0, rebuilt.stderr[-2000:]
    assert json.loads((tmp_path / "report.json").read_text())["variants"] == report2["variants"]


@pytest.mark.parametrize("variant, expected", [
    ("wide=--window x", "ablate_learning: error: variant wide (--window x): argument --window: invalid int value: 'x'"),
    ("wide=--window 128 --no-such-flag", "ablate_learning: error: variant wide (--window 128 --no-such-flag): "
                                         "unrecognized arguments: --no-such-flag"),
    ("seed=--seed 3", "ablate_learning: error: variant seed (--seed 3): --seed is set by ablate_learning for every "
                      "run (its --seeds)"),
    ("slow=--lr -1", "ablate_learning: error: variant slow (--lr -1): --lr must be positive"),
])
def test_ablate_learning_refuses_a_bad_variant_in_one_line_before_any_run_dir(tmp_path, variant, expected):
    import os

    env = {**os.environ, "CURRICULUM_PPO_BENCH_DIR": str(tmp_path / "bench")}
    result = _ablate(tmp_path, "--variant", "fine=--window 128", "--variant", variant, "--frames", "256", env=env)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [expected]
    assert result.stdout == "" and list(tmp_path.iterdir()) == []  # no run dir, not even the default output dir


def test_ablate_learning_reads_from_the_run_dir_whether_a_run_is_finished(tmp_path):
    """Finished = the last session ended by the goal rule, or by a frame or time budget not raised since;
    a run stopped by a signal or a crash is resumed (the files are train's and ablate_learning's own)."""
    import argparse
    import json

    ablate = _load_script("ablate_learning")
    runs = sys.modules["ablation_runs"]
    variant = runs.Variant("cur", ("--steps", "32"), True, {})
    run = runs.Run(variant, 1, tmp_path / "cur" / "seed1")
    budget = argparse.Namespace(frames=256, minutes=30.0, stop_at_success=0.5, num_envs=2)
    demo = runs.DemoInfo(ROOT / "demos" / "MontezumaRevenge-room1.h5", "montezuma_revenge", 635, 400.0)
    assert runs.finished_by(run, budget) is None and "--resume" not in ablate.train_command(run, demo, budget, 30.0)

    (run.dir / "checkpoints").mkdir(parents=True)
    (run.dir / "checkpoints" / "latest.pt").write_bytes(b"")
    (run.dir / "metrics.jsonl").write_text(json.dumps({"frames": 256, "time": 600.0, "start_frame": 500}) + "\n")
    (run.dir / "stop.json").write_text(json.dumps({"frames": 256, "kind": "frames", "reason": "frame budget used"}))

    def last_session(stop, exit_code=0, budget_minutes=30.0):
        (run.dir / runs.SESSIONS_FILE).write_text(json.dumps([{"stop": stop, "exit_code": exit_code,
                                                               "budget_minutes": budget_minutes}]))

    assert runs.finished_by(run, budget) == "frame budget used"  # no sessions of ours: train's stop.json decides
    assert runs.finished_by(run, argparse.Namespace(frames=512, minutes=30.0)) is None  # the budget was raised
    last_session({"frames": 128, "kind": "signal", "reason": "stopped by SIGINT"}, exit_code=130)
    assert runs.finished_by(run, budget) is None
    cmd = ablate.train_command(run, demo, budget, 30 - runs.trained_minutes(run))
    assert cmd[cmd.index("--resume"):] == ["--resume", "--frames", "256", "--minutes", "20.0000",
                                           "--stop-at-success", "0.5"]
    last_session(None, exit_code=1)  # a crash: the stop.json left by an earlier session does not count
    assert runs.finished_by(run, budget) is None
    last_session({"frames": 256, "kind": "time", "reason": "time budget (--minutes) used"}, budget_minutes=30.0)
    assert runs.finished_by(run, argparse.Namespace(frames=10**7, minutes=30.0)) == "time budget used"
    assert runs.finished_by(run, argparse.Namespace(frames=10**7, minutes=60.0)) is None
    last_session({"frames": 256, "kind": "goal", "reason": "55% of the last 40 episodes ..."})
    assert runs.finished_by(run, argparse.Namespace(frames=10**7, minutes=600.0)) == "goal rule met"
    last_session({"frames": 128, "kind": "signal", "reason": "stopped by SIGTERM"}, exit_code=143)
    assert runs.finished_by(run, argparse.Namespace(frames=10**7, minutes=10.0)) == "time budget used"  # 10 trained

    report = _load_script("ablation_report")
    assert report.spread([3, None, 1, 2]) == {"median": 2, "min": 1, "max": 3, "n": 3}
    assert report.spread([None]) == {"median": None, "min": None, "max": None, "n": 0}
    assert [name for name, _ in ablate.requested_variants([("wide", ("--window", "128"))], no_default=False)] == [
        "default", "wide"]


# -- how bench_train.py times a loop ------------------------------------------------------------------------------
def _load_script(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(name, module)
    spec.loader.exec_module(module)
    return module


# A training loop whose parts take known times, reporting to the LoopClock as bench_train's loops do. "overlapped"
# is the Trainer's shape: the update of rollout k runs in a thread while rollout k+1 is collected, and its end is
# noticed at the join after that rollout; the last update runs alone.
FAKE_LOOP = """
import sys, threading, time
sys.path.insert(0, sys.argv[1])
time.sleep(float(sys.argv[3]))  # the process's own start-up (imports), before the loop's clock begins
from bench_common import write_json
from loop_timing import LoopClock

mode, setup, rollout, update = sys.argv[2], *map(float, sys.argv[4:7])
rollouts, steps, out = int(sys.argv[7]), int(sys.argv[8]), sys.argv[9]
clock = LoopClock(steps)
time.sleep(setup)  # envs and network
pending = None
for _ in range(rollouts):
    clock.rollout_started()
    time.sleep(rollout)
    if mode == "sequential":
        time.sleep(update)
        clock.update_finished()
        continue
    if pending is not None:
        pending.join()
        clock.update_finished()
    pending = threading.Thread(target=time.sleep, args=(update,))
    pending.start()
if pending is not None:
    pending.join()
    clock.update_finished()
write_json(out, {"record": clock.finished().to_dict(), "peak_rss_learner_bytes": 0, "peak_rss_workers_bytes": 0})
"""


@pytest.mark.parametrize("mode", ["sequential", "overlapped"])
def test_bench_train_timing_reports_a_loop_of_known_durations_at_its_true_rate(tmp_path, mode):
    """The timing bench_train applies to every contender (``measure_process``: a process timed from start to
    exit, its LoopRecord turned into rates), on a fake loop of sleeps. For the overlapped loop the complete
    cycles from rollout 2 on take (N-1) rollouts + the last update alone; timing it from the first update's end,
    as bench_train once did the Trainer, would report 300 / 0.8 s = 375 instead of 300 / 1.1 s = 273."""
    bench_train = _load_script("bench_train")
    pre, setup, rollout, update, n, steps = 0.4, 0.3, 0.3, 0.2, 4, 100
    script = tmp_path / "fake_loop.py"
    script.write_text(FAKE_LOOP)
    record = tmp_path / "record.json"
    durations = (pre, setup, rollout, update, n, steps)
    argv = [sys.executable, str(script), str(ROOT / "scripts"), mode, *map(str, durations), str(record)]
    m = bench_train.measure_process(argv, record)

    if mode == "sequential":
        cycles_seconds, loop_seconds = (n - 1) * (rollout + update), setup + n * (rollout + update)
    else:
        cycles_seconds, loop_seconds = (n - 1) * rollout + update, setup + n * rollout + update
    assert m["cycles"] == pytest.approx((n - 1) * steps / cycles_seconds, rel=0.08)
    assert m["agent_steps"] == n * steps
    # The whole run includes the process's start-up (the sleep before the clock, plus the interpreter's).
    assert m["seconds"] >= pre + loop_seconds
    assert n * steps / (pre + loop_seconds + 5.0) <= m["whole_run"] <= n * steps / (pre + loop_seconds)
    assert m["setup_seconds"] == pytest.approx(setup, abs=0.1)


def test_loop_record_refuses_a_rollout_that_was_not_trained_on():
    from_scripts = _load_script("loop_timing")
    clock = iter([0.0, 1.0, 2.0, 3.0, 4.0, 5.0])
    timer = from_scripts.LoopClock(10, clock=lambda: next(clock))
    timer.rollout_started()
    timer.update_finished()
    timer.rollout_started()  # its update never finishes
    with pytest.raises(ValueError, match="2 rollouts but 1 updates"):
        timer.finished()


def test_bench_train_refuses_a_failing_contender_in_one_line(tmp_path):
    bench_train = _load_script("bench_train")
    with pytest.raises(bench_train.ContenderFailed, match=r"exit 3: boom"):
        bench_train.measure_process([sys.executable, "-c", "import sys; print('boom', file=sys.stderr); sys.exit(3)"],
                                    tmp_path / "none.json")


# -- busy machine ------------------------------------------------------------------------------------------------
def test_busy_warning_fires_only_above_the_load_the_benchmark_leaves_to_others():
    common = _load_script("bench_common")
    assert common.allowed_other_load(2, 2) == 0.5  # all cores used: only background is fine
    assert common.allowed_other_load(1, 4) == 3.5
    quiet = common.busy_warning("bench_x", (0.4, 0.3, 0.2), 0.45, allowed=0.5, cores_used=2, cores_total=2)
    assert quiet is None
    # A load average left by a run that just ended is no competitor when the run itself measured others.
    assert common.busy_warning("bench_x", (2.02, 1.3, 0.6), 0.002, allowed=0.5, cores_used=2, cores_total=2) is None
    before = common.busy_warning("bench_x", (0.6, 0.3, 0.2), None, allowed=0.5, cores_used=2, cores_total=2)
    assert before.startswith("bench_x: warning: the machine is busy (load average 0.60 before the run;")
    during = common.busy_warning("bench_x", (0.1, 0.1, 0.1), 1.3, allowed=0.5, cores_used=2, cores_total=2)
    assert "other processes used 1.30 cores during it" in during and "load average" not in during
    assert common.busy_warning("bench_x", (3.0, 2.0, 1.0), 1.0, allowed=1.5, cores_used=1, cores_total=2) is None
    one = common.busy_warning("bench_x", (3.0, 2.0, 1.0), 1.6, allowed=1.5, cores_used=1, cores_total=2)
    assert "other processes used 1.60 cores during it;" in one and "load average" not in one
    assert common.busy_warning("bench_x", (0.4, 0.3, 0.2), None, allowed=0.5, cores_used=2, cores_total=2) is None
    assert common.busy_warning("bench_x", None, None, allowed=0.5, cores_used=2, cores_total=2) is None
    for line in (before, during, one):
        assert "\n" not in line


def test_load_check_measures_other_processes_from_the_sources_it_is_given():
    """LoadCheck with its sources given: 10 s of wall time, the machine busy 30 CPU-seconds, this benchmark 18
    of them, so others used 1.2 cores, more than the 0.5 a 2-core benchmark on 2 cores leaves them."""
    import io

    common = _load_script("bench_common")
    loads = iter([(0.2, 0.2, 0.1), (3.1, 1.5, 0.7)])
    busy, own, clock = iter([100.0, 130.0]), iter([5.0, 23.0]), iter([50.0, 60.0])
    check = common.LoadCheck("bench_x", cores_used=2, cores_total=2, read_load=lambda: next(loads),
                             machine_busy=lambda: next(busy), own_cpu=lambda: next(own), clock=lambda: next(clock))
    stream = io.StringIO()
    record = check.start().finish(stream=stream)
    assert record["load_average_before"] == (0.2, 0.2, 0.1) and record["load_average_after"] == (3.1, 1.5, 0.7)
    assert record["other_processes_cores_during"] == pytest.approx(1.2) and record["busy"] is True
    assert stream.getvalue().count("\n") == 1 and "other processes used 1.20 cores" in stream.getvalue()
    # The same run with the benchmark's own CPU time being all of the machine's: quiet, nothing printed.
    busy, own, clock, loads = iter([100.0, 130.0]), iter([0.0, 29.0]), iter([0.0, 10.0]), iter([(0.2,) * 3] * 2)
    quiet = common.LoadCheck("bench_x", cores_used=2, cores_total=2, read_load=lambda: next(loads),
                             machine_busy=lambda: next(busy), own_cpu=lambda: next(own), clock=lambda: next(clock))
    stream = io.StringIO()
    assert quiet.start().finish(stream=stream)["busy"] is False and stream.getvalue() == ""


# -- default runs write under runs/bench, never into scripts/results --------------------------------------------
def _snapshot(directory: Path) -> dict:
    return {str(p.relative_to(directory)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("script, args, outputs", [
    ("toy_scaling", ["--quick", "--actions", "2", "--lengths", "2", "--seeds", "1", "--budget", "1000"],
     ["toy_scaling.json", "toy_scaling.png"]),
    ("bench_demo", ["--quick", "--restores", "50", "--envs", "2", "--start-envs", "2"], ["bench_demo.json"]),
    ("toy_horizon", ["--quick", "--lengths", "8", "--caps", "none", "--seeds", "1", "--budget", "1000"],
     ["toy_horizon.json", "toy_horizon.png"]),
])
def test_a_default_run_writes_under_runs_bench_and_leaves_the_committed_results_alone(tmp_path, script, args,
                                                                                     outputs):
    import json
    import os

    results = ROOT / "scripts" / "results"
    before = _snapshot(results)
    bench = tmp_path / "bench"
    env = {**os.environ, "CURRICULUM_PPO_BENCH_DIR": str(bench)}
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / f"{script}.py"), *args], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(p.name for p in (bench / script).iterdir()) == sorted(outputs)  # no temporary file left over
    report = json.loads((bench / script / outputs[0]).read_text())
    load = report["machine_load"]
    assert len(load["load_average_before"]) == 3 and len(load["load_average_after"]) == 3
    assert load["busy"] == (load["warning"] is not None)
    assert (load["warning"] in result.stderr) if load["busy"] else ("warning" not in result.stderr)
    assert _snapshot(results) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench"]  # nothing in the working directory either
    if script == "bench_demo":
        _check_bench_demo_report(report)


def _check_bench_demo_report(report: dict) -> None:
    """What a quick bench_demo run must have measured: both demos' pools, checked restores and starts."""
    assert report["frames"] == 5_000 and report["recording"]["prefix_frames"] == 635
    assert report["restore"]["wrong_ram"] == 0 and report["restore_shared"]["wrong_ram"] == 0
    for mode in ("gray84", "rgb105x80"):
        start = report["env_start"][mode]
        assert start["cached_checked"] == 50 and start["cached_mismatches"] == 0
        assert start["cached"]["median_ms"] < start["replayed"]["median_ms"]
    run = report["memory"]["runs"][0]
    assert [r["start_cache_size"] for r in report["memory"]["runs"]] == [128]  # --quick: no old-bound comparison
    for label, frames in (("bundled", 635), ("long", 5_000)):
        pool = run[label]
        assert pool["demo_frames"] == frames and pool["envs"] == 2 and pool["cache_entries_per_env"] == 128
        assert len(pool["processes"]) == pool["workers"] + 1  # the pool's process and its workers
        assert pool["total"]["Pss"] == sum(p["Pss"] for p in pool["processes"]) < pool["total"]["Rss"]
        assert run["pss_mb_per_env"][label] == pytest.approx(pool["total"]["Pss"] / 2 / 1e6)
    assert report["startup"]["envs"] == 2 and report["startup"]["long"]["median_total_s"] > 0


def test_bench_demo_process_tree_memory_counts_every_descendant_and_a_shared_mapping_once(tmp_path):
    """``tree_memory`` of a real tree: a process, its child and grandchild map the same 32 MB file and
    touch every page. RSS counts the file in each of the three; PSS once in all, which is what
    bench_demo's per-env figure relies on."""
    bench_demo = _load_script("bench_demo")
    data = tmp_path / "shared.bin"
    data.write_bytes(bytes(range(256)) * (32 * 4096))
    program = f"""
import mmap, os, sys, time
def touch():
    f = open({str(data)!r}, "rb")
    m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    sum(m[i] for i in range(0, len(m), 4096))
    return m
keep = touch()
if os.fork() == 0:
    keep = touch()
    if os.fork() == 0:
        keep = touch()
os.write(1, b"ready\\n")  # one write: the three lines cannot interleave
time.sleep(60)
"""
    proc = subprocess.Popen([sys.executable, "-c", program], stdout=subprocess.PIPE, text=True)
    try:
        for _ in range(3):  # each process says so once its pages are touched
            assert proc.stdout.readline().strip() == "ready"
        tree = bench_demo.tree_memory(proc.pid)
        assert sorted(p["pid"] for p in tree["processes"]) == sorted([proc.pid, *bench_demo.descendants(proc.pid)])
        assert len(tree["processes"]) == 3
        size = data.stat().st_size
        assert all(p["Rss"] >= size for p in tree["processes"])
        assert tree["total"]["Rss"] - tree["total"]["Pss"] >= 1.9 * size  # two of the three copies not in PSS
        assert tree["total"]["Pss"] == sum(p["Pss"] for p in tree["processes"])
    finally:
        for pid in bench_demo.descendants(proc.pid):
            os.kill(pid, signal.SIGKILL)
        proc.kill()
        proc.wait()


def test_bench_demo_long_demo_continues_the_bundled_one_and_is_recorded_once(tmp_path, monkeypatch):
    """The synthetic long demo: the bundled demo's frames first, then play that never rewinds into them,
    no life lost, and it verifies; a second run reuses the file, a changed file is recorded again."""
    from curriculum_ppo.demo.store import load_demo
    from curriculum_ppo.demo.verify import verify_demo

    monkeypatch.setenv("CURRICULUM_PPO_BENCH_DIR", str(tmp_path))
    bench_demo = _load_script("bench_demo")
    path, rec = bench_demo.synthetic_long_demo(800, seed=1, state_interval=10, force=False)
    assert path.parent == tmp_path / "bench_demo_long" and rec["reused"] is False and rec["prefix_frames"] == 635
    demo, bundled = load_demo(path), load_demo(bench_demo.BUNDLED)
    assert len(demo) == 800 and np.array_equal(demo.actions[:635], bundled.actions)
    assert np.array_equal(demo.ram[:636], bundled.ram) and not demo.life_losses()
    assert verify_demo(demo).ok
    stamp = path.stat().st_mtime_ns
    again, rec = bench_demo.synthetic_long_demo(800, seed=1, state_interval=10, force=False)
    assert again == path and rec["reused"] is True and path.stat().st_mtime_ns == stamp
    with open(path, "ab") as f:
        f.write(b"\0")
    _, rec = bench_demo.synthetic_long_demo(800, seed=1, state_interval=10, force=False)
    assert rec["reused"] is False and len(load_demo(path)) == 800


def test_a_figure_that_fails_to_save_leaves_the_old_png_and_no_temporary_file(tmp_path):
    common = _load_script("bench_common")
    png = tmp_path / "plot.png"
    png.write_bytes(b"the old plot")

    class FailingFigure:  # matplotlib's savefig, dying half-way through (a full disk, Ctrl-C)
        def savefig(self, path, format=None, **kwargs):
            assert format == "png"
            Path(path).write_bytes(b"half a PNG")
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        common.save_figure(FailingFigure(), png)
    assert png.read_bytes() == b"the old plot" and [p.name for p in tmp_path.iterdir()] == ["plot.png"]


@pytest.mark.parametrize("script, args", [("toy_scaling", ["--quick"]), ("bench_demo", ["--quick"]),
                                          ("bench_train", ["--device", "cpu"]), ("toy_horizon", ["--quick"])])
def test_an_unusable_default_output_directory_is_one_line_before_any_work(tmp_path, script, args):
    import os

    blocker = tmp_path / "not_a_directory"
    blocker.write_text("a file where the bench root would be\n")
    env = {**os.environ, "CURRICULUM_PPO_BENCH_DIR": str(blocker)}
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / f"{script}.py"), *args], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"{script}: error: cannot create the default output directory {blocker / script}: Not a directory; name an "
        f"output path, or set CURRICULUM_PPO_BENCH_DIR"]
    assert result.stdout == "" and blocker.read_text() == "a file where the bench root would be\n"


def test_bench_dir_defaults_to_the_checkouts_git_ignored_runs_bench(monkeypatch):
    common = _load_script("bench_common")
    monkeypatch.delenv("CURRICULUM_PPO_BENCH_DIR", raising=False)
    assert common.bench_root() == ROOT / "runs" / "bench"
    ignored = subprocess.run(["git", "check-ignore", "-q", "runs/bench/toy_scaling/toy_scaling.json"], cwd=ROOT)
    assert ignored.returncode == 0
