"""The ``curriculum-ppo`` command: record, verify, inspect, import, cut and export demos; train; evaluate.

Each subcommand lives in its own module; this file only parses arguments and
turns :class:`~curriculum_ppo.errors.UserError` into one line on stderr with a
nonzero exit code, so bad input never shows a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

from curriculum_ppo import __version__
from curriculum_ppo.config_flags import LazyFlagsParser
from curriculum_ppo.errors import UserError


def _print_json(obj) -> None:
    print(json.dumps(obj, indent=2, sort_keys=False))


# --- demo commands -------------------------------------------------------------------
def cmd_record(args) -> int:
    from curriculum_ppo.demo.record import record_interactive, record_script

    if args.actions:
        demo = record_script(args.game, args.actions, args.out, store_frames=args.store_frames,
                             state_interval=args.state_interval)
        print(f"recorded {len(demo)} frames from {args.actions}, total return {demo.total_return:g} -> {args.out}")
        return 0
    return record_interactive(args)


def cmd_verify(args) -> int:
    from curriculum_ppo.demo.store import load_demo
    from curriculum_ppo.demo.verify import verify_demo

    result = verify_demo(load_demo(args.file))
    if args.json:
        _print_json({k: v for k, v in result.to_json().items()})
    elif result.ok:
        print(f"OK: {args.file} replays exactly ({result.frames} frames, total return {result.total_return:g})")
    else:
        print(f"DIVERGES at frame {result.first_divergence}: {result.reason}", file=sys.stderr)
    return 0 if result.ok else 1


def cmd_inspect(args) -> int:
    path = Path(args.file)
    if path.is_dir():
        from curriculum_ppo.run_report import inspect_run

        if args.since is None and (args.bin_frames is not None or args.until or args.starts):
            raise UserError("--until, --bin-frames and --starts need --since")
        if args.bin_frames is not None and args.bin_frames < 1:
            raise UserError("--bin-frames must be >= 1 frame")
        starts = None
        if args.starts:
            try:
                first, last = (int(x) for x in args.starts.split(":"))
            except ValueError:
                raise UserError(f"--starts takes FIRST:LAST (two start frames), got '{args.starts}'") from None
            starts = (first, last)

        return inspect_run(path, as_json=args.json, since=args.since, until=args.until, bin_frames=args.bin_frames,
                           starts=starts)
    if args.since or args.until or args.bin_frames is not None or args.starts:
        raise UserError("--since, --until, --bin-frames and --starts apply to a training run directory, "
                        "not to a demo file")
    from curriculum_ppo.demo.inspect import format_summary, summarize, write_demo_png, write_demo_video
    from curriculum_ppo.demo.store import load_demo

    demo = load_demo(path)
    info = summarize(demo)
    print(json.dumps(info, indent=2) if args.json else format_summary(info))
    if args.png:
        frames = [int(x) for x in str(args.frame).split(",")] if args.frame is not None else [len(demo)]
        bad = [t for t in frames if not 0 <= t <= len(demo)]
        if bad:
            raise UserError(f"--frame {bad[0]} is outside the demo (0..{len(demo)})")
        write_demo_png(demo, args.png, frames, scale=args.scale)
        print(f"wrote {args.png}", file=sys.stderr)
    if args.video:
        n = write_demo_video(demo, args.video, scale=args.scale, every=args.every)
        print(f"wrote {args.video} ({n} frames)", file=sys.stderr)
    return 0


def cmd_import(args) -> int:
    from curriculum_ppo.demo.importers import import_atari_reset

    import_atari_reset(args.src, args.game, args.out, max_shift=args.max_shift)
    return 0


def cmd_cut(args) -> int:
    from curriculum_ppo.demo.cut import cut_file

    demo = cut_file(args.file, args.end, args.out)
    print(f"cut {args.file} at frame {args.end}: {len(demo)} frames, total return {demo.total_return:g} -> {args.out} "
          f"(check it with: curriculum-ppo verify {args.out})")
    return 0


def cmd_export(args) -> int:
    from curriculum_ppo.demo.export import export_minari

    path = export_minari(args.file, args.minari, obs=args.obs, frameskip=args.frameskip)
    print(f"exported {args.file} as Minari dataset {args.minari} ({path}); read it with minari.load_dataset({args.minari!r})")
    return 0


def _lazy(module: str, function: str):
    def run(args):
        return getattr(importlib.import_module(module), function)(args)
    return run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="curriculum-ppo", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"curriculum-ppo {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=LazyFlagsParser)

    p = sub.add_parser("record", help="record a demonstration (interactive window, or --actions script)")
    p.add_argument("--game", default="MontezumaRevenge", help="game, e.g. MontezumaRevenge, Pitfall, PrivateEye")
    p.add_argument("--out", required=True, help="output demo file (.h5)")
    p.add_argument("--actions", help="replay this action script (lines 'ACTION_NAME [repeat]') instead of playing")
    p.add_argument("--resume", action="store_true", help="continue the demo in --out from its last frame")
    p.add_argument("--store-frames", action="store_true", help="also store every RGB screen (gzip)")
    p.add_argument("--state-interval", type=int, default=10, help="frames between saved emulator states (default 10)")
    p.add_argument("--scale", type=int, default=3, help="window scale factor (interactive)")
    p.add_argument("--fps", type=float, default=30.0, help="initial playback speed in frames/s (interactive)")
    p.add_argument("--autosave", type=int, default=3000, help="save every N new frames (interactive, 0 = off)")
    p.set_defaults(func=cmd_record)

    p = sub.add_parser("verify", help="replay a demo and check every frame")
    p.add_argument("file")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("inspect", help="summarize a demo (or a training run directory)")
    p.add_argument("file")
    p.add_argument("--json", action="store_true")
    p.add_argument("--video", help="write an MP4 of the demo")
    p.add_argument("--png", help="write a PNG of --frame (comma-separated frames give a strip)")
    p.add_argument("--frame", help="frame(s) for --png (default: last)")
    p.add_argument("--scale", type=int, default=2)
    p.add_argument("--every", type=int, default=1, help="video: keep every k-th frame")
    p.add_argument("--since", metavar="CHECKPOINT",
                   help="run dir: also show success by start frame over the episodes between this checkpoint "
                        "(a path, or a name in RUN/checkpoints) and latest.pt")
    p.add_argument("--until", metavar="CHECKPOINT", help="run dir with --since: the later checkpoint (latest.pt)")
    p.add_argument("--bin-frames", type=int, help="run dir with --since: width of the start-frame ranges "
                                                  "(default: the demo in 20 ranges)")
    p.add_argument("--starts", metavar="FIRST:LAST",
                   help="run dir with --since: only these start frames, as one range unless --bin-frames cuts it")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("import-demo", help="import an atari-reset / atari-demo pickle")
    p.add_argument("src")
    p.add_argument("--game", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--max-shift", type=int, default=8, help="largest leading-NOOP alignment to try (±frames)")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("cut", help="the first frames of a demo as a demo of its own (train on the first rooms)")
    p.add_argument("file", help="the demo to cut (.h5)")
    p.add_argument("--end", type=int, required=True, metavar="FRAME", help="keep frames 0..FRAME (1 <= FRAME <= N)")
    p.add_argument("--out", required=True, help="output demo file (.h5)")
    p.set_defaults(func=cmd_cut)

    p = sub.add_parser("export", help="write a demo as a dataset for imitation / offline RL (Minari)")
    p.add_argument("file", help="the demo (.h5)")
    p.add_argument("--minari", required=True, metavar="NAME",
                   help="Minari dataset id, e.g. montezuma/room1-v0 (written under $MINARI_DATASETS_PATH)")
    p.add_argument("--obs", choices=("gray84", "rgb"), default="gray84",
                   help="observations: 84x84 grayscale (our agent's view) or the 210x160 RGB screen")
    p.add_argument("--frameskip", type=int, choices=(1, 4), default=1,
                   help="1: one step per emulator frame (the demo's own); 4: agent steps as our agent acts")
    p.set_defaults(func=cmd_export)

    from curriculum_ppo.evaluate_cli import add_evaluate_parsers
    from curriculum_ppo.train_cli import add_train_parser

    add_train_parser(sub)
    add_evaluate_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"curriculum-ppo {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"curriculum-ppo {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
