"""``spk train-launch`` (hidden): the ``torchrun`` command of ``spk train`` on one or several nodes.

Stage 3 runs it in place of ``spk train``; it execs (or, with ``--print``, prints) the command
that :func:`spk.train.distributed.torchrun_command` builds, with the trainer's options after ``--``.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess

import click

SLURM_BASE_PORT = 29400  # torchrun's c10d default port; a Slurm job adds its id modulo 1000


def first_slurm_node(nodelist: str) -> str:
    """The first host of a Slurm node list such as ``gpu[03-05,09],cpu1`` (``gpu03``).

    ``scontrol show hostnames`` when it is there; otherwise the common forms are read here.
    """
    if shutil.which("scontrol"):
        result = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True,
                                check=False)
        if result.returncode == 0 and result.stdout.split():
            return result.stdout.split()[0]
    match = re.match(r"([^,\[]+)(?:\[([^\]\-,]+)[^\]]*\])?", nodelist.strip())
    if not match:
        raise click.ClickException(f"cannot read the first node of SLURM_JOB_NODELIST={nodelist!r}; "
                                   "pass --rdzv-endpoint HOST:PORT instead of --slurm")
    return match.group(1) + (match.group(2) or "")


def slurm_settings() -> tuple[int, str, str]:
    """(number of nodes, rendezvous endpoint, rendezvous id) of the Slurm job this runs in."""
    job_id = os.environ.get("SLURM_JOB_ID")
    nodelist = os.environ.get("SLURM_JOB_NODELIST") or os.environ.get("SLURM_NODELIST")
    nnodes = os.environ.get("SLURM_JOB_NUM_NODES") or os.environ.get("SLURM_NNODES")
    if not (job_id and nodelist and nnodes):
        raise click.ClickException("--slurm: SLURM_JOB_ID, SLURM_JOB_NODELIST and SLURM_JOB_NUM_NODES are not "
                                   "all set; run it inside a Slurm job (sbatch/salloc, then srun) or pass "
                                   "--nnodes, --rdzv-endpoint and --rdzv-id")
    port = SLURM_BASE_PORT + int(job_id) % 1000 if job_id.isdigit() else SLURM_BASE_PORT
    return int(nnodes), f"{first_slurm_node(nodelist)}:{port}", job_id


@click.command("train-launch", hidden=True, context_settings={"ignore_unknown_options": True})
@click.option("--nnodes", type=click.IntRange(min=1), help="Nodes (one launcher each) [default: 1, or the "
              "Slurm job's with --slurm].")
@click.option("--nproc-per-node", default=1, show_default=True, type=click.IntRange(min=1),
              help="Training processes per node (e.g. its GPUs).")
@click.option("--rdzv-endpoint", help="HOST:PORT of the c10d rendezvous, the same on every node "
              "[default with --slurm: the job's first node, port 29400 + job id % 1000].")
@click.option("--rdzv-id", default="spk", show_default=True, help="Job id, the same on every node "
              "[default with --slurm: $SLURM_JOB_ID].")
@click.option("--node-rank", type=click.IntRange(min=0),
              help="Passed on to torchrun, which reads it for static rendezvous only (c10d assigns ranks).")
@click.option("--slurm", is_flag=True, help="Take nodes, endpoint and id from the Slurm job (run one per "
              "node: srun --ntasks-per-node=1).")
@click.option("--print", "print_only", is_flag=True, help="Print the command instead of running it.")
@click.argument("train_args", nargs=-1, type=click.UNPROCESSED)
def train_launch(nnodes, nproc_per_node, rdzv_endpoint, rdzv_id, node_rank, slurm, print_only, train_args):
    """Run spk train TRAIN_ARGS under torchrun: spk train-launch [OPTIONS] -- --config ... --exp-dir ..."""
    from spk.train.distributed import torchrun_command

    if slurm:
        job_nodes, job_endpoint, job_id = slurm_settings()
        nnodes = nnodes or job_nodes
        rdzv_endpoint = rdzv_endpoint or job_endpoint
        rdzv_id = job_id if rdzv_id == "spk" else rdzv_id
    try:
        command = torchrun_command(list(train_args), nproc_per_node=nproc_per_node, nnodes=nnodes or 1,
                                   rdzv_endpoint=rdzv_endpoint, rdzv_id=rdzv_id, node_rank=node_rank)
    except ValueError as error:
        raise click.ClickException(str(error)) from None
    if print_only:
        click.echo(shlex.join(command))
        return
    os.execv(command[0], command)
