#!/usr/bin/env python3
"""What one demo-start episode costs under each success rule, measured with oracle agents on a long demo.

The ``"horizon"`` success rule (:mod:`curriculum_ppo.episode_rules`) should bound the frames a
successful episode needs, whatever is left of the demo, while the original ``"demo_end"`` rule
makes an episode play everything that is left. Three agents that need no learning show it, on
the real emulator at frameskip 1:

* **replay** plays the demo's own actions from the start frame (NOOP once they run out, during
  the extra frames after success). It ties the demo wherever the episode cap lets it, so it must
  succeed from every start, except where the rule says no episode can (``unreachable_message``),
  and it must succeed exactly when the demo itself reached the target: after
  ``success_stretches[start]`` frames;
* **noop** stands still: it must never succeed; **random** presses uniformly random actions: it
  must succeed, from every start, in fewer episodes than the curriculum's move-back rate (20%),
  so random play never moves the curriculum back. Random play *can* tie a demo by luck where the
  demo scored slowly, which standing still cannot. Both are judged from the starts where the
  demo needed at least ``--decided-frames`` frames to reach its target (closer to it, what the
  demo did may already be under way at the start and finish without control: a ball about to
  hit a brick).

Every episode restores the demo at its start frame (``Demo.restore``), feeds
``DemoEpisodeTracker.step(frames_elapsed, score_gain)`` after every frame, and ends as training
ends it: on a lost life (or game over), or when the tracker truncates it. Start frames lie near
the demo's start, in its middle and near its end (evenly spread in each region). Each rule is run
with every agent: ``horizon`` (default ``--success-horizon`` and ``--max-episode-frames``),
``demo_end`` with the same cap, and ``demo_end`` without a cap, to show the growth the cap hides.

The table gives, per rule, agent and region, the successes, the mean and 95th-percentile episode
length (extra frames after success included) and the replaying agent's frames to success; the
JSON also holds every episode and the checks above. The exit status is 1 when a check fails.

    python scripts/bench_episode_cost.py                 # the long Breakout demo (made if missing)
    python scripts/bench_episode_cost.py --demo my.h5    # any demo
    python scripts/bench_episode_cost.py --quick         # 2 starts per region, 2 random episodes each
    python scripts/bench_episode_cost.py --json scripts/results/episode_cost.json
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from bench_common import LoadCheck, default_output, non_negative_int, positive_int, write_json  # scripts/ is on sys.path when a script runs
from bench_learning import cpu_model
from curriculum_ppo.atomic import check_destination
from curriculum_ppo.curriculum import CurriculumConfig
from curriculum_ppo.demo.store import Demo, load_demo
from curriculum_ppo.emulator import Emulator, ale_version
from curriculum_ppo.episode_rules import (
    DemoEpisodeTracker,
    EpisodeRulesConfig,
    success_stretches,
    unreachable_message,
    unreachable_starts,
)
from curriculum_ppo.errors import UserError

SCRIPT = "episode_cost"
AGENTS = ("replay", "noop", "random")
REGIONS = {"start": (0.0, 0.08), "middle": (0.46, 0.54), "end": (0.90, 0.98)}
"""Where start frames are taken, as fractions of the demo's length."""
UNCAPPED = 10**12
"""``max_episode_frames`` of the uncapped rule: more than any demo."""


# -- what is measured (pure) ----------------------------------------------------------------------
def rule_variants(horizon: int, cap: int) -> dict[str, EpisodeRulesConfig]:
    """The rules compared: the horizon rule and the original rule under the cap, and the original uncapped."""
    return {
        "horizon": EpisodeRulesConfig(success_rule="horizon", success_horizon=horizon, max_episode_frames=cap),
        "demo_end": EpisodeRulesConfig(success_rule="demo_end", success_horizon=horizon, max_episode_frames=cap),
        "demo_end_uncapped": EpisodeRulesConfig(success_rule="demo_end", success_horizon=horizon,
                                                max_episode_frames=UNCAPPED),
    }


def start_frames(demo_length: int, per_region: int) -> dict[str, list[int]]:
    """``per_region`` start frames evenly spread over each region of :data:`REGIONS`."""
    starts = {}
    for region, (lo, hi) in REGIONS.items():
        frames = np.linspace(lo * demo_length, hi * demo_length, per_region).round().astype(int)
        starts[region] = sorted({int(min(max(f, 0), demo_length - 1)) for f in frames})
    return starts


def percentile95(values) -> float | None:
    return float(np.percentile(values, 95)) if len(values) else None


def mean(values) -> float | None:
    return float(np.mean(values)) if len(values) else None


# -- the agents -----------------------------------------------------------------------------------
class ReplayAgent:
    """The demo's own action at each demo frame; NOOP once the demo has no more."""

    def __init__(self, demo: Demo, noop: int):
        self.actions, self.noop = demo.actions, noop

    def act(self, frame: int) -> int:
        return int(self.actions[frame]) if frame < len(self.actions) else self.noop


class NoopAgent:
    def __init__(self, noop: int):
        self.noop = noop

    def act(self, frame: int) -> int:
        return self.noop


class RandomAgent:
    def __init__(self, num_actions: int, rng: np.random.Generator):
        self.num_actions, self.rng = num_actions, rng

    def act(self, frame: int) -> int:
        return int(self.rng.integers(self.num_actions))


# -- one episode ----------------------------------------------------------------------------------
@dataclass
class Episode:
    rule: str
    agent: str
    region: str
    start: int
    frames: int
    success: bool
    success_frame: int | None
    reason: str
    score: float
    target_frame: int
    target_score: float


def play_episode(demo: Demo, emu: Emulator, cum: np.ndarray, start: int, rules: EpisodeRulesConfig, agent,
                 rng: np.random.Generator) -> tuple[int, bool, int | None, str, float, DemoEpisodeTracker]:
    """Play one episode from demo frame ``start`` at frameskip 1, ended as training ends it.

    ``rng`` draws the tracker's extra frames after success. Returns (frames, success, frames to
    success, why it ended, score, tracker).
    """
    demo.restore(emu, start)
    tracker = DemoEpisodeTracker(cum, start, rules, rng)
    lives = emu.lives()
    score, frames = 0.0, 0
    while True:
        score += emu.step(agent.act(start + frames))
        frames += 1
        verdict = tracker.step(frames, score)
        if emu.game_over():
            reason = "game_over"
            break
        if emu.lives() < lives:
            reason = "life_lost"
            break
        if verdict.truncated:
            reason = str(verdict.reason)
            break
    return frames, tracker.success, tracker.success_frame, reason, score, tracker


def run(demo: Demo, rules: dict[str, EpisodeRulesConfig], starts: dict[str, list[int]], random_episodes: int,
        seed: int, log=print) -> list[Episode]:
    emu = demo.make_emulator()
    cum = demo.cumulative_return
    noop = emu.action_index("NOOP")
    episodes: list[Episode] = []
    for rule_name, config in rules.items():
        t0 = time.perf_counter()
        frames_played = 0
        for region, frames in starts.items():
            for start in frames:
                plan = [("replay", ReplayAgent(demo, noop), 0), ("noop", NoopAgent(noop), 0)]
                for k in range(random_episodes):
                    plan.append(("random", RandomAgent(emu.num_actions, np.random.default_rng([seed, start, k])), k))
                for agent_name, agent, k in plan:
                    n, success, success_frame, reason, score, tracker = play_episode(
                        demo, emu, cum, start, config, agent, np.random.default_rng([seed, start, k, 1]))
                    frames_played += n
                    episodes.append(Episode(rule_name, agent_name, region, start, n, bool(success), success_frame,
                                            reason, float(score), tracker.target_frame, tracker.target_score))
        wall = time.perf_counter() - t0
        log(f"  {rule_name}: {frames_played:,} frames in {wall:.1f} s ({frames_played / max(wall, 1e-9):,.0f} frames/s)")
    return episodes


# -- summary and checks (pure) --------------------------------------------------------------------
def summarize(episodes: list[Episode], demo_length: int) -> list[dict]:
    rows = []
    keys = sorted({(e.rule, e.agent, e.region) for e in episodes},
                  key=lambda k: (k[0], AGENTS.index(k[1]), list(REGIONS).index(k[2])))
    for rule, agent, region in keys:
        group = [e for e in episodes if (e.rule, e.agent, e.region) == (rule, agent, region)]
        lengths = [e.frames for e in group]
        to_success = [e.success_frame for e in group if e.success_frame is not None]
        rows.append({
            "rule": rule, "agent": agent, "region": region,
            "starts": len({e.start for e in group}), "episodes": len(group),
            "successes": sum(e.success for e in group),
            "mean_frames": mean(lengths), "p95_frames": percentile95(lengths), "max_frames": max(lengths),
            "mean_frames_to_success": mean(to_success), "p95_frames_to_success": percentile95(to_success),
            "mean_demo_left": mean([demo_length - e.start for e in group]),
            "reasons": {r: sum(e.reason == r for e in group) for r in sorted({e.reason for e in group})},
        })
    return rows


def checks(episodes: list[Episode], demo: Demo, rules: dict[str, EpisodeRulesConfig],
           decided_frames: int = 300, threshold: float = CurriculumConfig().success_threshold) -> dict[str, dict]:
    """The oracle checks: each is ``{"ok": bool, "detail": str}``.

    The standing and random agents are judged only from starts where the demo needed at least
    ``decided_frames`` to reach its target: closer to it, what the demo did may already be under
    way at the start (a ball about to hit a brick, a jump in the air) and finish without control,
    so any agent ties it there. Those episodes are still counted in the table and the JSON.

    Standing still must never succeed: that is the trap a sound rule closes. Random play can tie
    the demo by luck where the demo itself scored slowly (a random paddle can send the ball into a
    brick the demo's player steered around), so its check is that it succeeds, from every start,
    in fewer than ``threshold`` of its episodes (the curriculum's move-back rate): random play
    would never move the curriculum's window back.
    """
    cum = demo.cumulative_return
    out: dict[str, dict] = {}

    def record(name: str, bad: list[str], good: str) -> None:
        out[name] = {"ok": not bad, "detail": "; ".join(bad[:5]) + (f" (+{len(bad) - 5} more)" if len(bad) > 5 else "")
                     if bad else good}

    for rule_name, config in rules.items():
        stretch = success_stretches(cum, config)
        unreachable = set(int(t) for t in unreachable_starts(cum, config))
        replays = [e for e in episodes if e.rule == rule_name and e.agent == "replay"]
        bad = []
        for e in replays:
            if e.start in unreachable:
                if e.success:
                    bad.append(f"start {e.start} succeeded though the rule calls it unreachable")
            elif not e.success:
                bad.append(f"start {e.start} failed ({e.reason} after {e.frames} frames)")
            elif e.success_frame != int(stretch[e.start]):
                bad.append(f"start {e.start} succeeded after {e.success_frame} frames, the demo took {int(stretch[e.start])}")
        reachable = sum(e.start not in unreachable for e in replays)
        record(f"{rule_name}: replay succeeds where reachable", bad,
               f"{reachable} of {len(replays)} starts reachable; each succeeded exactly when the demo reached its "
               f"target; the other {len(replays) - reachable} failed, as the rule predicts")
        noops = [e for e in episodes if e.rule == rule_name and e.agent == "noop"]
        judged = [e for e in noops if stretch[e.start] >= decided_frames]
        short = [e for e in noops if stretch[e.start] < decided_frames]
        note = (f"; of {len(short)} episode(s) from a start the demo tied within {decided_frames} frames, "
                f"{sum(e.success for e in short)} succeeded (not judged)") if short else ""
        record(f"{rule_name}: noop never succeeds",
               [f"start {e.start} succeeded after {e.success_frame} frames (the demo needed {int(stretch[e.start])})"
                for e in judged if e.success], f"0 of {len(judged)} episodes succeeded{note}")

        randoms = [e for e in episodes if e.rule == rule_name and e.agent == "random"]
        rates = {}
        for e in randoms:
            if stretch[e.start] >= decided_frames:
                wins, total = rates.get(e.start, (0, 0))
                rates[e.start] = (wins + e.success, total + 1)
        worst = max(rates.items(), key=lambda item: item[1][0] / item[1][1], default=None)
        wins = sum(w for w, _ in rates.values())
        episodes_judged = sum(n for _, n in rates.values())
        record(f"{rule_name}: random succeeds too rarely to move the curriculum",
               [f"start {t}: {w} of {n} episodes succeeded (the curriculum moves back at {threshold:.0%})"
                for t, (w, n) in rates.items() if w / n >= threshold],
               f"{wins} of {episodes_judged} episodes succeeded"
               + (f"; at most {worst[1][0]} of {worst[1][1]} from one start ({worst[0]}), under the curriculum's "
                  f"{threshold:.0%}" if wins else ""))

    for rule_name in ("horizon", "demo_end_uncapped"):
        if rule_name not in rules:
            continue
        failed = [e for e in episodes if e.rule == rule_name and e.agent == "replay" and not e.success]
        record(f"{rule_name}: replay succeeds from every start", [f"start {e.start} failed ({e.reason})" for e in failed],
               "every start succeeded")

    if "horizon" in rules:
        config = rules["horizon"]
        bound = int(success_stretches(cum, config).max())
        extra = int(math.exp(config.extra_frames_scale))
        replays = [e for e in episodes if e.rule == "horizon" and e.agent == "replay"]
        over = [f"start {e.start}: {e.frames} frames" for e in replays
                if e.success_frame is None or e.success_frame > bound or e.frames > bound + extra]
        events = np.flatnonzero(demo.rewards > 0)
        longest_gap = int(np.diff(np.concatenate([[-1], events, [len(demo)]])).max())
        limit = config.success_horizon + longest_gap
        if bound > limit:
            over.append(f"a start needs {bound:,} frames, over H + the longest reward-free gap = {limit:,}")
        record("horizon: replay episode length bounded, whatever is left of the demo", over,
               f"every replay episode reached success within {bound:,} frames (the longest stretch any start of this "
               f"demo needs, at most H + the longest reward-free gap = {config.success_horizon:,} + {longest_gap:,}) "
               f"and ended within {bound + extra:,} (that plus at most e^{config.extra_frames_scale:g} = {extra:,} "
               f"extra frames)")
    return out


def random_by_start(episodes: list[Episode]) -> dict[str, dict[str, dict]]:
    """Per rule and start frame: the random agent's episodes, successes and mean length (the JSON keeps
    every replay and noop episode, and these totals of the many random ones)."""
    out: dict[str, dict[str, dict]] = {}
    for e in episodes:
        if e.agent != "random":
            continue
        entry = out.setdefault(e.rule, {}).setdefault(str(e.start), {"episodes": 0, "successes": 0, "frames": 0})
        entry["episodes"] += 1
        entry["successes"] += int(e.success)
        entry["frames"] += e.frames
    for per_start in out.values():
        for entry in per_start.values():
            entry["mean_frames"] = entry.pop("frames") / entry["episodes"]
    return out


def growth(rows: list[dict]) -> dict[str, float | None]:
    """Per rule: the replaying agent's mean frames to success near the start over that near the end."""
    out = {}
    for rule in sorted({r["rule"] for r in rows}):
        by_region = {r["region"]: r["mean_frames_to_success"] for r in rows if r["rule"] == rule and r["agent"] == "replay"}
        first, last = by_region.get("start"), by_region.get("end")
        out[rule] = first / last if first is not None and last else None
    return out


# -- printing -------------------------------------------------------------------------------------
def _num(value, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def print_table(rows: list[dict], rules: dict[str, EpisodeRulesConfig]) -> None:
    header = (f"{'agent':<7} {'region':<7} {'start frames':>14} {'succ':>7} {'mean len':>9} {'p95 len':>9} "
              f"{'mean to succ':>13} {'p95 to succ':>12} {'demo left':>10}  ended by")
    for rule, config in rules.items():
        cap = "no cap" if config.max_episode_frames >= UNCAPPED else f"cap {config.max_episode_frames:,}"
        what = f"H = {config.success_horizon:,}, " if config.success_rule == "horizon" else ""
        print(f"\n{rule} ({config.success_rule} rule, {what}{cap})")
        print(header)
        for r in rows:
            if r["rule"] != rule:
                continue
            reasons = ", ".join(f"{k} {v}" for k, v in r["reasons"].items())
            print(f"{r['agent']:<7} {r['region']:<7} {r['starts']:>14} {r['successes']:>3}/{r['episodes']:<3} "
                  f"{_num(r['mean_frames']):>9} {_num(r['p95_frames']):>9} {_num(r['mean_frames_to_success']):>13} "
                  f"{_num(r['p95_frames_to_success']):>12} {_num(r['mean_demo_left']):>10}  {reasons}")


# -- main -----------------------------------------------------------------------------------------

def _shown(path: Path | None) -> str | None:
    """``path`` relative to the checkout when it lies inside it (so a committed JSON names no machine's paths)."""
    if path is None:
        return None
    root = Path(__file__).resolve().parent.parent
    try:
        return str(Path(path).resolve().relative_to(root))
    except ValueError:
        return str(path)


def load_or_make_demo(path: Path | None, log) -> Demo:
    if path is not None:
        return load_demo(path)
    from make_long_demo import OUT_DIR_NAME, Settings, make_long_demo
    from bench_common import bench_dir

    demo_path, _ = make_long_demo(bench_dir(OUT_DIR_NAME), Settings(), log=log)
    return load_demo(demo_path)


def main(argv: list[str] | None = None) -> int:
    defaults = EpisodeRulesConfig()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", type=Path, help="demo file (default: the long Breakout demo of make_long_demo.py, "
                                                  "made in runs/bench/long_demo/ if missing)")
    parser.add_argument("--quick", action="store_true", help="2 starts per region and 2 random episodes per start")
    parser.add_argument("--starts-per-region", type=positive_int, help="start frames per region (default 7; --quick: 2)")
    parser.add_argument("--random-episodes", type=non_negative_int,
                        help="random-agent episodes per start (default 20; --quick: 2)")
    parser.add_argument("--success-horizon", type=positive_int, default=defaults.success_horizon,
                        help="H of the horizon rule (default %(default)s)")
    parser.add_argument("--max-episode-frames", type=positive_int, default=defaults.max_episode_frames,
                        help="episode cap of the capped rules (default %(default)s)")
    parser.add_argument("--decided-frames", type=non_negative_int, default=300,
                        help="judge the standing and random agents only from starts where the demo needed at least "
                             "this many frames to tie its target (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="results file (default runs/bench/episode_cost/episode_cost.json)")
    args = parser.parse_args(argv)
    per_region = args.starts_per_region or (2 if args.quick else 7)
    random_episodes = args.random_episodes if args.random_episodes is not None else (2 if args.quick else 20)

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    try:
        json_path = check_destination(args.json, "--json") if args.json else default_output(SCRIPT, "episode_cost.json")
        demo = load_or_make_demo(args.demo, log)
        if len(demo) < 2:
            raise UserError(f"{demo.path} has {len(demo)} frames; the benchmark needs a demo of at least 2")
        rules = rule_variants(args.success_horizon, args.max_episode_frames)
        starts = start_frames(len(demo), per_region)
        cum = demo.cumulative_return
        messages = {name: unreachable_message(cum, config) for name, config in rules.items()}
        log(f"{demo.path}: {demo.game}, {len(demo):,} frames, return {demo.total_return:g}, "
            f"{len(demo.reward_events())} reward events")
        load = LoadCheck(SCRIPT, cores_used=1).start()
        t0 = time.perf_counter()
        episodes = run(demo, rules, starts, random_episodes, args.seed, log=log)
        wall = time.perf_counter() - t0
        load_record = load.finish()
    except UserError as exc:
        raise SystemExit(f"bench_episode_cost: error: {exc}") from None

    rows = summarize(episodes, len(demo))
    results_checks = checks(episodes, demo, rules, args.decided_frames)
    results = {
        "demo": {"path": _shown(demo.path), "game": demo.game, "frames": len(demo), "total_return": demo.total_return,
                 "reward_events": len(demo.reward_events()), "lives_lost": len(demo.life_losses()),
                 "source": demo.attrs.get("source"), "source_detail": demo.attrs.get("source_detail")},
        "rules": {name: {**asdict(config), "max_episode_frames": None if config.max_episode_frames >= UNCAPPED
                         else config.max_episode_frames} for name, config in rules.items()},
        "unreachable_message": messages,
        "starts": starts,
        "random_episodes_per_start": random_episodes,
        "seed": args.seed,
        "decided_frames": args.decided_frames,
        "summary": rows,
        "replay_growth_start_over_end": growth(rows),
        "checks": results_checks,
        "all_checks_ok": all(c["ok"] for c in results_checks.values()),
        "episodes": [asdict(e) for e in episodes if e.agent != "random"],
        "random_by_start": random_by_start(episodes),
        "frames_played": sum(e.frames for e in episodes),
        "wall_s": wall,
        "machine": {"cpu": cpu_model(), "platform": platform.platform(), "ale_py": ale_version(), "load": load_record},
    }
    try:
        write_json(json_path, results)
    except UserError as exc:
        raise SystemExit(f"bench_episode_cost: error: {exc}") from None

    print_table(rows, rules)
    print()
    for name, message in messages.items():
        print(f"unreachable ({name}): {message or 'none: every start can succeed within the cap'}")
    for rule, ratio in results["replay_growth_start_over_end"].items():
        value = f"{ratio:.2f}x" if ratio is not None else "n/a (no replay success in one of the regions)"
        print(f"replay frames to success, near the start / near the end ({rule}): {value}")
    print()
    for name, check in results_checks.items():
        print(f"{'ok  ' if check['ok'] else 'FAIL'} {name}: {check['detail']}")
    print(f"\n{results['frames_played']:,} frames in {wall:.0f} s on {cpu_model()}; results written to {json_path}")
    if not results["all_checks_ok"]:
        print("bench_episode_cost: an oracle check failed (see FAIL above)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
