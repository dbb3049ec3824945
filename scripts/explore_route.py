#!/usr/bin/env python3
"""Find a route through an Atari game by exploration from saved emulator states, and write it as an action script.

This is the first phase of Go-Explore with domain knowledge (Ecoffet et al.), in one process:

1. The *archive* maps a cell -- the room, the player's position in a coarse grid and a few
   game bytes (level, inventory), all read from RAM -- to the best way found so far to reach it:
   the highest score, then the fewest frames. It keeps that trajectory's actions and the
   emulator state at its end.
2. Each iteration picks a cell (cells chosen less often, seen less often, and at the higher
   scores weigh more), restores its state and plays sticky random actions from there.
3. Every cell the exploration reaches better than the archive knows it becomes a candidate.
   A candidate is kept only if the player is still alive ``--doom-frames`` frames later: at
   the end of an exploration the game runs on with NOOP to check, and whatever lies that close
   before a lost life is thrown away. So a falling player, who is doomed before the game
   counts the life, never becomes a cell's best way, and no kept trajectory ever loses a life.

The best trajectory at the end (highest score, then shortest) is replayed from the game's start
to check that it reproduces, and written as a run-length encoded action script, with a comment
at every reward and every room change, which ``curriculum-ppo record --actions`` turns into a
demo. The search is deterministic: the same game, ``--prefix``, ``--seed``, ``--frames`` and
exploration flags give the same script on any machine with the same ale-py and ROM. ``--minutes``
is a safety stop; when it ends a search early the output says how many frames it ran, and
``--frames`` with that number reproduces it.

    python scripts/explore_route.py --game MontezumaRevenge --prefix demos/MontezumaRevenge-room1.actions \\
        --frames 5000000 --seed 0 --out demos/MontezumaRevenge-rooms.actions
    python scripts/explore_route.py --game PrivateEye --frames 1000000 --stop-score 15000 --out /tmp/pe.actions

Without ``--json`` the search's figures go to ``runs/explore_route/<out name>.json`` (git-ignored).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench_learning import cpu_model  # scripts/ is on sys.path when a script runs
from curriculum_ppo.atomic import check_destination, write_text_atomic
from curriculum_ppo.demo.action_script import expand, read_action_script
from curriculum_ppo.emulator import Emulator, EmulatorSettings, display_name, resolve_game
from curriculum_ppo.errors import UserError

ROOT = Path(__file__).resolve().parent.parent


# -- what a cell is, per game ---------------------------------------------------------------------
@dataclass(frozen=True)
class CellSpec:
    """Which RAM bytes make a cell: room, x and y (binned), and bytes kept exactly (level, inventory)."""

    room: int
    x: int
    y: int
    exact: tuple[int, ...] = ()
    x_bin: int = 8
    y_bin: int = 8
    notes: str = ""

    def key(self, ram: np.ndarray) -> tuple[int, ...]:
        return (int(ram[self.room]), int(ram[self.x]) // self.x_bin, int(ram[self.y]) // self.y_bin,
                *(int(ram[i]) for i in self.exact))


CELL_SPECS: dict[str, CellSpec] = {
    # ram[3] room, ram[42]/ram[43] x/y (y grows upwards), ram[57] level, ram[65] inventory bits.
    "montezuma_revenge": CellSpec(room=3, x=42, y=43, exact=(57, 65), notes="room ram[3], x ram[42], y ram[43], "
                                  "level ram[57], inventory ram[65]"),
    # ram[1] screen id (the jungle's shift register), ram[97]/ram[105] Harry's x/y. No treasure was
    # found in a trial search, so no byte for treasures is known here; the score tells routes apart.
    "pitfall": CellSpec(room=1, x=97, y=105, x_bin=8, y_bin=16, notes="screen ram[1], x ram[97], y ram[105]"),
    # ram[92] block of the city, ram[63]/ram[86] car x/y (y is the jump), ram[72] items found (0 -> 1 at the
    # first clue).
    "private_eye": CellSpec(room=92, x=63, y=86, exact=(72,), x_bin=8, y_bin=8, notes="block ram[92], x ram[63], "
                            "y ram[86], items ram[72]"),
}


# -- the archive (pure logic: no emulator here) ---------------------------------------------------
@dataclass
class Cell:
    score: float
    actions: bytes
    state: bytes
    chosen: int = 0
    seen: int = 0
    since_new: int = 0

    @property
    def length(self) -> int:
        return len(self.actions)


def better(score: float, length: int, cell: Cell | None) -> bool:
    """Higher score wins; at equal score the shorter way wins."""
    return cell is None or score > cell.score or (score == cell.score and length < cell.length)


@dataclass
class Archive:
    cells: dict[tuple, Cell] = field(default_factory=dict)

    def offer(self, key: tuple, score: float, actions: bytes, state: bytes) -> bool:
        """Keep ``actions`` as the way to ``key`` if it is better than the one known; say whether it was."""
        old = self.cells.get(key)
        if not better(score, len(actions), old):
            return False
        if old is None:
            self.cells[key] = Cell(score, actions, state)
        else:  # a better way to a known cell: its counts stay, so it is not explored as if new
            old.score, old.actions, old.state = score, actions, state
        return True

    def weights(self, score_decay: float) -> np.ndarray:
        """Selection weights in insertion order: rarely chosen/seen cells, and higher scores, weigh more.

        The count terms are Go-Explore's ``1/sqrt(count + 1)``; the score term multiplies by
        ``score_decay`` for each distinct score between a cell's and the archive's best.
        """
        cells = list(self.cells.values())
        chosen = np.array([c.chosen for c in cells], dtype=np.float64)
        seen = np.array([c.seen for c in cells], dtype=np.float64)
        since = np.array([c.since_new for c in cells], dtype=np.float64)
        scores = np.array([c.score for c in cells])
        levels = np.unique(scores)
        below_best = len(levels) - 1 - np.searchsorted(levels, scores)
        w = 1.0 / np.sqrt(chosen + 1) + 0.5 / np.sqrt(since + 1) + 0.3 / np.sqrt(seen + 1)
        return w * score_decay ** below_best

    def select(self, rng: np.random.Generator, score_decay: float) -> tuple[tuple, Cell]:
        w = self.weights(score_decay)
        i = int(rng.choice(len(w), p=w / w.sum()))
        key = list(self.cells)[i]
        return key, self.cells[key]

    def best(self) -> tuple[tuple, Cell]:
        return max(self.cells.items(), key=lambda kv: (kv[1].score, -kv[1].length))


# -- exploration (the emulator) -------------------------------------------------------------------
@dataclass
class Params:
    explore_frames: int = 400
    repeat: int = 4
    stickiness: float = 0.95
    doom_frames: int = 100
    score_decay: float = 0.5


def explore_once(emu: Emulator, spec: CellSpec, archive: Archive, key: tuple, cell: Cell,
                 rng: np.random.Generator, p: Params) -> tuple[int, int]:
    """Restore ``cell``, play sticky random actions, keep the candidates that survive.

    Returns (frames emulated, cells added or improved).
    """
    emu.restore_state(cell.state)
    base = cell.actions  # read once: committing a better way back to this very cell replaces cell.actions
    lives = emu.lives()
    n = emu.num_actions
    score = cell.score
    action = int(rng.integers(n))
    taken = bytearray()
    candidates: dict[tuple, tuple[int, float, bytes]] = {}  # key -> (frames into exploration, score, state)
    visited: dict[tuple, int] = {}  # key -> first frame seen in this exploration
    death = None
    for t in range(p.explore_frames):
        if t % p.repeat == 0 and rng.random() >= p.stickiness:
            action = int(rng.integers(n))
        score += emu.step(action)
        taken.append(action)
        if emu.lives() < lives or emu.game_over():
            death = t
            break
        k = spec.key(emu.ram())
        visited.setdefault(k, t)
        length = len(base) + t + 1
        prior = candidates.get(k)
        if (prior is None or score > prior[1]) and better(score, length, archive.cells.get(k)):
            candidates[k] = (t, score, emu.save_state())
    run = len(taken)
    if death is None:  # does the player survive doom_frames more frames of standing still?
        for _ in range(p.doom_frames):
            emu.step(0)
            run += 1
            if emu.lives() < lives or emu.game_over():
                death = run - 1
                break
    limit = math.inf if death is None else death - p.doom_frames
    improved = 0
    for k, first in visited.items():
        if first <= limit and k in archive.cells:
            archive.cells[k].seen += 1
    for k, (t, s, state) in candidates.items():
        if t <= limit and archive.offer(k, s, base + bytes(taken[:t + 1]), state):
            improved += 1
    return run, improved


@dataclass
class SearchResult:
    archive: Archive
    frames: int
    iterations: int
    seconds: float
    stopped_by: str
    progress: list[dict]


def search(emu: Emulator, spec: CellSpec, start_actions: list[int], *, frames: int, seed: int, p: Params,
           minutes: float | None = None, stop_score: float | None = None, report=print,
           report_every_s: float = 30.0) -> SearchResult:
    """Explore from the state after ``start_actions`` until ``frames`` emulator frames were run.

    It stops earlier once a route scores at least ``stop_score``, or after ``minutes``.
    """
    rng = np.random.default_rng(seed)
    emu.reset()
    score = 0.0
    for a in start_actions:
        score += emu.step(a)
    archive = Archive()
    archive.offer(spec.key(emu.ram()), score, bytes(start_actions), emu.save_state())
    used = iterations = 0
    t0 = last = time.perf_counter()
    progress: list[dict] = []
    stopped_by = "frames"

    def line() -> dict:
        _, best = archive.best()
        rooms = sorted({k[0] for k in archive.cells})
        row = {"seconds": round(time.perf_counter() - t0, 1), "frames": used, "iterations": iterations,
               "cells": len(archive.cells), "best_score": best.score, "best_frames": best.length, "rooms": rooms}
        report(f"{row['seconds']:8.0f}s {used:>11,d} frames {used / max(row['seconds'], 1e-9):7.0f}/s  "
               f"{len(archive.cells):6d} cells  best {best.score:g} in {best.length} frames  rooms {rooms}")
        return row

    while used < frames:
        key, cell = archive.select(rng, p.score_decay)
        run, improved = explore_once(emu, spec, archive, key, cell, rng, p)
        cell.chosen += 1
        cell.since_new = 0 if improved else cell.since_new + 1
        used += run
        iterations += 1
        now = time.perf_counter()
        if now - last >= report_every_s:
            progress.append(line())
            last = now
        if stop_score is not None and improved and archive.best()[1].score >= stop_score:
            stopped_by = "stop-score"
            break
        if minutes is not None and now - t0 >= minutes * 60:
            stopped_by = "minutes"
            break
    progress.append(line())
    return SearchResult(archive, used, iterations, time.perf_counter() - t0, stopped_by, progress)


# -- the route: replay, events, script -----------------------------------------------------------
@dataclass
class Event:
    frame: int  # 0-based action index, as in a demo's arrays
    kind: str   # "reward" or "room"
    value: float
    score: float
    room: int


def replay_events(emu: Emulator, spec: CellSpec, actions: list[int]) -> tuple[list[Event], dict]:
    """Replay ``actions`` from the game's start; the reward and room-change events, and a summary."""
    emu.reset()
    lives0 = emu.lives()
    room = int(emu.ram()[spec.room])
    rooms = [room]
    score = 0.0
    events: list[Event] = []
    min_lives = lives0
    for i, a in enumerate(actions):
        r = emu.step(a)
        score += r
        ram = emu.ram()
        min_lives = min(min_lives, emu.lives())
        if r:
            events.append(Event(i, "reward", r, score, int(ram[spec.room])))
        if int(ram[spec.room]) != room:
            room = int(ram[spec.room])
            events.append(Event(i, "room", room, score, room))
            if room not in rooms:
                rooms.append(room)
    summary = {"frames": len(actions), "return": score, "lives_lost": lives0 - min_lives,
               "reward_events": [[e.frame, e.value] for e in events if e.kind == "reward"],
               "rooms_visited": rooms, "room_changes": [[e.frame, e.room] for e in events if e.kind == "room"]}
    return events, summary


def format_route(actions: list[int], names: list[str], events: list[Event], header: list[str]) -> str:
    """Run-length encoded script; a run is split where an event happens, and the event is a comment after it."""
    out = [f"# {h}".rstrip() for h in header]
    by_frame: dict[int, list[Event]] = {}
    for e in events:
        by_frame.setdefault(e.frame, []).append(e)
    i = 0
    while i < len(actions):
        j = i + 1
        while j < len(actions) and actions[j] == actions[i] and (j - 1) not in by_frame:
            j += 1
        out.append(f"{names[actions[i]]} {j - i}" if j - i > 1 else names[actions[i]])
        for e in by_frame.get(j - 1, []):
            if e.kind == "reward":
                out.append(f"# --- frame {e.frame}: {e.value:+g} (score {e.score:g}) in room {e.room}")
            else:
                out.append(f"# --- frame {e.frame}: enters room {e.room} (score {e.score:g})")
        i = j
    return "\n".join(out) + "\n"


# -- command line ---------------------------------------------------------------------------------
def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--game", required=True, help=f"one of: {', '.join(display_name(g) for g in CELL_SPECS)}")
    ap.add_argument("--out", required=True, help="the action script to write")
    ap.add_argument("--prefix", help="action script played first; the search starts where it ends")
    ap.add_argument("--frames", type=int, default=2_000_000, help="emulator frames to explore (default 2,000,000)")
    ap.add_argument("--minutes", type=float, help="stop early after this long (the output says at which frame)")
    ap.add_argument("--stop-score", type=float, help="stop as soon as a route scores at least this much")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--explore-frames", type=int, default=Params.explore_frames,
                    help=f"frames per exploration (default {Params.explore_frames})")
    ap.add_argument("--repeat", type=int, default=Params.repeat, help="frames per random decision (default 4)")
    ap.add_argument("--stickiness", type=float, default=Params.stickiness,
                    help="chance a decision keeps the previous action (default 0.95)")
    ap.add_argument("--doom-frames", type=int, default=Params.doom_frames,
                    help=f"a cell counts only if the player lives this many frames on (default {Params.doom_frames})")
    ap.add_argument("--score-decay", type=float, default=Params.score_decay,
                    help="weight factor per distinct score below the best (default 0.5)")
    ap.add_argument("--json", help="write the search's figures here (default runs/explore_route/<out>.json)")
    args = ap.parse_args(argv)
    for name in ("frames", "explore_frames", "repeat"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.doom_frames < 0:
        ap.error("--doom-frames must be 0 or more")
    if not 0 <= args.stickiness < 1:
        ap.error("--stickiness must be in [0, 1)")
    if not 0 < args.score_decay <= 1:
        ap.error("--score-decay must be in (0, 1]")
    if args.minutes is not None and args.minutes <= 0:
        ap.error("--minutes must be positive")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        game = resolve_game(args.game)
        if game not in CELL_SPECS:
            raise UserError(f"no cell definition for {display_name(game)}; explore_route knows "
                            f"{', '.join(display_name(g) for g in CELL_SPECS)}")
        spec = CELL_SPECS[game]
        out = check_destination(args.out, "--out")
        json_path = Path(args.json) if args.json else ROOT / "runs" / "explore_route" / f"{out.stem}.json"
        if not args.json:
            json_path.parent.mkdir(parents=True, exist_ok=True)
        check_destination(json_path, "--json")
        emu = Emulator(EmulatorSettings(game))
        prefix = expand(read_action_script(args.prefix, emu.action_names)) if args.prefix else []
        p = Params(args.explore_frames, args.repeat, args.stickiness, args.doom_frames, args.score_decay)
        print(f"exploring {display_name(game)} from frame {len(prefix)}: cells {spec.notes}; "
              f"{args.frames:,d} frames, seed {args.seed}", flush=True)
        result = search(emu, spec, prefix, frames=args.frames, seed=args.seed, p=p, minutes=args.minutes,
                        stop_score=args.stop_score, report=lambda s: print(s, flush=True))
        _, best = result.archive.best()
        if best.length == len(prefix):
            raise UserError(f"in {result.frames:,d} frames no route scored more than the start "
                            f"({best.score:g}); nothing written: search longer (--frames)")
        actions = list(best.actions)
        events, summary = replay_events(emu, spec, actions)
        if summary["return"] != best.score or summary["lives_lost"]:
            raise RuntimeError(f"the route does not replay from the start: {summary['return']} points and "
                               f"{summary['lives_lost']} lives lost, the search had {best.score}")
        command = " ".join(["python scripts/explore_route.py", "--game", display_name(game),
                            *(["--prefix", args.prefix] if args.prefix else []), "--frames", str(result.frames),
                            *(["--stop-score", f"{args.stop_score:g}"] if args.stop_score is not None else []),
                            "--seed", str(args.seed), *explicit_params(args, p), "--out", str(args.out)])
        header = [f"{display_name(game)} (ale-py rom '{game}'): a route found by scripts/explore_route.py.",
                  "Made by:", f"  {command}",
                  *([f"  The first {len(prefix)} frames are {Path(args.prefix).name} "
                     f"(sha256 {hashlib.sha256(Path(args.prefix).read_bytes()).hexdigest()[:16]}...)."]
                    if args.prefix else []),
                  f"Cells: {spec.notes}.",
                  "Emulator: random_seed=0, repeat_action_probability=0.0, frame_skip=1, the minimal action set.",
                  "One action = ONE emulator frame. Format: 'ACTION_NAME [repeat]'; '#' starts a comment.",
                  "Frame numbers below are 0-based action indices, as in the demo's arrays.",
                  f"Expected: {summary['frames']} frames, total score {summary['return']:g}, "
                  f"{len(summary['reward_events'])} rewards, rooms {summary['rooms_visited']}, no life lost.",
                  "Record it with:",
                  f"  curriculum-ppo record --game {display_name(game)} --actions {args.out} "
                  f"--out {Path(args.out).with_suffix('.h5')}", ""]
        write_text_atomic(out, format_route(actions, emu.action_names, events, header))
        record = {"game": game, "command": command, "seed": args.seed, "params": vars(p),
                  "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "load_average_at_end": os.getloadavg()},
                  "prefix": args.prefix, "prefix_frames": len(prefix), "frames_explored": result.frames,
                  "iterations": result.iterations, "seconds": round(result.seconds, 1),
                  "stopped_by": result.stopped_by, "cells": len(result.archive.cells),
                  "route": summary, "progress": result.progress}
        write_text_atomic(json_path, json.dumps(record, indent=2) + "\n")
    except UserError as exc:
        print(f"explore_route.py: error: {exc}", file=sys.stderr)
        return 2
    print()
    print(f"{'frames explored':<18}{result.frames:>12,d}   ({result.stopped_by}; {result.seconds / 60:.1f} min, "
          f"{result.iterations:,d} explorations, {len(result.archive.cells):,d} cells)")
    print(f"{'route frames':<18}{summary['frames']:>12,d}")
    print(f"{'route return':<18}{summary['return']:>12g}")
    print(f"{'rooms visited':<18}{str(summary['rooms_visited']):>12}")
    print(f"{'lives lost':<18}{summary['lives_lost']:>12d}")
    print(f"{'reward events':<18}{len(summary['reward_events']):>12d}   "
          + " ".join(f"{f}:{r:+g}" for f, r in summary["reward_events"]))
    if result.stopped_by == "minutes":
        print(f"stopped by --minutes; --frames {result.frames} reproduces this search")
    print(f"wrote {out} and {json_path}")
    return 0



def explicit_params(args: argparse.Namespace, p: Params) -> list[str]:
    """The exploration flags that differ from their defaults, for the reproduce command."""
    default = Params()
    out = []
    for name in ("explore_frames", "repeat", "stickiness", "doom_frames", "score_decay"):
        if getattr(p, name) != getattr(default, name):
            out += [f"--{name.replace('_', '-')}", str(getattr(p, name))]
    return out


if __name__ == "__main__":
    sys.exit(main())
