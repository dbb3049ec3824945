"""The bundled demos beyond room 1, and the route-finding tool that wrote their action scripts.

``demos/<name>.actions`` is each demo's readable source, ``demos/<name>.h5`` its recording. Each is
re-recorded here through the real recorder (``curriculum-ppo record --actions`` in a child
process); every array, the saved states and the metadata must equal the committed file's, and
``curriculum-ppo verify`` must pass on the committed file. What each demo is said to contain
(frames, return, reward events, rooms, no life lost; demos/README.md) is checked against the
file, and the script's comments against its replay.

``scripts/explore_route.py`` is tested on what it promises: the same seed and budget give the
same route; the route replays from the game start to the score it claims without losing a life;
its script parses back to the same actions; and no cell is kept from a state that is doomed to
lose a life.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from curriculum_ppo.demo.action_script import expand, format_action_script, parse_action_script, read_action_script
from curriculum_ppo.demo.store import load_demo
from curriculum_ppo.emulator import Emulator, resolve_game

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import explore_route  # noqa: E402  (a script, imported from scripts/)

# name -> game, frames, total return, reward events (frame, reward), rooms in the order first entered (RAM)
BUNDLED = {
    "MontezumaRevenge-rooms": dict(
        game="MontezumaRevenge", frames=4199, total=5600,
        rewards=[(290, 100), (634, 300), (1418, 100), (1641, 2000), (3204, 100), (3874, 1000), (3956, 1000),
                 (4198, 1000)],
        rooms=[1, 2, 6, 5, 7, 13, 14, 22, 23]),
    "PrivateEye-clue": dict(
        game="PrivateEye", frames=1183, total=15100, rewards=[(245, 100), (1182, 15000)],
        rooms=[0, 31, 30, 29, 25, 26, 27, 28]),
}


def cli(*args, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "curriculum_ppo", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module", params=sorted(BUNDLED))
def bundled(request, tmp_path_factory):
    """(name, facts, committed demo, demo re-recorded from the committed script, script path)."""
    name = request.param
    facts = BUNDLED[name]
    script = ROOT / "demos" / f"{name}.actions"
    out = tmp_path_factory.mktemp(name) / f"{name}.h5"
    proc = cli("record", "--game", facts["game"], "--actions", script, "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert f"recorded {facts['frames']} frames" in proc.stdout and f"total return {facts['total']}" in proc.stdout
    return name, facts, load_demo(ROOT / "demos" / f"{name}.h5"), load_demo(out), script


def test_demo_regenerates_from_its_script(bundled):
    name, facts, committed, new, script = bundled
    for array in ("actions", "rewards", "lives", "ram", "state_frames"):
        np.testing.assert_array_equal(getattr(new, array), getattr(committed, array), err_msg=array)
    assert new.states == committed.states
    digest = hashlib.sha256(script.read_bytes()).hexdigest()
    for demo in (new, committed):
        assert demo.attrs["source"] == "scripted"
        assert json.loads(demo.attrs["source_detail"]) == {"script": script.name, "script_sha256": digest}
    for key in ("game", "rom_md5", "action_set", "mode", "difficulty", "seed", "state_interval", "num_frames",
                "total_return"):
        assert new.attrs[key] == committed.attrs[key], key


def test_committed_demo_verifies(bundled):
    name, facts, *_ = bundled
    proc = cli("verify", ROOT / "demos" / f"{name}.h5")
    assert proc.returncode == 0, proc.stderr
    assert f"replays exactly ({facts['frames']} frames, total return {facts['total']})" in proc.stdout


def test_demo_holds_what_its_readme_says(bundled):
    name, facts, demo, _, _ = bundled
    assert len(demo) == facts["frames"] and demo.total_return == facts["total"]
    events = [(int(i), float(demo.rewards[i])) for i in np.flatnonzero(demo.rewards)]
    assert events == facts["rewards"]
    lives = np.asarray(demo.lives)
    assert (lives == lives[0]).all(), "a life was lost"
    room_byte = explore_route.CELL_SPECS[resolve_game(facts["game"])].room
    rooms = list(dict.fromkeys(int(r) for r in np.asarray(demo.ram)[:, room_byte]))
    assert rooms == facts["rooms"]


def test_script_comments_match_the_replay(bundled):
    """Every '+R at frame N' and 'enters room R' comment in the script is what the recording shows."""
    name, facts, demo, _, script = bundled
    text = script.read_text()
    said = [(int(f), float(r)) for f, r in re.findall(r"^# --- frame (\d+): ([+-][\d.]+) \(score", text, re.M)]
    assert said == facts["rewards"]
    room_byte = explore_route.CELL_SPECS[resolve_game(facts["game"])].room
    ram = np.asarray(demo.ram)
    for frame, room in re.findall(r"^# --- frame (\d+): enters room (\d+)", text, re.M):
        frame, room = int(frame), int(room)
        assert ram[frame + 1, room_byte] == room and ram[frame, room_byte] != room, (frame, room)


# --- the route-finding tool --------------------------------------------------------------------------
def short_search(seed: int, frames: int = 6_000):
    emu = Emulator("montezuma_revenge")
    spec = explore_route.CELL_SPECS["montezuma_revenge"]
    result = explore_route.search(emu, spec, [], frames=frames, seed=seed, p=explore_route.Params(),
                                  report=lambda s: None)
    return emu, spec, result


def test_search_is_deterministic_and_its_route_replays():
    emu, spec, a = short_search(seed=3)
    _, _, b = short_search(seed=3)
    assert a.frames == b.frames and a.iterations == b.iterations
    assert list(a.archive.cells) == list(b.archive.cells)
    assert [c.actions for c in a.archive.cells.values()] == [c.actions for c in b.archive.cells.values()]
    _, _, c = short_search(seed=4)
    assert [x.actions for x in c.archive.cells.values()] != [x.actions for x in a.archive.cells.values()]
    assert len(a.archive.cells) > 10
    for key, cell in a.archive.cells.items():  # every kept way replays from the start to its cell, alive
        events, summary = explore_route.replay_events(emu, spec, list(cell.actions))
        assert summary["lives_lost"] == 0 and summary["return"] == cell.score
        assert spec.key(emu.ram()) == key


def test_route_script_round_trips_with_event_comments():
    emu = Emulator("montezuma_revenge")
    spec = explore_route.CELL_SPECS["montezuma_revenge"]
    actions = expand(read_action_script(ROOT / "demos" / "MontezumaRevenge-room1.actions", emu.action_names))
    events, summary = explore_route.replay_events(emu, spec, actions)
    assert summary["reward_events"] == [[290, 100.0], [634, 300.0]] and summary["rooms_visited"] == [1]
    text = explore_route.format_route(actions, emu.action_names, events, ["a header", "two lines"])
    assert text.startswith("# a header\n# two lines\n")
    assert expand(parse_action_script(text, emu.action_names)) == actions
    lines = text.splitlines()
    i = lines.index("# --- frame 290: +100 (score 100) in room 1")
    # the comment follows the line holding action 290 exactly: the runs before it end at frame 290
    assert len(expand(parse_action_script("\n".join(lines[:i]), emu.action_names))) == 291
    assert lines[-1] == "# --- frame 634: +300 (score 400) in room 1"


def test_doomed_states_never_become_cells():
    """Walking right off the start platform: after 14 frames the fall is under way and kills 18 frames later."""
    emu = Emulator("montezuma_revenge")
    spec = explore_route.CELL_SPECS["montezuma_revenge"]
    right = emu.action_index("RIGHT")
    for _ in range(14):
        emu.step(right)
    doomed = explore_route.Cell(0.0, bytes([right] * 14), emu.save_state())
    for doom_frames, expect_kept in ((100, False), (0, True)):
        archive = explore_route.Archive({("doomed",): doomed})
        rng = np.random.default_rng(0)
        kept = sum(explore_route.explore_once(emu, spec, archive, ("doomed",), doomed, rng,
                                              explore_route.Params(doom_frames=doom_frames))[1] for _ in range(5))
        assert (kept > 0) == expect_kept, (doom_frames, kept)
        assert (len(archive.cells) > 1) == expect_kept


def test_ways_stay_right_when_an_exploration_improves_its_own_start_cell():
    """Mid-jump for the key, in cells one column wide: the key (+100) improves the start cell itself.

    Cells reached after that must still get the start cell's *old* way plus the exploration's
    actions (the search once appended them to the new way, and those routes did not replay).
    """
    emu = Emulator("montezuma_revenge")
    spec = explore_route.CellSpec(room=3, x=42, y=43, x_bin=8, y_bin=256)
    actions = expand(read_action_script(ROOT / "demos" / "MontezumaRevenge-room1.actions", emu.action_names))
    for a in actions[:285]:
        emu.step(a)
    start, state = spec.key(emu.ram()), emu.save_state()
    exercised = 0
    for seed in range(16):
        archive = explore_route.Archive({start: explore_route.Cell(0.0, bytes(actions[:285]), state)})
        explore_route.explore_once(emu, spec, archive, start, archive.cells[start], np.random.default_rng(seed),
                                   explore_route.Params())
        exercised += archive.cells[start].score == 100 and len(archive.cells) > 2
        for key, cell in archive.cells.items():
            _, summary = explore_route.replay_events(emu, spec, list(cell.actions))
            assert summary["return"] == cell.score and spec.key(emu.ram()) == key, (seed, key)
    assert exercised >= 2


def test_archive_prefers_higher_score_then_shorter():
    archive = explore_route.Archive()
    assert archive.offer(("c",), 0.0, b"\x00" * 10, b"s1")
    assert not archive.offer(("c",), 0.0, b"\x00" * 10, b"s2")  # a tie is no better
    assert archive.offer(("c",), 0.0, b"\x00" * 9, b"s3")
    assert archive.offer(("c",), 100.0, b"\x00" * 50, b"s4")  # more points beat fewer frames
    assert not archive.offer(("c",), 0.0, b"\x00", b"s5")
    cell = archive.cells[("c",)]
    assert (cell.score, cell.length, cell.state) == (100.0, 50, b"s4")
    archive.offer(("d",), 100.0, b"\x00" * 20, b"s6")
    archive.offer(("e",), -1.0, b"\x00" * 5, b"s7")
    assert archive.best()[0] == ("d",)
    w = archive.weights(score_decay=0.5)
    assert w[2] == pytest.approx(w[1] * 0.5)  # one distinct score below the best


def test_command_line_writes_a_script_that_records_as_claimed(tmp_path):
    """From a prefix 5 frames short of Private Eye's +100 at frame 245, a tiny search finds it."""
    names = Emulator("private_eye").action_names
    clue = expand(read_action_script(ROOT / "demos" / "PrivateEye-clue.actions", names))
    prefix = tmp_path / "prefix.actions"
    prefix.write_text(format_action_script(clue[:240], names))
    out, js = tmp_path / "route.actions", tmp_path / "route.json"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "explore_route.py"), "--game", "PrivateEye",
                           "--prefix", str(prefix), "--frames", "3000", "--seed", "1", "--doom-frames", "0",
                           "--out", str(out), "--json", str(js)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    record = json.loads(js.read_text())
    route = record["route"]
    assert record["frames_explored"] >= 3000 and record["params"]["doom_frames"] == 0 and route["lives_lost"] == 0
    assert f"--frames {record['frames_explored']} --seed 1 --doom-frames 0 --out {out}" in out.read_text()
    assert "route return" in proc.stdout and f"wrote {out}" in proc.stdout
    assert record["prefix_frames"] == 240 and route["frames"] > 240
    rec = cli("record", "--game", "PrivateEye", "--actions", out, "--out", tmp_path / "route.h5")
    assert rec.returncode == 0, rec.stderr
    demo = load_demo(tmp_path / "route.h5")
    assert len(demo) == route["frames"] and demo.total_return == route["return"] > 0
    assert [[int(i), float(demo.rewards[i])] for i in np.flatnonzero(demo.rewards)] == route["reward_events"]


@pytest.mark.parametrize("args, fragment", [
    (["--game", "Pong", "--out", "{tmp}/x.actions"], "no cell definition for Pong"),
    (["--game", "MontezumaRevenge", "--prefix", "{tmp}/nope.actions", "--out", "{tmp}/x.actions"],
     "action script not found"),
    (["--game", "MontezumaRevenge", "--out", "{tmp}/no/such/dir/x.actions"], "does not exist"),
    (["--game", "PrivateEye", "--out", "{tmp}/x.actions", "--json", "{tmp}/x.json"],
     "no route scored more than the start (0); nothing written"),
])
def test_bad_input_is_one_line(tmp_path, args, fragment):
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "explore_route.py"),
                           *(a.format(tmp=tmp_path) for a in args), "--frames", "1000"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    message = proc.stderr.strip()
    assert "\n" not in message and "Traceback" not in message and fragment in message, message
    assert sorted(p.name for p in tmp_path.iterdir()) == []
