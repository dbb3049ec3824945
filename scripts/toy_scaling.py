#!/usr/bin/env python3
"""Exponential vs. polynomial: PPO on a combination lock, from the start vs. with a backward curriculum.

Salimans & Chen (2018) argue that when a reward needs one specific sequence of
N actions, RL from the initial state needs time exponential in N, while
starting episodes from the states of one demonstration and moving the start
backwards needs time about quadratic in N. This script measures it on
:mod:`curriculum_ppo.envs.toy` (N positions, A actions, one right action per
position) with the project's own :class:`~curriculum_ppo.train.Trainer`,
:class:`~curriculum_ppo.curriculum.CurriculumScheduler` and PPO learner -- the
Atari code path, with ``env_kind="toy"`` and the MLP policy:

* ``plain``: ``toy={"demo": False}``: no demo, no scheduler, every episode
  starts at position 0 (as an Atari run with ``--game`` and no ``--demo``);
* ``curriculum``: the demo is the correct sequence; the window of start
  positions starts at the end and moves back one position at a time.

"Solved" = at least 90% of episodes from the REAL start (position 0) open the
lock when the current policy samples its actions (it acts as in training).
This is checked after every PPO update on ``eval_episodes`` separate episodes,
played in lockstep by :func:`curriculum_ppo.envs.toy.batch_success_rate`
(evaluation steps are not counted). The reported cost is the number of
*training* env steps the trainer had consumed at that point. Runs that do not
solve within ``budget`` steps are reported as "not solved within X".

    python scripts/toy_scaling.py                  # full sweep (about 10-15 min on a 2-core CPU)
    python scripts/toy_scaling.py --quick          # about 1-2 min
    python scripts/toy_scaling.py --json scripts/results/toy_scaling.json   # the README's figures

Without ``--json`` the JSON and PNG go to ``runs/bench/toy_scaling/`` (git-ignored); the PNG goes
next to the JSON unless ``--png`` names another path.

The growth fits: ``log(steps) = a + N log b`` (exponential, base b) and
``log(steps) = c + d log N`` (power law, degree d), both least squares on the
per-N median over seeds, for each method and A; both fits are printed for both
methods so the better model can be seen, not assumed.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
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
from bench_common import LoadCheck, prepare_outputs, save_figure, write_json  # noqa: E402
from curriculum_ppo.curriculum import CurriculumConfig, UnstickConfig  # noqa: E402
from curriculum_ppo.envs.toy import batch_success_rate  # noqa: E402
from curriculum_ppo.ppo.learner import PPOConfig  # noqa: E402
from curriculum_ppo.train import TrainConfig, Trainer  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
METHODS = ("plain", "curriculum")


@dataclass
class Settings:
    """Everything the sweep does; ``--quick`` and the test use smaller ones."""

    lengths: dict = field(default_factory=lambda: {2: [2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 24, 32],
                                                   4: [2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 16, 20, 24]})
    """N values per number of actions A."""
    seeds: list = field(default_factory=lambda: [1, 2, 3])
    methods: tuple = METHODS
    budget: int = 60_000
    """Max training env steps per run; a run not solved by then is "not solved within budget"."""
    skip_after_capped: bool = True
    """Once most seeds of a method hit the budget at some N (median not solved), larger N are not run
    for it: every extra action multiplies plain PPO's cost by about A, so they would only burn the budget."""
    num_envs: int = 16
    num_steps: int = 16
    lr: float = 2.5e-3
    num_epochs: int = 4
    num_minibatches: int = 2
    ent_coef: float = 0.01
    gamma: float = 0.99
    norm_adv: bool = False
    """Per-minibatch advantage normalization off: with no reward at all (plain PPO before its first
    success) it scales value-function noise (~1e-7) up to unit advantages, and the policy random-walks
    away from uniform, losing the exploration plain PPO depends on (measured: entropy 0.69 -> 0.1-0.4
    in 30k steps at A=2). Rewards here are 0/1, so no normalization is needed."""
    window: int = 2
    """Curriculum window of start positions (demo frames)."""
    step: int = 1
    """Curriculum step (positions the window moves back at a time)."""
    min_episodes: int = 16
    success_threshold: float = 0.2
    random_start_fraction: float = 0.2
    eval_episodes: int = 200
    solved_rate: float = 0.9
    lock_seed: int | None = None
    """Same lock for all runs; None: the lock code is drawn from the run seed."""
    overlap: bool = False

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["lengths"] = {str(k): v for k, v in self.lengths.items()}
        d["methods"] = list(self.methods)
        return d


QUICK = dict(lengths={2: [2, 4, 6, 8, 10, 12], 4: [2, 3, 4, 5, 6, 8]}, seeds=[1], budget=20_000)


class _ToyTrainer(Trainer):
    """The project's Trainer plus a stop-when-solved check after every update.

    Only additions: an evaluation from the real start in ``_after_update`` (which
    ends the run by lowering ``total_frames`` once solved), no PNG plots at the
    end of a run (``plot_run`` costs ~1-3 s per run, more than a small run's
    training) and no TensorBoard writer (``self.tb = False``; metrics.jsonl is still written).
    """

    def __init__(self, *args, lock: dict, eval_episodes: int, solved_rate: float, eval_seed: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.tb = False
        self._lock, self._eval_episodes, self._solved_rate = lock, eval_episodes, solved_rate
        self._eval_rng = np.random.default_rng(eval_seed)
        self.solved_at: int | None = None
        self.solved_update: int | None = None
        self.curriculum_done_at: int | None = None
        self.last_eval: float = 0.0

    def _logits(self, obs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            logits, _, _ = self.policy(torch.from_numpy(obs).to(self.device))
        return logits.float().cpu().numpy()

    def _after_update(self, stats: dict, num_episodes: int, tick: float) -> None:
        super()._after_update(stats, num_episodes, tick)
        if self.scheduler is not None and self.scheduler.done and self.curriculum_done_at is None:
            self.curriculum_done_at = self.frames
        if self.solved_at is not None:
            return
        self.last_eval = batch_success_rate(self._logits, episodes=self._eval_episodes, rng=self._eval_rng,
                                            **self._lock)
        if self.last_eval >= self._solved_rate:
            self.solved_at, self.solved_update = self.frames, self.updates
            self.config.total_frames = self.frames  # ends the training loop after this update

    def _plots(self) -> None:
        pass


def train_config(method: str, length: int, num_actions: int, seed: int, s: Settings) -> TrainConfig:
    lock_seed = seed if s.lock_seed is None else s.lock_seed
    return TrainConfig(
        env_kind="toy",
        toy={"length": length, "num_actions": num_actions, "lock_seed": lock_seed, "demo": method == "curriculum"},
        arch="mlp", device="cpu", num_envs=s.num_envs, num_workers=0, num_steps=s.num_steps,
        total_frames=s.budget, seed=seed, overlap=s.overlap, torch_threads=1,
        checkpoint_every=10**9, latest_every=10**9, status_every=1e9,
        ppo=PPOConfig(lr=s.lr, num_epochs=s.num_epochs, num_minibatches=s.num_minibatches, ent_coef=s.ent_coef,
                      gamma=s.gamma, norm_adv=s.norm_adv),
        curriculum=CurriculumConfig(window=s.window, step=s.step, min_episodes=s.min_episodes,
                                    success_threshold=s.success_threshold, collapse_threshold=0.0,
                                    collapse_min_episodes=max(s.min_episodes, 512), max_window_episodes=2048,
                                    random_start_fraction=s.random_start_fraction),
        unstick=UnstickConfig(enabled=False),
    )


def run_one(method: str, length: int, num_actions: int, seed: int, s: Settings) -> dict:
    """Train one run until solved or out of budget; return its record."""
    cfg = train_config(method, length, num_actions, seed, s)
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="toy_scaling_") as tmp:
        trainer = _ToyTrainer(cfg, Path(tmp) / "run", quiet=True, lock=dict(
            length=length, num_actions=num_actions, lock_seed=cfg.toy["lock_seed"]),
            eval_episodes=s.eval_episodes, solved_rate=s.solved_rate, eval_seed=seed)
        trainer.train()
    return {"method": method, "A": num_actions, "N": length, "seed": seed,
            "solved": trainer.solved_at is not None, "steps": trainer.solved_at,
            "steps_used": trainer.frames, "updates": trainer.updates, "budget": s.budget,
            "curriculum_done_at": trainer.curriculum_done_at, "final_eval": trainer.last_eval,
            "seconds": round(time.time() - t0, 2)}


def sweep(s: Settings, log=print) -> list[dict]:
    runs = []
    for num_actions, lengths in s.lengths.items():
        for method in s.methods:
            hopeless = None
            for length in lengths:
                if hopeless is not None:
                    runs.append({"method": method, "A": num_actions, "N": length, "seed": None, "solved": False,
                                 "steps": None, "skipped": f"every seed hit the budget at N={hopeless}",
                                 "budget": s.budget})
                    continue
                batch = [run_one(method, length, num_actions, seed, s) for seed in s.seeds]
                runs.extend(batch)
                log(f"A={num_actions} N={length:2d} {method:10s} "
                    + "  ".join(f"{r['steps']:>8d}" if r["solved"] else f"{'>' + str(s.budget):>8s}"
                                for r in batch)
                    + f"   ({sum(r['seconds'] for r in batch):.1f} s)")
                if s.skip_after_capped and 2 * sum(r["solved"] for r in batch) <= len(batch):
                    hopeless = length
    return runs


def summarize(runs: list[dict]) -> list[dict]:
    """One row per (A, method, N): median steps over seeds (None if most seeds were not solved)."""
    rows = {}
    for r in runs:
        rows.setdefault((r["A"], r["method"], r["N"]), []).append(r)
    out = []
    for (a, method, n), rs in sorted(rows.items()):
        if rs[0].get("skipped"):
            out.append({"A": a, "method": method, "N": n, "median": None, "solved": 0, "runs": 0,
                        "note": "skipped: " + rs[0]["skipped"]})
            continue
        steps = sorted(r["steps"] if r["solved"] else math.inf for r in rs)
        med = float(np.median(steps))
        out.append({"A": a, "method": method, "N": n, "median": None if math.isinf(med) else med,
                    "solved": sum(r["solved"] for r in rs), "runs": len(rs),
                    "steps": [r["steps"] for r in rs], "budget": rs[0]["budget"]})
    return out


def random_search_steps(length: int, num_actions: int) -> float:
    """Expected env steps until a uniformly random policy first opens the lock from the start.

    Episodes succeed with probability A**-N and last (1 - A**-N) / (1 - 1/A) steps on average, so
    (Wald) the expected total is (A**N - 1) * A / (A - 1): the exploration cost plain PPO cannot avoid.
    """
    a = float(num_actions)
    return (a ** length - 1.0) * a / (a - 1.0)


def _fit_points(pts: list[tuple[int, float]]) -> dict:
    n = np.array([p[0] for p in pts], float)
    y = np.log(np.array([p[1] for p in pts], float))
    slope_e, icpt_e = np.polyfit(n, y, 1)
    slope_p, icpt_p = np.polyfit(np.log(n), y, 1)
    res_e = float(np.sqrt(np.mean((y - (icpt_e + slope_e * n)) ** 2)))
    res_p = float(np.sqrt(np.mean((y - (icpt_p + slope_p * np.log(n))) ** 2)))
    return {"points": len(pts), "N_range": [int(n.min()), int(n.max())],
            "exp_base": float(math.exp(slope_e)), "exp_rmse_log": res_e,
            "power_degree": float(slope_p), "power_rmse_log": res_p,
            "better": "exponential" if res_e < res_p else "power law"}


def fit(rows: list[dict]) -> dict:
    """Per (A, method): exponential base b (log steps = a + N log b) and power-law degree d
    (log steps = c + d log N), least squares on log(median steps) over the solved lengths; ``tail``
    repeats both fits on the upper half of those lengths (small N are dominated by the fixed cost of
    a few PPO updates, which flattens every curve)."""
    fits = {}
    for a in sorted({r["A"] for r in rows}):
        for method in METHODS:
            pts = [(r["N"], r["median"]) for r in rows if r["A"] == a and r["method"] == method and r["median"]]
            if len(pts) < 3:
                fits[f"A={a} {method}"] = {"points": len(pts)}
                continue
            f = _fit_points(pts)
            tail = pts[len(pts) // 2:]
            if len(tail) >= 3:
                f["tail"] = _fit_points(tail)
            fits[f"A={a} {method}"] = f
    return fits


def table(rows: list[dict]) -> str:
    lines = ["| A | N | plain PPO | curriculum | random policy, 1st success (expected) |", "|---|---|---|---|---|"]
    keys = sorted({(r["A"], r["N"]) for r in rows})
    by = {(r["A"], r["method"], r["N"]): r for r in rows}

    def cell(r):
        if r is None:
            return "-"
        if r.get("note"):
            return "not run (hopeless)"
        if r["median"] is None:
            return f"not solved within {r['budget']:,} ({r['solved']}/{r['runs']} solved)"
        extra = "" if r["solved"] == r["runs"] else f" ({r['solved']}/{r['runs']} solved)"
        return f"{int(r['median']):,}{extra}"

    for a, n in keys:
        lines.append(f"| {a} | {n} | {cell(by.get((a, 'plain', n)))} | {cell(by.get((a, 'curriculum', n)))} "
                     f"| {random_search_steps(n, a):,.0f} |")
    return "\n".join(lines)


def plot(rows: list[dict], runs: list[dict], fits: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5))
    colors = {"plain": "tab:red", "curriculum": "tab:blue"}
    markers = {2: "o", 4: "s"}
    budget = max((r.get("budget") or 0) for r in runs)
    for a in sorted({r["A"] for r in rows}):
        for method in METHODS:
            pts = [r for r in rows if r["A"] == a and r["method"] == method and r["median"]]
            if pts:
                ax.plot([r["N"] for r in pts], [r["median"] for r in pts], marker=markers.get(a, "^"),
                        color=colors[method], linestyle="-" if a == 2 else "--",
                        label=f"{method}, A={a}")
            single = [r for r in runs if r["A"] == a and r["method"] == method and r.get("solved")]
            ax.scatter([r["N"] for r in single], [r["steps"] for r in single], s=8, alpha=0.35,
                       color=colors[method], marker=markers.get(a, "^"))
            capped = [r for r in runs if r["A"] == a and r["method"] == method and r.get("seed") is not None
                      and not r["solved"]]
            if capped:
                ax.scatter([r["N"] for r in capped], [budget] * len(capped), marker="x", color=colors[method],
                           s=30)
    for a in sorted({r["A"] for r in rows}):
        ns = np.arange(min(r["N"] for r in rows if r["A"] == a), max(r["N"] for r in rows if r["A"] == a) + 1)
        ref = np.array([random_search_steps(int(n), a) for n in ns])
        keep = ref <= budget * 30
        ax.plot(ns[keep], ref[keep], color="gray", linewidth=1, linestyle="-" if a == 2 else "--", alpha=0.6,
                label=f"random policy, 1st success, A={a}")
    ax.axhline(budget, color="gray", linewidth=0.8, linestyle=":")
    ax.text(ax.get_xlim()[0], budget * 1.1, f"budget {budget:,} steps (x = not solved)", fontsize=8, color="gray")
    ax.set_yscale("log")
    measured = [r["steps"] for r in runs if r.get("solved")]
    if measured:
        ax.set_ylim(bottom=min(measured) / 3)
    ax.set_xlabel("lock length N (actions that must be right in a row)")
    ax.set_ylabel("env steps until 90% of episodes from the start succeed")
    ax.set_title("PPO on a combination lock: from the start vs. backward curriculum")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    plt.close(fig)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small sweep (~1-2 min)")
    p.add_argument("--json", type=Path, default=None,
                   help="results file (default runs/bench/toy_scaling/toy_scaling.json; the README's figures are "
                        "scripts/results/toy_scaling.json, replaced only when named here)")
    p.add_argument("--png", type=Path, default=None, help="plot (default: next to the JSON, same name)")
    p.add_argument("--budget", type=int, help="max env steps per run")
    p.add_argument("--seeds", type=int, nargs="+")
    p.add_argument("--actions", type=int, nargs="+", help="only these A")
    p.add_argument("--lengths", type=int, nargs="+", help="only these N (of the sweep's, for each A)")
    args = p.parse_args(argv)
    if args.budget is not None and args.budget < 1:
        p.error(f"--budget must be at least 1, got {args.budget}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.json, args.png = prepare_outputs("toy_scaling", args.json, args.png)  # before minutes of training

    s = Settings(**QUICK) if args.quick else Settings()
    if args.budget:
        s.budget = args.budget
    if args.seeds:
        s.seeds = args.seeds
    if args.actions:
        s.lengths = {a: n for a, n in s.lengths.items() if a in args.actions}
    if args.lengths:
        s.lengths = {a: [n for n in ns if n in args.lengths] for a, ns in s.lengths.items()}
    s.lengths = {a: ns for a, ns in s.lengths.items() if ns}
    if not s.lengths:
        raise SystemExit("toy_scaling: error: --actions and --lengths leave no (A, N) of the sweep to run")
    torch.set_num_threads(1)
    load = LoadCheck("toy_scaling", cores_used=1).start()  # one torch thread, envs in the learner's process
    t0 = time.time()
    print(f"budget {s.budget:,} env steps per run; seeds {s.seeds}; steps to solve per seed:", flush=True)
    runs = sweep(s, log=lambda m: print(m, flush=True))
    rows = summarize(runs)
    fits = fit(rows)
    wall = time.time() - t0
    print()
    print(table(rows))
    print()
    for key, f in fits.items():
        if "exp_base" in f:
            for label, g in (("", f), (" tail", f.get("tail"))):
                if g:
                    print(f"{key + label:21s} N {g['N_range'][0]:2d}..{g['N_range'][1]:2d}: exponential base "
                          f"{g['exp_base']:.2f} (rmse {g['exp_rmse_log']:.2f}), power degree {g['power_degree']:.2f} "
                          f"(rmse {g['power_rmse_log']:.2f}) -> {g['better']} fits better")
        else:
            print(f"{key:16s} too few solved lengths to fit ({f['points']})")
    print(f"\nwall time {wall:.0f} s")
    machine_load = load.finish()
    result = {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
              "python": sys.version.split()[0], "torch": torch.__version__, "wall_seconds": round(wall, 1),
              "quick": args.quick, "settings": s.to_dict(), "runs": runs, "summary": rows, "fits": fits,
              "machine_load": machine_load}
    write_json(args.json, result)
    plot(rows, runs, fits, args.png)
    print(f"wrote {args.json} and {args.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
