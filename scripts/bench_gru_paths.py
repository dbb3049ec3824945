"""The GRU policy's two ways through episode starts, packed vs. stretches, per minibatch shape.

``ActorCritic._gru_sequence`` either runs every episode piece of a minibatch as one packed
``nn.GRU`` call or makes one call per stretch between episode starts; on CPUs it picks by the
minibatch's env count and longest piece. This script measures what that rule rests on: the PPO
update (forward + backward + Adam, Nature CNN + GRU) for each number of envs per minibatch and
mean episode length, with the two paths alternating in rounds so a noisy machine hits both alike.

    python scripts/bench_gru_paths.py [--device cpu] [--rounds 3] [--json OUT]

Prints a table (medians over rounds) and writes JSON (default
``runs/bench/bench_gru_paths/bench_gru_paths_<device>.json``; the committed figures in
``scripts/results/`` change only when named with ``--json``), with the load average before the run
and what other processes used during it, and a warning when the machine was busy.
"""

from __future__ import annotations

import argparse
import statistics
from datetime import datetime, timezone
from pathlib import Path

import torch

from bench_common import LoadCheck, default_output, usable_cores, write_json  # scripts/ is on sys.path
from bench_learning import cpu_model
from bench_update import bench_one, pick_device
from curriculum_ppo.atomic import check_destination
from curriculum_ppo.errors import UserError

PATHS = ("packed", "stretches")
ENVS = 8  # the batch: 8 envs x 128 steps, training's default


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--envs-per-minibatch", default="1,4,8",
                        help=f"comma-separated; the batch is {ENVS} envs x 128 steps, so 1 = training's "
                             f"{ENVS} minibatches")
    parser.add_argument("--episode-lengths", default="26,100", help="comma-separated mean episode lengths (steps)")
    parser.add_argument("--rounds", type=int, default=3, help="each case and path is timed this many times, in turn")
    parser.add_argument("--json", default=None,
                        help="results file (default runs/bench/bench_gru_paths/bench_gru_paths_DEVICE.json)")
    args = parser.parse_args()
    device = pick_device(args.device)
    envs_per_minibatch = [int(v) for v in args.envs_per_minibatch.split(",")]
    if any(n < 1 or ENVS % n for n in envs_per_minibatch):
        parser.error(f"--envs-per-minibatch must divide the {ENVS} envs (1, 2, 4 or 8), got {args.envs_per_minibatch}")
    lengths = [float(v) for v in args.episode_lengths.split(",")]
    try:  # before minutes of measuring
        json_path = Path(args.json) if args.json else default_output("bench_gru_paths",
                                                                    f"bench_gru_paths_{device.type}.json")
        check_destination(json_path, "--json")
    except UserError as exc:
        raise SystemExit(f"bench_gru_paths: error: {exc}") from None
    load = LoadCheck("bench_gru_paths", cores_used=min(usable_cores(), torch.get_num_threads())
                     if device.type == "cpu" else 1).start()

    def settings(per_minibatch: int, length: float, path: str) -> argparse.Namespace:
        # One epoch: the minibatch shape, not the epoch count, is what the two paths differ in.
        return argparse.Namespace(obs_shape=[4, 84, 84], steps=128, envs=ENVS, epochs=1, minibatches=ENVS // per_minibatch,
                                  no_amp=False, episode_length=length, gru_path=path, warmup=1, repeats=1)

    cases = [(n, length) for n in envs_per_minibatch for length in lengths]
    seconds = {(n, length, path): [] for n, length in cases for path in PATHS}
    for r in range(args.rounds):
        for n, length in cases:
            for path in PATHS:
                result = bench_one("nature", True, settings(n, length, path), device)
                seconds[(n, length, path)].append(result["seconds_per_update_mean"] / (ENVS // n))
        print(f"round {r + 1}/{args.rounds} done", flush=True)

    rows = []
    print(f"{'envs/minibatch':>14} {'episode length':>14} {'packed ms':>10} {'stretches ms':>13} {'stretches/packed':>17}"
          f"   per minibatch, forward+backward+Adam, medians of {args.rounds}")
    for n, length in cases:
        packed = statistics.median(seconds[(n, length, "packed")])
        stretches = statistics.median(seconds[(n, length, "stretches")])
        rows.append({"envs_per_minibatch": n, "episode_length": length, "packed_ms": 1e3 * packed,
                     "stretches_ms": 1e3 * stretches, "stretches_over_packed": stretches / packed,
                     "packed_ms_by_round": [1e3 * s for s in seconds[(n, length, "packed")]],
                     "stretches_ms_by_round": [1e3 * s for s in seconds[(n, length, "stretches")]]})
        print(f"{n:>14} {length:>14.0f} {1e3 * packed:>10.1f} {1e3 * stretches:>13.1f} {stretches / packed:>16.2f}x")
    report = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "device": str(device),
              "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model(),
              "threads": torch.get_num_threads(), "torch": torch.__version__, "rounds": args.rounds,
              "network": "nature CNN + GRU, 128 steps per segment", "rows": rows, "machine_load": load.finish()}
    write_json(json_path, report)
    print(f"wrote {json_path}")


if __name__ == "__main__":
    main()
