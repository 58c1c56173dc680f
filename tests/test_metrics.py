"""Tests for spk.metrics against plain brute-force implementations written here."""

import numpy as np
import pytest

from spk import metrics

# --------------------------------------------------------------------------- #
# independent reference implementations (slow, obvious)
# --------------------------------------------------------------------------- #


def brute_error_rates(scores, labels, threshold):
    """(FNR, FPR) when accepting trials with score >= threshold, by counting."""
    misses = false_alarms = num_target = num_nontarget = 0
    for score, label in zip(scores, labels):
        if label == 1:
            num_target += 1
            misses += score < threshold
        else:
            num_nontarget += 1
            false_alarms += score >= threshold
    return misses / num_target, false_alarms / num_nontarget


def brute_thresholds(scores):
    """Every distinct score plus one above them all (reject everything)."""
    distinct = sorted(set(float(s) for s in scores))
    return distinct + [distinct[-1] + 1.0]


def brute_eer(scores, labels):
    """EER by a plain sweep: find the adjacent pair of operating points where FNR - FPR
    changes sign and intersect the straight line between them with FNR = FPR."""
    points = [brute_error_rates(scores, labels, t) for t in brute_thresholds(scores)]
    for (fnr0, fpr0), (fnr1, fpr1) in zip(points, points[1:]):
        if fnr0 - fpr0 < 0 <= fnr1 - fpr1:
            # solve fnr0 + a (fnr1 - fnr0) = fpr0 + a (fpr1 - fpr0) for a
            a = (fpr0 - fnr0) / ((fnr1 - fnr0) - (fpr1 - fpr0))
            return fnr0 + a * (fnr1 - fnr0)
    raise AssertionError("the curves never cross")


def brute_min_dcf(scores, labels, p_target, c_miss=1.0, c_fa=1.0):
    """The NIST detection cost, normalised by the best trivial system, minimised over thresholds."""
    best = float("inf")
    for threshold in brute_thresholds(scores) + [min(scores) - 1.0]:
        fnr, fpr = brute_error_rates(scores, labels, threshold)
        best = min(best, c_miss * p_target * fnr + c_fa * (1 - p_target) * fpr)
    return best / min(c_miss * p_target, c_fa * (1 - p_target))


def mann_whitney_auc(scores, labels):
    """P(target > nontarget) + P(equal) / 2 over all target-nontarget pairs."""
    targets = [s for s, l in zip(scores, labels) if l == 1]
    nontargets = [s for s, l in zip(scores, labels) if l == 0]
    wins = sum((t > n) + 0.5 * (t == n) for t in targets for n in nontargets)
    return wins / (len(targets) * len(nontargets))


def random_trials(seed, size=300, rounding=None):
    rng = np.random.default_rng(seed)
    labels = (rng.random(size) < 0.3).astype(int)
    labels[:2] = [1, 0]  # both kinds always present
    scores = rng.normal(0, 1, size) + 1.5 * labels
    if rounding is not None:  # coarse scores: many ties, also between targets and nontargets
        scores = np.round(scores, rounding)
    return scores, labels


# --------------------------------------------------------------------------- #
# against the references on random inputs
# --------------------------------------------------------------------------- #

@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("rounding", [None, 1, 0])
def test_eer_matches_brute_force(seed, rounding):
    scores, labels = random_trials(seed, rounding=rounding)
    eer, threshold = metrics.compute_eer(scores, labels)
    assert eer == pytest.approx(brute_eer(scores, labels), abs=1e-12)
    assert scores.min() <= threshold <= scores.max() + 1e-9


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("rounding", [None, 1, 0])
@pytest.mark.parametrize("p_target", [0.5, 0.05, 0.01, 0.001])
def test_min_dcf_matches_brute_force(seed, rounding, p_target):
    scores, labels = random_trials(seed, rounding=rounding)
    min_dcf, threshold = metrics.compute_min_dcf(scores, labels, p_target)
    assert min_dcf == pytest.approx(brute_min_dcf(scores, labels, p_target), abs=1e-12)
    fnr, fpr = brute_error_rates(scores, labels, threshold)  # the threshold really reaches the minimum
    assert (p_target * fnr + (1 - p_target) * fpr) / min(p_target, 1 - p_target) == pytest.approx(min_dcf)


def test_min_dcf_with_unequal_costs():
    scores, labels = random_trials(7, rounding=1)
    got, _ = metrics.compute_min_dcf(scores, labels, 0.05, c_miss=10.0, c_fa=2.0)
    assert got == pytest.approx(brute_min_dcf(scores, labels, 0.05, c_miss=10.0, c_fa=2.0), abs=1e-12)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("rounding", [None, 0])
def test_roc_auc_is_mann_whitney(seed, rounding):
    scores, labels = random_trials(seed, size=150, rounding=rounding)
    assert metrics.roc_auc(scores, labels) == pytest.approx(mann_whitney_auc(scores, labels), abs=1e-12)


def test_det_curve_points_are_the_brute_force_error_rates():
    scores, labels = random_trials(3, size=80, rounding=1)
    fpr, fnr, thresholds = metrics.det_curve(scores, labels)
    assert list(thresholds) == sorted(set(scores.tolist()))
    for t, x, y in zip(thresholds, fpr, fnr):
        assert (y, x) == pytest.approx(brute_error_rates(scores, labels, t))


# --------------------------------------------------------------------------- #
# known answers
# --------------------------------------------------------------------------- #

def test_perfect_separation():
    scores, labels = [0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]
    eer, threshold = metrics.compute_eer(scores, labels)
    assert eer == 0.0
    assert 0.2 < threshold <= 0.8
    assert metrics.compute_min_dcf(scores, labels, 0.01)[0] == 0.0
    assert metrics.roc_auc(scores, labels) == 1.0


def test_fully_reversed():
    scores, labels = [0.1, 0.2, 0.8, 0.9], [1, 1, 0, 0]
    assert metrics.compute_eer(scores, labels)[0] == 1.0
    assert metrics.verification_metrics(scores, labels)["eer"] == 100.0
    assert metrics.roc_auc(scores, labels) == 0.0
    assert metrics.compute_min_dcf(scores, labels, 0.01)[0] == 1.0  # no better than rejecting all


def test_all_scores_equal():
    scores, labels = [0.5] * 6, [1, 0, 1, 0, 0, 0]
    assert metrics.compute_eer(scores, labels)[0] == 0.5
    assert metrics.roc_auc(scores, labels) == 0.5
    assert metrics.compute_min_dcf(scores, labels, 0.01)[0] == 1.0


def test_one_target_one_nontarget():
    assert metrics.compute_eer([2.0, 1.0], [1, 0])[0] == 0.0
    assert metrics.compute_eer([1.0, 2.0], [1, 0])[0] == 1.0
    assert metrics.compute_eer([1.0, 1.0], [1, 0])[0] == 0.5
    assert metrics.roc_auc([1.0, 1.0], [1, 0]) == 0.5


def test_ties_between_target_and_nontarget_move_together():
    # Sorting alone would put the tied target either before or after the tied
    # nontarget; with ties kept together the answer cannot depend on input order.
    scores = [0.0, 1.0, 1.0, 2.0]
    for labels in ([0, 1, 0, 1], [0, 0, 1, 1]):
        eer, threshold = metrics.compute_eer(scores, labels)
        # points: t=0 (0, 1), t=1 (0, 1/2), t=2 (1/2, 0), reject all (1, 0);
        # the crossing is halfway between t=1 and t=2: EER 1/4
        assert eer == pytest.approx(0.25)
        assert threshold == pytest.approx(1.5)


def test_hand_computed_example():
    # targets 0.3 0.6 0.9, nontargets 0.1 0.4 0.7
    scores = [0.3, 0.6, 0.9, 0.1, 0.4, 0.7]
    labels = [1, 1, 1, 0, 0, 0]
    # thresholds 0.1 0.3 0.4 0.6 0.7 0.9 reject-all:
    #   FNR 0 0 1/3 1/3 2/3 2/3 1;  FPR 1 2/3 2/3 1/3 1/3 0 0
    # FNR - FPR first >= 0 at 0.6 (0 exactly), so the crossing is that point: EER 1/3
    eer, threshold = metrics.compute_eer(scores, labels)
    assert eer == pytest.approx(1 / 3)
    assert threshold == pytest.approx(0.6)
    # pairs won by targets: 0.3>0.1; 0.6>0.1,0.4; 0.9>all three -> 6 of 9
    assert metrics.roc_auc(scores, labels) == pytest.approx(6 / 9)
    # p_target 0.5: C_det = (FNR + FPR) / 2, lowest 1/3 (e.g. at 0.6 or 0.9); C_def = 0.5 -> 2/3
    assert metrics.compute_min_dcf(scores, labels, 0.5)[0] == pytest.approx(2 / 3)
    # p_target 0.01: only FPR matters much; at 0.9 C_det = 0.01 * 2/3, C_def = 0.01 -> 2/3
    assert metrics.compute_min_dcf(scores, labels, 0.01) == pytest.approx((2 / 3, 0.9))


def test_verification_metrics_keys_and_units():
    scores, labels = random_trials(11)
    results = metrics.verification_metrics(scores, labels)
    assert set(results) == {"eer", "min_dcf_0.01", "min_dcf_0.001", "roc_auc", "threshold_eer",
                            "num_target", "num_nontarget"}
    assert results["eer"] == pytest.approx(100 * brute_eer(scores, labels))
    assert results["num_target"] + results["num_nontarget"] == len(scores)
    assert results["min_dcf_0.001"] == pytest.approx(brute_min_dcf(scores, labels, 0.001))
    assert all(type(v) in (int, float) for v in results.values())  # JSON-ready


def test_cllr():
    assert metrics.compute_cllr([0.0, 0.0], [1, 0]) == pytest.approx(1.0)
    assert metrics.compute_cllr([50.0, -50.0], [1, 0]) == pytest.approx(0.0, abs=1e-12)
    scores, labels = [2.0, -1.0, 0.5], [1, 0, 0]
    expected = 0.5 * (np.log2(1 + np.exp(-2.0)) + (np.log2(1 + np.exp(-1.0)) + np.log2(1 + np.exp(0.5))) / 2)
    assert metrics.compute_cllr(scores, labels) == pytest.approx(expected)


@pytest.mark.parametrize("function", [metrics.compute_eer, metrics.roc_auc, metrics.det_curve,
                                      lambda s, l: metrics.compute_min_dcf(s, l, 0.01)])
def test_one_kind_of_trial_only_is_an_error(function):
    with pytest.raises(ValueError, match="no target trials"):
        function([0.1, 0.2], [0, 0])
    with pytest.raises(ValueError, match="no nontarget trials"):
        function([0.1, 0.2], [1, 1])


def test_bad_inputs_are_errors():
    with pytest.raises(ValueError, match="differ in length"):
        metrics.compute_eer([0.1, 0.2], [1])
    with pytest.raises(ValueError, match="NaN"):
        metrics.compute_eer([0.1, float("nan")], [1, 0])
    with pytest.raises(ValueError, match="labels must be"):
        metrics.compute_eer([0.1, 0.2], [1, 2])
    with pytest.raises(ValueError, match="p_target"):
        metrics.compute_min_dcf([0.1, 0.2], [1, 0], 0.0)


# --------------------------------------------------------------------------- #
# identification
# --------------------------------------------------------------------------- #

def brute_topk(score_matrix, true_index, k):
    hits = 0
    for row, truth in zip(score_matrix, true_index):
        order = sorted(range(len(row)), key=lambda c: (-row[c], c))  # ties: lower class index first
        hits += truth in order[:k]
    return hits / len(true_index)


@pytest.mark.parametrize("k", [1, 2, 5, 20])
def test_topk_accuracy_matches_brute_force(k):
    rng = np.random.default_rng(k)
    score_matrix = np.round(rng.normal(size=(60, 8)), 1)  # rounded: some ties
    true_index = rng.integers(0, 8, 60)
    assert metrics.topk_accuracy(score_matrix, true_index, k) == pytest.approx(
        brute_topk(score_matrix, true_index, k))


def test_top1_agrees_with_argmax_on_ties():
    score_matrix = np.array([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    true_index = np.array([0, 1, 2])
    ranks = metrics.class_ranks(score_matrix, true_index)
    assert ranks.tolist() == [0, 1, 2]
    assert metrics.topk_accuracy(score_matrix, true_index, 1) == pytest.approx(
        np.mean(score_matrix.argmax(axis=1) == true_index))


def test_confusion_and_per_class_accuracy():
    true_index = [0, 0, 0, 1, 1, 2]
    pred_index = [0, 0, 1, 1, 2, 2]
    confusion = metrics.confusion_matrix(true_index, pred_index, 4)
    expected = np.zeros((4, 4), int)
    for t, p in zip(true_index, pred_index):
        expected[t, p] += 1
    np.testing.assert_array_equal(confusion, expected)
    accuracy = metrics.per_class_accuracy(confusion)
    np.testing.assert_allclose(accuracy[:3], [2 / 3, 1 / 2, 1.0])
    assert np.isnan(accuracy[3])  # class 3 never tested
    with pytest.raises(ValueError, match="pred_index"):
        metrics.confusion_matrix([0], [4], 4)


def test_identification_metrics():
    score_matrix = np.array([[0.9, 0.1, 0.0], [0.2, 0.3, 0.5], [0.1, 0.8, 0.1], [0.3, 0.2, 0.1]])
    true_index = [0, 1, 1, 2]
    results = metrics.identification_metrics(score_matrix, true_index)
    assert results == {"num_speakers": 3, "num_test": 4, "top1": 50.0, "top5": 100.0}
    with pytest.raises(ValueError, match="rows"):
        metrics.identification_metrics(score_matrix, [0, 1])
