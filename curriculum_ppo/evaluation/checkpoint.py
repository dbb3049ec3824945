"""A checkpoint read for evaluation: its policy on the device, its env config and where training stood.

The checkpoint file itself is decoded by :mod:`curriculum_ppo.training.run_dir`, its one owner;
this module turns it into what an evaluation needs, and every problem into a one-line UserError.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from curriculum_ppo.errors import UserError


@dataclass
class LoadedCheckpoint:
    """A checkpoint ready to evaluate: its policy (on the device, in eval mode) and the config it was trained with.

    ``atari`` and ``rules`` are complete AtariConfig / EpisodeRulesConfig field dicts;
    ``curriculum_start`` is the demo frame the curriculum had reached (0 once done, None without one).
    """

    path: Path
    game: str
    policy: object
    atari: dict
    rules: dict
    train_demo: str | None
    demo_length: int
    curriculum_start: int | None
    frames: int
    updates: int
    recurrent: bool
    rom_md5: str | None


def _known_fields(cls, values: dict) -> dict:
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in (values or {}).items() if k in names}


def _curriculum_start(ckpt: dict) -> int | None:
    """The demo frame the saved curriculum starts episodes from (0 once done), or None."""
    if not ckpt.get("scheduler_json"):
        return None
    try:
        sched = json.loads(ckpt["scheduler_json"])
        return 0 if sched.get("done") else int(sched["slot"]) * int(sched.get("frame_granularity", 1))
    except (KeyError, TypeError, ValueError):
        return None


def load_for_eval(path: str | os.PathLike, device) -> LoadedCheckpoint:
    """Read a checkpoint and build its policy on ``device``; every problem is a one-line UserError."""
    from curriculum_ppo.envs.atari import AtariConfig
    from curriculum_ppo.episode_rules import EpisodeRulesConfig
    from curriculum_ppo.ppo.policy import PolicyConfig, build_policy
    from curriculum_ppo.training.run_dir import load_checkpoint

    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path} is a directory; give a checkpoint file such as {path / 'checkpoints' / 'latest.pt'}")
    ckpt = load_checkpoint(path)
    try:
        config = json.loads(ckpt["config_json"])
        policy_config = json.loads(ckpt["policy_config_json"])
        state_dict = ckpt["model"]
    except (KeyError, TypeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path} is incomplete or corrupt (cannot read {exc})") from None
    if config.get("env_kind", "atari") != "atari" or not ckpt.get("game"):
        raise UserError(f"{path} was not trained on an Atari game (env {config.get('env_kind')}); "
                        "evaluate supports Atari checkpoints only")
    try:
        pc = PolicyConfig(**_known_fields(PolicyConfig, policy_config))
        pc.obs_shape = tuple(pc.obs_shape)
        policy = build_policy(pc)
        policy.load_state_dict(state_dict)
    except (RuntimeError, TypeError, ValueError, KeyError) as exc:
        raise UserError(f"{path}: the network weights do not fit the saved network config "
                        f"({str(exc).splitlines()[0][:160]})") from None
    policy.to(device).eval()
    atari = asdict(AtariConfig(**_known_fields(AtariConfig, AtariConfig.upgrade_legacy(config.get("atari")))))
    rules = asdict(EpisodeRulesConfig(**_known_fields(EpisodeRulesConfig, config.get("rules"))))
    return LoadedCheckpoint(
        path=path, game=str(ckpt["game"]), policy=policy, atari=atari, rules=rules,
        train_demo=config.get("demo"), demo_length=int(ckpt.get("demo_length") or 0),
        curriculum_start=_curriculum_start(ckpt), frames=int(ckpt.get("frames", 0)),
        updates=int(ckpt.get("updates", 0)), recurrent=bool(pc.recurrent), rom_md5=ckpt.get("rom_md5"),
    )


def check_rom(ckpt: LoadedCheckpoint, quiet: bool) -> None:
    """The game's ROM must be installed; a different one than in training is a warning."""
    from curriculum_ppo.emulator import display_name, rom_md5

    try:
        installed_md5 = rom_md5(ckpt.game)
    except UserError as exc:
        raise UserError(f"{ckpt.path}: {exc}") from None
    if ckpt.rom_md5 and installed_md5 != ckpt.rom_md5 and not quiet:
        print(f"evaluate: warning: the installed {display_name(ckpt.game)} ROM (md5 {installed_md5}) differs "
              f"from the one the checkpoint was trained on ({ckpt.rom_md5})", file=sys.stderr)
