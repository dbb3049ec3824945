#!/usr/bin/env python
"""Does it learn? Curriculum PPO vs. plain PPO on the bundled Montezuma's Revenge room-1 demo.

1. Train with the backward curriculum from ``demos/MontezumaRevenge-room1.h5``
   (the defaults of ``curriculum-ppo train``) within a frame and time budget.
   Record when the start frame first reached 0 and when the curriculum finished
   (the agent ties the demo from the real game start often enough).
2. Evaluate that agent from the **real game start** (no demo): 20 episodes.
3. Baseline: plain PPO from the game start (same network, PPO settings and the
   same number of frames the curriculum run used), evaluated the same way.

Writes JSON (updated every ``--report-every`` seconds while training, so a long
run can be watched) and a PNG (curriculum progress + scores), by default to
``runs/bench/bench_learning/`` with the run dirs (git-ignored, so a run that
spans sessions resumes there); the committed reports in ``scripts/results/``
change only when ``--json`` (and ``--out-dir``) name them. Each session records
the load average before it and what other processes used during it, with a
warning when the machine was busy (the time budgets assume a quiet one).

Usage: python scripts/bench_learning.py [--frames 10000000] [--minutes 60] [--baseline-minutes M]
       [--out-dir RUNS] [--json REPORT.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # also when a test imports this file
from bench_common import LoadCheck, bench_dir, save_figure, usable_cores  # noqa: E402

from curriculum_ppo.atomic import check_destination, write_text_atomic  # noqa: E402
from curriculum_ppo.errors import UserError  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "demos" / "MontezumaRevenge-room1.h5"
RESULTS = ROOT / "scripts" / "results"
OLD_DEFAULT_OUT_DIR = RESULTS / "learning"  # where runs went by default before runs/bench/


def read_rows(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return rows


def curriculum_summary(rows: list[dict]) -> dict:
    reached0 = next((r for r in rows if r.get("start_frame") == 0), None)
    done = next((r for r in rows if r.get("curriculum_done")), None)
    last = rows[-1] if rows else {}
    return {
        "frames": last.get("frames", 0), "seconds": last.get("time", 0.0),
        "final_start_frame": last.get("start_frame"), "lowest_start_frame": min(
            (r["start_frame"] for r in rows if r.get("start_frame") is not None), default=None),
        "frames_to_start_frame_0": reached0["frames"] if reached0 else None,
        "seconds_to_start_frame_0": reached0["time"] if reached0 else None,
        "frames_to_curriculum_done": done["frames"] if done else None,
        "seconds_to_curriculum_done": done["time"] if done else None,
        "start_frame_history": [(r["frames"], r["start_frame"]) for r in rows if r.get("curriculum_move")],
        "best_score": last.get("best_score"),
    }


def cpu_model() -> str:
    """The CPU's name (platform.platform() gives only the kernel), for the report's machine line."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def read_previous_report(json_path: Path) -> dict:
    """The report an earlier invocation wrote ({} if there is none or it is unreadable)."""
    try:
        old = json.loads(json_path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return old if isinstance(old, dict) else {}


def previous_sessions(old: dict, run_dir: Path) -> list[dict]:
    """Earlier invocations that trained the run this one resumes (a 10M-frame run on 2 cores spans sessions).

    Read from the previous report ``old``; a report from before this field existed gives its own date and command.
    """
    if not run_dir.joinpath("checkpoints", "latest.pt").exists() or not old:
        return []
    if isinstance(old.get("sessions"), list):
        return old["sessions"]
    return [{"date": old.get("date"), "command": old.get("command"), "frames_before": None,
             "frames_after": (old.get("curriculum") or {}).get("frames")}]


def stopped_by(last_row: dict, budget_frames: int, budget_seconds: float, seconds: float,
               stop_at_success: float | None, rc: int, signalled: bool, record: dict | None = None) -> str:
    """Why the curriculum run's training ended, in words a reader of the JSON needs.

    ``record`` is train's own account (``RUN/stop.json``: kind frames, time, goal or signal), used
    when this invocation's training wrote one. Without it (a training that crashed, or an older
    version of train) the reason is inferred from the exit code, the last metrics row and
    ``seconds``, how long the training process ran (start-up included, so a goal-rule stop in the
    last seconds of --minutes reads as the time budget).
    """
    if signalled:
        return f"interrupted by a signal (exit {rc}); run the same command to continue from the last checkpoint"
    if rc != 0:
        return f"training failed (exit {rc}); its last checkpoint is kept, see its output for the cause"
    time_budget = "time budget of this session (--minutes); run the same command to continue"
    if record:
        kind = record.get("kind")
        if kind == "goal":
            return f"goal rule met (--stop-at-success {stop_at_success:g}: {record.get('reason')})"
        if kind in ("frames", "time"):
            return "frame budget used" if kind == "frames" else time_budget
    if last_row.get("frames", 0) >= budget_frames:
        return "frame budget used"
    if seconds >= budget_seconds:
        return time_budget
    rate = last_row.get("from_start_success_rate")
    if stop_at_success and last_row.get("start_frame") == 0 and rate is not None and rate >= stop_at_success:
        return (f"goal rule met (--stop-at-success {stop_at_success:g}: {rate:.0%} of the last 20-100 "
                f"game-start episodes tied or beat the demo)")
    return "ended before its budgets for a reason the metrics do not show; see the training's output"


def train(run_dir: Path, args, extra: list[str], minutes: float, frames: int,
          runtime: list[str] = ()) -> tuple[int, bool, float]:
    cmd = [sys.executable, "-m", "curriculum_ppo", "train", "--run-dir", str(run_dir), "--frames", str(frames),
           "--minutes", str(minutes), "--status-every", "60", *runtime]
    if run_dir.joinpath("checkpoints", "latest.pt").exists():
        cmd.append("--resume")  # the run keeps the settings it started with (demo, --num-envs, ...)
    else:
        cmd += extra + (["--num-envs", str(args.num_envs)] if args.num_envs else []) + ["--seed", str(args.seed)]
    print("$", " ".join(cmd), flush=True)
    return run_training(cmd)


def check_seed(run_dir: Path, seed: int) -> None:
    """Refuse to resume another seed's run: its report would carry the wrong seed."""
    try:
        saved = int(json.loads(run_dir.joinpath("config.json").read_text())["seed"])
    except (OSError, ValueError, KeyError, TypeError):
        return  # no earlier run (or train itself will say what is wrong with it)
    if saved != seed:
        raise UserError(f"{run_dir} holds a run with seed {saved}, not --seed {seed}; give each seed its own "
                        f"--out-dir and --json")


def run_training(cmd: list[str], log=None, who: str = "bench_learning") -> tuple[int, bool, float]:
    """Run ``curriculum-ppo train``: (exit code, whether a signal here stopped it, seconds it ran).

    Ctrl-C, SIGTERM or SIGHUP here stops it cleanly.
    The child runs in its own session so that a terminal's Ctrl-C reaches it exactly once, from
    here: it then finishes its update, saves a checkpoint and exits 130 (a second SIGINT while it
    saves could interrupt the save). Waiting for it instead of killing it keeps that checkpoint.
    ``log``: an open file that gets the child's stdout and stderr (default: this process's);
    ``who`` names the script in the line said on stopping.
    """
    started = time.monotonic()
    output = {} if log is None else {"stdout": log, "stderr": subprocess.STDOUT}
    proc = subprocess.Popen(cmd, start_new_session=True, **output)
    forwarded = False
    while True:
        try:
            rc = proc.wait()
            return rc, forwarded, time.monotonic() - started
        except KeyboardInterrupt:
            if not forwarded:
                forwarded = True
                proc.send_signal(signal.SIGINT)
                print(f"{who}: stopping: the training saves a checkpoint first", file=sys.stderr, flush=True)


def exit_after_training(what: str, rc: int, signalled: bool, hint: str) -> None:
    """One line on stderr and exit 130 (a signal stopped it) or 1 (it failed)."""
    print(f"bench_learning: {what} {'stopped' if signalled else 'failed'} (exit {rc}){hint}", file=sys.stderr)
    sys.exit(130 if signalled else 1)


def _sigterm_as_interrupt(signum, frame):
    raise KeyboardInterrupt


def install_stop_signals() -> None:
    """SIGINT, SIGTERM and SIGHUP raise KeyboardInterrupt here, which :func:`run_training` forwards to the child.

    The training child runs in its own session: a closed terminal would not reach it, so SIGTERM and
    SIGHUP stop it cleanly, as Ctrl-C does. A shell starts background jobs of a script (`cmd &`) with
    SIGINT ignored, and Python then installs no KeyboardInterrupt handler: `kill -INT` would be lost,
    so SIGINT is said explicitly to stop it cleanly. Under nohup (SIGHUP ignored) closing the terminal
    must not stop it.
    """
    signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:
        signal.signal(signal.SIGHUP, _sigterm_as_interrupt)


EVAL_MAX_FRAMES = 4500
"""Episode cap of the evaluation from the game start, in emulator frames (about 7x the room-1 demo)."""


def evaluation_command(run_dir: Path, episodes: int, out: Path, protocols: tuple[str, ...] = ("plain",),
                       max_frames: int = EVAL_MAX_FRAMES) -> list[str]:
    """``curriculum-ppo evaluate`` of the run's last checkpoint from the game start, its JSON written to ``out``."""
    return [sys.executable, "-m", "curriculum_ppo", "evaluate", "--checkpoint",
            str(run_dir / "checkpoints" / "latest.pt"), "--episodes", str(episodes), "--protocol", *protocols,
            "--max-frames", str(max_frames), "--json", str(out), "--progress-every", "30"]


def evaluate(run_dir: Path, episodes: int, out: Path) -> dict:
    cmd = evaluation_command(run_dir, episodes, out)
    print("$", " ".join(cmd), flush=True)
    rc = subprocess.call(cmd)
    if rc != 0:
        raise SystemExit(f"bench_learning: evaluating {run_dir} failed (exit {rc}); the run dir is kept")
    return scores_from(json.loads(out.read_text()))


def scores_from(evaluation: dict) -> dict:
    """The report's summary of an ``evaluate --json`` file: its first protocol's episode scores."""
    row = evaluation["protocols"][0] if "protocols" in evaluation else evaluation["results"][0]
    scores = row.get("scores") or [e["score"] for e in row.get("episodes", [])]
    return {"episodes": len(scores), "scores": scores}


def read_stop_record(run_dir: Path, since: float) -> dict | None:
    """train's own account of why it stopped (``RUN/stop.json``), if this invocation's training wrote it."""
    path = run_dir / "stop.json"
    try:
        if path.stat().st_mtime < since:
            return None  # an earlier session's
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def eval_is_current(path: Path, frames: int) -> bool:
    """Whether the evaluation file exists and evaluated the checkpoint at ``frames`` (not an earlier one)."""
    try:
        return json.loads(path.read_text()).get("training_frames") == frames
    except (OSError, json.JSONDecodeError, AttributeError):
        return False


def add_evaluation(report: dict, key: str, out_dir: Path, eval_path: Path, args, demo_return: float) -> None:
    """Evaluate run ``key`` from the game start (reusing a current evaluation) and put its scores in the report.

    --report-only evaluates nothing: without a current evaluation the run is reported without one.
    """
    run = report.setdefault(key, {})
    frames = run.get("frames", 0)
    if eval_is_current(eval_path, frames):
        run["eval_from_game_start"] = scores_from(json.loads(eval_path.read_text()))
    elif args.report_only:
        print(f"bench_learning: no evaluation of the {key} run at its {frames:,} frames in {eval_path}; "
              f"run without --report-only to evaluate it", file=sys.stderr)
        return
    else:
        run["eval_from_game_start"] = evaluate(out_dir / key, args.episodes, eval_path)
    scores = run["eval_from_game_start"]["scores"]
    run["fraction_ge_demo_return"] = sum(s >= demo_return for s in scores) / max(1, len(scores))
    run["mean_score"] = sum(scores) / max(1, len(scores))
    if key == "curriculum":
        run["goal_met"] = bool(run.get("frames_to_start_frame_0") is not None
                               and run["fraction_ge_demo_return"] >= 0.5 and frames <= 10_000_000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=10_000_000)
    parser.add_argument("--minutes", type=float, default=60.0, help="training time budget of the curriculum run")
    parser.add_argument("--baseline-minutes", type=float, default=None,
                        help="time budget of the plain-PPO baseline (default: same as the curriculum run used)")
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--stop-at-success", type=float, default=0.5,
                        help="end the curriculum run early once the curriculum reached the game start and this "
                             "fraction of its recent game-start episodes beat the demo (the goal's 50%%)")
    parser.add_argument("--num-envs", type=int, default=None)
    parser.add_argument("--seed", type=int, default=1,
                        help="training seed of both runs (train's default is 1); give each seed its own --out-dir "
                             "and --json")
    parser.add_argument("--out-dir", default=None,
                        help="run dirs and evaluations (default runs/bench/bench_learning/)")
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--report-only", action="store_true",
                        help="train and evaluate nothing: rebuild the JSON/PNG from the run dirs and their "
                             "evaluations (one that predates the run's last checkpoint is left out)")
    parser.add_argument("--reuse-curriculum", action="store_true",
                        help="do not train the curriculum run again: reuse its run dir, and its evaluation if "
                             "that evaluated the last checkpoint (to run the baseline later, e.g. after "
                             "benchmarks that need a quiet machine)")
    parser.add_argument("--report-every", type=float, default=60.0)
    parser.add_argument("--json", default=None,
                        help="report path (default runs/bench/bench_learning/bench_learning.json); the PNG goes "
                             "next to it with the same name")
    args = parser.parse_args()
    try:
        if args.out_dir is None:
            args.out_dir = str(bench_dir("bench_learning"))
            old = OLD_DEFAULT_OUT_DIR / "curriculum" / "checkpoints" / "latest.pt"
            if old.exists() and not Path(args.out_dir, "curriculum", "checkpoints", "latest.pt").exists():
                print(f"bench_learning: note: {OLD_DEFAULT_OUT_DIR} holds an earlier run (the old default); to resume "
                      f"it, give --out-dir {OLD_DEFAULT_OUT_DIR} and its --json", file=sys.stderr)
        if args.json is None:
            args.json = str(bench_dir("bench_learning") / "bench_learning.json")
    except UserError as exc:
        raise SystemExit(f"bench_learning: {exc}")
    install_stop_signals()
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = Path(args.json)
    png_path = json_path.with_suffix(".png")
    try:  # before hours of training, not after
        check_destination(json_path, "--json")
        check_destination(png_path, "--json's PNG")
        if not (args.reuse_curriculum or args.report_only):
            check_seed(out_dir / "curriculum", args.seed)
        if not args.skip_baseline:
            check_seed(out_dir / "baseline", args.seed)
    except UserError as exc:
        raise SystemExit(f"bench_learning: {exc}")
    demo_return = 400.0
    date = datetime.now(timezone.utc).isoformat(timespec="seconds")
    command = " ".join(sys.argv)
    report = {"date": date, "machine": platform.platform(), "cpu": cpu_model(),
              "cpus": os.cpu_count(), "command": command, "demo": str(DEMO.relative_to(ROOT)),
              "demo_return": demo_return, "budget_frames": args.frames, "budget_minutes": args.minutes,
              "seed": args.seed}
    old_report = read_previous_report(json_path)
    report["sessions"] = previous_sessions(old_report, out_dir / "curriculum")
    # kept when this invocation trains nothing (--reuse-curriculum / --report-only)
    carried_stop = (old_report.get("curriculum") or {}).get("stopped_by")
    lock = threading.Lock()  # the reporter thread and the main thread both write the report

    def write():
        with lock:
            _write()

    def _write():
        # Update in place: the main thread holds references to these dicts (no lost writes).
        report.setdefault("curriculum", {}).update(curriculum_summary(read_rows(out_dir / "curriculum")))
        if not args.skip_baseline:
            rows = read_rows(out_dir / "baseline")
            report.setdefault("baseline", {}).update({"frames": rows[-1]["frames"] if rows else 0,
                                                      "seconds": rows[-1]["time"] if rows else 0.0,
                                                      "best_score": rows[-1].get("best_score") if rows else None})
        write_text_atomic(json_path, json.dumps(report, indent=2))

    stop = threading.Event()

    def reporter():
        while not stop.wait(args.report_every):
            try:
                write()
            except RuntimeError:  # the main thread changed the report mid-dump; the next tick catches up
                pass
    threading.Thread(target=reporter, daemon=True).start()

    base_eval = out_dir / "baseline_eval.json"
    cur_eval = out_dir / "curriculum_eval.json"
    if args.report_only:
        args.reuse_curriculum = True
    rc, signalled = 0, False
    load = LoadCheck("bench_learning", cores_used=usable_cores()).start()
    session = None
    if not args.reuse_curriculum:
        before = curriculum_summary(read_rows(out_dir / "curriculum"))["frames"]
        session = {"date": date, "command": command, "frames_before": before}
        with lock:
            report["sessions"].append(session)
        started = time.time()
        rc, signalled, seconds = train(out_dir / "curriculum", args, ["--demo", str(DEMO)], args.minutes,
                                       args.frames, runtime=["--stop-at-success", str(args.stop_at_success)])
        write()
        with lock:
            session["frames_after"] = report["curriculum"]["frames"]
            session["machine_load"] = load.finish()  # the training's time budget assumes a quiet machine
            last = (read_rows(out_dir / "curriculum") or [{}])[-1]
            record = read_stop_record(out_dir / "curriculum", since=started)
            report["curriculum"]["stopped_by"] = stopped_by(last, args.frames, args.minutes * 60, seconds,
                                                            args.stop_at_success, rc, signalled, record)
    elif carried_stop:  # --reuse-curriculum / --report-only: the reason is the last training session's
        write()
        report["curriculum"]["stopped_by"] = carried_stop
    write()
    if rc != 0 or signalled:
        stop.set()
        exit_after_training("training", rc, signalled, f" at {report['curriculum']['frames']:,} frames; {json_path} "
                            f"is up to date; run the same command to continue (not evaluated)")
    cur = report["curriculum"]
    add_evaluation(report, "curriculum", out_dir, cur_eval, args, demo_return)
    if not args.skip_baseline:
        if not args.report_only:
            minutes = args.baseline_minutes or max(1.0, cur["seconds"] / 60)
            rc, signalled, _ = train(out_dir / "baseline", args, ["--no-curriculum"], minutes, max(cur["frames"], 1))
            if rc != 0 or signalled:
                write()
                stop.set()
                exit_after_training("the baseline's training", rc, signalled, "; run with --reuse-curriculum to train "
                                    "it on from its checkpoint (not evaluated)")
        write()
        add_evaluation(report, "baseline", out_dir, base_eval, args, demo_return)
    stop.set()
    with lock:  # after the reporter's last write
        warned = bool(session and (session.get("machine_load") or {}).get("busy"))
        report["machine_load"] = load.finish(warn=not warned)  # the whole invocation, evaluations included
        write_text_atomic(json_path, json.dumps(report, indent=2))
    plot(out_dir, png_path, report)
    print_table(report)
    print(f"wrote {json_path} and {png_path}")


def plot(out_dir: Path, png_path: Path, report: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    rows = read_rows(out_dir / "curriculum")
    a1.step([r["frames"] / 1e6 for r in rows], [r["start_frame"] for r in rows], where="post")
    a1.set_xlabel("frames (M)"), a1.set_ylabel("start frame in the demo"), a1.set_title("curriculum progress")
    a1.grid(alpha=0.3)
    for key, label in (("curriculum", "curriculum PPO"), ("baseline", "plain PPO")):
        rows = read_rows(out_dir / key)
        xs = [r["frames"] / 1e6 for r in rows if r.get("score_from_start_mean") is not None]
        ys = [r["score_from_start_mean"] for r in rows if r.get("score_from_start_mean") is not None]
        if xs:
            a2.plot(xs, ys, label=f"{label}: episodes from the game start")
        if key == "curriculum":
            pts = [(r["frames"] / 1e6, r["score_mean"]) for r in rows if r.get("score_mean") is not None]
            if pts:
                a2.plot(*zip(*pts), alpha=0.6, label="curriculum PPO: episodes from demo starts")
    a2.axhline(report["demo_return"], color="gray", ls="--", label="demo return")
    a2.set_xlabel("frames (M)"), a2.set_ylabel("mean raw score since the start (last 100 episodes)"), a2.legend(), a2.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, png_path, dpi=100)
    plt.close(fig)


def print_table(report: dict) -> None:
    print(f"{'run':<12} {'frames':>10} {'minutes':>8} {'start frame':>12} {'eval mean':>10} {'>= demo':>8}")
    for key in ("curriculum", "baseline"):
        r = report.get(key)
        if not r:
            continue
        print(f"{key:<12} {r.get('frames', 0):>10} {r.get('seconds', 0) / 60 if 'seconds' in r else float('nan'):>8.1f} "
              f"{str(r.get('final_start_frame', '-')):>12} {r.get('mean_score', float('nan')):>10.1f} "
              f"{r.get('fraction_ge_demo_return', float('nan')):>8.0%}")
    cur = report.get("curriculum") or {}
    if cur.get("stopped_by"):
        print(f"curriculum run stopped by: {cur['stopped_by']}; goal met: {cur.get('goal_met')}")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:  # outside training (e.g. evaluating): nothing half-written, the run dirs are kept
        print("bench_learning: interrupted; run the same command to continue", file=sys.stderr)
        sys.exit(130)
