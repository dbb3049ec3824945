"""The picture writers: contact sheets and atomic PNG/MP4 files."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

import os
import subprocess
import sys
from pathlib import Path

import av

from curriculum_ppo.errors import UserError
from curriculum_ppo.video import contact_sheet, write_mp4, write_png


def _tile(value: int) -> np.ndarray:
    return np.full((3, 5, 3), value, np.uint8)


def test_contact_sheet_rows_order_and_padding():
    sheet = contact_sheet([_tile(v) for v in (10, 20, 30, 40, 50)], columns=4)
    assert sheet.shape == (6, 20, 3)  # 2 rows of 4 tiles
    assert [int(sheet[0, 5 * i, 0]) for i in range(4)] == [10, 20, 30, 40]  # row-major order
    assert int(sheet[3, 0, 0]) == 50 and not sheet[3:, 5:].any()  # the last row padded with black
    assert contact_sheet([_tile(7), _tile(8)], columns=4).shape == (3, 10, 3)  # fewer tiles: one short row
    with pytest.raises(ValueError):
        contact_sheet([])


def test_png_and_mp4_round_trip_and_leave_no_temp_files(tmp_path):
    rgb = np.zeros((20, 32, 3), np.uint8)
    rgb[:, :, 0] = 200  # red in RGB
    write_png(tmp_path / "a.png", rgb)
    assert cv2.imread(str(tmp_path / "a.png"))[0, 0].tolist() == [0, 0, 200]  # BGR on disk
    assert write_mp4(tmp_path / "a.mp4", [rgb] * 5, fps=15) == 5
    cap = cv2.VideoCapture(str(tmp_path / "a.mp4"))
    try:
        assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 5
    finally:
        cap.release()
    with pytest.raises(UserError, match="no frames"):
        write_mp4(tmp_path / "empty.mp4", [])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mp4", "a.png"]


def _gradient_frames(count: int, h: int = 105, w: int = 80) -> list[np.ndarray]:
    """Frames that differ from each other (a moving bar), with odd height to exercise the padding."""
    frames = []
    for i in range(count):
        rgb = np.zeros((h, w, 3), np.uint8)
        rgb[:, :, 1] = 40
        rgb[:, (3 * i) % w: (3 * i) % w + 6] = (220, 30, 30)
        frames.append(rgb)
    return frames


def test_mp4_is_h264_yuv420p_faststart_with_every_frame(tmp_path):
    frames = _gradient_frames(30)
    path = tmp_path / "clip.mp4"
    assert write_mp4(path, frames, fps=15) == 30
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert stream.codec_context.pix_fmt == "yuv420p"
        assert (stream.codec_context.width, stream.codec_context.height) == (80, 106)  # padded to even
        assert float(stream.average_rate) == 15.0
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    assert len(decoded) == 30
    for got, want in ((decoded[0], frames[0]), (decoded[-1], frames[-1])):
        error = np.abs(got[:105].astype(int) - want.astype(int))
        assert error.mean() < 4  # lossy, but the same picture
        bar = int(np.argmax(got[50, :, 0]))
        assert want[50, bar, 0] == 220  # the red bar is where it was drawn
    data = path.read_bytes()
    assert data.index(b"moov") < data.index(b"mdat")  # faststart: playable before fully downloaded
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]


def _write_video_with_small_file_limit(path: str) -> None:
    import resource
    import signal

    resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG, as on a full disk
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (210, 160, 3), dtype=np.uint8) for _ in range(60)]  # noise: large
    sys.exit(_cli_like(path, frames))


def _cli_like(path, frames) -> int:
    """What the CLI does with a UserError: one line, exit 2."""
    try:
        write_mp4(path, frames, fps=60)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


@pytest.mark.parametrize("case", ["full disk", "unwritable directory", "missing directory"])
def test_mp4_write_errors_are_one_line_and_leave_nothing(tmp_path, case):
    target = tmp_path / "out" / "v.mp4"
    target.parent.mkdir()
    if case == "unwritable directory":
        target = Path("/proc/v.mp4")  # not writable, not even by root
    if case == "missing directory":
        target = tmp_path / "nope" / "v.mp4"
    code = (
        "import sys; sys.path.insert(0, %r); import test_video as t; t._write_video_with_small_file_limit(%r)"
        if case == "full disk" else
        "import sys; sys.path.insert(0, %r); import test_video as t, numpy as np; "
        "sys.exit(t._cli_like(%r, [np.zeros((10, 10, 3), np.uint8)] * 3))"
    ) % (os.path.dirname(__file__), str(target))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and "v.mp4" in lines[0], proc.stderr
    assert not target.exists()
    if case == "full disk":
        assert list(target.parent.iterdir()) == []  # the temporary file is gone too


def _chromium() -> str | None:
    import shutil

    return next((shutil.which(n) for n in ("chromium-headless-shell", "chromium") if shutil.which(n)), None)


PAGE = """<html><body><video id="v" muted playsinline></video><div id="out">pending</div><script>
const v = document.getElementById('v'), out = document.getElementById('out');
v.addEventListener('error', () => { out.textContent = 'error ' + (v.error && v.error.code); });
v.addEventListener('canplaythrough', () => { out.textContent = 'ready ' + v.readyState + ' ' + v.duration; v.play(); });
v.src = 'clip.mp4';
</script></body></html>"""


@pytest.mark.skipif(_chromium() is None, reason="Debian's chromium-headless-shell is not installed (.ci/run installs it)")
def test_a_browser_plays_the_video(tmp_path):
    """A real browser: headless Chromium loads the MP4 in a <video>, knows its duration and can play it."""
    frames = _gradient_frames(60, 210, 160)
    write_mp4(tmp_path / "clip.mp4", frames, fps=30)
    (tmp_path / "page.html").write_text(PAGE)
    proc = subprocess.run(
        [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files",
         "--autoplay-policy=no-user-gesture-required", "--virtual-time-budget=10000", "--dump-dom",
         (tmp_path / "page.html").as_uri()],
        capture_output=True, text=True, timeout=120)
    out = proc.stdout[proc.stdout.index('<div id="out">') + 14:].split("<", 1)[0]
    assert out == "ready 4 2", f"the browser said {out!r} (error 4: format not supported)"
