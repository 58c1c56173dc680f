"""Linear score calibration to log-likelihood ratios, and decision thresholds.

A raw score ``s`` (cosine, negative distance, normalised) says which trial is more
likely a target, but not how likely. Calibration maps it to a natural-log
likelihood ratio ``llr = a * s + b`` trained on a development trial list. The fit
is BOSARIS' prior-weighted logistic regression (Brümmer & du Preez 2006): with
effective prior ``p`` and ``logit(p) = log(p / (1 - p))`` it minimises

    p / N_tar  * sum over targets    of log(1 + exp(-(a s + b + logit p)))
  + (1 - p) / N_non * sum over nontargets of log(1 + exp(  a s + b + logit p ))

which is Cllr at prior ``p`` (up to a factor), so target and nontarget trials
weigh as ``p`` says however many of each the list holds. Equal-variance
Gaussian score distributions have exactly such a linear LLR.

A calibration also carries decision thresholds measured on the dev list, each on
both scales (raw score and LLR): at the EER point, at target false-accept rates,
and the Bayes thresholds ``log((1 - p) / p)`` for several priors. It is stored as
JSON, ``exp/<tag>/calibration.json``, beside the model.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from spk.data.io import atomic_write_text
from spk.metrics import (DCF_P_TARGETS, split_scores, bayes_threshold, compute_cllr, compute_eer,
                         compute_min_cllr, operating_points)

logger = logging.getLogger(__name__)

# False-accept rates whose thresholds a calibration records.
DEFAULT_FARS = (0.01,)

# L2 penalty on the standardised-score parameters: negligible for real data, it keeps
# the solution finite when the dev scores separate targets from nontargets perfectly.
_RIDGE = 1e-6


def _sigmoid(z: np.ndarray) -> np.ndarray:
    """``1 / (1 + exp(-z))`` without overflow."""
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def _loss_gradient_hessian(theta: np.ndarray, x: np.ndarray, y: np.ndarray, weights: np.ndarray,
                           offset: float) -> tuple[float, np.ndarray, np.ndarray]:
    """Weighted logistic loss at ``theta = (slope, intercept)`` on standardised scores ``x``."""
    z = theta[0] * x + theta[1] + offset
    loss = np.sum(weights * np.where(y == 1, np.logaddexp(0.0, -z), np.logaddexp(0.0, z)))
    loss += 0.5 * _RIDGE * float(theta @ theta)
    residual = weights * (_sigmoid(z) - y)
    gradient = np.array([residual @ x, residual.sum()]) + _RIDGE * theta
    curvature = weights * _sigmoid(z) * _sigmoid(-z)
    hessian = np.array([[curvature @ (x * x), curvature @ x], [curvature @ x, curvature.sum()]])
    return float(loss), gradient, hessian + _RIDGE * np.eye(2)


def fit_linear_calibration(scores, labels, p_target: float = 0.5, max_iter: int = 100,
                           tol: float = 1e-10) -> tuple[float, float]:
    """``(a, b)`` of the prior-weighted logistic regression ``llr = a * score + b`` (module docstring).

    Newton's method with a backtracking line search on standardised scores (the
    problem is convex with two parameters, so it converges in a few steps).
    """
    if not 0.0 < p_target < 1.0:
        raise ValueError(f"p_target must lie strictly between 0 and 1, not {p_target}")
    targets, nontargets = split_scores(scores, labels)
    if targets.min() > nontargets.max():
        logger.warning("the calibration scores separate targets from nontargets perfectly: the fitted "
                       "slope is only kept finite by regularisation; a harder dev list calibrates better")
    raw = np.concatenate([targets, nontargets])
    centre, spread = raw.mean(), raw.std()
    spread = spread if spread > 0 else 1.0
    x = (raw - centre) / spread
    y = np.concatenate([np.ones(targets.size), np.zeros(nontargets.size)])
    weights = np.concatenate([np.full(targets.size, p_target / targets.size),
                              np.full(nontargets.size, (1.0 - p_target) / nontargets.size)])
    offset = math.log(p_target / (1.0 - p_target))

    theta = np.zeros(2)
    loss, gradient, hessian = _loss_gradient_hessian(theta, x, y, weights, offset)
    for _ in range(max_iter):
        step = -np.linalg.solve(hessian, gradient)
        decrease = float(gradient @ step)  # negative: the Hessian is positive definite
        if -decrease < tol:
            break
        size = 1.0
        while True:
            candidate = theta + size * step
            new_loss, new_gradient, new_hessian = _loss_gradient_hessian(candidate, x, y, weights, offset)
            if new_loss <= loss + 1e-4 * size * decrease or size < 1e-10:
                break
            size *= 0.5
        theta, loss, gradient, hessian = candidate, new_loss, new_gradient, new_hessian
    else:
        logger.warning("calibration: Newton's method stopped after %d iterations without converging", max_iter)
    slope = theta[0] / spread
    return float(slope), float(theta[1] - slope * centre)


def threshold_at_far(scores, labels, far: float) -> float:
    """The lowest threshold whose false-accept rate (``score >= threshold``) is at most ``far``.

    One of the operating points of ``spk.metrics``: a distinct score, or just above
    the highest score when only rejecting everything keeps the rate low enough.
    Any lower threshold accepts more nontargets than ``far`` allows.
    """
    if not 0.0 <= far < 1.0:
        raise ValueError(f"a false-accept rate must lie in [0, 1), not {far}")
    thresholds, _, fpr = operating_points(scores, labels)
    return float(thresholds[int(np.argmax(fpr <= far))])


def _error_rates(scores, labels, threshold: float) -> dict:
    targets, nontargets = split_scores(scores, labels)
    return {"fnr": float(np.mean(targets < threshold)), "fpr": float(np.mean(nontargets >= threshold))}


def decision_thresholds(scores, labels, a: float, b: float, fars=DEFAULT_FARS,
                        p_targets=(0.5, *DCF_P_TARGETS)) -> dict[str, dict[str, float]]:
    """Thresholds on raw scores and on LLRs ``a * score + b``, with their dev error rates.

    Keys: ``eer``; ``far_<far>`` for each false-accept rate; ``bayes_<p>`` for each
    prior (the LLR threshold ``log((1 - p) / p)``). Each value holds ``score``,
    ``llr``, and ``fnr`` and ``fpr`` of accepting ``score >= threshold`` on these trials.
    """
    if not a > 0:
        raise ValueError(f"calibration slope {a:.4g} is not positive: the scores rank nontargets above "
                         "targets; check the trial labels and the backend")
    raw = {"eer": compute_eer(scores, labels)[1]}
    raw.update({f"far_{far:g}": threshold_at_far(scores, labels, far) for far in fars})
    thresholds = {name: {"score": value, "llr": a * value + b} for name, value in raw.items()}
    for p_target in p_targets:
        llr = bayes_threshold(p_target)
        thresholds[f"bayes_{p_target:g}"] = {"score": (llr - b) / a, "llr": llr}
    for values in thresholds.values():
        values.update(_error_rates(scores, labels, values["score"]))
    return thresholds


@dataclass
class Calibration:
    """A fitted linear calibration ``llr = a * score + b`` and what it was fitted on."""

    a: float
    b: float
    p_target: float = 0.5
    dev_trials: str | None = None
    dev_scores: str | None = None
    thresholds: dict = field(default_factory=dict)
    dev_metrics: dict = field(default_factory=dict)
    # how the dev scores were made, so a user of the calibration can score the same way:
    # backend (cosine/euclidean), center (the subtracted mean vector as a list, or None), score_norm
    scoring: dict = field(default_factory=dict)

    def transform(self, scores) -> np.ndarray:
        """Raw scores as calibrated LLRs (float64)."""
        return self.a * np.asarray(scores, dtype=np.float64) + self.b


def calibrate(scores, labels, p_target: float = 0.5, fars=DEFAULT_FARS, dev_trials: str | None = None,
              dev_scores: str | None = None) -> Calibration:
    """Fit a calibration on dev ``scores`` and ``labels`` and measure its thresholds and Cllr there.

    ``dev_metrics`` holds the dev list's sizes, EER (percent), Cllr of the raw scores
    (``cllr_raw``), Cllr of the calibrated ones (``cllr``) and min Cllr.
    """
    a, b = fit_linear_calibration(scores, labels, p_target)
    labels = np.asarray(labels)
    llrs = a * np.asarray(scores, dtype=np.float64) + b
    dev_metrics = {"num_target": int(np.count_nonzero(labels == 1)),
                   "num_nontarget": int(np.count_nonzero(labels == 0)),
                   "eer": 100.0 * compute_eer(scores, labels)[0],
                   "cllr_raw": compute_cllr(scores, labels), "cllr": compute_cllr(llrs, labels),
                   "min_cllr": compute_min_cllr(scores, labels)}
    return Calibration(a, b, p_target, None if dev_trials is None else str(dev_trials),
                       None if dev_scores is None else str(dev_scores),
                       decision_thresholds(scores, labels, a, b, fars), dev_metrics)


def save_calibration(path: str | os.PathLike, calibration: Calibration) -> None:
    """Write a calibration as JSON (sorted keys, complete or not at all)."""
    atomic_write_text(path, json.dumps(asdict(calibration), sort_keys=True, indent=2, allow_nan=False) + "\n")


def load_calibration(path: str | os.PathLike) -> Calibration:
    """Read a calibration written by ``save_calibration``; a bad file is a ValueError naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"calibration file {path} does not exist; make one with 'spk calibrate'")
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"calibration file {path} is not valid JSON: {error}") from None
    if not isinstance(record, dict):
        raise ValueError(f"calibration file {path} does not hold a JSON object")
    for key in ("a", "b"):
        value = record.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"calibration file {path}: '{key}' must be a finite number, not {value!r}; "
                             "rewrite it with 'spk calibrate'")
    if not record["a"] > 0:
        raise ValueError(f"calibration file {path}: slope 'a' = {record['a']} is not positive")
    unknown = set(record) - set(Calibration.__dataclass_fields__)
    if unknown:
        raise ValueError(f"calibration file {path} has unknown keys: {', '.join(sorted(unknown))}")
    return Calibration(**record)
