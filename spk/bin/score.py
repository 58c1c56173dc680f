"""``spk score``: score a verification trial list with embeddings and write its results file."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from spk.metrics import calibrated_metrics, compute_cllr, verification_metrics
from spk.report import write_results_json
from spk.score_norm import DEFAULT_TOP_N, SCORE_NORMS, score_trials_normalised
from spk.scoring import BACKENDS, load_embeddings, mean_embedding, read_trials, write_scores

logger = logging.getLogger(__name__)


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
    name = name or Path(results_out).stem
    try:
        calibration = None
        if calibration_path is not None:
            from spk.calibration import load_calibration
            calibration = load_calibration(calibration_path)
        trials = read_trials(trials_path)
        if trials[2] is None:
            raise click.ClickException(f"{trials_path} has no target/nontarget labels; results need them")
        enroll = load_embeddings(enroll_scp)
        test = load_embeddings(test_scp)
        mean = mean_embedding(load_embeddings(center_scp)) if center_scp else None
        cohort = load_embeddings(cohort_scp) if cohort_scp else None
        scores = score_trials_normalised(trials, enroll, test, cohort, score_norm, backend, top_n, trials_path,
                                         mean=mean, length_norm=length_norm)
        raw_scores = scores
        if calibration is not None:
            scores = calibration.transform(scores)
        write_scores(scores_out, trials[0], trials[1], scores)
        results = {"kind": "verification", "trials": trials_path, "backend": backend, "scores": scores_out,
                   "enroll_scp": enroll_scp, "test_scp": test_scp, "center_scp": center_scp,
                   "length_norm": length_norm, "score_norm": score_norm,
                   **verification_metrics(scores, trials[2])}
        if score_norm != "none":
            results["cohort_scp"] = cohort_scp
            results["num_cohort"] = len(cohort[0])
        if score_norm == "asnorm":
            results["top_n"] = min(top_n or DEFAULT_TOP_N, len(cohort[0]))
        if calibration is not None:
            results.update(calibration=calibration_path, **calibrated_metrics(scores, trials[2]),
                           cllr_uncalibrated=compute_cllr(raw_scores, trials[2]))  # raw scores read as LLRs
    except (OSError, ValueError) as error:
        raise click.ClickException(str(error)) from None
    write_results_json(results_out, results)
    logger.info("%s: %d trials (%d target, %d nontarget), %s%s: EER %.2f%%, minDCF@0.01 %.4f, "
                "minDCF@0.001 %.4f, ROC-AUC %.4f%s -> %s", name, len(scores), results["num_target"],
                results["num_nontarget"], backend, "" if score_norm == "none" else f" + {score_norm}",
                results["eer"], results["min_dcf_0.01"], results["min_dcf_0.001"], results["roc_auc"],
                "" if calibration is None else f", Cllr {results['cllr']:.4f} (min {results['min_cllr']:.4f}), "
                f"actDCF@0.01 {results['act_dcf_0.01']:.4f}", results_out)
