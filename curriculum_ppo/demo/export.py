"""``export --minari``: a demo as a Minari dataset, for behaviour cloning and offline RL.

Minari is the Farama Foundation's standard for offline datasets;
``minari.load_dataset(NAME)`` then reads the demo with no glue: one episode of
observations, actions, rewards, terminations and truncations.

* ``frameskip=1`` (default): one step per emulator frame, the demo's own
  resolution; the actions are the demo's exactly.
* ``frameskip=4``: one step per 4 frames, as our agent acts. A step's reward is
  the sum over its frames; its action is the demo's action on the step's first
  frame (a human may change the joystick within a step, so the label is the
  first frame's, and replaying the labels at frameskip 4 is not the demo).
  ``gray84`` observations are then max-pooled over the step's last two frames,
  as our agent's are.

Observations: ``rgb`` is the 210x160x3 screen; ``gray84`` the 84x84 grayscale
screen our agent sees (one frame: stack 4 for our agent's input). Observation
``i`` is the screen *before* step ``i`` (``N + 1`` of them for ``N`` steps).
The episode ends as a *truncation* (the demo stops, the game does not), or as a
termination if the game was over at the demo's last frame.

The dataset is written into a temporary dataset id beside its final place and
renamed when complete, so an interrupted export leaves nothing half-written.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
import warnings
from pathlib import Path

import cv2
import h5py
import numpy as np

from curriculum_ppo.demo.store import load_demo
from curriculum_ppo.errors import UserError

OBS_KINDS = ("gray84", "rgb")
DATASET_ID = re.compile(r"([\w.-]+/)*[\w.-]+-v\d+")


def demo_steps(demo, obs: str = "gray84", frameskip: int = 1) -> dict:
    """The demo replayed as one episode of steps: ``observations [S+1, ...]``, ``actions``, ``rewards``, ``terminations``, ``truncations``."""
    if obs not in OBS_KINDS:
        raise UserError(f"--obs must be one of {', '.join(OBS_KINDS)}, got {obs!r}")
    if frameskip not in (1, 4):
        raise UserError(f"--frameskip must be 1 or 4, got {frameskip}")
    emulator = demo.make_emulator()
    emulator.reset()  # draws frame 0's screen (restoreState does not redraw it)
    emulator.restore_state(demo.states[0])
    n = len(demo)

    def screen():
        if obs == "rgb":
            return emulator.screen_rgb()
        return emulator.screen_grayscale()

    def small(frame):
        return frame if obs == "rgb" else cv2.resize(frame, (84, 84), interpolation=cv2.INTER_AREA)

    first = screen() if demo.frames is None or obs != "rgb" else demo.frames[0]
    observations, actions, rewards = [small(first)], [], []
    for t in range(0, n, frameskip):
        step_actions = demo.actions[t:t + frameskip]
        reward, previous = 0.0, None
        for i, a in enumerate(step_actions):
            if i == len(step_actions) - 1 and len(step_actions) > 1:
                previous = screen()
            reward += emulator.step(int(a))
        current = screen()
        pooled = np.maximum(previous, current) if previous is not None and obs == "gray84" else current
        observations.append(small(pooled))
        actions.append(int(step_actions[0]))
        rewards.append(reward)
    steps = len(actions)
    terminations = np.zeros(steps, bool)
    terminations[-1] = emulator.game_over()
    return {"observations": np.asarray(observations, np.uint8), "actions": np.asarray(actions, np.int64),
            "rewards": np.asarray(rewards, np.float64), "terminations": terminations,
            "truncations": ~terminations & (np.arange(steps) == steps - 1)}


def export_minari(path: str | os.PathLike, dataset_id: str, obs: str = "gray84", frameskip: int = 1):
    """Write ``path``'s demo as the Minari dataset ``dataset_id``; returns the loaded dataset's path."""
    try:
        import gymnasium
        import minari
        from minari.data_collector import EpisodeBuffer
        from minari.storage.datasets_root_dir import get_dataset_path
    except ImportError:
        raise UserError("export --minari needs Minari: pip install -e '.[minari]'") from None
    if not DATASET_ID.fullmatch(dataset_id):
        raise UserError(f"--minari takes a dataset id such as 'montezuma/room1-v0' "
                        f"((namespace/)name-v(version)), got {dataset_id!r}")
    final = get_dataset_path(dataset_id)
    if final.exists():
        raise UserError(f"Minari dataset {dataset_id} already exists at {final}; pick another name or delete it")
    demo = load_demo(path)
    steps = demo_steps(demo, obs, frameskip)
    shape = steps["observations"].shape[1:]
    buffer = EpisodeBuffer(id=0, seed=None, observations=steps["observations"], actions=steps["actions"],
                           rewards=list(steps["rewards"]), terminations=list(steps["terminations"]),
                           truncations=list(steps["truncations"]), infos={})
    # Build under a temporary id beside the final one, then rename: never a half-written dataset.
    namespace = dataset_id.rsplit("/", 1)[0] + "/" if "/" in dataset_id else ""
    temporary = f"{namespace}incomplete-export-{uuid.uuid4().hex[:8]}-v0"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # Minari's reminders about author/e-mail/permalink
            _create(minari, gymnasium, temporary, buffer, shape, demo, path, obs, frameskip)
        built = get_dataset_path(temporary)
        _rename_dataset(built, final, dataset_id)
    except (OSError, ValueError) as exc:
        shutil.rmtree(get_dataset_path(temporary), ignore_errors=True)
        raise UserError(f"could not write Minari dataset {dataset_id}: {exc}") from None
    except BaseException:
        shutil.rmtree(get_dataset_path(temporary), ignore_errors=True)
        raise
    return final


def _create(minari, gymnasium, dataset_id, buffer, shape, demo, path, obs, frameskip) -> None:
    minari.create_dataset_from_buffers(
        dataset_id=dataset_id, buffer=[buffer],
        observation_space=gymnasium.spaces.Box(0, 255, shape, np.uint8),
        action_space=gymnasium.spaces.Discrete(len(demo.action_set)),
        algorithm_name=f"demo ({demo.attrs.get('source', 'recorded')})",
        description=(f"{demo.game} demo {Path(path).name}: {len(demo)} frames, return {demo.total_return:g}; "
                     f"obs {obs}, frameskip {frameskip}; exported by curriculum_ppo"),
        author="curriculum_ppo export", data_format="hdf5", jpeg_encoding=False)  # lossless: the exact screens


def _rename_dataset(built: Path, final: Path, dataset_id: str) -> None:
    """Move a finished dataset to its id and rewrite the id stored in its metadata."""
    for data_file in built.rglob("*.hdf5"):
        with h5py.File(data_file, "a") as f:
            if "dataset_id" in f.attrs:
                f.attrs["dataset_id"] = dataset_id
    for meta in built.rglob("metadata.json"):
        content = json.loads(meta.read_text())
        content["dataset_id"] = dataset_id
        meta.write_text(json.dumps(content))
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(built, final)
