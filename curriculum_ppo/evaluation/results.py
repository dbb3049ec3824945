"""Per-protocol results: the summary statistics of each protocol's episodes and the printed table (pure)."""

from __future__ import annotations

import numpy as np

from curriculum_ppo.evaluation.protocols import EvalSettings


def summarize(scores: list[float], lengths: list[int], reasons: list, successes: list) -> dict:
    a = np.asarray(scores, dtype=np.float64)
    out = {
        "episodes": len(scores),
        "mean": float(a.mean()),
        "std": float(a.std(ddof=1)) if len(a) > 1 else 0.0,
        "median": float(np.median(a)),
        "min": float(a.min()),
        "max": float(a.max()),
        "mean_frames": float(np.mean(lengths)),
        "capped": int(sum(r == "max_frames" for r in reasons)),
    }
    if successes and successes[0] is not None:
        out["success_rate"] = float(np.mean(successes))
    return out


def protocol_rows(results: list[dict], settings: EvalSettings, protocols: list[str], demo_start: bool) -> list[dict]:
    """One row of the table (and of the JSON's ``protocols``) per protocol: its summary and episodes."""
    rows = []
    for p in protocols:
        mine = [r for r in results if r["protocol"] == p]
        row = {"protocol": p, "description": settings.describe(p),
               **summarize([r["score"] for r in mine], [r["frames"] for r in mine],
                           [r["reason"] for r in mine], [r["success"] for r in mine]),
               "scores": [r["score"] for r in mine], "frames": [r["frames"] for r in mine],
               "reasons": [r["reason"] for r in mine], "seeds": [r["seed"] for r in mine]}
        if demo_start:
            row["successes"] = [r["success"] for r in mine]
        rows.append(row)
    return rows


def format_table(rows: list[dict], demo_start: bool) -> str:
    header = ["protocol", "setting", "episodes", "mean ± std", "median", "min", "max", "mean frames", "capped"]
    if demo_start:
        header.append("success")
    lines = []
    for r in rows:
        cells = [r["protocol"], r["description"], str(r["episodes"]), f"{r['mean']:.1f} ± {r['std']:.1f}",
                 f"{r['median']:g}", f"{r['min']:g}", f"{r['max']:g}", f"{r['mean_frames']:,.0f}",
                 f"{r['capped']}/{r['episodes']}"]
        if demo_start:
            cells.append(f"{r['success_rate']:.0%}")
        lines.append(cells)
    widths = [max(len(header[c]), *(len(line[c]) for line in lines)) for c in range(len(header))]
    left = {0, 1}

    def fmt(cells):
        return "  ".join(c.ljust(w) if k in left else c.rjust(w) for k, (c, w) in enumerate(zip(cells, widths)))

    return "\n".join([fmt(header), fmt(["-" * w for w in widths])] + [fmt(c) for c in lines])
