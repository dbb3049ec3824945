"""``curriculum-ppo inspect RUN_DIR``: the state of a training run on one screen.

Reads only small files (``config.json``, the tail of ``metrics.jsonl``, the
directory listing) through :mod:`curriculum_ppo.training.run_dir`, and the
checkpoints only for ``--since``, so it is instant and safe to run while the
trainer is writing.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from curriculum_ppo.errors import UserError
from curriculum_ppo.training.run_dir import RunDir, read_json, read_latest_metrics

PLOTS = ("curriculum.png", "score.png", "success.png", "success_by_start.png")


def _demo_info(demo: str | None) -> dict:
    """Game and length of the demo file, from its HDF5 attributes (cheap), or {} if unreadable."""
    if not demo or not Path(demo).is_file():
        return {}
    from curriculum_ppo.demo.reader import read_demo_file

    try:  # the guarded reader: a damaged demo (even one that crashes libhdf5) must not break inspect
        contents = read_demo_file(demo, arrays=())
    except UserError:
        return {}
    return {"game": contents.attrs.get("game"), "length": contents.shapes.get("actions", (None,))[0]}


def _age(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s ago"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h ago"
    return f"{seconds / 86400:.0f} days ago"


def success_since(run_dir: Path, since: str, until: str | None = None, bin_frames: int | None = None,
                  starts: tuple[int, int] | None = None) -> dict:
    """Success by start frame over the episodes between checkpoint ``since`` and ``until`` (default ``latest.pt``).

    The only part of ``inspect`` that opens checkpoints (two of them, safely:
    ``weights_only``). Checkpoints are paths or file names in ``RUN/checkpoints``.
    ``starts=(first, last)`` limits the table to those start frames, in one
    range unless ``bin_frames`` cuts it.
    """
    from curriculum_ppo.curriculum import counts_between, state_summary
    from curriculum_ppo.training.run_dir import load_checkpoint, saved_scheduler_state
    from curriculum_ppo.training.stats import success_by_start_table

    older_path = RunDir(run_dir).find_checkpoint(since)
    newer_path = RunDir(run_dir).find_checkpoint(until or "latest.pt")
    older, newer = load_checkpoint(older_path), load_checkpoint(newer_path)
    states = [saved_scheduler_state(c) for c in (older, newer)]
    if states[0] is None or states[1] is None:
        raise UserError(f"--since: {older_path if states[0] is None else newer_path} holds no curriculum "
                        "(a run without a demo)")
    frames, attempts, successes = counts_between(states[0], states[1])
    newest = state_summary(states[1])
    length = newest["demo_length"]
    if starts is None:
        table = success_by_start_table(frames, attempts, successes, length, bin_frames=bin_frames)
    else:
        first, last = starts
        if not 0 <= first <= last < length:
            raise UserError(f"--starts {first}:{last} is not a range of start frames in the demo (0..{length - 1})")
        table = success_by_start_table(frames, attempts, successes, length, bin_frames=bin_frames or last - first + 1,
                                       first=first, last=last)
    table.update({"since": str(older_path), "since_frames": older.get("frames"), "until": str(newer_path),
                  "frames": newer.get("frames"), "start_frame": newest["window_start"]})
    return table


def collect(run_dir: str | Path, since: str | None = None, **since_options) -> dict:
    """Everything ``inspect`` shows, as a JSON-serialisable dict."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"run directory not found: {run_dir}")
    layout = RunDir(run_dir)
    config = read_json(layout.config)
    metrics_path = layout.metrics
    if config is None and not metrics_path.exists():
        raise UserError(f"{run_dir} is not a training run directory (no config.json or metrics.jsonl)")
    config = config or {}
    now = time.time()
    latest, rows = read_latest_metrics(metrics_path)
    demo = _demo_info(config.get("demo"))
    atari = config.get("atari") or {}
    summary = {
        "game": config.get("game") or demo.get("game"),
        "demo": config.get("demo"),
        "demo_length": demo.get("length") if demo else (latest or {}).get("demo_length"),
        "total_frames": config.get("total_frames"),
        "num_envs": config.get("num_envs"),
        "num_steps": config.get("num_steps"),
        "arch": config.get("arch"),
        "recurrent": config.get("recurrent"),
        "obs_mode": atari.get("obs_mode"),
        "seed": config.get("seed"),
        "version": config.get("version"),
    }
    checkpoints = []
    for path in layout.list_checkpoints():
        try:
            st = path.stat()
        except OSError:
            continue
        checkpoints.append({"name": path.name, "path": str(path), "bytes": st.st_size,
                            "age_s": round(now - st.st_mtime, 1)})
    plots = []
    for name in PLOTS:
        path = run_dir / name
        if path.exists():
            plots.append({"name": name, "path": str(path), "age_s": round(now - path.stat().st_mtime, 1)})
    progress = None
    if latest and summary["total_frames"]:
        progress = min(1.0, latest.get("frames", 0) / summary["total_frames"])
    metrics_age = round(now - metrics_path.stat().st_mtime, 1) if metrics_path.exists() else None
    by_start = read_json(layout.success_by_start)
    info = {"run_dir": str(run_dir), "config": summary, "updates_logged": rows, "latest": latest,
            "progress": progress, "metrics_age_s": metrics_age, "checkpoints": checkpoints, "plots": plots,
            "success_by_start": by_start}
    if since is not None:
        info["success_by_start_since"] = success_since(run_dir, since, **since_options)
    return info


def _num(value, fmt: str = "{:.1f}", none: str = "-") -> str:
    return none if value is None else fmt.format(value)


def _run_lines(info: dict) -> list[str]:
    """The run's game, demo, budget and network: what ``config.json`` says."""
    from curriculum_ppo.emulator import display_name

    c = info["config"]
    game = display_name(c["game"]) if c.get("game") else "unknown game"
    demo = f"demo {c['demo']}" + (f" ({c['demo_length']} frames)" if c.get("demo_length") else "") \
        if c.get("demo") else "no demo (plain PPO from the game start)"
    return [f"run {info['run_dir']}: {game}",
            f"  {demo}",
            f"  budget {_num(c.get('total_frames'), '{:,}')} frames; {c.get('num_envs')} envs x "
            f"{c.get('num_steps')} steps; arch {c.get('arch')}{' + GRU' if c.get('recurrent') else ''}, "
            f"obs {c.get('obs_mode')}, seed {c.get('seed')}"]


def _curriculum_line(r: dict) -> str:
    """Where episodes start (the curriculum's position), its success rate and its last move."""
    if r.get("curriculum_done"):
        where = "curriculum done: episodes start at the game start"
    elif r.get("start_frame") is not None:
        n = r.get("demo_length")
        where = f"curriculum start frame {r['start_frame']} / {n}" if n else f"start frame {r['start_frame']}"
    else:
        where = "no curriculum"
    return (f"  {where}; success rate {_num(r.get('success_rate'), '{:.0%}')}"
            + (f"; moved {r['curriculum_move']}" if r.get("curriculum_move") else ""))


def _latest_lines(info: dict) -> list[str]:
    """The last logged update: progress, curriculum, scores and losses."""
    c, r = info["config"], info["latest"]
    if r is None:
        return ["latest: no update logged yet"]
    age = f", written {_age(info['metrics_age_s'])}" if info.get("metrics_age_s") is not None else ""
    pct = f" ({info['progress']:.0%})" if info.get("progress") is not None else ""
    lines = [f"latest (update {r.get('updates')}, {info['updates_logged']} rows{age}):",
             f"  frames {r.get('frames', 0):,} / {_num(c.get('total_frames'), '{:,}')}{pct}, "
             f"{_num(r.get('fps'), '{:,.0f}')} frames/s, {_num(r.get('time'), '{:,.0f}')} s of training",
             _curriculum_line(r)]
    bins = r.get("window_bin_success_rates")
    if bins:
        lines.append("  success inside the window, front to back: " + " ".join(_num(b, "{:.0%}") for b in bins))
    lines.append(f"  score mean {_num(r.get('score_mean'))}, max {_num(r.get('score_max'), '{:g}')}, "
                 f"from game start {_num(r.get('score_from_start_mean'))}, best {_num(r.get('best_score'), '{:g}')}"
                 f"; {r.get('episodes', 0)} episodes")
    lines.append(f"  losses: policy {_num(r.get('policy_loss'), '{:.4g}')}, "
                 f"value {_num(r.get('value_loss'), '{:.4g}')}, "
                 f"entropy {_num(r.get('entropy'), '{:.3g}')}, kl {_num(r.get('approx_kl'), '{:.2g}')}, "
                 f"clipfrac {_num(r.get('clipfrac'), '{:.2g}')}, lr {_num(r.get('lr'), '{:.3g}')}")
    return lines


def _success_by_start_lines(info: dict) -> list[str]:
    """The all-time success by start frame (when any start has episodes), then the ``--since`` table if asked."""
    lines = []
    table = info.get("success_by_start")
    if table and any(b.get("episodes") for b in table.get("bins", [])):
        lines.append(f"success by start frame (all episodes so far, at {table.get('frames', 0):,} frames):")
        lines.extend(_table_lines(table))
    since = info.get("success_by_start_since")
    if since is not None:
        lines.append(f"success by start frame between {Path(since['since']).name} "
                     f"({_num(since.get('since_frames'), '{:,}')} frames) and {Path(since['until']).name} "
                     f"({_num(since.get('frames'), '{:,}')} frames):")
        lines.extend(_table_lines(since) or ["  no episodes in between"])
    return lines


def _checkpoints_line(checkpoints: list[dict]) -> str:
    """The checkpoints with size and age: ``latest.pt`` and the three newest others when there are many."""
    if not checkpoints:
        return "checkpoints: none yet"
    shown = checkpoints if len(checkpoints) <= 4 else [k for k in checkpoints if k["name"] == "latest.pt"] + \
        [k for k in checkpoints if k["name"] != "latest.pt"][-3:]
    parts = [f"{k['name']} ({k['bytes'] / 1e6:.1f} MB, {_age(k['age_s'])})" for k in shown]
    more = f" (+{len(checkpoints) - len(shown)} older)" if len(checkpoints) > len(shown) else ""
    return f"checkpoints ({len(checkpoints)}): " + ", ".join(parts) + more


def _plots_line(info: dict) -> str:
    plots = info["plots"]
    return "plots: " + (", ".join(p["name"] for p in plots) if plots else
                        f"none (run: curriculum-ppo plot {info['run_dir']})")


def format_report(info: dict) -> str:
    """The text ``inspect RUN_DIR`` prints for :func:`collect`'s dict: one section after another, one screen."""
    lines = [*_run_lines(info), *_latest_lines(info), *_success_by_start_lines(info),
             _checkpoints_line(info["checkpoints"]), _plots_line(info)]
    return "\n".join(lines)


def _table_lines(table: dict) -> list[str]:
    """Ranges with episodes as 'first-last rate (episodes)', four per line: one screen even for 20 ranges."""
    cells = [f"{b['first']:>5}-{b['last']:<5} {_num(b.get('success_rate'), '{:>4.0%}')} ({b['episodes']})"
             for b in table["bins"] if b.get("episodes")]
    return ["  " + " | ".join(cells[i:i + 4]) for i in range(0, len(cells), 4)]


def inspect_run(path: str | Path, as_json: bool = False, since: str | None = None, **since_options) -> int:
    """Print the run's report; ``since_options`` go to :func:`success_since` (``until``, ``bin_frames``, ``starts``)."""
    info = collect(path, since=since, **since_options)
    if as_json:
        print(json.dumps(info, indent=2))
    else:
        print(format_report(info))
    sys.stdout.flush()
    return 0
