"""``spk report`` and ``spk compare``: result tables and plots of experiments."""

from __future__ import annotations

import logging
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
def compare(exp_dirs, markdown_out, csv_out):
    """Print a markdown table comparing the results of EXP_DIRS."""
    try:
        rows = write_comparison(markdown_out, csv_out, exp_dirs)
    except (OSError, ValueError) as error:
        raise click.ClickException(str(error)) from None
    click.echo(comparison_markdown(rows), nl=False)
