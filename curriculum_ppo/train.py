"""The training loop: env workers start episodes where the curriculum says, PPO learns.

One *update* = every env plays ``num_steps`` agent steps (the rollout), then
PPO trains on them. With ``overlap`` (the default) the next rollout is
collected by a snapshot of the policy while the learner trains on the previous
one in a background thread: on a 2-core machine the update dominates and the
env workers would otherwise sit idle (PPO's importance ratio uses the
behaviour policy's stored log-probabilities, so the one-update lag is
accounted for).

Everything a run produces goes into ``run_dir``: ``config.json``,
``metrics.jsonl`` (one line per update), TensorBoard events, ``checkpoints/``
(``latest.pt`` + periodic, written atomically, also on SIGINT/SIGTERM), PNG
plots and ``stop.json`` (why the run stopped). ``train.lock`` keeps a second
training out of the directory while this one runs (:mod:`curriculum_ppo.run_lock`).
Under ``torchrun`` the same loop runs once per rank (see
:mod:`curriculum_ppo.distributed`); each rank other than 0 saves its own random
streams and episode windows next to the checkpoint (``checkpoints/rank<r>.pt``).

Resume (``resume=True``) restores the weights, the optimizer, the curriculum,
the stall detector, the counters, each rank's learner RNGs (numpy, torch, CUDA,
minibatch shuffle) and its episode windows, and cuts ``metrics.jsonl`` back to
the checkpoint's update. It does not restore the envs: episodes in progress
are dropped, every env starts anew where the curriculum says, with env seeds
drawn from ``(seed, rank, updates)``; and the rollout collected after the
checkpoint is collected again, by the saved policy.
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import json
import math
import os
import shutil
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from curriculum_ppo import __version__
from curriculum_ppo.atomic import atomic_path, write_text_atomic
from curriculum_ppo.curriculum import CurriculumConfig, CurriculumScheduler, StallDetector, UnstickConfig
from curriculum_ppo.distributed import DistContext
from curriculum_ppo.envs.atari import AtariConfig
from curriculum_ppo.episode_rules import EpisodeRulesConfig, unreachable_message
from curriculum_ppo.errors import UserError
from curriculum_ppo.exploration import ExplorationBudget, ExploreConfig
from curriculum_ppo.ppo.gae import compute_gae
from curriculum_ppo.ppo.learner import PPOConfig, PPOLearner, RolloutBatch, rollout_obs_buffer
from curriculum_ppo.ppo.policy import ActorCritic, PolicyConfig
from curriculum_ppo.run_lock import RunLock
from curriculum_ppo.workers import REAL_START, EnvSpec, WorkerError, make_pool

CHECKPOINT_FORMAT = "curriculum_ppo.checkpoint"
CHECKPOINT_VERSION = 1
RANK_STATE_FORMAT = "curriculum_ppo.rank_state"
RANK_STATE_KEYS = ("numpy_rng_json", "torch_rng", "cuda_rng", "learner_generator", "episode_stats_json")
"""What each rank keeps for itself (``Trainer.rank_state``): its random streams and its episode windows."""


@dataclass
class TrainConfig:
    """Every knob of a run; saved to ``config.json`` and inside checkpoints."""

    demo: str | None = None
    game: str | None = None
    total_frames: int = 10_000_000
    """Budget in emulator frames (agent steps x frameskip), summed over all ranks."""
    num_envs: int = 8
    num_workers: int | None = None
    """Env worker processes (default: one per CPU core, at most num_envs)."""
    env_groups: int = 1
    """Pipeline the envs in this many groups: the workers step one group while the learner picks the
    next actions of another (see ``EnvPool``). Pays off when env stepping is the bottleneck."""
    learner_steps_envs: bool = False
    """The learner process steps one worker's share of the envs itself (one process fewer)."""
    groups_by_worker: bool = False
    """With env groups: each group lives in one worker, so workers do not wait for each other
    (see ``EnvPool``); ``env_groups`` must be a multiple of the workers."""
    spin_wait_us: float = 0.0
    """Before blocking on a pipe, the pool's processes poll it this long (microseconds). Speeds up
    env stepping when no process competes for the cores (``learner_steps_envs``, one worker per
    core); CPU training, whose update needs those cores, measured slower with it."""
    num_steps: int = 128
    seed: int = 1
    device: str = "auto"
    overlap: bool = True
    compile: bool = False
    """``torch.compile`` the network for the PPO update (worth it on GPUs; compiling costs minutes)."""
    torch_threads: int | None = None
    checkpoint_every: int = 50
    """Updates between periodic checkpoints (``latest.pt`` is rewritten every ``latest_every`` updates)."""
    latest_every: int = 5
    max_seconds: float | None = None
    """Stop (with a checkpoint) after this much training wall-clock time, whatever the frame budget."""
    stop_at_success: float | None = None
    """Stop (with a checkpoint) once the curriculum has reached the game start and at least this
    fraction of the last 100 episodes from the game start tied or beat the demo's return (20 such
    episodes at least; all ranks together). Lets benchmarks spend the saved time on the baseline."""
    status_every: float = 5.0
    """Seconds between console status lines."""
    env_kind: str = "atari"
    toy: dict = field(default_factory=dict)
    atari: AtariConfig = field(default_factory=AtariConfig)
    rules: EpisodeRulesConfig = field(default_factory=EpisodeRulesConfig)
    curriculum: CurriculumConfig = field(default_factory=CurriculumConfig)
    unstick: UnstickConfig = field(default_factory=UnstickConfig)
    explore: ExploreConfig = field(default_factory=ExploreConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    arch: str = "nature"
    recurrent: bool = False

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        nested = {"atari": AtariConfig, "rules": EpisodeRulesConfig, "curriculum": CurriculumConfig,
                  "unstick": UnstickConfig, "explore": ExploreConfig, "ppo": PPOConfig}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise UserError(f"unknown config keys: {', '.join(sorted(unknown))}")
        kwargs = {}
        for key, value in d.items():
            if key in nested and isinstance(value, dict):
                sub = nested[key]
                names = {f.name for f in dataclasses.fields(sub)}
                bad = set(value) - names
                if bad:
                    raise UserError(f"unknown config keys in '{key}': {', '.join(sorted(bad))}")
                kwargs[key] = sub(**value)
            else:
                kwargs[key] = value
        return cls(**kwargs)


GPU_LEARNER_THREADS = 1


def _seed_words(seed: int, rank: int, updates: int, *more: int) -> list[int]:
    return [seed % 2**64, rank, updates, *more]


def env_seed(seed: int, rank: int, updates: int) -> int:
    """Seed of a rank's first env (env ``i`` gets this ``+ i``), for a run at ``updates`` updates.

    A fresh run keeps the seeds runs always had. A resumed run draws new ones from ``(seed, rank,
    updates)``: seeded as at the start, its envs would replay the random streams (no-op starts, sticky
    actions, the episode rules' draws) of the run's first updates on every resume.
    """
    if updates == 0:
        return (seed + 1000 * rank) * 100
    return int(np.random.SeedSequence(_seed_words(seed, rank, updates)).generate_state(1)[0] % 2**30)


def learner_reseed(seed: int, rank: int, updates: int) -> int:
    """Seed of a rank's learner RNGs when a resume finds no saved state for it (another world size)."""
    return int(np.random.SeedSequence(_seed_words(seed, rank, updates, 1)).generate_state(1)[0] % 2**62)


def rank_state_digest(state: dict) -> str:
    """SHA-256 of the random streams in a rank state (``RANK_STATE_KEYS``), to show what a resume restored."""
    import hashlib

    digest = hashlib.sha256()
    for key in RANK_STATE_KEYS:
        value = state.get(key)
        if key == "episode_stats_json" or value is None:
            continue
        digest.update(key.encode())
        digest.update(value.encode() if isinstance(value, str) else value.contiguous().numpy().tobytes())
    return digest.hexdigest()


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


def learner_torch_threads(requested: int | None, device_type: str) -> int | None:
    """Torch CPU threads for the learner process (None: leave torch's default, one per core).

    On CPU the PPO update needs every core. On a GPU the learner's CPU work is small, and torch's
    default of one thread per core makes those threads compete with the env workers for the same
    cores: on a 16-core H100 machine (64 envs, 16 workers) the loop ran at 3,822 agent steps/s with
    the default and 6,562 with one thread (scripts/results/gpu/gpu_loop_probe.json).
    """
    if requested:
        return requested
    return GPU_LEARNER_THREADS if device_type == "cuda" else None


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda was requested but PyTorch sees no CUDA GPU")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise UserError(f"unknown device '{name}' (use auto, cpu or cuda)")
    return torch.device(name)


def success_by_start_table(starts: np.ndarray, attempts: np.ndarray, successes: np.ndarray, demo_length: int,
                           bins: int = 20, bin_frames: int | None = None, first: int = 0,
                           last: int | None = None) -> dict:
    """Episodes and success rate per range of start frames: ``bins`` equal ranges of the demo,
    or ranges of ``bin_frames`` frames from ``first`` to ``last`` (default: the whole demo).

    Shows *where* along the demo the agent fails, which the single front-of-window
    rate in metrics.jsonl cannot: the hard segment is usually a few dozen frames long.
    """
    end = demo_length if last is None else min(demo_length, last + 1)
    width = bin_frames if bin_frames else max(1, -(-(end - first) // bins))
    rows = []
    for lo in range(first, end, width):
        hi = min(end, lo + width)
        inside = (starts >= lo) & (starts < hi)
        n = float(attempts[inside].sum())
        rows.append({"first": lo, "last": hi - 1, "episodes": int(round(n)),
                     "success_rate": round(float(successes[inside].sum()) / n, 4) if n else None})
    return {"demo_length": demo_length, "bin_frames": width, "bins": rows}


class EpisodeStats:
    """Rolling statistics of finished episodes for logging and plots."""

    def __init__(self, window: int = 100, demo_return: float | None = None):
        self.demo_return = demo_return
        self.from_start_success = collections.deque(maxlen=window)
        self.scores = collections.deque(maxlen=window)
        self.successes = collections.deque(maxlen=window)
        self.from_start = collections.deque(maxlen=window)
        self.count = 0
        self.best = -math.inf
        self.ends: collections.Counter = collections.Counter()
        """Why episodes ended since the last :meth:`take_ends` (``success_extra_done``, ``horizon``, ``lagging``,
        ``max_frames``, ``life_lost``, ``game_over``, ...): a stalled curriculum shows here first."""

    def add(self, episode: dict) -> None:
        self.count += 1
        self.ends[str(episode.get("reason"))] += 1
        score = float(episode.get("score", 0.0))
        self.best = max(self.best, score)
        start = episode.get("start_frame")
        if start is None or start == 0:
            self.from_start.append(score)
            if self.demo_return is not None:
                self.from_start_success.append(score >= self.demo_return)
        if start is not None:
            self.scores.append(score)
            self.successes.append(bool(episode.get("success")))

    def state_dict(self) -> dict:
        """The windows and counters, JSON-serialisable (``--stop-at-success`` decides on these windows)."""
        return {"window": self.scores.maxlen, "count": self.count,
                "best": None if self.best == -math.inf else self.best,
                "from_start_success": [bool(x) for x in self.from_start_success],
                "scores": list(self.scores), "successes": list(self.successes), "from_start": list(self.from_start)}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` (the window length in use is kept; longer saved windows keep their end)."""
        self.count = int(state["count"])
        self.best = -math.inf if state["best"] is None else float(state["best"])
        for name in ("from_start_success", "scores", "successes", "from_start"):
            window = getattr(self, name)
            window.clear()
            window.extend(state[name])

    def take_ends(self) -> dict:
        """The end reasons counted since the last call (then reset), sorted by name."""
        ends, self.ends = dict(sorted(self.ends.items())), collections.Counter()
        return ends

    def from_start_success_rate(self) -> float | None:
        """Fraction of recent episodes from the game start that tied or beat the demo's whole return."""
        return float(np.mean(self.from_start_success)) if self.from_start_success else None

    def summary(self) -> dict:
        def mean(xs):
            return float(np.mean(xs)) if xs else None
        return {
            "episodes": self.count,
            "score_mean": mean(self.scores),
            "score_max": float(max(self.scores)) if self.scores else None,
            "score_from_start_mean": mean(self.from_start),
            "score_from_start_max": float(max(self.from_start)) if self.from_start else None,
            "episode_success_rate": mean(self.successes),
            "from_start_success_rate": self.from_start_success_rate(),
            "best_score": None if self.best == -math.inf else self.best,
        }


class Trainer:
    """Owns the env pool, policy, learner, curriculum and the run directory."""

    def __init__(self, config: TrainConfig, run_dir: str | Path, resume: bool = False,
                 dist: DistContext | None = None, quiet: bool = False):
        self.config = config
        self.run_dir = Path(run_dir)
        self.dist = dist or DistContext.from_env()
        self.quiet = quiet or not self.dist.is_main
        self.device = pick_device(config.device) if self.dist.device is None else self.dist.device
        threads = learner_torch_threads(config.torch_threads, self.device.type)
        if threads:
            torch.set_num_threads(threads)
        self._stop_signal: str | None = None
        self.pool = None
        self.tb = None
        self._tb_purge_step: int | None = None
        # Rank 0 holds the run directory for the whole run (see curriculum_ppo.run_lock).
        self.run_lock = RunLock(self.run_dir)
        self.resumed_rng: dict | None = None  # on resume: where this rank's random streams came from
        try:
            self._build(resume)
        except BaseException:
            self.close()
            raise

    def _build(self, resume: bool) -> None:
        config = self.config
        self.spec, self.demo_info = self._env_spec()  # a bad demo is refused before the run dir is touched
        checkpoint = self._prepare_run_dir(resume)
        rank_seed = config.seed + 1000 * self.dist.rank
        torch.manual_seed(rank_seed)
        self.rng = np.random.default_rng(rank_seed)
        seed = env_seed(config.seed, self.dist.rank, int(checkpoint["updates"]) if checkpoint is not None else 0)

        self.pool = make_pool(self.spec, config.num_envs, config.num_workers, seed=seed,
                              num_groups=config.env_groups, learner_is_worker=config.learner_steps_envs,
                              groups_by_worker=config.groups_by_worker, spin_seconds=config.spin_wait_us * 1e-6)
        self.policy_config = PolicyConfig(num_actions=self.pool.num_actions, arch=config.arch,
                                          recurrent=config.recurrent, obs_shape=self.pool.obs_shape)
        self.policy = build_policy(self.policy_config).to(self.device)
        model = self.dist.wrap(self.policy)
        if config.compile:
            # Only the training passes are compiled; rollouts use the eager module (its
            # batch shape changes with truncations, which would trigger recompiles).
            model = torch.compile(model)
        self.learner = PPOLearner(model, config.ppo, self.device)
        self.behaviour = copy.deepcopy(self.policy) if config.overlap else self.policy
        self.scheduler = CurriculumScheduler(self.demo_info["length"], config.curriculum) \
            if self.demo_info["length"] else None
        self.stall = StallDetector(config.unstick)
        self.explore = ExplorationBudget(config.num_envs, config.explore)
        # This session's exploring episodes (and how many tied the demo): not in the curriculum's statistics.
        self.explored_episodes = self.explored_successes = 0
        self.stats = EpisodeStats(demo_return=self.demo_info.get("total_return"))
        self.frames = 0
        self.updates = 0
        self.elapsed = 0.0
        if checkpoint is not None:
            self._load_checkpoint(checkpoint)
        self.dist.broadcast_module(self.policy)
        if config.overlap:
            self.behaviour.load_state_dict(self.policy.state_dict())

    # -- setup -----------------------------------------------------------------------
    def _env_spec(self) -> tuple[EnvSpec, dict]:
        cfg = self.config
        if cfg.env_kind == "toy":
            from curriculum_ppo.envs.toy import toy_demo_info

            spec = EnvSpec(kind="toy", toy=dict(cfg.toy))
            return spec, toy_demo_info(**cfg.toy)
        if cfg.demo is None and cfg.game is None:
            raise UserError("give --demo FILE.h5 (or --game to train without a demo)")
        info = {"length": 0, "reward_frames": [], "total_return": None, "game": cfg.game}
        if cfg.demo is not None:
            from curriculum_ppo.demo.shared import open_shared_demo
            from curriculum_ppo.emulator import resolve_game

            demo = open_shared_demo(cfg.demo)  # validates the file once and builds the machine's shared copy
            if cfg.game is not None and resolve_game(cfg.game) != demo.game:
                raise UserError(f"--game {cfg.game} does not match the demo, which is a {demo.game} demo")
            info = {"length": len(demo), "reward_frames": [t + 1 for t, _ in demo.reward_events()],
                    "total_return": demo.total_return, "game": demo.game,
                    "rom_md5": demo.attrs.get("rom_md5"),
                    "unreachable": unreachable_message(demo.cumulative_return, cfg.rules)}
        spec = EnvSpec(game=info["game"], demo_path=cfg.demo, atari=asdict(cfg.atari), rules=asdict(cfg.rules))
        return spec, info

    def _prepare_run_dir(self, resume: bool):
        """Lock the run directory (rank 0), then check it fits ``resume``; returns the checkpoint to resume."""
        latest = self.run_dir / "checkpoints" / "latest.pt"
        if self.dist.is_main:
            if not resume:
                try:
                    self.run_dir.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise UserError(f"cannot create run directory {self.run_dir}: {exc.strerror}") from None
            if self.run_dir.is_dir():
                self.run_lock.acquire()  # before anything is read or written: one process per run dir
        if resume:
            if not latest.exists():
                raise UserError(f"--resume: {latest} does not exist (nothing to resume)")
            return load_checkpoint(latest)
        if latest.exists():
            raise UserError(f"{self.run_dir} already holds a run ({latest}); use --resume to continue it "
                            "or choose another --run-dir")
        if self.dist.is_main:
            try:
                (self.run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise UserError(f"cannot create run directory {self.run_dir}: {exc.strerror}") from None
            with atomic_path(self.run_dir / "config.json") as tmp:
                tmp.write_text(json.dumps({"version": __version__, **self.config.to_dict()}, indent=2))
            (self.run_dir / "metrics.jsonl").write_text("")
        return None

    # -- checkpoints -----------------------------------------------------------------
    def checkpoint_state(self) -> dict:
        return {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "writer_version": __version__,
            "config_json": json.dumps(self.config.to_dict()),
            "policy_config_json": json.dumps(asdict(self.policy_config)),
            "game": self.demo_info.get("game"),
            "rom_md5": self.demo_info.get("rom_md5"),
            "demo_length": self.demo_info["length"],
            "model": self.policy.state_dict(),
            "learner": self.learner.state_dict(),
            "scheduler_json": json.dumps(self.scheduler.state_dict()) if self.scheduler else None,
            "stall_json": json.dumps(self.stall.state_dict()),
            "frames": self.frames,
            "updates": self.updates,
            "elapsed": self.elapsed,
            "episodes": self.stats.count,
            **self.rank_state(),  # rank 0's; the other ranks save theirs in checkpoints/rank<r>.pt
        }

    def rank_state(self) -> dict:
        """This rank's own state (``RANK_STATE_KEYS``): its learner RNGs (numpy, torch, CUDA, minibatch
        shuffle) and its episode windows. Ranks differ in these; everything else is rank 0's."""
        state = {"numpy_rng_json": json.dumps(self.rng.bit_generator.state), "torch_rng": torch.get_rng_state(),
                 "learner_generator": self.learner.generator.get_state(),
                 "episode_stats_json": json.dumps(self.stats.state_dict())}
        if self.device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        return state

    def _rank_state_path(self) -> Path:
        return self.run_dir / "checkpoints" / f"rank{self.dist.rank}.pt"

    def save_checkpoint(self, periodic: bool = False) -> Path | None:
        """Write ``checkpoints/latest.pt`` (rank 0; a copy too if ``periodic``); other ranks write their
        :meth:`rank_state` to ``checkpoints/rank<r>.pt``. No collective: a rank may save alone on a fault."""
        if not self.dist.is_main:
            path = self._rank_state_path()
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp:
                torch.save({"format": RANK_STATE_FORMAT, "rank": self.dist.rank, "world_size": self.dist.world_size,
                            "updates": self.updates, **self.rank_state()}, tmp)
            return None
        directory = self.run_dir / "checkpoints"
        state = self.checkpoint_state()
        latest = directory / "latest.pt"
        with atomic_path(latest) as tmp:
            torch.save(state, tmp)
        if periodic:  # the same bytes: copy instead of serializing a second time
            with atomic_path(directory / f"frames_{self.frames:012d}.pt") as tmp:
                shutil.copyfile(latest, tmp)
        return latest

    def _load_checkpoint(self, ckpt: dict) -> None:
        saved = json.loads(ckpt["config_json"])
        for key in ("env_kind", "arch", "recurrent"):
            if saved.get(key) != getattr(self.config, key):
                raise UserError(f"the checkpoint in {self.run_dir} was trained with {key}={saved.get(key)}, "
                                f"this run asks for {getattr(self.config, key)}")
        if ckpt.get("game") != self.demo_info.get("game") or ckpt.get("demo_length") != self.demo_info["length"]:
            raise UserError(f"the checkpoint in {self.run_dir} belongs to another game or demo "
                            f"({ckpt.get('game')}, {ckpt.get('demo_length')} demo frames)")
        try:
            self.policy.load_state_dict(ckpt["model"])
            self.learner.load_state_dict(ckpt["learner"])
        except (RuntimeError, KeyError, ValueError) as exc:
            raise UserError(f"the checkpoint in {self.run_dir} does not fit this network: {str(exc).splitlines()[0]}") from None
        if self.scheduler and ckpt.get("scheduler_json"):
            self.scheduler.load_state_dict(json.loads(ckpt["scheduler_json"]))
        self.stall.load_state_dict(json.loads(ckpt["stall_json"]))
        self.frames, self.updates, self.elapsed = int(ckpt["frames"]), int(ckpt["updates"]), float(ckpt["elapsed"])
        self.stats.count = int(ckpt.get("episodes", 0))
        self._restore_rank_state(ckpt)
        if self.dist.is_main:
            dropped = cut_metrics_log(self.run_dir / "metrics.jsonl", self.updates)
            if dropped and not self.quiet:
                print(f"resume: {dropped} metrics rows logged after the checkpoint (update {self.updates}) were "
                      "dropped; those updates run again", flush=True)
        self._tb_purge_step = self.frames + 1  # TensorBoard hides the events logged after the checkpoint too

    def _saved_rank_state(self, ckpt: dict) -> tuple[dict | None, str]:
        """(this rank's saved state or None, where from / why not): rank 0's is in the checkpoint, the
        others' in ``checkpoints/rank<r>.pt`` if it was written at the checkpoint's update by as many ranks."""
        if self.dist.rank == 0:
            return ckpt, "checkpoints/latest.pt"
        path = self._rank_state_path()
        if not path.exists():
            return None, f"no {path.name}"
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - a damaged file: reseed instead
            return None, f"{path.name} unreadable ({type(exc).__name__})"
        if not isinstance(state, dict) or state.get("format") != RANK_STATE_FORMAT:
            return None, f"{path.name} is not a rank state"
        if state.get("updates") != self.updates or state.get("world_size") != self.dist.world_size:
            return None, (f"{path.name} is from update {state.get('updates')} with {state.get('world_size')} ranks, "
                          f"the checkpoint from update {self.updates} with {self.dist.world_size}")
        return state, f"checkpoints/{path.name}"

    def _restore_rank_state(self, ckpt: dict) -> None:
        """Restore this rank's random streams and episode windows, or reseed from (seed, rank, updates)."""
        state, source = self._saved_rank_state(ckpt)
        if state is None or "numpy_rng_json" not in state:
            seed = learner_reseed(self.config.seed, self.dist.rank, self.updates)
            self.rng = np.random.default_rng(seed)
            torch.manual_seed(seed)
            self.learner.generator.manual_seed(seed)
            self.resumed_rng = {"source": "reseeded", "why": source}
            return
        self.rng.bit_generator.state = json.loads(state["numpy_rng_json"])
        torch.set_rng_state(state["torch_rng"])
        if state.get("cuda_rng") is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)
        if state.get("learner_generator") is not None:
            self.learner.generator.set_state(state["learner_generator"])
        if state.get("episode_stats_json"):
            self.stats.load_state_dict(json.loads(state["episode_stats_json"]))
        self.resumed_rng = {"source": source, "sha256": rank_state_digest(state)}

    # -- curriculum ----------------------------------------------------------------------
    def _sample_start(self, env_index: int) -> int:
        if self.scheduler is None or self.scheduler.done:
            return REAL_START
        global_index = self.dist.rank * self.config.num_envs + env_index
        return self.scheduler.sample_start(self.rng, global_index, self.dist.world_size * self.config.num_envs)

    def _begin_episode(self, env_index: int) -> None:
        """Env ``env_index`` just began an episode at ``pool.next_start[env_index]`` (workers restart
        an env as soon as its episode ends): decide whether it explores (only starts in the curriculum
        window may), then choose where its following episode will start."""
        start = int(self.pool.next_start[env_index])
        sched = self.scheduler
        in_window = sched is not None and not sched.done and start != REAL_START and sched.in_window(start)
        self.explore.begin(env_index, in_window, self.rng)
        self.pool.next_start[env_index] = self._sample_start(env_index)

    @property
    def start_frame(self) -> int | None:
        if self.scheduler is None:
            return None
        return 0 if self.scheduler.done else self.scheduler.start_frame

    # -- the loop ------------------------------------------------------------------------
    def _install_signal_handlers(self):
        def handler(signum, _frame):
            self._stop_signal = signal.Signals(signum).name
        previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, handler)
        return previous

    def _collect(self, policy: ActorCritic, buffers: dict, hidden):
        """Play ``num_steps`` steps in every env with ``policy``; fill ``buffers``; return (episodes, hidden).

        With env groups the steps of the groups are pipelined: group g's result
        is read and its next action chosen while the workers step the other
        groups (see :class:`~curriculum_ppo.workers.EnvPool`).
        """
        T, pool = self.config.num_steps, self.pool
        groups = [(None, slice(None))] if pool.num_groups == 1 else list(enumerate(pool.group_slices))
        buffers["next_episode_starts"] = torch.zeros(self.config.num_envs, dtype=torch.bool)
        finished: list[dict] = []
        with torch.no_grad():
            for t in range(T + 1):
                for group, envs in groups:
                    if t > 0:
                        finished += self._finish_step(policy, buffers, hidden, t - 1, group, envs)
                    if t < T:
                        hidden = self._start_step(policy, buffers, hidden, t, group, envs)
            buffers["last_obs"] = torch.from_numpy(pool.obs.copy())
            buffers["last_hidden"] = hidden
        return finished, hidden

    def _start_step(self, policy: ActorCritic, buffers: dict, hidden, t: int, group: int | None, envs: slice):
        """Record step t's observations of ``envs``, choose their actions and start stepping them."""
        pool = self.pool
        buffers["obs"][t, envs].copy_(torch.from_numpy(pool.obs[envs]))
        # pool.warmup: this observation's step replays the demo (the action is ignored), so it is not
        # trained on and does not use up the episode's exploring steps.
        replayed = pool.warmup[envs].copy()
        buffers["loss_mask"][t, envs] = torch.from_numpy(~replayed)
        obs = buffers["obs"][t, envs].to(self.device, non_blocking=True)
        starts = buffers["episode_starts"][t, envs].to(self.device)
        epsilon = self.explore.epsilons(envs, replayed) if self.explore.enabled else None
        action, logprob, value, new_hidden = policy.act(obs, None if hidden is None else hidden[envs], starts,
                                                        epsilon=epsilon)
        action_cpu = action.cpu()
        pool.step_async(action_cpu.numpy(), group)
        buffers["actions"][t, envs] = action_cpu
        buffers["logprobs"][t, envs] = logprob.float().cpu()
        buffers["values"][t, envs] = value.float().cpu()
        if group is None or new_hidden is None:
            return new_hidden
        hidden[envs] = new_hidden
        return hidden

    def _finish_step(self, policy: ActorCritic, buffers: dict, hidden, t: int, group: int | None,
                     envs: slice) -> list[dict]:
        """Wait for step t of ``envs``; record rewards and episode ends; pick restarts; return finished episodes."""
        pool = self.pool
        episodes = pool.step_wait(group)
        buffers["rewards"][t, envs] = torch.from_numpy(pool.rewards[envs])
        term = torch.from_numpy(pool.terminated[envs].copy())
        trunc = torch.from_numpy(pool.truncated[envs].copy())
        buffers["terminations"][t, envs] = term
        buffers["truncations"][t, envs] = trunc
        if trunc.any():
            idx = torch.nonzero(trunc).squeeze(-1) + (envs.start or 0)
            final = torch.from_numpy(pool.final_obs[idx.numpy()]).to(self.device)
            h = None if hidden is None else hidden[idx.to(hidden.device)]
            _, _, v, _ = policy.act(final, h, None)
            buffers["truncation_values"][t, idx] = v.float().cpu()
        ended = term | trunc
        if t + 1 < self.config.num_steps:
            buffers["episode_starts"][t + 1, envs] = ended
        else:
            buffers["next_episode_starts"][envs] = ended
        for episode in episodes:
            episode["explored"] = bool(self.explore.exploring[episode["env"]])
            self._begin_episode(episode["env"])
        return episodes

    def _start_envs(self) -> dict:
        """Begin an episode in every env at a start the curriculum picks; return empty rollout buffers."""
        for i in range(self.config.num_envs):
            self.pool.next_start[i] = self._sample_start(i)
        self.pool.reset()
        for i in range(self.config.num_envs):
            self._begin_episode(i)
        buffers = self._make_buffers()
        buffers["episode_starts"][0] = True
        return buffers

    def _make_buffers(self) -> dict:
        T, B = self.config.num_steps, self.config.num_envs
        pin = self.device.type == "cuda"
        def z(*shape, dtype=torch.float32):
            t = torch.zeros(*shape, dtype=dtype)
            return t.pin_memory() if pin else t
        return {
            "obs": rollout_obs_buffer(T, B, self.pool.obs_shape, pin_memory=pin),
            "actions": z(T, B, dtype=torch.long), "logprobs": z(T, B), "values": z(T, B), "rewards": z(T, B),
            "terminations": z(T, B, dtype=torch.bool), "truncations": z(T, B, dtype=torch.bool),
            "truncation_values": z(T, B), "episode_starts": z(T, B, dtype=torch.bool),
            "loss_mask": z(T, B, dtype=torch.bool),
        }

    def _batch(self, buffers: dict, policy: ActorCritic, initial_hidden) -> RolloutBatch:
        cfg = self.config.ppo
        with torch.no_grad():
            obs = buffers["last_obs"].to(self.device)
            _, _, last_value, _ = policy.act(obs, buffers["last_hidden"], buffers["next_episode_starts"].to(self.device))
        advantages, returns = compute_gae(buffers["rewards"], buffers["values"], buffers["terminations"],
                                          last_value.float().cpu(), cfg.gamma, cfg.gae_lambda,
                                          buffers["truncations"], buffers["truncation_values"])
        return RolloutBatch(obs=buffers["obs"].clone(), actions=buffers["actions"].clone(),
                            logprobs=buffers["logprobs"].clone(), values=buffers["values"].clone(),
                            advantages=advantages, returns=returns,
                            episode_starts=buffers["episode_starts"].float().clone(),
                            loss_mask=buffers["loss_mask"].float().clone(),
                            initial_state=None if initial_hidden is None else initial_hidden.clone())

    def _log(self, row: dict) -> None:
        if not self.dist.is_main:
            return
        # NaN/inf (a rate with no episodes yet) are not JSON: write null so strict parsers (jq, JS) read the file.
        def finite(v):
            if isinstance(v, float) and not math.isfinite(v):
                return None
            return [finite(x) for x in v] if isinstance(v, list) else v
        with open(self.run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps({k: finite(v) for k, v in row.items()}) + "\n")
        if self.tb is None:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(self.run_dir / "tb"), purge_step=self._tb_purge_step)
            except ImportError:
                self.tb = False
        if self.tb:
            for key, value in row.items():
                if isinstance(value, (int, float)) and value is not None and key != "frames":
                    self.tb.add_scalar(key, value, row["frames"])
            for reason, count in row.get("episode_ends", {}).items():
                self.tb.add_scalar(f"episode_ends/{reason}", count, row["frames"])

    def _status(self, fps: float) -> str:
        s = self.stats.summary()
        start = self.start_frame
        n = self.demo_info["length"]
        where = "real start" if start is None or (self.scheduler and self.scheduler.done) else f"{start}/{n}"
        rate = self.scheduler.stats().get("front_success_rate") if self.scheduler else None
        parts = [f"frames {self.frames / 1e6:7.3f}M", f"{fps:6.0f} frames/s", f"start {where}",
                 f"success {rate:.0%}" if rate is not None and rate == rate else "success  -",
                 f"score {s['score_mean']:.1f}" if s["score_mean"] is not None else "score -",
                 f"from-start {s['score_from_start_mean']:.1f}" if s["score_from_start_mean"] is not None else "",
                 f"episodes {s['episodes']}"]
        return " | ".join(p for p in parts if p)

    def _stop_reason(self, started: float) -> str | None:
        """Why the run should stop now (time budget or goal reached), decided jointly by all ranks.

        Every rank calls this at the same point of every iteration; the local
        verdicts are summed in one all-reduce so that no rank leaves the loop
        while the others still wait for it in a collective (which would hang).
        """
        cfg = self.config
        if cfg.max_seconds is None and cfg.stop_at_success is None:
            return None
        over_time = cfg.max_seconds is not None and time.time() - started >= cfg.max_seconds
        at_start = self.scheduler is None or self.scheduler.start_frame == 0
        wins = self.stats.from_start_success
        local = np.array([float(over_time), float(sum(wins)), float(len(wins)), float(at_start)])
        total = self.dist.all_reduce_sum(local) if self.dist.world_size > 1 else local
        if total[0] > 0:
            return "time"
        if cfg.stop_at_success is not None and total[3] == self.dist.world_size and total[2] >= 20 \
                and total[1] / total[2] >= cfg.stop_at_success:
            return f"{total[1] / total[2]:.0%} of the last {int(total[2])} episodes from the game start beat the demo"
        return None

    def train(self) -> int:
        """Run until the frame budget is spent or a signal arrives; returns an exit code.

        The run directory's lock is released when this returns or raises, after the last file is written.
        """
        try:
            return self._train()
        finally:
            self.run_lock.release()

    def _train(self) -> int:
        cfg = self.config
        previous = self._install_signal_handlers()
        update_thread = None
        frames_per_update = cfg.num_steps * cfg.num_envs * cfg.atari.frameskip * self.dist.world_size
        if cfg.env_kind == "toy":
            frames_per_update = cfg.num_steps * cfg.num_envs * self.dist.world_size
        try:
            buffers = self._start_envs()
            hidden = self.behaviour.initial_state(cfg.num_envs, self.device)
            last_status = time.time()
            t0, frames0 = time.time(), self.frames
            update_thread, update_result = None, {}
            pending_batch_episodes, tick_prev = 0, time.time()
            if not self.quiet:
                print(f"training on {self.device} with {cfg.num_envs} envs in {self.pool.num_workers} workers"
                      f"{f' x {self.dist.world_size} ranks' if self.dist.world_size > 1 else ''}; "
                      f"run dir {self.run_dir}", flush=True)
                if self.demo_info.get("unreachable") and self.scheduler is not None:
                    print(f"warning: {self.demo_info['unreachable']}", flush=True)
            stop = ("frames", "frame budget used")
            while self.frames < cfg.total_frames and self._stop_signal is None:
                reason = self._stop_reason(t0)
                if reason is not None:
                    if reason != "time" and not self.quiet:
                        print(f"stopping: {reason}", flush=True)
                    stop = ("time", "time budget (--minutes) used") if reason == "time" else ("goal", reason)
                    break
                tick = time.time()
                initial_hidden = None if hidden is None else hidden.clone()
                episodes, hidden = self._collect(self.behaviour, buffers, hidden)
                batch = self._batch(buffers, self.behaviour, initial_hidden)
                buffers["episode_starts"][0] = buffers["next_episode_starts"]
                if update_thread is not None:  # wait for the previous update (overlap mode)
                    update_thread.join()
                    if "error" in update_result:
                        raise update_result["error"]
                    self._after_update(update_result["stats"], pending_batch_episodes, tick_prev)
                    self.behaviour.load_state_dict(self.policy.state_dict())
                for episode in episodes:
                    self.stats.add(episode)
                    # Exploring episodes train the policy; the curriculum judges the policy on the others.
                    if episode.get("explored"):
                        self.explored_episodes += 1
                        self.explored_successes += bool(episode.get("success"))
                    elif self.scheduler is not None and episode.get("start_frame") is not None:
                        self.scheduler.record(int(episode["start_frame"]), bool(episode.get("success")))
                self.frames += frames_per_update
                lr_scale = self.stall.scale * (1.0 - self.frames / cfg.total_frames if cfg.ppo.anneal_lr else 1.0)
                update_result = {}

                def run_update(batch=batch, lr_scale=lr_scale):
                    try:
                        update_result["stats"] = self.learner.update(batch.to(self.device), lr_scale=lr_scale,
                                                                     ent_scale=self.stall.scale)
                    except BaseException as exc:  # surfaced in the main thread
                        update_result["error"] = exc
                pending_batch_episodes, tick_prev = len(episodes), tick
                if cfg.overlap:
                    update_thread = threading.Thread(target=run_update, daemon=True)
                    update_thread.start()
                else:
                    run_update()
                    if "error" in update_result:
                        raise update_result["error"]
                    self._after_update(update_result["stats"], len(episodes), tick)
                now = time.time()
                if not self.quiet and now - last_status >= cfg.status_every:
                    fps = (self.frames - frames0) / max(1e-9, now - t0)
                    print(self._status(fps), flush=True)
                    last_status = now
            if update_thread is not None:
                update_thread.join()
                if "error" in update_result:
                    raise update_result["error"]
                self._after_update(update_result["stats"], pending_batch_episodes, tick_prev)
        except WorkerError as exc:
            self._join(update_thread)
            path = self.save_checkpoint()
            raise UserError(f"{exc}; last checkpoint kept at {path}") from None
        except BaseException:
            self._join(update_thread)
            raise
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self._close_envs()
        path = self.save_checkpoint()
        if self._stop_signal is not None:
            stop = ("signal", f"stopped by {self._stop_signal}")
        if self.dist.is_main:
            self._plots()
            write_text_atomic(self.run_dir / "stop.json", json.dumps(
                {"frames": self.frames, "kind": stop[0], "reason": stop[1]}) + "\n")
        if self.dist.world_size > 1:
            self._check_ranks_agree()
        if self._stop_signal is not None:
            if not self.quiet:
                print(f"stopped by {self._stop_signal} at {self.frames} frames; checkpoint saved to {path}; "
                      f"continue with --resume", file=sys.stderr)
            return 130 if self._stop_signal == "SIGINT" else 143
        if not self.quiet:
            print(f"done: {self.frames} frames; checkpoint {path}")
        return 0

    def _check_ranks_agree(self) -> None:
        """Cheap end-of-run sanity check: all ranks hold the same weights and curriculum.

        Each rank writes ``ranks/rank<r>.json`` (parameter checksum, curriculum
        state); rank 0 compares the all-gathered checksums and says so.
        """
        import hashlib

        import torch.distributed as tdist

        digest = hashlib.sha256()
        for tensor in self.policy.state_dict().values():
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        sched = self.scheduler.state_dict() if self.scheduler else None
        report = {"rank": self.dist.rank, "world_size": self.dist.world_size, "frames": self.frames,
                  "updates": self.updates, "param_sha256": digest.hexdigest(), "resumed_rng": self.resumed_rng,
                  "curriculum": {"start_frame": self.start_frame, "moves": self.scheduler.moves if self.scheduler else 0,
                                 "sha256": hashlib.sha256(json.dumps(sched, sort_keys=True).encode()).hexdigest()}}
        directory = self.run_dir / "ranks"
        directory.mkdir(parents=True, exist_ok=True)
        with atomic_path(directory / f"rank{self.dist.rank}.json") as tmp:
            tmp.write_text(json.dumps(report, indent=2))
        gathered = [None] * self.dist.world_size
        tdist.all_gather_object(gathered, (report["param_sha256"], report["curriculum"]["sha256"]))
        if self.dist.is_main:
            same = len(set(gathered)) == 1
            print(f"{self.dist.world_size} ranks {'agree' if same else 'DISAGREE'} on weights and curriculum", flush=True)
            if not same:
                raise RuntimeError(f"ranks diverged: {gathered}")

    @staticmethod
    def _join(thread) -> None:
        """Never leave a PyTorch update running in a thread while the process unwinds."""
        if thread is not None and thread.is_alive():
            thread.join()

    def _after_update(self, stats: dict, num_episodes: int, tick: float) -> None:
        self.updates += 1
        now = time.time()
        self.elapsed += now - getattr(self, "_last_update_time", tick)
        self._last_update_time = now
        move = None
        if self.scheduler is not None:
            move = self.scheduler.update(self.dist.all_reduce_sum if self.dist.world_size > 1 else None)
        start = self.start_frame
        decayed = self.stall.update(self.frames, start if start is not None else 0)
        if decayed is not None and not self.quiet:
            print(f"curriculum stalled at frame {start}: lr and entropy coefficient scaled to {decayed:.3g}x",
                  flush=True)
        if move and not self.quiet:
            print(f"curriculum: moved {move}; episodes now start at frame {start}", flush=True)
        curriculum_stats = self.scheduler.stats() if self.scheduler else {}
        row = {"frames": self.frames, "updates": self.updates, "time": round(self.elapsed, 2),
               "fps": round(self.frames / max(self.elapsed, 1e-9), 1), "start_frame": start,
               "curriculum_done": bool(self.scheduler.done) if self.scheduler else None,
               "curriculum_move": move, "demo_length": self.demo_info["length"],
               "demo_reward_frames": self.demo_info["reward_frames"],
               "success_rate": curriculum_stats.get("front_success_rate"),
               "window_success_rate": curriculum_stats.get("window_success_rate"),
               "window_bin_success_rates": [None if r is None or math.isnan(r) else round(float(r), 4)
                                            for r in curriculum_stats.get("window_bin_success_rates", [])] or None,
               "lr": self.config.ppo.lr * self.stall.scale, "ent_coef": self.config.ppo.ent_coef * self.stall.scale,
               "unstick_scale": self.stall.scale, "new_episodes": num_episodes,
               "explored_steps": self.explore.take_count(), "explored_episodes": self.explored_episodes,
               "explored_successes": self.explored_successes, "episode_ends": self.stats.take_ends()}
        row.update(self.stats.summary())
        row.update({k: (float(v) if v is not None else None) for k, v in stats.items()})
        self._log(row)
        if self.updates % self.config.latest_every == 0:
            self.save_checkpoint(periodic=self.updates % self.config.checkpoint_every == 0)
            if self.dist.is_main and self.updates % self.config.checkpoint_every == 0:
                self._plots()

    def _plots(self) -> None:
        from curriculum_ppo.plots import plot_run, plot_success_by_start

        try:
            plot_run(self.run_dir)
        except UserError:
            pass
        if self.scheduler is not None:
            table = success_by_start_table(*self.scheduler.counts_by_start(), self.demo_info["length"])
            table.update({"frames": self.frames, "start_frame": self.scheduler.start_frame,
                          "window_end": self.scheduler.window_end})
            write_text_atomic(self.run_dir / "success_by_start.json", json.dumps(table, indent=1) + "\n")
            plot_success_by_start(self.run_dir, table)

    def _close_envs(self) -> None:
        if self.pool is not None and not getattr(self, "_envs_closed", False):
            self._envs_closed = True
            self.worker_peak_rss = self.pool.peak_rss_bytes()
            self.pool.close()
        if self.tb:
            self.tb.close()

    def close(self) -> None:
        """Stop the env workers and give the run directory free (``train`` does both itself)."""
        self._close_envs()
        self.run_lock.release()


def build_policy(config: PolicyConfig):
    """The CNN actor-critic for Atari; ``arch="mlp"`` gives the small MLP used by the toy env."""
    if config.arch == "mlp":
        from curriculum_ppo.ppo.mlp_policy import MLPActorCritic

        return MLPActorCritic(config)
    return ActorCritic(config)


def load_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint safely (``weights_only``: a checkpoint cannot run code)."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for corrupt files
        raise UserError(f"{path} is not a readable checkpoint ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"{path} is not a curriculum_ppo checkpoint")
    if ckpt.get("version") != CHECKPOINT_VERSION:
        raise UserError(f"{path} is checkpoint version {ckpt.get('version')}; this curriculum_ppo reads "
                        f"version {CHECKPOINT_VERSION}")
    return ckpt
