"""Every knob of a training run, in one dataclass saved to ``config.json`` and inside checkpoints."""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field

from curriculum_ppo.curriculum import CurriculumConfig, UnstickConfig
from curriculum_ppo.envs.atari import AtariConfig
from curriculum_ppo.episode_rules import EpisodeRulesConfig
from curriculum_ppo.errors import UserError
from curriculum_ppo.exploration import ExploreConfig
from curriculum_ppo.ppo.learner import PPOConfig


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
