"""Writing the pictures people look at: MP4 videos and PNG images, atomically."""

from __future__ import annotations

import os
from collections.abc import Iterable
from fractions import Fraction
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


def _even(rgb: np.ndarray) -> np.ndarray:
    """Pad to even height and width with black: yuv420p halves both for its colour planes."""
    h, w = rgb.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return np.ascontiguousarray(rgb)
    return np.pad(rgb, ((0, h % 2), (0, w % 2), (0, 0)))


def write_mp4(path: str | os.PathLike, frames: Iterable[np.ndarray], fps: float = 60.0) -> int:
    """Write RGB frames to an H.264 MP4 (yuv420p, faststart) atomically; returns the number of frames.

    H.264 in yuv420p with the index at the front (``movflags=faststart``) is what browsers, GitHub's
    preview, VS Code and Jupyter play. PyAV encodes it in-process with the libx264 that its wheel
    ships, so no system ffmpeg is needed; ``crf 18`` keeps Atari's flat colours and sharp edges.
    """
    import av

    path = Path(path)
    count = 0
    with atomic_path(path, suffix=path.suffix or ".mp4") as tmp:
        try:
            with av.open(str(tmp), mode="w", format="mp4", options={"movflags": "+faststart"}) as container:
                stream = None
                for rgb in frames:
                    rgb = _even(np.asarray(rgb, dtype=np.uint8))
                    if stream is None:
                        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
                        stream.width, stream.height = rgb.shape[1], rgb.shape[0]
                        stream.pix_fmt = "yuv420p"
                        stream.options = {"crf": "18", "preset": "medium"}
                    for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                        container.mux(packet)
                    count += 1
                if stream is not None:
                    for packet in stream.encode():
                        container.mux(packet)
        except av.FFmpegError as exc:
            if isinstance(exc, OSError):
                raise  # a full or unwritable disk: atomic_path turns it into one line
            raise UserError(f"could not encode video {path}: {exc}") from None
        if count == 0:
            raise UserError(f"no frames to write to {path}")
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
