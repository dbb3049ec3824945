"""Summaries and pictures of a demo: what ``curriculum-ppo inspect`` prints and draws."""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np

from curriculum_ppo.demo.store import Demo
from curriculum_ppo.emulator import display_name
from curriculum_ppo.video import overlay_text, upscale, write_mp4, write_png


def summarize(demo: Demo) -> dict:
    size = os.path.getsize(demo.path) if demo.path and os.path.exists(demo.path) else None
    has_frames = demo.frames is not None or demo.frames_in_file  # load_demo notes /frames without reading it
    return {
        "game": demo.game,
        "frames": len(demo),
        "total_return": demo.total_return,
        "schema_version": demo.attrs.get("schema_version"),
        "rom_md5": demo.attrs.get("rom_md5"),
        "ale_py_version": demo.attrs.get("ale_py_version"),
        "source": demo.attrs.get("source"),
        "created": demo.attrs.get("created"),
        "states": len(demo.states),
        "state_interval": demo.attrs.get("state_interval"),
        "has_frames": has_frames,
        "reward_events": [{"frame": t, "reward": r} for t, r in demo.reward_events()],
        "lives_lost_at": demo.life_losses(),
        "file_size_bytes": size,
    }


def format_summary(info: dict) -> str:
    lines = [
        f"{display_name(info['game'])} demo: {info['frames']} frames "
        f"({info['frames'] / 60:.1f} s at 60 Hz), total return {info['total_return']:g}",
        f"  schema v{info['schema_version']}, source {info['source']}, created {info['created']}, "
        f"ale-py {info['ale_py_version']}, ROM md5 {info['rom_md5']}",
        f"  {info['states']} saved states (every {info['state_interval']} frames)"
        + (f", file size {info['file_size_bytes'] / 1e6:.2f} MB" if info["file_size_bytes"] else ""),
    ]
    events = info["reward_events"]
    lines.append(f"  reward events ({len(events)}): "
                 + (", ".join(f"+{e['reward']:g} @ {e['frame']}" for e in events) if events else "none"))
    lost = info["lives_lost_at"]
    lines.append(f"  lives lost ({len(lost)}): " + (", ".join(map(str, lost)) if lost else "none"))
    return "\n".join(lines)


def replay_screens(demo: Demo, start: int = 0, stop: int | None = None) -> Iterator[tuple[int, np.ndarray, float]]:
    """Yield (frame t, RGB screen at t, score so far) for t in [start, stop]."""
    stop = len(demo) if stop is None else stop
    emu = demo.make_emulator()
    cum = demo.cumulative_return
    if start == 0:
        demo.restore_saved(emu, 0)
        first = emu.screen_rgb() if demo.frames is None else demo.frames[0]
        # After restoreState the screen is stale (ALE #417); a fresh emulator's reset screen is frame 0.
        yield 0, demo.make_emulator().screen_rgb() if demo.frames is None else first, 0.0
    else:
        demo.restore(emu, start - 1)
        emu.step(int(demo.actions[start - 1]))
        yield start, emu.screen_rgb(), float(cum[start])
    for t in range(start, stop):
        emu.step(int(demo.actions[t]))
        yield t + 1, emu.screen_rgb(), float(cum[t + 1])


def screen_at(demo: Demo, t: int) -> np.ndarray:
    return next(replay_screens(demo, t, t))[1]


def write_demo_video(demo: Demo, path, scale: int = 2, every: int = 1, fps: float = 60.0) -> int:
    def frames():
        for t, rgb, score in replay_screens(demo):
            if t % every == 0 or t == len(demo):
                yield overlay_text(upscale(rgb, scale), [f"score {score:g}", f"frame {t}"])
    return write_mp4(path, frames(), fps=fps / every)


def write_demo_png(demo: Demo, path, frames: list[int], scale: int = 1) -> None:
    """One frame, or a horizontal strip of several, each labelled with its frame and score."""
    cum = demo.cumulative_return
    tiles = [overlay_text(upscale(screen_at(demo, t), scale), [f"t={t}", f"score {cum[t]:g}"]) for t in frames]
    write_png(path, np.concatenate(tiles, axis=1))
