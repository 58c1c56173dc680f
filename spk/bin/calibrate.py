"""``spk calibrate``: fit a score-to-LLR calibration on a development trial list."""

from __future__ import annotations

import click

from spk.calibration import DEFAULT_FARS
from spk.data import DataDirError
from spk.evaluation import SettingsMismatch, calibrate_scores, scores_settings
from spk.score_norm import SCORE_NORMS
from spk.scoring import BACKENDS


@click.command("calibrate")
@click.option("--scores", "scores_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Raw scores of the development trials, as 'spk score' writes them (without --calibration).")
@click.option("--trials", "trials_path", default=None, type=click.Path(exists=True, dir_okay=False),
              help="Kaldi trials file with target/nontarget labels for --scores "
                   "[default: the trials recorded with the scores, or the score file's label column].")
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False),
              help="Calibration JSON to write, e.g. exp/<tag>/calibration.json.")
@click.option("--p-target", default=0.5, show_default=True,
              type=click.FloatRange(0.0, 1.0, min_open=True, max_open=True),
              help="Effective target prior that weighs targets against nontargets in the fit.")
@click.option("--far", "fars", multiple=True, default=DEFAULT_FARS, show_default=True,
              type=click.FloatRange(0.0, 1.0, max_open=True),
              help="False-accept rate to record a threshold for (repeat for several).")
@click.option("--results", "results_path", default=None, type=click.Path(exists=True, dir_okay=False),
              help="The results JSON that 'spk score' wrote with --scores: the scoring settings (and, without "
                   "--trials, the trials) come from it [default: found beside the scores: <stem>.json there, "
                   "or ../results/<stem>.json].")
@click.option("--backend", default=None, type=click.Choice(sorted(BACKENDS)),
              help="The backend that made --scores [default: as recorded with the scores, else cosine]; "
                   "a value that disagrees with the record is an error.")
@click.option("--center-scp", default=None, type=click.Path(exists=True, dir_okay=False),
              help="The embeddings whose mean was subtracted before scoring [default: as recorded]; the mean "
                   "vector itself is stored, so the calibration file is self-contained.")
@click.option("--score-norm", default=None, type=click.Choice(SCORE_NORMS),
              help="The score normalisation that made --scores [default: as recorded, else none].")
def calibrate(scores_path, trials_path, out_path, p_target, fars, results_path, backend, center_scp, score_norm):
    """Fit LLR = a * score + b by prior-weighted logistic regression on dev scores; record thresholds.

    How the scores were made (backend, centering, score normalisation) is read
    from the results file 'spk score' wrote with them and stored in the
    calibration, so that it is applied to like scores ('spk score --calibration
    OUT', 'spk verify'). The thresholds (EER point, each --far, Bayes thresholds
    for p_target 0.5, 0.01 and 0.001) are stored on both the raw-score and the LLR scale.
    """
    try:
        settings, record = scores_settings(scores_path, results_path, backend=backend, center_scp=center_scp,
                                           score_norm=score_norm)
    except SettingsMismatch as error:
        raise click.UsageError(str(error)) from None
    except (OSError, ValueError) as error:
        raise click.ClickException(str(error)) from None
    if trials_path is None and record is not None:
        trials_path = record.get("trials")
    try:
        calibrate_scores(scores_path, out_path, settings, trials_path=trials_path, p_target=p_target, fars=fars)
    except (OSError, ValueError, DataDirError) as error:
        raise click.ClickException(str(error)) from None
