"""``spk score``: score a verification trial list with embeddings and write its results file."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from spk.metrics import verification_metrics
from spk.report import write_results_json
from spk.scoring import BACKENDS, load_embeddings, read_trials, score_trials, write_scores

logger = logging.getLogger(__name__)


@click.command("score")
@click.option("--trials", "trials_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Kaldi trials file: '<enroll-id> <test-id> target|nontarget' lines.")
@click.option("--enroll-scp", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Embeddings of the enrollment ids (Kaldi scp).")
@click.option("--test-scp", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Embeddings of the test ids (Kaldi scp).")
@click.option("--backend", default="cosine", show_default=True, type=click.Choice(sorted(BACKENDS)),
              help="How two embeddings are compared.")
@click.option("--scores-out", required=True, type=click.Path(dir_okay=False),
              help="Score file to write: '<enroll-id> <test-id> <score>' lines.")
@click.option("--results-out", required=True, type=click.Path(dir_okay=False),
              help="Results JSON to write (exp/<tag>/results/<name>.json).")
@click.option("--name", default=None, help="Name in the log line [default: stem of --results-out].")
def score(trials_path, enroll_scp, test_scp, backend, scores_out, results_out, name):
    """Score TRIALS with cosine or Euclidean similarity; write scores, EER, minDCF and ROC-AUC."""
    name = name or Path(results_out).stem
    try:
        trials = read_trials(trials_path)
        if trials[2] is None:
            raise click.ClickException(f"{trials_path} has no target/nontarget labels; results need them")
        enroll = load_embeddings(enroll_scp)
        test = load_embeddings(test_scp)
        scores = score_trials(trials, enroll, test, backend=backend, trials_path=trials_path)
        write_scores(scores_out, trials[0], trials[1], scores)
        results = {"kind": "verification", "trials": trials_path, "backend": backend, "scores": scores_out,
                   "enroll_scp": enroll_scp, "test_scp": test_scp, **verification_metrics(scores, trials[2])}
    except (OSError, ValueError) as error:
        raise click.ClickException(str(error)) from None
    write_results_json(results_out, results)
    logger.info("%s: %d trials (%d target, %d nontarget), %s: EER %.2f%%, minDCF@0.01 %.4f, "
                "minDCF@0.001 %.4f, ROC-AUC %.4f -> %s", name, len(scores), results["num_target"],
                results["num_nontarget"], backend, results["eer"], results["min_dcf_0.01"],
                results["min_dcf_0.001"], results["roc_auc"], results_out)
