"""One read-only demo copy per machine: identical data in every process, pages shared, not duplicated."""

import multiprocessing as mp
from pathlib import Path

import numpy as np
import pytest

from curriculum_ppo.demo.shared import CACHE_ENV, open_shared_demo, shared_demo_cache
from curriculum_ppo.demo.store import load_demo
from curriculum_ppo.errors import UserError

DEMO = Path(__file__).resolve().parent.parent / "demos" / "MontezumaRevenge-room1.h5"


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_shared_demo_equals_the_file_and_restores_the_same_frames():
    plain, shared = load_demo(DEMO), open_shared_demo(DEMO)
    assert len(shared) == len(plain) and shared.game == plain.game and shared.action_set == plain.action_set
    for name in ("actions", "rewards", "lives", "ram", "state_frames"):
        a, b = getattr(plain, name), getattr(shared, name)
        assert np.array_equal(a, b) and a.dtype == b.dtype, name
        assert not b.flags.writeable, f"{name} must be a read-only view"
    assert len(shared.states) == len(plain.states) and all(a == b for a, b in zip(plain.states, shared.states))
    assert shared.attrs["total_return"] == plain.attrs["total_return"] == 400.0
    assert np.array_equal(shared.cumulative_return, plain.cumulative_return)
    emu_a, emu_b = plain.make_emulator(), shared.make_emulator()
    for t in (0, 7, 290, 291, 634, 635):
        plain.restore(emu_a, t)
        shared.restore(emu_b, t)
        assert np.array_equal(emu_a.ram(), emu_b.ram()) and np.array_equal(emu_b.ram(), plain.ram[t])


def _child(path, barrier, queue):
    demo = open_shared_demo(path)
    total = int(demo.ram.sum()) + sum(len(s) for s in demo.states)  # touch every page
    barrier.wait()  # both processes hold the mapping now
    pss = rss = 0
    mapping = None
    for line in open("/proc/self/smaps"):
        if not line[0].isupper() or ":" not in line.split()[0]:
            mapping = line.rstrip().split()[-1] if len(line.split()) >= 6 else None
        elif mapping and mapping.endswith(("states.npy", "ram.npy")):
            key, value = line.split()[:2]
            if key == "Rss:":
                rss += int(value)
            elif key == "Pss:":
                pss += int(value)
    queue.put((total, rss, pss))
    barrier.wait()


def test_processes_map_one_copy(cache_dir):
    shared_demo_cache(DEMO)  # the parent builds it once
    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_child, args=(str(DEMO), barrier, queue)) for _ in range(2)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert results[0][0] == results[1][0]  # identical data
    for _, rss, pss in results:
        assert rss > 500  # KB: the states and RAM really are mapped and touched
        assert pss <= 0.6 * rss  # each process is charged about half: the pages are shared, not copied
    assert len([d for d in cache_dir.iterdir() if not d.name.startswith(".")]) == 1


def test_damaged_cache_is_rebuilt_and_bad_input_is_one_line(cache_dir, tmp_path):
    directory = shared_demo_cache(DEMO)
    (directory / "ram.npy").write_bytes(b"not an array")
    demo = open_shared_demo(DEMO)
    assert np.array_equal(demo.ram, load_demo(DEMO).ram)
    with pytest.raises(UserError, match="not found"):
        open_shared_demo(tmp_path / "missing.h5")
    foreign = tmp_path / "foreign.h5"
    foreign.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    with pytest.raises(UserError):
        open_shared_demo(foreign)
    assert not list(cache_dir.glob(".*"))  # no temporary directory left behind


def test_one_mapping_per_process_for_all_its_envs():
    a, b = open_shared_demo(DEMO), open_shared_demo(DEMO)
    assert a is b  # the second env of a worker reuses the first one's mapping (and the file is hashed once)
