"""The interactive recorder's logic, without a window (``record --game G --out F.h5``).

:class:`RecordingSession` owns the :class:`~curriculum_ppo.emulator.Emulator`
and the :class:`~curriculum_ppo.demo.store.DemoBuilder`. A front end (the OpenCV
window in :mod:`curriculum_ppo.demo.record_window`, or a test) feeds it key
codes with :meth:`RecordingSession.press` (or calls the command methods
directly), calls :meth:`RecordingSession.tick` once per emulator frame, and
draws :meth:`RecordingSession.screen` and :meth:`RecordingSession.status`.

Controls: a *latched* joystick
------------------------------
OpenCV's ``waitKey`` reports one key press at a time and never a key release,
and the operating system's key autorepeat only starts after a delay of a
quarter to half a second (its rate and delay are user settings). "Move while
the key is held" therefore cannot be implemented reliably: a tap would move for
the whole autorepeat delay, and the frame-exact timing would depend on the
desktop's keyboard settings. The recorder uses a **latched joystick** instead:

* a direction key puts the joystick in that direction and it *stays* there
  until another direction key or a stop key is pressed. Pressing the same
  direction again (which is what autorepeat does while a key is held) changes
  nothing, so holding a key behaves like tapping it;
* ``SPACE`` presses FIRE for the next :data:`FIRE_FRAMES` emulated frames
  (a jump in Montezuma's Revenge), combined with the latched direction
  (``RIGHT`` + ``SPACE`` = ``RIGHTFIRE``); autorepeat while SPACE is held keeps
  re-arming it;
* ``f`` (or keypad ``0``) latches FIRE itself on/off, so every ``*FIRE`` action
  can also be held for as long as needed.

Direction keys are the arrows (the four straight directions) and two 3x3
grids for all eight: the numeric keypad (``7 8 9 / 4 5 6 / 1 2 3``, with or
without NumLock) and, for keyboards without one, ``7 8 9 / u i o / j k l`` on
the main keyboard (the same shape as a laptop's embedded keypad); the middle of
each grid (``5``, ``i``) and ``Enter`` release the joystick. With
pause and single-frame stepping (the pulse and the latch count emulated frames,
not wall-clock time), every one of the game's minimal-set actions can be
recorded on any frame. Shift cannot be used as a FIRE modifier: OpenCV's Qt
back end reports ``A`` and ``a`` alike (uppercase codes are bound like lowercase
ones, for back ends that do report them, and for Caps Lock).
"""

from __future__ import annotations

import datetime as _dt
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from curriculum_ppo.atomic import check_destination
from curriculum_ppo.demo import schema
from curriculum_ppo.demo.store import DemoBuilder, load_demo, save_demo
from curriculum_ppo.emulator import Emulator, EmulatorSettings, display_name, resolve_game
from curriculum_ppo.errors import UserError

#: Emulated frames a SPACE press holds FIRE for.
FIRE_FRAMES = 6
#: Frames one rewind press goes back (1 second of game time at the Atari's 60 frames/s).
REWIND_FRAMES = 60
#: Playback speeds (emulated frames per second) that +/- step through.
SPEEDS = (1, 2, 5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 240, 480)
#: The direction names, by (vertical, horizontal) component.
DIRECTIONS = ("", "UP", "DOWN", "LEFT", "RIGHT", "UPLEFT", "UPRIGHT", "DOWNLEFT", "DOWNRIGHT")


# --- key codes -----------------------------------------------------------------------
# cv2.waitKeyEx returns the ASCII code for printable keys and a back-end specific
# code for the others: X11 keysyms with the Qt and GTK back ends (Linux, BSD),
# virtual-key codes << 16 on Windows, NSEvent function-key characters on macOS.
class Key:
    ESC = 27
    ENTER = 13
    BACKSPACE = 8
    SPACE = 32
    # X11 keysyms (Qt and GTK back ends)
    X_LEFT, X_UP, X_RIGHT, X_DOWN = 0xFF51, 0xFF52, 0xFF53, 0xFF54
    X_HOME, X_PRIOR, X_NEXT, X_END = 0xFF50, 0xFF55, 0xFF56, 0xFF57
    X_BACKSPACE, X_RETURN, X_ESCAPE = 0xFF08, 0xFF0D, 0xFF1B
    X_F1, X_F2 = 0xFFBE, 0xFFBF
    X_KP_ENTER = 0xFF8D
    X_KP_HOME, X_KP_LEFT, X_KP_UP, X_KP_RIGHT, X_KP_DOWN = 0xFF95, 0xFF96, 0xFF97, 0xFF98, 0xFF99
    X_KP_PRIOR, X_KP_NEXT, X_KP_END, X_KP_BEGIN, X_KP_INSERT = 0xFF9A, 0xFF9B, 0xFF9C, 0xFF9D, 0xFF9E
    X_KP_ADD, X_KP_SUBTRACT = 0xFFAB, 0xFFAD
    X_KP_0 = 0xFFB0  # X_KP_0 + n is keypad digit n
    # Windows (virtual-key code << 16)
    W_PRIOR, W_NEXT, W_END, W_HOME = 0x210000, 0x220000, 0x230000, 0x240000
    W_LEFT, W_UP, W_RIGHT, W_DOWN = 0x250000, 0x260000, 0x270000, 0x280000
    W_INSERT, W_F1, W_F2 = 0x2D0000, 0x700000, 0x710000
    # macOS (Cocoa back end)
    M_UP, M_DOWN, M_LEFT, M_RIGHT = 0xF700, 0xF701, 0xF702, 0xF703
    M_F1, M_F2 = 0xF704, 0xF705
    M_HOME, M_END, M_PRIOR, M_NEXT = 0xF729, 0xF72B, 0xF72C, 0xF72D
    M_DELETE = 127


def _letters(chars: str) -> tuple[int, ...]:
    codes: list[int] = []
    for ch in chars:
        codes.append(ord(ch))
        if ch.isalpha():
            codes.append(ord(ch.upper()))
    return tuple(codes)


@dataclass(frozen=True)
class Binding:
    """One row of the key map: the keys, the command they run, and how help shows them."""

    keys: str  # as shown in the help, e.g. "Left / 4 / j"
    command: str
    arg: str | None
    codes: tuple[int, ...]
    help: str
    short: str = ""  # a few words for the window's side panel (default: help)

    @property
    def label(self) -> str:
        return self.short or self.help


def _dir(keys: str, direction: str, grid: str, kp_digit: int, kp_nav: int, extra: tuple[int, ...] = ()) -> Binding:
    codes = _letters(grid) + (Key.X_KP_0 + kp_digit, kp_nav) + extra
    return Binding(keys, "direction", direction, codes,
                   f"joystick {direction} (stays until changed)" if direction else "release the joystick (NOOP)",
                   direction or "stop")


#: The key map, as data: every key code the recorder reacts to, in help order.
BINDINGS: tuple[Binding, ...] = (
    _dir("Up 8", "UP", "8", 8, Key.X_KP_UP, (Key.X_UP, Key.W_UP, Key.M_UP)),
    _dir("Down 2 k", "DOWN", "2k", 2, Key.X_KP_DOWN, (Key.X_DOWN, Key.W_DOWN, Key.M_DOWN)),
    _dir("Left 4 u", "LEFT", "4u", 4, Key.X_KP_LEFT, (Key.X_LEFT, Key.W_LEFT, Key.M_LEFT)),
    _dir("Right 6 o", "RIGHT", "6o", 6, Key.X_KP_RIGHT, (Key.X_RIGHT, Key.W_RIGHT, Key.M_RIGHT)),
    _dir("7 Home", "UPLEFT", "7", 7, Key.X_KP_HOME, (Key.X_HOME, Key.W_HOME, Key.M_HOME)),
    _dir("9 PgUp", "UPRIGHT", "9", 9, Key.X_KP_PRIOR, (Key.X_PRIOR, Key.W_PRIOR, Key.M_PRIOR)),
    _dir("1 End j", "DOWNLEFT", "1j", 1, Key.X_KP_END, (Key.X_END, Key.W_END, Key.M_END)),
    _dir("3 PgDn l", "DOWNRIGHT", "3l", 3, Key.X_KP_NEXT, (Key.X_NEXT, Key.W_NEXT, Key.M_NEXT)),
    _dir("5 i Enter", "", "5i", 5, Key.X_KP_BEGIN, (Key.ENTER, Key.X_RETURN, Key.X_KP_ENTER)),
    Binding("Space", "fire", None, (Key.SPACE,), f"FIRE for the next {FIRE_FRAMES} frames, with the joystick direction",
            "FIRE (+direction)"),
    Binding("f 0", "fire_toggle", None, _letters("f0") + (Key.X_KP_0, Key.X_KP_INSERT, Key.W_INSERT),
            "hold FIRE on / off (latched like the joystick)", "hold FIRE on/off"),
    Binding("p", "pause", None, _letters("p"), "pause / resume", "pause"),
    Binding("n .", "step", None, _letters("n."), "emulate one frame while paused (pauses if running)", "step 1 frame"),
    Binding("Bksp r", "rewind", None, _letters("r") + (Key.BACKSPACE, Key.X_BACKSPACE, Key.M_DELETE),
            f"rewind {REWIND_FRAMES} frames (1 s of game), drop them, pause", "rewind 1 s"),
    Binding("+ =", "faster", None, _letters("+=") + (Key.X_KP_ADD,), "faster (more frames/s)", "faster"),
    Binding("-", "slower", None, _letters("-_") + (Key.X_KP_SUBTRACT,), "slower (fewer frames/s)", "slower"),
    Binding("s F2", "save", None, _letters("s") + (Key.X_F2, Key.W_F2, Key.M_F2), "save now (also autosaves every --autosave frames)", "save"),
    Binding("h F1", "help", None, _letters("h?") + (Key.X_F1, Key.W_F1, Key.M_F1), "this help on / off (opening it pauses)", "help"),
    Binding("q Esc", "quit", None, _letters("q") + (Key.ESC, Key.X_ESCAPE), "save and quit (closing the window and Ctrl-C save too)", "save + quit"),
)
#: key code -> (command, argument), built from :data:`BINDINGS`.
KEYMAP: dict[int, tuple[str, str | None]] = {}
for _b in BINDINGS:
    for _code in _b.codes:
        if _code in KEYMAP:  # pragma: no cover - a programming error in the table
            raise AssertionError(f"key code {_code:#x} bound twice")
        KEYMAP[_code] = (_b.command, _b.arg)
del _b, _code


def split_direction(direction: str) -> tuple[str, str]:
    """``"UPRIGHT"`` -> ``("UP", "RIGHT")``; ``""`` -> ``("", "")``."""
    vertical = next((v for v in ("UP", "DOWN") if direction.startswith(v)), "")
    return vertical, direction[len(vertical):]


def compose_action(direction: str, fire: bool, action_names: list[str]) -> int:
    """Index of joystick ``direction`` (+FIRE) in a game's minimal action set.

    Games whose set lacks the exact combination get the nearest one: drop the
    vertical part, then the horizontal part, then FIRE (e.g. Breakout has no
    UP: UP becomes NOOP, UPRIGHT becomes RIGHT).
    """
    vertical, horizontal = split_direction(direction)
    names = [n.upper() for n in action_names]
    for f in ((True, False) if fire else (False,)):
        for v, h in ((vertical, horizontal), ("", horizontal), (vertical, ""), ("", "")):
            name = v + h + ("FIRE" if f else "")
            name = name or "NOOP"
            if name in names:
                return names.index(name)
    return 0


@dataclass(frozen=True)
class SessionStatus:
    """What the window's status panel shows."""

    game: str
    out: str
    frame: int
    score: float
    lives: int
    fps: float
    paused: bool
    game_over: bool
    action: str
    direction: str
    fire_held: bool
    fire_frames_left: int
    unsaved_frames: int
    dirty: bool
    file_state: str  # "unsaved: ...", "saved" or "nothing recorded yet"
    message: str
    message_serial: int


class RecordingSession:
    """One person recording (or continuing) a demo; no window, no clock.

    ``tick()`` emulates one frame unless paused (or the game is over); the front
    end calls it ``fps`` times a second. Every command is also a method, and
    :meth:`press` maps a key code through :data:`KEYMAP` to them.
    """

    def __init__(self, builder: DemoBuilder, out: str | os.PathLike, *, fps: float = 30.0, autosave: int = 3000,
                 paused: bool = False, fire_frames: int = FIRE_FRAMES, rewind_frames: int = REWIND_FRAMES,
                 resumed_from: int | None = None, created: str | None = None, frame0_screen: np.ndarray | None = None):
        self.builder = builder
        self.emulator: Emulator = builder.emulator
        self.out = Path(out)
        self.fps = float(fps)
        self.autosave = max(0, int(autosave))
        self.fire_frames = int(fire_frames)
        self.rewind_frames = int(rewind_frames)
        self.paused = paused
        self.direction = ""
        self.fire_held = False
        self.fire_left = 0
        self.show_help = False
        self.quit_requested = False
        self.resumed_from = resumed_from
        self.created = created
        self.rewinds = 0
        self.saves = 0
        self.message = ""
        self.message_serial = 0
        self._frame0_screen = frame0_screen
        self._score = builder.total_return
        self._since_save = 0  # frames emulated since the last save (autosave counter)
        self._dirty = False  # the demo differs from the file
        if self.fps <= 0:
            raise UserError(f"--fps must be positive, got {fps:g}")
        if resumed_from:
            self._redraw()

    # --- construction -----------------------------------------------------------------
    @classmethod
    def start(cls, game: str, out: str | os.PathLike, *, resume: bool = False, store_frames: bool = False,
              state_interval: int = schema.DEFAULT_STATE_INTERVAL, fps: float = 30.0, autosave: int = 3000, paused: bool = False,
              log=None) -> "RecordingSession":
        """Open a new recording, or continue ``out`` with ``resume=True``.

        Refuses to overwrite an existing ``out`` without ``resume`` and checks the
        destination directory up front, so nobody plays for ten minutes to learn
        the file cannot be written. ``log`` receives one-line notes (default: none).
        """
        out = check_destination(out, "--out")
        if state_interval < 1:
            raise UserError(f"--state-interval must be at least 1, got {state_interval}")
        if resume:
            if not out.exists():
                raise UserError(f"cannot --resume: {out} does not exist (leave out --resume to start a new demo)")
            demo = load_demo(out, load_frames=True)
            wanted = resolve_game(game) if game else demo.game
            if wanted != demo.game and log is not None:
                log(f"note: {out} is a {display_name(demo.game)} demo; continuing it ({display_name(wanted)} ignored)")
            if store_frames and demo.frames is None and log is not None:
                log(f"note: {out} has no stored screens, so --store-frames is ignored when resuming it")
            emulator = demo.make_emulator()
            builder = DemoBuilder.from_demo(demo, emulator, store_frames=demo.frames is not None)
            frame0 = demo.frames[0] if demo.frames is not None else None
            return cls(builder, out, fps=fps, autosave=autosave, paused=paused, resumed_from=len(demo),
                       created=demo.attrs.get("created"), frame0_screen=frame0)
        if out.exists():
            raise UserError(f"{out} already exists; pass --resume to continue it, or choose another --out")
        emulator = Emulator(EmulatorSettings(resolve_game(game)))
        builder = DemoBuilder(emulator, state_interval=state_interval, store_frames=store_frames)
        return cls(builder, out, fps=fps, autosave=autosave, paused=paused,
                   frame0_screen=emulator.screen_rgb().copy())

    # --- state ------------------------------------------------------------------------
    @property
    def frame(self) -> int:
        return len(self.builder)

    @property
    def score(self) -> float:
        return self._score

    @property
    def game_over(self) -> bool:
        return self.emulator.game_over()

    @property
    def dirty(self) -> bool:
        return self._dirty

    @property
    def fire(self) -> bool:
        return self.fire_held or self.fire_left > 0

    @property
    def action(self) -> int:
        """Minimal-set index of the action the next frame will get."""
        return compose_action(self.direction, self.fire, self.emulator.action_names)

    @property
    def action_name(self) -> str:
        return self.emulator.action_names[self.action]

    def screen(self) -> np.ndarray:
        """The RGB screen at the current frame (210 x 160 x 3, uint8)."""
        if self.frame == 0 and self._frame0_screen is not None:
            return self._frame0_screen
        return self.emulator.screen_rgb()

    def status(self) -> SessionStatus:
        return SessionStatus(
            game=display_name(self.emulator.game), out=str(self.out), frame=self.frame, score=self._score,
            lives=self.emulator.lives(), fps=self.fps, paused=self.paused, game_over=self.game_over,
            action=self.action_name, direction=self.direction or "-", fire_held=self.fire_held,
            fire_frames_left=self.fire_left, unsaved_frames=self._since_save, dirty=self._dirty,
            file_state=self._file_state(), message=self.message, message_serial=self.message_serial)

    def _file_state(self) -> str:
        if self._dirty:
            return f"unsaved: {self._since_save} new frames" if self._since_save else "unsaved changes (rewind)"
        if self.saves or self.resumed_from is not None:
            return f"saved to {self.out.name}"
        return "nothing recorded yet"

    def say(self, text: str) -> None:
        """Set the one-line message the front end shows for a few seconds."""
        self.message = text
        self.message_serial += 1

    # --- commands ---------------------------------------------------------------------
    def press(self, key: int) -> str | None:
        """Run the command bound to key code ``key``; return its name (None: unbound key)."""
        if key is None or key < 0:
            return None
        bound = KEYMAP.get(int(key))
        if bound is None:
            return None
        command, arg = bound
        self.do(command, arg)
        return command

    def do(self, command: str, arg: str | None = None) -> None:
        """Run a command by name (the key map's second column)."""
        if command == "direction":
            self.set_direction(arg or "")
        else:
            handler = {
                "fire": self.fire_pulse, "fire_toggle": self.toggle_fire, "pause": self.toggle_pause,
                "step": self.step, "rewind": self.rewind, "faster": self.faster, "slower": self.slower,
                "save": self.save, "help": self.toggle_help, "quit": self.quit,
            }.get(command)
            if handler is None:
                raise ValueError(f"unknown recorder command '{command}'")
            handler()

    def set_direction(self, direction: str) -> None:
        direction = direction.upper()
        if direction not in DIRECTIONS:
            raise ValueError(f"unknown direction '{direction}'")
        self.direction = direction

    def fire_pulse(self, frames: int | None = None) -> None:
        self.fire_left = max(self.fire_left, self.fire_frames if frames is None else int(frames))

    def toggle_fire(self) -> None:
        self.fire_held = not self.fire_held
        self.say("FIRE held" if self.fire_held else "FIRE released")

    def toggle_pause(self) -> None:
        self.paused = not self.paused

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False

    def toggle_help(self) -> None:
        """Show or hide the help overlay; showing it pauses (nobody plays blind)."""
        self.show_help = not self.show_help
        if self.show_help:
            self.paused = True

    def faster(self) -> None:
        self.fps = float(next((s for s in SPEEDS if s > self.fps + 1e-9), SPEEDS[-1]))
        self.say(f"speed {self.fps:g} frames/s")

    def slower(self) -> None:
        self.fps = float(next((s for s in reversed(SPEEDS) if s < self.fps - 1e-9), SPEEDS[0]))
        self.say(f"speed {self.fps:g} frames/s")

    def step(self) -> bool:
        """Single-frame step: emulate exactly one frame if paused; if running, only pause."""
        if not self.paused:
            self.paused = True
            return False
        if self.game_over:
            self.say("game over: rewind (Backspace / r) or quit (q)")
            return False
        self._advance()
        return True

    def tick(self) -> bool:
        """Emulate one frame unless paused or the game is over; return whether it did."""
        if self.paused or self.quit_requested:
            return False
        if self.game_over:
            self.paused = True
            self.say("game over: rewind (Backspace / r) or quit (q)")
            return False
        self._advance()
        return True

    def _advance(self) -> None:
        reward = self.builder.step(self.action)
        self._score += reward
        if self.fire_left > 0:
            self.fire_left -= 1
        self._since_save += 1
        self._dirty = True
        if self.game_over:
            self.paused = True
            self.say("game over: rewind (Backspace / r) or quit (q)")
        if self.autosave and self._since_save >= self.autosave:
            self.save(auto=True)

    def rewind(self, frames: int | None = None) -> int:
        """Go back ``frames`` frames (default :data:`REWIND_FRAMES`), dropping them; pause.

        Returns the new frame number. The emulator is put back exactly where the
        demo now ends (``DemoBuilder.truncate``), so recording continues from there.
        """
        frames = self.rewind_frames if frames is None else int(frames)
        target = max(0, self.frame - max(0, frames))
        dropped = self.frame - target
        self.paused = True
        self.fire_left = 0
        if dropped:
            self.builder.truncate(target)
            self._redraw()
            self._score = self.builder.total_return
            self._since_save = max(0, self._since_save - dropped)
            self._dirty = True
            self.rewinds += 1
        self.say(f"rewound {dropped} frames to frame {target}" if dropped else "at frame 0: nothing to rewind")
        return target

    def _redraw(self) -> None:
        """Make the emulator's screen buffer show the current frame.

        After ``restore_state`` ALE does not redraw the screen until a frame is
        emulated (ALE issue #417). When the demo ends exactly on a saved state,
        restore the state before it and replay the gap: same emulator state, but
        the screen is drawn.
        """
        t = self.frame
        states = self.builder.states
        if t == 0 or t not in states:
            return  # frame 0 has its own cached screen; otherwise truncate() replayed >= 1 frame
        previous = max(f for f in states if f < t)
        self.emulator.restore_state(states[previous])
        for a in self.builder.actions[previous:t]:
            self.emulator.step(a)

    def save(self, auto: bool = False) -> Path:
        """Write the demo to ``out`` atomically (source 'recorded')."""
        demo = self.builder.build({"created": self.created} if self.created else None)
        detail = {"recorder": "interactive", "rewinds": self.rewinds}
        if self.resumed_from is not None:
            detail["resumed_from_frame"] = self.resumed_from
        save_demo(demo, self.out, source="recorded", detail=detail)
        if self.created is None:
            self.created = demo.attrs.get("created") or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        self._since_save = 0
        self._dirty = False
        self.saves += 1
        self.say(f"{'autosaved' if auto else 'saved'} {self.frame} frames to {self.out.name}")
        return self.out

    def quit(self) -> None:
        """Ask the front end to stop; it saves with :meth:`finish`."""
        self.quit_requested = True

    def finish(self) -> str:
        """Save if anything changed since the last save; return the one line to print."""
        if self._dirty and (self.frame > 0 or self.out.exists()):
            self.save()
            return f"saved {self.frame} frames (return {self._score:g}) to {self.out}"
        if self.out.exists():
            return f"no new frames; {self.out} unchanged ({self.frame} frames, return {self._score:g})"
        return f"nothing recorded; {self.out} not written"

    # --- help -------------------------------------------------------------------------
    @staticmethod
    def help_lines() -> list[tuple[str, str]]:
        """(keys, meaning) rows of the key map, for panels and overlays."""
        return [(b.keys, b.help) for b in BINDINGS]

    @staticmethod
    def panel_lines() -> list[tuple[str, str]]:
        """(keys, a few words) rows of the key map, for the side panel."""
        return [(b.keys, b.label) for b in BINDINGS]
