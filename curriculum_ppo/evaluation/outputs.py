"""The evaluation's output files: refused before any work when they cannot be written, the JSON written atomically."""

from __future__ import annotations

import json
import os
from pathlib import Path

from curriculum_ppo.atomic import atomic_path, check_destination
from curriculum_ppo.errors import UserError


def check_writable(path: str | os.PathLike, flag: str) -> Path:
    """Fail before the evaluation (not after it) when an output file cannot be written."""
    path = check_destination(path, flag)
    if path.exists() and not os.access(path, os.W_OK):
        raise UserError(f"cannot write {flag} {path}: the file is not writable")
    return path


def check_outputs(json_out, video_out, video_scale: int) -> tuple[Path | None, Path | None]:
    """The output paths, refused before any work when they cannot be written or collide."""
    if video_scale < 1:
        raise UserError(f"--video-scale must be at least 1 (got {video_scale})")
    json_path = check_writable(json_out, "--json") if json_out else None
    video_path = check_writable(video_out, "--video") if video_out else None
    if json_path is not None and video_path is not None and json_path.resolve() == video_path.resolve():
        raise UserError("--json and --video name the same file")
    if video_path is not None and video_path.suffix.lower() == ".png":
        raise UserError(f"--video {video_path}: give an .mp4 name (its PNG contact sheet goes next to it)")
    if (json_path is not None and video_path is not None
            and json_path.resolve() == video_path.with_suffix(".png").resolve()):
        raise UserError(f"--json {json_path} is where the video's contact sheet goes; choose another name")
    if video_path is not None:
        check_writable(video_path.with_suffix(".png"), "--video's contact sheet")
    return json_path, video_path


def write_json(path: Path, report: dict) -> None:
    """The JSON report, written whole or not at all."""
    with atomic_path(path, suffix=".json") as tmp:
        tmp.write_text(json.dumps(report, indent=2) + "\n")
