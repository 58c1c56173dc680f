"""What one job runs: ``python -m spk.jobs.run SPEC JOB`` (and the same, in this process, for one local job).

The log starts with the command, host and time and ends with the exit status and the
time taken (as Kaldi's logs do). A job that ends well writes its done marker.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
import traceback
from pathlib import Path

from spk.jobs.tasks import task_function

logger = logging.getLogger("spk.jobs")


def execute(spec_path: Path, job: int) -> None:
    """Run job ``job`` of the step in ``spec_path`` and write its done marker when it ends well."""
    spec = json.loads(Path(spec_path).read_text())
    num_jobs = int(spec["num_jobs"])
    if not 1 <= job <= num_jobs:
        raise ValueError(f"{spec_path}: job {job} is not one of 1..{num_jobs}")
    function = task_function(spec["task"])
    function(spec["args"], job, num_jobs)
    marker = Path(spec_path).with_name(f"{spec['name']}.{job}.done")
    tmp = marker.with_suffix(".tmp")
    tmp.write_text(spec["fingerprints"][str(job)] + "\n")
    tmp.replace(marker)


def run_in_process(spec_path: Path, job: int, log_file: Path) -> None:
    """Run the job here, its log records going to ``log_file`` too; errors are raised as they are."""
    from spk.log import DATE_FORMAT, LOG_FORMAT

    handler = logging.FileHandler(log_file, mode="w")
    handler.setFormatter(logging.Formatter(LOG_FORMAT, DATE_FORMAT))
    loggers = [logging.getLogger(name) for name in ("spk", "local")]
    saved_levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        if lg.getEffectiveLevel() > logging.INFO:
            lg.setLevel(logging.INFO)
    started = time.monotonic()
    try:
        logger.info("job %d of %s, in process %d on %s", job, spec_path, os.getpid(), socket.gethostname())
        execute(spec_path, job)
        logger.info("job %d ended well after %.1f s", job, time.monotonic() - started)
    except BaseException as error:
        logger.error("job %d failed after %.1f s: %s", job, time.monotonic() - started, error)
        raise
    finally:
        for lg, level in zip(loggers, saved_levels):
            lg.removeHandler(handler)
            lg.setLevel(level)
        handler.close()


def main(argv: list[str]) -> int:
    """The job process: returns its exit status (0 when the job ended well)."""
    from spk.log import setup_logging

    setup_logging()
    if len(argv) != 2 or not argv[1].isdigit():
        print("usage: python -m spk.jobs.run SPEC JOB", file=sys.stderr)
        return 2
    spec_path, job = Path(argv[0]), int(argv[1])
    started = time.monotonic()
    print(f"# {sys.executable} -m spk.jobs.run {spec_path} {job}", file=sys.stderr)
    print(f"# started at {time.strftime('%Y-%m-%d %H:%M:%S')} on {socket.gethostname()} (pid {os.getpid()})",
          file=sys.stderr, flush=True)
    status = 0
    try:
        execute(spec_path, job)
    except Exception:  # the whole traceback belongs in the job's log
        traceback.print_exc()
        status = 1
    print(f"# ended (code {status}) at {time.strftime('%Y-%m-%d %H:%M:%S')} after "
          f"{time.monotonic() - started:.1f} s", file=sys.stderr, flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
