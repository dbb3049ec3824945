#!/usr/bin/env python3
"""Make a long, replayable demo (~53,000 frames) by a scripted Breakout player, for long-demo checks.

The original work's headline demo is one human Montezuma's Revenge playthrough of 53,061
frames. That file is not bundled, so the long-demo mechanics (the success rule's cost per
episode, memory, ``cut``) are checked on a demo of the same length made here, deterministically,
on the real emulator:

* **The player.** Breakout: the paddle goes to where the ball will come down (ball and paddle
  positions read from RAM each frame, side walls reflected), off-centre by an aim offset chosen
  at every paddle bounce; FIRE serves the ball.
* **The search.** Where the ball goes after a bounce depends on where it met the paddle, so the
  aim chosen at one bounce decides the *next* cycle. At every bounce the candidate offsets are
  tried in a seeded random order by playing them ahead on a saved emulator state, and the first
  that fits is taken: it must not lose the ball (the demo loses no life, so an agent replaying it
  from any frame never ends its episode on a life loss). The reward timeline is also shaped like a
  human playthrough's: rewards are dense while a wall is full; the last ``--sparse-bricks``
  bricks of each of the two walls are paced, one at a time, so that they spread over the
  ``--frames`` aimed at (an offset that would hit a brick too soon is passed over, and once the
  gap is long enough one that hits a brick is preferred). Where no offset keeps the ball, or no
  reward came for ``--max-gap`` frames, the recording is rewound (``DemoBuilder.truncate``, as a
  person would in the recorder) and played again. After the last brick the ball is kept in play
  up to ``--frames`` (at least ``--tail`` frames). The seed fixes every choice, so the same demo
  comes out every time.
* **The recording.** The actions found are written as an action script (``record --actions``'s
  format) and replayed from the game start by the project's own recorder (``record_script``,
  source ``scripted``); the demo is then checked with ``verify``.

The output goes to a git-ignored cache (``runs/bench/long_demo/`` by default): the demo file,
its action script and ``summary.json`` (frames, return, reward events, reward-free gaps, lives
lost). An existing demo made with the same settings is reused unless ``--force`` is given.

    python scripts/make_long_demo.py                     # 53,061 frames, one to two minutes
    python scripts/make_long_demo.py --max-frames 3000   # only the first 3,000 frames
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from bench_common import bench_dir, non_negative_int, positive_int, write_json  # scripts/ is on sys.path when a script runs
from curriculum_ppo.atomic import write_text_atomic
from curriculum_ppo.demo.action_script import format_action_script
from curriculum_ppo.demo.record import record_script
from curriculum_ppo.demo.store import Demo, DemoBuilder, load_demo
from curriculum_ppo.demo.verify import verify_demo
from curriculum_ppo.emulator import Emulator, EmulatorSettings, display_name
from curriculum_ppo.errors import UserError

GAME = "breakout"
OUT_DIR_NAME = "long_demo"  # under runs/bench/ (bench_common.bench_dir)
DEMO_NAME = "Breakout-long.h5"
SCRIPT_NAME = "Breakout-long.actions"
SUMMARY_NAME = "summary.json"
CONTROLLER_VERSION = 1
"""Bump when the player or the search changes: a cached demo of another version is made again."""

# Breakout's RAM and geometry (ale-py's ROM): ball x/y, paddle x; y = 0 while no ball is in play.
RAM_BALL_X, RAM_BALL_Y, RAM_PADDLE_X = 99, 101, 72
BALL_X_MIN, BALL_X_MAX = 55, 201  # the ball's x between the side walls
PADDLE_BOUNCE_Y = 178  # ball y at which the paddle sends it back up
PADDLE_CENTRE = 10  # paddle x is this far left of a ball that hits its centre
OFFSET_RANGE = 6  # the aim is off-centre by -6..6, redrawn at every paddle bounce
DEADBAND = 2
BRICKS_PER_WALL = 108  # two walls of 6 x 18 bricks; every brick is one reward event
WALLS = 2
NOOP, FIRE, RIGHT, LEFT = 0, 1, 2, 3  # Breakout's minimal action set


@dataclass(frozen=True)
class Settings:
    """Everything that decides the demo: the same settings make the same file."""

    seed: int = 0
    frames: int = 53_061
    """Length aimed at (the human Montezuma demo's); the demo ends after both walls and ``tail`` frames."""
    sparse_bricks: int = 10
    max_gap: int = 4500
    tail: int = 525
    max_frames: int | None = None
    controller_version: int = CONTROLLER_VERSION


# -- the player (pure) ----------------------------------------------------------------------------
def landing_x(ball_x: int, ball_y: int, dx: int, dy: int) -> float | None:
    """Where a falling ball will cross the paddle's height, side walls reflected; ``None`` if it rises."""
    if dy <= 0:
        return None
    x = ball_x + dx * (PADDLE_BOUNCE_Y - ball_y) / dy
    span = BALL_X_MAX - BALL_X_MIN
    u = (x - BALL_X_MIN) % (2 * span)
    return BALL_X_MIN + (u if u <= span else 2 * span - u)


def ball_in_play(ram: np.ndarray) -> bool:
    return int(ram[RAM_BALL_Y]) != 0 and int(ram[RAM_BALL_X]) != 0


def bounced_off_paddle(ram: np.ndarray, prev: np.ndarray | None, prev2: np.ndarray | None) -> bool:
    """The ball was falling one frame ago and rises now: the moment to choose a new aim offset."""
    if prev is None or prev2 is None or not (ball_in_play(ram) and ball_in_play(prev) and ball_in_play(prev2)):
        return False
    falling_then_rising = int(prev[RAM_BALL_Y]) > int(prev2[RAM_BALL_Y]) and int(ram[RAM_BALL_Y]) < int(prev[RAM_BALL_Y])
    return falling_then_rising and int(prev[RAM_BALL_Y]) >= PADDLE_BOUNCE_Y - 8  # not a brick hit from above


def paddle_action(ram: np.ndarray, prev: np.ndarray | None, offset: int) -> int:
    """FIRE without a ball; otherwise steer the paddle under the ball's landing point (plus ``offset``)."""
    if not ball_in_play(ram):
        return FIRE
    ball_x, ball_y, paddle_x = int(ram[RAM_BALL_X]), int(ram[RAM_BALL_Y]), int(ram[RAM_PADDLE_X])
    dx = dy = 0
    if prev is not None and ball_in_play(prev):
        dx, dy = ball_x - int(prev[RAM_BALL_X]), ball_y - int(prev[RAM_BALL_Y])
    land = landing_x(ball_x, ball_y, dx, dy)
    goal = (land if land is not None else ball_x) - PADDLE_CENTRE + offset
    error = goal - paddle_x
    return RIGHT if error > DEADBAND else LEFT if error < -DEADBAND else NOOP


# -- pacing and choosing an aim (pure) ------------------------------------------------------------
DENSE_FRAMES_PER_BRICK = 80  # about what a brick of a full wall costs this player
LEAST_PACED_GAP = 600


@dataclass(frozen=True)
class Outlook:
    """What playing one aim offset from a paddle bounce leads to, in frames from now.

    Where the ball goes after a bounce was decided by the aim *before* it, so an offset chosen now
    shows in the *next* cycle (paddle bounce to paddle bounce): that is the cycle judged.
    """

    lost: bool
    """The ball is lost before the next paddle bounce."""
    last_hit: int | None
    """The last brick hit before the next paddle bounce (already decided)."""
    next_bounce: int | None
    next_cycle_hits: tuple[int, ...]
    """The bricks hit in the cycle after the next bounce (a ball among the top rows can hit several)."""


def wanted_gap(settings: Settings, frame: int, bricks_done: int) -> int | None:
    """Least frames between rewards wanted now: ``None`` while a wall is still dense.

    In the last ``sparse_bricks`` bricks of a wall, the frames left to the target length (less the
    tail and the dense bricks still to come) are shared out over the paced bricks still to come.
    """
    total = BRICKS_PER_WALL * WALLS
    if bricks_done >= total:
        return None
    dense_at = BRICKS_PER_WALL - settings.sparse_bricks
    if bricks_done % BRICKS_PER_WALL < dense_at:
        return None
    left = range(bricks_done, total)
    dense_left = sum(1 for i in left if i % BRICKS_PER_WALL < dense_at)
    sparse_left = len(left) - dense_left
    budget = settings.frames - settings.tail - frame - dense_left * DENSE_FRAMES_PER_BRICK
    return int(np.clip(budget // sparse_left, LEAST_PACED_GAP, max(LEAST_PACED_GAP, settings.max_gap - 1500)))


def choose_offset(candidates, outlook_of, frame: int, last_reward: int, min_gap: int | None) -> tuple[int, str]:
    """The first candidate offset whose outlook fits the pacing; returns it and why it was taken.

    The ball must never be lost. Unpaced (``min_gap`` None): any offset that keeps it. Paced: a brick
    hit sooner than ``min_gap`` after the last reward (or a second one in the same cycle) is avoided, and
    once the gap is long enough an offset that hits exactly one is preferred. Without a fitting offset, one that keeps the ball and is not
    too soon is taken, then one that is too soon (``"early"``), then offset 0 (``"no_safe_offset"``).
    """
    calm = early = None
    for offset in candidates:
        outlook = outlook_of(offset)
        if outlook.lost:
            continue
        if min_gap is None:
            return offset, "fits"
        last = frame + outlook.last_hit if outlook.last_hit is not None else last_reward
        want_hit = outlook.next_bounce is not None and frame + outlook.next_bounce - last >= min_gap
        hits = outlook.next_cycle_hits
        too_soon = bool(hits) and (frame + hits[0] - last < min_gap or len(hits) > 1)
        if (want_hit and len(hits) == 1 and not too_soon) or (not want_hit and not hits):
            return offset, "fits"
        if calm is None and not too_soon:
            calm = offset
        if early is None:
            early = offset
    if calm is not None:
        return calm, "calm"
    if early is not None:
        return early, "early"
    return 0, "no_safe_offset"


# -- the search -----------------------------------------------------------------------------------
def look_ahead(emu: Emulator, history: tuple, offset: int, limit: int = 3000) -> tuple[Outlook, int]:
    """Play ``offset`` from here to the second paddle bounce (or a lost ball), then put the emulator back.

    ``history`` is the RAM of the last three frames; returns the outlook and the frames played.
    """
    state = emu.save_state()
    prev2, prev, ram = history
    lives = emu.lives()
    last_hit = next_bounce = None
    hits: list[int] = []
    frames = 0
    for frames in range(1, limit + 1):
        reward = emu.step(paddle_action(ram, prev, offset))
        prev2, prev, ram = prev, ram, emu.ram()
        if reward:
            if next_bounce is None:
                last_hit = frames
            else:
                hits.append(frames)
        if emu.lives() < lives or emu.game_over():
            break
        if bounced_off_paddle(ram, prev, prev2):
            if next_bounce is not None:
                break
            next_bounce = frames
    emu.restore_state(state)
    return Outlook(next_bounce is None, last_hit, next_bounce, tuple(hits)), frames


@dataclass
class SearchStats:
    demo_steps: int = 0
    look_ahead_frames: int = 0
    decisions: int = 0
    calm_choices: int = 0
    early_choices: int = 0
    no_safe_offset: int = 0
    life_rewinds: int = 0
    long_gap_rewinds: int = 0
    wall_s: float = 0.0


def search_actions(settings: Settings, progress=None) -> tuple[list[int], SearchStats]:
    """Play Breakout with look-ahead and rewinds (see the module docstring); return the demo's actions."""
    emu = Emulator(EmulatorSettings(GAME, seed=0))
    rng = np.random.default_rng(settings.seed)
    builder = DemoBuilder(emu)
    stats = SearchStats()
    total_bricks = BRICKS_PER_WALL * WALLS
    offsets = np.arange(-OFFSET_RANGE, OFFSET_RANGE + 1)
    events: list[int] = []  # frame after each reward (= len(builder) right after it)
    offset, decide = 0, False
    last_death, death_streak, gap_streak = -1, 0, 0
    start = time.perf_counter()
    step_limit = 20 * max(settings.frames, settings.max_frames or 0) + 100_000
    while True:
        ram = builder.ram[-1]
        prev = builder.ram[-2] if len(builder.ram) > 1 else None
        prev2 = builder.ram[-3] if len(builder.ram) > 2 else None
        t = len(builder)
        last = events[-1] if events else 0
        if decide or bounced_off_paddle(ram, prev, prev2):
            decide = False
            history = (prev2, prev, ram)

            def outlook_of(candidate: int) -> Outlook:
                outlook, frames = look_ahead(emu, history, candidate)
                stats.look_ahead_frames += frames
                return outlook

            min_gap = wanted_gap(settings, t, len(events))
            offset, why = choose_offset((int(o) for o in rng.permutation(offsets)), outlook_of, t, last, min_gap)
            stats.decisions += 1
            stats.calm_choices += why == "calm"
            stats.early_choices += why == "early"
            stats.no_safe_offset += why == "no_safe_offset"
        lives = builder.lives[-1]
        reward = builder.step(paddle_action(ram, prev, offset))
        stats.demo_steps += 1
        t = len(builder)
        back = None
        if builder.lives[-1] < lives or emu.game_over():
            death_streak = death_streak + 1 if abs(t - last_death) <= 100 else 0
            last_death = t
            back = t - min(60 + 40 * death_streak, 1000)
            stats.life_rewinds += 1
        elif reward:
            events.append(t)
            gap_streak = 0
        elif len(events) < total_bricks and t - last > settings.max_gap:
            back = last if gap_streak < 3 else last - 300 * (gap_streak - 2)
            gap_streak += 1
            stats.long_gap_rewinds += 1
        if back is not None:
            builder.truncate(max(0, back))
            decide = True  # choose the aim again from here, with the look-ahead
            while events and events[-1] > len(builder):
                events.pop()
        if settings.max_frames is not None and len(builder) >= settings.max_frames:
            break
        if len(events) == total_bricks and len(builder) >= max(settings.frames, events[-1] + settings.tail):
            break
        if progress is not None and stats.demo_steps % 10_000 == 0:
            progress(f"  {stats.demo_steps:,} steps, demo at frame {len(builder):,}, "
                     f"{len(events)} of {total_bricks} bricks")
        if stats.demo_steps > step_limit:
            raise UserError(f"the Breakout player made no progress in {step_limit:,} steps "
                            f"(demo at frame {len(builder)}); try another --seed")
    stats.wall_s = time.perf_counter() - start
    return list(builder.actions), stats


# -- the summary (pure) ---------------------------------------------------------------------------
def reward_timeline(rewards: np.ndarray) -> dict:
    """Reward events and reward-free gaps of a demo (the gap before the first and after the last included)."""
    rewards = np.asarray(rewards)
    n = len(rewards)
    events = np.flatnonzero(rewards)
    starts = np.concatenate([[0], events + 1])  # a gap runs from one past an event up to the next event
    ends = np.concatenate([events, [n]])
    gaps = ends - starts
    k = int(np.argmax(gaps))
    return {
        "reward_events": int(len(events)),
        "first_reward_frame": int(events[0]) if len(events) else None,
        "last_reward_frame": int(events[-1]) if len(events) else None,
        "longest_reward_free_gap": {"frames": int(gaps[k]), "from": int(starts[k]), "to": int(ends[k])},
        "gaps_over_1000": int((gaps > 1000).sum()),
        "gaps_over_2000": int((gaps > 2000).sum()),
        "events_per_5000_frames": [int(((events >= a) & (events < a + 5000)).sum()) for a in range(0, n, 5000)],
    }


def summarize(demo: Demo) -> dict:
    return {"game": demo.game, "frames": len(demo), "total_return": demo.total_return,
            **reward_timeline(demo.rewards), "lives_lost": len(demo.life_losses())}


# -- making (and caching) the demo ----------------------------------------------------------------
def paths(out_dir: Path) -> tuple[Path, Path, Path]:
    return out_dir / DEMO_NAME, out_dir / SCRIPT_NAME, out_dir / SUMMARY_NAME


def cached_summary(out_dir: Path, settings: Settings) -> dict | None:
    """The summary of a demo already made in ``out_dir`` with these settings, or ``None``."""
    demo_path, script_path, summary_path = paths(out_dir)
    if not (demo_path.is_file() and script_path.is_file() and summary_path.is_file()):
        return None
    try:
        summary = json.loads(summary_path.read_text())
    except (OSError, ValueError):
        return None
    if summary.get("settings") != asdict(settings):
        return None
    if summary.get("actions_sha256") != hashlib.sha256(script_path.read_bytes()).hexdigest():
        return None
    return summary


def make_long_demo(out_dir: Path, settings: Settings, *, verify: bool = True, force: bool = False,
                   log=print) -> tuple[Path, dict]:
    """Make (or reuse) the long demo in ``out_dir``; return its path and summary."""
    out_dir = Path(out_dir)
    demo_path, script_path, summary_path = paths(out_dir)
    if not force:
        summary = cached_summary(out_dir, settings)
        if summary is not None and (summary.get("verify_ok") or not verify):
            log(f"using the demo already made with these settings: {demo_path}")
            return demo_path, summary
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create {out_dir}: {exc.strerror or exc}") from None
    started = time.perf_counter()
    log(f"searching {display_name(GAME)} actions (seed {settings.seed}) ...")
    actions, stats = search_actions(settings, progress=log)
    names = Emulator(EmulatorSettings(GAME)).action_names
    header = (f"{display_name(GAME)}, {len(actions)} frames: made by scripts/make_long_demo.py "
              f"(controller version {CONTROLLER_VERSION})\nsettings: {json.dumps(asdict(settings))}")
    write_text_atomic(script_path, format_action_script(actions, names, header))
    t0 = time.perf_counter()
    demo = record_script(GAME, script_path, demo_path)
    record_s = time.perf_counter() - t0
    if list(demo.actions) != actions:
        raise UserError(f"{script_path} did not replay to the searched actions")
    verify_ok, verify_s = None, None
    if verify:
        t0 = time.perf_counter()
        result = verify_demo(load_demo(demo_path))
        verify_s = time.perf_counter() - t0
        verify_ok = result.ok
        if not result.ok:
            raise UserError(f"{demo_path} does not verify: frame {result.first_divergence}: {result.reason}")
    summary = {
        **summarize(demo),
        "demo": str(demo_path),
        "actions": str(script_path),
        "actions_sha256": hashlib.sha256(script_path.read_bytes()).hexdigest(),
        "verify_ok": verify_ok,
        "settings": asdict(settings),
        "search": asdict(stats),
        "record_s": record_s,
        "verify_s": verify_s,
        "total_s": time.perf_counter() - started,
    }
    write_json(summary_path, summary)
    return demo_path, summary


def print_summary(summary: dict) -> None:
    gap = summary["longest_reward_free_gap"]
    search = summary["search"]
    print(f"{summary['frames']:,} frames, return {summary['total_return']:g}, {summary['reward_events']} reward events "
          f"(first at frame {summary['first_reward_frame']}, last at {summary['last_reward_frame']}), "
          f"{summary['lives_lost']} lives lost")
    if gap:
        print(f"longest reward-free gap: {gap['frames']:,} frames ({gap['from']:,}..{gap['to']:,}); "
              f"{summary['gaps_over_1000']} gaps over 1,000 frames, {summary['gaps_over_2000']} over 2,000")
    print(f"reward events per 5,000 frames: {summary['events_per_5000_frames']}")
    print(f"search: {search['demo_steps']:,} steps and {search['look_ahead_frames']:,} look-ahead frames in "
          f"{search['wall_s']:.1f} s; {search['decisions']} aims chosen ({search['early_choices']} could not avoid an "
          f"early brick, {search['no_safe_offset']} had no safe one); rewinds: {search['life_rewinds']} after a lost "
          f"life, {search['long_gap_rewinds']} after {summary['settings']['max_gap']:,} frames without a reward")
    verified = {True: "verifies", False: "DOES NOT VERIFY", None: "not verified"}[summary["verify_ok"]]
    print(f"demo {summary['demo']} ({verified}); summary in {Path(summary['demo']).parent / SUMMARY_NAME}")



def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, help="where to write (default runs/bench/long_demo/)")
    parser.add_argument("--max-frames", type=positive_int, help="stop the demo at this many frames (for quick checks)")
    parser.add_argument("--seed", type=int, default=Settings.seed)
    parser.add_argument("--sparse-bricks", type=non_negative_int, default=Settings.sparse_bricks,
                        help="the last bricks of each wall, paced to spread over --frames (default %(default)s)")
    parser.add_argument("--frames", type=positive_int, default=Settings.frames,
                        help="length aimed at, in frames (default %(default)s)")
    parser.add_argument("--max-gap", type=positive_int, default=Settings.max_gap,
                        help="most frames without a reward before the last brick (default %(default)s)")
    parser.add_argument("--tail", type=non_negative_int, default=Settings.tail,
                        help="least frames played after the last brick (default %(default)s)")
    parser.add_argument("--no-verify", action="store_true", help="skip replaying the demo with verify")
    parser.add_argument("--force", action="store_true", help="make the demo again even if one with these settings exists")
    args = parser.parse_args(argv)
    if args.sparse_bricks > BRICKS_PER_WALL:
        parser.error(f"--sparse-bricks must be at most {BRICKS_PER_WALL} (the bricks of one wall), got {args.sparse_bricks}")
    if args.max_gap <= LEAST_PACED_GAP + 1500:
        parser.error(f"--max-gap must be over {LEAST_PACED_GAP + 1500} frames, got {args.max_gap}")
    settings = Settings(seed=args.seed, frames=args.frames, sparse_bricks=args.sparse_bricks,
                        max_gap=args.max_gap, tail=args.tail, max_frames=args.max_frames)
    try:
        out_dir = args.out_dir if args.out_dir is not None else bench_dir(OUT_DIR_NAME)
        _, summary = make_long_demo(out_dir, settings, verify=not args.no_verify, force=args.force,
                                    log=lambda line: print(line, file=sys.stderr))
    except UserError as exc:
        raise SystemExit(f"make_long_demo: error: {exc}") from None
    print_summary(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
