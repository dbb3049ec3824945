"""The interactive recorder's OpenCV window: ``curriculum-ppo record --game G --out F.h5``.

Only the screen lives here: the window shows the game scaled up (nearest
neighbour) with a side panel (status and key map), reads keys with
``cv2.waitKeyEx`` and paces :meth:`RecordingSession.tick` to the chosen
frames/s. What the keys do, and why directions are *latched* (OpenCV reports no
key releases), is in :mod:`curriculum_ppo.demo.session`.

The window opens paused, so the key map can be read first: press ``p`` to play.

Ending a recording: ``q``/``Esc`` or closing the window saves and exits 0;
Ctrl-C in the terminal (or SIGTERM/SIGHUP) saves and exits 130 (143, 129), the
shell's code for "interrupted", so scripts can tell. Either way one line says
where the demo was saved. The signal only sets a flag that the loop checks
between frames, so a frame is never half-recorded when it is saved; a second
Ctrl-C during that save aborts it (the atomic save leaves the old file intact).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import sys
import time
from pathlib import Path

import numpy as np

from curriculum_ppo.demo.session import RecordingSession, SessionStatus
from curriculum_ppo.errors import UserError

NO_DISPLAY = ("no display: the interactive recorder needs a window; "
              "use --actions FILE for scripted demos or run under Xvfb")

PANEL_WIDTH = 330
BG = (32, 32, 32)  # BGR
FG = (235, 235, 235)
DIM = (150, 150, 150)
KEY = (90, 200, 255)
GOOD = (110, 220, 110)
WARN = (60, 80, 255)
NOTE = (80, 230, 255)
FONT = 0  # cv2.FONT_HERSHEY_SIMPLEX
MESSAGE_SECONDS = 3.0
MAX_BATCH = 16  # most frames emulated between two redraws
JOYSTICK_HELP = (
    "Directions are LATCHED: a direction key sets the joystick and it",
    "stays there until another direction or stop (5 / i / Enter).",
    "OpenCV reports no key releases, so 'move while held' cannot work.",
    "Grids: numpad 7 8 9 / 4 5 6 / 1 2 3, or 7 8 9 / u i o / j k l.",
    "Space adds FIRE for a few frames (a jump); f holds FIRE until f again.",
    "Pause (p) and step (n) to place every action on the exact frame.",
)


# --- display checks ------------------------------------------------------------------
def _opencv_gui(cv2) -> str:
    match = re.search(r"^\s*GUI:\s*(\S+)", cv2.getBuildInformation(), re.MULTILINE)
    return match.group(1) if match else "UNKNOWN"


def _x_server_reachable(display: str, timeout: float = 2.0) -> bool:
    """Can an X client connect to ``display`` (``[host]:N[.S]``)? Unparseable forms count as yes."""
    match = re.fullmatch(r"(?:(unix)|([^:/]*)):(\d+)(?:\.\d+)?", display.strip())
    if not match:
        return True
    number = int(match.group(3))
    host = match.group(2)
    if match.group(1) or not host:
        for address in ("\0/tmp/.X11-unix/X%d" % number, "/tmp/.X11-unix/X%d" % number):
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                    s.settimeout(timeout)
                    s.connect(address)
                return True
            except OSError:
                continue
        if match.group(1):
            return False
        host = "localhost"
    try:
        with socket.create_connection((host, 6000 + number), timeout=timeout):
            return True
    except OSError:
        return False


def check_display():
    """Return the cv2 module if a window can be opened, else raise the one-line :data:`NO_DISPLAY` error."""
    try:
        import cv2
    except ImportError as exc:  # pragma: no cover - opencv is a dependency
        raise UserError(f"{NO_DISPLAY} (OpenCV cannot be imported: {exc})") from None
    if _opencv_gui(cv2).upper() == "NONE":
        raise UserError(f"{NO_DISPLAY} (this OpenCV has no GUI support: opencv-python-headless?)")
    if sys.platform.startswith(("linux", "freebsd", "openbsd", "netbsd")):
        display = os.environ.get("DISPLAY", "")
        if not display:
            raise UserError(NO_DISPLAY)
        if not _x_server_reachable(display):
            raise UserError(f"{NO_DISPLAY} (cannot connect to the X server DISPLAY={display})")
    return cv2


def _quiet_qt_fonts(cv2) -> None:
    """opencv-python's Qt has no fonts of its own and warns on every window; point it at system fonts.

    Everything the recorder writes is drawn by cv2.putText, so this only silences
    the warnings.
    """
    if os.environ.get("QT_QPA_FONTDIR"):
        return
    if (Path(cv2.__file__).parent / "qt" / "fonts").is_dir():
        return
    for candidate in ("/usr/share/fonts/truetype/dejavu", "/usr/share/fonts/TTF", "/usr/share/fonts/dejavu",
                      "/usr/share/fonts/truetype/liberation", "/usr/share/fonts/liberation"):
        path = Path(candidate)
        if path.is_dir() and any(path.glob("*.ttf")):
            os.environ["QT_QPA_FONTDIR"] = str(path)
            return


# --- drawing -------------------------------------------------------------------------
class Renderer:
    """Composes the window image (BGR): the game scaled up, the side panel, overlays.

    Anti-aliased text is slow in OpenCV 5 (about 0.5 ms a call), so the panel is
    kept between frames and only the values that changed are redrawn; the key
    map, the help overlay and the banners are drawn once.
    """

    def __init__(self, cv2, scale: int):
        self.cv2 = cv2
        self.scale = scale
        self.game_w, self.game_h = 160 * scale, 210 * scale
        self.font_scale = 0.45 if scale <= 3 else 0.5
        (_, text_h), _ = cv2.getTextSize("Ag", FONT, self.font_scale, 1)
        self.line = text_h + 8
        self.panel_w = PANEL_WIDTH if scale <= 3 else PANEL_WIDTH + 40
        rows = 12 + len(RecordingSession.panel_lines())
        self.height = max(self.game_h, rows * self.line + 16)
        self.width = self.game_w + self.panel_w
        self.game_y = (self.height - self.game_h) // 2
        self.x0, self.col2 = 12, 12 + 112
        self.panel = np.empty((self.height, self.panel_w, 3), dtype=np.uint8)
        self.panel[:] = BG
        self._shown: dict[str, tuple] = {}
        self._slots: dict[str, tuple[int, int]] = {}  # name -> (x, baseline y)
        self._banners: dict[str, np.ndarray] = {}
        self._help_img: np.ndarray | None = None
        self._layout()

    def text(self, img, s: str, x: int, y: int, color=FG, scale: float | None = None, thickness: int = 1) -> None:
        self.cv2.putText(img, s, (x, y), FONT, scale or self.font_scale, color, thickness, self.cv2.LINE_AA)

    def _layout(self) -> None:
        x0, col2, line = self.x0, self.col2, self.line
        y = 22
        self._slots["title"] = (x0, y)
        y += line
        self._slots["out"] = (x0, y)
        y += line
        for label in ("frame", "score", "lives", "speed", "action", "joystick"):
            self.text(self.panel, label, x0, y, DIM)
            self._slots[label] = (col2, y)
            y += line
        for name in ("state", "saved", "message"):
            self._slots[name] = (x0, y)
            y += line
        self.cv2.line(self.panel, (x0, y - line // 2), (self.panel_w - 12, y - line // 2), (80, 80, 80), 1)
        y += 4
        for keys, label in RecordingSession.panel_lines():
            self.text(self.panel, keys, x0, y, KEY)
            self.text(self.panel, label, col2, y)
            y += line

    def _set(self, slot: str, value: str, color=FG, scale: float | None = None) -> None:
        if self._shown.get(slot) == (value, color, scale):
            return
        self._shown[slot] = (value, color, scale)
        x, y = self._slots[slot]
        self.panel[max(0, y - self.line + 3):y + 6, x:] = BG
        if value:
            self.text(self.panel, value, x, y, color, scale)

    def draw(self, session: RecordingSession, message: str | None) -> np.ndarray:
        cv2 = self.cv2
        status = session.status()
        self._update_panel(status, message)
        img = np.empty((self.height, self.width, 3), dtype=np.uint8)
        if self.height > self.game_h:
            img[:, :self.game_w] = 0
        game = cv2.resize(session.screen(), (self.game_w, self.game_h), interpolation=cv2.INTER_NEAREST)
        img[self.game_y:self.game_y + self.game_h, :self.game_w] = game[..., ::-1]
        img[:, self.game_w:] = self.panel
        if status.game_over:
            self._banner(img, "GAME OVER", WARN)
        elif status.paused:
            self._banner(img, "PAUSED", NOTE)
        if session.show_help:
            self._help(img)
        return img

    def _update_panel(self, st: SessionStatus, message: str | None) -> None:
        self._set("title", st.game, FG, self.font_scale + 0.1)
        self._set("out", f"-> {Path(st.out).name}", DIM)
        self._set("frame", f"{st.frame}")
        self._set("score", f"{st.score:g}")
        self._set("lives", f"{st.lives}")
        self._set("speed", f"{st.fps:g} frames/s ({st.fps / 60:.2g}x)")
        self._set("action", st.action, GOOD)
        fire = "held" if st.fire_held else (f"{st.fire_frames_left}" if st.fire_frames_left else "-")
        self._set("joystick", f"{st.direction}   fire {fire}")
        if st.game_over:
            self._set("state", "GAME OVER  (Bksp: rewind)", WARN)
        elif st.paused:
            self._set("state", "PAUSED  (p: play)", NOTE)
        else:
            self._set("state", "RECORDING", GOOD)
        self._set("saved", st.file_state[:42], DIM)
        self._set("message", (message or "")[:42], NOTE)

    def _banner(self, img, label: str, color) -> None:
        patch = self._banners.get(label)
        if patch is None:
            scale = 0.6 + 0.2 * self.scale
            (w, h), base = self.cv2.getTextSize(label, FONT, scale, 2)
            patch = np.zeros((h + base + 16, w + 16, 3), dtype=np.uint8)
            self.text(patch, label, 8, 8 + h, color, scale, 2)
            self._banners[label] = patch
        ph, pw = patch.shape[:2]
        x, y = max(0, (self.game_w - pw) // 2), self.game_y + 8
        img[y:y + ph, x:x + pw] = patch[:, :min(pw, self.game_w)]

    def _help(self, img) -> None:
        if self._help_img is None:
            help_img = np.zeros_like(img)
            x0, y, line = 16, 26, self.line
            self.text(help_img, "Keys  (h: close help)", x0, y, NOTE, self.font_scale + 0.1)
            y += line + 4
            for keys, meaning in RecordingSession.help_lines():
                self.text(help_img, keys, x0, y, KEY)
                self.text(help_img, meaning, x0 + 130, y)
                y += line
            y += line // 2
            for text in JOYSTICK_HELP:
                self.text(help_img, text, x0, y, FG)
                y += line
            self._help_img = help_img
        dark = self.cv2.convertScaleAbs(img, alpha=0.18)
        np.maximum(dark, self._help_img, out=img)


# --- main loop -----------------------------------------------------------------------
class _Signals:
    """Turn SIGINT/SIGTERM/SIGHUP into a flag the loop checks between frames."""

    def __init__(self):
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self):
        for name in ("SIGINT", "SIGTERM", "SIGHUP"):
            sig = getattr(signal, name, None)
            if sig is not None:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # second Ctrl-C: give up (a save in progress is atomic)
        self.received = signum

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        return False


def _window_closed(cv2, name: str) -> bool:
    try:
        return cv2.getWindowProperty(name, cv2.WND_PROP_VISIBLE) < 1
    except cv2.error:
        return True


def run_loop(cv2, session: RecordingSession, scale: int, name: str, signals: _Signals) -> str:
    """Play until quit; return why it ended: 'quit', 'closed' or 'signal'.

    Frames are paced by the wall clock: at ``fps`` frames/s, frame k is due
    ``k / fps`` seconds after (re)starting. The window is redrawn once per loop,
    after emulating every frame that is due (several per redraw above the
    display rate), and keys are read while waiting for the next one. A loop that
    falls more than :data:`MAX_BATCH` frames behind slows down instead of
    catching up.
    """
    renderer = Renderer(cv2, scale)
    cv2.namedWindow(name, cv2.WINDOW_AUTOSIZE | cv2.WINDOW_GUI_NORMAL)
    seen_visible = False
    message_serial, message_until = session.message_serial, 0.0
    clock, done, fps = time.perf_counter(), 0, session.fps
    shown = None
    while True:
        if signals.received is not None:
            return "signal"
        now = time.perf_counter()
        if session.paused or session.fps != fps:
            clock, done, fps = now, 0, session.fps
        if not session.paused:
            due = int((now - clock) * fps) + 1 - done
            if due > MAX_BATCH:
                clock += (due - MAX_BATCH) / fps
                due = MAX_BATCH
            for _ in range(max(0, due)):
                done += 1
                if not session.tick():
                    break
        now = time.perf_counter()
        if session.message_serial != message_serial:
            message_serial, message_until = session.message_serial, now + MESSAGE_SECONDS
        message = session.message if now < message_until else None
        view = (session.status(), session.show_help, message)
        if view != shown:
            cv2.imshow(name, renderer.draw(session, message))
            shown = view
        if session.paused:
            wait = 15
        else:
            wait = max(1, min(100, int(((clock + done / fps) - time.perf_counter()) * 1000)))
        key = cv2.waitKeyEx(wait)
        if key != -1 and session.press(key) == "quit" or session.quit_requested:
            return "quit"
        if _window_closed(cv2, name):
            if seen_visible:
                return "closed"
        else:
            seen_visible = True


def run_window_recorder(args) -> int:
    """``record`` without ``--actions``: open the window, play, save. Returns the exit code."""
    scale = int(getattr(args, "scale", 3))
    if not 1 <= scale <= 10:
        raise UserError(f"--scale must be between 1 and 10, got {scale}")
    cv2 = check_display()
    session = RecordingSession.start(
        args.game, args.out, resume=bool(args.resume), store_frames=bool(args.store_frames),
        state_interval=int(args.state_interval), fps=float(args.fps), autosave=int(args.autosave), paused=True,
        log=lambda line: print(line, file=sys.stderr))
    _quiet_qt_fonts(cv2)
    name = f"curriculum-ppo record - {session.status().game} - {Path(args.out).name}"
    if session.resumed_from is not None:
        session.say(f"resumed at frame {session.frame}: p to play")
    else:
        session.say("paused: press p to play, h for help")
    with _Signals() as signals:
        try:
            try:
                why = run_loop(cv2, session, scale, name, signals)
            except cv2.error as exc:
                if session.frame == 0 and not session.dirty:
                    raise UserError(f"{NO_DISPLAY} (OpenCV could not open a window: {str(exc).strip()})") from None
                print(f"curriculum-ppo record: window error ({str(exc).strip()}); saving", file=sys.stderr)
                why = "closed"
            line = session.finish()
        finally:
            try:
                cv2.destroyAllWindows()
                cv2.waitKey(1)
            except cv2.error:
                pass
    if why == "signal":
        signum = signals.received or signal.SIGINT
        print(f"interrupted: {line}")
        return 128 + int(signum)
    print(line)
    return 0
