"""The run directory: its layout, and every read and write of it, checkpoints included.

What a run directory holds (docs/training.md lists it for users):

* ``config.json``: the run's :class:`~curriculum_ppo.training.config.TrainConfig` and the
  writer's version, written once by a fresh run;
* ``metrics.jsonl``: one JSON object per update (NaN and infinities written as ``null``); a resume
  cuts the rows of the updates after its checkpoint, which the resumed run logs again;
* ``tb/``: TensorBoard events;
* ``checkpoints/latest.pt`` (rewritten) and ``checkpoints/frames_<frames>.pt`` (periodic copies),
  written by rank 0; ``checkpoints/rank<r>.pt``: rank r's own random streams and episode windows;
* ``ranks/rank<r>.json``: each rank's end-of-run checksums (multi-process runs);
* ``stop.json`` (why the run stopped), ``success_by_start.json`` and the PNG plots;
* ``train.lock``: held by the one training that writes here (:mod:`curriculum_ppo.run_lock`).

Every file is replaced atomically (a temp file, then a rename), except ``metrics.jsonl``, which
grows by one line per update.

A checkpoint is a ``torch.save`` dict, read back with ``weights_only`` (a checkpoint cannot run
code): ``format`` and ``version`` identify it; the configs (``config_json``,
``policy_config_json``), the scheduler's and stall detector's states (``scheduler_json``,
``stall_json``) and the random streams and episode windows of :data:`RANK_STATE_KEYS` are JSON
strings or tensors; ``model`` and ``learner`` are state dicts; ``frames``, ``updates``,
``elapsed`` and ``episodes`` the counters. Read them with :func:`load_checkpoint` and the
``saved_*`` functions, never by key elsewhere.

torch is imported by the functions that need it: ``inspect`` reads the small files of a run
through this module and stays instant.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path

from typing import TYPE_CHECKING

import numpy as np

from curriculum_ppo import __version__
from curriculum_ppo.atomic import atomic_path, write_text_atomic
from curriculum_ppo.errors import UserError
from curriculum_ppo.run_lock import RunLock

if TYPE_CHECKING:
    import torch

CHECKPOINT_FORMAT = "curriculum_ppo.checkpoint"
CHECKPOINT_VERSION = 1
RANK_STATE_FORMAT = "curriculum_ppo.rank_state"
RANK_STATE_KEYS = ("numpy_rng_json", "torch_rng", "cuda_rng", "learner_generator", "episode_stats_json")
"""What each rank keeps for itself: its random streams and its episode windows."""


# -- checkpoints ----------------------------------------------------------------------------------
def load_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint safely (``weights_only``: a checkpoint cannot run code)."""
    import torch

    path = Path(path)
    if not path.exists():
        raise UserError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for corrupt files
        raise UserError(f"{path} is not a readable checkpoint ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0][:120]})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"{path} is not a curriculum_ppo checkpoint")
    if ckpt.get("version") != CHECKPOINT_VERSION:
        raise UserError(f"{path} is checkpoint version {ckpt.get('version')}; this curriculum_ppo reads "
                        f"version {CHECKPOINT_VERSION}")
    return ckpt


def pack_checkpoint(*, config: dict, policy_config: dict, demo_info: dict, model: dict, learner: dict,
                    scheduler: dict | None, stall: dict, frames: int, updates: int, elapsed: float, episodes: int,
                    rank_state: dict) -> dict:
    """The checkpoint dict of a run (see the module doc); ``rank_state`` is rank 0's :func:`capture_rank_state`."""
    return {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "writer_version": __version__,
        "config_json": json.dumps(config),
        "policy_config_json": json.dumps(policy_config),
        "game": demo_info.get("game"),
        "rom_md5": demo_info.get("rom_md5"),
        "demo_length": demo_info["length"],
        "model": model,
        "learner": learner,
        "scheduler_json": json.dumps(scheduler) if scheduler is not None else None,
        "stall_json": json.dumps(stall),
        "frames": frames,
        "updates": updates,
        "elapsed": elapsed,
        "episodes": episodes,
        **rank_state,  # rank 0's; the other ranks save theirs in checkpoints/rank<r>.pt
    }


def saved_config(ckpt: dict) -> dict:
    """The run's :class:`~curriculum_ppo.training.config.TrainConfig` fields, as saved."""
    return json.loads(ckpt["config_json"])


def saved_policy_config(ckpt: dict) -> dict:
    """The network's :class:`~curriculum_ppo.ppo.policy.PolicyConfig` fields, as saved."""
    return json.loads(ckpt["policy_config_json"])


def saved_scheduler_state(ckpt: dict) -> dict | None:
    """The curriculum scheduler's ``state_dict`` (None for a run without a demo); decode it with the
    functions of :mod:`curriculum_ppo.curriculum`."""
    text = ckpt.get("scheduler_json")
    return json.loads(text) if text else None


def saved_stall_state(ckpt: dict) -> dict:
    """The stall detector's ``state_dict``."""
    return json.loads(ckpt["stall_json"])


def check_resumable(ckpt: dict, config: dict, demo_info: dict, where: Path) -> None:
    """Refuse (one line) a checkpoint of another env kind, network, game or demo than this run's."""
    saved = saved_config(ckpt)
    for key in ("env_kind", "arch", "recurrent"):
        if saved.get(key) != config.get(key):
            raise UserError(f"the checkpoint in {where} was trained with {key}={saved.get(key)}, "
                            f"this run asks for {config.get(key)}")
    if ckpt.get("game") != demo_info.get("game") or ckpt.get("demo_length") != demo_info["length"]:
        raise UserError(f"the checkpoint in {where} belongs to another game or demo "
                        f"({ckpt.get('game')}, {ckpt.get('demo_length')} demo frames)")


def load_weights(ckpt: dict, policy: torch.nn.Module, learner, where: Path) -> None:
    """Load the network and the learner (optimizer, minibatch generator); a misfit is one line."""

    try:
        policy.load_state_dict(ckpt["model"])
        learner.load_state_dict(ckpt["learner"])
    except (RuntimeError, KeyError, ValueError) as exc:
        raise UserError(f"the checkpoint in {where} does not fit this network: {str(exc).splitlines()[0]}") from None


# -- each rank's own state ------------------------------------------------------------------------
def capture_rank_state(rng: np.random.Generator, generator: torch.Generator, episode_stats: dict,
                       device: torch.device) -> dict:
    """A rank's own state (:data:`RANK_STATE_KEYS`): the learner's RNGs (numpy ``rng``, torch's global
    and CUDA streams, the minibatch shuffle ``generator``) and its episode windows."""
    import torch

    state = {"numpy_rng_json": json.dumps(rng.bit_generator.state), "torch_rng": torch.get_rng_state(),
             "learner_generator": generator.get_state(), "episode_stats_json": json.dumps(episode_stats)}
    if device.type == "cuda":
        state["cuda_rng"] = torch.cuda.get_rng_state(device)
    return state


def restore_rank_state(state: dict, rng: np.random.Generator, generator: torch.Generator,
                       device: torch.device) -> dict | None:
    """Put :func:`capture_rank_state`'s random streams back (in place); returns the saved episode windows."""
    import torch

    rng.bit_generator.state = json.loads(state["numpy_rng_json"])
    torch.set_rng_state(state["torch_rng"])
    if state.get("cuda_rng") is not None and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda_rng"], device)
    if state.get("learner_generator") is not None:
        generator.set_state(state["learner_generator"])
    return json.loads(state["episode_stats_json"]) if state.get("episode_stats_json") else None


def reseed_rank(seed: int, rng: np.random.Generator, generator: torch.Generator) -> None:
    """Seed a rank's random streams afresh (in place), as ``np.random.default_rng(seed)`` and ``manual_seed``."""
    import torch

    rng.bit_generator.state = np.random.default_rng(seed).bit_generator.state
    torch.manual_seed(seed)
    generator.manual_seed(seed)


def rank_state_digest(state: dict) -> str:
    """SHA-256 of the random streams in a rank state (``RANK_STATE_KEYS``), to show what a resume restored."""
    digest = hashlib.sha256()
    for key in RANK_STATE_KEYS:
        value = state.get(key)
        if key == "episode_stats_json" or value is None:
            continue
        digest.update(key.encode())
        digest.update(value.encode() if isinstance(value, str) else value.contiguous().numpy().tobytes())
    return digest.hexdigest()


# -- metrics.jsonl --------------------------------------------------------------------------------
def _finite(value):
    """NaN and infinities (a rate with no episodes yet) are not JSON: ``None``, so strict parsers read the file."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return [_finite(x) for x in value] if isinstance(value, list) else value


def metrics_line(row: dict) -> str:
    """One ``metrics.jsonl`` line (with its newline)."""
    return json.dumps({k: _finite(v) for k, v in row.items()}) + "\n"


def cut_metrics_rows(text: str, updates: int) -> tuple[str, int]:
    """``metrics.jsonl`` text without the rows of updates after ``updates``; returns (text, rows dropped).

    A run killed after its last checkpoint has logged updates that the resumed run logs again. A last
    line cut mid-write is dropped too; other lines that are not rows are kept as they are.
    """
    lines = text.splitlines(keepends=True)
    kept, dropped = [], 0
    for i, line in enumerate(lines):
        try:
            row = json.loads(line)
        except ValueError:
            if i == len(lines) - 1 and not line.endswith("\n"):
                dropped += 1  # torn by the kill
                continue
            kept.append(line)
            continue
        if isinstance(row, dict) and isinstance(row.get("updates"), int) and row["updates"] > updates:
            dropped += 1
            continue
        kept.append(line if line.endswith("\n") else line + "\n")
    return "".join(kept), dropped


def cut_metrics_log(path: Path, updates: int) -> int:
    """Cut ``path`` (metrics.jsonl) back to update ``updates`` in place, atomically; returns rows dropped."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return 0
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read {path}: {exc}") from None
    kept, dropped = cut_metrics_rows(text, updates)
    if kept != text:
        write_text_atomic(path, kept)
    return dropped


def read_metrics(run_dir: str | Path) -> list[dict]:
    """Every row of ``metrics.jsonl``; a last line cut mid-write is ignored, any other bad line is refused."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        raise UserError(f"{run_dir} has no metrics.jsonl (is it a training run directory?)")
    lines = path.read_text().splitlines()
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if number == len(lines):
                break  # a line cut by a crash mid-write: ignore the tail
            raise UserError(f"{path}:{number} is not valid JSON") from None
    return rows


def read_latest_metrics(path: Path) -> tuple[dict | None, int]:
    """(last complete row, number of rows) of ``metrics.jsonl``; lines that are not rows are skipped."""
    if not path.exists():
        return None, 0
    rows = 0
    last = None
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read {path}: {exc}") from None
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows += 1
            last = row
    return last, rows


def read_json(path: Path) -> dict | None:
    """A small JSON file of the run directory (``config.json``, ``success_by_start.json``), None if absent."""
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as exc:
        raise UserError(f"{path} is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path} must hold a JSON object")
    return data


# -- the directory --------------------------------------------------------------------------------
class RunDir:
    """One run directory: its paths, its lock and the files a training writes into it."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.lock = RunLock(self.path)
        self.config = self.path / "config.json"
        self.metrics = self.path / "metrics.jsonl"
        self.tensorboard = self.path / "tb"
        self.checkpoints = self.path / "checkpoints"
        self.latest = self.checkpoints / "latest.pt"
        self.stop = self.path / "stop.json"
        self.success_by_start = self.path / "success_by_start.json"

    def rank_state_path(self, rank: int) -> Path:
        return self.checkpoints / f"rank{rank}.pt"

    def find_checkpoint(self, name: str) -> Path:
        """A checkpoint named on the command line: a bare file name is looked up in ``checkpoints/`` (never
        in the current directory, which may hold another run's checkpoints); a path is taken as given."""
        path = Path(name)
        if path.parent == Path("."):
            path = self.checkpoints / name
        if not path.exists():
            raise UserError(f"checkpoint not found: {path}")
        return path

    def list_checkpoints(self) -> list[Path]:
        """The ``.pt`` files in ``checkpoints/``, sorted by name."""
        return sorted(self.checkpoints.glob("*.pt")) if self.checkpoints.is_dir() else []

    def _mkdir(self, path: Path) -> None:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create run directory {self.path}: {exc.strerror}") from None

    def open(self, resume: bool, is_main: bool, config: dict) -> dict | None:
        """Lock the directory (rank 0), then check it fits ``resume``; returns the checkpoint to resume.

        A fresh run gets ``config.json`` and an empty ``metrics.jsonl``; a directory that already holds
        a run is refused without ``resume``, and ``resume`` without a checkpoint is refused too.
        """
        if is_main:
            if not resume:
                self._mkdir(self.path)
            if self.path.is_dir():
                self.lock.acquire()  # before anything is read or written: one process per run dir
        if resume:
            if not self.latest.exists():
                raise UserError(f"--resume: {self.latest} does not exist (nothing to resume)")
            return load_checkpoint(self.latest)
        if self.latest.exists():
            raise UserError(f"{self.path} already holds a run ({self.latest}); use --resume to continue it "
                            "or choose another --run-dir")
        if is_main:
            self._mkdir(self.checkpoints)
            with atomic_path(self.config) as tmp:
                tmp.write_text(json.dumps({"version": __version__, **config}, indent=2))
            self.metrics.write_text("")
        return None

    def release(self) -> None:
        """Give the directory free for another training."""
        self.lock.release()

    def save_checkpoint(self, state: dict, periodic_frames: int | None = None) -> Path:
        """Write ``checkpoints/latest.pt`` (and ``frames_<n>.pt``, the same bytes, if ``periodic_frames``)."""
        import torch

        with atomic_path(self.latest) as tmp:
            torch.save(state, tmp)
        if periodic_frames is not None:  # the same bytes: copy instead of serializing a second time
            with atomic_path(self.checkpoints / f"frames_{periodic_frames:012d}.pt") as tmp:
                shutil.copyfile(self.latest, tmp)
        return self.latest

    def save_rank_state(self, state: dict, rank: int, world_size: int, updates: int) -> Path:
        """Write rank ``rank``'s :func:`capture_rank_state` to ``checkpoints/rank<r>.pt``."""
        import torch

        path = self.rank_state_path(rank)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            torch.save({"format": RANK_STATE_FORMAT, "rank": rank, "world_size": world_size, "updates": updates,
                        **state}, tmp)
        return path

    def load_rank_state(self, ckpt: dict, rank: int, world_size: int) -> tuple[dict | None, str]:
        """(rank ``rank``'s saved state or None, where from / why not): rank 0's is in the checkpoint, the
        others' in ``checkpoints/rank<r>.pt`` if it was written at the checkpoint's update by as many ranks."""
        import torch

        if rank == 0:
            return ckpt, "checkpoints/latest.pt"
        path, updates = self.rank_state_path(rank), int(ckpt["updates"])
        if not path.exists():
            return None, f"no {path.name}"
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - a damaged file: reseed instead
            return None, f"{path.name} unreadable ({type(exc).__name__})"
        if not isinstance(state, dict) or state.get("format") != RANK_STATE_FORMAT:
            return None, f"{path.name} is not a rank state"
        if state.get("updates") != updates or state.get("world_size") != world_size:
            return None, (f"{path.name} is from update {state.get('updates')} with {state.get('world_size')} ranks, "
                          f"the checkpoint from update {updates} with {world_size}")
        return state, f"checkpoints/{path.name}"

    def cut_metrics(self, updates: int) -> int:
        """Drop the ``metrics.jsonl`` rows logged after update ``updates``; returns how many."""
        return cut_metrics_log(self.metrics, updates)

    def append_metrics(self, row: dict) -> None:
        with open(self.metrics, "a") as f:
            f.write(metrics_line(row))

    def write_stop(self, frames: int, kind: str, reason: str) -> None:
        write_text_atomic(self.stop, json.dumps({"frames": frames, "kind": kind, "reason": reason}) + "\n")

    def write_success_by_start(self, table: dict) -> None:
        write_text_atomic(self.success_by_start, json.dumps(table, indent=1) + "\n")

    def write_rank_report(self, rank: int, report: dict) -> Path:
        """``ranks/rank<r>.json``: a rank's end-of-run checksums."""
        directory = self.path / "ranks"
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"rank{rank}.json"
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(report, indent=2))
        return path
