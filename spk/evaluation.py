"""Stage 5: score verification trial lists, fit calibrations, evaluate identification.

:func:`score_verification` is ``spk score``; :func:`calibrate_scores` is ``spk
calibrate``, which takes the scoring settings from the results file written with
the scores; :func:`plan_evaluation` decides everything stage 5 of a recipe does
(``spk evaluate``):

- the systems: the plain backend, and ``<backend>_<score_norm>`` when a score
  normalisation is asked for (its cohort: the training speakers' mean embeddings);
  centering (when asked) subtracts the training set's mean embedding in both;
- with a calibration set, each system's scores of its trials fit a calibration:
  ``calibration.json`` for the plain backend (what ``spk verify`` uses) and
  ``calibration_<system>.json`` for the normalised one; test scores are then
  written calibrated;
- every test set is scored by every system, and, with a baseline dir, by the
  no-training baseline (cosine, no centering);
- every identification set is evaluated against the training speakers.

File names (relative to the experiment dir): ``scores/<set>_<system>``,
``results/<set>_<system>.json``, ``calibration/<calib-set>_<system>.scores`` and
``.json``, ``results/<set>_identification.json``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Callable, Sequence

from spk.calibration import DEFAULT_FARS, Calibration, calibrate, load_calibration, save_calibration
from spk.data import read_trials
from spk.metrics import calibrated_metrics, compute_cllr, verification_metrics
from spk.model_dir import CALIBRATION, SYSTEM_CALIBRATION
from spk.results import ScoringSettings, read_results_file, results_for_scores, verification_results, write_results
from spk.score_norm import DEFAULT_TOP_N, score_trials_normalised
from spk.scoring import labelled_scores, load_embeddings, mean_embedding, trial_columns, write_scores

logger = logging.getLogger(__name__)


class SettingsMismatch(ValueError):
    """An option given to ``spk calibrate`` disagrees with how the scores were made."""


# --------------------------------------------------------------------------- #
# one trial list, one calibration
# --------------------------------------------------------------------------- #

def score_verification(trials_path: str | os.PathLike, enroll_scp: str | os.PathLike, test_scp: str | os.PathLike,
                       scores_out: str | os.PathLike, results_out: str | os.PathLike,
                       settings: ScoringSettings = ScoringSettings(), name: str | None = None) -> dict:
    """Score a trial list as ``settings`` say; write the scores and the results file; return its record.

    With ``settings.calibration`` the scores are written as calibrated LLRs and the
    results add Cllr, min Cllr and actual DCF (and the Cllr of the raw scores read
    as LLRs, ``cllr_uncalibrated``).
    """
    name = name or Path(results_out).stem
    calibration = load_calibration(settings.calibration) if settings.calibration else None
    trials = read_trials(trials_path)
    if not trials:
        raise ValueError(f"trials file {trials_path} is empty")
    enroll_ids, test_ids, labels = trial_columns(trials)
    mean = mean_embedding(load_embeddings(settings.center_scp)) if settings.center_scp else None
    cohort = load_embeddings(settings.cohort_scp) if settings.cohort_scp else None
    scores = score_trials_normalised((enroll_ids, test_ids), load_embeddings(enroll_scp), load_embeddings(test_scp),
                                     cohort, settings.score_norm, settings.backend, settings.top_n, trials_path,
                                     mean=mean, length_norm=settings.length_norm)
    raw_scores = scores
    if calibration is not None:
        scores = calibration.transform(scores)
    write_scores(scores_out, enroll_ids, test_ids, scores)
    calibrated = None
    if calibration is not None:  # the raw scores read as LLRs, for comparison
        calibrated = {**calibrated_metrics(scores, labels), "cllr_uncalibrated": compute_cllr(raw_scores, labels)}
    record = verification_results(
        trials=trials_path, scores=scores_out, enroll_scp=enroll_scp, test_scp=test_scp, settings=settings,
        metrics=verification_metrics(scores, labels), num_cohort=None if cohort is None else len(cohort[0]),
        top_n_used=None if cohort is None else min(settings.top_n or DEFAULT_TOP_N, len(cohort[0])),
        calibrated_metrics=calibrated)
    write_results(results_out, record)
    logger.info("%s: %d trials (%d target, %d nontarget), %s%s: EER %.2f%%, minDCF@0.01 %.4f, "
                "minDCF@0.001 %.4f, ROC-AUC %.4f%s -> %s", name, len(scores), record["num_target"],
                record["num_nontarget"], settings.backend,
                "" if settings.score_norm == "none" else f" + {settings.score_norm}",
                record["eer"], record["min_dcf_0.01"], record["min_dcf_0.001"], record["roc_auc"],
                "" if calibration is None else f", Cllr {record['cllr']:.4f} (min {record['min_cllr']:.4f}), "
                f"actDCF@0.01 {record['act_dcf_0.01']:.4f}", results_out)
    return record


def scores_settings(scores_path: str | os.PathLike, results_path: str | os.PathLike | None = None, *,
                    backend: str | None = None, center_scp: str | os.PathLike | None = None,
                    score_norm: str | None = None) -> tuple[ScoringSettings, dict | None]:
    """How the raw scores in ``scores_path`` were made, and the results record that says so (or None).

    The settings come from ``results_path``, or the results file found beside the
    scores (:func:`spk.results.results_for_scores`); the options given must agree
    with them (a :class:`SettingsMismatch` otherwise). Without a results file, the
    options given make the settings (default: cosine, no centering, no normalisation).
    Calibrated scores are refused (a ValueError): a calibration is fitted on raw scores.
    """
    results_path = Path(results_path) if results_path is not None else results_for_scores(scores_path)
    given = ScoringSettings(backend=backend or "cosine", center_scp=center_scp, score_norm=score_norm or "none")
    if results_path is None:
        logger.warning("no results file of 'spk score' found for %s: taking the scoring settings from the options "
                       "(backend %s, centering %s, score normalisation %s)", scores_path, given.backend,
                       given.center_scp or "none", given.score_norm)
        return given, None
    record = read_results_file(results_path)
    if record.get("kind") != "verification" or not record.get("scores"):
        raise ValueError(f"{results_path} is not the verification results file of a score file")
    if not os.path.exists(record["scores"]):
        raise ValueError(f"{results_path} records the scores {record['scores']}, which is not found from here: "
                         "run 'spk calibrate' in the folder 'spk score' ran in")
    if not os.path.samefile(record["scores"], scores_path):
        raise SettingsMismatch(f"{results_path} records the scores {record['scores']}, not {scores_path}")
    settings = ScoringSettings.from_results(record, results_path)
    if settings.calibration is not None:
        raise ValueError(f"{scores_path} holds calibrated scores (made with {settings.calibration}, says "
                         f"{results_path}); fit a calibration on raw scores ('spk score' without --calibration)")
    _check_agreement(settings, results_path, backend=backend, score_norm=score_norm, center_scp=center_scp)
    return settings, record


def _check_agreement(settings: ScoringSettings, results_path: Path, **given) -> None:
    """Each option given must say what the results file recorded."""
    for option, value in given.items():
        if value is None:
            continue
        recorded = getattr(settings, option)
        if option == "center_scp":
            agree = recorded is not None and os.path.exists(recorded) and os.path.samefile(recorded, value)
        else:
            agree = recorded == value
        if not agree:
            flag = "--" + option.replace("_", "-")
            raise SettingsMismatch(f"{flag} {value} disagrees with the scores: {results_path} records that they were "
                                   f"made with {flag} {recorded if recorded is not None else '(none)'}; "
                                   f"leave {flag} out to use the recorded setting, or rescore")


def calibrate_scores(scores_path: str | os.PathLike, out_path: str | os.PathLike, settings: ScoringSettings, *,
                     trials_path: str | os.PathLike | None = None, p_target: float = 0.5,
                     fars: Sequence[float] = DEFAULT_FARS) -> Calibration:
    """Fit a calibration on dev scores made as ``settings`` say; write it to ``out_path``.

    The calibration records the backend, the score normalisation and the centre
    vector itself (the mean of ``settings.center_scp``), so it is self-contained.
    """
    scores, labels = labelled_scores(scores_path, trials_path)
    calibration = calibrate(scores, labels, p_target, fars, dev_trials=trials_path, dev_scores=scores_path)
    center = mean_embedding(load_embeddings(settings.center_scp)) if settings.center_scp else None
    calibration.scoring = {"backend": settings.backend, "score_norm": settings.score_norm,
                           "center": None if center is None else [float(v) for v in center]}
    save_calibration(out_path, calibration)
    dev = calibration.dev_metrics
    logger.info("calibration on %s (%d target, %d nontarget): llr = %.4g * score + %.4g; Cllr %.4f -> %.4f "
                "(min %.4f); EER threshold %.4g (llr %.3f) -> %s", scores_path, dev["num_target"],
                dev["num_nontarget"], calibration.a, calibration.b, dev["cllr_raw"], dev["cllr"], dev["min_cllr"],
                calibration.thresholds["eer"]["score"], calibration.thresholds["eer"]["llr"], out_path)
    return calibration


# --------------------------------------------------------------------------- #
# stage 5
# --------------------------------------------------------------------------- #

@dataclass(frozen=True)
class Job:
    """One step of stage 5: the files it reads and writes, and the call that does it."""

    inputs: tuple[Path, ...]
    outputs: tuple[Path, ...]
    run: Callable[[], object]


def _verification_job(trials: Path, embeddings: Path, settings: ScoringSettings, scores_out: Path,
                      results_out: Path) -> Job:
    """Score a set's trials (both sides from its ``embeddings``) with one system."""
    used = (settings.center_scp, settings.cohort_scp, settings.calibration)
    return Job((trials, embeddings, *(Path(p) for p in used if p is not None)), (scores_out, results_out),
               partial(score_verification, trials, embeddings, embeddings, scores_out, results_out, settings))


def _calibration_job(scores: Path, trials: Path, results: Path, out: Path) -> Job:
    """Fit a calibration on dev scores with the scoring settings their results file records."""
    def run():
        settings, _ = scores_settings(scores, results)
        calibrate_scores(scores, out, settings, trials_path=trials)
    return Job((scores, trials, results), (out,), run)


def _identification_job(exp_dir: Path, embeddings: Path, data_dir: Path, speaker_embeddings: Path,
                        results_out: Path) -> Job:
    """Identify the utterances of ``data_dir`` among the training speakers."""
    def run():
        from spk.identify import evaluate_identification  # loads a model: torch only when needed

        evaluate_identification(exp_dir, embeddings, data_dir, results_out, speaker_embeddings_scp=speaker_embeddings)
    return Job((embeddings, data_dir, speaker_embeddings), (results_out,), run)


def plan_evaluation(exp_dir: str | os.PathLike, data_root: str | os.PathLike = "data", *, train_set: str = "train",
                    test_sets: Sequence[str] = (), ident_sets: Sequence[str] = (), calib_set: str | None = None,
                    backend: str = "cosine", center: bool = False, score_norm: str = "none",
                    top_n: int = DEFAULT_TOP_N, baseline_dir: str | os.PathLike | None = None) -> list[Job]:
    """The jobs of stage 5 in order (module docstring); nothing is read or written here.

    Embeddings are ``<exp_dir>/embeddings/<set>/xvector.scp`` (and the training set's
    ``spk_xvector.scp`` for the cohort and identification); trial lists
    ``<data_root>/<set>/trials``. ``top_n`` is used by asnorm only.
    """
    exp, data = Path(exp_dir), Path(data_root)
    train = exp / "embeddings" / train_set
    plain = ScoringSettings(backend=backend, center_scp=train / "xvector.scp" if center else None)
    systems = {backend: plain}
    if score_norm != "none":
        systems[f"{backend}_{score_norm}"] = replace(plain, score_norm=score_norm, cohort_scp=train / "spk_xvector.scp",
                                                     top_n=top_n if score_norm == "asnorm" else None)
    jobs: list[Job] = []
    if calib_set:
        trials, embeddings = data / calib_set / "trials", exp / "embeddings" / calib_set / "xvector.scp"
        for system, settings in list(systems.items()):
            scores = exp / "calibration" / f"{calib_set}_{system}.scores"
            results = exp / "calibration" / f"{calib_set}_{system}.json"
            out = exp / (CALIBRATION if system == backend else SYSTEM_CALIBRATION.format(system=system))
            jobs += [_verification_job(trials, embeddings, settings, scores, results),
                     _calibration_job(scores, trials, results, out)]
            systems[system] = replace(settings, calibration=out)  # test scores are written calibrated
    for test_set in test_sets:
        trials = data / test_set / "trials"
        for system, settings in systems.items():
            jobs.append(_verification_job(trials, exp / "embeddings" / test_set / "xvector.scp", settings,
                                          exp / "scores" / f"{test_set}_{system}",
                                          exp / "results" / f"{test_set}_{system}.json"))
        if baseline_dir is not None:
            base = Path(baseline_dir)
            jobs.append(_verification_job(trials, base / "embeddings" / test_set / "xvector.scp", ScoringSettings(),
                                          base / "scores" / f"{test_set}_cosine",
                                          base / "results" / f"{test_set}_cosine.json"))
    for ident_set in ident_sets:
        results = exp / "results" / f"{ident_set}_identification.json"
        jobs.append(_identification_job(exp, exp / "embeddings" / ident_set / "xvector.scp", data / ident_set,
                                        train / "spk_xvector.scp", results))
    return jobs


def missing_inputs(jobs: Sequence[Job]) -> list[Path]:
    """The inputs of ``jobs`` that neither exist nor are made by an earlier job, in order of first use."""
    made, missing = set(), []
    for job in jobs:
        for path in job.inputs:
            if path not in made and not path.exists() and path not in missing:
                missing.append(path)
        made.update(job.outputs)
    return missing


def run_evaluation(jobs: Sequence[Job]) -> None:
    """Run the jobs of :func:`plan_evaluation` in order, after checking that every input is there."""
    missing = missing_inputs(jobs)
    if missing:
        raise FileNotFoundError("stage 5 cannot start; missing: " + ", ".join(map(str, missing))
                                + " (embeddings come from stage 4, trial lists and data dirs from stage 0)")
    for job in jobs:
        job.run()
