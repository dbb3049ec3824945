"""The best episode as a video: its actions replayed from its seed in one env, so no screen is stored while evaluating.

The MP4 shows the score overlaid; a PNG contact sheet of :data:`SHEET_FRAMES` evenly spaced
frames goes next to it. A replay that does not end as the evaluated episode did is a warning.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from curriculum_ppo.evaluation.plan import EvalPlan

SHEET_FRAMES = 8  # evenly spaced frames of the video in its PNG contact sheet


def record_video(plan: EvalPlan, best: dict, path: Path, scale: int = 2, fps: float | None = None,
                 game: str = "") -> dict:
    """Replay the best episode's actions from its seed in one env and write an MP4 with the score overlaid,
    plus a PNG contact sheet of :data:`SHEET_FRAMES` evenly spaced frames next to it (same name, ``.png``)."""
    from curriculum_ppo.emulator import display_name
    from curriculum_ppo.video import contact_sheet, overlay_text, upscale, write_mp4, write_png

    env = plan.factory(best["pool_seed"] + best["env"])
    frameskip = int(plan.factory.atari.get("frameskip", 4))
    protocol, seed, _ = plan.jobs[best["job"]]
    state = {"score": 0.0, "frames": 0, "ended": False}
    title = f"{display_name(game)}  {protocol}  seed {seed}" if game else f"{protocol}  seed {seed}"

    picks = set(np.linspace(0, len(best["actions"]), SHEET_FRAMES).round().astype(int).tolist())
    sheet: list[np.ndarray] = []

    def keep(index: int, image: np.ndarray) -> np.ndarray:
        if index in picks:
            sheet.append(image.copy())
        return image

    def frames():
        env.reset(options=plan.options(best["job"]))
        score = 0.0
        yield keep(0, overlay_text(upscale(env.render(), scale), [title, "score 0", "frame 0"]))
        for step, a in enumerate(best["actions"]):
            _, _, terminated, truncated, info = env.step(int(a))
            score = float(info.get("score", score))
            yield keep(step + 1, overlay_text(upscale(env.render(), scale),
                                              [title, f"score {score:g}", f"frame {(step + 1) * frameskip}"]))
            if terminated or truncated:
                state["ended"] = True
                state["frames"] = int(info["episode"]["frames"])
                break
        state["score"] = score

    try:
        count = write_mp4(path, frames(), fps=fps or 60.0 / frameskip)
    finally:
        env.close()
    sheet_path = path.with_suffix(".png")
    write_png(sheet_path, contact_sheet(sheet))
    replay_ok = state["ended"] and state["score"] == best["score"] and state["frames"] == best["frames"]
    if not replay_ok:
        print(f"evaluate: warning: the video replay diverged from the evaluated episode "
              f"(score {state['score']:g} vs {best['score']:g}); the video shows the replay", file=sys.stderr)
    return {"path": str(path), "protocol": protocol, "seed": int(seed), "score": best["score"],
            "frames": best["frames"], "video_frames": count, "replay_matches": bool(replay_ok),
            "sheet": str(sheet_path), "sheet_frames": len(sheet)}
