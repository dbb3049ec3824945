"""``export --minari``: the demo round-trips through a real Minari dataset."""

from pathlib import Path

import numpy as np
import pytest

minari = pytest.importorskip("minari")  # an optional extra; .ci/run installs it

from curriculum_ppo.demo.export import demo_steps, export_minari  # noqa: E402
from curriculum_ppo.demo.inspect import replay_screens  # noqa: E402
from curriculum_ppo.demo.store import load_demo  # noqa: E402
from curriculum_ppo.errors import UserError  # noqa: E402

DEMO = Path(__file__).resolve().parent.parent / "demos" / "MontezumaRevenge-room1.h5"


@pytest.fixture
def datasets(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    return tmp_path / "minari"


def test_round_trip_one_step_per_frame(datasets):
    demo = load_demo(DEMO)
    export_minari(DEMO, "montezuma/room1-v0", obs="rgb")
    dataset = minari.load_dataset("montezuma/room1-v0")
    assert dataset.total_episodes == 1 and dataset.total_steps == len(demo) == 635
    episode = next(dataset.iterate_episodes())
    assert np.array_equal(episode.actions, demo.actions)
    assert np.array_equal(episode.rewards, demo.rewards) and episode.rewards.sum() == 400
    assert episode.truncations[-1] and not episode.truncations[:-1].any() and not episode.terminations.any()
    assert episode.observations.shape == (636, 210, 160, 3)
    screens = {t: rgb for t, rgb, _ in replay_screens(demo)}  # the inspector's own replay
    for t in (0, 1, 290, 291, 635):
        assert np.array_equal(episode.observations[t], screens[t]), t
    assert sorted(p.name for p in (datasets / "montezuma").iterdir()) == ["namespace_metadata.json", "room1-v0"]


def test_agent_steps_at_frameskip_4_gray84(datasets):
    demo = load_demo(DEMO)
    export_minari(DEMO, "room1-agent-v0", obs="gray84", frameskip=4)
    episode = next(minari.load_dataset("room1-agent-v0").iterate_episodes())
    assert len(episode.actions) == 159  # ceil(635 / 4)
    assert np.array_equal(episode.actions, demo.actions[::4])
    assert episode.rewards.sum() == 400 and episode.rewards[72] == 100  # the key, frame 290, is in step 72
    assert episode.observations.shape == (160, 84, 84)
    steps = demo_steps(demo, "gray84", 4)
    assert np.array_equal(steps["observations"], episode.observations)


def test_bad_input_writes_nothing(datasets, tmp_path):
    export_minari(DEMO, "taken-v0")
    with pytest.raises(UserError, match="already exists"):
        export_minari(DEMO, "taken-v0")
    with pytest.raises(UserError, match="dataset id"):
        export_minari(DEMO, "no version")
    with pytest.raises(UserError, match="frameskip"):
        export_minari(DEMO, "skip-v0", frameskip=3)
    with pytest.raises(UserError, match="not found"):
        export_minari(tmp_path / "nope.h5", "nope-v0")
    assert sorted(p.name for p in datasets.iterdir()) == ["taken-v0"]


def test_export_command_line(datasets, capsys):
    from curriculum_ppo.cli import main

    assert main(["export", str(DEMO), "--minari", "cli/room1-v0", "--frameskip", "4"]) == 0
    assert "minari.load_dataset('cli/room1-v0')" in capsys.readouterr().out
    assert minari.load_dataset("cli/room1-v0").total_steps == 159
    assert main(["export", str(DEMO), "--minari", "cli/room1-v0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "already exists" in err[0]
