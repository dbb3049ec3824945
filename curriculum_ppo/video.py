"""Writing the pictures people look at: MP4 videos and PNG images, atomically."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np

from curriculum_ppo.atomic import atomic_path
from curriculum_ppo.errors import UserError


def upscale(rgb: np.ndarray, scale: int) -> np.ndarray:
    """Nearest-neighbour upscaling keeps Atari pixels sharp; Atari pixels are 2:1 wide."""
    h, w = rgb.shape[:2]
    if scale <= 1:
        return rgb
    return cv2.resize(rgb, (w * scale * 2, h * scale), interpolation=cv2.INTER_NEAREST)


def overlay_text(rgb: np.ndarray, lines: list[str]) -> np.ndarray:
    """Draw status lines (score, frame) in the top-left corner with a dark outline."""
    out = np.ascontiguousarray(rgb)
    y = 14
    for line in lines:
        cv2.putText(out, line, (4, y), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(out, line, (4, y), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
        y += 14
    return out


def write_mp4(path: str | os.PathLike, frames: Iterable[np.ndarray], fps: float = 60.0) -> int:
    """Write RGB frames to an MP4 (mp4v codec) atomically; returns the number of frames."""
    path = Path(path)
    count = 0
    with atomic_path(path, suffix=path.suffix or ".mp4") as tmp:
        writer = None
        try:
            for rgb in frames:
                if writer is None:
                    h, w = rgb.shape[:2]
                    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
                    if not writer.isOpened():
                        raise UserError(f"OpenCV cannot write video {path}")
                writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
                count += 1
        finally:
            if writer is not None:
                writer.release()
        if count == 0:
            raise UserError(f"no frames to write to {path}")
        if tmp.stat().st_size == 0:
            raise UserError(f"OpenCV wrote an empty video for {path}")
    return count


def contact_sheet(tiles: list[np.ndarray], columns: int = 4) -> np.ndarray:
    """Lay equally sized RGB tiles out in rows of ``columns`` (the last row padded with black).

    A sheet of a few evenly spaced frames shows at a glance where an episode
    went, without opening the video (e.g. in a README or an issue).
    """
    if not tiles:
        raise ValueError("contact_sheet needs at least one tile")
    columns = max(1, min(columns, len(tiles)))
    blank = np.zeros_like(tiles[0])
    padded = list(tiles) + [blank] * (-len(tiles) % columns)
    rows = [np.concatenate(padded[i:i + columns], axis=1) for i in range(0, len(padded), columns)]
    return np.concatenate(rows, axis=0)


def write_png(path: str | os.PathLike, rgb: np.ndarray) -> None:
    path = Path(path)
    ok, data = cv2.imencode(".png", cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR))
    if not ok:
        raise UserError(f"could not encode PNG for {path}")
    with atomic_path(path, suffix=".png") as tmp:
        tmp.write_bytes(data.tobytes())
