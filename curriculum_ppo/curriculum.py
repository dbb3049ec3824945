"""Backward curriculum over the start frames of one demonstration.

Salimans & Chen (2018) start every RL episode from an emulator state saved
along a single demonstration. Training starts near the *end* of the demo,
where the reward is a few actions away; once the agent ties or beats the
demo's return from there often enough, the start point moves *backwards*.
Repeating this turns one sparse-reward problem into a chain of easy ones and
ends with the agent playing from the real game start (frame 0).

Two pieces live here, both pure logic (numpy only, no emulator, no I/O):

* :class:`CurriculumScheduler` decides where episodes start and when the start
  point moves. Its statistics can be summed across ``torch.distributed`` ranks
  so every rank takes the same decision (see :meth:`CurriculumScheduler.update`).
* :class:`StallDetector` automates the original README's advice to lower the
  learning rate and entropy coefficient by hand when the start point stops
  moving.

Units: a "frame" is an index into the demonstration, 0..N-1, where N is the
number of demo frames (one demo frame per emulator frame).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from curriculum_ppo.config_flags import knob
from curriculum_ppo.errors import UserError

# Return values of CurriculumScheduler.update().
MOVE_BACK = "back"
MOVE_FORWARD = "forward"
MOVE_DONE = "done"


@dataclass
class CurriculumConfig:
    """How the window of start frames moves along the demo.

    The *window* is the range of start frames ``[start_frame, start_frame +
    window - 1]`` (clipped to the demo) at the front of the part of the demo the
    agent can already play. Starting episodes from a range instead of a single
    frame gives the agent diverse states and makes the success rate a smooth
    signal instead of an all-or-nothing one.
    """

    window: int = knob(64, flag="--window", metavar="W",
                       help="width of the window of start frames, in demo frames; it moves by half of it")

    step: int | None = None
    """How far the window moves (demo frames) on success or collapse.

    ``None`` means ``window // 2``: consecutive windows then overlap by half,
    so right after a move half of the new window consists of frames the agent
    already handles. The success rate therefore does not drop to zero after a
    move (which would look like a collapse) while progress stays fast.
    """

    adaptive_step: bool = knob(False, flag="--adaptive-step",
                               help="move back further when the window's front succeeds well above "
                                    "--success-threshold: the step times the front's success rate over the "
                                    "threshold, at most the window")
    """Scale each move back by how far the front's success rate is above the threshold.

    The move back is ``step * rate / success_threshold`` demo frames, rounded, never less than
    :attr:`effective_step` and never more than :attr:`window`. ``rate`` is the front's
    recency-weighted success rate, the one that triggered the move.

    Why: the threshold is the least evidence that the front is learned; a front that succeeds
    far above it is learned with room to spare, and making the agent replay it from half a
    window further back spends episodes that teach it little. A rate exactly at the threshold
    keeps today's step, so the rule only ever adds to a move that would happen anyway. Why
    proportional: the rate over the threshold is the one number the move was decided on, and the
    rule needs no new dial. Why at most a window: the new window then still ends at (or after)
    the old front, so no demo frame is skipped without ever being a start. Moves forward on a
    collapse keep the plain step: after a too-ambitious move back, half a step forward puts the
    last learned front back inside the window. Off by default until the ablation of issue #22
    measures it.
    """

    success_threshold: float = knob(0.2, flag="--success-threshold", metavar="R",
                                    help="move back when this fraction of the episodes started in the window's "
                                         "front tie or beat the demo")

    collapse_threshold: float = 0.02
    """Move forward (towards the demo end) if the window's success rate falls below this."""

    min_episodes: int = knob(32, flag="--min-episodes", metavar="N",
                             help="episodes started in the window before moving back (or declaring done)")

    collapse_min_episodes: int = 2048
    """Episodes started in the window needed before moving forward.

    Much larger than ``min_episodes`` on purpose: right after a move back the
    new frames are expected to be near 0% success while the agent is still
    learning them. Moving forward too early would make the curriculum
    oscillate instead of giving the agent time to learn.
    """

    max_window_episodes: int | None = 8192
    """Forget old statistics of the *collapse* rule: when more episodes than
    this accumulated in the window since the last move, its counts are halved.

    Without it the window's success rate would be the average since the last
    move, which reacts ever more slowly as the agent improves (or collapses).
    Halving keeps the statistics a plain vector of counts, so ranks can still
    sum them. ``None`` disables forgetting. (Moves back use the much shorter
    memory of :attr:`front_half_life`.)
    """

    front_half_life: float | None = knob(64.0, flag="--front-half-life", metavar="EPISODES", runtime=True,
                                         help="memory of the move-back decision: a front episode's weight halves "
                                              "after this many newer front episodes (0 = weigh all episodes since "
                                              "the last move equally)")
    """Memory of the move-back decision, in episodes started in the window's front.

    The front's success rate weighs every episode by ``0.5 ** (k / front_half_life)``,
    where ``k`` counts the front episodes folded in by later :meth:`update`
    calls (episodes of one update share a weight, so the memory cannot be
    shorter than one update's batch of front episodes). ``None`` (or 0) weighs
    all episodes since the last move equally. A run resumed from a config
    written before this option existed gets the default.

    Why forget: with equal weights, the failures from before the agent learned
    a hard section (the bundled demo's skull jump) outweigh everything after,
    so the front's rate lags far behind what the policy now does; every hard
    section adds such a lag, and it grows with the time the section took
    (docs/design.md, the half-life, has the measurement). With a half-life of
    64 front episodes, a jump from 0% to 40% crosses the 20% threshold after
    about 64 episodes, while the estimate still rests on ~180 effective
    episodes (standard error at 20%: about 3 points). The price: the rule is
    tested again after every update on a moving estimate, so a front that
    truly succeeds 15-17% of the time will cross 20% by chance sooner or
    later. The threshold is a rough dial anyway, and a move back that came too
    early keeps the old front in the back half of the window.
    """

    decision_front: float = knob(0.25, flag="--decision-front", metavar="F",
                                 help="fraction of the window (its hardest, front starts) whose success rate moves "
                                      "it back")
    """Moving back is decided on the success rate of the *front* of the window only:
    the first ``decision_front`` of its frames, the hardest starts.

    Measured, not assumed: judged on the whole window, a 320-frame window on the
    bundled demo moved back at 20% success while the starts in its front 200
    frames had never succeeded once (the easy starts near the demo's end carried
    the average), and the agent then sat at 0% for 0.7M frames.
    """

    random_start_fraction: float = knob(0.2, flag="--random-start-fraction", metavar="P",
                                        help="fraction of the episodes that start at a random frame behind the "
                                             "window (rehearsal)")
    """Fraction of episodes started at a uniformly random frame *behind* the
    window (towards the demo end), so that parts learned earlier are not
    forgotten. They are tracked and reported but do not drive moves.

    Below 1: with 1, once the window has moved no episode would start in it
    again (every start would be a rehearsal), so the curriculum would never
    move after its first step."""

    def __post_init__(self) -> None:
        if self.window < 1:
            raise UserError("--window must be positive")
        if self.step is not None and self.step < 1:
            raise UserError(f"curriculum step must be >= 1 demo frame, got {self.step}")
        if not 0.0 < self.success_threshold <= 1.0:
            raise UserError("--success-threshold must be in (0, 1]")
        if not 0.0 <= self.collapse_threshold < self.success_threshold:
            raise UserError(
                f"collapse threshold must be in [0, success threshold={self.success_threshold}), "
                f"got {self.collapse_threshold}"
            )
        if not 0.0 < self.decision_front <= 1.0:
            raise UserError(f"--decision-front must be in (0, 1], got {self.decision_front}")
        if not 0.0 <= self.random_start_fraction < 1.0:
            raise UserError("--random-start-fraction must be in [0, 1)")
        if self.min_episodes < 1:
            raise UserError(f"--min-episodes must be >= 1, got {self.min_episodes}")
        if self.collapse_min_episodes < self.min_episodes:
            raise UserError(
                f"collapse min episodes ({self.collapse_min_episodes}) must be >= min episodes ({self.min_episodes})"
            )
        if self.front_half_life is not None and not self.front_half_life >= 0:
            raise UserError("--front-half-life must be >= 0 episodes (0: no forgetting)")
        if self.max_window_episodes is not None and self.max_window_episodes < 2 * self.collapse_min_episodes:
            # After halving, the count is only guaranteed to be above max/2.
            raise UserError(
                f"max window episodes ({self.max_window_episodes}) must be >= 2 * collapse min episodes "
                f"({self.collapse_min_episodes}) or the collapse rule could never fire"
            )

    @property
    def effective_step(self) -> int:
        return self.step if self.step is not None else max(1, self.window // 2)


class CurriculumScheduler:
    """Chooses start frames and moves the window back as the agent succeeds.

    Typical loop (single process)::

        sched = CurriculumScheduler(demo_length=len(demo))
        start = sched.sample_start(rng, worker_index=i, num_workers=n)
        ...                                   # play the episode
        sched.record(start, success)
        move = sched.update()                 # "back" / "forward" / "done" / None

    Internally start frames are *slots*: multiples of ``frame_granularity``
    (useful when the demo stores an emulator state only every k frames). All
    counts are kept per slot: ``attempts[k]`` and ``successes[k]`` for episodes
    started at frame ``k * frame_granularity``.

    Distributed training: ``record`` only touches local *pending* counts. They
    reach the statistics that decisions use through
    :meth:`apply_global_counts`, which every rank must call with the same
    (summed) vector; see :meth:`update` for the one-call version.
    """

    def __init__(
        self,
        demo_length: int,
        config: CurriculumConfig | None = None,
        initial_start: int | None = None,
        frame_granularity: int = 1,
    ) -> None:
        if demo_length < 1:
            raise UserError(f"the demo needs at least one frame, got {demo_length}")
        if frame_granularity < 1:
            raise UserError(f"frame granularity must be >= 1, got {frame_granularity}")
        self.config = config if config is not None else CurriculumConfig()
        self.demo_length = demo_length
        self.granularity = frame_granularity
        self.num_slots = _num_slots(demo_length, frame_granularity)
        self.window_slots = max(1, self.config.window // frame_granularity)
        self.step_slots = max(1, self.config.effective_step // frame_granularity)

        if initial_start is None:
            initial_start = max(0, demo_length - self.config.window)
        if not 0 <= initial_start < demo_length:
            raise UserError(f"initial start {initial_start} is outside the demo (0..{demo_length - 1})")
        self.initial_slot = initial_start // frame_granularity
        self._slot = self.initial_slot
        self._done = False
        self._moves = 0
        self._episodes_seen = 0.0  # global episodes folded into the statistics, ever
        self.history: list[tuple[int, int]] = [(0, self.start_frame)]
        # Row 0: attempts, row 1: successes.
        self._pending = np.zeros((2, self.num_slots))  # local, not yet applied
        self._since_move = np.zeros((2, self.num_slots))  # global, since the last move (decays)
        self._total = np.zeros((2, self.num_slots))  # global, ever (for reporting)
        self._recent = np.zeros((2, self.num_slots))  # global, since the last move, decays per front episode
        self._front_episodes = 0.0  # global episodes folded into _recent's front since the last move

    # ----------------------------------------------------------------- window
    @property
    def start_frame(self) -> int:
        """The front (lowest frame) of the window."""
        return self._slot * self.granularity

    @property
    def window_end(self) -> int:
        """The last frame of the window (inclusive)."""
        return self._window_end_slot * self.granularity

    @property
    def _window_end_slot(self) -> int:
        return min(self.num_slots - 1, self._slot + self.window_slots - 1)

    def in_window(self, frame: int) -> bool:
        """True if an episode starting at ``frame`` starts in the window (not a rehearsal start behind it)."""
        return self.start_frame <= frame <= self.window_end

    @property
    def done(self) -> bool:
        """True once the window reached frame 0 and the agent succeeded there.

        The curriculum then stops moving; ``sample_start`` keeps working so
        training can continue (the caller treats start 0 as the real game start).
        """
        return self._done

    @property
    def moves(self) -> int:
        return self._moves

    # --------------------------------------------------------------- sampling
    def sample_start(
        self,
        rng: np.random.Generator,
        worker_index: int | None = None,
        num_workers: int | None = None,
    ) -> int:
        """Frame to start the next episode from.

        With probability ``random_start_fraction`` (and if the window does not
        already reach the demo end) the start is uniform over the frames behind
        the window, ``(window_end, N-1]``: rehearsal of parts learned earlier.

        Otherwise the start is in the window. Without ``worker_index`` it is
        uniform over the window. With ``worker_index``/``num_workers`` the
        window is cut into ``num_workers`` equal strata and worker ``i`` draws
        uniformly inside stratum ``i`` (the original code also spread its
        workers evenly over the window). This stratified sampling guarantees
        that every part of the window is played at every moment, even with
        few workers, while the random jitter inside the stratum still visits
        every frame over time.
        """
        end_slot = self._window_end_slot
        room_behind = self.num_slots - 1 - end_slot
        if room_behind > 0 and rng.random() < self.config.random_start_fraction:
            return int(rng.integers(end_slot + 1, self.num_slots)) * self.granularity

        width = end_slot - self._slot + 1
        if worker_index is None or num_workers is None:
            offset = int(rng.integers(0, width))
        else:
            if not 0 <= worker_index < num_workers:
                raise ValueError(f"worker_index {worker_index} not in 0..{num_workers - 1}")
            offset = int((worker_index + rng.random()) * width / num_workers)
            offset = min(offset, width - 1)  # guard against float rounding up to width
        return (self._slot + offset) * self.granularity

    # ------------------------------------------------------------- statistics
    def record(self, start: int, success: bool) -> None:
        """Result of one finished episode that started at frame ``start``.

        The count goes to the local pending buffer; it influences decisions
        after the next :meth:`update` (or :meth:`apply_global_counts`). An
        episode that was sampled before a move but finishes after it is counted
        under its start frame like any other: the statistics are per frame, so
        it is still valid evidence about that frame.
        """
        if not 0 <= start < self.demo_length:
            raise ValueError(f"start frame {start} is outside the demo (0..{self.demo_length - 1})")
        slot = start // self.granularity
        self._pending[0, slot] += 1.0
        self._pending[1, slot] += float(bool(success))

    @property
    def vector_size(self) -> int:
        """Length of the count vectors exchanged between ranks (depends only on demo length and granularity)."""
        return 2 * self.num_slots

    def pending_counts(self) -> np.ndarray:
        """Copy of the local counts not yet applied, as a flat float64 vector (attempts then successes)."""
        return self._pending.ravel().copy()

    def take_pending_counts(self) -> np.ndarray:
        """Like :meth:`pending_counts` but also clears the local buffer.

        Episodes recorded after this call go into the next exchange, so
        nothing is lost or counted twice.
        """
        vector = self.pending_counts()
        self._pending[:] = 0.0
        return vector

    def apply_global_counts(self, summed: np.ndarray) -> None:
        """Add counts (the sum of every rank's :meth:`take_pending_counts`) to the statistics.

        Every rank must apply the same vector; decisions depend only on
        applied counts and the shared state, so all ranks then decide alike.
        """
        summed = np.asarray(summed, dtype=np.float64)
        if summed.shape != (self.vector_size,):
            raise ValueError(f"expected a count vector of shape ({self.vector_size},), got {summed.shape}")
        counts = summed.reshape(2, self.num_slots)
        half_life = self.config.front_half_life
        lo, hi = self._front_slots()
        new_front = float(counts[0, lo:hi].sum())
        if half_life:  # None or 0: no forgetting
            self._recent *= 0.5 ** (new_front / half_life)
        self._recent += counts
        self._front_episodes += new_front
        self._since_move += counts
        self._total += counts
        self._episodes_seen += float(counts[0].sum())
        limit = self.config.max_window_episodes
        if limit is not None:
            while self._window_counts()[0] > limit:
                self._since_move *= 0.5

    def _window_counts(self) -> tuple[float, float]:
        lo, hi = self._slot, self._window_end_slot + 1
        return float(self._since_move[0, lo:hi].sum()), float(self._since_move[1, lo:hi].sum())

    def _front_slots(self) -> tuple[int, int]:
        """Slot range ``[lo, hi)`` of the front ``decision_front`` of the window (at least one slot)."""
        width = self._window_end_slot + 1 - self._slot
        return self._slot, self._slot + max(1, int(round(width * self.config.decision_front)))

    def _front_counts(self) -> tuple[float, float]:
        """Recency-weighted counts of the window's front (see :attr:`CurriculumConfig.front_half_life`)."""
        lo, hi = self._front_slots()
        return float(self._recent[0, lo:hi].sum()), float(self._recent[1, lo:hi].sum())

    def _behind_counts(self) -> tuple[float, float]:
        lo = self._window_end_slot + 1
        return float(self._since_move[0, lo:].sum()), float(self._since_move[1, lo:].sum())

    # --------------------------------------------------------------- decision
    def update(self, all_reduce: Callable[[np.ndarray], np.ndarray] | None = None) -> str | None:
        """Fold in pending counts, then move the window if the evidence says so.

        ``all_reduce`` maps this rank's pending vector to the sum over all
        ranks; with ``torch.distributed`` every rank calls, collectively::

            def all_reduce(v):
                t = torch.from_numpy(v).to(device)   # float64
                dist.all_reduce(t, op=dist.ReduceOp.SUM)
                return t.cpu().numpy()

            move = sched.update(all_reduce)

        Without it (single process) the local counts are used as they are.

        Returns ``"back"`` (moved towards frame 0), ``"forward"`` (collapsed,
        moved towards the demo end, never past the initial start), ``"done"``
        (succeeded with the window at frame 0; sticky, no more moves) or
        ``None``. Statistics since the last move are cleared after a move.
        """
        pending = self.take_pending_counts()
        self.apply_global_counts(all_reduce(pending) if all_reduce is not None else pending)
        return self._decide()

    def _decide(self) -> str | None:
        if self._done:
            return None
        # Enough evidence is counted in real episodes; the rate is the recency-weighted one.
        weight, weighted_successes = self._front_counts()
        if (self._front_episodes >= self.config.min_episodes and weight > 0
                and weighted_successes / weight >= self.config.success_threshold):
            if self._slot == 0:
                self._done = True
                return MOVE_DONE
            self._move_to(max(0, self._slot - self._back_step_slots(weighted_successes / weight)))
            return MOVE_BACK
        attempts, successes = self._window_counts()
        rate = successes / attempts if attempts else 0.0
        if attempts >= self.config.collapse_min_episodes and rate < self.config.collapse_threshold:
            target = min(self.initial_slot, self._slot + self.step_slots)
            if target > self._slot:
                self._move_to(target)
                return MOVE_FORWARD
        return None

    def _back_step_slots(self, front_rate: float) -> int:
        """Slots to move back by when the front succeeds at ``front_rate``.

        The plain step, or with :attr:`CurriculumConfig.adaptive_step` the step scaled by
        ``front_rate / success_threshold`` within ``[step, window]``."""
        if not self.config.adaptive_step:
            return self.step_slots
        scaled = int(round(self.step_slots * front_rate / self.config.success_threshold))
        return max(self.step_slots, min(self.window_slots, scaled))

    def _move_to(self, slot: int) -> None:
        self._slot = slot
        self._moves += 1
        self._since_move[:] = 0.0
        self._recent[:] = 0.0
        self._front_episodes = 0.0
        self.history.append((int(round(self._episodes_seen)), self.start_frame))

    # -------------------------------------------------------------- reporting
    def stats(self) -> dict:
        """Scalars for logging; rates are NaN when there were no episodes.

        ``front_success_rate`` is the recency-weighted rate that moves the
        window back; ``window_success_rate`` is the rate since the last move
        that the collapse rule uses. ``window_bin_success_rates`` splits the
        window into (up to) four equal bins from front to back, showing where
        inside the window the agent fails *now* (recency-weighted like the front).
        """
        w_attempts, w_successes = self._window_counts()
        b_attempts, b_successes = self._behind_counts()
        lo, hi = self._slot, self._window_end_slot + 1
        bins = np.array_split(np.arange(lo, hi), min(4, hi - lo))
        bin_rates = [_rate(self._recent[1, b].sum(), self._recent[0, b].sum()) for b in bins]
        return {
            "start_frame": self.start_frame,
            "window_end": self.window_end,
            "done": self._done,
            "moves": self._moves,
            "episodes_total": int(round(self._episodes_seen)),
            "window_episodes": w_attempts,
            "window_success_rate": _rate(w_successes, w_attempts),
            "front_success_rate": _rate(*reversed(self._front_counts())),
            "behind_episodes": b_attempts,
            "behind_success_rate": _rate(b_successes, b_attempts),
            "window_bin_success_rates": bin_rates,
        }

    def counts_by_start(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All-time ``(start_frames, attempts, successes)`` per slot that was ever played (for reports)."""
        played = np.flatnonzero(self._total[0] > 0)
        return played * self.granularity, self._total[0, played].copy(), self._total[1, played].copy()

    # ------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        """JSON-serialisable state; count arrays are stored sparsely (most slots are never played)."""
        return {
            "config": dataclasses.asdict(self.config),
            "demo_length": self.demo_length,
            "frame_granularity": self.granularity,
            "initial_slot": self.initial_slot,
            "slot": self._slot,
            "done": self._done,
            "moves": self._moves,
            "episodes_seen": self._episodes_seen,
            "history": [list(item) for item in self.history],
            "pending": _sparse(self._pending),
            "since_move": _sparse(self._since_move),
            "total": _sparse(self._total),
            "recent": _sparse(self._recent),
            "front_episodes": self._front_episodes,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore from :meth:`state_dict`. The config in use is kept (it may be changed on resume),
        but the demo length and granularity must match since the counts are indexed by frame."""
        if state["demo_length"] != self.demo_length or state["frame_granularity"] != self.granularity:
            raise UserError(
                f"curriculum state is for a demo of {state['demo_length']} frames at granularity "
                f"{state['frame_granularity']}, but this run has {self.demo_length} frames at granularity "
                f"{self.granularity}; was the checkpoint made with another demo?"
            )
        self.initial_slot = int(state["initial_slot"])
        self._slot = int(state["slot"])
        self._done = bool(state["done"])
        self._moves = int(state["moves"])
        self._episodes_seen = float(state["episodes_seen"])
        self.history = [(int(e), int(f)) for e, f in state["history"]]
        self._pending = _dense(state["pending"], self.num_slots)
        self._since_move = _dense(state["since_move"], self.num_slots)
        self._total = _dense(state["total"], self.num_slots)
        # Checkpoints from before front_half_life existed carry no recency
        # information; their front statistics start afresh (min_episodes new
        # front episodes before the next move back).
        self._recent = _dense(state["recent"], self.num_slots) if "recent" in state else np.zeros((2, self.num_slots))
        self._front_episodes = float(state.get("front_episodes", 0.0))


def counts_between(older: dict, newer: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(start_frames, attempts, successes)`` of the episodes recorded between two scheduler states.

    Both are :meth:`CurriculumScheduler.state_dict` results of one run (say, two
    checkpoints). The all-time counts only grow, so their difference is what the
    agent did in between: how it does *now* at each start, which the all-time
    ``success_by_start.json`` blurs with its early failures.
    """
    for key in ("demo_length", "frame_granularity"):
        if older[key] != newer[key]:
            raise UserError(f"the two curriculum states differ in {key} ({older[key]} vs {newer[key]}): "
                            "not checkpoints of one run")
    num_slots = _num_slots(int(newer["demo_length"]), int(newer["frame_granularity"]))
    delta = _dense(newer["total"], num_slots) - _dense(older["total"], num_slots)
    if (delta < -1e-6).any():
        raise UserError("the older curriculum state has more episodes than the newer one: "
                        "pass the earlier checkpoint as the older one, from the same run")
    played = np.flatnonzero(delta[0] > 0)
    return played * int(newer["frame_granularity"]), delta[0, played], delta[1, played]


def state_summary(state: dict) -> dict:
    """What a saved :meth:`CurriculumScheduler.state_dict` says, read without a scheduler.

    ``window_start`` is the front of the window, ``start_frame`` where episodes start (the front,
    or 0 once ``done``), ``demo_length`` the demo's length (None if the state does not say).
    Readers of checkpoints use this instead of the state's internal slots.
    """
    front = int(state["slot"]) * int(state.get("frame_granularity", 1))
    done = bool(state.get("done"))
    length = state.get("demo_length")
    return {"demo_length": None if length is None else int(length), "window_start": front, "done": done,
            "start_frame": 0 if done else front}


def _num_slots(demo_length: int, granularity: int) -> int:
    """Start-frame slots of a demo: frames 0, g, 2g, ... up to its last frame."""
    return (demo_length - 1) // granularity + 1


def _rate(successes: float, attempts: float) -> float:
    return float(successes / attempts) if attempts > 0 else math.nan


def _sparse(counts: np.ndarray) -> dict:
    index = np.flatnonzero(counts[0] > 0)
    return {
        "index": index.tolist(),
        "attempts": counts[0, index].tolist(),
        "successes": counts[1, index].tolist(),
    }


def _dense(sparse: dict, num_slots: int) -> np.ndarray:
    counts = np.zeros((2, num_slots))
    index = np.asarray(sparse["index"], dtype=np.int64)
    counts[0, index] = sparse["attempts"]
    counts[1, index] = sparse["successes"]
    return counts


# ---------------------------------------------------------------------------
# Automatic unsticking
# ---------------------------------------------------------------------------
@dataclass
class UnstickConfig:
    """When and how much to lower the learning rate and entropy coefficient.

    The original implementation's README asked users to lower both by hand
    when the start point stopped moving back: late in training the policy must
    become precise (long action sequences without mistakes), which a high
    learning rate and a strong entropy bonus prevent.
    """

    patience_frames: int = knob(5_000_000, flag="--unstick-patience", metavar="FRAMES",
                                help="frames without a new lowest start frame before lr and entropy "
                                     "coefficient are lowered")
    """Frames without a new lowest start frame before a stall is declared.

    Same units as the ``frames`` passed to :meth:`StallDetector.update`
    (the caller decides: global agent steps or emulator frames).
    """

    decay: float = knob(0.5, flag="--unstick-decay", metavar="D",
                        help="factor applied to lr and entropy coefficient at each stall (they never fall "
                             "below a fixed fraction of their initial values)")

    min_scale: float = 0.05
    """Never go below this fraction of the initial values."""

    enabled: bool = True

    def __post_init__(self) -> None:
        if self.patience_frames < 1:
            raise UserError(f"--unstick-patience must be >= 1 frame, got {self.patience_frames}")
        if not 0.0 < self.decay < 1.0:
            raise UserError(f"--unstick-decay must be in (0, 1), got {self.decay}")
        if not 0.0 < self.min_scale <= 1.0:
            raise UserError(f"stall min scale must be in (0, 1], got {self.min_scale}")


class StallDetector:
    """Lower lr and entropy coefficient when the curriculum stops progressing.

    Progress means a *new lowest* start frame. A mere move back after a
    collapse (forward move) does not count: an agent oscillating around the
    same frontier is exactly the stuck agent this detector is for.

    The scale is never restored on progress: the smaller step size that let
    the agent get past a hard section is typically still needed for the
    precision the rest of the game demands, and restoring would risk
    collapsing what was just learned. Patience restarts after every decay and
    every progress.
    """

    def __init__(self, config: UnstickConfig | None = None) -> None:
        self.config = config if config is not None else UnstickConfig()
        self.scale = 1.0
        self._best_start: int | None = None
        self._since: int | None = None  # frames count at the last progress or decay

    def update(self, frames: int, start_frame: int) -> float | None:
        """Report the cumulative frame count and current start frame.

        Returns the new scale (multiply the *initial* lr and entropy
        coefficient by it) when it just decayed, else ``None``.
        """
        if self._best_start is None or self._since is None:
            self._best_start, self._since = start_frame, frames
            return None
        if start_frame < self._best_start:
            self._best_start, self._since = start_frame, frames
            return None
        if not self.config.enabled or frames - self._since < self.config.patience_frames:
            return None
        self._since = frames
        new_scale = max(self.config.min_scale, self.scale * self.config.decay)
        if new_scale >= self.scale:
            return None
        self.scale = new_scale
        return new_scale

    def state_dict(self) -> dict:
        return {"scale": self.scale, "best_start": self._best_start, "since": self._since}

    def load_state_dict(self, state: dict) -> None:
        self.scale = float(state["scale"])
        self._best_start = state["best_start"]
        self._since = state["since"]
