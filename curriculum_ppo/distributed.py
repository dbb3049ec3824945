"""torch.distributed glue: one learner per rank, launched by ``torchrun``.

A single process (no ``WORLD_SIZE`` in the environment) gets a
:class:`DistContext` that does nothing, so plain ``train`` and a 1-process
``torchrun`` run the same code. With K ranks, gradients are averaged by
DistributedDataParallel (NCCL on GPU, gloo on CPU) and the curriculum's
success counts are summed across ranks so every rank moves the window at the
same update.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, device: str = "auto") -> "DistContext":
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        rank = int(os.environ["RANK"])
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        use_cuda = torch.cuda.is_available() and device != "cpu"
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if use_cuda else "gloo")
        dev = None
        if use_cuda:
            torch.cuda.set_device(local_rank)
            dev = torch.device("cuda", local_rank)
        return cls(rank, world, local_rank, dev)

    def wrap(self, module: torch.nn.Module) -> torch.nn.Module:
        if self.world_size <= 1:
            return module
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device is not None and self.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids)

    def broadcast_module(self, module: torch.nn.Module) -> None:
        """Make every rank start from rank 0's parameters (e.g. after rank 0 loaded a checkpoint)."""
        if self.world_size <= 1:
            return
        for tensor in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(tensor.data, src=0)

    def all_reduce_sum(self, vector: np.ndarray) -> np.ndarray:
        if self.world_size <= 1:
            return vector
        device = self.device if self.device is not None else torch.device("cpu")
        t = torch.from_numpy(np.ascontiguousarray(vector, dtype=np.float64)).to(device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t.cpu().numpy()

    def close(self) -> None:
        if self.world_size > 1 and dist.is_initialized():
            dist.destroy_process_group()
