"""``curriculum-ppo train``: flags -> :class:`~curriculum_ppo.training.config.TrainConfig` -> ``Trainer``.

The knobs' flags are generated from the config's fields (:mod:`curriculum_ppo.config_flags`);
this module adds the command's own arguments (what to train on, where, and from which config)
and builds the config. Precedence: built-in defaults < ``--config FILE`` (a config.json of an
earlier run works) < flags given on the command line. With ``--resume`` the run's own
config.json is the base and only the runtime knobs (budget, stopping, devices, the env pool,
status and checkpoint intervals: ``Flag.runtime``) may change. The config is constructed once,
from the final values, so its checks see what the flags set.

Printed as markdown, the generated flags are the tables of docs/training.md:
``python -m curriculum_ppo.train_cli``.
"""

from __future__ import annotations

import argparse
import gc
import json
from pathlib import Path

from curriculum_ppo import config_flags
from curriculum_ppo.errors import UserError

BUNDLED_DEMO = Path(__file__).resolve().parent.parent / "demos" / "MontezumaRevenge-room1.h5"
BUNDLED_GAME = "montezuma_revenge"


def default_demo() -> Path:
    """The bundled Montezuma's Revenge room-1 demo of this checkout (``pip install -e .``)."""
    if BUNDLED_DEMO.exists():
        return BUNDLED_DEMO
    raise UserError(f"the bundled demo {BUNDLED_DEMO.name} is missing; pass --demo FILE.h5")


def add_knob_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per knob of :class:`TrainConfig`, grouped as in the docs."""
    from curriculum_ppo.training.config import FLAG_GROUPS, SECTION_GROUPS, TrainConfig

    config_flags.add_flags(parser, TrainConfig, FLAG_GROUPS, SECTION_GROUPS)


def add_train_parser(sub) -> None:
    p = sub.add_parser("train", help="train PPO with the backward curriculum on a demo")
    p.add_argument("--demo", help="demo file (default: the bundled Montezuma's Revenge room-1 demo)")
    p.add_argument("--game", help="game (checked against the demo; without --demo: train from the game start)")
    p.add_argument("--run-dir", required=True,
                   help="where config, metrics, checkpoints and plots go; one training at a time (it holds "
                        "RUN_DIR/train.lock until it ends; evaluate, inspect and plot may read it meanwhile)")
    p.add_argument("--resume", action="store_true", help="continue the run in --run-dir from checkpoints/latest.pt")
    p.add_argument("--config", help="JSON config file (e.g. an earlier run's config.json)")
    p.add_argument("--no-curriculum", action="store_true", help="plain PPO from the game start (baseline)")
    if isinstance(p, config_flags.LazyFlagsParser):
        p.add_flags_later(add_knob_flags)
    else:
        add_knob_flags(p)
    p.set_defaults(func=run_train)


def build_config(args):
    """The run's config: defaults < ``--config`` (or the resumed run's config.json) < flags, constructed once."""
    from curriculum_ppo.training.config import TrainConfig

    values = config_flags.given(args, TrainConfig)
    if args.resume:
        base = _resumed_config(Path(args.run_dir), values)
    elif args.config:
        base = _read_json(Path(args.config))
        base.pop("version", None)
    else:
        base = {}
    merged = config_flags.apply(base, values)
    if not args.resume:
        merged.update(_what_to_train_on(args, merged))
    return TrainConfig.from_dict(merged)


def _resumed_config(run_dir: Path, values: list) -> dict:
    """The run's saved config; refuses a flag that would change what the run learns."""
    from curriculum_ppo.training.config import TrainConfig

    path = run_dir / "config.json"
    if not path.exists():
        raise UserError(f"--resume: {path} not found (is {run_dir} a run directory?)")
    base = _read_json(path)
    base.pop("version", None)
    fixed = [knob.flag.name for knob, _ in values if not knob.flag.runtime]
    if fixed:
        runtime = sorted(k.flag.name for k in config_flags.knobs(TrainConfig) if k.flag.runtime)
        raise UserError(f"--resume keeps the run's settings; only {', '.join(runtime)} may change (got {fixed[0]})")
    return base


def _what_to_train_on(args, merged: dict) -> dict:
    """``demo`` and ``game`` from --demo, --game and --no-curriculum (the bundled demo when none is named)."""
    if args.no_curriculum:
        return {"demo": None, "game": args.game or BUNDLED_GAME}
    chosen = {}
    if args.demo:
        chosen["demo"] = args.demo
    elif merged.get("demo") is None and not args.game:
        chosen["demo"] = str(default_demo())
    if args.game:
        chosen["game"] = args.game
    return chosen


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"config file not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path} must hold a JSON object")
    return data


def run_train(args) -> int:
    from curriculum_ppo.distributed import DistContext
    from curriculum_ppo.training.loop import Trainer

    config = build_config(args)
    dist = DistContext.from_env(config.device)
    try:
        return Trainer(config, args.run_dir, resume=args.resume, dist=dist).train()
    finally:
        # The Trainer sits in reference cycles: without a collection here its DDP module, which holds the
        # process group, would be freed during interpreter shutdown, where gloo can abort the process.
        gc.collect()
        dist.close()


def flag_tables() -> str:
    """The generated flags as the markdown tables of docs/training.md."""
    from curriculum_ppo.training.config import FLAG_GROUPS, SECTION_GROUPS, TrainConfig

    return config_flags.markdown_tables(TrainConfig, FLAG_GROUPS, SECTION_GROUPS)


if __name__ == "__main__":
    print(flag_tables(), end="")
