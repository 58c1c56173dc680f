"""Data-parallel training with ``torchrun`` (DDP: gloo on CPU, NCCL on GPU).

``torchrun --nproc_per_node N $(which spk) train ...`` starts N copies of the same
command; each one finds its rank in the environment torchrun sets, trains on every
N-th batch of the shared epoch plan, and gradients are averaged by DDP.  Only rank 0
writes files (config, logs, checkpoints, plots).  A single process needs none of this.

Several machines (nodes) run one ``torchrun`` each, meeting through c10d rendezvous at
``HOST:PORT`` (a port on one of the nodes); :func:`torchrun_command` builds that command
line (``spk train-launch`` prints or runs it).  Every node must see the same recipe
folder (data dirs, features, ``exp/``) at the same path: a shared filesystem.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

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


def gather_to_main(context: Context, value: Any) -> list[Any] | None:
    """Every process's ``value``, as a list indexed by rank, in rank 0; None in the others.

    Collective: every process must call it at the same point.  A single process gets ``[value]``.
    """
    if not context.enabled:
        return [value]
    gathered = [None] * context.world_size if context.is_main else None
    dist.gather_object(value, gathered, dst=0)
    return gathered


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


def torchrun_command(train_args: Sequence[str], *, nproc_per_node: int = 1, nnodes: int = 1,
                     rdzv_endpoint: str | None = None, rdzv_id: str = "spk", node_rank: int | None = None,
                     python: str | None = None) -> list[str]:
    """The command line that runs ``spk train <train_args>`` in ``nproc_per_node`` processes on each of
    ``nnodes`` nodes: ``python -m torch.distributed.run`` (torchrun, of this very environment).

    One node without ``rdzv_endpoint`` gets ``--standalone`` (a local rendezvous on a free port).
    Otherwise every node runs the same command with c10d rendezvous: ``--nnodes N --nproc-per-node P
    --rdzv-backend c10d --rdzv-endpoint HOST:PORT --rdzv-id ID``.  ``HOST`` is one of the nodes (the
    torchrun there hosts the rendezvous store on ``PORT``), ``ID`` names the job (e.g. ``$SLURM_JOB_ID``)
    and must be the same on all nodes and differ between jobs that share the endpoint.  c10d assigns
    node ranks as the nodes join; ``node_rank`` is only passed on (``--node-rank``, which torchrun
    reads for static rendezvous only).  ``python`` defaults to this interpreter.
    """
    if nnodes < 1 or nproc_per_node < 1:
        raise ValueError(f"--nnodes ({nnodes}) and --nproc-per-node ({nproc_per_node}) must be at least 1")
    command = [python or sys.executable, "-m", "torch.distributed.run"]
    if nnodes == 1 and not rdzv_endpoint:
        command += ["--standalone", "--nnodes", "1", "--nproc-per-node", str(nproc_per_node)]
    else:
        if not rdzv_endpoint:
            raise ValueError(f"--nnodes {nnodes} needs --rdzv-endpoint HOST:PORT (a port on one of the nodes, "
                             "the same on all of them)")
        host, _, port = rdzv_endpoint.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"--rdzv-endpoint {rdzv_endpoint!r}: expected HOST:PORT, e.g. node01:29400")
        if not rdzv_id:
            raise ValueError("--rdzv-id must not be empty: give every job its own id (e.g. $SLURM_JOB_ID)")
        command += ["--nnodes", str(nnodes), "--nproc-per-node", str(nproc_per_node), "--rdzv-backend", "c10d",
                    "--rdzv-endpoint", rdzv_endpoint, "--rdzv-id", str(rdzv_id)]
        if node_rank is not None:
            command += ["--node-rank", str(node_rank)]
    return command + ["-m", "spk", "train", *train_args]
