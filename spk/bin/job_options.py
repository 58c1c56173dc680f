"""The options every command with parallel jobs shares: ``--nj``, ``--cmd`` and ``--log-dir``."""

from __future__ import annotations

import click

from spk.jobs import JobCommandError, parse_job_command


def check_job_command(ctx, param, value: str) -> str:
    """A click callback: ``value`` if it is a job command (``local``, ``slurm ...``), else a usage error."""
    try:
        parse_job_command(value)
    except JobCommandError as error:
        raise click.BadParameter(str(error).removeprefix(f"--cmd {value!r}: ")) from None
    return value


def job_options(what: str = "Parallel jobs."):
    """Decorate a command with ``--nj``, ``--cmd`` and ``--log-dir`` (passed as ``nj``, ``cmd``, ``log_dir``)."""
    def decorate(function):
        function = click.option("--log-dir", type=click.Path(file_okay=False), default=None,
                                help="Where each job writes its log, <step>.<JOB>.log [default: a log/ folder "
                                     "beside the outputs].")(function)
        function = click.option("--cmd", default="local", show_default=True, callback=check_job_command, envvar="SPK_CMD",
                                help="Where the jobs run: 'local' (processes here) or 'slurm [sbatch options]' "
                                     "(one job array, e.g. 'slurm --partition=cpu --mem=4G'); recipes take it "
                                     "from cmd.sh [env: SPK_CMD].")(function)
        function = click.option("--nj", default=1, show_default=True, type=click.IntRange(min=1),
                                help=what)(function)
        return function
    return decorate
