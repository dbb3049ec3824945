"""The interactive recorder in a real window: Xvfb + xdotool drive ``curriculum-ppo record``.

Skipped unless ``Xvfb`` and ``xdotool`` are on PATH (Debian: ``apt-get install
xvfb xdotool``). With ImageMagick's ``import`` present, a screenshot of the
running recorder is left in the test's tmp directory.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from curriculum_ppo.demo.store import load_demo
from curriculum_ppo.demo.verify import verify_demo

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Xvfb is an X11 server (Linux only)"),
]

WINDOW = "curriculum-ppo record"


def _require(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not on PATH (apt-get install xvfb xdotool)")


@pytest.fixture(scope="module")
def display(tmp_path_factory):
    """A private Xvfb server; yields its DISPLAY (e.g. ':3'). Xvfb picks a free number itself."""
    _require("Xvfb", "xdotool")
    log = tmp_path_factory.mktemp("xvfb") / "xvfb.log"
    read_fd, write_fd = os.pipe()
    with open(log, "wb") as log_file:
        proc = subprocess.Popen(
            ["Xvfb", "-displayfd", str(write_fd), "-screen", "0", "1280x1024x24", "-nolisten", "tcp"],
            pass_fds=(write_fd,), stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
    os.close(write_fd)
    try:
        number = b""
        deadline = time.monotonic() + 20
        while not number.endswith(b"\n"):
            ready, _, _ = select.select([read_fd], [], [], max(0.0, deadline - time.monotonic()))
            chunk = os.read(read_fd, 16) if ready else b""
            if not chunk:
                pytest.fail(f"Xvfb did not start: {log.read_text(errors='replace')[-500:]}")
            number += chunk
        yield f":{int(number)}"
    finally:
        os.close(read_fd)
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def close_window(display: str, window: str) -> None:
    """Send WM_DELETE_WINDOW, as a window manager's close button does (Xvfb has no window manager)."""
    libx11 = ctypes.util.find_library("X11") or "libX11.so.6"
    x = ctypes.CDLL(libx11)
    x.XOpenDisplay.restype = ctypes.c_void_p
    x.XOpenDisplay.argtypes = [ctypes.c_char_p]
    x.XInternAtom.restype = ctypes.c_ulong
    x.XInternAtom.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
    x.XFlush.argtypes = x.XCloseDisplay.argtypes = [ctypes.c_void_p]

    class ClientMessage(ctypes.Structure):
        _fields_ = [("type", ctypes.c_int), ("serial", ctypes.c_ulong), ("send_event", ctypes.c_int),
                    ("display", ctypes.c_void_p), ("window", ctypes.c_ulong), ("message_type", ctypes.c_ulong),
                    ("format", ctypes.c_int), ("data", ctypes.c_long * 5)]

    class XEvent(ctypes.Union):
        _fields_ = [("xclient", ClientMessage), ("pad", ctypes.c_long * 24)]

    x.XSendEvent.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.c_int, ctypes.c_long, ctypes.POINTER(XEvent)]
    dpy = x.XOpenDisplay(display.encode())
    assert dpy, f"cannot open display {display}"
    try:
        event = XEvent()
        event.xclient.type = 33  # ClientMessage
        event.xclient.window = int(window)
        event.xclient.message_type = x.XInternAtom(dpy, b"WM_PROTOCOLS", 0)
        event.xclient.format = 32
        event.xclient.data[0] = x.XInternAtom(dpy, b"WM_DELETE_WINDOW", 0)
        x.XSendEvent(dpy, int(window), 0, 0, ctypes.byref(event))
        x.XFlush(dpy)
    finally:
        x.XCloseDisplay(dpy)


class Recorder:
    """``python -m curriculum_ppo record ...`` on ``display``, and xdotool to type into it."""

    def __init__(self, display: str, cwd: Path, *args: str):
        self.env = {k: v for k, v in os.environ.items() if k not in ("WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
        self.env["DISPLAY"] = display
        self.cwd = cwd
        self.stdout = open(cwd / "recorder.stdout", "w+")
        self.stderr = open(cwd / "recorder.stderr", "w+")
        self.proc = subprocess.Popen([sys.executable, "-m", "curriculum_ppo", "record", *args], cwd=cwd,
                                     env=self.env, stdout=self.stdout, stderr=self.stderr)
        self.window = self._find_window()

    def _find_window(self) -> str:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"the recorder exited early with code {self.proc.returncode}: {self.output()}")
            found = subprocess.run(["xdotool", "search", "--onlyvisible", "--name", WINDOW], env=self.env,
                                   capture_output=True, text=True, timeout=20)
            ids = found.stdout.split()
            if ids:
                time.sleep(0.5)  # let the first frame be drawn
                return ids[0]
            time.sleep(0.2)
        pytest.fail(f"no recorder window within 60 s: {self.output()}")

    def key(self, *names: str, pause: float = 0.1) -> None:
        for name in names:
            subprocess.run(["xdotool", "key", "--window", self.window, name], env=self.env, timeout=10,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
            time.sleep(pause)

    def screenshot(self, path: Path) -> None:
        if shutil.which("import"):
            subprocess.run(["import", "-window", "root", str(path)], env=self.env, timeout=30,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def wait(self, timeout: float = 60) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the recorder did not exit within {timeout} s: {self.output()}")

    def output(self) -> str:
        self.stdout.flush(), self.stderr.flush()
        return (self.cwd / "recorder.stdout").read_text() + (self.cwd / "recorder.stderr").read_text()[-2000:]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.stdout.close()
        self.stderr.close()


def test_play_pause_step_rewind_quit(display, tmp_path):
    (tmp_path / "tmp").mkdir()
    out = tmp_path / "tmp" / "demo.h5"
    rec = Recorder(display, tmp_path, "--game", "MontezumaRevenge", "--out", "tmp/demo.h5", "--fps", "60")
    try:
        rec.key("p", "Right")  # the window opens paused
        time.sleep(2.5)  # > 60 frames even on a slow machine, so some RIGHT frames survive the rewind
        rec.key("space")
        time.sleep(0.5)
        rec.key("p", "n", "n", "period", "BackSpace")  # pause, step 3 frames, rewind 60 frames
        rec.key("p", "Left")
        time.sleep(1.0)
        rec.key("h", pause=0.3)
        rec.screenshot(tmp_path / "recorder-help.png")
        rec.key("h", pause=0.3)
        rec.screenshot(tmp_path / "recorder.png")
        rec.key("q")
        code = rec.wait()
        output = rec.output()
    finally:
        rec.close()
    assert code == 0, output
    assert f"to {Path('tmp/demo.h5')}" in output and "saved" in output, output
    assert out.exists()
    demo = load_demo(out)
    assert len(demo) > 0
    names = {demo.action_set[a] for a in demo.actions}
    assert {"RIGHT", "LEFT"} <= names, names
    assert demo.attrs["source"] == "recorded"
    assert json.loads(demo.attrs["source_detail"])["rewinds"] == 1
    result = verify_demo(demo)
    assert result.ok, result.reason


def test_ctrl_c_saves_resume_continues_and_closing_saves(display, tmp_path):
    out = tmp_path / "demo.h5"
    rec = Recorder(display, tmp_path, "--out", str(out), "--fps", "120")
    try:
        rec.key("p", "Right")
        time.sleep(1.0)
        rec.proc.send_signal(signal.SIGINT)
        code = rec.wait()
        output = rec.output()
    finally:
        rec.close()
    assert code == 130, output
    assert output.startswith("interrupted: saved "), output
    first = load_demo(out)
    assert len(first) > 0 and verify_demo(first).ok

    # without --resume the file is not overwritten (a one-line error, exit 2)
    refused = subprocess.run([sys.executable, "-m", "curriculum_ppo", "record", "--out", str(out)],
                             env={**os.environ, "DISPLAY": display}, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "already exists; pass --resume" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr

    rec = Recorder(display, tmp_path, "--out", str(out), "--resume", "--fps", "120")
    try:
        rec.key("p", "Left")
        time.sleep(1.0)
        close_window(display, rec.window)  # closing the window saves too
        code = rec.wait()
        output = rec.output()
    finally:
        rec.close()
    assert code == 0, output
    demo = load_demo(out)
    assert len(demo) > len(first)
    assert list(demo.actions[:len(first)]) == list(first.actions)
    assert demo.action_set[demo.actions[-1]] == "LEFT"
    result = verify_demo(demo)
    assert result.ok, result.reason
