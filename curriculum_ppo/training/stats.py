"""Statistics of finished episodes: the rolling windows behind the logs, and success by start frame.

Pure logic (numpy only): the trainer feeds finished episodes in, the logger and the reports read
summaries out.
"""

from __future__ import annotations

import collections
import math

import numpy as np


def success_by_start_table(starts: np.ndarray, attempts: np.ndarray, successes: np.ndarray, demo_length: int,
                           bins: int = 20, bin_frames: int | None = None, first: int = 0,
                           last: int | None = None) -> dict:
    """Episodes and success rate per range of start frames: ``bins`` equal ranges of the demo,
    or ranges of ``bin_frames`` frames from ``first`` to ``last`` (default: the whole demo).

    Shows *where* along the demo the agent fails, which the single front-of-window
    rate in metrics.jsonl cannot: the hard segment is usually a few dozen frames long.
    """
    end = demo_length if last is None else min(demo_length, last + 1)
    width = bin_frames if bin_frames else max(1, -(-(end - first) // bins))
    rows = []
    for lo in range(first, end, width):
        hi = min(end, lo + width)
        inside = (starts >= lo) & (starts < hi)
        n = float(attempts[inside].sum())
        rows.append({"first": lo, "last": hi - 1, "episodes": int(round(n)),
                     "success_rate": round(float(successes[inside].sum()) / n, 4) if n else None})
    return {"demo_length": demo_length, "bin_frames": width, "bins": rows}


class EpisodeStats:
    """Rolling statistics of finished episodes for logging and plots."""

    def __init__(self, window: int = 100, demo_return: float | None = None):
        self.demo_return = demo_return
        self.from_start_success = collections.deque(maxlen=window)
        self.scores = collections.deque(maxlen=window)
        self.successes = collections.deque(maxlen=window)
        self.from_start = collections.deque(maxlen=window)
        self.count = 0
        self.best = -math.inf
        self.ends: collections.Counter = collections.Counter()
        """Why episodes ended since the last :meth:`take_ends` (``success_extra_done``, ``horizon``, ``lagging``,
        ``max_frames``, ``life_lost``, ``game_over``, ...): a stalled curriculum shows here first."""

    def add(self, episode: dict) -> None:
        self.count += 1
        self.ends[str(episode.get("reason"))] += 1
        score = float(episode.get("score", 0.0))
        self.best = max(self.best, score)
        start = episode.get("start_frame")
        if start is None or start == 0:
            self.from_start.append(score)
            if self.demo_return is not None:
                self.from_start_success.append(score >= self.demo_return)
        if start is not None:
            self.scores.append(score)
            self.successes.append(bool(episode.get("success")))

    def state_dict(self) -> dict:
        """The windows and counters, JSON-serialisable (``--stop-at-success`` decides on these windows)."""
        return {"window": self.scores.maxlen, "count": self.count,
                "best": None if self.best == -math.inf else self.best,
                "from_start_success": [bool(x) for x in self.from_start_success],
                "scores": list(self.scores), "successes": list(self.successes), "from_start": list(self.from_start)}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` (the window length in use is kept; longer saved windows keep their end)."""
        self.count = int(state["count"])
        self.best = -math.inf if state["best"] is None else float(state["best"])
        for name in ("from_start_success", "scores", "successes", "from_start"):
            window = getattr(self, name)
            window.clear()
            window.extend(state[name])

    def take_ends(self) -> dict:
        """The end reasons counted since the last call (then reset), sorted by name."""
        ends, self.ends = dict(sorted(self.ends.items())), collections.Counter()
        return ends

    def from_start_success_rate(self) -> float | None:
        """Fraction of recent episodes from the game start that tied or beat the demo's whole return."""
        return float(np.mean(self.from_start_success)) if self.from_start_success else None

    def summary(self) -> dict:
        def mean(xs):
            return float(np.mean(xs)) if xs else None
        return {
            "episodes": self.count,
            "score_mean": mean(self.scores),
            "score_max": float(max(self.scores)) if self.scores else None,
            "score_from_start_mean": mean(self.from_start),
            "score_from_start_max": float(max(self.from_start)) if self.from_start else None,
            "episode_success_rate": mean(self.successes),
            "from_start_success_rate": self.from_start_success_rate(),
            "best_score": None if self.best == -math.inf else self.best,
        }
