"""Data-parallel training with ``torchrun`` (DDP: gloo on CPU, NCCL on GPU).

``torchrun --nproc_per_node N $(which spk) train ...`` starts N copies of the same
command; each one finds its rank in the environment torchrun sets, trains on every
N-th batch of the shared epoch plan, and gradients are averaged by DDP.  Only rank 0
writes files (config, logs, checkpoints, plots).  A single process needs none of this.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

logger = logging.getLogger(__name__)


@dataclass
class Context:
    """This process's place in the job."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """True for the process that writes files."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def setup(device: torch.device) -> Context:
    """Join the process group torchrun described in the environment (if any)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Context(device=device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    rank = dist.get_rank()
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    logger.info("distributed training: rank %d of %d on %s", rank, world_size, device)
    return Context(rank=rank, world_size=world_size, device=device)


def barrier(context: Context) -> None:
    """Wait for every process."""
    if context.enabled:
        dist.barrier()


def any_true(context: Context, flag: bool) -> bool:
    """True when ``flag`` is true in any process (e.g. a signal that reached only some)."""
    if not context.enabled:
        return flag
    value = torch.tensor([1.0 if flag else 0.0])
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def broadcast_flag(context: Context, flag: bool) -> bool:
    """Rank 0's ``flag``, in every process."""
    if not context.enabled:
        return flag
    value = torch.tensor([1.0 if flag else 0.0])
    dist.broadcast(value, src=0)
    return bool(value.item())


def cleanup(context: Context, wait: bool = True) -> None:
    """Leave the process group, first waiting for every process when they all got here.

    Without this, gloo's worker threads outlive the interpreter and the process aborts at exit.
    ``wait=False`` is for errors in one process only, where the others may never arrive.
    """
    if context.enabled and dist.is_initialized():
        if wait:
            dist.barrier()
        dist.destroy_process_group()


class TrainStep(nn.Module):
    """Model and loss as one module, so DDP sees every trained parameter in one forward call.

    Returns the loss and, for classification losses, the logits (for accuracy).
    """

    def __init__(self, model: nn.Module, loss_fn: nn.Module):
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn
        self.classifies = getattr(loss_fn, "input", "logits") == "logits"

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor, labels: torch.Tensor):
        embeddings = self.model.embed(feats, lengths)
        if self.classifies:
            logits = self.model.classify(embeddings, labels)
            return self.loss_fn(logits, labels), logits
        return self.loss_fn(embeddings, labels), None


def wrap(step: TrainStep, context: Context) -> nn.Module:
    """DDP around ``step`` when several processes train together."""
    if not context.enabled:
        return step
    device_ids = [context.device.index] if context.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(step, device_ids=device_ids)
