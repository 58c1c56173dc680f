"""Scoring verification trials with embeddings: trial lists, score files, backends.

A *backend* turns an enrollment and a test embedding into a score, higher meaning
more likely the same speaker. Backends are looked up by name in ``BACKENDS``;
each is a function

    backend(enroll_matrix, test_matrix, enroll_rows, test_rows) -> scores

that scores trial i as ``enroll_matrix[enroll_rows[i]]`` against
``test_matrix[test_rows[i]]``. Whole-matrix preparation (such as length
normalisation) is done once per matrix, then trials are scored in cache-sized
chunks of gathered rows, so a million trials take a fraction of a second.
``cross_scores`` scores every row of one matrix against every row of another
with the same backend (score normalisation scores against a cohort that way).

Before the backend, embeddings can be *prepared* (``prepare_embeddings``):
centred by subtracting a mean vector (usually the training set's mean
embedding, ``mean_embedding``), then length-normalised. Cosine scoring is
blind to length normalisation; Euclidean scoring is not.

File formats (Kaldi's):

- trials: ``<enroll-id> <test-id> target|nontarget``, read by :func:`spk.data.read_trials`
- scores: ``<enroll-id> <test-id> <score>``, optionally a fourth ``target|nontarget`` column
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable, Mapping, NamedTuple, Sequence, Union

import kaldiio
import numpy as np

from spk.data import Trial, read_trials
from spk.data.io import atomic_write_text

logger = logging.getLogger(__name__)

LABEL_WORDS = {"target": 1, "nontarget": 0}

# Embeddings as either {id: vector} or (ids, matrix with one row per id).
Embeddings = Union[Mapping[str, np.ndarray], tuple[Sequence[str], np.ndarray]]
Backend = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]
CrossBackend = Callable[[np.ndarray, np.ndarray], np.ndarray]

# Trials per chunk when gathering rows: 4096 rows of a 256-dim float32 matrix are
# 4 MiB, which stays in cache; much larger chunks are several times slower.
_CHUNK = 4096


class TrialsError(ValueError):
    """A trials or scores file is malformed, or names an id without an embedding."""


# --------------------------------------------------------------------------- #
# embeddings
# --------------------------------------------------------------------------- #

def load_embeddings(scp_path: str | os.PathLike) -> tuple[list[str], np.ndarray]:
    """Read a Kaldi embedding scp into ``(ids, matrix)``: one float32 row per id, in scp order."""
    scp_path = Path(scp_path)
    if not scp_path.is_file():
        raise FileNotFoundError(f"embedding file {scp_path} does not exist")
    table = kaldiio.load_scp(str(scp_path))
    ids = list(table.keys())
    if not ids:
        raise ValueError(f"embedding file {scp_path} is empty")
    rows = []
    for utt in ids:
        vector = np.asarray(table[utt], dtype=np.float32)
        if vector.ndim != 1:
            raise ValueError(f"{scp_path}: embedding {utt!r} has shape {vector.shape}; expected a vector")
        if rows and vector.size != rows[0].size:
            raise ValueError(f"{scp_path}: embedding {utt!r} has dimension {vector.size}, "
                             f"but {ids[0]!r} has {rows[0].size}")
        rows.append(vector)
    return ids, np.stack(rows)


def embedding_table(embeddings: Embeddings, what: str) -> tuple[dict[str, int], np.ndarray]:
    """``(id -> row index, float32 matrix)`` from a dict or an (ids, matrix) pair; ``what`` names it in errors."""
    if isinstance(embeddings, Mapping):
        ids = list(embeddings.keys())
        matrix = np.stack([np.asarray(embeddings[i], dtype=np.float32).ravel() for i in ids]) if ids else None
    else:
        ids, matrix = embeddings
        ids = list(ids)
        matrix = np.asarray(matrix, dtype=np.float32)
    if not ids:
        raise ValueError(f"the {what} embeddings are empty")
    if matrix.ndim != 2 or matrix.shape[0] != len(ids):
        raise ValueError(f"the {what} embeddings: {len(ids)} ids but a matrix of shape {matrix.shape}")
    return {utt: row for row, utt in enumerate(ids)}, matrix


def mean_embedding(embeddings: Embeddings) -> np.ndarray:
    """The mean vector (float32) of an embedding table, e.g. the training set's, for centering."""
    _, matrix = embedding_table(embeddings, "centering")
    return matrix.mean(axis=0, dtype=np.float64).astype(np.float32)


def prepare_embeddings(matrix: np.ndarray, mean: np.ndarray | None = None,
                       length_norm: bool = False) -> np.ndarray:
    """``matrix`` (one embedding a row) as float32, centred on ``mean``, then length-normalised.

    Apply the same preparation to enrollment, test and cohort embeddings. The input
    is never modified (it is returned as it is when there is nothing to do).
    """
    matrix = np.asarray(matrix, dtype=np.float32)
    if mean is not None:
        mean = np.asarray(mean, dtype=np.float32).ravel()
        if mean.size != matrix.shape[1]:
            raise ValueError(f"the centering mean has dimension {mean.size} but the embeddings {matrix.shape[1]}")
        matrix = matrix - mean
    if length_norm:
        matrix = _length_normalise(matrix)
    return matrix


# --------------------------------------------------------------------------- #
# backends
# --------------------------------------------------------------------------- #

def _paired_rows(a: np.ndarray, b: np.ndarray, rows_a: np.ndarray, rows_b: np.ndarray,
                 score_rows: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> np.ndarray:
    """Apply ``score_rows`` to ``a[rows_a]`` and ``b[rows_b]`` chunk by chunk."""
    scores = np.empty(len(rows_a), dtype=np.float64)
    for start in range(0, len(rows_a), _CHUNK):
        stop = start + _CHUNK
        scores[start:stop] = score_rows(a[rows_a[start:stop]], b[rows_b[start:stop]])
    return scores


def _row_dot(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", x, y)


def _length_normalise(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.maximum(norms, np.finfo(np.float32).tiny)  # a zero vector stays zero


def cosine_backend(enroll: np.ndarray, test: np.ndarray, enroll_rows: np.ndarray,
                   test_rows: np.ndarray) -> np.ndarray:
    """Cosine similarity in [-1, 1] (0 against an all-zero embedding)."""
    return _paired_rows(_length_normalise(enroll), _length_normalise(test), enroll_rows, test_rows, _row_dot)


def euclidean_backend(enroll: np.ndarray, test: np.ndarray, enroll_rows: np.ndarray,
                      test_rows: np.ndarray) -> np.ndarray:
    """Negative Euclidean distance, so that higher still means more similar."""
    def negative_distance(x, y):
        difference = x - y  # the difference itself, not |x|^2 + |y|^2 - 2xy, keeps small distances exact
        return -np.sqrt(_row_dot(difference, difference))
    return _paired_rows(enroll, test, enroll_rows, test_rows, negative_distance)


BACKENDS: dict[str, Backend] = {
    "cosine": cosine_backend,
    "euclidean": euclidean_backend,
}


def cosine_cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of every row of ``a`` with every row of ``b``: shape (len(a), len(b)), float64."""
    return _length_normalise(np.asarray(a, np.float64)) @ _length_normalise(np.asarray(b, np.float64)).T


def centred_cosine(references: np.ndarray, test: np.ndarray, center: np.ndarray | None = None) -> np.ndarray:
    """Cosine of each row of ``references`` with the vector ``test``, both centred on ``center`` first
    (as ``spk score --center-scp``); float64, 0 against an all-zero vector."""
    references = np.atleast_2d(np.asarray(references, dtype=np.float64))
    test = np.asarray(test, dtype=np.float64).reshape(1, -1)
    if center is not None:
        center = np.asarray(center, dtype=np.float64).reshape(1, -1)
        references, test = references - center, test - center
    return cosine_cross(references, test)[:, 0]


def euclidean_cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Negative Euclidean distance of every row of ``a`` to every row of ``b`` (float64)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    squared = (a * a).sum(axis=1)[:, None] + (b * b).sum(axis=1)[None, :] - 2.0 * (a @ b.T)
    return -np.sqrt(np.maximum(squared, 0.0))  # rounding can push a zero distance slightly below 0


# The all-pairs form of each backend in BACKENDS, under the same name.
CROSS_BACKENDS: dict[str, CrossBackend] = {
    "cosine": cosine_cross,
    "euclidean": euclidean_cross,
}


def get_backend(name: str) -> Backend:
    """The backend function registered as ``name``."""
    try:
        return BACKENDS[name]
    except KeyError:
        raise ValueError(f"unknown scoring backend {name!r}; known backends: {', '.join(sorted(BACKENDS))}") \
            from None


def cross_scores(a: np.ndarray, b: np.ndarray, backend: str = "cosine") -> np.ndarray:
    """Scores of every row of ``a`` against every row of ``b`` with ``backend``: shape (len(a), len(b))."""
    get_backend(backend)  # the error message for unknown names
    return CROSS_BACKENDS[backend](a, b)


# --------------------------------------------------------------------------- #
# trials and scores
# --------------------------------------------------------------------------- #

def _label(word: str, path, number: int) -> int:
    """1 for ``target``, 0 for ``nontarget``; anything else is an error naming the file and line."""
    if word not in LABEL_WORDS:
        raise TrialsError(f"{path} line {number}: label {word!r} is neither 'target' nor 'nontarget'")
    return LABEL_WORDS[word]


def trial_columns(trials: Sequence[Trial]) -> tuple[list[str], list[str], np.ndarray]:
    """``(enroll_ids, test_ids, labels)`` of trials read by :func:`spk.data.read_trials`.

    The column form that ``score_trials`` and the metrics take; ``labels`` is an
    int8 array, 1 for a target trial and 0 for a nontarget one.
    """
    labels = np.fromiter((trial.target for trial in trials), dtype=np.int8, count=len(trials))
    return [trial.enroll for trial in trials], [trial.test for trial in trials], labels


def _rows_for(ids: Sequence[str], index: dict[str, int], side: str, trials_path) -> np.ndarray:
    """Row index of each id; a missing id is an error naming it, its line and its side."""
    try:
        return np.fromiter((index[i] for i in ids), dtype=np.int64, count=len(ids))
    except KeyError:
        line = next(n for n, i in enumerate(ids, start=1) if i not in index)
        where = f"trials file {trials_path} line {line}" if trials_path else f"trial {line}"
        raise TrialsError(f"{where}: {side} id {ids[line - 1]!r} has no {side} embedding") from None


class IndexedTrials(NamedTuple):
    """Trials as row indices into two embedding matrices: trial i is
    ``enroll_matrix[enroll_rows[i]]`` against ``test_matrix[test_rows[i]]``."""
    enroll_matrix: np.ndarray
    test_matrix: np.ndarray
    enroll_rows: np.ndarray
    test_rows: np.ndarray


def index_trials(trials: Sequence, enroll: Embeddings, test: Embeddings,
                 trials_path: str | os.PathLike | None = None) -> IndexedTrials:
    """Look up the embedding row of both sides of every trial.

    ``trials`` is ``(enroll_ids, test_ids[, labels])`` as ``trial_columns`` returns
    (labels are ignored). ``enroll`` and ``test`` are ``{id: vector}`` dicts or
    ``(ids, matrix)`` pairs such as ``load_embeddings`` returns. An id without an
    embedding is a TrialsError naming it, its side and its line of ``trials_path``.
    """
    enroll_ids, test_ids = trials[0], trials[1]
    if len(enroll_ids) != len(test_ids):
        raise ValueError(f"{len(enroll_ids)} enroll ids but {len(test_ids)} test ids")
    enroll_index, enroll_matrix = embedding_table(enroll, "enroll")
    test_index, test_matrix = embedding_table(test, "test")
    if enroll_matrix.shape[1] != test_matrix.shape[1]:
        raise ValueError(f"enroll embeddings have dimension {enroll_matrix.shape[1]} "
                         f"but test embeddings {test_matrix.shape[1]}")
    return IndexedTrials(enroll_matrix, test_matrix, _rows_for(enroll_ids, enroll_index, "enroll", trials_path),
                         _rows_for(test_ids, test_index, "test", trials_path))


def prepare_trials(indexed: IndexedTrials, mean: np.ndarray | None = None,
                   length_norm: bool = False) -> IndexedTrials:
    """``indexed`` with both embedding matrices prepared by ``prepare_embeddings``."""
    return indexed._replace(enroll_matrix=prepare_embeddings(indexed.enroll_matrix, mean, length_norm),
                            test_matrix=prepare_embeddings(indexed.test_matrix, mean, length_norm))


def score_indexed(indexed: IndexedTrials, backend: str = "cosine") -> np.ndarray:
    """Float64 scores of indexed trials with ``backend`` (embeddings used as they are)."""
    score = get_backend(backend)
    logger.debug("scoring %d trials (%s, dimension %d)", len(indexed.enroll_rows), backend,
                 indexed.enroll_matrix.shape[1])
    return score(*indexed)


def score_trials(trials: Sequence, enroll: Embeddings, test: Embeddings, backend: str = "cosine",
                 trials_path: str | os.PathLike | None = None, *, mean: np.ndarray | None = None,
                 length_norm: bool = False) -> np.ndarray:
    """Score every trial; returns float64 scores in trial order.

    ``trials`` is ``(enroll_ids, test_ids[, labels])`` as ``trial_columns`` returns
    (labels are ignored). ``enroll`` and ``test`` are ``{id: vector}`` dicts or
    ``(ids, matrix)`` pairs such as ``load_embeddings`` returns. ``trials_path`` only
    serves error messages. ``mean`` and ``length_norm`` prepare both sides before
    the backend (``prepare_embeddings``).
    """
    get_backend(backend)  # an unknown name fails before any work
    indexed = index_trials(trials, enroll, test, trials_path)
    return score_indexed(prepare_trials(indexed, mean, length_norm), backend)


def write_scores(path: str | os.PathLike, enroll_ids: Sequence[str], test_ids: Sequence[str], scores,
                 labels=None) -> None:
    """Write ``<enroll-id> <test-id> <score>`` lines (plus ``target|nontarget`` when labels are given).

    The three-column form is what Kaldi's scoring scripts read. The file appears
    complete or not at all.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if not len(enroll_ids) == len(test_ids) == scores.size:
        raise ValueError(f"lengths differ: {len(enroll_ids)} enroll ids, {len(test_ids)} test ids, "
                         f"{scores.size} scores")
    values = [f"{s:.8g}" for s in scores.tolist()]
    if labels is None:
        lines = [f"{e} {t} {s}\n" for e, t, s in zip(enroll_ids, test_ids, values)]
    else:
        words = ["target" if label else "nontarget" for label in np.asarray(labels).tolist()]
        lines = [f"{e} {t} {s} {w}\n" for e, t, s, w in zip(enroll_ids, test_ids, values, words)]
    atomic_write_text(path, "".join(lines))


def read_scores(path: str | os.PathLike) -> tuple[list[str], list[str], np.ndarray, np.ndarray | None]:
    """Read a score file into ``(enroll_ids, test_ids, scores, labels)``; labels None without a 4th column."""
    enroll_ids, test_ids, scores, labels = [], [], [], []
    with open(path) as f:
        for number, line in enumerate(f, start=1):
            fields = line.split()
            if len(fields) not in (3, 4):
                raise TrialsError(f"{path} line {number}: expected '<enroll-id> <test-id> <score>', "
                                  f"got {line.rstrip()!r}")
            try:
                scores.append(float(fields[2]))
            except ValueError:
                raise TrialsError(f"{path} line {number}: score {fields[2]!r} is not a number") from None
            if len(fields) == 4:
                labels.append(_label(fields[3], path, number))
            enroll_ids.append(fields[0])
            test_ids.append(fields[1])
    if labels and len(labels) != len(scores):
        raise TrialsError(f"{path}: some lines have a label column and some do not")
    return enroll_ids, test_ids, np.array(scores), (np.array(labels, dtype=np.int8) if labels else None)


def labelled_scores(scores_path: str | os.PathLike,
                    trials_path: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(scores, labels)`` of a score file, labels taken from its own column or from the trials file.

    Every labelled trial must have exactly one score; score lines for pairs outside
    the trials file are errors too, since they would mean the files do not belong together.
    """
    enroll_ids, test_ids, scores, labels = read_scores(scores_path)
    if labels is not None:
        return scores, labels
    if trials_path is None:
        raise TrialsError(f"{scores_path} has no label column and no trials file was given")
    trial_enroll, trial_test, trial_labels = trial_columns(read_trials(trials_path))
    if (enroll_ids, test_ids) == (trial_enroll, trial_test):  # the usual case: same order
        return scores, trial_labels
    label_of = {(e, t): label for e, t, label in zip(trial_enroll, trial_test, trial_labels.tolist())}
    if len(label_of) != len(trial_enroll):
        raise TrialsError(f"trials file {trials_path} lists some trial twice")
    labels = np.empty(len(scores), dtype=np.int8)
    for n, pair in enumerate(zip(enroll_ids, test_ids)):
        if pair not in label_of:
            raise TrialsError(f"{scores_path} line {n + 1}: trial {pair[0]} {pair[1]} is not in {trials_path}")
        labels[n] = label_of[pair]
    if len(set(zip(enroll_ids, test_ids))) != len(label_of):
        raise TrialsError(f"{scores_path} does not score every trial of {trials_path} exactly once")
    return scores, labels
