"""Where an evaluation's episodes start: the game start, or a frame of a demo of the checkpoint's game."""

from __future__ import annotations

from pathlib import Path

from curriculum_ppo.errors import UserError
from curriculum_ppo.evaluation.checkpoint import LoadedCheckpoint
from curriculum_ppo.evaluation.protocols import EvalSettings


def resolve_demo_start(settings: EvalSettings, ckpt: LoadedCheckpoint) -> tuple[str | None, int | None]:
    """(demo path, start frame) of a demo-start evaluation, or (None, None) from the game start.

    Without ``--demo`` the checkpoint's training demo is used; without ``--start-frame`` the frame
    the checkpoint's curriculum had reached, when it applies to that demo.
    """
    if settings.demo is None and settings.start_frame is None:
        return None, None
    from curriculum_ppo.demo.store import load_demo
    from curriculum_ppo.emulator import display_name

    demo_path = settings.demo or ckpt.train_demo
    if demo_path is None:
        raise UserError("--start-frame needs --demo FILE.h5 (the checkpoint names no training demo)")
    if settings.demo is None and not Path(demo_path).exists():
        raise UserError(f"--start-frame: the checkpoint's training demo {demo_path} is missing; "
                        "pass --demo FILE.h5")
    demo = load_demo(demo_path)
    if demo.game != ckpt.game:
        raise UserError(f"{demo_path} is a {display_name(demo.game)} demo but the checkpoint was trained on "
                        f"{display_name(ckpt.game)}")
    start = settings.start_frame
    if start is None:
        if ckpt.curriculum_start is None or len(demo) != ckpt.demo_length:
            raise UserError("give --start-frame T (the checkpoint's curriculum position does not apply "
                            "to this demo)")
        start = ckpt.curriculum_start
    if not 0 <= start <= len(demo):
        raise UserError(f"--start-frame {start} is outside the demo (0..{len(demo)})")
    return str(demo_path), start
