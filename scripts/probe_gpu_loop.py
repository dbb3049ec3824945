#!/usr/bin/env python
"""What bounds the training loop on a GPU machine: the Trainer with overlap off, and with fewer torch threads.

On a 16-core H100 machine the Trainer with 64 envs reached only 30% of the env workers' own speed
(bench_train.py). This measures the Trainer (same settings and timing as bench_train.py: each run
in a process of its own, whole run and complete cycles) with torch's default thread count, with
the rollout/update overlap off, with one torch thread, and with four torch threads and fewer
workers, one after another in the same run.

Usage: python scripts/probe_gpu_loop.py [--envs 64] [--workers CORES] [--updates 6] [--json OUT]
(default JSON: runs/bench/probe_gpu_loop/gpu_loop_probe.json)
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import LoadCheck, default_output, usable_cores, write_json  # noqa: E402
from bench_train import measure  # noqa: E402

from curriculum_ppo.atomic import check_destination  # noqa: E402
from curriculum_ppo.errors import UserError  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", type=int, default=64)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--updates", type=int, default=6, help="as bench_train.py's: each run is this + 1 cycles")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--json", default=None,
                        help="results file (default runs/bench/probe_gpu_loop/gpu_loop_probe.json)")
    args = parser.parse_args()
    try:
        json_path = Path(args.json) if args.json else default_output("probe_gpu_loop", "gpu_loop_probe.json")
        check_destination(json_path, "--json")  # before minutes of measuring
    except UserError as exc:
        raise SystemExit(f"probe_gpu_loop: error: {exc}")
    device = torch.device(args.device)
    cores = os.cpu_count() or 1
    variants = [("default", {"threads": cores}), ("no_overlap", {"threads": cores, "overlap": False}),
                ("threads1", {"threads": 1}),
                ("threads4_workers12", {"threads": 4, "workers": max(1, args.workers * 3 // 4)})]
    load = LoadCheck("probe_gpu_loop", cores_used=min(usable_cores(), args.workers + 1)).start()
    rows = {}
    try:
        for name, kwargs in variants:
            rows[name] = measure({"name": name, "loop": "trainer", "kwargs": kwargs}, device, args.envs, 128,
                                 args.updates, "nature", args.workers)
            print(f"{name:<20} whole run {rows[name]['whole_run']:>8.0f}, complete cycles {rows[name]['cycles']:>8.0f} "
                  f"agent steps/s  ({rows[name]['cycles'] / rows['default']['cycles']:.2f}x default's cycles)",
                  flush=True)
    except UserError as exc:
        raise SystemExit(f"probe_gpu_loop: error: {exc}")
    out = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": platform.platform(),
           "cpus": cores, "device": str(device),
           "gpu": torch.cuda.get_device_name() if device.type == "cuda" else None,
           "config": vars(args), "timing": "as bench_train.py (scripts/loop_timing.py)",
           "agent_steps_per_s": {"whole_run": {n: r["whole_run"] for n, r in rows.items()},
                                 "cycles": {n: r["cycles"] for n, r in rows.items()}},
           "runs": rows, "machine_load": load.finish()}
    write_json(json_path, out)
    print(f"wrote {json_path}")


if __name__ == "__main__":
    main()
