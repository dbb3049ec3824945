"""``curriculum-ppo evaluate`` and ``curriculum-ppo plot``: argument parsing only.

The work is done in :mod:`curriculum_ppo.evaluation` and :mod:`curriculum_ppo.plots`;
``inspect RUN_DIR`` (in :mod:`curriculum_ppo.cli`) uses :mod:`curriculum_ppo.run_report`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from curriculum_ppo.errors import UserError

EPILOG = """protocols:
  plain    deterministic game start
  noops    1..--noop-max random no-ops after the reset (default 30)
  sticky   repeat the previous action with probability --sticky per frame (0.25, ALE v5)
  epsilon  replace the agent's action by a random one with probability --epsilon (0.01)
  all      all four (noops is left out at demo starts); each protocol prints one row

Episodes play until game over (a lost life does not end them) or --max-frames;
the score is the raw game score. Actions are sampled from the policy (as in
training) unless --greedy. With --demo/--start-frame episodes start at a demo
frame and end as the curriculum ends them during training (life loss, lagging
behind the demo, some frames after tying the demo); the success column is the
curriculum's success rate there.
"""


def _protocols(values: list[str] | None) -> tuple[str, ...] | None:
    """``--protocol plain sticky``, ``--protocol plain,sticky`` and repeated flags all work; None = default."""
    if not values:
        return None
    names = [name.strip().lower() for value in values for name in value.split(",") if name.strip()]
    return tuple(dict.fromkeys(names))


def add_evaluate_parsers(sub) -> None:
    p = sub.add_parser("evaluate", help="evaluate a checkpoint under the standard Atari protocols",
                       description="Evaluate a trained checkpoint: episodes from the game start (or a demo "
                                   "frame) under one or more protocols; prints a table, optionally JSON and a video.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="checkpoint file (e.g. RUN_DIR/checkpoints/latest.pt)")
    p.add_argument("--episodes", type=int, default=10, help="episodes per protocol (default 10)")
    p.add_argument("--protocol", action="extend", nargs="+", metavar="NAME",
                   help="plain, noops, sticky, epsilon or all; several give one row each "
                        "(default: noops from the game start, plain from a demo frame)")
    p.add_argument("--noop-max", type=int, default=30, help="most random no-ops of the noops protocol (30)")
    p.add_argument("--sticky", type=float, default=0.25, help="repeat probability of the sticky protocol (0.25)")
    p.add_argument("--epsilon", type=float, default=0.01, help="random-action probability of the epsilon protocol")
    p.add_argument("--max-frames", type=int, default=108_000,
                   help="episode cap in emulator frames (default 108000 = 30 min)")
    p.add_argument("--greedy", action="store_true", help="take the most likely action instead of sampling")
    p.add_argument("--envs", type=int, default=8, help="parallel environments (default 8)")
    p.add_argument("--workers", type=int, help="env worker processes (default: CPU cores; 0 = in this process)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: cores not used by env workers)")
    p.add_argument("--seed", type=int, default=0, help="base seed of the episode seeds (default 0)")
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu or cuda")
    p.add_argument("--json", metavar="OUT.json", help="write the results with per-episode scores and seeds")
    p.add_argument("--video", metavar="OUT.mp4", help="write an MP4 of the best episode (ties: the first) and OUT.png, "
                                                     "a contact sheet of 8 evenly spaced frames (an existing OUT.png is replaced)")
    p.add_argument("--video-scale", type=int, default=2, help="video upscale factor (default 2: 640x420)")
    p.add_argument("--demo", metavar="FILE.h5", help="start episodes from a demo state (use with --start-frame)")
    p.add_argument("--start-frame", type=int, metavar="T",
                   help="demo frame to start from (default with --demo: the checkpoint's curriculum start; "
                        "without --demo: the checkpoint's training demo)")
    p.add_argument("--progress-every", type=float, default=10.0,
                   help="seconds between progress lines on stderr when it is not a terminal (default 10)")
    p.add_argument("--quiet", action="store_true", help="no progress or notes on stderr")
    p.set_defaults(func=run_evaluate)

    p = sub.add_parser("plot", help="draw the PNG plots of a training run")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.set_defaults(func=run_plot)


def run_evaluate(args) -> int:
    from curriculum_ppo.evaluation.command import evaluate
    from curriculum_ppo.evaluation.protocols import EvalSettings

    settings = EvalSettings(
        episodes=args.episodes, protocols=_protocols(args.protocol), noop_max=args.noop_max, sticky=args.sticky,
        epsilon=args.epsilon, max_frames=args.max_frames, envs=args.envs, workers=args.workers, seed=args.seed,
        threads=args.threads, device=args.device, greedy=args.greedy, demo=args.demo, start_frame=args.start_frame,
        progress_every=args.progress_every,
    )
    evaluate(args.checkpoint, settings, json_out=args.json, video_out=args.video, video_scale=args.video_scale,
             quiet=args.quiet)
    return 0


def run_plot(args) -> int:
    from curriculum_ppo.plots import plot_run

    run_dir = Path(args.run_dir)
    if not run_dir.exists():
        raise UserError(f"run directory not found: {run_dir}")
    if not run_dir.is_dir():
        raise UserError(f"{run_dir} is not a directory (give a training run directory)")
    for path in plot_run(run_dir):
        print(path)
    return 0
