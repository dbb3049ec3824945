"""One run of an ablation (a variant and a seed) and what its run dir says: budgets used, stop, evaluation.

``scripts/ablate_learning.py`` trains every run with ``curriculum-ppo train`` in
``OUT_DIR/<variant>/seed<k>/`` and keeps its own files beside train's there: ``ablation.log``
(the output of train and evaluate), ``ablation_sessions.json`` (one record per training session:
the budgets it was given, frames before and after, train's ``stop.json``, the machine's load) and
``ablation_eval.json`` (``curriculum-ppo evaluate --json`` of the last checkpoint). This module
reads them: whether a run is finished (:func:`finished_by`), and the report's record of a run
(:func:`run_record`). Everything is read from the files, so a report rebuilt later is the same.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import bench_learning

from curriculum_ppo.errors import UserError

SESSIONS_FILE, EVAL_FILE, LOG_FILE = "ablation_sessions.json", "ablation_eval.json", "ablation.log"
EVAL_CAP_DEMO_LENGTHS = 3
"""The evaluation's default episode cap: this many times the demo's length (at least bench_learning's cap)."""


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class DemoInfo:
    """What the report needs of the demo: where it is, its game, its length and its return (the score to tie)."""

    path: Path
    game: str
    frames: int
    total_return: float

    @classmethod
    def load(cls, path: Path) -> DemoInfo:
        from curriculum_ppo.demo.store import load_demo

        demo = load_demo(path)
        return cls(path.resolve(), demo.game, len(demo), float(demo.total_return))

    def shown(self) -> str:
        """The path as the report gives it: relative to the checkout when it is inside."""
        try:
            return str(self.path.relative_to(bench_learning.ROOT))
        except ValueError:
            return str(self.path)


@dataclass(frozen=True)
class Variant:
    """A set of train flags to measure, checked (``ablate_learning.check_variant``)."""

    name: str
    flags: tuple[str, ...]
    curriculum: bool
    """False for plain PPO from the game start (``--no-curriculum``): no start frame, no goal rule."""
    settings: dict
    """What the run learns with: its config's knobs that ``--resume`` may not change, seed left out."""


def learned_settings(config: dict) -> dict:
    """The knobs of a config dict that ``--resume`` keeps (what the run learns), seed left out, plus the demo."""
    from curriculum_ppo import config_flags
    from curriculum_ppo.training.config import TrainConfig

    settings = {"demo": str(Path(config["demo"]).resolve()) if config.get("demo") else None}
    for knob in config_flags.knobs(TrainConfig):
        if knob.flag.runtime or knob.path == ("seed",):
            continue
        value = config
        for key in knob.path:
            value = value.get(key, knob.default) if isinstance(value, dict) else knob.default
        settings[knob.flag.name] = value
    return settings


@dataclass(frozen=True)
class Run:
    """One (variant, seed) and its run dir; the readers return what is there now (empty before any training)."""

    variant: Variant
    seed: int
    dir: Path

    @property
    def label(self) -> str:
        return f"{self.variant.name} seed {self.seed}"

    @property
    def log(self) -> Path:
        return self.dir / LOG_FILE

    def started(self) -> bool:
        return (self.dir / "checkpoints" / "latest.pt").exists()

    def sessions(self) -> list[dict]:
        return _read_json(self.dir / SESSIONS_FILE, default=[])

    def stop_record(self) -> dict | None:
        return _read_json(self.dir / "stop.json", default=None)

    def rows(self) -> list[dict]:
        return bench_learning.read_rows(self.dir)


def _read_json(path: Path, default):
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return default


def check_same_settings(run: Run) -> None:
    """Refuse to resume a run dir that another seed or other flags made: its figures would be reported as this one's."""
    saved = _read_json(run.dir / "config.json", default=None)
    if not isinstance(saved, dict):
        return  # no run yet (or train itself will say what is wrong with it)
    if saved.get("seed") != run.seed:
        raise UserError(f"{run.dir} holds a run with seed {saved.get('seed')}, not {run.seed}; delete it or give "
                        f"another --out-dir")
    settings = learned_settings(saved)
    for key, wanted in run.variant.settings.items():
        if settings.get(key) != wanted:
            raise UserError(f"{run.dir} was trained with {key} {settings.get(key)}, variant {run.variant.name} now "
                            f"gives {wanted}; delete that run dir, rename the variant or give another --out-dir")


def trained_minutes(run: Run) -> float:
    rows = run.rows()
    return rows[-1]["time"] / 60 if rows else 0.0


def finished_by(run: Run, args) -> str | None:
    """Why the run needs no more training (its last session's stop, within today's budgets), or None.

    A run stopped by a signal or a crash continues; one stopped by its frame or time budget
    continues when that budget was raised since.
    """
    if not run.started():
        return None
    sessions = run.sessions()
    last = sessions[-1] if sessions else {}
    stop = last.get("stop") if sessions else run.stop_record()
    kind = (stop or {}).get("kind")
    if kind == "goal":
        return "goal rule met"
    if kind == "frames" and stop.get("frames", 0) >= args.frames:
        return "frame budget used"
    if kind == "time" and args.minutes <= last.get("budget_minutes", args.minutes):
        return "time budget used"
    if args.minutes - trained_minutes(run) <= 0:
        return "time budget used"
    return None


def describe_stop(record: dict | None, rc: int, signalled: bool, log: Path) -> str:
    """Why a training session ended, for the report."""
    if signalled or (record or {}).get("kind") == "signal":
        return f"interrupted by a signal (exit {rc}); run the same command to continue it"
    if rc != 0:
        return f"training failed (exit {rc}), see {log}; run the same command to retry from its last checkpoint"
    kind = (record or {}).get("kind")
    if kind == "goal":
        return f"goal rule met ({record.get('reason')})"
    return {"frames": "frame budget used", "time": "time budget used"}.get(
        kind, f"ended without saying why (no stop.json), see {log}")


def eval_cap(demo: DemoInfo, args) -> int:
    return args.eval_max_frames or max(bench_learning.EVAL_MAX_FRAMES, EVAL_CAP_DEMO_LENGTHS * demo.frames)


def evaluation_is_current(run: Run, args, protocols: tuple[str, ...], cap: int) -> bool:
    """Whether the run's evaluation is of its last checkpoint, with the episodes, protocols and cap asked for now."""
    path, frames = run.dir / EVAL_FILE, (run.rows() or [{}])[-1].get("frames", 0)
    if not bench_learning.eval_is_current(path, frames):
        return False
    settings = _read_json(path, default={}).get("settings") or {}
    return (settings.get("episodes"), tuple(settings.get("protocols") or ()), settings.get("max_frames")) == \
        (args.episodes, protocols, cap)


def evaluation_record(run: Run, demo: DemoInfo) -> dict | None:
    """The run's evaluation per protocol: its episode scores, their mean and how many tied or beat the demo."""
    frames = (run.rows() or [{}])[-1].get("frames", 0)
    path = run.dir / EVAL_FILE
    if not bench_learning.eval_is_current(path, frames):
        return None
    evaluation = _read_json(path, default={})
    protocols = {}
    for row in evaluation.get("protocols", []):
        scores = row.get("scores", [])
        protocols[row["protocol"]] = {"episodes": len(scores), "mean": sum(scores) / max(1, len(scores)),
                                      "ge_demo_return": sum(s >= demo.total_return for s in scores),
                                      "scores": scores}
    settings = evaluation.get("settings") or {}
    return {"training_frames": frames, "max_frames": settings.get("max_frames"), "protocols": protocols}


def run_record(run: Run, demo: DemoInfo, args) -> dict:
    """Everything the report says about one run, read from its run dir."""
    rows, stop = run.rows(), run.stop_record()
    summary = bench_learning.curriculum_summary(rows)
    sessions = run.sessions()
    goal = (stop or {}).get("kind") == "goal"
    goal_row = next((r for r in rows if r["frames"] >= stop["frames"]), None) if goal else None
    curriculum = run.variant.curriculum
    to_zero = summary["frames_to_start_frame_0"] if curriculum else None
    evaluation = evaluation_record(run, demo)
    plain = (evaluation or {}).get("protocols", {}).get("plain")
    record = {
        "seed": run.seed, "run_dir": str(run.dir), "status": _status(run, args, sessions),
        "stopped_by": sessions[-1]["stopped_by"] if sessions else
        describe_stop(stop, 0, False, run.log) if run.started() else None,
        "frames": summary["frames"], "minutes": summary["seconds"] / 60,
        "wall_minutes": sum(s.get("wall_seconds", 0.0) for s in sessions) / 60,
        "final_start_frame": summary["final_start_frame"] if curriculum else None,
        "lowest_start_frame": summary["lowest_start_frame"] if curriculum else None,
        "frames_to_start_frame_0": to_zero,
        "minutes_to_start_frame_0": summary["seconds_to_start_frame_0"] / 60 if to_zero is not None else None,
        "frames_to_goal": goal_row["frames"] if goal_row else None,
        "minutes_to_goal": goal_row["time"] / 60 if goal_row else None,
        "cost_per_demo_frame": to_zero / demo.frames if to_zero is not None else None,
        "eval_mean": plain["mean"] if plain else None,
        "eval_ge_demo_return": plain["ge_demo_return"] if plain else None,
        "eval_episodes": plain["episodes"] if plain else None,
        "evaluation": evaluation,
        "start_frame_history": summary["start_frame_history"] if curriculum else [],
        "sessions": sessions,
    }
    record["reached_goal"] = bool(plain and 2 * plain["ge_demo_return"] >= plain["episodes"] > 0
                                  and (not curriculum or (to_zero is not None and goal_row is not None)))
    return record


def _status(run: Run, args, sessions: list[dict]) -> str:
    if not run.started():
        return "failed" if sessions else "not started"
    if finished_by(run, args) is not None:
        return "finished"
    return "failed" if sessions and sessions[-1].get("exit_code") not in (0, 130, 143) else "unfinished"
