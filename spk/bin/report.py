"""``spk report`` and ``spk compare``: result tables and plots of experiments."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import click

from spk.report import comparison_markdown, find_experiments, write_comparison, write_experiment_report

logger = logging.getLogger(__name__)


@click.command("report")
@click.argument("exp_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--compare-root", type=click.Path(exists=True, file_okay=False), default=None,
              help="Also compare every experiment under this directory (e.g. exp/) into "
                   "DIR/RESULTS.md and DIR/RESULTS.csv.")
def report(exp_dir, compare_root):
    """Write EXP_DIR/RESULTS.md and the plots under EXP_DIR/plots/."""
    try:
        write_experiment_report(exp_dir)
        if compare_root is not None:
            root = Path(compare_root)
            experiments = find_experiments(root)
            write_comparison(root / "RESULTS.md", root / "RESULTS.csv", experiments)
            logger.info("wrote %s and %s (%d experiments)", root / "RESULTS.md", root / "RESULTS.csv",
                        len(experiments))
    except (OSError, ValueError) as error:
        raise click.ClickException(str(error)) from None


@click.command("compare")
@click.argument("exp_dirs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--markdown-out", type=click.Path(dir_okay=False), default=None, help="Also write the table here.")
@click.option("--csv-out", type=click.Path(dir_okay=False), default=None, help="Write the table as CSV here.")
@click.option("--plots-dir", type=click.Path(file_okay=False), default=None,
              help="Where det_<test>.png (every system's DET curve per test) go "
                   "[default: plots/ beside --markdown-out, else beside the experiments].")
def compare(exp_dirs, markdown_out, csv_out, plots_dir):
    """Print a markdown table comparing the results of EXP_DIRS and draw their DET curves per test."""
    if plots_dir is None and markdown_out is None:
        plots_dir = _common_parent(exp_dirs) / "plots"
    try:
        rows = write_comparison(markdown_out, csv_out, exp_dirs, plots_dir=plots_dir)
    except (OSError, ValueError) as error:
        raise click.ClickException(str(error)) from None
    click.echo(comparison_markdown(rows), nl=False)


def _common_parent(exp_dirs) -> Path:
    """The deepest directory holding all of ``exp_dirs`` (e.g. ``exp`` for ``exp/a exp/b``)."""
    return Path(os.path.commonpath([Path(d).resolve().parent for d in exp_dirs]))
