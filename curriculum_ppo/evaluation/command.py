"""The whole ``curriculum-ppo evaluate`` command: check the inputs and outputs, play, report, write.

Everything that can be refused (settings, output paths, checkpoint, ROM, demo start) is checked
before the first episode, so bad input writes nothing.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from curriculum_ppo.errors import UserError
from curriculum_ppo.evaluation.checkpoint import check_rom, load_for_eval
from curriculum_ppo.evaluation.outputs import check_outputs, write_json
from curriculum_ppo.evaluation.plan import EvalPlan, build_plan
from curriculum_ppo.evaluation.protocols import EvalSettings
from curriculum_ppo.evaluation.replay_video import record_video
from curriculum_ppo.evaluation.report import build_report, print_table
from curriculum_ppo.evaluation.results import protocol_rows
from curriculum_ppo.evaluation.runner import run_episodes
from curriculum_ppo.evaluation.start import resolve_demo_start


def _add_video(report: dict, plan: EvalPlan, best: dict, video_path: Path, video_scale: int, game: str,
               quiet: bool) -> UserError | None:
    """Write the best episode's video into ``report["video"]``; return its error, if any, to raise after the JSON."""
    try:
        info = record_video(plan, best, video_path, scale=video_scale, game=game)
    except UserError as exc:  # still write the JSON: the evaluation itself succeeded
        report["video"] = {"path": str(video_path), "error": str(exc)}
        return exc
    report["video"] = info
    if not quiet:
        print(f"wrote {video_path} (best episode: {info['protocol']} seed {info['seed']}, "
              f"score {info['score']:g}, {info['video_frames']} video frames) and its contact sheet "
              f"{info['sheet']}", file=sys.stderr)
    return None


def evaluate(checkpoint: str | os.PathLike, settings: EvalSettings, json_out: str | None = None,
             video_out: str | None = None, video_scale: int = 2, quiet: bool = False,
             stdout=None) -> dict:
    """The whole ``curriculum-ppo evaluate`` command; returns the result dict (also written to ``json_out``)."""
    from curriculum_ppo.device import pick_device
    from curriculum_ppo.emulator import display_name

    stdout = stdout or sys.stdout
    settings.validate()
    json_path, video_path = check_outputs(json_out, video_out, video_scale)
    device = pick_device(settings.device)
    ckpt = load_for_eval(checkpoint, device)
    check_rom(ckpt, quiet)
    demo_path, start = resolve_demo_start(settings, ckpt)
    plan = build_plan(settings, ckpt.game, ckpt.atari, ckpt.rules, demo_path, start)
    if not quiet:
        where = f"demo frame {start} of {demo_path}" if start is not None else "the game start"
        print(f"evaluate: {display_name(ckpt.game)} checkpoint {ckpt.path} ({ckpt.frames:,} training frames); "
              f"{settings.episodes} episode(s) x {len(plan.protocols)} protocol(s) from {where} on {device}",
              file=sys.stderr, flush=True)
    t0 = time.time()
    results, best = run_episodes(ckpt, plan, settings, device, quiet=quiet)
    elapsed = time.time() - t0
    rows = protocol_rows(results, settings, plan.protocols, demo_start=start is not None)
    print_table(ckpt, settings, rows, demo_path, start, stdout)
    report = build_report(ckpt, settings, plan, rows, device, demo_path, start, elapsed)
    video_error = None
    if video_path is not None and best is not None:
        video_error = _add_video(report, plan, best, video_path, video_scale, ckpt.game, quiet)
    if json_path is not None:
        write_json(json_path, report)
        if not quiet:
            print(f"wrote {json_path}", file=sys.stderr)
    if video_error is not None:
        raise video_error
    return report
