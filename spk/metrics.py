"""Evaluation metrics for speaker verification and closed-set identification.

Verification metrics take ``scores`` (higher = more likely the same speaker) and
``labels`` (1 = target trial, 0 = nontarget trial) and share one set of
*operating points*. A trial is accepted when ``score >= threshold``. Sweeping the
threshold over every distinct score ``u_1 < u_2 < ... < u_m`` gives the points

    threshold u_j:  FNR_j = #{targets with score < u_j} / #targets
                    FPR_j = #{nontargets with score >= u_j} / #nontargets

The first one (threshold ``u_1``) accepts every trial (FNR 0, FPR 1). One more
point rejects every trial (FNR 1, FPR 0); its threshold is the smallest float
above ``u_m``. Because thresholds sit only at distinct scores, trials with equal
scores are always accepted or rejected together: ties are never split by the
order in which they happen to be sorted.

Calibration metrics (actual DCF, Cllr, minimum Cllr) read scores as natural-log
likelihood ratios (LLRs), as a calibrated system outputs them.

Identification metrics take a score matrix ``(num_test, num_classes)`` and the
index of each test sample's true class.

Everything here is numpy and vectorised (min Cllr uses scipy's pool-adjacent-violators).
"""

from __future__ import annotations

import numpy as np

# The NIST SRE operating points reported by every recipe (p_target values).
DCF_P_TARGETS = (0.01, 0.001)


# --------------------------------------------------------------------------- #
# verification
# --------------------------------------------------------------------------- #

def split_scores(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    """``(target scores, nontarget scores)`` as float64, after checking the inputs.

    Raises ValueError for different lengths, NaN or infinite scores, labels other
    than 0 and 1, and lists without targets or without nontargets.
    """
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).ravel()
    if scores.shape != labels.shape:
        raise ValueError(f"scores and labels differ in length: {scores.size} vs {labels.size}")
    if not np.all(np.isfinite(scores)):
        raise ValueError(f"{np.count_nonzero(~np.isfinite(scores))} scores are NaN or infinite")
    if not np.all((labels == 0) | (labels == 1)):
        raise ValueError("labels must be 1 (target) or 0 (nontarget)")
    targets = scores[labels == 1]
    nontargets = scores[labels == 0]
    if targets.size == 0:
        raise ValueError(f"no target trials among {scores.size} trials: verification metrics need both kinds")
    if nontargets.size == 0:
        raise ValueError(f"no nontarget trials among {scores.size} trials: verification metrics need both kinds")
    return targets, nontargets


def operating_points(scores, labels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All operating points of a score list: ``(thresholds, fnr, fpr)``, thresholds ascending.

    One point per distinct score plus the reject-all point at the end (see the module
    docstring). ``fnr`` rises from 0 to 1 and ``fpr`` falls from 1 to 0.
    """
    targets, nontargets = split_scores(scores, labels)
    distinct = np.unique(np.concatenate([targets, nontargets]))
    thresholds = np.append(distinct, np.nextafter(distinct[-1], np.inf))
    # searchsorted(..., side="left") counts the scores strictly below each threshold
    misses = np.searchsorted(np.sort(targets), thresholds, side="left")
    rejected_nontargets = np.searchsorted(np.sort(nontargets), thresholds, side="left")
    fnr = misses / targets.size
    fpr = (nontargets.size - rejected_nontargets) / nontargets.size
    return thresholds, fnr, fpr


def compute_eer(scores, labels) -> tuple[float, float]:
    """Equal error rate as a fraction in [0, 1], and the threshold where it occurs.

    Definition: take the operating points of the module docstring (every distinct
    score plus reject-all), in threshold order. FNR never falls and FPR never rises
    along them, and FNR - FPR goes from -1 (accept all) to +1 (reject all). Let j be
    the first point with FNR_j >= FPR_j. The two curves cross on the segment from
    point j-1 to point j; with ``a`` the fraction of that segment where
    FNR - FPR reaches 0 (linear interpolation),

        EER       = FNR_{j-1} + a (FNR_j - FNR_{j-1})  (= FPR at the same place)
        threshold = t_{j-1}   + a (t_j   - t_{j-1})

    So perfect separation gives 0, fully reversed scores give 1, and all-equal
    scores give 0.5. Raises ValueError when there are no targets or no nontargets.
    """
    thresholds, fnr, fpr = operating_points(scores, labels)
    gap = fnr - fpr
    j = int(np.argmax(gap >= 0))  # first point where FNR has caught up with FPR; j >= 1
    a = -gap[j - 1] / (gap[j] - gap[j - 1])
    eer = fnr[j - 1] + a * (fnr[j] - fnr[j - 1])
    threshold = thresholds[j - 1] + a * (thresholds[j] - thresholds[j - 1])
    return float(eer), float(threshold)


def compute_min_dcf(scores, labels, p_target: float, c_miss: float = 1.0,
                    c_fa: float = 1.0) -> tuple[float, float]:
    """Minimum normalised detection cost and the threshold that reaches it.

    At each operating point (module docstring: every distinct score, accept-all and
    reject-all),

        C_det = c_miss * FNR * p_target + c_fa * FPR * (1 - p_target)

    and the result is ``min C_det / C_def`` with ``C_def = min(c_miss * p_target,
    c_fa * (1 - p_target))``, the cost of the better of accepting or rejecting
    everything, as in Kaldi's ``egs/sre08/v1/sid/compute_min_dcf.py``. Hence
    0 <= minDCF <= 1. Ties among the minima go to the lowest threshold.
    """
    if not 0.0 < p_target < 1.0:
        raise ValueError(f"p_target must lie strictly between 0 and 1, not {p_target}")
    thresholds, fnr, fpr = operating_points(scores, labels)
    c_det = c_miss * fnr * p_target + c_fa * fpr * (1.0 - p_target)
    c_def = min(c_miss * p_target, c_fa * (1.0 - p_target))
    best = int(np.argmin(c_det))
    return float(c_det[best] / c_def), float(thresholds[best])


def roc_auc(scores, labels) -> float:
    """Area under the ROC curve: P(target score > nontarget score), ties counting 1/2.

    This is the Mann-Whitney U statistic divided by #targets * #nontargets.
    """
    targets, nontargets = split_scores(scores, labels)
    nontargets = np.sort(nontargets)
    below = np.searchsorted(nontargets, targets, side="left")
    below_or_equal = np.searchsorted(nontargets, targets, side="right")
    wins = below.sum() + 0.5 * (below_or_equal - below).sum()
    return float(wins / (targets.size * nontargets.size))


def det_curve(scores, labels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """DET/ROC points ``(fpr, fnr, thresholds)`` at every distinct score, ascending.

    The first point accepts everything (fpr 1, fnr 0); the reject-all point is left
    out (it is (0, 1) for every system).
    """
    thresholds, fnr, fpr = operating_points(scores, labels)
    return fpr[:-1], fnr[:-1], thresholds[:-1]


def compute_cllr(scores, labels) -> float:
    """Log-likelihood-ratio cost (bits), reading the scores as natural-log LLRs.

    ``Cllr = (mean over targets of log2(1 + e^-s) + mean over nontargets of
    log2(1 + e^s)) / 2``: 0 for perfect calibrated scores, 1 for scores that are all 0.
    Only meaningful for calibrated scores.
    """
    targets, nontargets = split_scores(scores, labels)
    target_cost = np.logaddexp(0.0, -targets).mean()
    nontarget_cost = np.logaddexp(0.0, nontargets).mean()
    return float((target_cost + nontarget_cost) / (2.0 * np.log(2.0)))


def compute_min_cllr(scores, labels) -> float:
    """The lowest Cllr (bits) that any monotone rising transformation of the scores reaches.

    This is Cllr after the optimal calibration on these very trials (BOSARIS'
    ``min_cllr``): the pool-adjacent-violators algorithm fits the posterior
    P(target | score) as a non-decreasing step function of the score (equal scores
    pooled), the posterior odds divided by the trial list's target/nontarget ratio
    are the LLRs, and their Cllr is the result. It depends only on the order of the
    scores, so it applies to raw scores too. ``compute_cllr - compute_min_cllr`` is
    the calibration loss.
    """
    from scipy.optimize import isotonic_regression  # here: importing scipy.optimize takes a quarter second

    targets, nontargets = split_scores(scores, labels)
    distinct, where = np.unique(np.concatenate([targets, nontargets]), return_inverse=True)
    target_counts = np.bincount(where[:targets.size], minlength=distinct.size).astype(np.float64)
    totals = np.bincount(where, minlength=distinct.size).astype(np.float64)
    posterior = isotonic_regression(target_counts / totals, weights=totals, increasing=True).x
    with np.errstate(divide="ignore"):
        llr = np.log(posterior) - np.log1p(-posterior) - np.log(targets.size / nontargets.size)
    # a posterior of exactly 0 or 1 comes only from blocks without targets or without nontargets,
    # whose infinite LLR then costs nothing: leave those terms out rather than compute 0 * inf
    has = target_counts > 0
    target_cost = (target_counts[has] * np.logaddexp(0.0, -llr[has])).sum()
    nontarget_counts = totals - target_counts
    has = nontarget_counts > 0
    nontarget_cost = (nontarget_counts[has] * np.logaddexp(0.0, llr[has])).sum()
    return float((target_cost / targets.size + nontarget_cost / nontargets.size) / (2.0 * np.log(2.0)))


def bayes_threshold(p_target: float, c_miss: float = 1.0, c_fa: float = 1.0) -> float:
    """The LLR threshold of the Bayes decision for a prior and costs: ``log(c_fa (1 - p) / (c_miss p))``.

    Accepting trials whose LLR is at least this minimises the expected cost when the
    LLRs are well calibrated; it is 0 for p_target 0.5 with equal costs.
    """
    if not 0.0 < p_target < 1.0:
        raise ValueError(f"p_target must lie strictly between 0 and 1, not {p_target}")
    return float(np.log(c_fa * (1.0 - p_target) / (c_miss * p_target)))


def compute_act_dcf(llrs, labels, p_target: float, c_miss: float = 1.0, c_fa: float = 1.0) -> float:
    """Actual normalised detection cost of LLR scores, decided at the Bayes threshold.

    Trials with ``llr >= bayes_threshold(p_target, c_miss, c_fa)`` are accepted;
    ``C_det = c_miss * FNR * p_target + c_fa * FPR * (1 - p_target)`` is divided by
    ``C_def = min(c_miss * p_target, c_fa * (1 - p_target))`` as for ``compute_min_dcf``.
    So actDCF >= minDCF, with equality when the scores are perfectly calibrated at
    that operating point; a value above 1 is worse than deciding without the scores.
    """
    threshold = bayes_threshold(p_target, c_miss, c_fa)
    targets, nontargets = split_scores(llrs, labels)
    fnr = np.count_nonzero(targets < threshold) / targets.size
    fpr = np.count_nonzero(nontargets >= threshold) / nontargets.size
    c_det = c_miss * fnr * p_target + c_fa * fpr * (1.0 - p_target)
    return float(c_det / min(c_miss * p_target, c_fa * (1.0 - p_target)))


def calibrated_metrics(llrs, labels) -> dict:
    """The results-file keys of calibrated scores: ``cllr``, ``min_cllr`` and ``act_dcf_<p>``
    for each p_target of DCF_P_TARGETS (c_miss = c_fa = 1)."""
    results = {"cllr": compute_cllr(llrs, labels), "min_cllr": compute_min_cllr(llrs, labels)}
    for p_target in DCF_P_TARGETS:
        results[f"act_dcf_{p_target}"] = compute_act_dcf(llrs, labels, p_target)
    return results


def verification_metrics(scores, labels) -> dict:
    """The verification keys of a results file that scores and labels determine.

    ``eer`` is in percent; ``min_dcf_0.01`` and ``min_dcf_0.001`` use c_miss = c_fa = 1.
    """
    labels = np.asarray(labels).ravel()
    eer, threshold = compute_eer(scores, labels)
    results = {
        "num_target": int(np.count_nonzero(labels == 1)),
        "num_nontarget": int(np.count_nonzero(labels == 0)),
        "eer": 100.0 * eer,
        "threshold_eer": threshold,
        "roc_auc": roc_auc(scores, labels),
    }
    for p_target in DCF_P_TARGETS:
        results[f"min_dcf_{p_target}"] = compute_min_dcf(scores, labels, p_target)[0]
    return results


# --------------------------------------------------------------------------- #
# identification
# --------------------------------------------------------------------------- #

def _check_identification(score_matrix, true_index) -> tuple[np.ndarray, np.ndarray]:
    score_matrix = np.asarray(score_matrix)
    true_index = np.asarray(true_index).ravel()
    if score_matrix.ndim != 2:
        raise ValueError(f"score_matrix must be 2-D (num_test, num_classes), not shape {score_matrix.shape}")
    if score_matrix.shape[0] != true_index.size:
        raise ValueError(f"score_matrix has {score_matrix.shape[0]} rows but there are {true_index.size} labels")
    if true_index.size and (true_index.min() < 0 or true_index.max() >= score_matrix.shape[1]):
        raise ValueError(f"true_index values must lie in [0, {score_matrix.shape[1]})")
    return score_matrix, true_index.astype(np.int64)


def class_ranks(score_matrix, true_index) -> np.ndarray:
    """The 0-based rank of each sample's true class when classes are sorted by score.

    Rank 0 means the true class scored highest. Equal scores are ordered by class
    index, as ``np.argmax`` does, so rank 0 agrees with the argmax prediction.
    """
    score_matrix, true_index = _check_identification(score_matrix, true_index)
    rows = np.arange(true_index.size)
    true_scores = score_matrix[rows, true_index][:, None]
    higher = np.count_nonzero(score_matrix > true_scores, axis=1)
    earlier_ties = np.count_nonzero((score_matrix == true_scores)
                                    & (np.arange(score_matrix.shape[1]) < true_index[:, None]), axis=1)
    return higher + earlier_ties


def topk_accuracy(score_matrix, true_index, k: int) -> float:
    """Fraction of samples whose true class is among the k highest-scoring classes."""
    if k < 1:
        raise ValueError(f"k must be at least 1, not {k}")
    ranks = class_ranks(score_matrix, true_index)
    if ranks.size == 0:
        raise ValueError("no test samples")
    return float(np.mean(ranks < k))


def confusion_matrix(true_index, pred_index, num_classes: int) -> np.ndarray:
    """Counts ``(num_classes, num_classes)``: row = true class, column = predicted class."""
    true_index = np.asarray(true_index, dtype=np.int64).ravel()
    pred_index = np.asarray(pred_index, dtype=np.int64).ravel()
    if true_index.shape != pred_index.shape:
        raise ValueError(f"true_index and pred_index differ in length: {true_index.size} vs {pred_index.size}")
    for name, index in (("true_index", true_index), ("pred_index", pred_index)):
        if index.size and (index.min() < 0 or index.max() >= num_classes):
            raise ValueError(f"{name} values must lie in [0, {num_classes})")
    flat = np.bincount(true_index * num_classes + pred_index, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes)


def per_class_accuracy(confusion: np.ndarray) -> np.ndarray:
    """Per-class recall from a confusion matrix: diagonal / row sum; NaN for classes never tested."""
    confusion = np.asarray(confusion, dtype=np.float64)
    totals = confusion.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, np.diag(confusion) / totals, np.nan)


def identification_metrics(score_matrix, true_index) -> dict:
    """The identification keys of a results file that the scores determine.

    ``top1`` and ``top5`` are in percent (top-5 is top-``num_classes`` when there are fewer).
    """
    ranks = class_ranks(score_matrix, true_index)
    if ranks.size == 0:
        raise ValueError("no test samples")
    return {
        "num_speakers": int(np.asarray(score_matrix).shape[1]),
        "num_test": int(ranks.size),
        "top1": 100.0 * float(np.mean(ranks < 1)),
        "top5": 100.0 * float(np.mean(ranks < 5)),
    }
