#!/usr/bin/env python
"""What bounds the training loop on a GPU machine: the Trainer with overlap off, and with fewer torch threads.

On a 16-core H100 machine the Trainer with 64 envs reached only 30% of the env workers' own speed
(bench_train.py). This measures the Trainer (same settings as bench_train.py) with torch's default
thread count, with the rollout/update overlap off, with one torch thread, and with four torch
threads and fewer workers, one after another in the same run.

Usage: python scripts/probe_gpu_loop.py [--envs 64] [--workers CORES] [--updates 6] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import bench_trainer  # noqa: E402

from curriculum_ppo.atomic import check_destination, write_text_atomic  # noqa: E402
from curriculum_ppo.errors import UserError  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", type=int, default=64)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--updates", type=int, default=6)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--json", default=str(Path(__file__).parent / "results" / "gpu" / "gpu_loop_probe.json"))
    args = parser.parse_args()
    try:
        check_destination(args.json, "--json")  # before minutes of measuring
    except UserError as exc:
        raise SystemExit(f"probe_gpu_loop: {exc}")
    device = torch.device(args.device)
    cores = os.cpu_count() or 1
    variants = [("default", {"threads": cores}), ("no_overlap", {"threads": cores, "overlap": False}),
                ("threads1", {"threads": 1}), ("threads4_workers12", {"threads": 4, "workers": max(1, args.workers * 3 // 4)})]
    rows = {}
    for name, kwargs in variants:
        workers = kwargs.pop("workers", args.workers)
        rows[name], _ = bench_trainer(device, args.envs, 128, args.updates, workers, "nature", **kwargs)
        torch.set_num_threads(cores)
        print(f"{name:<20} {rows[name]:>8.0f} agent steps/s  {rows[name] / rows['default']:.2f}x", flush=True)
    out = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": platform.platform(),
           "cpus": cores, "device": str(device),
           "gpu": torch.cuda.get_device_name() if device.type == "cuda" else None,
           "config": vars(args), "agent_steps_per_s": rows}
    write_text_atomic(args.json, json.dumps(out, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
