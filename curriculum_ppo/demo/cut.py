"""``cut``: the first frames of a demo as a demo of its own.

Users train on the first rooms of a long demo this way: the cut keeps frames
``0..end`` exactly (actions, rewards, lives, RAM, the saved states up to
``end``, and the screens if the parent stored them), adds a state at ``end``
(every demo ends in one, see :mod:`curriculum_ppo.demo.schema`), and records
where it came from in ``source_detail``. The result replays like any demo, so
``verify`` checks it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from curriculum_ppo.demo.store import Demo, load_demo, save_demo
from curriculum_ppo.errors import UserError


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cut_demo(parent: Demo, end: int) -> Demo:
    """A new :class:`Demo` holding ``parent``'s frames ``0..end`` (``1 <= end <= len(parent)``)."""
    n = len(parent)
    if not 1 <= end <= n:
        raise UserError(f"--end must be a frame in 1..{n} (the demo has {n} frames), got {end}")
    keep = [k for k, f in enumerate(parent.state_frames) if f <= end]
    state_frames = [int(parent.state_frames[k]) for k in keep]
    states = [parent.states[k] for k in keep]
    if state_frames[-1] != end:  # every demo ends in a saved state: replay to it from the last one before
        emulator = parent.make_emulator()
        parent.restore(emulator, end)
        state_frames.append(end)
        states.append(emulator.save_state())
    attrs = {k: v for k, v in parent.attrs.items() if k not in ("created", "source", "source_detail")}
    return Demo(
        game=parent.game,
        action_set=list(parent.action_set),
        actions=parent.actions[:end].copy(),
        rewards=parent.rewards[:end].copy(),
        lives=parent.lives[: end + 1].copy(),
        ram=parent.ram[: end + 1].copy(),
        state_frames=np.asarray(state_frames, dtype=np.int64),
        states=states,
        attrs=attrs,
        frames=parent.frames[: end + 1].copy() if parent.frames is not None else None,
    )


def cut_file(path: str | os.PathLike, end: int, out: str | os.PathLike) -> Demo:
    """Read ``path``, cut it at ``end`` and write the result atomically to ``out`` (nothing is written on error)."""
    path, out = Path(path), Path(out)
    if out.resolve() == path.resolve():
        raise UserError(f"--out {out} is the demo being cut; write the cut to another file")
    parent = load_demo(path, load_frames=True)
    demo = cut_demo(parent, int(end))
    detail = {
        "parent": path.name,
        "parent_sha256": _sha256(path),
        "parent_frames": len(parent),
        "parent_source": parent.origin(),  # a cut of a cut names the first demo's source: how frame 0 came about
        "range": [0, int(end)],
    }
    try:
        save_demo(demo, out, source="cut", detail=detail)
    except OSError as exc:
        raise UserError(f"cannot write {out}: {exc.strerror or exc}") from None
    return demo
