#!/usr/bin/env python3
"""A lock much longer than the success horizon, solved: the "horizon" success rule against "demo_end".

The combination lock of :mod:`curriculum_ppo.envs.toy` with intermediate rewards
(``reward_every=K``: reaching positions K, 2K, ... and N pays 1) is a game with
several rewards along the way. This script trains it through the project's own
:class:`~curriculum_ppo.train.Trainer`, :class:`~curriculum_ppo.curriculum.CurriculumScheduler`
and PPO learner (``TrainConfig(env_kind="toy", toy={...})``, with every PPO and
curriculum setting of ``scripts/toy_scaling.py``), once under each success rule,
on the same lock and budget:

* ``horizon``: an episode from position t succeeds on reaching the demo's score
  at its first reward event at or after ``t + H``, plays the extra frames and is
  cut as a truncation; what a perfect player needs from any start is at most
  about ``H + K`` steps, whatever N is.
* ``demo_end`` (the original rule): an episode from t succeeds only by opening
  the lock, N - t correct actions in a row.

Two cases per lock length, each with both rules:

* no episode cap that binds (the library's default cap is far above N). The toy
  then shows what the rule changes in how the agent learns: a wrong action ends
  a toy episode at once, so failed episodes are short under both rules, and
  successful ones cost N - t under ``demo_end`` against a bounded stretch plus
  the extra frames under ``horizon``.
* an episode cap (``--caps``) between ``H + K`` and N, as the default cap of
  18,000 frames is on a long Atari demo: under ``demo_end`` the starts more than
  the cap before the lock's end can never succeed, so the curriculum stalls
  there (the trainer's one-line warning names them, and so does this script),
  while the horizon rule is untouched.

Each run stops once the curriculum window's front has reached position 0 *and*
the greedy policy (argmax of the logits, one deterministic episode) opens the
lock from the real start; both are checked after every PPO update. Reported per
run: the env steps (= emulator frames; the toy has no frameskip) until then,
until the window first reached 0 and until the greedy policy first opened the
lock; the length of the episodes started from demo states (all of them, the
successful ones, the successful ones started before N/4); why episodes ended;
the window's front after every move; and the success rate from the real start
of the sampled policy (as it acts in training) at the end. Runs not solved
within ``--budget`` steps are reported as such, with where the window stood.

Step counts vary a lot between seeds, under both rules: when the window reaches
a position the agent never visited, the MLP's output there (its first-layer
weights for that one-hot input were never trained) can be a confident wrong
action, and PPO, which then almost never samples the right one, can take long
to get out.

    python scripts/toy_horizon.py                   # N=64, both cases, 3 seeds (about 6 min on a busy 2-core machine)
    python scripts/toy_horizon.py --quick           # N=64 without a cap, 1 seed (about 1 min)
    python scripts/toy_horizon.py --json scripts/results/toy_horizon.json   # the committed figures

Without ``--json`` the JSON and PNG go to ``runs/bench/toy_horizon/`` (git-ignored); the PNG goes next
to the JSON unless ``--png`` names another path.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # also when a test imports this file
import toy_scaling  # noqa: E402
from bench_common import LoadCheck, prepare_outputs, save_figure, write_json  # noqa: E402
from curriculum_ppo.envs.toy import batch_success_rate, toy_demo  # noqa: E402
from curriculum_ppo.episode_rules import (EpisodeRulesConfig, success_stretches, success_targets,  # noqa: E402
                                         unreachable_message)
from curriculum_ppo.train import Trainer  # noqa: E402

RULES = ("horizon", "demo_end")


@dataclass
class Settings:
    """The comparison; the PPO and curriculum settings are ``toy_scaling.Settings``' (``base``)."""

    lengths: list = field(default_factory=lambda: [64])
    num_actions: int = 2
    reward_every: int = 8
    success_horizon: int = 16
    extra_frames_scale: float = EpisodeRulesConfig.extra_frames_scale
    """After success, ``int(exp(U(0, scale)))`` extra frames (the library default); only the horizon rule
    plays them before the lock opens, since under ``demo_end`` success is the opening, which ends the episode."""
    caps: list = field(default_factory=lambda: [None, 32])
    """Episode caps (``EpisodeRulesConfig.max_episode_frames``), one case each; None: the library default,
    which no toy episode reaches."""
    seeds: list = field(default_factory=lambda: [1, 2, 3])
    rules: tuple = RULES
    budget: int = 250_000
    """Max training env steps per run, the same for both rules."""
    sampled_eval_episodes: int = 200
    base: toy_scaling.Settings = field(default_factory=toy_scaling.Settings)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["rules"] = list(self.rules)
        d["base"] = {k: v for k, v in self.base.to_dict().items()
                     if k not in ("lengths", "seeds", "methods", "budget", "eval_episodes", "solved_rate")}
        return d

    def cases(self) -> list[tuple[int, int | None]]:
        return [(n, cap) for n in self.lengths for cap in self.caps]


QUICK = dict(caps=[None], seeds=[1])


class _HorizonTrainer(toy_scaling._ToyTrainer):
    """toy_scaling's trainer (no plots, no TensorBoard) with this script's stop rule and episode log.

    After every update: has the window's front reached position 0, and does the greedy policy open the
    lock from the real start? Once both hold the run ends. Every finished episode's length, start and
    end reason is kept until then.
    """

    def __init__(self, *args, progress=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.window_at_zero: int | None = None
        self.greedy_opens_at: int | None = None
        self.episodes: list[tuple[int, int | None, str, bool]] = []  # (frames, start frame, end reason, success)
        self._progress, self._last_print = progress, time.time()
        self.front_log: list[list[int]] = []
        """``[steps, window front]`` after every update that moved the window (and the first)."""

    def _collect(self, policy, buffers, hidden):
        finished, hidden = super()._collect(policy, buffers, hidden)
        if self.solved_at is None:
            self.episodes += [(int(e["frames"]), e.get("start_frame"), str(e.get("reason")), bool(e.get("success")))
                              for e in finished]
        return finished, hidden

    def _after_update(self, stats: dict, num_episodes: int, tick: float) -> None:
        Trainer._after_update(self, stats, num_episodes, tick)
        if self.solved_at is not None:
            return
        if not self.front_log or self.front_log[-1][1] != self.scheduler.start_frame:
            self.front_log.append([self.frames, self.scheduler.start_frame])
        if self.scheduler.done and self.curriculum_done_at is None:
            self.curriculum_done_at = self.frames
        if self.scheduler.start_frame == 0 and self.window_at_zero is None:
            self.window_at_zero = self.frames
        opens = batch_success_rate(self._logits, episodes=1, deterministic=True, **self._lock) == 1.0
        if opens and self.greedy_opens_at is None:
            self.greedy_opens_at = self.frames
        if opens and self.scheduler.start_frame == 0:
            self.solved_at, self.solved_update = self.frames, self.updates
            self.config.total_frames = self.frames  # ends the training loop after this update
        if self._progress is not None and time.time() - self._last_print >= 20:
            self._last_print = time.time()
            self._progress(f"    ... {self.frames:,} steps, window front at {self.scheduler.start_frame}")


def lock_settings(length: int, s: Settings, rule: str, cap: int | None = None) -> dict:
    """``TrainConfig.toy`` of one run (its ``lock_seed`` comes from the run's seed, as in toy_scaling)."""
    rules = {"success_rule": rule, "success_horizon": s.success_horizon, "extra_frames_scale": s.extra_frames_scale}
    if cap is not None:
        rules["max_episode_frames"] = cap
    return {"length": length, "num_actions": s.num_actions, "reward_every": s.reward_every, "rules": rules}


def _lengths(xs: list[int]) -> dict:
    if not xs:
        return {"episodes": 0, "mean": None, "p95": None}
    a = np.asarray(xs, float)
    return {"episodes": len(xs), "mean": round(float(a.mean()), 2), "p95": float(np.percentile(a, 95))}


def run_one(rule: str, length: int, seed: int, s: Settings, cap: int | None = None, log=None) -> dict:
    """Train one run until solved (see module doc) or out of budget; return its record."""
    base = dataclasses.replace(s.base, budget=s.budget)
    cfg = toy_scaling.train_config("curriculum", length, s.num_actions, seed, base)
    cfg.toy.update(lock_settings(length, s, rule, cap))
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="toy_horizon_") as tmp:
        trainer = _HorizonTrainer(cfg, Path(tmp) / "run", quiet=True, progress=log, lock=dict(
            length=length, num_actions=s.num_actions, lock_seed=cfg.toy["lock_seed"]),
            eval_episodes=s.sampled_eval_episodes, solved_rate=1.0, eval_seed=seed)
        trainer.train()
    sampled = batch_success_rate(trainer._logits, episodes=s.sampled_eval_episodes,
                                 rng=np.random.default_rng(seed), **trainer._lock)
    demo_start = [f for f, start, _, _ in trainer.episodes if start is not None]
    won = [(f, start) for f, start, _, success in trainer.episodes if start is not None and success]
    far = length // 4  # starts before N/4: where demo_end asks for 3N/4 more correct actions
    return {"rule": rule, "N": length, "cap": cap, "seed": seed, "solved": trainer.solved_at is not None,
            "steps": trainer.solved_at, "steps_used": trainer.frames, "updates": trainer.updates,
            "budget": s.budget, "window_at_zero": trainer.window_at_zero,
            "greedy_opens_at": trainer.greedy_opens_at, "curriculum_done_at": trainer.curriculum_done_at,
            "window_front_at_end": trainer.scheduler.start_frame, "window_front": trainer.front_log,
            "episode_length_demo_starts": _lengths(demo_start),
            "episode_length_demo_starts_successful": _lengths([f for f, _ in won]),
            "far_starts_below": far,
            "episode_length_far_starts_successful": _lengths([f for f, start in won if start < far]),
            "episode_length_all": _lengths([f for f, _, _, _ in trainer.episodes]),
            "episode_ends": dict(sorted(collections.Counter(r for _, _, r, _ in trainer.episodes).items())),
            "sampled_success_from_start": sampled, "seconds": round(time.time() - t0, 2)}


def demo_stretches(length: int, s: Settings, rule: str, cap: int | None = None) -> dict:
    """What the rule asks of a perfect player: the frames from each start to its target, over all starts,
    and the trainer's warning when some start can never succeed under the cap."""
    cum = toy_demo(length, s.num_actions, 0, s.reward_every)["cumulative_return"]
    rules = EpisodeRulesConfig(**lock_settings(length, s, rule, cap)["rules"])
    stretch = success_stretches(cum, rules)[:length]
    return {"max": int(stretch.max()), "mean": round(float(stretch.mean()), 2),
            "target_of_start_0": int(success_targets(cum, rules)[0]),
            "unreachable": unreachable_message(cum, rules)}


def _fmt(x) -> str:
    return "-" if x is None else f"{int(x):,}"


def _median(values: list) -> float | None:
    """Median where None counts as "not reached" (above everything); None if most are None."""
    if not values:
        return None
    m = float(np.median(sorted(np.inf if v is None else v for v in values)))
    return None if np.isinf(m) else m


def _mean_of(rs: list[dict], key: str, stat: str = "mean") -> float | None:
    """Mean over runs of one episode-length statistic (runs without such episodes left out)."""
    vals = [r[key][stat] for r in rs if r[key][stat] is not None]
    return round(float(np.mean(vals)), 2) if vals else None


def summarize(runs: list[dict], s: Settings) -> list[dict]:
    """One row per (N, cap, rule): step counts are medians over seeds (None when most seeds never got
    there), episode lengths means over seeds."""
    rows = []
    for length, cap in s.cases():
        for rule in s.rules:
            rs = [r for r in runs if r["N"] == length and r["cap"] == cap and r["rule"] == rule]
            if not rs:
                continue
            rows.append({"N": length, "cap": cap, "rule": rule, "runs": len(rs),
                         "solved": sum(r["solved"] for r in rs),
                         "steps_median": _median([r["steps"] for r in rs]), "steps": [r["steps"] for r in rs],
                         "window_at_zero_median": _median([r["window_at_zero"] for r in rs]),
                         "greedy_opens_at_median": _median([r["greedy_opens_at"] for r in rs]),
                         "episode_length_demo_starts_mean": _mean_of(rs, "episode_length_demo_starts"),
                         "episode_length_demo_starts_p95": _mean_of(rs, "episode_length_demo_starts", "p95"),
                         "episode_length_successful_mean": _mean_of(rs, "episode_length_demo_starts_successful"),
                         "episode_length_far_successful_mean": _mean_of(rs, "episode_length_far_starts_successful"),
                         "far_starts_below": rs[0]["far_starts_below"],
                         "window_front_at_end": [r["window_front_at_end"] for r in rs],
                         "sampled_success_from_start": [r["sampled_success_from_start"] for r in rs],
                         "stretch": demo_stretches(length, s, rule, cap), "budget": s.budget})
    return rows


def _num(x, digits: int = 1) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def table(rows: list[dict]) -> str:
    lines = ["| N | episode cap | rule | solved | steps to solved: median (per seed) | window at 0 | greedy opens "
             "| episode length from demo starts: mean (p95) | successful ones | successful, starts < N/4 "
             "| longest stretch a perfect player needs | window front at the end |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        per_seed = ", ".join(_fmt(x) if x is not None else f">{r['budget']:,}" for x in r["steps"])
        lines.append(f"| {r['N']} | {'-' if r['cap'] is None else r['cap']} | {r['rule']} | {r['solved']}/{r['runs']} "
                     f"| {_fmt(r['steps_median'])} ({per_seed}) "
                     f"| {_fmt(r['window_at_zero_median'])} | {_fmt(r['greedy_opens_at_median'])} "
                     f"| {_num(r['episode_length_demo_starts_mean'])} ({_num(r['episode_length_demo_starts_p95'], 0)}) "
                     f"| {_num(r['episode_length_successful_mean'])} | {_num(r['episode_length_far_successful_mean'])} "
                     f"| {r['stretch']['max']} | {', '.join(str(x) for x in r['window_front_at_end'])} |")
    return "\n".join(lines)


def plot(runs: list[dict], s: Settings, path: Path) -> None:
    """One column per case. Top: each run's window front against training steps (a dot where it was
    solved). Bottom: the mean length of each run's successful episodes from demo states, all of them and
    those started before N/4."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = s.cases()
    fig, axes = plt.subplots(2, len(cases), figsize=(5.5 * len(cases), 7.5), squeeze=False,
                             gridspec_kw={"height_ratios": [3, 2]})
    colors = {"horizon": "tab:blue", "demo_end": "tab:red"}
    styles = ["-", "--", ":", "-."]
    for c, (length, cap) in enumerate(cases):
        ax, bx = axes[0][c], axes[1][c]
        rs = [r for r in runs if r["N"] == length and r["cap"] == cap]
        for r in rs:
            style = styles[s.seeds.index(r["seed"]) % len(styles)] if r["seed"] in s.seeds else "-"
            pts = r["window_front"] + [[r["steps_used"], r["window_front"][-1][1]]]
            ax.step([x for x, _ in pts], [y for _, y in pts], where="post", color=colors[r["rule"]],
                    linestyle=style, alpha=0.8, linewidth=1.2, label=f"{r['rule']}, seed {r['seed']}")
            if r["solved"]:
                ax.plot([r["steps"]], [0], "o", color=colors[r["rule"]])
        for rule in s.rules:
            hopeless = demo_stretches(length, s, rule, cap)["unreachable"]
            if hopeless and cap is not None:
                ax.axhline(length - cap, color=colors[rule], linewidth=0.8, linestyle=":")
                ax.text(s.budget, length - cap + 1,
                        f"{rule}: starts < {length - cap} can never succeed", color=colors[rule], fontsize=7,
                        ha="right", va="bottom")
        ax.axvline(s.budget, color="gray", linewidth=0.8, linestyle=":")
        ax.set_title(f"N={length}, " + ("no episode cap that binds" if cap is None else f"episode cap {cap} steps"),
                     fontsize=9)
        ax.set_xlabel("training env steps (dot: window at 0 and the greedy policy opens the lock)", fontsize=8)
        ax.set_ylabel("curriculum window front (lock position)", fontsize=8)
        ax.legend(fontsize=7)
        ax.grid(True, alpha=0.3)
        width = 0.35
        for j, rule in enumerate(s.rules):
            for k, key in enumerate(("episode_length_demo_starts_successful", "episode_length_far_starts_successful")):
                vals = [r[key]["mean"] for r in rs if r["rule"] == rule and r[key]["mean"] is not None]
                x = k + (j - 0.5) * width
                if vals:
                    bx.bar(x, float(np.mean(vals)), width * 0.9, color=colors[rule], label=rule if k == 0 else None)
                    bx.scatter([x] * len(vals), vals, color="black", s=6, zorder=3)
        bx.set_xticks([0, 1], ["all demo starts", f"starts < N/4 = {length // 4}"], fontsize=8)
        bx.set_ylabel("mean length of successful episodes", fontsize=8)
        bx.legend(fontsize=7)
        bx.grid(True, axis="y", alpha=0.3)
    fig.suptitle(f"Lock with a reward every {s.reward_every} positions, A={s.num_actions}, success horizon "
                 f"H={s.success_horizon}: the horizon rule against demo_end, same budget", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
    plt.close(fig)


def _cap(text: str) -> int | None:
    if text.lower() == "none":
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"an episode cap is a number of steps or 'none', got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"an episode cap must be at least 1 step, got {value}")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="no cap, one seed (about 1 min)")
    p.add_argument("--json", type=Path, default=None,
                   help="results file (default runs/bench/toy_horizon/toy_horizon.json; the committed figures are "
                        "scripts/results/toy_horizon.json, replaced only when named here)")
    p.add_argument("--png", type=Path, default=None, help="plot (default: next to the JSON, same name)")
    p.add_argument("--budget", type=int, help="max env steps per run")
    p.add_argument("--seeds", type=int, nargs="+")
    p.add_argument("--lengths", type=int, nargs="+", help="lock lengths N")
    p.add_argument("--rules", nargs="+", choices=RULES)
    p.add_argument("--caps", type=_cap, nargs="+",
                   help="episode caps in steps, one case each ('none': the library default, which never binds)")
    p.add_argument("--reward-every", type=int, help="intermediate reward every K positions")
    p.add_argument("--horizon", type=int, help="success horizon H (frames)")
    p.add_argument("--extra-frames-scale", type=float, help="after success, int(exp(U(0, scale))) extra frames")
    args = p.parse_args(argv)
    for name in ("budget", "reward_every", "horizon"):
        value = getattr(args, name)
        if value is not None and value < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    if args.lengths and min(args.lengths) < 1:
        p.error(f"--lengths must be at least 1, got {min(args.lengths)}")
    if args.extra_frames_scale is not None and not args.extra_frames_scale >= 0:
        p.error(f"--extra-frames-scale must be >= 0, got {args.extra_frames_scale}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.json, args.png = prepare_outputs("toy_horizon", args.json, args.png)  # before minutes of training

    s = Settings(**QUICK) if args.quick else Settings()
    for name, attr in (("budget", "budget"), ("seeds", "seeds"), ("lengths", "lengths"), ("rules", "rules"),
                       ("caps", "caps"), ("reward_every", "reward_every"), ("horizon", "success_horizon"),
                       ("extra_frames_scale", "extra_frames_scale")):
        if getattr(args, name) is not None:
            setattr(s, attr, getattr(args, name))
    s.rules = tuple(s.rules)
    torch.set_num_threads(1)
    load = LoadCheck("toy_horizon", cores_used=1).start()  # one torch thread, envs in the learner's process
    t0 = time.time()
    print(f"A={s.num_actions}, reward every {s.reward_every} positions, H={s.success_horizon}, extra frames scale "
          f"{s.extra_frames_scale:g}; budget {s.budget:,} env steps per run; seeds {s.seeds}", flush=True)
    for length, cap in s.cases():
        for rule in s.rules:
            hopeless = demo_stretches(length, s, rule, cap)["unreachable"]
            if hopeless:
                print(f"note: N={length} cap {cap} {rule}: {hopeless}", flush=True)
    runs = []
    for length, cap in s.cases():
        for rule in s.rules:
            for seed in s.seeds:
                r = run_one(rule, length, seed, s, cap, log=lambda m: print(m, flush=True))
                runs.append(r)
                ep = r["episode_length_demo_starts"]
                print(f"N={length:3d} cap {'-' if cap is None else cap} {rule:8s} seed {seed}: "
                      + (f"solved at {r['steps']:,} steps" if r["solved"] else
                         f"not solved within {s.budget:,} (window front at {r['window_front_at_end']})")
                      + f"; window at 0: {_fmt(r['window_at_zero'])}, greedy opens: {_fmt(r['greedy_opens_at'])}; "
                      f"demo-start episodes {ep['episodes']:,}, mean length {ep['mean']} (p95 {ep['p95']}); "
                      f"{r['seconds']:.0f} s", flush=True)
    rows = summarize(runs, s)
    wall = time.time() - t0
    print()
    print(table(rows))
    print(f"\nwall time {wall:.0f} s")
    machine_load = load.finish()
    result = {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
              "python": sys.version.split()[0], "torch": torch.__version__, "wall_seconds": round(wall, 1),
              "quick": args.quick, "settings": s.to_dict(), "runs": runs, "summary": rows,
              "machine_load": machine_load}
    write_json(args.json, result)
    plot(runs, s, args.png)
    print(f"wrote {args.json} and {args.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
