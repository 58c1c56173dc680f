"""``spk score``: score a verification trial list with embeddings and write its results file."""

from __future__ import annotations

import click

from spk.data import DataDirError
from spk.evaluation import score_verification
from spk.results import ScoringSettings
from spk.score_norm import DEFAULT_TOP_N, SCORE_NORMS
from spk.scoring import BACKENDS


def _check_norm_options(score_norm: str, cohort_scp: str | None, top_n: int | None) -> None:
    """Refuse option combinations that would silently do something else than asked."""
    if score_norm != "none" and cohort_scp is None:
        raise click.UsageError(f"--score-norm {score_norm} needs --cohort-scp: embeddings of speakers outside "
                               "the trials, e.g. the training set's spk_xvector.scp")
    if score_norm == "none" and cohort_scp is not None:
        raise click.UsageError("--cohort-scp is only used for score normalisation; add --score-norm "
                               "znorm|tnorm|snorm|asnorm, or leave --cohort-scp out")
    if top_n is not None and score_norm != "asnorm":
        raise click.UsageError(f"--top-n is for --score-norm asnorm only, not {score_norm}")


@click.command("score")
@click.option("--trials", "trials_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Kaldi trials file: '<enroll-id> <test-id> target|nontarget' lines.")
@click.option("--enroll-scp", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Embeddings of the enrollment ids (Kaldi scp).")
@click.option("--test-scp", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Embeddings of the test ids (Kaldi scp).")
@click.option("--backend", default="cosine", show_default=True, type=click.Choice(sorted(BACKENDS)),
              help="How two embeddings are compared.")
@click.option("--center-scp", default=None, type=click.Path(exists=True, dir_okay=False),
              help="Embeddings whose mean is subtracted from every embedding (enroll, test, cohort) "
                   "before scoring, e.g. the training set's xvector.scp.")
@click.option("--length-norm/--no-length-norm", default=False, show_default=True,
              help="Scale every embedding (after centering) to unit length. Cosine scoring does this "
                   "anyway; it changes Euclidean scores.")
@click.option("--score-norm", default="none", show_default=True, type=click.Choice(SCORE_NORMS),
              help="Normalise scores with the cohort statistics of the enrollment side (znorm), the test "
                   "side (tnorm), both (snorm), or both over the top-N closest cohort members (asnorm).")
@click.option("--cohort-scp", default=None, type=click.Path(exists=True, dir_okay=False),
              help="Cohort embeddings for --score-norm, e.g. the training set's spk_xvector.scp.")
@click.option("--top-n", default=None, type=click.IntRange(min=1),
              help=f"Cohort members per side for --score-norm asnorm [default: {DEFAULT_TOP_N}].")
@click.option("--calibration", "calibration_path", default=None, type=click.Path(dir_okay=False),
              help="Calibration JSON from 'spk calibrate': scores are written as calibrated LLRs and the "
                   "results add Cllr, min Cllr and actual DCF.")
@click.option("--scores-out", required=True, type=click.Path(dir_okay=False),
              help="Score file to write: '<enroll-id> <test-id> <score>' lines.")
@click.option("--results-out", required=True, type=click.Path(dir_okay=False),
              help="Results JSON to write (exp/<tag>/results/<name>.json).")
@click.option("--name", default=None, help="Name in the log line [default: stem of --results-out].")
def score(trials_path, enroll_scp, test_scp, backend, center_scp, length_norm, score_norm, cohort_scp, top_n,
          calibration_path, scores_out, results_out, name):
    """Score TRIALS with cosine or Euclidean similarity; write scores, EER, minDCF and ROC-AUC.

    Optionally centre and length-normalise the embeddings, normalise the scores
    against a cohort, and calibrate them to log-likelihood ratios.
    """
    _check_norm_options(score_norm, cohort_scp, top_n)
    settings = ScoringSettings(backend=backend, center_scp=center_scp, length_norm=length_norm, score_norm=score_norm,
                               cohort_scp=cohort_scp, top_n=top_n, calibration=calibration_path)
    try:
        score_verification(trials_path, enroll_scp, test_scp, scores_out, results_out, settings, name=name)
    except (OSError, ValueError, DataDirError) as error:
        raise click.ClickException(str(error)) from None
