"""Multi-process and multi-node execution with ``torchrun`` (torch.distributed).

Under ``torchrun --nproc-per-node N [--nnodes M ...] -m sai_attack COMMAND ...`` every process
sees ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` in its environment. :func:`context` joins the process
group (gloo on CPU, nccl on CUDA) and tells each rank which share of the work is its own. Without
those variables everything runs in one process and these helpers do nothing.
"""

from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Ranks wait for each other at the end of a run; a slow rank may finish much later.
_TIMEOUT = datetime.timedelta(hours=12)


@dataclass(frozen=True)
class DistContext:
    """This process's place in a distributed job.

    Attributes:
        rank: Global rank (0 in a single-process run).
        world_size: Number of processes (1 in a single-process run).
        local_rank: Rank on this node (selects the GPU).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        """Whether more than one process takes part."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0, which merges outputs and writes summaries."""
        return self.rank == 0

    def shard(self, items: list[T], batch_size: int = 1) -> list[T]:
        """This rank's share: every ``world_size``-th batch, starting at batch ``rank``.

        Whole batches are dealt out, so every item lands in the same batch, with the same
        companions, as in a single-process run; outputs then match bit for bit even where a
        kernel's rounding depends on the batch composition.
        """
        batches = [items[i : i + batch_size] for i in range(0, len(items), batch_size)]
        return [item for batch in batches[self.rank :: self.world_size] for item in batch]

    def device(self, requested: torch.device) -> torch.device:
        """The device of this rank: ``cuda`` becomes ``cuda:<local_rank>`` when distributed."""
        if self.distributed and requested.type == "cuda" and requested.index is None:
            return torch.device("cuda", self.local_rank)
        return requested

    def barrier(self) -> None:
        """Wait for every rank (no-op in a single process)."""
        if self.distributed:
            dist.barrier()

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank (any picklable object made by this program)."""
        if not self.distributed:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, value: Any) -> list[Any]:
        """The ``value`` of every rank, in rank order, on every rank."""
        if not self.distributed:
            return [value]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, value)
        return out


def context(device: torch.device | None = None) -> DistContext:
    """Join the torchrun process group if this process was started by torchrun.

    Args:
        device: The requested device; CUDA selects the nccl backend, otherwise gloo.

    Returns:
        The :class:`DistContext` (single-process when not under torchrun).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device is not None and device.type == "cuda" else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend, timeout=_TIMEOUT)
        logger.debug("rank %d of %d joined (%s)", rank, world, backend)
    return DistContext(rank=rank, world_size=world, local_rank=local_rank)


def shutdown(clean: bool = True) -> None:
    """Leave the process group, if this process joined one.

    Without this, a rank that finishes first tears gloo down from the interpreter's exit
    handlers while its background threads still run, which aborts the process ("terminate
    called without an active exception") and fails the whole torchrun job.

    Args:
        clean: Whether this rank finished normally; it then waits for the others first, so no
            rank leaves while another still talks to it. After an error, leave at once (torchrun
            stops the other ranks).
    """
    if not dist.is_initialized():
        return
    if clean:
        dist.barrier()
    dist.destroy_process_group()
