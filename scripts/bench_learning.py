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
run can be watched) and a PNG (curriculum progress + scores).

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

from curriculum_ppo.atomic import check_destination, write_text_atomic
from curriculum_ppo.errors import UserError

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "demos" / "MontezumaRevenge-room1.h5"
RESULTS = ROOT / "scripts" / "results"


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


def previous_sessions(json_path: Path, run_dir: Path) -> list[dict]:
    """Earlier invocations that trained the run this one resumes (a 10M-frame run on 2 cores spans sessions).

    Read from the previous report; a report from before this field existed gives its own date and command.
    """
    if not run_dir.joinpath("checkpoints", "latest.pt").exists() or not json_path.exists():
        return []
    try:
        old = json.loads(json_path.read_text())
    except (OSError, json.JSONDecodeError):
        return []
    if isinstance(old.get("sessions"), list):
        return old["sessions"]
    return [{"date": old.get("date"), "command": old.get("command"), "frames_before": None,
             "frames_after": (old.get("curriculum") or {}).get("frames")}]


def previous_stopped_by(json_path: Path) -> str | None:
    """The previous report's reason for the end of training, kept when this invocation trains nothing."""
    try:
        return (json.loads(json_path.read_text()).get("curriculum") or {}).get("stopped_by")
    except (OSError, json.JSONDecodeError, AttributeError):
        return None


def stopped_by(last_row: dict, budget_frames: int, budget_seconds: float, seconds: float,
               stop_at_success: float | None, rc: int, signalled: bool) -> str:
    """Why the curriculum run's training ended, in words a reader of the JSON needs.

    ``last_row`` is the run's last metrics row and ``seconds`` how long this invocation's training
    process ran. train stops early for its goal rule (``--stop-at-success``) only once 20 or more
    recent game-start episodes were judged; a run that ended before both budgets with exit 0 and a
    qualifying ``from_start_success_rate`` in its last row stopped for that rule.
    """
    if signalled:
        return f"interrupted by a signal (exit {rc}); run the same command to continue from the last checkpoint"
    if rc != 0:
        return f"training failed (exit {rc}); its last checkpoint is kept, see its output for the cause"
    if last_row.get("frames", 0) >= budget_frames:
        return "frame budget used"
    if seconds >= budget_seconds:
        return "time budget of this session (--minutes); run the same command to continue"
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
        cmd += extra + (["--num-envs", str(args.num_envs)] if args.num_envs else [])
    print("$", " ".join(cmd), flush=True)
    return run_training(cmd)


def run_training(cmd: list[str]) -> tuple[int, bool, float]:
    """Run ``curriculum-ppo train``: (exit code, whether a signal here stopped it, seconds it ran).

    Ctrl-C, SIGTERM or SIGHUP here stops it cleanly.
    The child runs in its own session so that a terminal's Ctrl-C reaches it exactly once, from
    here: it then finishes its update, saves a checkpoint and exits 130 (a second SIGINT while it
    saves could interrupt the save). Waiting for it instead of killing it keeps that checkpoint.
    """
    started = time.monotonic()
    proc = subprocess.Popen(cmd, start_new_session=True)
    forwarded = False
    while True:
        try:
            rc = proc.wait()
            return rc, forwarded, time.monotonic() - started
        except KeyboardInterrupt:
            if not forwarded:
                forwarded = True
                proc.send_signal(signal.SIGINT)
                print("bench_learning: stopping: the training saves a checkpoint first", file=sys.stderr, flush=True)


def _sigterm_as_interrupt(signum, frame):
    raise KeyboardInterrupt


def evaluate(run_dir: Path, episodes: int, out: Path) -> dict:
    cmd = [sys.executable, "-m", "curriculum_ppo", "evaluate", "--checkpoint", str(run_dir / "checkpoints" / "latest.pt"),
           "--episodes", str(episodes), "--protocol", "plain", "--max-frames", "4500", "--json", str(out),
           "--progress-every", "30"]
    print("$", " ".join(cmd), flush=True)
    rc = subprocess.call(cmd)
    if rc != 0:
        raise SystemExit(f"bench_learning: evaluating {run_dir} failed (exit {rc}); the run dir is kept")
    data = json.loads(out.read_text())
    row = data["protocols"][0] if "protocols" in data else data["results"][0]
    scores = row.get("scores") or [e["score"] for e in row.get("episodes", [])]
    return {"episodes": len(scores), "scores": scores}


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
    parser.add_argument("--out-dir", default=str(RESULTS / "learning"))
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--report-only", action="store_true",
                        help="train and evaluate nothing: rebuild the JSON/PNG from the run dirs and evaluations")
    parser.add_argument("--reuse-curriculum", action="store_true",
                        help="do not train the curriculum run again: reuse its run dir and evaluation "
                             "(to run the baseline later, e.g. after benchmarks that need a quiet machine)")
    parser.add_argument("--report-every", type=float, default=60.0)
    parser.add_argument("--json", default=str(RESULTS / "bench_learning.json"),
                        help="report path; the PNG goes next to it with the same name")
    args = parser.parse_args()
    # Stop the training child cleanly, as Ctrl-C does (it runs in its own session: a closed terminal
    # would not reach it).
    signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    signal.signal(signal.SIGHUP, _sigterm_as_interrupt)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = Path(args.json)
    png_path = json_path.with_suffix(".png")
    try:  # before hours of training, not after
        check_destination(json_path, "--json")
        check_destination(png_path, "--json's PNG")
    except UserError as exc:
        raise SystemExit(f"bench_learning: {exc}")
    demo_return = 400.0
    date = datetime.now(timezone.utc).isoformat(timespec="seconds")
    command = " ".join(sys.argv)
    report = {"date": date, "machine": platform.platform(), "cpu": cpu_model(),
              "cpus": os.cpu_count(), "command": command, "demo": str(DEMO.relative_to(ROOT)),
              "demo_return": demo_return, "budget_frames": args.frames, "budget_minutes": args.minutes}
    report["sessions"] = previous_sessions(json_path, out_dir / "curriculum")
    carried_stop = previous_stopped_by(json_path)
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
    if not (args.reuse_curriculum and cur_eval.exists()):
        before = curriculum_summary(read_rows(out_dir / "curriculum"))["frames"]
        with lock:
            report["sessions"].append({"date": date, "command": command, "frames_before": before})
        rc, signalled, seconds = train(out_dir / "curriculum", args, ["--demo", str(DEMO)], args.minutes,
                                       args.frames, runtime=["--stop-at-success", str(args.stop_at_success)])
        write()
        with lock:
            report["sessions"][-1]["frames_after"] = report["curriculum"]["frames"]
            last = (read_rows(out_dir / "curriculum") or [{}])[-1]
            report["curriculum"]["stopped_by"] = stopped_by(last, args.frames, args.minutes * 60, seconds,
                                                            args.stop_at_success, rc, signalled)
    elif carried_stop:  # --reuse-curriculum / --report-only: the reason is the last training session's
        write()
        report["curriculum"]["stopped_by"] = carried_stop
    write()
    if rc != 0:
        stop.set()
        print(f"bench_learning: training {'stopped' if signalled else 'failed'} (exit {rc}) at "
              f"{report['curriculum']['frames']:,} frames; {json_path} is up to date; run the same command "
              f"to continue (not evaluated)", file=sys.stderr)
        sys.exit(130 if signalled else 1)
    cur = report["curriculum"]
    if args.reuse_curriculum and cur_eval.exists():
        row = json.loads(cur_eval.read_text())["protocols"][0]
        cur["eval_from_game_start"] = {"episodes": len(row["scores"]), "scores": row["scores"]}
    else:
        cur["eval_from_game_start"] = evaluate(out_dir / "curriculum", args.episodes, cur_eval)
    if args.report_only and base_eval.exists():
        write()
        row = json.loads(base_eval.read_text())["protocols"][0]
        report["baseline"]["eval_from_game_start"] = {"episodes": len(row["scores"]), "scores": row["scores"]}
    elif not args.skip_baseline:
        minutes = args.baseline_minutes or max(1.0, cur["seconds"] / 60)
        rc, signalled, _ = train(out_dir / "baseline", args, ["--no-curriculum"], minutes, max(cur["frames"], 1))
        if rc != 0:
            write()
            stop.set()
            print(f"bench_learning: the baseline's training {'stopped' if signalled else 'failed'} (exit {rc}); "
                  f"run with --reuse-curriculum to train it on from its checkpoint (not evaluated)", file=sys.stderr)
            sys.exit(130 if signalled else 1)
        write()
        report["baseline"]["eval_from_game_start"] = evaluate(out_dir / "baseline", args.episodes,
                                                              out_dir / "baseline_eval.json")
    stop.set()
    for key in ("curriculum", "baseline"):
        if key in report and "eval_from_game_start" in report[key]:
            scores = report[key]["eval_from_game_start"]["scores"]
            report[key]["fraction_ge_demo_return"] = sum(s >= demo_return for s in scores) / max(1, len(scores))
            report[key]["mean_score"] = sum(scores) / max(1, len(scores))
    cur["goal_met"] = bool(cur.get("frames_to_start_frame_0") is not None
                           and cur.get("fraction_ge_demo_return", 0) >= 0.5 and cur["frames"] <= 10_000_000)
    with lock:  # after the reporter's last write
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
    fig.savefig(png_path, dpi=100)


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
