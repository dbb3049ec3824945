"""Where a run's numbers go: ``metrics.jsonl``, TensorBoard and the console.

One row per update goes to every sink of the main rank (:meth:`Logger.log`); messages and the
periodic status line go to the console unless the run is quiet (:meth:`Logger.info`).
"""

from __future__ import annotations

import math
import sys

from curriculum_ppo.training.run_dir import RunDir


class JsonlSink:
    """Appends each row to the run's ``metrics.jsonl``."""

    def __init__(self, run_dir: RunDir):
        self.run_dir = run_dir

    def write(self, row: dict) -> None:
        self.run_dir.append_metrics(row)

    def close(self) -> None:
        pass


class TensorBoardSink:
    """Each row's numbers as TensorBoard scalars over ``frames``, plus ``episode_ends/<reason>`` counts.

    The writer is made with the first row (nothing is written for a run that logs none). Where
    ``tensorboard`` (a dependency) cannot be imported, the run goes on with ``metrics.jsonl`` alone and
    says so once on stderr. ``purge_step`` (on resume) hides the events a killed run logged after its
    checkpoint.
    """

    def __init__(self, run_dir: RunDir, purge_step: int | None = None):
        self.run_dir, self.purge_step = run_dir, purge_step
        self.writer = None  # None: not made yet; False: unavailable or turned off

    def write(self, row: dict) -> None:
        if self.writer is None:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(self.run_dir.tensorboard), purge_step=self.purge_step)
            except ImportError as exc:
                print(f"warning: no TensorBoard events ({exc}); the metrics go to metrics.jsonl only",
                      file=sys.stderr, flush=True)
                self.writer = False
        if not self.writer:
            return
        for key, value in row.items():
            if isinstance(value, (int, float)) and value is not None and key != "frames":
                self.writer.add_scalar(key, value, row["frames"])
        for reason, count in row.get("episode_ends", {}).items():
            self.writer.add_scalar(f"episode_ends/{reason}", count, row["frames"])

    def close(self) -> None:
        if self.writer:
            self.writer.close()


class Logger:
    """The run's sinks: rows go to every sink on the main rank only; console lines unless ``quiet``."""

    def __init__(self, run_dir: RunDir, is_main: bool, quiet: bool):
        self.is_main, self.quiet = is_main, quiet
        self.jsonl = JsonlSink(run_dir)
        self.tensorboard = TensorBoardSink(run_dir)

    def log(self, row: dict) -> None:
        if not self.is_main:
            return
        self.jsonl.write(row)
        self.tensorboard.write(row)

    def info(self, message: str, **print_kwargs) -> None:
        if not self.quiet:
            print(message, flush=True, **print_kwargs)

    def close(self) -> None:
        self.tensorboard.close()


def rounded_rates(rates) -> list | None:
    """Success rates for a row: rounded to 4 digits, NaN (no episodes) as None; None for no rates."""
    return [None if r is None or math.isnan(r) else round(float(r), 4) for r in rates or []] or None


def status_line(frames: int, fps: float, start: int | None, demo_length: int, curriculum_done: bool,
                success_rate: float | None, summary: dict) -> str:
    """The console's periodic one-line summary (docs/training.md explains its fields)."""
    s = summary
    where = "real start" if start is None or curriculum_done else f"{start}/{demo_length}"
    rate = success_rate
    parts = [f"frames {frames / 1e6:7.3f}M", f"{fps:6.0f} frames/s", f"start {where}",
             f"success {rate:.0%}" if rate is not None and rate == rate else "success  -",
             f"score {s['score_mean']:.1f}" if s["score_mean"] is not None else "score -",
             f"from-start {s['score_from_start_mean']:.1f}" if s["score_from_start_mean"] is not None else "",
             f"episodes {s['episodes']}"]
    return " | ".join(p for p in parts if p)
