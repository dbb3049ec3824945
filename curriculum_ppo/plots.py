"""PNG plots of a run: learning curve, the curriculum's march back through the demo, success rate.

Drawn from ``metrics.jsonl`` (read by :func:`curriculum_ppo.training.run_dir.read_metrics`) so
``curriculum-ppo plot RUN_DIR`` can redraw them for any run, finished or not, without the trainer.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from curriculum_ppo.atomic import atomic_path  # noqa: E402
from curriculum_ppo.errors import UserError  # noqa: E402
from curriculum_ppo.training.run_dir import read_metrics  # noqa: E402


def _save(fig, path: Path) -> Path:
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


def _finish(fig, ax, ylabel: str, legend_loc: str, path: Path, title: str | None = None) -> Path:
    """The parts all three run plots share: axis labels, legend, grid, layout, atomic save."""
    ax.set_xlabel("emulator frames (millions; 4 per agent step)")
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.legend(loc=legend_loc)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def _series(rows, key):
    xs = [r["frames"] / 1e6 for r in rows if r.get(key) is not None]
    ys = [r[key] for r in rows if r.get(key) is not None]
    return xs, ys


def plot_run(run_dir: str | Path, reward_frames: list[int] | None = None, demo_length: int | None = None) -> list[Path]:
    """Write curriculum.png, score.png and success.png into ``run_dir``; return their paths."""
    run_dir = Path(run_dir)
    rows = read_metrics(run_dir)
    if not rows:
        raise UserError(f"{run_dir}/metrics.jsonl is empty: no update has finished yet")
    if reward_frames is None:
        reward_frames = rows[-1].get("demo_reward_frames") or []
    demo_length = demo_length or rows[-1].get("demo_length")
    out = []

    fig, ax = plt.subplots(figsize=(7, 4))
    xs, ys = _series(rows, "start_frame")
    ax.step(xs, ys, where="post", color="tab:blue", label="curriculum start frame")
    for i, t in enumerate(reward_frames):
        ax.axhline(t, color="tab:orange", lw=0.8, ls="--", label="demo reward" if i == 0 else None)
    if demo_length:
        ax.set_ylim(0, demo_length * 1.02)
    out.append(_finish(fig, ax, "demo frame episodes start from", "upper right", run_dir / "curriculum.png",
                       title="Curriculum: start point moving back through the demo"))

    fig, ax = plt.subplots(figsize=(7, 4))
    xs, ys = _series(rows, "score_mean")
    ax.plot(xs, ys, label="mean episode score (last 100, from curriculum starts)")
    xs, ys = _series(rows, "score_from_start_mean")
    if ys:
        ax.plot(xs, ys, label="mean score of episodes from the real game start")
    out.append(_finish(fig, ax, "score", "upper left", run_dir / "score.png", title="Learning curve"))

    fig, ax = plt.subplots(figsize=(7, 4))
    xs, ys = _series(rows, "success_rate")
    ax.plot(xs, ys, label="success rate in the window")
    ax.set_ylim(0, 1)
    out.append(_finish(fig, ax, "fraction of episodes that tie or beat the demo", "upper left",
                       run_dir / "success.png"))
    return out


def plot_success_by_start(run_dir: str | Path, table: dict) -> Path:
    """success_by_start.png: how often episodes started in each range of demo frames beat the demo.

    ``table`` is what the trainer writes to success_by_start.json. The current
    window is shaded, so the plot answers "where along the demo is the agent stuck?".
    """
    fig, ax = plt.subplots(figsize=(7, 4))
    bins = [b for b in table["bins"] if b["episodes"]]
    ax.bar([b["first"] for b in bins], [b["success_rate"] for b in bins], width=table["bin_frames"] * 0.9,
           align="edge", color="tab:green", label="success rate (all episodes so far)")
    if table.get("start_frame") is not None:
        ax.axvspan(table["start_frame"], table.get("window_end", table["start_frame"]) + 1, color="tab:blue",
                   alpha=0.12, label="current window of start frames")
    ax.set_xlim(0, table["demo_length"])
    ax.set_ylim(0, 1)
    ax.set_xlabel("demo frame the episode started from")
    ax.set_ylabel("fraction that tie or beat the demo")
    ax.set_title(f"Success by start frame after {table.get('frames', 0) / 1e6:.2f}M frames")
    ax.legend(loc="upper left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, Path(run_dir) / "success_by_start.png")
