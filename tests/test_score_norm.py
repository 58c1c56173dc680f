"""Tests for spk.score_norm and the score-normalisation options of ``spk score``.

Every normalisation is checked against a plain per-trial loop written here.
"""

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

from spk import score_norm, scoring
from tests.test_scoring import write_embeddings

# --------------------------------------------------------------------------- #
# an independent reference: one trial at a time, plain Python
# --------------------------------------------------------------------------- #


def cosine(x, y):
    nx, ny = math.sqrt(sum(v * v for v in x)), math.sqrt(sum(v * v for v in y))
    return sum(a * b for a, b in zip(x, y)) / (nx * ny)


def negative_distance(x, y):
    return -math.sqrt(sum((a - b) ** 2 for a, b in zip(x, y)))


SIMILARITY = {"cosine": cosine, "euclidean": negative_distance}


def prepare(vector, mean=None, length_norm=False):
    vector = [float(v) for v in vector]
    if mean is not None:
        vector = [v - m for v, m in zip(vector, mean)]
    if length_norm:
        length = math.sqrt(sum(v * v for v in vector))
        vector = [v / length for v in vector]
    return vector


def mean_and_std(vector, cohort, similarity, top_n=None):
    scores = sorted((similarity(vector, c) for c in cohort), reverse=True)
    if top_n is not None:
        scores = scores[:top_n]
    mean = sum(scores) / len(scores)
    return mean, math.sqrt(sum((s - mean) ** 2 for s in scores) / len(scores))


def reference_scores(trials, enroll, test, cohort, method, backend, top_n=None, mean=None, length_norm=False):
    similarity = SIMILARITY[backend]
    cohort = [prepare(c, mean, length_norm) for c in cohort]
    out = []
    for e, t in zip(*trials):
        x, y = prepare(enroll[e], mean, length_norm), prepare(test[t], mean, length_norm)
        s = similarity(x, y)
        z = (s - (m := mean_and_std(x, cohort, similarity, top_n))[0]) / m[1]
        tn = (s - (m := mean_and_std(y, cohort, similarity, top_n))[0]) / m[1]
        out.append({"none": s, "znorm": z, "tnorm": tn, "snorm": (z + tn) / 2, "asnorm": (z + tn) / 2}[method])
    return out


@pytest.fixture
def tables():
    """Enroll (7 ids, one never in a trial), test (9 ids), a cohort of 25 and 80 trials with repeats."""
    rng = np.random.default_rng(1)
    dim = 10
    offset = rng.normal(size=dim)  # a shared offset, so that centering matters
    enroll = {f"e{i}": offset + rng.normal(size=dim) for i in range(7)}
    test = {f"t{i}": offset + rng.normal(size=dim) for i in range(9)}
    cohort = offset + rng.normal(size=(25, dim))
    trials = ([f"e{i}" for i in rng.integers(0, 6, 80)], [f"t{i}" for i in rng.integers(0, 9, 80)])
    return trials, enroll, test, cohort


# --------------------------------------------------------------------------- #
# against the reference
# --------------------------------------------------------------------------- #

@pytest.mark.parametrize("backend", ["cosine", "euclidean"])
@pytest.mark.parametrize("method, top_n", [("none", None), ("znorm", None), ("tnorm", None), ("snorm", None),
                                           ("asnorm", 5), ("asnorm", 12)])
@pytest.mark.parametrize("prepared", [False, True])
def test_normalisation_matches_a_plain_loop(tables, backend, method, top_n, prepared):
    trials, enroll, test, cohort = tables
    mean = cohort.mean(axis=0) if prepared else None
    got = score_norm.score_trials_normalised(trials, enroll, test, (list(range(len(cohort))), cohort), method,
                                             backend, top_n, mean=mean, length_norm=prepared)
    expected = reference_scores(trials, enroll, test, cohort, method, backend, top_n, mean, prepared)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_asnorm_with_the_whole_cohort_is_snorm(tables):
    trials, enroll, test, cohort = tables
    cohort_table = ([f"c{i}" for i in range(len(cohort))], cohort)
    snorm = score_norm.score_trials_normalised(trials, enroll, test, cohort_table, "snorm")
    for top_n in (len(cohort), len(cohort) + 100):
        asnorm = score_norm.score_trials_normalised(trials, enroll, test, cohort_table, "asnorm", top_n=top_n)
        np.testing.assert_allclose(asnorm, snorm, rtol=1e-12, atol=1e-12)
    smaller = score_norm.score_trials_normalised(trials, enroll, test, cohort_table, "asnorm", top_n=5)
    assert not np.allclose(smaller, snorm)


def test_cohort_statistics_top_n_picks_the_highest_scores():
    cohort = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.6, 0.8]])
    means, stds = score_norm.cohort_statistics(np.array([[1.0, 0.0]]), cohort, "cosine", top_n=2)
    # cosines with the cohort: 1, 0, -1, 0.6; the top 2 are 1 and 0.6
    assert means.tolist() == pytest.approx([0.8]) and stds.tolist() == pytest.approx([0.2])
    means, _ = score_norm.cohort_statistics(np.array([[1.0, 0.0]]), cohort, "cosine")
    assert means.tolist() == pytest.approx([0.15])


def test_cohort_statistics_in_blocks_equal_one_block(monkeypatch):
    rng = np.random.default_rng(2)
    vectors, cohort = rng.normal(size=(23, 6)), rng.normal(size=(40, 6))
    whole = score_norm.cohort_statistics(vectors, cohort, "euclidean", top_n=7)
    monkeypatch.setattr(score_norm, "_ROWS_PER_BLOCK", 4)
    blocks = score_norm.cohort_statistics(vectors, cohort, "euclidean", top_n=7)
    np.testing.assert_allclose(blocks, whole, rtol=1e-12)


def test_normalise_scores_on_index_arrays(tables):
    trials, enroll, test, cohort = tables
    indexed = scoring.index_trials(trials, enroll, test)
    raw = scoring.score_indexed(indexed)
    got = score_norm.normalise_scores(raw, *indexed, cohort.astype(np.float32), "znorm")
    expected = reference_scores(trials, enroll, test, cohort, "znorm", "cosine")
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(score_norm.normalise_scores(raw, *indexed, cohort, "none"), raw)


# --------------------------------------------------------------------------- #
# errors
# --------------------------------------------------------------------------- #

def test_errors(tables):
    trials, enroll, test, cohort = tables
    table = (list(range(len(cohort))), cohort)
    with pytest.raises(ValueError, match="unknown score normalisation 'cnorm'; known: none, znorm"):
        score_norm.score_trials_normalised(trials, enroll, test, table, "cnorm")
    with pytest.raises(ValueError, match="snorm needs a cohort"):
        score_norm.score_trials_normalised(trials, enroll, test, None, "snorm")
    with pytest.raises(ValueError, match="top_n is for asnorm only"):
        score_norm.score_trials_normalised(trials, enroll, test, table, "znorm", top_n=10)
    with pytest.raises(ValueError, match="top_n must be at least 1"):
        score_norm.score_trials_normalised(trials, enroll, test, table, "asnorm", top_n=0)
    with pytest.raises(ValueError, match="at least 2 embeddings"):
        score_norm.score_trials_normalised(trials, enroll, test, (["c"], cohort[:1]), "tnorm")
    with pytest.raises(ValueError, match="cohort embeddings have dimension 4"):
        score_norm.score_trials_normalised(trials, enroll, test, (["a", "b"], np.ones((2, 4))), "tnorm")


def test_no_cohort_needed_without_normalisation(tables):
    trials, enroll, test, _ = tables
    np.testing.assert_array_equal(score_norm.score_trials_normalised(trials, enroll, test, None, "none"),
                                  scoring.score_trials(trials, enroll, test))


# --------------------------------------------------------------------------- #
# scale: statistics once per distinct id, then gathered
# --------------------------------------------------------------------------- #

def test_many_trials_over_a_few_hundred_ids_match_per_trial_statistics():
    """Statistics are computed once per distinct id and gathered; spot-check trials against a
    direct per-trial computation (the speed is measured by benchmarks/score_million_trials.py)."""
    rng = np.random.default_rng(0)
    ids = [f"utt{i:04d}" for i in range(300)]
    table = (ids, rng.normal(size=(300, 64)).astype(np.float32))
    cohort = ([f"c{i}" for i in range(500)], rng.normal(size=(500, 64)).astype(np.float32))
    n = 200_000
    trials = ([ids[i] for i in rng.integers(0, 300, n)], [ids[i] for i in rng.integers(0, 300, n)])
    raw = scoring.score_trials(trials, table, table)
    scores = score_norm.score_trials_normalised(trials, table, table, cohort, "asnorm", top_n=50)
    assert scores.shape == (n,) and np.all(np.isfinite(scores))

    def unit(v):
        return v / np.linalg.norm(v)

    def top_stats(v):
        cohort_scores = np.array([unit(v) @ unit(c) for c in cohort[1]])
        top = np.sort(cohort_scores)[-50:]
        return top.mean(), top.std()

    index = {u: i for i, u in enumerate(ids)}
    for t in rng.integers(0, n, 20):
        e, te = table[1][index[trials[0][t]]], table[1][index[trials[1][t]]]
        (me, se), (mt, st) = top_stats(e), top_stats(te)
        expected = ((raw[t] - me) / se + (raw[t] - mt) / st) / 2
        assert scores[t] == pytest.approx(expected, rel=1e-4, abs=1e-5)


# --------------------------------------------------------------------------- #
# the command line
# --------------------------------------------------------------------------- #

def _score_args(tmp_path, trials, enroll_scp, test_scp, *extra):
    return ["score", "--trials", str(trials), "--enroll-scp", enroll_scp, "--test-scp", test_scp,
            "--scores-out", str(tmp_path / "scores" / "out"), "--results-out", str(tmp_path / "results" / "out.json"),
            *extra]


@pytest.fixture
def files(tmp_path, tables):
    trials, enroll, test, cohort = tables
    trials_path = tmp_path / "trials"
    trials_path.write_text("".join(f"{e} {t} {'target' if i % 4 == 0 else 'nontarget'}\n"
                                   for i, (e, t) in enumerate(zip(*trials))))
    cohort_dict = {f"c{i:02d}": v for i, v in enumerate(cohort)}
    return (trials_path, write_embeddings(tmp_path / "enroll", enroll), write_embeddings(tmp_path / "test", test),
            write_embeddings(tmp_path / "cohort", cohort_dict))


def test_score_command_with_asnorm_and_centering(tmp_path, tables, files):
    from spk.cli import main

    trials, enroll, test, cohort = tables
    trials_path, enroll_scp, test_scp, cohort_scp = files
    result = CliRunner().invoke(main, _score_args(tmp_path, trials_path, enroll_scp, test_scp, "--backend",
                                                  "euclidean", "--center-scp", cohort_scp, "--length-norm",
                                                  "--score-norm", "asnorm", "--cohort-scp", cohort_scp,
                                                  "--top-n", "10"))
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "results" / "out.json").read_text())
    for key in ("kind", "trials", "num_target", "num_nontarget", "eer", "min_dcf_0.01", "min_dcf_0.001",
                "roc_auc", "backend", "threshold_eer", "scores"):
        assert key in results
    assert (results["score_norm"], results["top_n"], results["num_cohort"]) == ("asnorm", 10, 25)
    assert results["length_norm"] is True and results["center_scp"] == cohort_scp
    _, _, written, _ = scoring.read_scores(tmp_path / "scores" / "out")
    expected = reference_scores(trials, enroll, test, cohort, "asnorm", "euclidean", 10,
                                mean=cohort.mean(axis=0), length_norm=True)
    np.testing.assert_allclose(written, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("extra, code, message", [
    (["--score-norm", "snorm"], 2, "--score-norm snorm needs --cohort-scp"),
    (["--cohort-scp", "COHORT"], 2, "--cohort-scp is only used for score normalisation"),
    (["--score-norm", "znorm", "--cohort-scp", "COHORT", "--top-n", "5"], 2, "--top-n is for --score-norm asnorm"),
    (["--score-norm", "asnorm", "--cohort-scp", "COHORT", "--top-n", "0"], 2, "--top-n"),
    (["--score-norm", "tnorm", "--cohort-scp", "ENROLL_OTHER_DIM"], 1, "cohort embeddings have dimension 3"),
])
def test_score_command_option_errors(tmp_path, files, extra, code, message):
    from spk.cli import main

    trials_path, enroll_scp, test_scp, cohort_scp = files
    other = write_embeddings(tmp_path / "other", {"x": np.ones(3), "y": np.zeros(3)})
    extra = [{"COHORT": cohort_scp, "ENROLL_OTHER_DIM": other}.get(a, a) for a in extra]
    result = CliRunner().invoke(main, _score_args(tmp_path, trials_path, enroll_scp, test_scp, *extra))
    assert result.exit_code == code, result.output
    assert message in result.output
