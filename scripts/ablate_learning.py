#!/usr/bin/env python
"""Which settings learn a demo in fewer frames and minutes, on every seed? One ablation, resumable.

Trains every (variant, seed) in turn with ``curriculum-ppo train`` from one demo, evaluates each
finished run's last checkpoint from the real game start (``curriculum-ppo evaluate``, as
``bench_learning.py`` does), and writes one JSON, one PNG and a table: per variant the seeds that
reached the goal, the median and the range over seeds of the frames and minutes to the game start
(start frame 0) and to the goal rule (``--stop-at-success``), the evaluation scores, and the cost per
demo frame (frames to start frame 0 / demo length). A lever that helps one seed is noise: the spread
over seeds is the result.

A variant is ``NAME=FLAGS``: train flags added to the defaults (``bf16="--cpu-bf16"``,
``wide="--window 128"``, ``ppo="--no-curriculum"``, plain PPO from the game start on the same
budget). The variant ``default`` (no extra flags) comes first, as the baseline, unless
``--no-default``. Every variant's flags are checked up front by building its train config, so a
bad flag ends the script in one line before any training.

Run dirs go to ``OUT_DIR/<variant>/seed<k>/`` (default ``runs/bench/ablate_learning/``,
git-ignored), with this script's own files beside train's: ``ablation.log`` (the output of train
and evaluate), ``ablation_sessions.json`` (each training session: budgets, frames, why it stopped,
the machine's load) and ``ablation_eval.json``. Running the same command again continues: runs
stopped by a signal or a crash resume from their last checkpoint (``--resume``), finished ones
(frame budget, goal rule, or time budget) are skipped, and only evaluations that are missing or
stale are made. ``--frames`` and ``--minutes`` are budgets per run over all its sessions (minutes
of training time, the metrics' ``time``); raising one continues finished runs. Ctrl-C stops the
current run with a checkpoint, writes the report so far and exits 130; a run whose training or
evaluation fails is named in one line with its log, and the other runs go on (exit 1 at the end).
``--report-only`` trains and evaluates nothing: it rebuilds the JSON and PNG from the run dirs.

Usage: python scripts/ablate_learning.py [--demo DEMO.h5] [--seeds 1 2] [--variant NAME=FLAGS ...]
       [--no-default] [--frames N] [--minutes M] [--stop-at-success 0.5] [--episodes 20]
       [--protocols sticky noops] [--out-dir DIR] [--json REPORT.json] [--report-only]
"""

from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # also when a test imports this file
import bench_learning  # noqa: E402
from ablation_report import build_report, format_table, write_outputs  # noqa: E402
from ablation_runs import (EVAL_CAP_DEMO_LENGTHS, EVAL_FILE, SESSIONS_FILE, DemoInfo, Run, Variant,  # noqa: E402
                           check_same_settings, describe_stop, eval_cap, evaluation_is_current, finished_by,
                           learned_settings, now, trained_minutes)
from bench_common import LoadCheck, bench_dir, bench_root, positive_int, usable_cores, write_json  # noqa: E402

from curriculum_ppo.atomic import check_destination  # noqa: E402
from curriculum_ppo.errors import UserError  # noqa: E402

SCRIPT = "ablate_learning"
DEFAULT_VARIANT = "default"
VARIANT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")
OWNED_FLAGS = {"--seed": "its --seeds", "--frames": "its --frames", "--minutes": "its --minutes",
               "--stop-at-success": "its --stop-at-success", "--demo": "its --demo", "--game": "its --demo",
               "--run-dir": "its --out-dir", "--resume": "it resumes unfinished runs itself"}
"""Train flags this script sets for every run, and where to set them instead; a variant that gives one is refused."""


# -- the demo and the variants -------------------------------------------------------------------------------------
def parse_variant(text: str) -> tuple[str, tuple[str, ...]]:
    """argparse type of ``--variant NAME=FLAGS``: the name and the flags (split as a shell would)."""
    name, sep, flags = text.partition("=")
    if not sep or not VARIANT_NAME.fullmatch(name):
        raise argparse.ArgumentTypeError(f"expected NAME=FLAGS with NAME of letters, digits and _.+- "
                                         f"(e.g. wide=\"--window 128\"), got {text!r}")
    try:
        return name, tuple(shlex.split(flags))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"variant {name}: {exc} in {flags!r}") from None


def requested_variants(given: list[tuple[str, tuple[str, ...]]], no_default: bool) -> list[tuple[str, tuple]]:
    """The variants in order: ``default`` first (unless ``no_default``), then the given ones; names unique."""
    variants = ([] if no_default else [(DEFAULT_VARIANT, ())]) + list(given)
    if not variants:
        raise UserError("--no-default leaves no variant; give at least one --variant NAME=FLAGS")
    seen = set()
    for name, _ in variants:
        if name in seen:
            hint = " (the baseline without extra flags; give --no-default to name yours so)" \
                if name == DEFAULT_VARIANT else ""
            raise UserError(f"variant {name} is given twice{hint}")
        seen.add(name)
    return variants


def _train_parser() -> argparse.ArgumentParser:
    """``curriculum-ppo train``'s own parser, with its errors raised as UserError instead of printed."""
    from curriculum_ppo.config_flags import LazyFlagsParser
    from curriculum_ppo.train_cli import add_train_parser

    class Refusing(LazyFlagsParser):
        def error(self, message):
            raise UserError(message)

        def print_help(self, file=None):  # --help in a variant's flags: no help text, the line below
            pass

        def exit(self, status=0, message=None):
            raise UserError(message or "its flags ask for help, not a run")

    root = Refusing(prog="curriculum-ppo train")
    add_train_parser(root.add_subparsers(dest="command", parser_class=Refusing))
    return root


def check_variant(name: str, flags: tuple[str, ...], demo: DemoInfo, args) -> Variant:
    """Build the variant's train config as ``train`` will; refuse flags that are bad or that this script sets."""
    from curriculum_ppo import config_flags
    from curriculum_ppo.train_cli import build_config
    from curriculum_ppo.training.config import TrainConfig

    parser, placeholder = _train_parser(), "RUN_DIR"
    try:
        alone = parser.parse_args(["train", "--run-dir", placeholder, *flags])
        owned = [k.flag.name for k, _ in config_flags.given(alone, TrainConfig) if k.flag.name in OWNED_FLAGS]
        owned += [f for f, given in (("--run-dir", alone.run_dir != placeholder), ("--resume", alone.resume),
                                     ("--demo", alone.demo), ("--game", alone.game)) if given]
        if owned:
            raise UserError(f"{owned[0]} is set by {SCRIPT} for every run ({OWNED_FLAGS[owned[0]]})")
        config = build_config(parser.parse_args(["train", "--run-dir", placeholder, *fresh_run_flags(demo, args, 1),
                                                 *flags]))
        curriculum = config.demo is not None
        if curriculum and args.stop_at_success:
            build_config(parser.parse_args(["train", "--run-dir", placeholder, *fresh_run_flags(demo, args, 1),
                                            *flags, "--stop-at-success", str(args.stop_at_success)]))
    except UserError as exc:
        raise UserError(f"variant {name} ({shlex.join(flags) or 'no flags'}): {exc}") from None
    return Variant(name, flags, curriculum, learned_settings(config.to_dict()))


def fresh_run_flags(demo: DemoInfo, args, seed: int) -> list[str]:
    """What a new run of any variant is given before the variant's own flags (which may override --num-envs)."""
    flags = ["--demo", str(demo.path), "--game", demo.game, "--seed", str(seed), "--frames", str(args.frames),
             "--minutes", str(args.minutes)]
    return flags + (["--num-envs", str(args.num_envs)] if args.num_envs else [])


# -- one run: its files, whether it is finished, training and evaluating it ----------------------------------------
def train_command(run: Run, demo: DemoInfo, args, minutes: float) -> list[str]:
    cmd = [sys.executable, "-m", "curriculum_ppo", "train", "--run-dir", str(run.dir), "--status-every", "60"]
    if run.started():  # the run keeps the settings it started with; only the budgets are given again
        cmd += ["--resume", "--frames", str(args.frames), "--minutes", f"{minutes:.4f}"]
    else:
        cmd += fresh_run_flags(demo, args, run.seed) + list(run.variant.flags)
    if run.variant.curriculum and args.stop_at_success:
        cmd += ["--stop-at-success", str(args.stop_at_success)]
    return cmd


def train_run(run: Run, demo: DemoInfo, args) -> dict:
    """One training session of ``run`` (its output appended to its log); returns the session's record."""
    frames_before = run.rows()[-1]["frames"] if run.rows() else 0
    minutes = args.minutes - trained_minutes(run)
    cmd = train_command(run, demo, args, minutes)
    run.dir.mkdir(parents=True, exist_ok=True)
    print(f"{SCRIPT}: {run.label}: training from {frames_before:,} frames (log: {run.log})", flush=True)
    load = LoadCheck(SCRIPT, cores_used=usable_cores()).start()
    started = time.time()
    with open(run.log, "a") as log:
        log.write(f"$ {shlex.join(cmd)}\n")
        log.flush()
        rc, signalled, seconds = bench_learning.run_training(cmd, log=log, who=SCRIPT)
    record = bench_learning.read_stop_record(run.dir, since=started)
    session = {"date": now(), "command": shlex.join(cmd), "frames_before": frames_before,
               "frames_after": run.rows()[-1]["frames"] if run.rows() else 0, "budget_frames": args.frames,
               "budget_minutes": args.minutes, "minutes_given": round(minutes, 4), "wall_seconds": round(seconds, 1),
               "exit_code": rc, "stop": record, "stopped_by": describe_stop(record, rc, signalled, run.log),
               "machine_load": load.finish(warn=False)}
    write_json(run.dir / SESSIONS_FILE, run.sessions() + [session])
    return session


def evaluate_run(run: Run, args, protocols: tuple[str, ...], cap: int) -> int:
    """Evaluate the run's last checkpoint from the game start into its ``ablation_eval.json``; the exit code."""
    cmd = bench_learning.evaluation_command(run.dir, args.episodes, run.dir / EVAL_FILE, protocols, cap)
    print(f"{SCRIPT}: {run.label}: evaluating {args.episodes} episodes from the game start (log: {run.log})",
          flush=True)
    with open(run.log, "a") as log:
        log.write(f"$ {shlex.join(cmd)}\n")
        log.flush()
        return subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT)


def advance(run: Run, demo: DemoInfo, args, protocols: tuple[str, ...]) -> str | None:
    """Train the run on unless it is finished, then evaluate it if that is not done yet; a failure's line, or None.

    Raises KeyboardInterrupt once a signal stopped its training (the run keeps its checkpoint).
    """
    if finished_by(run, args) is None:
        session = train_run(run, demo, args)
        if session["stopped_by"].startswith("interrupted"):
            raise KeyboardInterrupt
        if session["exit_code"] != 0:
            return f"{SCRIPT}: {run.label}: training failed (exit {session['exit_code']}); see {run.log}"
    cap = eval_cap(demo, args)
    if finished_by(run, args) is not None and not evaluation_is_current(run, args, protocols, cap):
        rc = evaluate_run(run, args, protocols, cap)
        if rc != 0:
            return f"{SCRIPT}: {run.label}: evaluation failed (exit {rc}); see {run.log}"
    return None


# -- the command ---------------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", type=Path, default=bench_learning.DEMO,
                        help="demo to learn (default: the bundled room-1 demo)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2], help="training seeds (default 1 2)")
    parser.add_argument("--variant", type=parse_variant, action="append", default=[], metavar="NAME=FLAGS",
                        help="a variant: train flags added to the defaults, e.g. wide=\"--window 128\" or "
                             "ppo=\"--no-curriculum\" (plain PPO); repeat for more")
    parser.add_argument("--no-default", action="store_true",
                        help="leave out the baseline variant 'default' (no extra flags)")
    parser.add_argument("--frames", type=positive_int, default=10_000_000, help="frame budget per run")
    parser.add_argument("--minutes", type=float, default=180.0,
                        help="training-time budget per run, over all its sessions (default 180)")
    parser.add_argument("--stop-at-success", type=float, default=0.5,
                        help="the goal rule: a curriculum run ends once it starts at frame 0 and this fraction of "
                             "its recent game-start episodes tie or beat the demo (default 0.5; 0 = off)")
    parser.add_argument("--episodes", type=positive_int, default=20,
                        help="evaluation episodes from the game start per protocol (default 20)")
    parser.add_argument("--protocols", nargs="+", default=[], metavar="NAME",
                        help="evaluation protocols besides plain (which is always first), e.g. sticky noops")
    parser.add_argument("--eval-max-frames", type=positive_int, default=None,
                        help=f"evaluation episode cap in emulator frames (default: {EVAL_CAP_DEMO_LENGTHS}x the "
                             f"demo's length, at least {bench_learning.EVAL_MAX_FRAMES})")
    parser.add_argument("--num-envs", type=positive_int, default=None, help="train's --num-envs for new runs")
    parser.add_argument("--out-dir", type=Path, default=None,
                        help=f"run dirs (default runs/bench/{SCRIPT}/)")
    parser.add_argument("--json", type=Path, default=None,
                        help=f"report path (default OUT_DIR/{SCRIPT}.json); the PNG goes next to it")
    parser.add_argument("--report-only", action="store_true",
                        help="train and evaluate nothing: rebuild the JSON and PNG from the run dirs")
    args = parser.parse_args(argv)
    args.seeds = list(dict.fromkeys(args.seeds))
    if args.minutes <= 0:
        parser.error("--minutes must be positive")
    if not 0 <= args.stop_at_success <= 1:
        parser.error("--stop-at-success must be in [0, 1] (0 switches the goal rule off)")
    return args


def eval_protocols(names: list[str]) -> tuple[str, ...]:
    from curriculum_ppo.evaluation.protocols import PROTOCOLS

    protocols = tuple(dict.fromkeys(["plain", *(n.lower() for n in names)]))
    unknown = [p for p in protocols if p not in PROTOCOLS]
    if unknown:
        raise UserError(f"unknown evaluation protocol {unknown[0]}; choose from {', '.join(PROTOCOLS)}")
    return protocols


def prepare(args) -> tuple[DemoInfo, list[Variant], tuple[str, ...], Path, Path, Path]:
    """Everything checked before any training: demo, protocols, variants, run dirs' settings, outputs."""
    demo = DemoInfo.load(args.demo)
    protocols = eval_protocols(args.protocols)
    variants = [check_variant(name, flags, demo, args)
                for name, flags in requested_variants(args.variant, args.no_default)]
    out_dir = args.out_dir if args.out_dir is not None else bench_root() / SCRIPT
    for variant in variants:
        for seed in args.seeds:
            check_same_settings(Run(variant, seed, out_dir / variant.name / f"seed{seed}"))
    if args.out_dir is None:
        out_dir = bench_dir(SCRIPT)
    elif not args.report_only:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create --out-dir {out_dir}: {exc.strerror or exc}") from None
    json_path = args.json if args.json is not None else out_dir / f"{SCRIPT}.json"
    png_path = json_path.with_suffix(".png")
    check_destination(json_path, "--json")
    check_destination(png_path, "--json's PNG")
    return demo, variants, protocols, out_dir, json_path, png_path


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        demo, variants, protocols, out_dir, json_path, png_path = prepare(args)
    except UserError as exc:
        print(f"{SCRIPT}: error: {exc}", file=sys.stderr)
        return 2
    bench_learning.install_stop_signals()
    load = LoadCheck(SCRIPT, cores_used=usable_cores()).start()
    failures, current = [], None
    try:
        for variant in [] if args.report_only else variants:
            for seed in args.seeds:
                current = Run(variant, seed, out_dir / variant.name / f"seed{seed}")
                failure = advance(current, demo, args, protocols)
                if failure:
                    print(failure, file=sys.stderr, flush=True)
                    failures.append(failure)
                write_outputs(build_report(variants, demo, args, out_dir, protocols), json_path, png_path)
    except KeyboardInterrupt:
        report = build_report(variants, demo, args, out_dir, protocols)
        report["machine_load"] = load.finish()
        write_outputs(report, json_path, png_path)
        where = f" during {current.label}" if current else ""
        print(f"{SCRIPT}: interrupted{where}; {json_path} is up to date; run the same command to continue",
              file=sys.stderr)
        return 130
    report = build_report(variants, demo, args, out_dir, protocols)
    report["machine_load"] = load.finish()
    write_outputs(report, json_path, png_path)
    print(format_table(report))
    print(f"wrote {json_path} and {png_path}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
