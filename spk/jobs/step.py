"""A parallel step: its jobs, their done markers, and running the ones not done yet.

The *spec* (``<work_dir>/<step>.spec.json``) is what every job of a run reads: the
task name, its arguments (plain JSON) and each job's fingerprint. A job that ends
well writes its fingerprint into its *done marker* (``<work_dir>/<step>.<J>.done``);
a job counts as done only while that marker holds the fingerprint the step asks
for now, so changed arguments (a new config, other input files) make every job
run again, and a failed job, which left no marker, runs again alone.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spk.jobs.backends import JobCommand, JobError, log_path, run_jobs
from spk.jobs.tasks import task_function

logger = logging.getLogger(__name__)

LOG_LINES_SHOWN = 12


class JobsFailed(JobError):
    """Jobs of a step failed; the message names each one's log and shows its last lines."""


def job_share(count: int, job: int, num_jobs: int) -> slice:
    """The contiguous share of ``count`` items (in order) that job ``job`` of ``num_jobs`` works on."""
    return slice(count * (job - 1) // num_jobs, count * job // num_jobs)


def inputs_key(*inputs: Any) -> str:
    """A short hash of what a step's outputs are made from (plain JSON values), to name their files."""
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:10]


@dataclass(frozen=True)
class ParallelStep:
    """``num_jobs`` jobs of the registered ``task``, each called with ``args`` and its number (1-based).

    ``output``, when given, is a path with ``{job}`` that each job writes: a job whose
    output has gone since (e.g. deleted by hand) counts as not done, marker or not.
    """

    name: str
    task: str
    args: dict[str, Any]
    num_jobs: int
    work_dir: Path
    log_dir: Path
    output: str = ""

    def __post_init__(self) -> None:
        task_function(self.task)  # an unknown task fails here, before anything runs
        if self.num_jobs < 1:
            raise ValueError(f"{self.name}: a step needs at least one job, not {self.num_jobs}")

    @property
    def spec_path(self) -> Path:
        """The file the jobs of this step read."""
        return Path(self.work_dir) / f"{self.name}.spec.json"

    def fingerprint(self, job: int) -> str:
        """What job ``job`` is asked to do, as a hash: the task, the arguments, the job and the number of jobs."""
        text = json.dumps({"task": self.task, "args": self.args, "num_jobs": self.num_jobs, "job": job},
                          sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()

    def marker(self, job: int) -> Path:
        """The done marker of job ``job``."""
        return Path(self.work_dir) / f"{self.name}.{job}.done"

    def is_done(self, job: int) -> bool:
        """True when job ``job`` ended well with the arguments asked for now, and its output is there."""
        marker = self.marker(job)
        if self.output and not Path(self.output.format(job=job)).exists():
            return False
        return marker.is_file() and marker.read_text().strip() == self.fingerprint(job)

    def forget(self, jobs: Sequence[int] | None = None) -> None:
        """Remove the done markers of ``jobs`` (all by default): they run again next time."""
        for job in jobs if jobs is not None else range(1, self.num_jobs + 1):
            self.marker(job).unlink(missing_ok=True)

    def log(self, job: int) -> Path:
        """The log of job ``job``."""
        return log_path(self.log_dir, self.name, job)


def run_step(step: ParallelStep, command: JobCommand, *, threads_per_job: int = 1) -> list[int]:
    """Run the jobs of ``step`` that are not done, through ``command``; return the jobs that ran.

    With the local backend one job runs in this process (its log gets this process's
    log records); more run as processes. Raises :class:`JobsFailed` naming the log and
    last lines of every job that did not end well; an error of the one job run in this
    process is raised as it is (after going to its log).
    """
    work_dir, log_dir = Path(step.work_dir), Path(step.log_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    log_dir.mkdir(parents=True, exist_ok=True)
    jobs = range(1, step.num_jobs + 1)
    pending = [job for job in jobs if not step.is_done(job)]
    if not pending:
        logger.info("%s: all %d job(s) already done", step.name, step.num_jobs)
        return []
    if len(pending) < step.num_jobs:
        logger.info("%s: %d of %d jobs already done; running job(s) %s", step.name,
                    step.num_jobs - len(pending), step.num_jobs, ",".join(map(str, pending)))
    spec = {"name": step.name, "task": step.task, "args": step.args, "num_jobs": step.num_jobs,
            "fingerprints": {str(job): step.fingerprint(job) for job in jobs}}
    tmp = step.spec_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(spec, indent=1, sort_keys=True) + "\n")
    tmp.replace(step.spec_path)
    step.forget(pending)
    if command.is_local() and len(pending) == 1:
        from spk.jobs.run import run_in_process

        run_in_process(step.spec_path, pending[0], step.log(pending[0]))
    else:
        logger.info("%s: %d job(s) through '%s'; logs: %s", step.name, len(pending), command.text,
                    step.log(pending[0]).with_name(f"{step.name}.JOB.log"))
        run_jobs(command, step.name, step.spec_path, pending, log_dir, threads_per_job)
    failed = [job for job in pending if not step.is_done(job)]
    if failed:
        raise JobsFailed(_failure_report(step, failed))
    return pending


def _failure_report(step: ParallelStep, failed: list[int]) -> str:
    return "\n".join([f"{step.name}: {len(failed)} of {step.num_jobs} job(s) failed", describe_jobs(step, failed),
                      "Fix the cause and run the same command again: only the failed job(s) run again."])


def describe_jobs(step: ParallelStep, jobs: list[int]) -> str:
    """Each job's log path and last lines, for an error message."""
    parts = []
    for job in jobs:
        log = step.log(job)
        tail = _last_lines(log) if log.is_file() else ["(no log was written: the job did not start)"]
        parts.append(f"job {job}: see {log}; its last lines:\n" + "\n".join("    " + line for line in tail))
    return "\n".join(parts)


def _last_lines(path: Path) -> list[str]:
    with open(path, errors="replace") as handle:
        return [line.rstrip("\n") for line in deque(handle, maxlen=LOG_LINES_SHOWN)]
