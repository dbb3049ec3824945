"""``curriculum-ppo train``: flags -> :class:`~curriculum_ppo.train.TrainConfig` -> :class:`~curriculum_ppo.train.Trainer`.

Precedence: built-in defaults < ``--config FILE`` (a config.json of an earlier
run works) < flags given on the command line. With ``--resume`` the run's own
config.json is the base and only ``--frames`` (to extend the budget) and
runtime flags (device, workers, status interval) may change.
"""

from __future__ import annotations

import json
from pathlib import Path

from curriculum_ppo.errors import UserError

# flag dest -> (section or None, field)
KNOBS = {
    "frames": (None, "total_frames"), "num_envs": (None, "num_envs"), "workers": (None, "num_workers"),
    "env_groups": (None, "env_groups"), "learner_steps_envs": (None, "learner_steps_envs"),
    "groups_by_worker": (None, "groups_by_worker"), "spin_wait_us": (None, "spin_wait_us"),
    "steps": (None, "num_steps"), "seed": (None, "seed"), "device": (None, "device"),
    "arch": (None, "arch"), "recurrent": (None, "recurrent"), "threads": (None, "torch_threads"),
    "status_every": (None, "status_every"), "minutes": (None, "max_seconds"),
    "stop_at_success": (None, "stop_at_success"), "checkpoint_every": (None, "checkpoint_every"),
    "obs": ("atari", "obs_mode"), "warmup_steps": ("atari", "warmup_steps"),
    "lr": ("ppo", "lr"), "ent_coef": ("ppo", "ent_coef"), "gamma": ("ppo", "gamma"),
    "gae_lambda": ("ppo", "gae_lambda"), "epochs": ("ppo", "num_epochs"), "minibatches": ("ppo", "num_minibatches"),
    "clip": ("ppo", "clip_coef"),
    "window": ("curriculum", "window"), "success_threshold": ("curriculum", "success_threshold"),
    "random_start_fraction": ("curriculum", "random_start_fraction"),
    "min_episodes": ("curriculum", "min_episodes"), "decision_front": ("curriculum", "decision_front"),
    "front_half_life": ("curriculum", "front_half_life"),
    "lag_allowance": ("rules", "lag_allowance"), "max_episode_frames": ("rules", "max_episode_frames"),
    "success_rule": ("rules", "success_rule"), "success_horizon": ("rules", "success_horizon"),
    "unstick_patience": ("unstick", "patience_frames"), "unstick_decay": ("unstick", "decay"),
    "explore_epsilon": ("explore", "epsilon"), "explore_steps": ("explore", "steps"),
    "explore_fraction": ("explore", "fraction"),
}
RUNTIME = {"minutes", "stop_at_success", "frames", "device", "workers", "env_groups", "learner_steps_envs",
           "groups_by_worker", "spin_wait_us", "front_half_life",
           "status_every", "threads", "checkpoint_every"}


def add_train_parser(sub) -> None:
    p = sub.add_parser("train", help="train PPO with the backward curriculum on a demo")
    p.add_argument("--demo", help="demo file (default: the bundled Montezuma's Revenge room-1 demo)")
    p.add_argument("--game", help="game (checked against the demo; without --demo: train from the game start)")
    p.add_argument("--run-dir", required=True,
                   help="where config, metrics, checkpoints and plots go; one training at a time (it holds "
                        "RUN_DIR/train.lock until it ends; evaluate, inspect and plot may read it meanwhile)")
    p.add_argument("--resume", action="store_true", help="continue the run in --run-dir from checkpoints/latest.pt")
    p.add_argument("--config", help="JSON config file (e.g. an earlier run's config.json)")
    p.add_argument("--no-curriculum", action="store_true", help="plain PPO from the game start (baseline)")
    g = p.add_argument_group("run")
    g.add_argument("--frames", type=int, help="budget in emulator frames (default 10M)")
    g.add_argument("--minutes", type=lambda v: float(v) * 60, help="stop after this many minutes of training")
    g.add_argument("--stop-at-success", type=float, metavar="RATE",
                   help="stop once the curriculum reached the game start and this fraction of the last 100 "
                        "episodes from the game start tied or beat the demo (e.g. 0.5; 0 = off)")
    g.add_argument("--num-envs", type=int, help="parallel environments per process (default 8)")
    g.add_argument("--workers", type=int, help="env worker processes (default: CPU cores; 0 = step the envs in the learner process)")
    g.add_argument("--env-groups", type=int, metavar="G",
                   help="pipeline the envs in G groups: workers step one group while the learner picks the "
                        "next actions of another (default 1; 2 pays off when env stepping is the bottleneck)")
    g.add_argument("--learner-steps-envs", action="store_true", default=None,
                   help="the learner process steps one worker's share of the envs itself (one process fewer)")
    g.add_argument("--groups-by-worker", action="store_true", default=None,
                   help="with --env-groups: each group lives in one worker, so there is no per-step barrier "
                        "across workers (--env-groups must be a multiple of --workers)")
    g.add_argument("--spin-wait-us", type=float, metavar="US",
                   help="env pool processes poll their pipe this long before blocking (default 0). With "
                        "--learner-steps-envs and one worker per core ~2000 speeds up env stepping alone; CPU "
                        "training measured slower with it (README, speed section)")
    g.add_argument("--steps", type=int, help="rollout length per env (default 128)")
    g.add_argument("--seed", type=int)
    g.add_argument("--device", help="auto (CUDA if present), cpu or cuda")
    g.add_argument("--threads", type=int, help="torch CPU threads of the learner (default: one per core on CPU, "
                                               "1 with a GPU, where the env workers need the cores)")
    g.add_argument("--no-overlap", action="store_true", help="do not overlap rollouts with the PPO update")
    g.add_argument("--compile", action="store_true", help="torch.compile the network for the PPO update")
    g.add_argument("--status-every", type=float, help="seconds between status lines (default 5)")
    g.add_argument("--checkpoint-every", type=int, help="updates between periodic checkpoints (default 50)")
    g = p.add_argument_group("network and PPO")
    g.add_argument("--arch", choices=["nature", "large"])
    g.add_argument("--recurrent", action="store_true", default=None, help="GRU policy")
    g.add_argument("--obs", choices=["gray84", "rgb105x80"])
    g.add_argument("--warmup-steps", type=int, help="agent steps replaying the demo before a demo start")
    g.add_argument("--lr", type=float)
    g.add_argument("--ent-coef", type=float)
    g.add_argument("--gamma", type=float)
    g.add_argument("--gae-lambda", type=float)
    g.add_argument("--epochs", type=int)
    g.add_argument("--minibatches", type=int)
    g.add_argument("--clip", type=float)
    g = p.add_argument_group("curriculum")
    g.add_argument("--window", type=int, help="width of the window of start frames (default 64)")
    g.add_argument("--success-threshold", type=float, help="move back at this success rate (default 0.2)")
    g.add_argument("--random-start-fraction", type=float, help="episodes starting at random later frames (0.2)")
    g.add_argument("--decision-front", type=float,
                   help="fraction of the window (its hardest, front starts) whose success rate moves it back (0.25)")
    g.add_argument("--min-episodes", type=int, help="episodes in the window before deciding (default 32)")
    g.add_argument("--front-half-life", type=float, metavar="EPISODES",
                   help="memory of the move-back decision: a front episode's weight halves after this many "
                        "newer front episodes (default 64; 0 = weigh all episodes since the last move equally)")
    g.add_argument("--lag-allowance", type=int, help="frames the agent may lag the demo's score (default 60)")
    g.add_argument("--max-episode-frames", type=int,
                   help="time limit of one demo-start episode in emulator frames (default 18000)")
    g.add_argument("--success-rule", choices=["horizon", "demo_end"],
                   help="horizon (default): tie the demo's score at its first reward event at or after "
                        "start + --success-horizon; demo_end: tie the demo's whole remaining return (the "
                        "original rule; an episode's cost grows with what is left of the demo)")
    g.add_argument("--success-horizon", type=int, metavar="FRAMES",
                   help="frames past the start after which the horizon rule's target reward may lie (default 2000)")
    g.add_argument("--unstick-patience", type=int, help="frames without progress before lr/entropy decay")
    g.add_argument("--unstick-decay", type=float)
    g.add_argument("--explore-epsilon", type=float, metavar="EPS",
                   help="for the first --explore-steps agent steps of an exploring episode, mix this much "
                        "uniform-random choice into the policy (default 0.2; 0 = off)")
    g.add_argument("--explore-steps", type=int, help="agent steps after a window start that explore (default 8)")
    g.add_argument("--explore-fraction", type=float,
                   help="fraction of the episodes started in the curriculum window that explore; they train "
                        "the policy but do not count for the curriculum's success rate (default 0.5)")
    p.set_defaults(func=run_train)


def build_config(args):
    from curriculum_ppo.train import TrainConfig

    run_dir = Path(args.run_dir)
    if args.resume:
        path = run_dir / "config.json"
        if not path.exists():
            raise UserError(f"--resume: {path} not found (is {run_dir} a run directory?)")
        base = _read_json(path)
        base.pop("version", None)
        changed = [k for k in KNOBS if getattr(args, k, None) is not None and k not in RUNTIME]
        if changed:
            raise UserError(f"--resume keeps the run's settings; only {', '.join(sorted(RUNTIME))} may change "
                            f"(got --{changed[0].replace('_', '-')})")
    elif args.config:
        base = _read_json(Path(args.config))
        base.pop("version", None)
    else:
        base = {}
    config = TrainConfig.from_dict(base)
    for dest, (section, name) in KNOBS.items():
        value = getattr(args, dest, None)
        if value is None:
            continue
        target = config if section is None else getattr(config, section)
        setattr(target, name, value)
    if config.stop_at_success == 0:  # "--stop-at-success 0" switches the rule off (e.g. on --resume)
        config.stop_at_success = None
    if getattr(args, "no_overlap", False):
        config.overlap = False
    if getattr(args, "compile", False):
        config.compile = True
    if not args.resume:
        if args.no_curriculum:
            config.demo = None
            config.game = args.game or _bundled_game()
        else:
            if args.demo:
                config.demo = args.demo
            elif config.demo is None and not args.game:
                from curriculum_ppo.cli import default_demo

                config.demo = str(default_demo())
            if args.game:
                config.game = args.game
    _validate(config)
    return config


def _bundled_game() -> str:
    return "montezuma_revenge"


def _validate(config) -> None:
    checks = [
        (config.total_frames > 0, "--frames must be positive"),
        (config.num_envs > 0, "--num-envs must be positive"),
        (config.num_workers is None or config.num_workers >= 0, "--workers must be >= 0 (0: envs in the learner process)"),
        (config.num_steps > 0, "--steps must be positive"),
        (1 <= config.env_groups <= config.num_envs, "--env-groups must be in 1..--num-envs"),
        (0 <= config.spin_wait_us <= 1e6, "--spin-wait-us must be in 0..1000000"),
        (config.ppo.lr > 0, "--lr must be positive"),
        (config.ppo.num_epochs > 0 and config.ppo.num_minibatches > 0, "--epochs and --minibatches must be positive"),
        (config.num_envs * config.num_steps >= config.ppo.num_minibatches, "batch smaller than --minibatches"),
        (0 < config.curriculum.success_threshold <= 1, "--success-threshold must be in (0, 1]"),
        (0 <= config.curriculum.random_start_fraction < 1, "--random-start-fraction must be in [0, 1)"),
        (config.curriculum.window > 0, "--window must be positive"),
        (config.curriculum.front_half_life is None or config.curriculum.front_half_life >= 0,
         "--front-half-life must be >= 0 episodes (0: no forgetting)"),
        (0 <= config.explore.epsilon <= 1, "--explore-epsilon must be in [0, 1]"),
        (config.explore.steps >= 0, "--explore-steps must be >= 0"),
        (0 <= config.explore.fraction <= 1, "--explore-fraction must be in [0, 1]"),
        (config.stop_at_success is None or 0 < config.stop_at_success <= 1,
         "--stop-at-success must be in (0, 1] (0 switches it off)"),
        (config.stop_at_success is None or config.demo is not None or config.env_kind != "atari",
         "--stop-at-success needs a demo: the goal is to beat the demo's return from the game start"),
    ]
    for ok, message in checks:
        if not ok:
            raise UserError(message)
    if config.spin_wait_us and config.num_workers == 0:
        raise UserError("--spin-wait-us needs env worker processes (got --workers 0: there is no pipe to wait on)")
    if config.groups_by_worker:
        from curriculum_ppo.workers import resolve_num_workers

        if config.num_workers == 0:
            raise UserError("--groups-by-worker needs env worker processes (got --workers 0)")
        workers = resolve_num_workers(config.num_envs, config.num_workers)
        if config.env_groups % workers:
            raise UserError(f"--groups-by-worker needs --env-groups to be a multiple of the {workers} env workers "
                            f"(got --env-groups {config.env_groups})")


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"config file not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path} must hold a JSON object")
    return data


def run_train(args) -> int:
    from curriculum_ppo.distributed import DistContext
    from curriculum_ppo.train import Trainer

    config = build_config(args)
    dist = DistContext.from_env(config.device)
    try:
        trainer = Trainer(config, args.run_dir, resume=args.resume, dist=dist)
        return trainer.train()
    finally:
        dist.close()
