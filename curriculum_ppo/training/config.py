"""Every knob of a training run, in one dataclass saved to ``config.json`` and inside checkpoints.

Each field is the one place that gives its knob's default, type and, for the knobs with a flag,
the flag's name and help (:func:`~curriculum_ppo.config_flags.knob`); ``curriculum-ppo train``'s
flags are generated from them. Validation runs once, on construction: each section's
``__post_init__`` checks its own fields, :meth:`TrainConfig.__post_init__` the top-level fields
and the rules that span sections. Messages name the flag, since that is what users set.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field

from curriculum_ppo.config_flags import knob
from curriculum_ppo.curriculum import CurriculumConfig, UnstickConfig
from curriculum_ppo.envs.atari import AtariConfig
from curriculum_ppo.episode_rules import EpisodeRulesConfig
from curriculum_ppo.errors import UserError
from curriculum_ppo.exploration import ExploreConfig
from curriculum_ppo.imitation import ImitationConfig
from curriculum_ppo.ppo.learner import PPOConfig

RUN, POOL, NET, CURRICULUM, RULES, EXPLORE = ("run and stopping", "devices and the env pool", "network and PPO",
                                              "curriculum", "episode rules", "exploration and unsticking")
FLAG_GROUPS = (RUN, POOL, NET, CURRICULUM, RULES, EXPLORE)
"""The help sections of ``curriculum-ppo train`` (and of the flag tables in docs/training.md), in order."""
SECTIONS = {"atari": AtariConfig, "rules": EpisodeRulesConfig, "curriculum": CurriculumConfig,
            "unstick": UnstickConfig, "explore": ExploreConfig, "ppo": PPOConfig, "imitation": ImitationConfig}
SECTION_GROUPS = {"atari": NET, "ppo": NET, "imitation": NET, "curriculum": CURRICULUM, "rules": RULES,
                  "unstick": EXPLORE, "explore": EXPLORE}
"""The help section of each config section's flags."""


def minutes_to_seconds(text: str) -> float:
    """``--minutes`` gives minutes; the config keeps seconds."""
    return float(text) * 60


def seconds_as_minutes(seconds: float) -> str:
    return f"{seconds / 60:g}"


@dataclass
class TrainConfig:
    """Every knob of a run; saved to ``config.json`` and inside checkpoints."""

    demo: str | None = None
    """The demo file; ``None`` trains from the game start (``--demo`` and ``--game`` are resolved by the CLI)."""
    game: str | None = None
    total_frames: int = knob(10_000_000, flag="--frames", metavar="N", group=RUN, runtime=True,
                             help="budget in emulator frames (agent steps x frameskip), summed over all ranks")
    num_envs: int = knob(8, flag="--num-envs", metavar="N", group=POOL,
                         help="parallel environments per process (per rank)")
    num_workers: int | None = knob(None, flag="--workers", metavar="W", group=POOL, runtime=True,
                                   none="one per CPU core, at most --num-envs",
                                   help="env worker processes (per rank); 0 = step the envs in the learner process")
    env_groups: int = knob(1, flag="--env-groups", metavar="G", group=POOL, runtime=True,
                           help="pipeline the envs in G groups: the workers step one group while the learner picks "
                                "the next actions of another (pays off when env stepping is the bottleneck)")
    """See ``EnvPool``."""
    learner_steps_envs: bool = knob(False, flag="--learner-steps-envs", group=POOL, runtime=True,
                                    help="the learner process steps one worker's share of the envs itself (one "
                                         "process fewer)")
    groups_by_worker: bool = knob(False, flag="--groups-by-worker", group=POOL, runtime=True,
                                  help="with --env-groups: each group lives in one worker, so there is no per-step "
                                       "barrier across workers (--env-groups must be a multiple of --workers)")
    """See ``EnvPool``."""
    spin_wait_us: float = knob(0.0, flag="--spin-wait-us", metavar="US", group=POOL, runtime=True,
                               help="env pool processes poll their pipe this long (microseconds) before blocking; "
                                    "refused with --workers 0. Speeds up env stepping when no process competes "
                                    "for the cores (--learner-steps-envs, one worker per core); CPU training, "
                                    "whose update needs those cores, measured slower with it (docs/benchmarks.md)")
    num_steps: int = knob(128, flag="--steps", metavar="T", group=NET, help="rollout length per env")
    seed: int = knob(1, flag="--seed", metavar="S", group=RUN,
                     help="seeds every random stream (ranks derive their own)")
    device: str = knob("auto", flag="--device", metavar="DEVICE", group=POOL, runtime=True,
                       help="auto (CUDA when present), cpu or cuda")
    overlap: bool = knob(True, flag="--no-overlap", group=POOL, runtime=True,
                         help="do not collect the next rollout while the learner trains on the previous one")
    compile: bool = knob(False, flag="--compile", group=POOL, runtime=True,
                         help="torch.compile the network for the PPO update (worth it on GPUs; compiling takes "
                              "minutes)")
    torch_threads: int | None = knob(None, flag="--threads", metavar="T", group=POOL, runtime=True,
                                     none="one per core on CPU, 1 with a GPU",
                                     help="torch CPU threads of the learner (with a GPU the env workers need the "
                                          "cores)")
    checkpoint_every: int = knob(50, flag="--checkpoint-every", metavar="U", group=RUN, runtime=True,
                                 help="updates between periodic checkpoints (latest.pt is rewritten more often)")
    latest_every: int = 5
    """Updates between rewrites of ``latest.pt``."""
    max_seconds: float | None = knob(None, flag="--minutes", metavar="M", group=RUN, runtime=True,
                                     parse=minutes_to_seconds, show=seconds_as_minutes, none="no limit",
                                     help="stop (with a checkpoint) after this many minutes of training, whatever "
                                          "the frame budget")
    """Kept in seconds of training wall-clock time."""
    stop_at_success: float | None = knob(
        None, flag="--stop-at-success", metavar="RATE", group=RUN, runtime=True, none="off",
        help="stop (with a checkpoint) once the curriculum reached the game start and this fraction of the last 100 "
             "episodes from the game start (20 at least, all ranks together) tied or beat the demo's return (e.g. "
             "0.5; 0 = off)")
    """Lets benchmarks spend the saved time on the baseline. 0 is stored as ``None`` (off)."""
    status_every: float = knob(5.0, flag="--status-every", metavar="SEC", group=RUN, runtime=True,
                               help="seconds between console status lines")
    env_kind: str = "atari"
    toy: dict = field(default_factory=dict)
    atari: AtariConfig = field(default_factory=AtariConfig)
    rules: EpisodeRulesConfig = field(default_factory=EpisodeRulesConfig)
    curriculum: CurriculumConfig = field(default_factory=CurriculumConfig)
    unstick: UnstickConfig = field(default_factory=UnstickConfig)
    explore: ExploreConfig = field(default_factory=ExploreConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    imitation: ImitationConfig = field(default_factory=ImitationConfig)
    arch: str = knob("nature", flag="--arch", choices=("nature", "large"), group=NET,
                     help="the Nature CNN, or the original work's network (64/128/128 conv, FC 800 + LayerNorm)")
    """The flag offers the Atari networks; ``mlp`` is the toy env's."""
    recurrent: bool = knob(False, flag="--recurrent", group=NET, help="GRU policy")

    def __post_init__(self) -> None:
        if self.stop_at_success == 0:  # "--stop-at-success 0" switches the rule off (e.g. on --resume)
            self.stop_at_success = None
        self._check_run()
        self._check_pool()

    def _check_run(self) -> None:
        checks = [
            (self.total_frames > 0, "--frames must be positive"),
            (self.num_envs > 0, "--num-envs must be positive"),
            (self.num_steps > 0, "--steps must be positive"),
            (self.num_envs * self.num_steps >= self.ppo.num_minibatches, "batch smaller than --minibatches"),
            (self.stop_at_success is None or 0 < self.stop_at_success <= 1,
             "--stop-at-success must be in (0, 1] (0 switches it off)"),
            (self.stop_at_success is None or self.demo is not None or self.env_kind != "atari",
             "--stop-at-success needs a demo: the goal is to beat the demo's return from the game start"),
            (not self.imitation.enabled or self.demo is not None or self.env_kind != "atari",
             "--demo-bc-coef needs a demo (--demo): it clones the demo's actions"),
            (not self.imitation.enabled or not self.recurrent,
             "--demo-bc-coef works with feed-forward policies only (not --recurrent)"),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(message)

    def _check_pool(self) -> None:
        if self.num_workers is not None and self.num_workers < 0:
            raise UserError("--workers must be >= 0 (0: envs in the learner process)")
        if not 1 <= self.env_groups <= self.num_envs:
            raise UserError("--env-groups must be in 1..--num-envs")
        if not 0 <= self.spin_wait_us <= 1e6:
            raise UserError("--spin-wait-us must be in 0..1000000")
        if self.spin_wait_us and self.num_workers == 0:
            raise UserError("--spin-wait-us needs env worker processes "
                            "(got --workers 0: there is no pipe to wait on)")
        if self.groups_by_worker:
            from curriculum_ppo.vec import resolve_num_workers

            if self.num_workers == 0:
                raise UserError("--groups-by-worker needs env worker processes (got --workers 0)")
            workers = resolve_num_workers(self.num_envs, self.num_workers)
            if self.env_groups % workers:
                raise UserError(f"--groups-by-worker needs --env-groups to be a multiple of the {workers} env "
                                f"workers (got --env-groups {self.env_groups})")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        """The config of a nested dict (``config.json``'s layout); unknown keys are refused, missing ones default."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise UserError(f"unknown config keys: {', '.join(sorted(unknown))}")
        kwargs = {}
        for key, value in d.items():
            if key in SECTIONS and not isinstance(value, SECTIONS[key]):
                if not isinstance(value, dict):
                    raise UserError(f"config section '{key}' must be a JSON object, got {value!r}")
                section = SECTIONS[key]
                if hasattr(section, "upgrade_legacy"):  # a config saved by an older version
                    value = section.upgrade_legacy(value)
                names = {f.name for f in dataclasses.fields(section)}
                bad = set(value) - names
                if bad:
                    raise UserError(f"unknown config keys in '{key}': {', '.join(sorted(bad))}")
                kwargs[key] = section(**value)
            else:
                kwargs[key] = value
        return cls(**kwargs)
