"""Evaluate a trained checkpoint under the standard Atari protocols.

Protocols (each one is a row of the result table; several can run at once):

* ``plain``   -- the deterministic game start, no perturbation.
* ``noops``   -- 1..``noop_max`` (30) random no-ops after the reset.
* ``sticky``  -- every emulator frame repeats the previous action with
  probability ``sticky`` (0.25, the ALE v5 / Machado et al. 2018 standard).
* ``epsilon`` -- the agent's action is replaced by a uniformly random one with
  probability ``epsilon`` (0.01).

Episodes play until game over (losing a life does *not* end them) or
``max_frames`` emulator frames (108,000 = 30 minutes); the score is the raw game
score, never clipped. The agent *samples* from its policy, as during training
(``greedy=True`` takes the most likely action instead). A recurrent policy's
GRU state is zeroed at every episode start.

With a demo start (``start_frame``) episodes begin at that demo frame and end as
the curriculum would end them during training: the checkpoint's episode rules
(success = tie the demo's return from that frame; lagging episodes are cut) and
its life-loss setting. The table then also reports the success rate.

Reproducibility: every episode has its own seed (``seeds`` in the JSON), which
fixes its no-op count, sticky-action draws and epsilon draws. Each protocol
uses the same episode seeds, so rows differ only by the protocol. The actions
of the best episode are kept, and the video is made by replaying them from the
same seed in a single environment, so no screen has to be stored during the
evaluation.

Parallelism: episodes run in ``envs`` environments stepped as one batch by the
env worker pool (:mod:`curriculum_ppo.vec`; ``workers=0`` steps them in this
process), the policy runs once per step on the whole batch. Each env learns the
job (protocol, episode seed, start) of its next episode from its reset options,
the pool's ``set_options`` channel (see :class:`EvalEnv`).
"""

from __future__ import annotations

import json
import os
import sys
import time
import zlib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from curriculum_ppo.atomic import atomic_path, check_destination
from curriculum_ppo.errors import UserError

PROTOCOLS = ("plain", "noops", "sticky", "epsilon")


@dataclass
class EvalSettings:
    """Everything ``curriculum-ppo evaluate`` takes besides the checkpoint path."""

    episodes: int = 10
    protocols: tuple[str, ...] | None = None
    """Default: ``noops`` from the game start, ``plain`` from a demo frame; ``all`` expands to every protocol."""
    noop_max: int = 30
    sticky: float = 0.25
    epsilon: float = 0.01
    max_frames: int = 108_000
    envs: int = 8
    workers: int | None = None
    seed: int = 0
    device: str = "auto"
    greedy: bool = False
    demo: str | None = None
    start_frame: int | None = None
    threads: int | None = None
    """torch CPU threads (default: the CPU cores the env workers leave free, at least 1)."""
    progress_every: float = 10.0
    """Seconds between progress lines on stderr (a TTY gets a line refreshed in place every second)."""

    def validate(self) -> None:
        checks = [
            (self.episodes >= 1, f"--episodes must be at least 1 (got {self.episodes})"),
            (self.envs >= 1, f"--envs must be at least 1 (got {self.envs})"),
            (self.workers is None or self.workers >= 0, f"--workers must be 0 or more (got {self.workers})"),
            (self.max_frames >= 1, f"--max-frames must be positive (got {self.max_frames})"),
            (self.noop_max >= 1, f"--noop-max must be at least 1 (got {self.noop_max})"),
            (0.0 <= self.sticky < 1.0, f"--sticky must be in [0, 1) (got {self.sticky})"),
            (0.0 <= self.epsilon <= 1.0, f"--epsilon must be in [0, 1] (got {self.epsilon})"),
            (self.seed >= 0, f"--seed must be 0 or more (got {self.seed})"),
            (self.start_frame is None or self.start_frame >= 0,
             f"--start-frame must be 0 or more (got {self.start_frame})"),
            (self.threads is None or self.threads >= 1, f"--threads must be at least 1 (got {self.threads})"),
            (self.progress_every > 0, "--progress-every must be positive"),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(message)
        if self.protocols is not None and not self.protocols:
            raise UserError("give at least one --protocol")
        for name in self.protocols or ():
            if name not in PROTOCOLS and name != "all":
                raise UserError(f"unknown protocol '{name}'; choose from {', '.join(PROTOCOLS)} (or all)")

    def protocol_overrides(self, name: str) -> dict:
        """AtariConfig overrides and epsilon of one protocol."""
        return {
            "plain": {"noop_max": 0, "sticky_prob": 0.0, "epsilon": 0.0},
            "noops": {"noop_max": self.noop_max, "sticky_prob": 0.0, "epsilon": 0.0},
            "sticky": {"noop_max": 0, "sticky_prob": self.sticky, "epsilon": 0.0},
            "epsilon": {"noop_max": 0, "sticky_prob": 0.0, "epsilon": self.epsilon},
        }[name]

    def describe(self, name: str) -> str:
        return {
            "plain": "deterministic start",
            "noops": f"1-{self.noop_max} random no-ops",
            "sticky": f"sticky actions p={self.sticky:g}",
            "epsilon": f"random action p={self.epsilon:g}",
        }[name]


# --- the environment side ----------------------------------------------------------------
IDLE = {"job": None}
"""Reset options of an env with no episode left to play: it stands still until the evaluation ends."""


@dataclass
class EvalEnvFactory:
    """Builds the evaluation's envs (picklable, for the worker processes); see :class:`EvalEnv`.

    ``game``, ``demo_path``, ``atari`` and ``rules`` make the Atari env (registry kind ``atari``);
    ``protocol_configs`` maps each protocol to its ``{"atari": AtariConfig fields, "epsilon": p}``.
    """

    game: str | None = None
    demo_path: str | None = None
    atari: dict = field(default_factory=dict)
    rules: dict = field(default_factory=dict)
    protocol_configs: dict = field(default_factory=dict)

    def __call__(self, seed: int) -> "EvalEnv":
        return EvalEnv(self, seed)


class EvalEnv:
    """An Atari env that plays one evaluation job per episode, named by its reset options.

    ``reset(options={"job": k, "protocol": p, "seed": s, "start_frame": t})`` (see
    :meth:`EvalPlan.options`) switches the env to protocol ``p`` and resets it with the episode's
    seed ``s``, so every episode is reproducible on its own, whichever env plays it; its summary
    names the job. :data:`IDLE` leaves the env standing still.
    """

    def __init__(self, factory: EvalEnvFactory, seed: int):
        from curriculum_ppo.envs.atari import AtariConfig
        from curriculum_ppo.envs.registry import make_env

        self.inner = make_env("atari", seed, game=factory.game, demo_path=factory.demo_path, atari=factory.atari,
                              rules=factory.rules)
        self.observation_space = self.inner.observation_space
        self.action_space = self.inner.action_space
        self.num_actions = int(self.action_space.n)
        self.configs = {name: (AtariConfig(**c["atari"]), float(c["epsilon"]))
                        for name, c in factory.protocol_configs.items()}
        self.job: int | None = None
        self.epsilon = 0.0
        self.rng = np.random.default_rng(0)
        self._idle_obs = np.zeros(self.observation_space.shape, np.uint8)

    def reset(self, *, seed=None, options=None):
        options = options or IDLE
        self.job = options.get("job")
        if self.job is None:
            return self._idle_obs, {"warmup": False}
        self.inner.config, self.epsilon = self.configs[options["protocol"]]
        episode_seed = int(options["seed"])
        self.rng = np.random.default_rng([episode_seed, 1])  # epsilon draws, independent of the env's own RNG
        return self.inner.reset(seed=episode_seed, options={"start_frame": options.get("start_frame")})

    def step(self, action):
        if self.job is None:
            return self._idle_obs, 0.0, False, False, {}
        if self.epsilon > 0 and self.rng.random() < self.epsilon:
            action = int(self.rng.integers(self.num_actions))
        obs, reward, terminated, truncated, info = self.inner.step(int(action))
        if "episode" in info:
            info["episode"]["job"] = self.job
        return obs, reward, terminated, truncated, info

    def render(self):
        return self.inner.render()

    def close(self):
        self.inner.close()


@dataclass
class EvalPlan:
    """The episodes of an evaluation: the envs' factory, one job per (protocol, episode seed), and their order.

    ``jobs[k] = (protocol, episode seed, start frame or None)``; ``protocols`` in table order;
    ``seeds`` the episode seeds every protocol shares.
    """

    factory: EvalEnvFactory
    jobs: list[tuple[str, int, int | None]]
    protocols: list[str]
    seeds: list[int]

    def options(self, job: int | None) -> dict:
        """The reset options that make an :class:`EvalEnv` play job ``job`` (``None``: :data:`IDLE`)."""
        if job is None:
            return dict(IDLE)
        protocol, seed, start = self.jobs[job]
        return {"job": job, "protocol": protocol, "seed": int(seed), "start_frame": start}


# --- the checkpoint -------------------------------------------------------------------
@dataclass
class LoadedCheckpoint:
    path: Path
    game: str
    policy: object
    atari: dict
    rules: dict
    train_demo: str | None
    demo_length: int
    curriculum_start: int | None
    frames: int
    updates: int
    recurrent: bool
    rom_md5: str | None


def _known_fields(cls, values: dict) -> dict:
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in (values or {}).items() if k in names}


def load_for_eval(path: str | os.PathLike, device) -> LoadedCheckpoint:
    """Read a checkpoint and build its policy on ``device``; every problem is a one-line UserError."""
    from curriculum_ppo.envs.atari import AtariConfig
    from curriculum_ppo.episode_rules import EpisodeRulesConfig
    from curriculum_ppo.ppo.policy import PolicyConfig, build_policy
    from curriculum_ppo.training.run_dir import load_checkpoint

    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path} is a directory; give a checkpoint file such as {path / 'checkpoints' / 'latest.pt'}")
    ckpt = load_checkpoint(path)
    try:
        config = json.loads(ckpt["config_json"])
        policy_config = json.loads(ckpt["policy_config_json"])
        state_dict = ckpt["model"]
    except (KeyError, TypeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path} is incomplete or corrupt (cannot read {exc})") from None
    if config.get("env_kind", "atari") != "atari" or not ckpt.get("game"):
        raise UserError(f"{path} was not trained on an Atari game (env {config.get('env_kind')}); "
                        "evaluate supports Atari checkpoints only")
    try:
        pc = PolicyConfig(**_known_fields(PolicyConfig, policy_config))
        pc.obs_shape = tuple(pc.obs_shape)
        policy = build_policy(pc)
        policy.load_state_dict(state_dict)
    except (RuntimeError, TypeError, ValueError, KeyError) as exc:
        raise UserError(f"{path}: the network weights do not fit the saved network config "
                        f"({str(exc).splitlines()[0][:160]})") from None
    policy.to(device).eval()
    atari = asdict(AtariConfig(**_known_fields(AtariConfig, config.get("atari"))))
    rules = asdict(EpisodeRulesConfig(**_known_fields(EpisodeRulesConfig, config.get("rules"))))
    curriculum_start = None
    if ckpt.get("scheduler_json"):
        try:
            sched = json.loads(ckpt["scheduler_json"])
            curriculum_start = 0 if sched.get("done") else int(sched["slot"]) * int(sched.get("frame_granularity", 1))
        except (KeyError, TypeError, ValueError):
            curriculum_start = None
    return LoadedCheckpoint(
        path=path, game=str(ckpt["game"]), policy=policy, atari=atari, rules=rules,
        train_demo=config.get("demo"), demo_length=int(ckpt.get("demo_length") or 0),
        curriculum_start=curriculum_start, frames=int(ckpt.get("frames", 0)), updates=int(ckpt.get("updates", 0)),
        recurrent=bool(pc.recurrent), rom_md5=ckpt.get("rom_md5"),
    )


def check_writable(path: str | os.PathLike, flag: str) -> Path:
    """Fail before the evaluation (not after it) when an output file cannot be written."""
    path = check_destination(path, flag)
    if path.exists() and not os.access(path, os.W_OK):
        raise UserError(f"cannot write {flag} {path}: the file is not writable")
    return path


def resolve_protocols(names, demo_start: bool) -> list[str]:
    """Expand ``all``, apply the default, and refuse ``noops`` at demo starts (no-ops only follow a reset)."""
    if not names:
        return ["plain" if demo_start else "noops"]
    out: list[str] = []
    for name in names:
        if name == "all":
            out.extend(p for p in PROTOCOLS if not (demo_start and p == "noops"))
        elif name == "noops" and demo_start:
            raise UserError("the noops protocol does not apply to demo starts (random no-ops only follow a game "
                            "reset); use plain, sticky or epsilon")
        else:
            out.append(name)
    return list(dict.fromkeys(out))


def episode_seed(base: int, index: int) -> int:
    """Seed of episode ``index`` (shared by all protocols), derived from ``--seed``."""
    return int(np.random.SeedSequence([base, index]).generate_state(1)[0])


def build_plan(settings: EvalSettings, game: str, atari: dict, rules: dict, demo_path: str | None = None,
               start: int | None = None) -> EvalPlan:
    """The episodes of an evaluation: one job per (protocol, episode seed), and each protocol's settings.

    ``atari`` and ``rules`` are the checkpoint's; the protocols change only what they name (no-ops,
    sticky actions, epsilon) on top of them. From the game start episodes play on after a life is
    lost; from a demo frame they end as the curriculum ended them in training.
    """
    atari = {**atari, "max_episode_frames": settings.max_frames}
    rules = dict(rules)
    if start is None:
        atari["end_on_life_loss"] = False
    else:
        rules["max_episode_frames"] = settings.max_frames
    protocols = resolve_protocols(settings.protocols, demo_start=start is not None)
    seeds = [episode_seed(settings.seed, k) for k in range(settings.episodes)]
    protocol_configs = {}
    for p in protocols:
        o = settings.protocol_overrides(p)
        protocol_configs[p] = {"atari": {**atari, "noop_max": o["noop_max"], "sticky_prob": o["sticky_prob"]},
                               "epsilon": o["epsilon"]}
    factory = EvalEnvFactory(game=game, demo_path=demo_path, atari=atari, rules=rules,
                             protocol_configs=protocol_configs)
    return EvalPlan(factory=factory, jobs=[(p, s, start) for p in protocols for s in seeds], protocols=protocols,
                    seeds=seeds)


# --- the run -----------------------------------------------------------------------------
class _Progress:
    def __init__(self, total: int, every: float, stream=None):
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.every = 1.0 if self.tty else every
        self.total = total
        self.t0 = self.last = time.time()

    def _line(self, done: int, frames: int) -> str:
        elapsed = time.time() - self.t0
        fps = frames / max(elapsed, 1e-9)
        return (f"evaluate: {done}/{self.total} episodes, {frames:,} frames, {fps:,.0f} frames/s, "
                f"{elapsed:.0f} s")

    def update(self, done: int, frames: int) -> None:
        now = time.time()
        if now - self.last < self.every:
            return
        self.last = now
        if self.tty:
            print("\r" + self._line(done, frames).ljust(78), end="", file=self.stream, flush=True)
        else:
            print(self._line(done, frames), file=self.stream, flush=True)

    def finish(self, done: int, frames: int) -> None:
        elapsed = time.time() - self.t0
        line = (f"evaluate: {done}/{self.total} episodes done in {elapsed:.1f} s "
                f"({frames / max(elapsed, 1e-9):,.0f} frames/s)")
        print(("\r" + line.ljust(78)) if self.tty else line, file=self.stream, flush=True)


class _JobQueue:
    """Hands the plan's jobs to the envs in order, through the pool's reset options.

    A pool resets an env as soon as its episode ends, so every env plays one job (``playing[i]``,
    ``None`` when idle) and already has the next one queued.
    """

    def __init__(self, plan: EvalPlan, pool):
        self.plan, self.pool, self.next = plan, pool, 0
        self.playing = [self._queue(i) for i in range(pool.num_envs)]
        pool.reset()
        self.queued = [self._queue(i) for i in range(pool.num_envs)]

    def _queue(self, env: int) -> int | None:
        job = self.next if self.next < len(self.plan.jobs) else None
        self.next += job is not None
        self.pool.set_options(self.plan.options(job), env)
        return job

    def finished(self, env: int) -> int | None:
        """Env ``env`` ended its episode and began its queued job: return the job it finished."""
        job = self.playing[env]
        self.playing[env], self.queued[env] = self.queued[env], self._queue(env)
        return job


class _Results:
    """Per-job results, the actions each env has taken in its current episode, and the best episode so far."""

    def __init__(self, jobs: list, num_envs: int):
        self.jobs = jobs
        self.results: list[dict | None] = [None] * len(jobs)
        self.actions: list[list[int]] = [[] for _ in range(num_envs)]
        self.best: dict | None = None
        self.done = 0

    def acted(self, playing: list, actions: np.ndarray) -> None:
        for i, job in enumerate(playing):
            if job is not None:
                self.actions[i].append(int(actions[i]))

    def finished(self, env: int, job: int | None, episode: dict) -> None:
        if job is None or int(episode.get("job", job)) != job:
            raise RuntimeError(f"env {env} finished job {episode.get('job')} but was playing {job}")
        protocol, seed, start = self.jobs[job]
        actions = np.asarray(self.actions[env], np.int16)
        result = self.results[job] = {
            "protocol": protocol, "seed": int(seed), "score": float(episode["score"]),
            "frames": int(episode["frames"]), "reason": episode.get("reason"),
            "success": bool(episode.get("success")) if start is not None else None,
            "env": env, "actions_digest": zlib.crc32(actions.tobytes()),
        }
        key = (result["score"], -job)
        if self.best is None or key > self.best["key"]:
            self.best = {"key": key, "job": job, "env": env, "actions": actions, **result}
        self.done += 1
        self.actions[env] = []


def _play(ckpt: LoadedCheckpoint, plan: EvalPlan, pool, settings: EvalSettings, device,
          quiet: bool) -> tuple[list[dict], dict | None]:
    """Step the pool with the policy until every job has been played."""
    import torch

    jobs, record = _JobQueue(plan, pool), _Results(plan.jobs, pool.num_envs)
    starts = torch.ones(pool.num_envs, dtype=torch.bool, device=device)
    hidden = ckpt.policy.initial_state(pool.num_envs, device)
    progress = None if quiet else _Progress(len(plan.jobs), settings.progress_every)
    frameskip, frames = int(plan.factory.atari.get("frameskip", 4)), 0
    with torch.no_grad():
        while record.done < len(plan.jobs):
            obs = torch.from_numpy(pool.obs).to(device)
            action, _, _, hidden = ckpt.policy.act(obs, hidden, starts, deterministic=settings.greedy)
            action_np = action.cpu().numpy()
            record.acted(jobs.playing, action_np)
            episodes = pool.step(action_np)
            frames += frameskip * sum(job is not None for job in jobs.playing)
            starts = torch.from_numpy(np.asarray(pool.terminated) | np.asarray(pool.truncated)).to(device)
            for episode in episodes:
                env = int(episode["env"])
                record.finished(env, jobs.finished(env), episode)
            if progress:
                progress.update(record.done, frames)
    if progress:
        progress.finish(record.done, frames)
    return record.results, record.best


def run_episodes(ckpt: LoadedCheckpoint, plan: EvalPlan, settings: EvalSettings, device,
                 quiet: bool = False) -> tuple[list[dict], dict | None]:
    """Play every job of ``plan``; return per-job results and the best episode's replay record."""
    import torch

    from curriculum_ppo.vec.pool import WorkerError, make_pool, resolve_num_workers

    num_envs = min(settings.envs, len(plan.jobs))
    workers = settings.workers
    if workers is None:
        workers = resolve_num_workers(num_envs, None)
    if device.type == "cpu":
        # Intra-op threads fighting the env workers for the same cores slow the forward pass down
        # many times over; by default use only the cores the workers leave free.
        torch.set_num_threads(settings.threads or max(1, (os.cpu_count() or 1) - workers))
    pool_seed = (settings.seed * 1000) % (2**31 - 2**16)  # emulator seeds (env i gets pool_seed + i) fit an int32
    try:
        pool = make_pool(plan.factory, num_envs, workers, seed=pool_seed)
    except WorkerError as exc:
        raise UserError(f"could not start the environments: {exc}") from None
    try:
        net = ckpt.policy.config
        if tuple(pool.obs_shape) != tuple(net.obs_shape) or pool.num_actions != net.num_actions:
            raise UserError(f"the checkpoint's network expects observations {tuple(net.obs_shape)} "
                            f"and {net.num_actions} actions, the game gives {tuple(pool.obs_shape)} "
                            f"and {pool.num_actions}")
        torch.manual_seed(settings.seed)
        results, best = _play(ckpt, plan, pool, settings, device, quiet)
    except WorkerError as exc:
        raise UserError(f"evaluation stopped: {exc}") from None
    finally:
        pool.close()
    if best is not None:
        best["pool_seed"] = pool_seed
    return results, best


def summarize(scores: list[float], lengths: list[int], reasons: list, successes: list) -> dict:
    a = np.asarray(scores, dtype=np.float64)
    out = {
        "episodes": len(scores),
        "mean": float(a.mean()),
        "std": float(a.std(ddof=1)) if len(a) > 1 else 0.0,
        "median": float(np.median(a)),
        "min": float(a.min()),
        "max": float(a.max()),
        "mean_frames": float(np.mean(lengths)),
        "capped": int(sum(r == "max_frames" for r in reasons)),
    }
    if successes and successes[0] is not None:
        out["success_rate"] = float(np.mean(successes))
    return out


def format_table(rows: list[dict], demo_start: bool) -> str:
    header = ["protocol", "setting", "episodes", "mean ± std", "median", "min", "max", "mean frames", "capped"]
    if demo_start:
        header.append("success")
    lines = []
    for r in rows:
        cells = [r["protocol"], r["description"], str(r["episodes"]), f"{r['mean']:.1f} ± {r['std']:.1f}",
                 f"{r['median']:g}", f"{r['min']:g}", f"{r['max']:g}", f"{r['mean_frames']:,.0f}",
                 f"{r['capped']}/{r['episodes']}"]
        if demo_start:
            cells.append(f"{r['success_rate']:.0%}")
        lines.append(cells)
    widths = [max(len(header[c]), *(len(line[c]) for line in lines)) for c in range(len(header))]
    left = {0, 1}

    def fmt(cells):
        return "  ".join(c.ljust(w) if k in left else c.rjust(w) for k, (c, w) in enumerate(zip(cells, widths)))

    return "\n".join([fmt(header), fmt(["-" * w for w in widths])] + [fmt(c) for c in lines])


SHEET_FRAMES = 8  # evenly spaced frames of the video in its PNG contact sheet


def record_video(plan: EvalPlan, best: dict, path: Path, scale: int = 2, fps: float | None = None,
                 game: str = "") -> dict:
    """Replay the best episode's actions from its seed in one env and write an MP4 with the score overlaid,
    plus a PNG contact sheet of :data:`SHEET_FRAMES` evenly spaced frames next to it (same name, ``.png``)."""
    from curriculum_ppo.emulator import display_name
    from curriculum_ppo.video import contact_sheet, overlay_text, upscale, write_mp4, write_png

    env = plan.factory(best["pool_seed"] + best["env"])
    frameskip = int(plan.factory.atari.get("frameskip", 4))
    protocol, seed, _ = plan.jobs[best["job"]]
    state = {"score": 0.0, "frames": 0, "ended": False}
    title = f"{display_name(game)}  {protocol}  seed {seed}" if game else f"{protocol}  seed {seed}"

    picks = set(np.linspace(0, len(best["actions"]), SHEET_FRAMES).round().astype(int).tolist())
    sheet: list[np.ndarray] = []

    def keep(index: int, image: np.ndarray) -> np.ndarray:
        if index in picks:
            sheet.append(image.copy())
        return image

    def frames():
        env.reset(options=plan.options(best["job"]))
        score = 0.0
        yield keep(0, overlay_text(upscale(env.render(), scale), [title, "score 0", "frame 0"]))
        for step, a in enumerate(best["actions"]):
            _, _, terminated, truncated, info = env.step(int(a))
            score = float(info.get("score", score))
            yield keep(step + 1, overlay_text(upscale(env.render(), scale),
                                              [title, f"score {score:g}", f"frame {(step + 1) * frameskip}"]))
            if terminated or truncated:
                state["ended"] = True
                state["frames"] = int(info["episode"]["frames"])
                break
        state["score"] = score

    try:
        count = write_mp4(path, frames(), fps=fps or 60.0 / frameskip)
    finally:
        env.close()
    sheet_path = path.with_suffix(".png")
    write_png(sheet_path, contact_sheet(sheet))
    replay_ok = state["ended"] and state["score"] == best["score"] and state["frames"] == best["frames"]
    if not replay_ok:
        print(f"evaluate: warning: the video replay diverged from the evaluated episode "
              f"(score {state['score']:g} vs {best['score']:g}); the video shows the replay", file=sys.stderr)
    return {"path": str(path), "protocol": protocol, "seed": int(seed), "score": best["score"],
            "frames": best["frames"], "video_frames": count, "replay_matches": bool(replay_ok),
            "sheet": str(sheet_path), "sheet_frames": len(sheet)}


def _check_outputs(json_out, video_out, video_scale: int) -> tuple[Path | None, Path | None]:
    """The output paths, refused before any work when they cannot be written or collide."""
    if video_scale < 1:
        raise UserError(f"--video-scale must be at least 1 (got {video_scale})")
    json_path = check_writable(json_out, "--json") if json_out else None
    video_path = check_writable(video_out, "--video") if video_out else None
    if json_path is not None and video_path is not None and json_path.resolve() == video_path.resolve():
        raise UserError("--json and --video name the same file")
    if video_path is not None and video_path.suffix.lower() == ".png":
        raise UserError(f"--video {video_path}: give an .mp4 name (its PNG contact sheet goes next to it)")
    if (json_path is not None and video_path is not None
            and json_path.resolve() == video_path.with_suffix(".png").resolve()):
        raise UserError(f"--json {json_path} is where the video's contact sheet goes; choose another name")
    if video_path is not None:
        check_writable(video_path.with_suffix(".png"), "--video's contact sheet")
    return json_path, video_path


def _check_rom(ckpt: LoadedCheckpoint, quiet: bool) -> None:
    """The game's ROM must be installed; a different one than in training is a warning."""
    from curriculum_ppo.emulator import display_name, rom_md5

    try:
        installed_md5 = rom_md5(ckpt.game)
    except UserError as exc:
        raise UserError(f"{ckpt.path}: {exc}") from None
    if ckpt.rom_md5 and installed_md5 != ckpt.rom_md5 and not quiet:
        print(f"evaluate: warning: the installed {display_name(ckpt.game)} ROM (md5 {installed_md5}) differs "
              f"from the one the checkpoint was trained on ({ckpt.rom_md5})", file=sys.stderr)


def _demo_start(settings: EvalSettings, ckpt: LoadedCheckpoint) -> tuple[str | None, int | None]:
    """(demo path, start frame) of a demo-start evaluation, or (None, None) from the game start."""
    if settings.demo is None and settings.start_frame is None:
        return None, None
    from curriculum_ppo.demo.store import load_demo
    from curriculum_ppo.emulator import display_name

    demo_path = settings.demo or ckpt.train_demo
    if demo_path is None:
        raise UserError("--start-frame needs --demo FILE.h5 (the checkpoint names no training demo)")
    if settings.demo is None and not Path(demo_path).exists():
        raise UserError(f"--start-frame: the checkpoint's training demo {demo_path} is missing; "
                        "pass --demo FILE.h5")
    demo = load_demo(demo_path)
    if demo.game != ckpt.game:
        raise UserError(f"{demo_path} is a {display_name(demo.game)} demo but the checkpoint was trained on "
                        f"{display_name(ckpt.game)}")
    start = settings.start_frame
    if start is None:
        if ckpt.curriculum_start is None or len(demo) != ckpt.demo_length:
            raise UserError("give --start-frame T (the checkpoint's curriculum position does not apply "
                            "to this demo)")
        start = ckpt.curriculum_start
    if not 0 <= start <= len(demo):
        raise UserError(f"--start-frame {start} is outside the demo (0..{len(demo)})")
    return str(demo_path), start


def protocol_rows(results: list[dict], settings: EvalSettings, protocols: list[str], demo_start: bool) -> list[dict]:
    """One row of the table (and of the JSON's ``protocols``) per protocol: its summary and episodes."""
    rows = []
    for p in protocols:
        mine = [r for r in results if r["protocol"] == p]
        row = {"protocol": p, "description": settings.describe(p),
               **summarize([r["score"] for r in mine], [r["frames"] for r in mine],
                           [r["reason"] for r in mine], [r["success"] for r in mine]),
               "scores": [r["score"] for r in mine], "frames": [r["frames"] for r in mine],
               "reasons": [r["reason"] for r in mine], "seeds": [r["seed"] for r in mine]}
        if demo_start:
            row["successes"] = [r["success"] for r in mine]
        rows.append(row)
    return rows


def _print_table(ckpt: LoadedCheckpoint, settings: EvalSettings, rows: list[dict], demo_path: str | None,
                 start: int | None, stdout) -> None:
    from curriculum_ppo.emulator import display_name

    policy_mode = "greedy (argmax)" if settings.greedy else "sampled from the policy"
    print(f"{display_name(ckpt.game)}: {ckpt.path} ({ckpt.frames:,} training frames, {ckpt.updates} updates)",
          file=stdout)
    if start is not None:
        ends = "episodes end as in training (life loss, lagging, success), or"
        print(f"start: demo frame {start} of {demo_path}; {ends} at {settings.max_frames:,} frames; "
              f"actions {policy_mode}", file=stdout)
    else:
        print(f"start: game start; episodes end at game over or {settings.max_frames:,} frames; "
              f"actions {policy_mode}", file=stdout)
    print(format_table(rows, start is not None), file=stdout, flush=True)


def _report(ckpt: LoadedCheckpoint, settings: EvalSettings, plan: EvalPlan, rows: list[dict], device,
            demo_path: str | None, start: int | None, elapsed: float) -> dict:
    """The JSON report (``video`` is filled in once the video is written)."""
    return {
        "checkpoint": str(ckpt.path),
        "game": ckpt.game,
        "training_frames": ckpt.frames,
        "training_updates": ckpt.updates,
        "recurrent": ckpt.recurrent,
        "settings": {
            "episodes": settings.episodes, "protocols": plan.protocols, "noop_max": settings.noop_max,
            "sticky": settings.sticky, "epsilon": settings.epsilon, "max_frames": settings.max_frames,
            "envs": min(settings.envs, len(plan.jobs)), "seed": settings.seed, "greedy": settings.greedy,
            "device": str(device), "start": "game" if start is None else {"demo": demo_path, "start_frame": start},
            "end_on_life_loss": bool(plan.factory.atari["end_on_life_loss"]),
            "std": "sample standard deviation (ddof=1)",
        },
        "seeds": plan.seeds,
        "protocols": rows,
        "elapsed_s": round(elapsed, 2),
        "video": None,
    }


def evaluate(checkpoint: str | os.PathLike, settings: EvalSettings, json_out: str | None = None,
             video_out: str | None = None, video_scale: int = 2, quiet: bool = False,
             stdout=None) -> dict:
    """The whole ``curriculum-ppo evaluate`` command; returns the result dict (also written to ``json_out``)."""
    from curriculum_ppo.emulator import display_name
    from curriculum_ppo.device import pick_device

    stdout = stdout or sys.stdout
    settings.validate()
    json_path, video_path = _check_outputs(json_out, video_out, video_scale)
    device = pick_device(settings.device)
    ckpt = load_for_eval(checkpoint, device)
    _check_rom(ckpt, quiet)
    demo_path, start = _demo_start(settings, ckpt)
    plan = build_plan(settings, ckpt.game, ckpt.atari, ckpt.rules, demo_path, start)
    if not quiet:
        where = f"demo frame {start} of {demo_path}" if start is not None else "the game start"
        print(f"evaluate: {display_name(ckpt.game)} checkpoint {ckpt.path} ({ckpt.frames:,} training frames); "
              f"{settings.episodes} episode(s) x {len(plan.protocols)} protocol(s) from {where} on {device}",
              file=sys.stderr, flush=True)
    t0 = time.time()
    results, best = run_episodes(ckpt, plan, settings, device, quiet=quiet)
    elapsed = time.time() - t0
    rows = protocol_rows(results, settings, plan.protocols, demo_start=start is not None)
    _print_table(ckpt, settings, rows, demo_path, start, stdout)
    report = _report(ckpt, settings, plan, rows, device, demo_path, start, elapsed)
    video_error = None
    if video_path is not None and best is not None:
        try:
            info = record_video(plan, best, video_path, scale=video_scale, game=ckpt.game)
        except UserError as exc:  # still write the JSON: the evaluation itself succeeded
            video_error = exc
            report["video"] = {"path": str(video_path), "error": str(exc)}
        else:
            report["video"] = info
            if not quiet:
                print(f"wrote {video_path} (best episode: {info['protocol']} seed {info['seed']}, "
                      f"score {info['score']:g}, {info['video_frames']} video frames) and its contact sheet "
                      f"{info['sheet']}", file=sys.stderr)
    if json_path is not None:
        with atomic_path(json_path, suffix=".json") as tmp:
            tmp.write_text(json.dumps(report, indent=2) + "\n")
        if not quiet:
            print(f"wrote {json_path}", file=sys.stderr)
    if video_error is not None:
        raise video_error
    return report
