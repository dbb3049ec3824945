"""The ablation's report: per variant the median and range over seeds of each figure, a table and a PNG.

Built from the run dirs alone (:func:`ablation_runs.run_record`), so ``--report-only`` and a
re-run that trains nothing give the same report.
"""

from __future__ import annotations

import os
import platform
import shlex
import statistics
import sys
from pathlib import Path

import bench_learning
from ablation_runs import DemoInfo, Run, Variant, eval_cap, now, run_record
from bench_common import save_figure, write_json

FIGURES = ("frames_to_start_frame_0", "minutes_to_start_frame_0", "frames_to_goal", "minutes_to_goal",
           "cost_per_demo_frame", "final_start_frame", "frames", "minutes", "eval_mean", "eval_ge_demo_return")
"""The per-run figures whose median and range over seeds each variant's summary gives."""


def spread(values: list) -> dict:
    """Median, range and count of the values that are there (a seed that never got there has None)."""
    present = [v for v in values if v is not None]
    if not present:
        return {"median": None, "min": None, "max": None, "n": 0}
    return {"median": statistics.median(present), "min": min(present), "max": max(present), "n": len(present)}


def variant_summary(records: list[dict]) -> dict:
    summary = {"seeds": len(records), "seeds_reached_goal": sum(r["reached_goal"] for r in records),
               "seeds_goal_rule_fired": sum(r["frames_to_goal"] is not None for r in records),
               "seeds_reached_start_frame_0": sum(r["frames_to_start_frame_0"] is not None for r in records),
               "seeds_finished": sum(r["status"] == "finished" for r in records)}
    return {**summary, **{figure: spread([r[figure] for r in records]) for figure in FIGURES}}


def build_report(variants: list[Variant], demo: DemoInfo, args, out_dir: Path, protocols: tuple[str, ...]) -> dict:
    report = {
        "script": "ablate_learning", "date": now(), "command": shlex.join(sys.argv), "machine": platform.platform(),
        "cpu": bench_learning.cpu_model(), "cpus": os.cpu_count(),
        "demo": {"path": demo.shown(), "game": demo.game, "frames": demo.frames, "return": demo.total_return},
        "budget_per_run": {"frames": args.frames, "minutes": args.minutes, "stop_at_success": args.stop_at_success,
                           "num_envs": args.num_envs},
        "evaluation": {"start": "game", "episodes": args.episodes, "protocols": list(protocols),
                       "max_frames": eval_cap(demo, args)},
        "seeds": args.seeds, "out_dir": str(out_dir), "variants": [],
    }
    for variant in variants:
        records = [run_record(Run(variant, seed, out_dir / variant.name / f"seed{seed}"), demo, args)
                   for seed in args.seeds]
        report["variants"].append({"name": variant.name, "flags": list(variant.flags),
                                   "curriculum": variant.curriculum, "summary": variant_summary(records),
                                   "runs": records})
    return report


def _millions(value) -> str:
    return f"{value / 1e6:.2f}M"


def _shown(spread_: dict, fmt, seeds: int) -> str:
    """``median [min-max]``, with ``(n/seeds)`` when not every seed got there; ``-`` when none did."""
    if not spread_["n"]:
        return "-"
    text = fmt(spread_["median"]) if spread_["n"] == 1 else \
        f"{fmt(spread_['median'])} [{fmt(spread_['min'])}-{fmt(spread_['max'])}]"
    return text if spread_["n"] == seeds else f"{text} ({spread_['n']}/{seeds})"


def format_table(report: dict) -> str:
    """One row per variant: seeds that reached the goal, median [range] frames and minutes to it, the evaluation."""
    episodes = report["evaluation"]["episodes"]
    header = ("variant", "goal", "frame 0", "frames to frame 0", "frames to goal", "minutes to goal", "eval mean",
              f"episodes >= {report['demo']['return']:g}")
    lines = [header]
    for v in report["variants"]:
        s, n = v["summary"], v["summary"]["seeds"]
        lines.append((v["name"], f"{s['seeds_reached_goal']}/{n}",
                      f"{s['seeds_reached_start_frame_0']}/{n}" if v["curriculum"] else "-",
                      _shown(s["frames_to_start_frame_0"], _millions, n), _shown(s["frames_to_goal"], _millions, n),
                      _shown(s["minutes_to_goal"], lambda m: f"{m:.1f}", n),
                      _shown(s["eval_mean"], lambda m: f"{m:.0f}", n),
                      _shown(s["eval_ge_demo_return"], lambda c: f"{c:g}/{episodes}", n)))
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines)


def plot(report: dict, png_path: Path) -> None:
    """Start frame vs frames (one line per seed, one colour per variant, the goal at frame 0) and the scores."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (progress, scores) = plt.subplots(1, 2, figsize=(12, 4.5))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, v in enumerate(report["variants"]):
        colour = colours[i % len(colours)]
        for j, record in enumerate(v["runs"]):
            rows = [r for r in bench_learning.read_rows(Path(record["run_dir"])) if r.get("start_frame") is not None]
            if v["curriculum"] and rows:  # from frame 0 of training, where the first update's start was
                progress.step([0] + [r["frames"] / 1e6 for r in rows], [rows[0]["start_frame"]] +
                              [r["start_frame"] for r in rows], where="post", color=colour, alpha=0.8,
                              label=v["name"] if j == 0 else None)
            plain = ((record["evaluation"] or {}).get("protocols") or {}).get("plain")
            if plain:
                x = i + (j - (len(v["runs"]) - 1) / 2) * 0.12
                scores.scatter([x] * len(plain["scores"]), plain["scores"], color=colour, alpha=0.35, s=12)
                scores.scatter([x], [plain["mean"]], color=colour, marker="D", s=36)
    progress.axhline(0, color="gray", ls="--", label="goal: the game start (frame 0)")
    progress.set(xlabel="training frames (M)", ylabel="start frame in the demo",
                 title=f"curriculum progress, {report['demo']['path']}")
    progress.legend(fontsize=8), progress.grid(alpha=0.3)
    scores.axhline(report["demo"]["return"], color="gray", ls="--", label="demo return")
    scores.set_xticks(range(len(report["variants"])), [v["name"] for v in report["variants"]])
    scores.set(ylabel="score from the game start (plain)", title="evaluation: episodes (dots), seed means (diamonds)")
    scores.legend(fontsize=8), scores.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, png_path, dpi=100)
    plt.close(fig)


def write_outputs(report: dict, json_path: Path, png_path: Path) -> None:
    write_json(json_path, report)
    plot(report, png_path)
