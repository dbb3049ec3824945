"""``import-demo``: atari-reset pickles -> aligned, re-recorded, verified demos; unsafe/bad files refused.

Every fixture is generated here into ``tmp_path``: the bundled Montezuma's
Revenge action script (635 frames, +100 at action 290, +300 at action 634, no
life lost) is replayed with the project's emulator and written in the
atari-reset pickle format, then varied.

Montezuma's Revenge only moves the player every other frame, so a replay
delayed by an *even* number of NOOPs scores at the same relative frames: for the
plain script, shifts 0, +2, +4, ... all match (the importer picks 0 and says
so). The "other reset length" fixtures are built so that the compensating shift
is forced: three extra leading DOWNs that only work when dropped (-3), and a
demo that only works one NOOP later (+1, tied with -1: the importer prefers
prepending NOOPs over dropping the file's actions).
"""

from __future__ import annotations

import json
import os
import pickle
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from curriculum_ppo.demo.action_script import expand, read_action_script
from curriculum_ppo.demo.importers import (
    ALLOWED_GLOBALS,
    import_atari_reset,
    read_atari_reset,
    restricted_loads,
)
from curriculum_ppo.demo.store import load_demo
from curriculum_ppo.demo.verify import verify_demo
from curriculum_ppo.emulator import Emulator
from curriculum_ppo.errors import UserError
from test_safe_pickle import PAYLOADS, payload

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "demos" / "MontezumaRevenge-room1.actions"
GAME = "MontezumaRevenge"
SMALL_SHIFT = 4  # direct calls search -4..+4 (enough for every fixture) to keep the file fast


# --- fixtures -----------------------------------------------------------------------------
_EMULATOR: list = []  # one emulator and its reset state, shared by the fixtures (loading a ROM is slow)


def replay(actions: list[int]) -> tuple[list[float], list[int]]:
    """Rewards (one per action) and lives (one more) of ``actions`` from the reset frame."""
    if not _EMULATOR:
        emu = Emulator(GAME)
        _EMULATOR[:] = [emu, emu.save_state()]
    emu, reset = _EMULATOR
    emu.restore_state(reset)
    rewards, lives = [], [emu.lives()]
    for a in actions:
        rewards.append(emu.step(a))
        lives.append(emu.lives())
    return rewards, lives


@pytest.fixture(scope="module")
def script() -> dict:
    replay([])
    emu = _EMULATOR[0]
    actions = expand(read_action_script(SCRIPT, emu.action_names))
    rewards, lives = replay(actions)
    assert len(actions) == 635 and sum(rewards) == 400 and rewards[290] == 100 and rewards[634] == 300
    return {"actions": actions, "rewards": rewards, "lives": lives, "DOWN": emu.action_index("DOWN")}


def atari_reset_dict(actions, rewards, lives=None, **extra) -> dict:
    """The dict atari-reset / atari-demo pickle, with fake (unrestorable) checkpoints every 100 frames."""
    rng = np.random.default_rng(0)
    nrs = list(range(0, len(actions), 100))
    data = {"actions": list(actions), "rewards": list(rewards), "signed_rewards": [float(np.sign(r)) for r in rewards],
            "checkpoints": [rng.integers(0, 256, 2000, dtype=np.uint8) for _ in nrs], "checkpoint_action_nr": nrs}
    if lives is not None:
        data["lives"] = list(lives)
    data.update(extra)
    return data


def write_pickle(path: Path, obj, protocol: int = 4) -> Path:
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    return path


def detail(demo) -> dict:
    return json.loads(demo.attrs["source_detail"])


def check_imported(out: Path, frames: int) -> dict:
    demo = load_demo(out)
    result = verify_demo(demo)
    assert result.ok, result.reason
    assert len(demo) == frames and demo.total_return == 400
    assert demo.attrs["source"] == "imported"
    return detail(demo)


def run_cli(*args) -> subprocess.Popen:
    """Start ``python -m curriculum_ppo import-demo ARGS`` (call .communicate() to wait)."""
    return subprocess.Popen([sys.executable, "-m", "curriculum_ppo", "import-demo", *map(str, args)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def one_line_error(proc: subprocess.Popen) -> str:
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 2, (stdout, stderr)
    message = stderr.strip()
    assert message.startswith("curriculum-ppo import-demo: error: ") and "\n" not in message, stderr
    assert "Traceback" not in stderr
    return message


# --- successful imports ---------------------------------------------------------------------
def test_exact_demo_imports_with_no_shift(tmp_path, script):
    src = write_pickle(tmp_path / "exact.pkl", atari_reset_dict(script["actions"], script["rewards"], script["lives"]))
    messages = []
    result = import_atari_reset(src, GAME, tmp_path / "out.h5", report=messages.append)
    assert result.shift == 0 and result.checked == "rewards+lives" and result.frames == 635
    # Even NOOP delays give the same timeline in Montezuma: reported, the smallest |shift| chosen.
    assert {2, 4, 6, 8} <= set(result.matching_shifts)
    assert "aligned with no shift" in messages[0] and "also reproduce" in messages[0]
    d = check_imported(tmp_path / "out.h5", 635)
    assert d["importer"] == "atari-reset" and d["file"] == "exact.pkl" and len(d["sha256"]) == 64
    assert d["leading_noop_shift"] == 0 and d["dropped_leading_reward_entry"] is False
    assert d["checked"] == "rewards+lives" and d["file_checkpoints"] == 7 and d["checkpoints_used"] is False
    assert load_demo(tmp_path / "out.h5").actions.tolist() == script["actions"]


def test_cli_finds_negative_shift_for_a_longer_old_reset(tmp_path, script):
    """The old reset ran 3 frames fewer: its first 3 actions (DOWNs) fell on frames ours already ran."""
    d3 = [script["DOWN"]] * 3
    src = write_pickle(tmp_path / "short_reset.pkl", atari_reset_dict(
        d3 + script["actions"], [0.0] * 3 + script["rewards"], script["lives"][:1] * 3 + script["lives"]))
    out = tmp_path / "aligned.h5"
    proc = run_cli(src, "--game", GAME, "--out", out)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    assert "first 3 actions dropped (-3)" in stdout and "-> " + str(out) in stdout
    d = check_imported(out, 635)
    assert d["leading_noop_shift"] == -3 and d["dropped_leading_actions"] == 3 and d["other_matching_shifts"] == []
    assert load_demo(out).actions.tolist() == script["actions"]


def test_positive_shift_prepends_noops(tmp_path, script):
    """The old reset ran 1 frame more: only a replay one NOOP later reproduces the file."""
    truth = [0, script["DOWN"]] + script["actions"]
    rewards, lives = replay(truth)
    assert sum(rewards) == 400
    file_actions = truth[1:]
    assert sum(replay(file_actions)[0]) < 400  # replayed as is, it fails
    src = write_pickle(tmp_path / "long_reset.pkl", atari_reset_dict(file_actions, rewards[1:], lives[1:]), protocol=3)
    messages = []
    result = import_atari_reset(src, GAME, tmp_path / "out.h5", max_shift=SMALL_SHIFT, report=messages.append)
    assert result.shift == 1 and -1 in result.matching_shifts and 0 not in result.matching_shifts
    assert "+1 leading NOOP;" in messages[0] and "prepending NOOPs before dropping actions" in messages[0]
    d = check_imported(tmp_path / "out.h5", 637)
    assert d["leading_noop_shift"] == 1 and d["prepended_noops"] == 1
    assert load_demo(tmp_path / "out.h5").actions.tolist() == truth


def test_extra_leading_reward_entry_and_python2_era_protocol(tmp_path, script):
    data = atari_reset_dict(script["actions"], [0.0] + script["rewards"], script["lives"])
    src = write_pickle(tmp_path / "extra.pkl", data, protocol=2)
    result = import_atari_reset(src, GAME, tmp_path / "out.h5", max_shift=SMALL_SHIFT, report=None)
    assert result.shift == 0 and "dropped the leading entry" in result.message
    assert check_imported(tmp_path / "out.h5", 635)["dropped_leading_reward_entry"] is True


def test_no_lives_numpy_arrays_protocol5(tmp_path, script):
    data = atari_reset_dict(np.array(script["actions"], dtype=np.int64), np.array(script["rewards"], dtype=np.float32))
    src = write_pickle(tmp_path / "nolives.pkl", data, protocol=5)
    result = import_atari_reset(src, GAME, tmp_path / "out.h5", max_shift=SMALL_SHIFT, report=None)
    assert result.shift == 0 and result.checked == "rewards" and "no lives" in result.message
    assert check_imported(tmp_path / "out.h5", 635)["checked"] == "rewards"


def test_python2_pickle_with_signed_rewards_only(tmp_path, script):
    """A hand-assembled Python 2 / numpy 1.x pickle (str payloads, numpy.core names), loaded as latin-1."""
    data = atari_reset_dict(script["actions"], script["rewards"], script["lives"])
    del data["rewards"]
    data["signed_rewards"][290] = np.float64(1.0)  # a numpy scalar, pickled py2-style
    src = tmp_path / "py2.pkl"
    src.write_bytes(py2_pickle(data))
    loaded = restricted_loads(src.read_bytes())
    assert np.array_equal(loaded["checkpoints"][3], data["checkpoints"][3])
    result = import_atari_reset(src, GAME, tmp_path / "out.h5", max_shift=SMALL_SHIFT, report=None)
    assert result.shift == 0 and result.checked == "signed_rewards+lives"
    check_imported(tmp_path / "out.h5", 635)


# --- the restricted unpickler ----------------------------------------------------------------
@pytest.mark.parametrize("protocol", range(0, pickle.HIGHEST_PROTOCOL + 1))
def test_restricted_loader_reads_every_protocol(protocol):
    obj = {"actions": [1, np.int64(2)], "rewards": [np.float64(1.5), 0.0], "lives": np.array([6, 6, 5]),
           "checkpoints": [np.arange(300, dtype=np.uint8), np.zeros(0, np.uint8),
                           np.asfortranarray(np.arange(6, dtype=np.uint8).reshape(2, 3))],
           "b": b"\x00\xff", "e": b"", "ba": bytearray(b"ab")}
    data = pickle.dumps(obj, protocol=protocol)
    loaded = restricted_loads(data)
    assert loaded["actions"] == [1, 2] and loaded["rewards"] == [1.5, 0.0]
    for a, b in zip(loaded["checkpoints"], obj["checkpoints"]):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    assert loaded["b"] == b"\x00\xff" and loaded["e"] == b"" and loaded["ba"] == bytearray(b"ab")
    if protocol <= 2:  # numpy 1.x wrote numpy.core.multiarray; read it without importing numpy.core
        old = data.replace(b"numpy._core.", b"numpy.core.")
        assert old != data and np.array_equal(restricted_loads(old)["lives"], [6, 6, 5])


class Payload:
    """Unpickling calls ``func(*args)``: a real attack if the loader resolved ``func``."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def malicious_payloads(marker: Path) -> dict[str, bytes]:
    import builtins
    import subprocess as sp

    m = str(marker)
    cases = {
        "posix.system": Payload(os.system, f"touch '{m}'"),  # os.system pickles as posix.system
        "builtins.eval": Payload(builtins.eval, f"open({m!r}, 'w').close()"),
        "builtins.exec": Payload(builtins.exec, f"open({m!r}, 'w').close()"),
        "io.open": Payload(builtins.open, m, "w"),  # builtins.open is io.open
        "subprocess.Popen": Payload(sp.Popen, ["touch", m]),
    }
    out = {name: pickle.dumps({"actions": [0, 1], "rewards": [0.0, 0.0], "checkpoints": [payload]}, protocol=4)
           for name, payload in cases.items()}
    # Hand-written protocol-0 pickle naming os.system directly, and a python-2 style __builtin__.eval.
    out["os.system"] = b"(dp0\nS'actions'\np1\n(lp2\nI0\nasS'x'\np3\ncos\nsystem\np4\n(S'touch " + m.encode() + b"'\ntRs."
    out["__builtin__.eval"] = b"c__builtin__\neval\n(S\"open('" + m.encode() + b"', 'w').close()\"\ntR."
    out["copy_reg._reconstructor"] = pickle.dumps(Payload(__import__("copyreg")._reconstructor, object, object, None), 0)
    return out


def test_malicious_payload_is_live_without_the_restriction(tmp_path):
    """Control: the ``builtins.open`` payload really creates the marker under plain pickle."""
    marker = tmp_path / "MARKER"
    pickle.loads(malicious_payloads(marker)["io.open"]).get("checkpoints")[0].close()
    assert marker.exists()


@pytest.mark.parametrize("name", ["posix.system", "builtins.eval", "builtins.exec", "io.open",
                                  "subprocess.Popen", "os.system", "__builtin__.eval", "copy_reg._reconstructor"])
def test_malicious_pickle_is_refused_without_executing(tmp_path, name):
    marker = tmp_path / "MARKER"
    src = tmp_path / "evil.pkl"
    src.write_bytes(malicious_payloads(marker)[name])
    with pytest.raises(UserError) as err:
        import_atari_reset(src, GAME, tmp_path / "out.h5", report=None)
    message = str(err.value)
    assert f"refusing to load {src}: it references {name}," in message and "nothing in it was executed" in message
    assert not marker.exists() and not (tmp_path / "out.h5").exists()
    assert set(tmp_path.iterdir()) == {src}


def test_allow_list_is_minimal():
    assert all(isinstance(kind, str) for kind in ALLOWED_GLOBALS.values())  # names of our own handlers, not callables
    names = {f"{m}.{n}" for m, n in ALLOWED_GLOBALS}
    assert all(n.startswith(("numpy.", "builtins.byte", "__builtin__.byte", "_codecs.encode")) for n in names)
    assert not any(n.endswith((".eval", ".exec", ".system", ".open", ".getattr", ".Popen", ".load"))
                   for n in names)
    with pytest.raises(UserError):  # _codecs.encode is restricted to latin-1
        restricted_loads(b"c_codecs\nencode\n(S'x'\nS'rot13'\ntR.")


# --- bad files: each one readable line, nonzero exit, nothing written ------------------------------
def test_cli_rejects_bad_input_with_one_line(tmp_path, script):
    marker = tmp_path / "MARKER"
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(malicious_payloads(marker)["posix.system"])
    moved = list(script["rewards"])
    moved[290], moved[340] = 0.0, 100.0  # the key's +100 moved 50 frames later
    corrupt = write_pickle(tmp_path / "moved_reward.pkl", atari_reset_dict(script["actions"], moved, script["lives"]))
    truncated = tmp_path / "truncated.pkl"
    truncated.write_bytes(pickle.dumps(atari_reset_dict(script["actions"], script["rewards"]), protocol=4)[:5000])
    bad_action = write_pickle(tmp_path / "bad_action.pkl",
                              atari_reset_dict(script["actions"][:12] + [99] + script["actions"][13:], script["rewards"]))
    cases = {
        "evil": (evil, GAME, "it references posix.system"),
        "moved": (corrupt, GAME, "no alignment in -2..+2 frames reproduces"),
        "truncated": (truncated, GAME, "truncated"),
        "action99": (bad_action, GAME, "action 99 at frame 12 is out of range"),
        "missing": (tmp_path / "nope.pkl", GAME, "demo file not found"),
        "game": (corrupt, "NoSuchGame", "unknown game 'NoSuchGame'"),
    }
    procs = {k: run_cli(src, "--game", game, "--out", tmp_path / f"{k}.h5", "--max-shift", 2)
             for k, (src, game, _) in cases.items()}
    for key, proc in procs.items():
        message = one_line_error(proc)
        assert cases[key][2] in message, key
        if key == "moved":  # the replay scores +100 at action 290, the file says 0 there
            assert "first diverges at frame 290 of 635: action 290 gives reward 100, the file records 0" in message
        assert not (tmp_path / f"{key}.h5").exists()
    assert not marker.exists()
    assert not [p for p in tmp_path.iterdir() if p.suffix != ".pkl"], "no output or temp files may be left"


def test_cli_refuses_every_hostile_payload_with_one_line_and_no_signal(tmp_path):
    """Each payload of ``test_safe_pickle.PAYLOADS`` (object dtypes, structured dtypes, huge shapes, deep
    nesting, a truncated stream, os.system and getattr chains) through the real command, in parallel."""
    marker = tmp_path / "MARKER"
    procs = {}
    for i, name in enumerate(sorted(PAYLOADS)):
        src = tmp_path / f"payload{i}.pkl"
        src.write_bytes(payload(name, marker))
        procs[name] = (src, run_cli(src, "--game", GAME, "--out", tmp_path / f"payload{i}.h5"))
    for name, (src, proc) in procs.items():
        stdout, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 2, (name, proc.returncode, stderr)  # never < 0: no signal killed it
        lines = stderr.strip().splitlines()
        assert len(lines) == 1 and stdout == "", (name, stderr)
        expected = f"is not a complete pickle (truncated: " if name == "truncated stream" else "refusing to load "
        assert lines[0].startswith("curriculum-ppo import-demo: error: ") and str(src) in lines[0], lines[0]
        assert expected in lines[0] and PAYLOADS[name][1] in lines[0], (name, lines[0])
    assert not marker.exists()
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".pkl"] * len(PAYLOADS), "no output or temp files"


def test_lists_of_shared_arrays_are_refused_before_they_are_expanded(tmp_path):
    """1,000 references to one 1 MB array are 1 MB in the pickle, but would be 1 GB as one numpy array."""
    big = np.zeros(2**20, np.uint8)
    src = write_pickle(tmp_path / "shared.pkl", {"actions": [big] * 1000, "rewards": [0.0]})
    with pytest.raises(UserError, match=r"'actions' is not a flat list of numbers \(entry 0 is a ndarray\)"):
        read_atari_reset(src, num_actions=18)


def test_read_reports_what_loading_used(tmp_path, script):
    src = write_pickle(tmp_path / "demo.pkl", atari_reset_dict(script["actions"], script["rewards"], script["lives"]))
    stats = read_atari_reset(src, num_actions=18).load_stats
    assert stats.size == src.stat().st_size and 0 < stats.memory < stats.budget


def test_corrupted_actions_report_the_divergence_frame(tmp_path, script):
    actions = list(script["actions"])
    actions[150:170] = [0] * 20  # stand still in the middle of the route
    src = write_pickle(tmp_path / "bad.pkl", atari_reset_dict(actions, script["rewards"], script["lives"]))
    with pytest.raises(UserError, match=r"no alignment in -4\.\.\+4 .*first diverges at frame (\d+) of 635") as err:
        import_atari_reset(src, GAME, tmp_path / "out.h5", max_shift=SMALL_SHIFT, report=None)
    assert int(__import__("re").search(r"frame (\d+) of", str(err.value)).group(1)) >= 150
    assert "nothing was written" in str(err.value) and not (tmp_path / "out.h5").exists()


def test_shift_outside_max_shift_fails(tmp_path, script):
    d3 = [script["DOWN"]] * 3
    src = write_pickle(tmp_path / "short_reset.pkl", atari_reset_dict(
        d3 + script["actions"], [0.0] * 3 + script["rewards"], script["lives"][:1] * 3 + script["lives"]))
    with pytest.raises(UserError, match=r"no alignment in -2\.\.\+2 frames .* first diverges at frame \d+ of 638"):
        import_atari_reset(src, GAME, tmp_path / "out.h5", max_shift=2, report=None)
    assert not (tmp_path / "out.h5").exists()


@pytest.mark.parametrize("content, expected", [
    (b"", "is empty"),
    (b"this is not a pickle\n", "not a readable atari-reset pickle"),
    (pickle.dumps([1, 2, 3]), "holds a list, not an atari-reset demo"),
    (pickle.dumps({"rewards": [0.0]}), "has no 'actions'"),
    (pickle.dumps({"actions": []}), "holds no actions"),
    (pickle.dumps({"actions": [1, 2]}), "has no 'rewards'"),
    (pickle.dumps({"actions": [1, 2], "rewards": [0.0] * 5}), "'rewards' has 5 entries for 2 actions"),
    (pickle.dumps({"actions": [1, -1], "rewards": [0.0] * 2}), "action -1 at frame 1 is out of range"),
    (pickle.dumps({"actions": [1.5], "rewards": [0.0]}), "'actions' must hold whole numbers"),
    (pickle.dumps({"actions": ["UP"], "rewards": [0.0]}), "'actions' is not"),
    (b"\x80\x04\x95", "truncated"),
])
def test_malformed_files(tmp_path, content, expected):
    src = tmp_path / "bad.pkl"
    src.write_bytes(content)
    with pytest.raises(UserError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        read_atari_reset(src, num_actions=18)


def test_hdf5_and_directory_are_explained(tmp_path):
    with pytest.raises(UserError, match="is an HDF5 file"):
        read_atari_reset(ROOT / "demos" / "MontezumaRevenge-room1.h5")
    with pytest.raises(UserError, match="is a directory"):
        read_atari_reset(tmp_path)
    with pytest.raises(UserError, match="--max-shift must be 0 or more"):
        import_atari_reset(tmp_path / "x.pkl", GAME, tmp_path / "out.h5", max_shift=-1, report=None)


# --- a Python 2 pickle writer (what atari-reset's own files look like) -----------------------------
def py2_pickle(obj) -> bytes:
    """Protocol 2 as Python 2.7 + numpy 1.x wrote it: str as SHORT_BINSTRING/BINSTRING, numpy.core names."""
    out = bytearray(b"\x80\x02")

    def string(raw: bytes) -> None:
        out.extend(b"U" + bytes([len(raw)]) + raw if len(raw) < 256 else b"T" + struct.pack("<i", len(raw)) + raw)

    def integer(v: int) -> None:
        out.extend(b"K" + bytes([v]) if 0 <= v < 256 else b"J" + struct.pack("<i", v))

    def dtype(dt: np.dtype) -> None:
        out.extend(b"cnumpy\ndtype\n")
        string(dt.str[1:].encode())
        out.extend(b"K\x00K\x01\x87R(K\x03")
        string(dt.str[:1].encode())
        out.extend(b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb")

    def emit(o) -> None:
        if isinstance(o, dict):
            out.extend(b"}(")
            for k, v in o.items():
                emit(k)
                emit(v)
            out.extend(b"u")
        elif isinstance(o, list):
            out.extend(b"](")
            for v in o:
                emit(v)
            out.extend(b"e")
        elif isinstance(o, str):
            string(o.encode("ascii"))
        elif isinstance(o, np.ndarray):  # ndarray.__reduce__ of numpy 1.x under python 2
            out.extend(b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85")
            string(b"b")
            out.extend(b"\x87R(K\x01")
            integer(o.shape[0])
            out.extend(b"\x85")
            dtype(o.dtype)
            out.extend(b"\x89")
            string(o.tobytes())
            out.extend(b"tb")
        elif isinstance(o, np.generic):  # numpy scalar: scalar(dtype, raw bytes)
            out.extend(b"cnumpy.core.multiarray\nscalar\n")
            dtype(o.dtype)
            string(o.tobytes())
            out.extend(b"\x86R")
        elif isinstance(o, float):
            out.extend(b"G" + struct.pack(">d", o))
        elif isinstance(o, int):
            integer(o)
        else:  # pragma: no cover
            raise TypeError(type(o))

    emit(obj)
    out.extend(b".")
    return bytes(out)
