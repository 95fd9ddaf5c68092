"""Ranks under torchrun: one process per GPU (NCCL) or per CPU worker (gloo); a no-op otherwise.

Training (:mod:`.train`) and extraction (:mod:`.representations`) read the rank and the world size
from here, and synchronise through its collectives; outside torchrun there is one rank and every
collective returns at once.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist


class Ranks:
    """This process's rank among ``world`` processes, and the collectives the toolkit needs."""

    def __init__(self, device: torch.device):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.enabled = self.world > 1
        self.device = device
        self._owns_group = False
        if self.enabled:
            if device.type == "cuda":
                local = int(os.environ.get("LOCAL_RANK", "0"))
                torch.cuda.set_device(local)
                self.device = torch.device("cuda", local)
            if not dist.is_initialized():
                dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
                self._owns_group = True

    @property
    def main(self) -> bool:
        return self.rank == 0

    def gather(self, value):
        """Every rank's ``value`` (any picklable object), in rank order; every rank must call it."""
        if not self.enabled:
            return [value]
        values = [None] * self.world
        dist.all_gather_object(values, value)
        return values

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` summed over the ranks, in place (on the ranks' device; gloo takes CPU tensors)."""
        if self.enabled:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def close(self) -> None:
        if self._owns_group and dist.is_initialized():
            dist.destroy_process_group()


def current_ranks(device: torch.device | str = "cpu") -> Ranks:
    """The ranks of the process group this process already belongs to (one rank when there is none)."""
    ranks = Ranks.__new__(Ranks)
    initialized = dist.is_available() and dist.is_initialized()
    ranks.world = dist.get_world_size() if initialized else 1
    ranks.rank = dist.get_rank() if initialized else 0
    ranks.enabled, ranks.device, ranks._owns_group = ranks.world > 1, torch.device(device), False
    return ranks
