"""Demo files on a real emulator and real HDF5: writing, reading, restoring any frame."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import resource
import shutil
import stat

import h5py
import numpy as np
import pytest

from curriculum_ppo import __version__
from curriculum_ppo.demo import schema
from curriculum_ppo.demo.inspect import screen_at
from curriculum_ppo.demo.reader import read_demo_file
from curriculum_ppo.demo.store import Demo, DemoBuilder, load_demo, save_demo
from curriculum_ppo.emulator import Emulator, EmulatorSettings, ale_version, rom_md5, rom_path
from curriculum_ppo.errors import UserError

GAME = "montezuma_revenge"


def record_random(n: int, seed: int = 0, state_interval: int = 20, store_frames: bool = False) -> DemoBuilder:
    """A demo of ``n`` uniformly random actions on a fresh Montezuma emulator."""
    emu = Emulator(EmulatorSettings(GAME))
    builder = DemoBuilder(emu, state_interval=state_interval, store_frames=store_frames)
    for action in np.random.default_rng(seed).integers(0, emu.num_actions, n):
        builder.step(int(action))
    return builder


@pytest.fixture(scope="module")
def random_saved(tmp_path_factory):
    """300 random frames, states every 7 frames (300 is not a multiple), saved and loaded back."""
    directory = tmp_path_factory.mktemp("random_demo")
    demo = record_random(300, seed=1234, state_interval=7).build()
    path = directory / "random.h5"
    before = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    save_demo(demo, path)
    after = dt.datetime.now(dt.timezone.utc)
    return demo, load_demo(path), path, (before, after)


# --- save / load ----------------------------------------------------------------------
def test_round_trip_arrays(random_saved):
    demo, loaded, path, _ = random_saved
    assert len(loaded) == len(demo) == 300
    assert loaded.game == GAME
    assert loaded.path == path
    for name in ("actions", "rewards", "lives", "ram", "state_frames"):
        original, restored = getattr(demo, name), getattr(loaded, name)
        assert restored.dtype == original.dtype, name
        np.testing.assert_array_equal(restored, original, err_msg=name)
    assert loaded.states == demo.states  # bytes, padding stripped
    assert loaded.frames is None
    assert loaded.action_set == demo.action_set and loaded.action_set[:4] == ["NOOP", "FIRE", "UP", "RIGHT"]
    assert loaded.total_return == demo.total_return


def test_file_layout_matches_schema_docstring(random_saved):
    _, loaded, path, _ = random_saved
    n, k = len(loaded), len(loaded.states)
    expected = {
        "actions": (np.uint8, (n,)), "rewards": (np.float32, (n,)), "lives": (np.uint8, (n + 1,)),
        "ram": (np.uint8, (n + 1, 128)), "state_lengths": (np.int32, (k,)), "state_frames": (np.int64, (k,)),
    }
    with h5py.File(path, "r") as f:  # plain h5py, no curriculum_ppo code
        assert set(f.keys()) == set(schema.DATASETS)
        for name, (dtype, shape) in expected.items():
            assert f[name].dtype == dtype and f[name].shape == shape, name
        assert f["states"].dtype == np.uint8 and f["states"].shape == (k, max(map(len, loaded.states)))
        lengths = f["state_lengths"][()]
        for i in (0, k // 2, k - 1):
            assert f["states"][i, : lengths[i]].tobytes() == loaded.states[i]
            assert not f["states"][i, lengths[i]:].any()  # zero padding


def test_attributes_complete_and_typed(random_saved):
    _, loaded, _, (before, after) = random_saved
    attrs = loaded.attrs
    for key, (types, _meaning) in schema.ATTRIBUTES.items():
        assert key in attrs, key
        assert isinstance(attrs[key], types), (key, type(attrs[key]))
    assert attrs["format"] == schema.FORMAT_NAME
    assert attrs["schema_version"] == schema.SCHEMA_VERSION
    assert attrs["game"] == GAME
    assert attrs["num_frames"] == 300
    assert attrs["state_interval"] == 7
    assert attrs["frameskip"] == 1 and attrs["repeat_action_probability"] == 0.0
    assert attrs["total_return"] == loaded.total_return
    assert attrs["source"] == "recorded" and json.loads(attrs["source_detail"]) == {}
    assert attrs["writer_version"] == __version__
    assert attrs["ale_py_version"] == ale_version()
    assert attrs["action_set"] == loaded.action_set
    assert attrs["rom_md5"] == rom_md5(GAME) == hashlib.md5(rom_path(GAME).read_bytes()).hexdigest()
    created = dt.datetime.fromisoformat(attrs["created"])
    assert created.utcoffset() == dt.timedelta(0)
    assert before <= created <= after


def test_source_and_detail_are_stored(tmp_path):
    demo = record_random(10).build()
    save_demo(demo, tmp_path / "s.h5", source="scripted", detail={"script": "x.actions", "n": np.int64(3)})
    attrs = load_demo(tmp_path / "s.h5").attrs
    assert attrs["source"] == "scripted"
    assert json.loads(attrs["source_detail"]) == {"script": "x.actions", "n": 3}
    with pytest.raises(ValueError):
        save_demo(demo, tmp_path / "bad.h5", source="dreamed")
    assert sorted(os.listdir(tmp_path)) == ["s.h5"]


def test_state_interval_respected(random_saved):
    demo, loaded, _, _ = random_saved
    assert loaded.state_frames.tolist() == list(range(0, 300, 7)) + [300]
    # N a multiple of the interval: the last state is not duplicated
    assert record_random(60, state_interval=20).build().state_frames.tolist() == [0, 20, 40, 60]


def test_file_permissions_normal_and_no_temp_files(random_saved):
    _, _, path, _ = random_saved
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    assert stat.S_IMODE(path.stat().st_mode) & 0o044  # not the 0600 of a raw mkstemp file
    assert os.listdir(path.parent) == [path.name]


def test_overwrite_replaces_file(tmp_path):
    path = tmp_path / "d.h5"
    builder = record_random(30, seed=1)
    save_demo(builder.build(), path)
    for _ in range(20):
        builder.step(0)
    save_demo(builder.build(), path)
    assert len(load_demo(path)) == 50
    assert os.listdir(tmp_path) == ["d.h5"]


# --- restoring frames -----------------------------------------------------------------
def test_restore_random_demo_every_frame(random_saved):
    _, loaded, _, _ = random_saved
    emu = loaded.make_emulator()
    for t in range(len(loaded) + 1):
        loaded.restore(emu, t)
        np.testing.assert_array_equal(emu.ram(), loaded.ram[t], err_msg=f"frame {t}")
        assert emu.lives() == loaded.lives[t]


def test_restore_bundled_demo_many_frames(bundled_demo, bundled_emulator):
    demo, emu = bundled_demo, bundled_emulator
    n = len(demo)
    frames = {0, 1, 19, 20, 21, 289, 290, 291, n - 1, n, *demo.state_frames.tolist()}
    frames |= set(np.random.default_rng(7).integers(0, n + 1, 60).tolist())
    for t in sorted(frames, reverse=True):  # jump backwards and forwards on one emulator
        demo.restore(emu, t)
        np.testing.assert_array_equal(emu.ram(), demo.ram[t], err_msg=f"frame {t}")
        assert emu.lives() == demo.lives[t]
    with pytest.raises(IndexError):
        demo.restore(emu, n + 1)
    with pytest.raises(IndexError):
        demo.restore(emu, -1)


@pytest.fixture(scope="module")
def bundled_emulator(bundled_demo):
    """One emulator shared by the restore tests: restore() must not depend on its history."""
    return bundled_demo.make_emulator()


@pytest.mark.parametrize("start", [0, 137, 289, 300, 500, 633])
def test_restore_then_continue_reproduces_demo(bundled_demo, bundled_emulator, start):
    demo, emu = bundled_demo, bundled_emulator
    demo.restore(emu, start)
    rewards = []
    for t in range(start, len(demo)):
        rewards.append(emu.step(int(demo.actions[t])))
        np.testing.assert_array_equal(emu.ram(), demo.ram[t + 1], err_msg=f"after action {t}")
    np.testing.assert_array_equal(np.asarray(rewards, dtype=np.float32), demo.rewards[start:])
    assert sum(rewards) == demo.returns_to_go[start]


# --- derived quantities ---------------------------------------------------------------
def test_bundled_demo_returns_and_events(bundled_demo):
    demo = bundled_demo
    n = len(demo)
    assert n == 635 and demo.total_return == 400.0
    assert demo.reward_events() == [(290, 100.0), (634, 300.0)]
    assert demo.life_losses() == []
    c, g = demo.cumulative_return, demo.returns_to_go
    assert c.shape == g.shape == (n + 1,)
    assert c[0] == 0 and c[n] == demo.total_return
    assert g[0] == demo.total_return and g[n] == 0
    np.testing.assert_allclose(c + g, demo.total_return)
    assert c[290] == 0 and c[291] == 100 and g[291] == 300 and g[634] == 300 and g[635] == 0
    assert np.all(np.diff(c) >= 0)


def test_life_losses_of_random_demo(random_saved):
    demo = random_saved[1]
    lives = demo.lives.astype(int)
    expected = [t for t in range(1, len(lives)) if lives[t] < lives[t - 1]]
    assert expected, "seed 1234 should lose a life within 300 random frames"
    assert demo.life_losses() == expected


# --- DemoBuilder ----------------------------------------------------------------------
def test_truncate_rewinds_emulator_and_arrays():
    builder = record_random(100, seed=5, state_interval=20, store_frames=True)
    full = builder.build()
    builder.truncate(63)
    assert len(builder) == 63
    assert len(builder.rewards) == 63 and len(builder.lives) == len(builder.ram) == len(builder.frames) == 64
    assert sorted(builder.states) == [0, 20, 40, 60]
    np.testing.assert_array_equal(builder.emulator.ram(), full.ram[63])
    # recording the same actions again reproduces the original frames exactly
    for t in range(63, 100):
        assert builder.step(int(full.actions[t])) == full.rewards[t]
    again = builder.build()
    for name in ("actions", "rewards", "lives", "ram", "state_frames", "frames"):
        np.testing.assert_array_equal(getattr(again, name), getattr(full, name), err_msg=name)
    assert again.states == full.states
    # out-of-range values are clamped
    builder.truncate(10_000)
    assert len(builder) == 100
    builder.truncate(-5)
    assert len(builder) == 0 and sorted(builder.states) == [0] and len(builder.frames) == 1
    np.testing.assert_array_equal(builder.emulator.ram(), full.ram[0])
    assert builder.build().state_frames.tolist() == [0]
    with pytest.raises(UserError, match="out of range"):  # bad actions are refused, nothing recorded
        builder.step(builder.emulator.num_actions)
    assert len(builder) == 0


def test_store_frames_match_emulator_screen(tmp_path):
    demo = record_random(120, seed=9, state_interval=20, store_frames=True).build()
    path = save_demo(demo, tmp_path / "frames.h5")
    loaded = load_demo(path, load_frames=True)
    assert loaded.frames.shape == (121, 210, 160, 3) and loaded.frames.dtype == np.uint8
    assert load_demo(path).frames is None  # frames are only read on request
    emu = Emulator(GAME)  # an independent replay from a fresh emulator
    np.testing.assert_array_equal(loaded.frames[0], emu.screen_rgb())
    for t in range(len(loaded)):
        emu.step(int(loaded.actions[t]))
        np.testing.assert_array_equal(loaded.frames[t + 1], emu.screen_rgb(), err_msg=f"frame {t + 1}")
    assert not np.array_equal(loaded.frames[0], loaded.frames[-1])
    for t in (0, 57, 120):  # inspect's restore-based replay draws the same screens
        np.testing.assert_array_equal(screen_at(loaded, t), loaded.frames[t], err_msg=f"screen_at {t}")


def test_make_emulator_refuses_other_rom(bundled_demo):
    # a Demo whose ROM hash disagrees with the installed ROM cannot make an emulator
    fake = Demo(**{**bundled_demo.__dict__, "attrs": {**bundled_demo.attrs, "rom_md5": "0" * 32}})
    with pytest.raises(UserError, match="MD5"):
        fake.make_emulator()


# --- the reader: nothing in a file is trusted --------------------------------------------
def rebuilt_copy(src, dst, change):
    """A copy of demo ``src`` made with plain h5py, dataset by dataset; ``change(name, data)`` returns
    h5py ``create_dataset`` keyword arguments for a dataset (or None to keep it as it is)."""
    with h5py.File(src, "r") as f, h5py.File(dst, "w") as g:
        for key, value in f.attrs.items():
            g.attrs[key] = value
        for name in f:
            data = f[name][()]
            g.create_dataset(name, **(change(name, data) or {"data": data}))
    return dst


def test_reader_in_a_child_process_gives_what_plain_h5py_reads(bundled_demo_path):
    isolated = read_demo_file(bundled_demo_path)
    in_process = read_demo_file(bundled_demo_path, isolate=False)
    with h5py.File(bundled_demo_path, "r") as f:
        for contents in (isolated, in_process):
            assert set(contents.arrays) == set(schema.DATASETS)
            for name, array in contents.arrays.items():
                np.testing.assert_array_equal(array, f[name][()], err_msg=name)
                assert array.dtype == f[name].dtype and contents.shapes[name] == f[name].shape
            assert contents.attrs["game"] == f.attrs["game"]
            assert contents.attrs["action_set"] == [str(a) for a in f.attrs["action_set"]]
    assert isolated.attrs == in_process.attrs
    header = read_demo_file(bundled_demo_path, arrays=())
    assert header.arrays == {} and header.shapes["actions"] == (635,)


@pytest.mark.parametrize("isolate", [True, False])
@pytest.mark.parametrize("case, change, message", [
    ("dtype", lambda name, data: {"data": data.astype(np.float64)} if name == "rewards" else None,
     "/rewards stores float64 values, expected float32"),
    ("byte order", lambda name, data: {"data": data.astype(">i8")} if name == "state_frames" else None,
     "/state_frames stores >i8 values, expected int64"),
    ("huge claim", lambda name, data: {"shape": (10**8, 128), "dtype": np.uint8, "chunks": (4096, 128),
                                       "compression": "gzip"} if name == "ram" else None,
     "/ram has shape (100000000, 128), expected (636, 128)"),
], ids=["dtype", "byte-order", "shape"])
def test_reader_refuses_types_and_shapes_before_reading(tmp_path, bundled_demo_path, case, change, message,
                                                         isolate):
    path = rebuilt_copy(bundled_demo_path, tmp_path / f"{case}.h5", change)
    with pytest.raises(UserError, match=re.escape(message)):
        read_demo_file(path, isolate=isolate)


def test_reader_refuses_a_demo_whose_size_claims_exceed_the_file(tmp_path, bundled_demo_path):
    """Consistent shapes for 100 million frames but no stored chunks: refused before any allocation."""
    n = 10**8
    path = tmp_path / "claims.h5"
    with h5py.File(bundled_demo_path, "r") as f, h5py.File(path, "w") as g:
        for key, value in f.attrs.items():
            g.attrs[key] = value
        g.attrs["num_frames"] = n
        for name, shape in {"actions": (n,), "rewards": (n,), "lives": (n + 1,), "ram": (n + 1, 128)}.items():
            g.create_dataset(name, shape=shape, dtype=f[name].dtype, chunks=True, compression="gzip")
        for name in ("states", "state_lengths", "state_frames"):
            g.create_dataset(name, data=f[name][()])
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for isolate in (True, False):
        with pytest.raises(UserError, match=r"/actions claims 100,000,000 bytes but the file stores only 0 bytes"):
            read_demo_file(path, isolate=isolate)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss < 50_000  # KiB: nothing was allocated


def test_reader_refuses_links_and_data_from_other_files(tmp_path, bundled_demo_path):
    secret = tmp_path / "secret.bin"
    secret.write_bytes(bytes(range(256)) * 3)
    link = tmp_path / "link.h5"
    shutil.copyfile(bundled_demo_path, link)
    with h5py.File(link, "r+") as f:
        del f["actions"]
        f["actions"] = h5py.SoftLink("/rewards")
    external = rebuilt_copy(bundled_demo_path, tmp_path / "external.h5",
                            lambda name, data: {"shape": data.shape, "dtype": data.dtype,
                                                "external": [(str(secret), 0, data.nbytes)]}
                            if name == "actions" else None)
    with pytest.raises(UserError, match="/actions is a link"):
        load_demo(link)
    with pytest.raises(UserError, match="/actions takes its data from other files"):
        load_demo(external)


def test_reader_refuses_attributes_of_the_wrong_type(tmp_path, bundled_demo_path):
    for key, value, message in [("num_frames", "635", "attribute 'num_frames' is str '635', expected int"),
                                ("frameskip", True, "attribute 'frameskip' is bool True, expected int"),
                                ("action_set", np.arange(3), "'action_set' must be a non-empty list of action"),
                                ("state_interval", 0, "state_interval is 0; it must be at least 1")]:
        path = tmp_path / f"{key}.h5"
        shutil.copyfile(bundled_demo_path, path)
        with h5py.File(path, "r+") as f:
            f.attrs[key] = value
        with pytest.raises(UserError, match=re.escape(message)):
            load_demo(path)


def test_reader_refuses_a_fifo(tmp_path):
    fifo = tmp_path / "demo.h5"
    os.mkfifo(fifo)
    with pytest.raises(UserError, match="is not a regular file"):
        load_demo(fifo)
