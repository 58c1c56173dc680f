"""``spk calibrate``: fit a score-to-LLR calibration on a development trial list."""

from __future__ import annotations

import logging

import click

from spk.calibration import DEFAULT_FARS, calibrate as fit_calibration, save_calibration
from spk.scoring import labelled_scores, load_embeddings, mean_embedding

logger = logging.getLogger(__name__)


@click.command("calibrate")
@click.option("--scores", "scores_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Raw scores of the development trials, as 'spk score' writes them (without --calibration).")
@click.option("--trials", "trials_path", default=None, type=click.Path(exists=True, dir_okay=False),
              help="Kaldi trials file with target/nontarget labels for --scores "
                   "[needed unless the score file has a label column].")
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False),
              help="Calibration JSON to write, e.g. exp/<tag>/calibration.json.")
@click.option("--p-target", default=0.5, show_default=True,
              type=click.FloatRange(0.0, 1.0, min_open=True, max_open=True),
              help="Effective target prior that weighs targets against nontargets in the fit.")
@click.option("--far", "fars", multiple=True, default=DEFAULT_FARS, show_default=True,
              type=click.FloatRange(0.0, 1.0, max_open=True),
              help="False-accept rate to record a threshold for (repeat for several).")
@click.option("--backend", default="cosine", show_default=True, type=click.Choice(["cosine", "euclidean"]),
              help="The backend that made --scores (recorded, so the calibration is applied to like scores).")
@click.option("--center-scp", default=None, type=click.Path(exists=True, dir_okay=False),
              help="The embeddings whose mean was subtracted before scoring (as given to 'spk score'); "
                   "the mean vector itself is stored, so the calibration file is self-contained.")
@click.option("--score-norm", default="none", show_default=True,
              type=click.Choice(["none", "znorm", "tnorm", "snorm", "asnorm"]),
              help="The score normalisation that made --scores (recorded).")
def calibrate(scores_path, trials_path, out_path, p_target, fars, backend, center_scp, score_norm):
    """Fit LLR = a * score + b by prior-weighted logistic regression on dev scores; record thresholds.

    The thresholds (EER point, each --far, Bayes thresholds for p_target 0.5, 0.01
    and 0.001) are stored on both the raw-score and the LLR scale. Apply the
    calibration with 'spk score --calibration OUT' on scores made the same way
    (same backend, centering and score normalisation).
    """
    try:
        scores, labels = labelled_scores(scores_path, trials_path)
        calibration = fit_calibration(scores, labels, p_target, fars, dev_trials=trials_path,
                                      dev_scores=scores_path)
        center = mean_embedding(load_embeddings(center_scp)) if center_scp else None
        calibration.scoring = {"backend": backend, "score_norm": score_norm,
                               "center": None if center is None else [float(v) for v in center]}
    except (OSError, ValueError) as error:
        raise click.ClickException(str(error)) from None
    save_calibration(out_path, calibration)
    dev = calibration.dev_metrics
    logger.info("calibration on %s (%d target, %d nontarget): llr = %.4g * score + %.4g; Cllr %.4f -> %.4f "
                "(min %.4f); EER threshold %.4g (llr %.3f) -> %s", scores_path, dev["num_target"],
                dev["num_nontarget"], calibration.a, calibration.b, dev["cllr_raw"], dev["cllr"], dev["min_cllr"],
                calibration.thresholds["eer"]["score"], calibration.thresholds["eer"]["llr"], out_path)
