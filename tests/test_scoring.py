"""Tests for spk.scoring and the ``spk score`` command: real ark/scp files, no mocks."""

import json

import kaldiio
import numpy as np
import pytest
from click.testing import CliRunner

from spk import scoring
from spk.data import DataFormatError, read_trials
from spk.metrics import compute_eer


def write_embeddings(path, embeddings):
    with kaldiio.WriteHelper(f"ark,scp:{path}.ark,{path}.scp") as writer:
        for key, vector in embeddings.items():
            writer(key, np.asarray(vector, dtype=np.float32))
    return f"{path}.scp"


@pytest.fixture
def speakers():
    """Enrollment vectors of 5 speakers and 3 noisy test vectors of each (16-dim)."""
    rng = np.random.default_rng(0)
    centres = {f"spk{i}": rng.normal(size=16) for i in range(5)}
    enroll = {f"{s}-enroll": c + 0.3 * rng.normal(size=16) for s, c in centres.items()}
    test = {f"{s}-test{j}": c + 0.3 * rng.normal(size=16) for s, c in centres.items() for j in range(3)}
    return enroll, test


def write_trials(path, enroll, test):
    lines = [f"{e} {t} {'target' if e.split('-')[0] == t.split('-')[0] else 'nontarget'}"
             for e in enroll for t in test]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_load_embeddings_round_trip(tmp_path, speakers):
    enroll, _ = speakers
    ids, matrix = scoring.load_embeddings(write_embeddings(tmp_path / "enroll", enroll))
    assert ids == list(enroll)
    assert matrix.dtype == np.float32 and matrix.shape == (5, 16)
    np.testing.assert_allclose(matrix, np.stack(list(enroll.values())), rtol=1e-6)


def test_load_embeddings_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.scp"):
        scoring.load_embeddings(tmp_path / "missing.scp")
    (tmp_path / "empty.scp").write_text("")
    with pytest.raises(ValueError, match="empty.scp.*empty"):
        scoring.load_embeddings(tmp_path / "empty.scp")
    scp = write_embeddings(tmp_path / "mixed", {"a": np.ones(4), "b": np.ones(5)})
    with pytest.raises(ValueError, match="mixed.scp.*'b' has dimension 5"):
        scoring.load_embeddings(scp)


def test_cosine_matches_a_plain_loop(speakers):
    enroll, test = speakers
    trials = ([e for e in enroll for _ in test], [t for _ in enroll for t in test])
    scores = scoring.score_trials(trials, enroll, test, backend="cosine")
    for e, t, s in zip(*trials, scores):
        x, y = enroll[e], test[t]
        assert s == pytest.approx(np.dot(x, y) / (np.linalg.norm(x) * np.linalg.norm(y)), abs=1e-5)


def test_euclidean_is_negative_distance(speakers):
    enroll, test = speakers
    trials = (["spk0-enroll", "spk1-enroll", "spk2-enroll"], ["spk0-test0", "spk0-test0", "spk2-test2"])
    as_pairs = (list(enroll), np.stack(list(enroll.values())))  # the (ids, matrix) form works too
    scores = scoring.score_trials(trials, as_pairs, test, backend="euclidean")
    for e, t, s in zip(*trials, scores):
        assert s == pytest.approx(-np.linalg.norm(enroll[e] - test[t]), rel=1e-5)
    same = scoring.score_trials((["a"], ["a"]), {"a": np.ones(8)}, {"a": np.ones(8)}, backend="euclidean")
    assert same[0] == 0.0


def test_centering_and_length_norm_prepare_both_sides(speakers):
    enroll, test = speakers
    mean = np.mean(list(enroll.values()), axis=0)
    trials = ([e for e in enroll for _ in test], [t for _ in enroll for t in test])
    scores = scoring.score_trials(trials, enroll, test, backend="euclidean", mean=mean, length_norm=True)
    for e, t, s in zip(*trials, scores):
        x, y = enroll[e] - mean, test[t] - mean
        assert s == pytest.approx(-np.linalg.norm(x / np.linalg.norm(x) - y / np.linalg.norm(y)), abs=1e-5)
    centred = scoring.score_trials(trials, enroll, test, mean=mean)
    for e, t, s in zip(*trials, centred):
        x, y = enroll[e] - mean, test[t] - mean
        assert s == pytest.approx(np.dot(x, y) / (np.linalg.norm(x) * np.linalg.norm(y)), abs=1e-5)
    assert not np.allclose(centred, scoring.score_trials(trials, enroll, test))  # centering changes cosine
    # cosine is blind to length normalisation
    np.testing.assert_allclose(scoring.score_trials(trials, enroll, test, mean=mean, length_norm=True), centred,
                               atol=1e-6)


def test_prepare_embeddings_and_mean_embedding():
    matrix = np.array([[4.0, 5.0], [-2.0, -3.0], [1.0, 1.0]], dtype=np.float32)
    before = matrix.copy()
    mean = scoring.mean_embedding((["a", "b", "c"], matrix))
    assert mean.tolist() == pytest.approx([1.0, 1.0])
    prepared = scoring.prepare_embeddings(matrix, mean, length_norm=True)
    np.testing.assert_allclose(prepared, [[0.6, 0.8], [-0.6, -0.8], [0.0, 0.0]], atol=1e-6)  # zero stays zero
    np.testing.assert_array_equal(matrix, before)  # the input is left alone
    with pytest.raises(ValueError, match="centering mean has dimension 3 but the embeddings 2"):
        scoring.prepare_embeddings(matrix, np.zeros(3))


@pytest.mark.parametrize("backend", sorted(scoring.BACKENDS))
def test_cross_scores_agree_with_the_trial_backend(backend):
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(5, 8)).astype(np.float32), rng.normal(size=(7, 8)).astype(np.float32)
    matrix = scoring.cross_scores(a, b, backend)
    rows_a, rows_b = np.repeat(np.arange(5), 7), np.tile(np.arange(7), 5)
    paired = scoring.get_backend(backend)(a, b, rows_a, rows_b)
    np.testing.assert_allclose(matrix.ravel(), paired, rtol=1e-5, atol=1e-5)
    assert set(scoring.CROSS_BACKENDS) == set(scoring.BACKENDS)
    assert scoring.cross_scores(a, a, "euclidean").diagonal() == pytest.approx(np.zeros(5), abs=1e-3)


def test_zero_vector_scores_zero_not_nan():
    scores = scoring.score_trials((["a"], ["b"]), {"a": np.zeros(4)}, {"b": np.ones(4)})
    assert scores.tolist() == [0.0]


def test_separable_speakers_score_well(speakers, tmp_path):
    enroll, test = speakers
    trials = scoring.trial_columns(read_trials(write_trials(tmp_path / "trials", enroll, test)))
    scores = scoring.score_trials(trials, enroll, test)
    assert compute_eer(scores, trials[2])[0] < 0.1


def test_missing_id_names_id_line_and_side(tmp_path, speakers):
    enroll, test = speakers
    path = tmp_path / "trials"
    path.write_text("spk0-enroll spk0-test0 target\nspk0-enroll spk9-test0 nontarget\n")
    with pytest.raises(scoring.TrialsError, match=r"trials line 2: test id 'spk9-test0' has no test embedding"):
        scoring.score_trials(scoring.trial_columns(read_trials(path)), enroll, test, trials_path=path)
    with pytest.raises(scoring.TrialsError, match="trial 1: enroll id 'nobody'"):
        scoring.score_trials((["nobody"], ["spk0-test0"]), enroll, test)


def test_unknown_backend_lists_known_ones(speakers):
    enroll, test = speakers
    with pytest.raises(ValueError, match="unknown scoring backend 'plda'; known backends: cosine, euclidean"):
        scoring.score_trials((["spk0-enroll"], ["spk0-test0"]), enroll, test, backend="plda")


def test_dimension_mismatch_is_an_error():
    with pytest.raises(ValueError, match="dimension 4 but test embeddings 5"):
        scoring.score_trials((["a"], ["b"]), {"a": np.ones(4)}, {"b": np.ones(5)})


def test_trial_columns(tmp_path):
    path = tmp_path / "trials"
    path.write_text("a x target\nb\ty  nontarget\n")
    enroll_ids, test_ids, labels = scoring.trial_columns(read_trials(path))
    assert (enroll_ids, test_ids, labels.tolist(), labels.dtype) == (["a", "b"], ["x", "y"], [1, 0], np.int8)
    path.write_text("")
    assert [len(column) for column in scoring.trial_columns(read_trials(path))] == [0, 0, 0]


@pytest.mark.parametrize("text, message", [
    ("a x target\nb y maybe\n", "trials:2: label 'maybe' is neither 'target' nor 'nontarget'"),
    ("a x target\n\n", "trials:2: empty line"),
    ("a x target\nb y\n", "trials:2: expected 3 fields, found 2; the layout is `<enroll-id> <test-id> "
                           "target|nontarget`"),
    (b"a x target\nb \xff nontarget\n", "trials:2: not valid UTF-8"),
])
def test_the_one_trials_reader_names_file_and_line(tmp_path, text, message):
    """spk.data.read_trials, which every scorer uses: its errors say where and what, like every data-dir reader."""
    path = tmp_path / "trials"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(DataFormatError, match=message) as error:
        read_trials(path)
    assert str(error.value).startswith(f"{path}:2: ")


def test_scores_round_trip_and_join_with_trials(tmp_path):
    trials = tmp_path / "trials"
    trials.write_text("a x target\nb y nontarget\nc z target\n")
    scores_path = tmp_path / "sub" / "scores"
    scoring.write_scores(scores_path, ["c", "a", "b"], ["z", "x", "y"], [0.5, -1.25, 3.0])
    assert scores_path.read_text() == "c z 0.5\na x -1.25\nb y 3\n"
    assert list(tmp_path.joinpath("sub").iterdir()) == [scores_path]  # no temporary file left behind
    scores, labels = scoring.labelled_scores(scores_path, trials)  # other order than the trials
    assert scores.tolist() == [0.5, -1.25, 3.0] and labels.tolist() == [1, 1, 0]

    scoring.write_scores(scores_path, ["a"], ["x"], [0.25], labels=[0])
    assert scores_path.read_text() == "a x 0.25 nontarget\n"
    scores, labels = scoring.labelled_scores(scores_path)
    assert labels.tolist() == [0]

    scoring.write_scores(scores_path, ["a", "q"], ["x", "q"], [0.1, 0.2])
    with pytest.raises(scoring.TrialsError, match="line 2: trial q q is not in"):
        scoring.labelled_scores(scores_path, trials)


def test_many_trials_match_a_plain_dot_product():
    """Chunked gathering over many trials gives each trial's own cosine (the speed is measured by
    benchmarks/score_million_trials.py, not here)."""
    rng = np.random.default_rng(0)
    ids = [f"utt{i:05d}" for i in range(2000)]
    matrix = rng.normal(size=(2000, 64)).astype(np.float32)
    n = 100_000
    left, right = rng.integers(0, 2000, n), rng.integers(0, 2000, n)
    scores = scoring.score_trials(([ids[i] for i in left], [ids[i] for i in right]), (ids, matrix), (ids, matrix))
    unit = matrix / np.linalg.norm(matrix, axis=1, keepdims=True)
    np.testing.assert_allclose(scores, np.einsum("ij,ij->i", unit[left], unit[right]), atol=1e-5)


def test_score_command(tmp_path, speakers):
    from spk.cli import main

    enroll, test = speakers
    trials = write_trials(tmp_path / "trials", enroll, test)
    enroll_scp = write_embeddings(tmp_path / "enroll", enroll)
    test_scp = write_embeddings(tmp_path / "test", test)
    scores_out = tmp_path / "scores" / "test_cosine"
    results_out = tmp_path / "results" / "test_cosine.json"
    result = CliRunner().invoke(main, ["score", "--trials", str(trials), "--enroll-scp", enroll_scp,
                                       "--test-scp", test_scp, "--scores-out", str(scores_out),
                                       "--results-out", str(results_out)])
    assert result.exit_code == 0, result.output
    results = json.loads(results_out.read_text())
    for key in ("kind", "trials", "num_target", "num_nontarget", "eer", "min_dcf_0.01", "min_dcf_0.001",
                "roc_auc", "backend", "threshold_eer", "scores"):
        assert key in results
    assert results["kind"] == "verification" and results["backend"] == "cosine"
    assert (results["num_target"], results["num_nontarget"]) == (15, 60)
    assert len(scores_out.read_text().splitlines()) == 75
    scores, labels = scoring.labelled_scores(results["scores"], results["trials"])
    assert results["eer"] == pytest.approx(100 * compute_eer(scores, labels)[0])

    result = CliRunner().invoke(main, ["score", "--trials", str(trials), "--enroll-scp", enroll_scp,
                                       "--test-scp", test_scp, "--backend", "plda", "--scores-out",
                                       str(scores_out), "--results-out", str(results_out)])
    assert result.exit_code != 0 and "cosine" in result.output and "euclidean" in result.output

    trials.write_text("spk0-enroll nobody target\n")
    result = CliRunner().invoke(main, ["score", "--trials", str(trials), "--enroll-scp", enroll_scp,
                                       "--test-scp", test_scp, "--scores-out", str(scores_out),
                                       "--results-out", str(results_out)])
    assert result.exit_code == 1 and "line 1: test id 'nobody'" in result.output
