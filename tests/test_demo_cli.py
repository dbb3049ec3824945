"""The demo commands end to end: ``record --actions``, ``verify``, ``inspect`` and bad input."""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import signal

import cv2
import h5py
import numpy as np
import pytest

from curriculum_ppo.cli import main
from curriculum_ppo.demo.action_script import expand, format_action_script, parse_action_script
from curriculum_ppo.demo.store import DemoBuilder, load_demo, save_demo
from curriculum_ppo.emulator import Emulator
from curriculum_ppo.errors import UserError

ACTION_NAMES = Emulator("montezuma_revenge").action_names


def one_line(stderr: str) -> str:
    """The CLI's contract for bad input: exactly one line on stderr, never a traceback."""
    message = stderr.strip()
    assert message, "expected an error message on stderr"
    assert "\n" not in message, f"stderr is not one line:\n{stderr}"
    assert "Traceback" not in message
    return message


def edited_copy(src, dst, edit):
    """Copy a demo and change it in place with plain h5py."""
    shutil.copyfile(src, dst)
    with h5py.File(dst, "r+") as f:
        edit(f)
    return dst


def set_attr(name, value):
    return lambda f: f.attrs.__setitem__(name, value)


def set_item(dataset, index, value):
    def edit(f):
        f[dataset][index] = value
    return edit


# --- record --actions -----------------------------------------------------------------
def test_record_actions_reproduces_bundled_demo(tmp_path, start_cli, bundled_demo, bundled_script_path):
    out = tmp_path / "regenerated.h5"
    proc = start_cli("record", "--actions", bundled_script_path, "--out", out)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    assert "recorded 635 frames" in stdout and "total return 400" in stdout
    new = load_demo(out)
    for name in ("actions", "rewards", "lives", "ram", "state_frames"):
        np.testing.assert_array_equal(getattr(new, name), getattr(bundled_demo, name), err_msg=name)
    assert new.states == bundled_demo.states
    # the committed demo was made from the committed script
    digest = hashlib.sha256(bundled_script_path.read_bytes()).hexdigest()
    for demo in (new, bundled_demo):
        assert demo.attrs["source"] == "scripted"
        detail = json.loads(demo.attrs["source_detail"])
        assert detail == {"script": bundled_script_path.name, "script_sha256": digest}
    for key in ("game", "rom_md5", "action_set", "mode", "difficulty", "seed", "state_interval", "num_frames",
                "total_return"):
        assert new.attrs[key] == bundled_demo.attrs[key], key
    assert sorted(os.listdir(tmp_path)) == ["regenerated.h5"]


@pytest.mark.parametrize("text, line, fragment", [
    ("NOOP\nRIGHT 3\nJUMP 2\n", 3, "unknown action 'JUMP'; this game's actions are NOOP FIRE UP"),
    ("# comment\n\nRIGHT\n99 3\n", 4, "action index 99 is out of range 0..17"),
    ("LEFT\nRIGHT x\n", 2, "repeat must be a positive integer, got 'x'"),
    ("# only a comment\n\n   \n", None, "the action script contains no actions"),
], ids=["unknown-name", "index-out-of-range", "bad-repeat", "empty"])
def test_record_actions_script_errors(tmp_path, capsys, text, line, fragment):
    script = tmp_path / "bad.actions"
    script.write_text(text)
    out = tmp_path / "out.h5"
    assert main(["record", "--actions", str(script), "--out", str(out)]) == 2
    where = f"{script}:{line}: " if line else f"{script}: "
    message = one_line(capsys.readouterr().err)
    assert message.startswith(f"curriculum-ppo record: error: {where}{fragment}"), message
    assert not out.exists()


@pytest.mark.parametrize("text, where, fragment", [
    ("NOOP\nRIGHT 3\nJUMP 2\n", "s:3", "unknown action 'JUMP'; this game's actions are NOOP FIRE UP RIGHT"),
    ("99 3\n", "s:1", "action index 99 is out of range 0..17"),
    ("-1\n", "s:1", "action index -1 is out of range 0..17"),
    ("--3\n", "s:1", "unknown action '--3'"),
    ("RIGHT x\n", "s:1", "repeat must be a positive integer, got 'x'"),
    ("RIGHT 0\n", "s:1", "repeat must be a positive integer, got '0'"),
    ("LEFT\nRIGHT -2\n", "s:2", "repeat must be a positive integer, got '-2'"),
    ("RIGHT \u00b2\n", "s:1", "repeat must be a positive integer, got '\u00b2'"),  # isdigit() but not int()
    ("RIGHT 2 3\n", "s:1", "expected 'ACTION_NAME [repeat]', got 'RIGHT 2 3'"),
    ("", "s", "the action script contains no actions"),
])
def test_action_script_parse_errors(text, where, fragment):
    with pytest.raises(UserError) as info:
        parse_action_script(text, ACTION_NAMES, source="s")
    assert str(info.value).startswith(f"{where}: {fragment}"), str(info.value)


def test_action_script_not_found(tmp_path, capsys):
    assert main(["record", "--actions", str(tmp_path / "nope.actions"), "--out", str(tmp_path / "o.h5")]) == 2
    assert "action script not found" in one_line(capsys.readouterr().err)


def test_action_script_parse_and_format_round_trip(bundled_demo, bundled_script_path):
    lines = parse_action_script(bundled_script_path.read_text(), ACTION_NAMES)
    assert expand(lines) == bundled_demo.actions.tolist()
    text = format_action_script(bundled_demo.actions.tolist(), ACTION_NAMES, header="generated\nby a test")
    assert text.startswith("# generated\n# by a test\n")
    assert expand(parse_action_script(text, ACTION_NAMES)) == bundled_demo.actions.tolist()
    # names are case-insensitive, indices allowed, comments anywhere
    parsed = parse_action_script("right 2  # go\n3\nnoop\n", ACTION_NAMES)
    assert [(p.line_number, p.action, p.repeat) for p in parsed] == [(1, 3, 2), (2, 3, 1), (3, 0, 1)]


# --- verify ---------------------------------------------------------------------------
def test_verify_bundled_demo_ok(start_cli, bundled_demo_path):
    proc = start_cli("verify", "--json", bundled_demo_path)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    result = json.loads(stdout)
    assert set(result) - {"reason"} == {"ok", "frames", "total_return", "first_divergence"}
    assert result["ok"] is True
    assert result["frames"] == 635
    assert result["total_return"] == 400
    assert result["first_divergence"] is None
    assert result.get("reason") is None


def swap_state(k, other):
    def edit(f):
        f["states"][k] = f["states"][other]
        f["state_lengths"][k] = f["state_lengths"][other]
    return edit


def flip_ram(frame, byte):
    def edit(f):
        f["ram"][frame, byte] = f["ram"][frame, byte] ^ 0x01
    return edit


@pytest.mark.parametrize("edit, frame, reason", [
    (set_item("rewards", 290, 50.0), 290, "action 290 gave reward 100, the demo recorded 50"),
    (set_item("rewards", 10, 1.0), 10, "action 10 gave reward 0, the demo recorded 1"),
    # frame 300's RAM is the result of action 299 (first_divergence is an action index)
    (flip_ram(300, 3), 299, "after action 299 RAM byte 3 is"),
    (flip_ram(301, 3), 300, "after action 300 RAM byte 3 is"),
    (set_item("actions", 100, 0), 100, "after action 100 RAM byte"),  # DOWN -> NOOP on the ladder
    (set_item("lives", 400, 3), 399, "after action 399 lives are 6, the demo recorded 3"),
    (swap_state(10, 11), 100, "saved state at frame 100 does not restore the recorded RAM"),  # state 10 = frame 100
], ids=["reward290", "reward10", "ram300", "ram301", "action100", "lives400", "state100"])
def test_verify_tampered_copy(tmp_path, capsys, bundled_demo_path, edit, frame, reason):
    path = edited_copy(bundled_demo_path, tmp_path / "tampered.h5", edit)
    assert main(["verify", "--json", str(path)]) == 1
    result = json.loads(capsys.readouterr().out)
    assert set(result) - {"reason"} == {"ok", "frames", "total_return", "first_divergence"}
    assert result["ok"] is False
    assert result["frames"] == 635
    assert result["first_divergence"] == frame, result
    assert reason in result["reason"]


def test_verify_text_output_on_divergence(tmp_path, capsys, start_cli, bundled_demo_path):
    path = edited_copy(bundled_demo_path, tmp_path / "tampered.h5", set_item("actions", 100, 0))
    proc = start_cli("verify", path)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 1
    assert stdout == ""
    assert one_line(stderr).startswith("DIVERGES at frame 100: after action 100 RAM byte ")


# --- inspect --------------------------------------------------------------------------
def test_inspect_json(capsys, bundled_demo_path):
    assert main(["inspect", "--json", str(bundled_demo_path)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["game"] == "montezuma_revenge"
    assert info["frames"] == 635
    assert info["total_return"] == 400
    assert info["schema_version"] == 1
    assert info["rom_md5"] == load_demo(bundled_demo_path).attrs["rom_md5"]
    assert len(info["rom_md5"]) == 32
    assert info["reward_events"] == [{"frame": 290, "reward": 100.0}, {"frame": 634, "reward": 300.0}]
    assert info["lives_lost_at"] == []
    assert info["file_size_bytes"] == os.path.getsize(bundled_demo_path)
    assert info["source"] == "scripted"
    assert info["states"] == 65 and info["state_interval"] == 10  # frames 0, 10, ..., 630 and the end, 635
    assert info["has_frames"] is False


def test_inspect_text(capsys, bundled_demo_path, bundled_demo):
    assert main(["inspect", str(bundled_demo_path)]) == 0
    text = capsys.readouterr().out
    assert text.startswith("MontezumaRevenge demo: 635 frames (10.6 s at 60 Hz), total return 400\n")
    assert "schema v1" in text and f"ROM md5 {bundled_demo.attrs['rom_md5']}" in text
    assert "reward events (2): +100 @ 290, +300 @ 634" in text
    assert "lives lost (0): none" in text
    assert f"file size {os.path.getsize(bundled_demo_path) / 1e6:.2f} MB" in text


def test_inspect_reports_stored_frames_and_lost_lives(tmp_path, capsys):
    emu = Emulator("montezuma_revenge")
    builder = DemoBuilder(emu, store_frames=True)
    for action in np.random.default_rng(1234).integers(0, emu.num_actions, 70):
        builder.step(int(action))
    path = save_demo(builder.build(), tmp_path / "f.h5")
    assert main(["inspect", "--json", str(path)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["has_frames"] is True
    assert info["lives_lost_at"] == builder.build().life_losses() != []


def test_inspect_png_strip(tmp_path, capsys, bundled_demo_path):
    png = tmp_path / "strip.png"
    assert main(["inspect", str(bundled_demo_path), "--png", str(png), "--frame", "0,300"]) == 0
    image = cv2.imread(str(png))
    assert image is not None and image.shape == (420, 1280, 3)  # 2 tiles, scale 2 (Atari pixels 2:1)
    assert not np.array_equal(image[:, :640], image[:, 640:])
    assert stat_mode(png) & 0o044
    assert sorted(os.listdir(tmp_path)) == ["strip.png"]


def test_inspect_png_frame_out_of_range(tmp_path, capsys, bundled_demo_path):
    png = tmp_path / "x.png"
    assert main(["inspect", str(bundled_demo_path), "--png", str(png), "--frame", "636"]) == 2
    assert "--frame 636 is outside the demo (0..635)" in one_line(capsys.readouterr().err)
    assert not png.exists()


def test_inspect_video(tmp_path, capsys, bundled_demo_path):
    mp4 = tmp_path / "demo.mp4"
    assert main(["inspect", str(bundled_demo_path), "--video", str(mp4), "--every", "8"]) == 0
    expected = len(range(0, 636, 8)) + 1  # every 8th frame plus the last one (635)
    assert f"({expected} frames)" in capsys.readouterr().err
    capture = cv2.VideoCapture(str(mp4))
    assert capture.isOpened()
    count, shape = 0, None
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        count, shape = count + 1, frame.shape
    capture.release()
    assert count == expected
    assert shape == (420, 640, 3)
    assert sorted(os.listdir(tmp_path)) == ["demo.mp4"]


def stat_mode(path) -> int:
    return os.stat(path).st_mode & 0o777


# --- bad input: one line on stderr, nonzero exit, nothing left behind --------------------
def _no_big_files():
    resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, 50_000))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG


@pytest.fixture(scope="module")
def bad_input_runs(tmp_path_factory, start_cli, bundled_demo_path, bundled_script_path):
    """Start every bad-input command at once (they run in parallel); tests collect the results."""
    d = tmp_path_factory.mktemp("bad_input")
    demo = bundled_demo_path
    text = d / "notes.h5"
    text.write_text("this is not HDF5\n")
    truncated = d / "truncated.h5"
    truncated.write_bytes(demo.read_bytes()[: demo.stat().st_size // 2])
    foreign = d / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["data"] = np.arange(10)
    v2 = edited_copy(demo, d / "v2.h5", set_attr("schema_version", 2))
    md5 = edited_copy(demo, d / "md5.h5", set_attr("rom_md5", "0" * 32))
    game = edited_copy(demo, d / "game.h5", set_attr("game", "Montezum"))
    action = edited_copy(demo, d / "action.h5", set_item("actions", 5, 200))
    full_dir, nodir = d / "full", d / "no_such_dir"
    full_dir.mkdir()
    script = bundled_script_path
    cases = {
        # name: (argv, fragments the message must contain, path that must not exist afterwards)
        "missing file": (["verify", d / "nope.h5"], ["demo file not found", "nope.h5"], None),
        "directory": (["verify", full_dir], ["is a directory"], None),
        "text file": (["verify", text], ["notes.h5 is not an HDF5 file"], None),
        "truncated": (["inspect", truncated], ["truncated.h5 is truncated or corrupt"], None),
        "foreign hdf5": (["verify", foreign], ["foreign.h5", "not a curriculum_ppo demo"], None),
        "schema v2": (["inspect", v2], ["v2.h5", "schema version 2", "reads version 1"], None),
        "rom md5": (["verify", md5], ["md5.h5", "MD5 " + "0" * 32, "installed ROM has MD5"], None),
        "unknown game (record)": (["record", "--game", "Montezum", "--actions", script, "--out", d / "g.h5"],
                                  ["unknown game 'Montezum'", "montezuma_revenge"], d / "g.h5"),
        "unknown game (file)": (["verify", game], ["game.h5", "unknown game 'Montezum'"], None),
        "action out of range": (["verify", action], ["action.h5", "action index 200 is out of range"], None),
        "disk full": (["record", "--actions", script, "--store-frames", "--out", full_dir / "X.h5"],
                      ["could not write", "X.h5", "File too large"], full_dir / "X.h5"),
        "record unwritable": (["record", "--actions", script, "--out", nodir / "x.h5"],
                              ["cannot write", "no_such_dir does not exist"], nodir),
        "inspect png unwritable": (["inspect", demo, "--png", nodir / "x.png"],
                                   ["cannot write", "no_such_dir does not exist"], nodir),
    }
    procs = {}
    for name, (argv, _, _) in cases.items():
        procs[name] = start_cli(*argv, **({"preexec_fn": _no_big_files} if name == "disk full" else {}))
    yield cases, procs, full_dir
    for proc in procs.values():
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


BAD_INPUT = ["missing file", "directory", "text file", "truncated", "foreign hdf5", "schema v2", "rom md5",
             "unknown game (record)", "unknown game (file)", "action out of range", "disk full",
             "record unwritable", "inspect png unwritable"]


@pytest.mark.parametrize("name", BAD_INPUT)
def test_bad_input_one_line_error(bad_input_runs, name):
    cases, procs, full_dir = bad_input_runs
    argv, fragments, must_not_exist = cases[name]
    _, stderr = procs[name].communicate(timeout=180)
    assert procs[name].returncode not in (0, None)
    assert procs[name].returncode > 0, f"killed by signal {-procs[name].returncode}: {stderr}"
    message = one_line(stderr)
    assert message.startswith(f"curriculum-ppo {argv[0]}: error: "), message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    if must_not_exist is not None:
        assert not must_not_exist.exists()
    if name == "disk full":
        assert os.listdir(full_dir) == []  # no temp file left behind either
