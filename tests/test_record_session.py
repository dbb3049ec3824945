"""The interactive recorder's logic, driven by key codes (no window, real emulator)."""

from __future__ import annotations

import itertools
import sys

import numpy as np
import pytest

from curriculum_ppo.cli import main
from curriculum_ppo.demo.session import (
    BINDINGS,
    DIRECTIONS,
    KEYMAP,
    REWIND_FRAMES,
    SPEEDS,
    Key,
    RecordingSession,
    compose_action,
)
from curriculum_ppo.demo.store import load_demo
from curriculum_ppo.demo.verify import verify_demo
from curriculum_ppo.emulator import Emulator
from curriculum_ppo.errors import UserError

GAME = "montezuma_revenge"


def new_session(tmp_path, name="demo.h5", **kwargs):
    kwargs.setdefault("autosave", 0)
    return RecordingSession.start(GAME, tmp_path / name, **kwargs)


def keys_for(command, arg=None):
    return [code for code, bound in KEYMAP.items() if bound == (command, arg)]


def run(session, frames):
    for _ in range(frames):
        assert session.tick()


# --- the key map as data ---------------------------------------------------------------
def test_keymap_is_consistent():
    commands = {b.command for b in BINDINGS}
    assert commands == {"direction", "fire", "fire_toggle", "pause", "step", "rewind", "faster", "slower",
                        "save", "help", "quit"}
    assert {b.arg for b in BINDINGS if b.command == "direction"} == set(DIRECTIONS)
    # arrows (X11 keysyms as returned by the Qt and GTK back ends) and the letter grid
    assert KEYMAP[Key.X_LEFT] == ("direction", "LEFT")
    assert KEYMAP[Key.X_UP] == ("direction", "UP")
    assert KEYMAP[ord("o")] == KEYMAP[ord("O")] == ("direction", "RIGHT")
    assert KEYMAP[ord("9")] == ("direction", "UPRIGHT")
    assert KEYMAP[ord(" ")] == ("fire", None)
    assert KEYMAP[ord("q")] == KEYMAP[27] == ("quit", None)
    assert KEYMAP[Key.BACKSPACE] == KEYMAP[ord("r")] == ("rewind", None)
    assert KEYMAP[ord("s")] == KEYMAP[Key.X_F2] == ("save", None)
    help_rows = RecordingSession.help_lines()
    assert len(help_rows) == len(BINDINGS) and all(keys and text for keys, text in help_rows)


def test_compose_action_falls_back_for_small_action_sets():
    breakout = ["NOOP", "FIRE", "RIGHT", "LEFT"]
    assert breakout[compose_action("UPRIGHT", False, breakout)] == "RIGHT"
    assert breakout[compose_action("UP", True, breakout)] == "FIRE"
    assert breakout[compose_action("DOWN", False, breakout)] == "NOOP"
    assert breakout[compose_action("LEFT", True, breakout)] == "FIRE"  # FIRE wins over the direction


# --- playing ---------------------------------------------------------------------------
def test_every_action_is_reachable_from_the_keyboard(tmp_path):
    session = new_session(tmp_path)
    names = session.emulator.action_names
    assert len(names) == 18
    reached = {}
    direction_keys = [keys_for("direction", d)[0] for d in DIRECTIONS]
    for key, fire_mode in itertools.product(direction_keys, ("none", "pulse", "held")):
        session.fire_held = False
        session.fire_left = 0
        assert session.press(key) == "direction"
        if fire_mode == "pulse":
            session.press(Key.SPACE)
        elif fire_mode == "held":
            session.press(ord("f"))
        reached.setdefault(session.action, []).append((key, fire_mode))
    assert sorted(reached) == list(range(len(names)))
    # and the recorded action is the one shown
    session.press(ord("f"))  # FIRE latch off again
    assert not session.fire_held
    session.resume()
    session.press(Key.X_UP)
    session.press(Key.X_RIGHT)  # directions replace each other: RIGHT, not UPRIGHT
    assert session.action_name == "RIGHT"
    session.press(ord("9"))
    session.press(Key.SPACE)
    assert session.tick()
    assert names[session.builder.actions[-1]] == "UPRIGHTFIRE"


def test_direction_latches_and_fire_pulse_expires(tmp_path):
    session = new_session(tmp_path)
    session.press(Key.X_RIGHT)
    session.press(Key.X_RIGHT)  # autorepeat of a held key changes nothing
    session.press(Key.SPACE)
    run(session, 10)
    names = [session.emulator.action_names[a] for a in session.builder.actions]
    assert names == ["RIGHTFIRE"] * session.fire_frames + ["RIGHT"] * (10 - session.fire_frames)
    session.press(ord("5"))  # stop
    session.press(ord("f"))  # latch FIRE
    run(session, 3)
    session.press(ord("f"))
    run(session, 1)
    names = [session.emulator.action_names[a] for a in session.builder.actions[10:]]
    assert names == ["FIRE", "FIRE", "FIRE", "NOOP"]


def test_pause_stops_frames_and_step_advances_exactly_one(tmp_path):
    session = new_session(tmp_path)
    run(session, 5)
    session.press(ord("p"))
    assert session.paused
    for _ in range(10):
        assert not session.tick()
    assert session.frame == 5
    session.press(Key.X_LEFT)
    session.press(ord("n"))
    assert session.frame == 6
    session.press(ord("."))
    assert session.frame == 7
    assert [session.emulator.action_names[a] for a in session.builder.actions[5:]] == ["LEFT", "LEFT"]
    session.press(ord("p"))
    assert not session.paused and session.tick() and session.frame == 8
    session.press(ord("n"))  # step while running only pauses
    assert session.paused and session.frame == 8
    session.resume()
    session.press(ord("h"))  # opening the help pauses; closing it does not resume
    assert session.show_help and session.paused
    session.press(Key.X_F1)
    assert not session.show_help and session.paused


def test_speed_keys(tmp_path):
    session = new_session(tmp_path, fps=30)
    session.press(ord("+"))
    assert session.fps == 45
    session.press(ord("-"))
    session.press(ord("-"))
    assert session.fps == 20
    for _ in range(30):
        session.press(ord("-"))
    assert session.fps == SPEEDS[0]
    for _ in range(30):
        session.press(ord("="))
    assert session.fps == SPEEDS[-1]


def test_rewind_drops_frames_and_restores_the_emulator(tmp_path):
    session = new_session(tmp_path, state_interval=20)
    session.press(Key.X_RIGHT)
    run(session, 100)
    session.press(Key.SPACE)
    run(session, 47)  # a jump: nontrivial RAM
    assert session.frame == 147
    session.press(Key.BACKSPACE)
    assert session.paused and session.frame == 147 - REWIND_FRAMES
    assert len(session.builder.ram) == session.frame + 1
    np.testing.assert_array_equal(session.emulator.ram(), session.builder.ram[-1])
    # rewinding onto a saved-state frame (80 is a multiple of 20) still leaves the right state and screen
    session.rewind(7)
    assert session.frame == 80 and 80 in session.builder.states
    np.testing.assert_array_equal(session.emulator.ram(), session.builder.ram[-1])
    reference = RecordingSession.start(GAME, tmp_path / "ref.h5", autosave=0)
    for a in session.builder.actions:
        reference.builder.step(a)
    np.testing.assert_array_equal(session.screen(), reference.screen())
    # recording continues from there and the demo replays exactly
    session.press(ord("r"))
    assert session.frame == 20
    session.press(ord("p"))
    session.press(Key.X_LEFT)
    run(session, 30)
    session.save()
    demo = load_demo(tmp_path / "demo.h5")
    assert len(demo) == 50 and demo.attrs["source"] == "recorded"
    assert verify_demo(demo).ok
    # rewinding past the start stops at frame 0, which shows the first screen again
    session.rewind(10_000)
    assert session.frame == 0
    np.testing.assert_array_equal(session.screen(), Emulator(GAME).screen_rgb())


def test_save_load_verify_and_autosave(tmp_path):
    out = tmp_path / "demo.h5"
    session = RecordingSession.start(GAME, out, autosave=50)
    session.press(Key.X_RIGHT)
    run(session, 49)
    assert not out.exists()
    run(session, 1)
    assert out.exists() and len(load_demo(out)) == 50 and not session.dirty
    run(session, 30)
    assert session.dirty and session.status().unsaved_frames == 30
    session.press(ord("s"))
    assert not session.dirty
    demo = load_demo(out)
    assert len(demo) == 80
    result = verify_demo(demo)
    assert result.ok, result.reason
    assert session.finish().startswith("no new frames")


def test_quit_saves_and_reports(tmp_path):
    session = new_session(tmp_path)
    assert session.finish() == f"nothing recorded; {tmp_path / 'demo.h5'} not written"
    run(session, 12)
    session.press(ord("q"))
    assert session.quit_requested and not session.tick()
    line = session.finish()
    assert line == f"saved 12 frames (return 0) to {tmp_path / 'demo.h5'}"
    assert verify_demo(load_demo(tmp_path / "demo.h5")).ok


def test_resume_continues_and_verifies(tmp_path):
    session = new_session(tmp_path, state_interval=20)
    session.press(Key.X_RIGHT)
    run(session, 60)  # ends exactly on a saved state
    session.save()
    recorded_ram = session.builder.ram[-1].copy()
    screen = session.screen().copy()

    resumed = RecordingSession.start(GAME, tmp_path / "demo.h5", resume=True, autosave=0)
    assert resumed.frame == 60 and resumed.resumed_from == 60
    np.testing.assert_array_equal(resumed.emulator.ram(), recorded_ram)
    np.testing.assert_array_equal(resumed.screen(), screen)
    resumed.press(Key.X_LEFT)
    run(resumed, 25)
    resumed.rewind(5)
    resumed.resume()
    run(resumed, 3)
    assert resumed.finish().startswith("saved 83 frames")
    demo = load_demo(tmp_path / "demo.h5")
    assert len(demo) == 83
    assert [demo.action_set[a] for a in demo.actions[:60]] == ["RIGHT"] * 60
    assert [demo.action_set[a] for a in demo.actions[60:]] == ["LEFT"] * 23
    result = verify_demo(demo)
    assert result.ok, result.reason


def test_refuses_to_overwrite_and_bad_resume(tmp_path):
    out = tmp_path / "demo.h5"
    out.write_bytes(b"precious")
    with pytest.raises(UserError, match="already exists; pass --resume"):
        RecordingSession.start(GAME, out)
    assert out.read_bytes() == b"precious"
    with pytest.raises(UserError, match="cannot --resume"):
        RecordingSession.start(GAME, tmp_path / "missing.h5", resume=True)
    with pytest.raises(UserError, match="not an HDF5 file"):
        RecordingSession.start(GAME, out, resume=True)
    with pytest.raises(UserError, match="does not exist"):
        RecordingSession.start(GAME, tmp_path / "no" / "dir" / "demo.h5")


def test_game_over_pauses(tmp_path):
    session = new_session(tmp_path)
    # walk off the starting ledge until the game is over (6 lives, ~530 frames)
    session.press(Key.X_LEFT)
    for _ in range(5_000):
        if not session.tick():
            break
    assert session.game_over and session.paused
    assert not session.step() and not session.tick()
    frames = session.frame
    session.rewind()
    assert session.frame == frames - REWIND_FRAMES and not session.game_over


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the $DISPLAY check is for X11")
def test_no_display_is_one_line_error(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("DISPLAY", raising=False)
    assert main(["record", "--out", str(tmp_path / "demo.h5")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("curriculum-ppo record: error: no display: the interactive recorder needs a window; "
                   "use --actions FILE for scripted demos or run under Xvfb")
    monkeypatch.setenv("DISPLAY", ":4321")  # nothing listens there
    assert main(["record", "--out", str(tmp_path / "demo.h5")]) == 2
    err = capsys.readouterr().err.strip()
    assert "no display" in err and "DISPLAY=:4321" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "demo.h5").exists()
