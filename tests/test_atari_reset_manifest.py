"""The atari-reset manifest: the real files import as recorded (opt-in), and the script that records it works.

``test_real_atari_reset_files_import_as_recorded`` needs the demos of
openai/atari-reset, which are not in the repository: point
``CURRICULUM_PPO_ATARI_RESET_DIR`` at a directory holding them
(``MontezumaRevenge.demo``, ``Pitfall.demo``, ...). The other tests run the
script on a demo generated here, in the same pickle format.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from test_import_demo import atari_reset_dict, replay, write_pickle

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "atari_reset_manifest.py"
MANIFEST = ROOT / "tests" / "data" / "atari_reset_manifest.json"
ENV = "CURRICULUM_PPO_ATARI_RESET_DIR"

sys.path.insert(0, str(SCRIPT.parent))
import atari_reset_manifest  # noqa: E402 - scripts/ is not a package


def run_script(*args, timeout=1800) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.skipif(not os.environ.get(ENV), reason=f"set {ENV} to a directory holding the atari-reset demos")
def test_real_atari_reset_files_import_as_recorded():
    """Every manifest file in the directory: shift, frames, returns and digests as recorded (minutes per file)."""
    result = run_script("--check", os.environ[ENV], timeout=3 * 3600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "all recorded values match" in result.stdout


def test_committed_manifest_has_every_field_of_every_entry():
    manifest = json.loads(MANIFEST.read_text())
    assert set(manifest["files"]) == {"MontezumaRevenge.demo", "Pitfall.demo", "PrivateEye.demo", "Gravitar.demo",
                                      "Pong.demo"}
    for name, entry in manifest["files"].items():
        assert tuple(entry) == atari_reset_manifest.FIELDS, name
        assert entry["game"] == Path(name).stem and isinstance(entry["file_frames"], int), name
    assert manifest["files"]["MontezumaRevenge.demo"]["shift"] == -4


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory) -> Path:
    """``MontezumaRevenge.demo``: the bundled 635-frame route as an atari-reset pickle (imports with shift 0)."""
    from curriculum_ppo.demo.action_script import expand, read_action_script
    from curriculum_ppo.emulator import Emulator

    directory = tmp_path_factory.mktemp("atari_reset")
    actions = expand(read_action_script(ROOT / "demos" / "MontezumaRevenge-room1.actions",
                                        Emulator("MontezumaRevenge").action_names))
    rewards, lives = replay(actions)
    write_pickle(directory / "MontezumaRevenge.demo", atari_reset_dict(actions, rewards, lives), protocol=2)
    moved = list(rewards)
    moved[290], moved[340] = 0.0, 100.0  # a demo no shift reproduces, like Gravitar's
    write_pickle(directory / "Gravitar.demo", atari_reset_dict(actions, moved, lives), protocol=2)
    return directory


def test_script_records_then_checks_then_catches_a_difference(tmp_path, demo_dir):
    manifest = tmp_path / "manifest.json"
    demo = demo_dir / "MontezumaRevenge.demo"
    recorded = run_script(demo, demo_dir / "Gravitar.demo", "--game", "MontezumaRevenge", "--manifest", manifest)
    assert recorded.returncode == 2 and "--game names the game of one file" in recorded.stderr  # nothing written
    assert not manifest.exists()

    recorded = run_script(demo, "--manifest", manifest, "--max-shift", 2)
    assert recorded.returncode == 0, recorded.stderr
    entry = json.loads(manifest.read_text())["files"]["MontezumaRevenge.demo"]
    assert (entry["shift"], entry["frames"], entry["file_frames"], entry["total_return"]) == (0, 635, 635, 400.0)
    assert entry["imports"] is True and entry["checked"] == "rewards+lives" and entry["other_matching_shifts"] == [2]
    assert set(entry["file_values"]) == {"actions", "rewards", "signed_rewards", "lives", "checkpoints",
                                         "checkpoint_action_nr"}
    assert set(entry["imported_arrays"]) == {"actions", "rewards", "lives", "ram", "state_frames", "states"}
    assert all(len(h) == 64 for h in [*entry["file_values"].values(), *entry["imported_arrays"].values()])
    assert 0 < entry["load_memory_per_byte"] < 16 and list(tmp_path.iterdir()) == [manifest]  # atomic: no temp

    checked = run_script("--check", demo_dir, "--manifest", manifest, "--max-shift", 2)
    assert checked.returncode == 0 and "1 of 1 files checked: all recorded values match" in checked.stdout, checked

    tampered = json.loads(manifest.read_text())
    tampered["files"]["MontezumaRevenge.demo"]["shift"] = 2
    tampered["files"]["MontezumaRevenge.demo"]["file_values"]["checkpoints"] = "0" * 64
    manifest.write_text(json.dumps(tampered))
    checked = run_script("--check", demo_dir, "--manifest", manifest, "--max-shift", 2)
    assert checked.returncode == 1, checked
    assert "MontezumaRevenge.demo: shift: recorded 2, measured 0" in checked.stdout
    assert "MontezumaRevenge.demo: file_values['checkpoints']: recorded 0000" in checked.stdout

    kept = run_script(demo, "--manifest", manifest, "--max-shift", 2)  # differences are kept without --force
    assert kept.returncode == 1 and "kept the recorded value; MontezumaRevenge.demo: shift" in kept.stdout
    assert json.loads(manifest.read_text())["files"]["MontezumaRevenge.demo"]["shift"] == 2
    forced = run_script(demo, "--manifest", manifest, "--max-shift", 2, "--force")
    assert forced.returncode == 0 and json.loads(manifest.read_text())["files"]["MontezumaRevenge.demo"] == entry


def test_a_demo_that_does_not_import_is_recorded_as_such(tmp_path, demo_dir):
    manifest = tmp_path / "manifest.json"
    recorded = run_script(demo_dir / "Gravitar.demo", "--game", "MontezumaRevenge", "--manifest", manifest,
                          "--max-shift", 2)
    assert recorded.returncode == 0, recorded.stderr
    entry = json.loads(manifest.read_text())["files"]["Gravitar.demo"]
    assert entry["imports"] is False and entry["shift"] is None and entry["imported_arrays"] is None
    assert entry["import_error"].startswith("no alignment in -2..+2 frames reproduces Gravitar.demo")
    assert entry["file_frames"] == 635 and len(entry["file_values"]) == 6


def test_check_without_any_of_the_files_fails(tmp_path):
    result = run_script("--check", tmp_path)
    assert result.returncode == 2 and "none of the manifest's files" in result.stderr


def test_digests_tell_types_apart():
    import numpy as np

    digest = atari_reset_manifest.value_digest
    values = [[1], [1.0], [True], [np.int64(1)], [np.float64(1)], (1,), [b"\x01"], [np.array([1])],
              [np.array([1], dtype=np.int32)], [np.zeros(2, np.uint8)], [np.zeros(2, np.int8)],
              [np.zeros((1, 2), np.int8)], {"a": 1}, {"a": [1]}, [[1]]]
    assert len({digest(v) for v in values}) == len(values)
    assert digest({"a": 1, "b": [2.5]}) == digest({"b": [2.5], "a": 1})
