"""``cut``: the first frames of a demo as a demo of its own."""

import hashlib
import json

import numpy as np
import pytest

from curriculum_ppo.cli import main
from curriculum_ppo.demo.store import load_demo
from curriculum_ppo.demo.verify import verify_demo
from curriculum_ppo.envs.atari import AtariEnv


@pytest.mark.parametrize("end", [295, 300, 635])  # between saved states, on one, the whole demo
def test_cut_round_trip_verifies_and_records_its_parent(tmp_path, bundled_demo_path, bundled_demo, end):
    out = tmp_path / "cut.h5"
    assert main(["cut", str(bundled_demo_path), "--end", str(end), "--out", str(out)]) == 0
    cut = load_demo(out)
    parent = bundled_demo
    assert len(cut) == end and cut.total_return == parent.rewards[:end].sum()
    assert np.array_equal(cut.actions, parent.actions[:end]) and np.array_equal(cut.rewards, parent.rewards[:end])
    assert np.array_equal(cut.lives, parent.lives[:end + 1]) and np.array_equal(cut.ram, parent.ram[:end + 1])
    assert cut.state_frames[-1] == end and set(cut.state_frames[:-1]) <= set(parent.state_frames)
    assert verify_demo(cut).ok
    assert cut.attrs["source"] == "cut"
    detail = json.loads(cut.attrs["source_detail"])
    assert detail["parent"] == bundled_demo_path.name and detail["range"] == [0, end]
    assert detail["parent_sha256"] == hashlib.sha256(bundled_demo_path.read_bytes()).hexdigest()
    assert detail["parent_source"] == "scripted"
    # an env trained on the cut starts where the parent starts, and ends where the cut ends
    env_cut, env_parent = AtariEnv(demo=cut), AtariEnv(demo=parent)
    for t in (0, end // 2, end):
        a, _ = env_cut.reset(options={"start_frame": t})
        b, _ = env_parent.reset(options={"start_frame": t})
        assert np.array_equal(a, b), t


def test_cut_bad_input_one_line_and_no_file(tmp_path, bundled_demo_path, capsys):
    text = tmp_path / "notes.h5"
    text.write_text("not a demo")
    cases = [
        (["--end", "0"], "1..635"),
        (["--end", "636"], "1..635"),
        (["--end", "-3"], "1..635"),
    ]
    out = tmp_path / "out.h5"
    for extra, fragment in cases:
        assert main(["cut", str(bundled_demo_path), *extra, "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and fragment in err[0], err
    for source, fragment in ((text, "not an HDF5 file"), (tmp_path / "missing.h5", "not found")):
        assert main(["cut", str(source), "--end", "10", "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and fragment in err[0], err
    assert main(["cut", str(bundled_demo_path), "--end", "10", "--out", str(tmp_path / "no_dir" / "x.h5")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.h5"]


def test_cut_refuses_to_overwrite_its_input(tmp_path, bundled_demo_path, capsys):
    copy = tmp_path / "demo.h5"
    copy.write_bytes(bundled_demo_path.read_bytes())
    assert main(["cut", str(copy), "--end", "10", "--out", str(copy)]) == 2
    assert "is the demo being cut" in capsys.readouterr().err
    assert copy.read_bytes() == bundled_demo_path.read_bytes()


def test_a_cut_remembers_how_frame_0_came_about(tmp_path, bundled_demo_path):
    from curriculum_ppo.demo.store import save_demo

    imported = load_demo(bundled_demo_path)
    save_demo(imported, tmp_path / "imported.h5", source="imported", detail={"importer": "test"})
    for parent, expected in ((bundled_demo_path, True), (tmp_path / "imported.h5", False)):
        first = tmp_path / f"cut_{expected}.h5"
        second = tmp_path / f"cut_of_cut_{expected}.h5"
        assert main(["cut", str(parent), "--end", "100", "--out", str(first)]) == 0
        assert main(["cut", str(first), "--end", "50", "--out", str(second)]) == 0
        for path in (parent, first, second):
            assert load_demo(path).starts_at_game_reset() is expected, path
