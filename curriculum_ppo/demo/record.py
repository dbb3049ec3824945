"""Recording demos: from an action script (non-interactive) or by a person (interactive).

The interactive window lives in :mod:`curriculum_ppo.demo.record_window`; this
module holds what does not need a screen.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from curriculum_ppo.demo import schema
from curriculum_ppo.demo.action_script import expand, read_action_script
from curriculum_ppo.demo.store import Demo, DemoBuilder, save_demo
from curriculum_ppo.emulator import Emulator, EmulatorSettings, resolve_game


def record_script(game: str, script: str | Path, out: str | Path, *, store_frames: bool = False,
                  state_interval: int = schema.DEFAULT_STATE_INTERVAL) -> Demo:
    """Replay an action script from the game's start and save it as a demo (source 'scripted')."""
    emu = Emulator(EmulatorSettings(resolve_game(game)))
    lines = read_action_script(script, emu.action_names)
    builder = DemoBuilder(emu, state_interval=state_interval, store_frames=store_frames)
    for action in expand(lines):
        builder.step(action)
    demo = builder.build()
    digest = hashlib.sha256(Path(script).read_bytes()).hexdigest()
    save_demo(demo, out, source="scripted", detail={"script": Path(script).name, "script_sha256": digest})
    return demo


def record_interactive(args) -> int:
    from curriculum_ppo.demo.record_window import run_window_recorder

    return run_window_recorder(args)
