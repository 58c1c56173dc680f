"""``spk evaluate``: stage 5 of a recipe in one command (systems, calibration, baseline, identification)."""

from __future__ import annotations

import click

from spk.data import DataDirError
from spk.evaluation import plan_evaluation, run_evaluation
from spk.score_norm import DEFAULT_TOP_N, SCORE_NORMS
from spk.scoring import BACKENDS


def _sets(text: str) -> list[str]:
    """Set names from a space-separated option value (as steps/stages.sh passes them); may be empty."""
    return text.split()


@click.command("evaluate")
@click.option("--exp-dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="The experiment (exp/<tag>) whose embeddings (stage 4) are scored.")
@click.option("--data-root", default="data", show_default=True, type=click.Path(file_okay=False),
              help="Folder of the data dirs: trial lists are <data-root>/<set>/trials.")
@click.option("--train-set", default="train", show_default=True,
              help="The training set: its mean embedding centres, its speakers are the cohort and the "
                   "identification classes.")
@click.option("--test-sets", default="", help="Space-separated sets whose trials are scored.")
@click.option("--ident-sets", default="", help="Space-separated sets of held-out utterances of training speakers.")
@click.option("--calib-set", default="", help="A set whose trials fit the calibrations (a dev set; empty: none).")
@click.option("--backend", default="cosine", show_default=True, type=click.Choice(sorted(BACKENDS)))
@click.option("--center", default=False, show_default=True, type=click.BOOL,
              help="Subtract the training set's mean embedding before scoring.")
@click.option("--score-norm", default="none", show_default=True, type=click.Choice(SCORE_NORMS),
              help="Also score with this normalisation (cohort: the training speakers), as <backend>_<norm>.")
@click.option("--top-n", default=DEFAULT_TOP_N, show_default=True, type=click.IntRange(min=1),
              help="Cohort members per side for asnorm (ignored otherwise).")
@click.option("--baseline-dir", default=None, type=click.Path(file_okay=False),
              help="Also score the test sets with the no-training baseline's embeddings in this experiment dir "
                   "(e.g. exp/baseline_mfcc_mean), by cosine.")
def evaluate(exp_dir, data_root, train_set, test_sets, ident_sets, calib_set, backend, center, score_norm, top_n,
             baseline_dir):
    """Score every test set with the plain and the normalised system, calibrated on --calib-set; evaluate
    identification.

    Writes EXP_DIR/scores/<set>_<system>, EXP_DIR/results/<set>_<system>.json
    (system: <backend> and <backend>_<score-norm>), with --calib-set
    EXP_DIR/calibration/<calib-set>_<system>.{scores,json}, EXP_DIR/calibration.json
    (plain backend, what 'spk verify' uses) and EXP_DIR/calibration_<system>.json,
    and EXP_DIR/results/<set>_identification.json. Every input is checked before anything is scored.
    """
    jobs = plan_evaluation(exp_dir, data_root, train_set=train_set, test_sets=_sets(test_sets),
                           ident_sets=_sets(ident_sets), calib_set=calib_set or None, backend=backend, center=center,
                           score_norm=score_norm, top_n=top_n, baseline_dir=baseline_dir)
    if not jobs:
        raise click.UsageError("nothing to evaluate: give --test-sets and/or --ident-sets")
    try:
        run_evaluation(jobs)
    except (OSError, ValueError, DataDirError) as error:
        raise click.ClickException(str(error)) from None
