"""Where the jobs of a step run: processes on this machine, or one Slurm job array.

A job command is the text of a recipe's ``cmd.sh`` line (``cpu_cmd``, ``gpu_cmd``)
or of ``--cmd``: its first word is the backend, the rest are that backend's options.

- ``local``: every job is a process here, all started at once (as Kaldi's ``run.pl``);
  each gets ``cores // jobs`` torch threads (at least one).
- ``slurm [sbatch options]``: ``sbatch --array=<jobs>`` with the options given, then waiting for it
  (``--partition=gpu --gpus=1 --mem=16G --time=4:00:00``, ...). The jobs run in the
  current folder with this environment (Slurm's default ``--export=ALL``) and the same
  Python, so the recipe folder and the virtual environment must be on a file system
  that every node shares.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

logger = logging.getLogger(__name__)

BACKENDS = ("local", "slurm")
# What a job process runs: the spec file and the job number follow.
JOB_ENTRY = [sys.executable, "-m", "spk.jobs.run"]


class JobError(RuntimeError):
    """Jobs that could not run or did not end well; the message says which and what to do."""


class JobCommandError(JobError, ValueError):
    """A job command that names no known backend, options the backend cannot take, or a refused submission."""


@dataclass(frozen=True)
class JobCommand:
    """A parsed job command: the backend and its options."""

    backend: str
    options: tuple[str, ...] = ()

    @property
    def text(self) -> str:
        """The command as a user writes it."""
        return shlex.join((self.backend, *self.options))

    def is_local(self) -> bool:
        """True for processes on this machine."""
        return self.backend == "local"


def parse_job_command(text: str | None) -> JobCommand:
    """``"local"``, ``"slurm --mem=4G ..."`` (None or empty: local) as a :class:`JobCommand`."""
    words = shlex.split(text or "local")
    if not words or words[0] not in BACKENDS:
        raise JobCommandError(f"--cmd {text!r}: the job command starts with a backend, one of "
                              f"{', '.join(BACKENDS)} (e.g. 'local' or 'slurm --partition=cpu --mem=4G'); "
                              f"see cmd.sh")
    if words[0] == "local" and len(words) > 1:
        raise JobCommandError(f"--cmd {text!r}: the local backend takes no options")
    return JobCommand(words[0], tuple(words[1:]))


def run_jobs(command: JobCommand, name: str, spec: Path, jobs: Sequence[int], log_dir: Path,
             threads_per_job: int = 1) -> None:
    """Run ``jobs`` of the step described by ``spec`` through ``command``'s backend; wait for all.

    Job ``J`` writes ``<log_dir>/<name>.<J>.log``. Returns when every job ended; which ones
    succeeded is for the caller to check (their done markers), whatever the exit codes.
    """
    if command.is_local():
        _run_local(spec, jobs, log_dir, name, threads_per_job)
    else:
        _run_slurm(command, spec, jobs, log_dir, name)


def log_path(log_dir: Path, name: str, job: int) -> Path:
    """The log of job ``job`` of step ``name`` (Kaldi's layout)."""
    return Path(log_dir) / f"{name}.{job}.log"


def _run_local(spec: Path, jobs: Sequence[int], log_dir: Path, name: str, threads: int) -> None:
    from tqdm import tqdm

    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "SPK_NUM_THREADS": str(threads)}
    running: dict[int, subprocess.Popen] = {}
    try:
        for job in jobs:
            with open(log_path(log_dir, name, job), "wb") as log:
                running[job] = subprocess.Popen([*JOB_ENTRY, str(spec), str(job)], stdout=log,
                                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        with tqdm(total=len(jobs), desc=name, unit="job", disable=None) as bar:
            pending = dict(running)
            while pending:
                for job, process in list(pending.items()):
                    if process.poll() is not None:
                        del pending[job]
                        bar.update(1)
                time.sleep(0.05)
    finally:
        for process in running.values():  # interrupted: stop the jobs started
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in running.values():
            process.wait()


def _run_slurm(command: JobCommand, spec: Path, jobs: Sequence[int], log_dir: Path, name: str) -> None:
    sbatch = shutil.which("sbatch")
    if sbatch is None:
        raise JobCommandError(f"--cmd {command.text!r}: sbatch is not on PATH; run on a Slurm login node, "
                              f"or use --cmd local")
    script = Path(spec).with_suffix(".sbatch")
    script.write_text("#!/bin/bash\n# written by spk: one task of a job array runs one job of the step\n"
                      f"exec {shlex.join(JOB_ENTRY)} {shlex.quote(str(Path(spec).absolute()))} "
                      "\"$SLURM_ARRAY_TASK_ID\"\n")
    argv = [sbatch, "--parsable", f"--array={','.join(str(j) for j in jobs)}",
            f"--job-name=spk-{name}", f"--output={Path(log_dir).absolute() / (name + '.%a.log')}",
            "--chdir", os.getcwd(), *command.options, str(script)]
    logger.info("%s: submitting %d job(s) to Slurm: %s", name, len(jobs), shlex.join(argv[1:]))
    started = time.monotonic()
    submitted = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    job_id = submitted.stdout.strip().split(";")[0]
    if submitted.returncode != 0 or not job_id:  # bad options, no controller, ...
        raise JobCommandError(f"{name}: sbatch refused the job array (exit {submitted.returncode}): "
                              f"{submitted.stderr.strip() or submitted.stdout.strip()}")
    try:
        _wait_for_slurm_job(job_id)
    except BaseException:  # interrupted while waiting: the array must not go on without us
        subprocess.run(["scancel", job_id], check=False)
        logger.warning("%s: cancelled Slurm job array %s", name, job_id)
        raise
    logger.info("%s: Slurm job array %s ended after %.1f s", name, job_id, time.monotonic() - started)


def _wait_for_slurm_job(job_id: str, poll_seconds: float = 0.5) -> None:
    """Return once no task of job ``job_id`` is pending or running (``squeue`` lists only those).

    Polled here rather than with ``sbatch --wait``, whose checks grow to seconds apart; whether
    each task ended well is read from its done marker, so no accounting database is needed.
    """
    failures = 0
    while True:
        listed = subprocess.run(["squeue", "--noheader", "--jobs", job_id, "--format=%i"], capture_output=True,
                                text=True, stdin=subprocess.DEVNULL)
        if listed.returncode == 0 and not listed.stdout.strip():
            return
        if listed.returncode != 0:
            if "Invalid job id" in listed.stderr:  # already forgotten by the controller: it ended
                return
            failures += 1
            if failures > 20:
                raise JobCommandError(f"squeue cannot tell the state of Slurm job {job_id}: {listed.stderr.strip()}")
        time.sleep(poll_seconds)
