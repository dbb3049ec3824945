"""The end-of-run check of a multi-process run: all ranks hold the same weights and curriculum.

Each rank writes ``ranks/rank<r>.json`` (parameter checksum, curriculum state, where its random
streams came from on resume); rank 0 compares the all-gathered checksums and says so. Cheap, and a
diverged rank would otherwise go unnoticed until the results looked odd.
"""

from __future__ import annotations

import hashlib
import json

import torch

from curriculum_ppo.curriculum import CurriculumScheduler
from curriculum_ppo.distributed import DistContext
from curriculum_ppo.training.run_dir import RunDir


def rank_report(policy: torch.nn.Module, scheduler: CurriculumScheduler | None, start_frame: int | None,
                dist: DistContext, frames: int, updates: int, resumed_rng: dict | None) -> dict:
    """This rank's checksums of its weights and curriculum, and its counters."""
    digest = hashlib.sha256()
    for tensor in policy.state_dict().values():
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    sched = scheduler.state_dict() if scheduler else None
    return {"rank": dist.rank, "world_size": dist.world_size, "frames": frames, "updates": updates,
            "param_sha256": digest.hexdigest(), "resumed_rng": resumed_rng,
            "curriculum": {"start_frame": start_frame, "moves": scheduler.moves if scheduler else 0,
                           "sha256": hashlib.sha256(json.dumps(sched, sort_keys=True).encode()).hexdigest()}}


def check_ranks_agree(report: dict, run_dir: RunDir, dist: DistContext) -> None:
    """Write this rank's report, gather everyone's checksums; rank 0 prints the verdict and raises on a mismatch."""
    import torch.distributed as tdist

    run_dir.write_rank_report(dist.rank, report)
    gathered = [None] * dist.world_size
    tdist.all_gather_object(gathered, (report["param_sha256"], report["curriculum"]["sha256"]))
    if dist.is_main:
        same = len(set(gathered)) == 1
        print(f"{dist.world_size} ranks {'agree' if same else 'DISAGREE'} on weights and curriculum", flush=True)
        if not same:
            raise RuntimeError(f"ranks diverged: {gathered}")
