"""Tests for spk.calibration, the calibration metrics of spk.metrics, and ``spk calibrate``."""

import json
import logging
import math

import numpy as np
import pytest
from click.testing import CliRunner

from spk import calibration, metrics, scoring
from spk.data import read_trials
from tests.test_scoring import write_embeddings


def gaussian_trials(seed, n=200_000, p_target=0.2, mu0=0.1, mu1=0.6, sd=0.15):
    """Scores from two equal-variance Gaussians, and their true LLR ``a s + b``."""
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < p_target).astype(np.int8)
    scores = np.where(labels == 1, rng.normal(mu1, sd, n), rng.normal(mu0, sd, n))
    a = (mu1 - mu0) / sd ** 2
    b = -(mu1 ** 2 - mu0 ** 2) / (2 * sd ** 2)
    return scores, labels, a, b


def random_trials(seed, size=300, rounding=None):
    rng = np.random.default_rng(seed)
    labels = (rng.random(size) < 0.3).astype(int)
    labels[:2] = [1, 0]
    scores = rng.normal(0, 1, size) + 1.5 * labels
    return (np.round(scores, rounding) if rounding is not None else scores), labels


# --------------------------------------------------------------------------- #
# the fit
# --------------------------------------------------------------------------- #

@pytest.mark.parametrize("p_target", [0.5, 0.1, 0.01])
def test_fit_recovers_the_true_llr_of_two_gaussians(p_target):
    scores, labels, a, b = gaussian_trials(0)
    fitted_a, fitted_b = calibration.fit_linear_calibration(scores, labels, p_target)
    # the model is right, so every effective prior leads to the same LLR, up to sampling error
    assert fitted_a == pytest.approx(a, rel=0.03)
    assert fitted_b == pytest.approx(b, abs=0.25)


def test_fit_is_the_minimum_of_the_prior_weighted_objective():
    scores, labels = random_trials(3)
    p = 0.3
    a, b = calibration.fit_linear_calibration(scores, labels, p)

    def objective(a, b):  # written out plainly, one trial at a time
        offset = math.log(p / (1 - p))
        targets = [s for s, l in zip(scores, labels) if l == 1]
        nontargets = [s for s, l in zip(scores, labels) if l == 0]
        return (p / len(targets) * sum(math.log1p(math.exp(-(a * s + b + offset))) for s in targets)
                + (1 - p) / len(nontargets) * sum(math.log1p(math.exp(a * s + b + offset)) for s in nontargets))

    best = objective(a, b)
    for da, db in [(0.01, 0), (-0.01, 0), (0, 0.01), (0, -0.01), (0.01, 0.01), (-0.01, 0.01)]:
        assert objective(a + da, b + db) > best


def test_calibrated_cllr_beats_badly_scaled_raw_scores():
    scores, labels, _, _ = gaussian_trials(1, n=20_000)
    badly_scaled = 0.05 * scores + 3.0  # ranks as well, but as LLRs far too confident of "target"
    fitted = calibration.calibrate(badly_scaled, labels)
    llrs = fitted.transform(badly_scaled)
    assert metrics.compute_cllr(llrs, labels) < metrics.compute_cllr(badly_scaled, labels)
    assert fitted.dev_metrics["cllr"] < fitted.dev_metrics["cllr_raw"]
    assert metrics.compute_min_cllr(badly_scaled, labels) <= metrics.compute_cllr(llrs, labels) + 1e-12
    # the minimum depends only on the order, and the linear fit of a linear-LLR problem nearly reaches it
    assert metrics.compute_cllr(llrs, labels) - metrics.compute_min_cllr(llrs, labels) < 0.01


def test_perfectly_separated_dev_scores_give_a_finite_fit_and_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="spk.calibration"):
        a, b = calibration.fit_linear_calibration([0.1, 0.2, 0.3, 0.8, 0.9], [0, 0, 0, 1, 1])
    assert math.isfinite(a) and math.isfinite(b) and a > 0
    assert "separate targets from nontargets perfectly" in caplog.text


def test_reversed_scores_are_an_error():
    scores, labels = random_trials(4)
    with pytest.raises(ValueError, match="slope .* is not positive.*check the trial labels"):
        calibration.calibrate(-scores, labels)


# --------------------------------------------------------------------------- #
# thresholds
# --------------------------------------------------------------------------- #

def brute_fpr(scores, labels, threshold):
    nontargets = [s for s, l in zip(scores, labels) if l == 0]
    return sum(s >= threshold for s in nontargets) / len(nontargets)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("far", [0.0, 0.01, 0.1, 0.5])
@pytest.mark.parametrize("rounding", [None, 1])
def test_far_threshold_is_the_loosest_with_few_enough_false_accepts(seed, far, rounding):
    scores, labels = random_trials(seed, rounding=rounding)
    threshold = calibration.threshold_at_far(scores, labels, far)
    assert brute_fpr(scores, labels, threshold) <= far
    lower = [s for s in set(scores.tolist()) if s < threshold]
    if lower:  # the next operating point down already accepts too many nontargets
        assert brute_fpr(scores, labels, max(lower)) > far


def test_thresholds_of_a_calibration():
    scores, labels, _, _ = gaussian_trials(2, n=50_000)
    fitted = calibration.calibrate(scores, labels, fars=(0.01, 0.05))
    thresholds = fitted.thresholds
    assert set(thresholds) == {"eer", "far_0.01", "far_0.05", "bayes_0.5", "bayes_0.01", "bayes_0.001"}
    eer = thresholds["eer"]
    assert eer["fnr"] == pytest.approx(eer["fpr"], abs=0.002)  # miss = false accept at the EER point
    assert eer["fpr"] == pytest.approx(fitted.dev_metrics["eer"] / 100, abs=0.002)
    assert thresholds["far_0.01"]["fpr"] <= 0.01 and thresholds["far_0.05"]["fpr"] <= 0.05
    for p in (0.5, 0.01, 0.001):
        bayes = thresholds[f"bayes_{p:g}"]
        assert bayes["llr"] == pytest.approx(math.log((1 - p) / p))
        assert fitted.a * bayes["score"] + fitted.b == pytest.approx(bayes["llr"])
    for values in thresholds.values():
        assert values["llr"] == pytest.approx(fitted.a * values["score"] + fitted.b)
        targets = scores[labels == 1]
        assert values["fnr"] == pytest.approx(np.mean(targets < values["score"]))
    # rarer targets need stronger evidence
    assert thresholds["bayes_0.5"]["score"] < thresholds["bayes_0.01"]["score"] < thresholds["bayes_0.001"]["score"]


# --------------------------------------------------------------------------- #
# calibration metrics (spk.metrics) against plain implementations
# --------------------------------------------------------------------------- #

def brute_act_dcf(llrs, labels, p_target):
    threshold = math.log((1 - p_target) / p_target)
    targets = [s for s, l in zip(llrs, labels) if l == 1]
    nontargets = [s for s, l in zip(llrs, labels) if l == 0]
    fnr = sum(s < threshold for s in targets) / len(targets)
    fpr = sum(s >= threshold for s in nontargets) / len(nontargets)
    return (p_target * fnr + (1 - p_target) * fpr) / min(p_target, 1 - p_target)


def brute_pav(values, weights):
    """Pool adjacent violators the slow way: merge the first decreasing neighbours until none are left."""
    blocks = [[v * w, w, 1] for v, w in zip(values, weights)]  # weighted sum, weight, members
    merged = True
    while merged:
        merged = False
        for i in range(len(blocks) - 1):
            if blocks[i][0] / blocks[i][1] > blocks[i + 1][0] / blocks[i + 1][1]:
                blocks[i] = [blocks[i][0] + blocks[i + 1][0], blocks[i][1] + blocks[i + 1][1],
                             blocks[i][2] + blocks[i + 1][2]]
                del blocks[i + 1]
                merged = True
                break
    return [s / w for s, w, count in blocks for _ in range(count)]


def brute_min_cllr(scores, labels):
    distinct = sorted(set(float(s) for s in scores))
    tar = [sum(1 for s, l in zip(scores, labels) if s == d and l == 1) for d in distinct]
    non = [sum(1 for s, l in zip(scores, labels) if s == d and l == 0) for d in distinct]
    posterior = brute_pav([t / (t + n) for t, n in zip(tar, non)], [t + n for t, n in zip(tar, non)])
    n_tar, n_non = sum(tar), sum(non)
    cost_tar = cost_non = 0.0
    for p, t, n in zip(posterior, tar, non):
        # log2(1 + e^-llr) = -log2 of the flat-prior posterior; llr = logit(p) - log(n_tar / n_non)
        if t:
            cost_tar += t * -math.log2(p / n_tar / (p / n_tar + (1 - p) / n_non))
        if n:
            cost_non += n * -math.log2((1 - p) / n_non / (p / n_tar + (1 - p) / n_non))
    return (cost_tar / n_tar + cost_non / n_non) / 2


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("rounding", [None, 1, 0])
def test_min_cllr_matches_a_slow_pav(seed, rounding):
    scores, labels = random_trials(seed, size=120, rounding=rounding)
    assert metrics.compute_min_cllr(scores, labels) == pytest.approx(brute_min_cllr(scores, labels), abs=1e-9)


def test_min_cllr_known_values_and_bounds():
    assert metrics.compute_min_cllr([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 0.0
    assert metrics.compute_min_cllr([0.5] * 4, [0, 1, 0, 0]) == pytest.approx(1.0)
    assert metrics.compute_min_cllr([0.1, 0.2, 0.8, 0.9], [1, 1, 0, 0]) == pytest.approx(1.0)
    scores, labels = random_trials(9)
    assert metrics.compute_min_cllr(np.exp(scores), labels) == pytest.approx(metrics.compute_min_cllr(scores, labels))
    for a, b in [(1.0, 0.0), (2.0, -1.0), (0.5, 0.3), (3.0, -2.5)]:  # no linear calibration beats the minimum
        assert metrics.compute_min_cllr(scores, labels) <= metrics.compute_cllr(a * scores + b, labels)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("p_target", [0.5, 0.01, 0.001])
def test_actual_dcf_matches_counting_and_is_at_least_min_dcf(seed, p_target):
    scores, labels = random_trials(seed, size=500)
    llrs = 3.0 * scores - 4.0 + seed  # some calibrations, good and bad
    act = metrics.compute_act_dcf(llrs, labels, p_target)
    assert act == pytest.approx(brute_act_dcf(llrs, labels, p_target), abs=1e-12)
    assert act >= metrics.compute_min_dcf(llrs, labels, p_target)[0] - 1e-12


def test_calibrated_metrics_keys():
    scores, labels = random_trials(1)
    results = metrics.calibrated_metrics(scores, labels)
    assert set(results) == {"cllr", "min_cllr", "act_dcf_0.01", "act_dcf_0.001"}
    assert all(type(v) is float for v in results.values())
    assert metrics.bayes_threshold(0.01) == pytest.approx(math.log(99))
    with pytest.raises(ValueError, match="p_target"):
        metrics.bayes_threshold(1.0)


# --------------------------------------------------------------------------- #
# the JSON file
# --------------------------------------------------------------------------- #

def test_save_and_load_round_trip(tmp_path):
    scores, labels = random_trials(5)
    fitted = calibration.calibrate(scores, labels, dev_trials="data/dev/trials", dev_scores="exp/x/scores/dev")
    path = tmp_path / "exp" / "calibration.json"
    calibration.save_calibration(path, fitted)
    record = json.loads(path.read_text())
    assert {"a", "b", "p_target", "dev_trials", "dev_scores", "thresholds", "dev_metrics"} <= set(record)
    assert record["thresholds"]["far_0.01"].keys() == {"score", "llr", "fnr", "fpr"}
    assert calibration.load_calibration(path) == fitted


@pytest.mark.parametrize("text, message", [
    ("{", "not valid JSON"),
    ("[1, 2]", "does not hold a JSON object"),
    ('{"a": "x", "b": 0}', "'a' must be a finite number"),
    ('{"a": 1.0}', "'b' must be a finite number"),
    ('{"a": -1.0, "b": 0}', "slope 'a' = -1.0 is not positive"),
    ('{"a": 1.0, "b": 0, "slope": 2}', "unknown keys: slope"),
])
def test_load_errors_name_the_file(tmp_path, text, message):
    path = tmp_path / "calibration.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as error:
        calibration.load_calibration(path)
    assert str(path) in str(error.value)
    with pytest.raises(FileNotFoundError, match="missing.json does not exist; make one with 'spk calibrate'"):
        calibration.load_calibration(tmp_path / "missing.json")


# --------------------------------------------------------------------------- #
# the command line: spk calibrate, then spk score --calibration
# --------------------------------------------------------------------------- #

@pytest.fixture
def dev_and_eval(tmp_path):
    """Embeddings of 12 speakers (4 utterances each) split into a dev and an eval trial list."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(12, 16))
    embeddings = {f"s{s:02d}-u{u}": centres[s] + 0.9 * rng.normal(size=16) for s in range(12) for u in range(4)}
    scp = write_embeddings(tmp_path / "xvector", embeddings)
    lists = {}
    for name, speakers in (("dev", range(0, 6)), ("eval", range(6, 12))):
        utts = [u for u in embeddings if int(u[1:3]) in speakers]
        lines = [f"{e} {t} {'target' if e[:3] == t[:3] else 'nontarget'}\n" for e in utts for t in utts if e < t]
        (tmp_path / f"trials_{name}").write_text("".join(lines))
        lists[name] = tmp_path / f"trials_{name}"
    return scp, lists


def test_calibration_records_how_the_dev_scores_were_made(tmp_path, dev_and_eval):
    """The centre vector itself goes into the calibration file, so it is enough to score like the dev set."""
    from spk.cli import main

    scp, trials = dev_and_eval
    runner = CliRunner()
    result = runner.invoke(main, ["score", "--trials", str(trials["dev"]), "--enroll-scp", scp, "--test-scp", scp,
                                  "--center-scp", scp, "--scores-out", str(tmp_path / "dev.scores"),
                                  "--results-out", str(tmp_path / "dev.json")])
    assert result.exit_code == 0, result.output
    out = tmp_path / "calibration.json"
    result = runner.invoke(main, ["calibrate", "--scores", str(tmp_path / "dev.scores"), "--trials",
                                  str(trials["dev"]), "--out", str(out), "--center-scp", scp])
    assert result.exit_code == 0, result.output
    loaded = calibration.load_calibration(out)
    _, matrix = scoring.load_embeddings(scp)
    np.testing.assert_allclose(loaded.scoring["center"], matrix.mean(axis=0), rtol=1e-5, atol=1e-6)
    assert (loaded.scoring["backend"], loaded.scoring["score_norm"]) == ("cosine", "none")


def test_calibrate_then_score_with_the_calibration(tmp_path, dev_and_eval):
    from spk.cli import main

    scp, trials = dev_and_eval
    runner = CliRunner()

    def score(name, *extra):
        return runner.invoke(main, ["score", "--trials", str(trials[name]), "--enroll-scp", scp, "--test-scp", scp,
                                    "--scores-out", str(tmp_path / "scores" / name),
                                    "--results-out", str(tmp_path / "results" / f"{name}.json"), *extra])

    assert score("dev").exit_code == 0
    out = tmp_path / "exp" / "calibration.json"
    result = runner.invoke(main, ["calibrate", "--scores", str(tmp_path / "scores" / "dev"), "--trials",
                                  str(trials["dev"]), "--out", str(out), "--far", "0.01", "--far", "0.1"])
    assert result.exit_code == 0, result.output
    record = json.loads(out.read_text())
    assert record["dev_trials"] == str(trials["dev"]) and record["dev_scores"] == str(tmp_path / "scores" / "dev")
    assert {"eer", "far_0.01", "far_0.1", "bayes_0.5", "bayes_0.01", "bayes_0.001"} == set(record["thresholds"])
    assert record["dev_metrics"]["cllr"] < record["dev_metrics"]["cllr_raw"]
    assert record["scoring"] == {"backend": "cosine", "score_norm": "none", "center": None}

    raw = score("eval")
    assert raw.exit_code == 0, raw.output
    raw_results = json.loads((tmp_path / "results" / "eval.json").read_text())
    _, _, raw_scores, _ = scoring.read_scores(tmp_path / "scores" / "eval")
    calibrated = score("eval", "--calibration", str(out))
    assert calibrated.exit_code == 0, calibrated.output
    results = json.loads((tmp_path / "results" / "eval.json").read_text())
    assert {"cllr", "min_cllr", "act_dcf_0.01", "act_dcf_0.001", "calibration"} <= set(results)
    assert results["eer"] == pytest.approx(raw_results["eer"])  # a rising linear map keeps the order
    assert results["act_dcf_0.01"] >= results["min_dcf_0.01"] - 1e-12
    _, _, eval_labels = scoring.trial_columns(read_trials(trials["eval"]))
    assert results["cllr"] < metrics.compute_cllr(raw_scores, eval_labels)
    assert results["cllr_uncalibrated"] == pytest.approx(metrics.compute_cllr(raw_scores, eval_labels), rel=1e-6)
    _, _, llrs, _ = scoring.read_scores(tmp_path / "scores" / "eval")
    np.testing.assert_allclose(llrs, record["a"] * raw_scores + record["b"], rtol=1e-6, atol=1e-6)


def test_command_errors(tmp_path, dev_and_eval):
    from spk.cli import main

    scp, trials = dev_and_eval
    runner = CliRunner()
    scores = tmp_path / "scores"
    scoring.write_scores(scores, ["a", "b"], ["x", "y"], [0.5, 0.1])
    result = runner.invoke(main, ["calibrate", "--scores", str(scores), "--out", str(tmp_path / "c.json")])
    assert result.exit_code == 1 and "has no label column and no trials file was given" in result.output
    result = runner.invoke(main, ["calibrate", "--scores", str(scores), "--out", str(tmp_path / "c.json"),
                                  "--p-target", "1"])
    assert result.exit_code == 2 and "--p-target" in result.output
    result = runner.invoke(main, ["score", "--trials", str(trials["eval"]), "--enroll-scp", scp, "--test-scp", scp,
                                  "--scores-out", str(tmp_path / "s"), "--results-out", str(tmp_path / "r.json"),
                                  "--calibration", str(tmp_path / "nothing.json")])
    assert result.exit_code == 1 and "nothing.json does not exist; make one with 'spk calibrate'" in result.output
    assert not (tmp_path / "s").exists()  # failed before scoring anything


def _score_dev(runner, tmp_path, scp, trials, *extra):
    """``spk score`` of the dev trials the way stage 5 lays it out: calibration/dev.scores beside dev.json."""
    from spk.cli import main

    scores = tmp_path / "calibration" / "dev.scores"
    result = runner.invoke(main, ["score", "--trials", str(trials), "--enroll-scp", scp, "--test-scp", scp,
                                  "--scores-out", str(scores), "--results-out", str(scores.with_suffix(".json")),
                                  *extra])
    assert result.exit_code == 0, result.output
    return scores


def test_calibrate_takes_the_settings_from_the_scores(tmp_path, dev_and_eval):
    """No --backend, --center-scp, --score-norm or --trials: the results file written with the scores has them."""
    from spk.cli import main

    scp, trials = dev_and_eval
    runner = CliRunner()
    scores = _score_dev(runner, tmp_path, scp, trials["dev"], "--backend", "euclidean", "--center-scp", scp,
                        "--score-norm", "znorm", "--cohort-scp", scp)
    assert json.loads(scores.with_suffix(".json").read_text())["scoring"] == {
        "backend": "euclidean", "center_scp": scp, "length_norm": False, "score_norm": "znorm",
        "cohort_scp": scp, "top_n": None, "calibration": None}
    out = tmp_path / "calibration.json"
    result = runner.invoke(main, ["calibrate", "--scores", str(scores), "--out", str(out)])
    assert result.exit_code == 0, result.output
    loaded = calibration.load_calibration(out)
    assert (loaded.scoring["backend"], loaded.scoring["score_norm"]) == ("euclidean", "znorm")
    np.testing.assert_allclose(loaded.scoring["center"], scoring.load_embeddings(scp)[1].mean(axis=0), atol=1e-6)
    assert loaded.dev_trials == str(trials["dev"])
    # the same options given again agree
    result = runner.invoke(main, ["calibrate", "--scores", str(scores), "--out", str(out), "--backend", "euclidean",
                                  "--center-scp", scp, "--score-norm", "znorm"])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("option, value, recorded", [
    ("--backend", "euclidean", "cosine"),
    ("--score-norm", "tnorm", "none"),
    ("--center-scp", "SCP", "(none)"),
])
def test_calibrate_refuses_options_that_disagree_with_the_scores(tmp_path, dev_and_eval, option, value, recorded):
    from spk.cli import main

    scp, trials = dev_and_eval
    runner = CliRunner()
    scores = _score_dev(runner, tmp_path, scp, trials["dev"])
    out = tmp_path / "calibration.json"
    result = runner.invoke(main, ["calibrate", "--scores", str(scores), "--out", str(out), option,
                                  scp if value == "SCP" else value])
    assert result.exit_code == 2, result.output
    assert (f"{option} {scp if value == 'SCP' else value} disagrees with the scores: "
            f"{scores.with_suffix('.json')} records that they were made with {option} {recorded}") in result.output
    assert not out.exists()


def test_calibrate_refuses_calibrated_scores(tmp_path, dev_and_eval):
    from spk.cli import main

    scp, trials = dev_and_eval
    runner = CliRunner()
    first = tmp_path / "first.json"
    scores = _score_dev(runner, tmp_path, scp, trials["dev"])
    assert runner.invoke(main, ["calibrate", "--scores", str(scores), "--out", str(first)]).exit_code == 0
    scores = _score_dev(runner, tmp_path, scp, trials["dev"], "--calibration", str(first))
    result = runner.invoke(main, ["calibrate", "--scores", str(scores), "--out", str(tmp_path / "again.json")])
    assert result.exit_code == 1 and f"holds calibrated scores (made with {first}" in result.output
