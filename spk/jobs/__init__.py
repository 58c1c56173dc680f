"""Parallel steps as arrays of jobs, run on this machine or on Slurm (Kaldi's ``run.pl`` and ``slurm.pl``).

A parallel step (features of a data dir, augmented copies, embeddings, ...) is cut
into ``N`` jobs; job ``J`` works on part ``J`` (usually ``<data>/split<N>/<J>``) and
writes its own outputs and its own log, ``<log_dir>/<step>.<J>.log``. Where the jobs
run is one option, the *job command* (``--cmd``, from a recipe's ``cmd.sh``):

- ``local``: the jobs are processes on this machine (one job runs in this process);
- ``slurm [sbatch options]``: one Slurm job array, ``sbatch --wait``, options such as
  ``--partition``, ``--mem``, ``--time`` or ``--gpus`` passed through.

Each finished job leaves a *done marker* holding a fingerprint of what it was asked
to do; a rerun runs only the jobs whose marker is missing or stale, so after one job
failed (its log path and last lines are in the error) only that job is resubmitted.
Outputs do not depend on the backend: the same code runs each job.

- :mod:`spk.jobs.step`: :class:`ParallelStep`, :func:`run_step` (markers, spec, failures);
- :mod:`spk.jobs.backends`: :func:`parse_job_command`, the local and Slurm backends;
- :mod:`spk.jobs.run`: what a job process runs (``python -m spk.jobs.run SPEC JOB``);
- :mod:`spk.jobs.tasks`: the registry of job functions a spec may name.
"""

from spk.jobs.backends import JobCommand, JobCommandError, JobError, parse_job_command
from spk.jobs.step import JobsFailed, ParallelStep, inputs_key, job_share, run_step

__all__ = ["JobCommand", "JobCommandError", "JobError", "JobsFailed", "ParallelStep", "inputs_key", "job_share",
           "parse_job_command", "run_step"]
