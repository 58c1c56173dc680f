"""Score normalisation against a cohort: Z-norm, T-norm, S-norm and adaptive S-norm.

A *cohort* is a set of embeddings of speakers that appear in no trial, usually
the training speakers' mean embeddings (``spk_xvector.scp`` of the training set).
Each side of a trial is scored against the whole cohort with the trial's own
backend; the mean and standard deviation of those cohort scores say how high an
impostor score for that embedding tends to be. With ``s`` the trial score,
``(mu_e, sd_e)`` the statistics of the enrollment embedding and ``(mu_t, sd_t)``
those of the test embedding:

- ``znorm``:  ``(s - mu_e) / sd_e``
- ``tnorm``:  ``(s - mu_t) / sd_t``
- ``snorm``:  ``((s - mu_e) / sd_e + (s - mu_t) / sd_t) / 2``
- ``asnorm``: S-norm with each side's statistics taken over only its ``top_n``
  highest cohort scores, the cohort speakers most like it (Cumani et al. 2011;
  Matejka et al., Interspeech 2017). With ``top_n`` at least the cohort size it
  is S-norm.

Standard deviations are population ones (``ddof=0``). Statistics are computed
once per distinct embedding that some trial uses, then gathered per trial, so a
million trials over a few hundred ids cost little more than the raw scoring.
"""

from __future__ import annotations

import logging
import os
from typing import Sequence

import numpy as np

from spk.scoring import (Embeddings, cross_scores, embedding_table, get_backend, index_trials, prepare_embeddings,
                         prepare_trials, score_indexed)

logger = logging.getLogger(__name__)

SCORE_NORMS = ("none", "znorm", "tnorm", "snorm", "asnorm")

# Cohort size of AS-norm when none is given: the values of the literature are 200-400.
DEFAULT_TOP_N = 300

# Embeddings scored against the cohort at a time: bounds the (rows, cohort) score block in memory.
_ROWS_PER_BLOCK = 1024

# A standard deviation below this (a cohort of identical scores) is raised to it.
_MIN_STD = 1e-12


def cohort_statistics(vectors: np.ndarray, cohort: np.ndarray, backend: str = "cosine",
                      top_n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of each row of ``vectors`` scored against every cohort row.

    With ``top_n``, only each row's ``top_n`` highest cohort scores count (all of them
    when ``top_n`` is at least the cohort size). Both matrices must already be
    prepared as the trials are (``spk.scoring.prepare_embeddings``). Returns two
    float64 arrays of length ``len(vectors)``.
    """
    vectors = np.asarray(vectors)
    cohort = np.asarray(cohort)
    if cohort.ndim != 2 or cohort.shape[0] < 2:
        raise ValueError(f"a score-normalisation cohort needs at least 2 embeddings, not {len(cohort)}")
    if vectors.ndim != 2 or vectors.shape[1] != cohort.shape[1]:
        raise ValueError(f"the cohort embeddings have dimension {cohort.shape[1]} "
                         f"but the trial embeddings have shape {vectors.shape}")
    if top_n is not None and top_n < 1:
        raise ValueError(f"top_n must be at least 1, not {top_n}")
    keep = cohort.shape[0] if top_n is None else min(top_n, cohort.shape[0])
    means = np.empty(len(vectors))
    stds = np.empty(len(vectors))
    for start in range(0, len(vectors), _ROWS_PER_BLOCK):
        block = cross_scores(vectors[start:start + _ROWS_PER_BLOCK], cohort, backend)
        if keep < block.shape[1]:
            # the keep highest scores of each row, in no particular order
            block = np.partition(block, block.shape[1] - keep, axis=1)[:, -keep:]
        means[start:start + len(block)] = block.mean(axis=1)
        stds[start:start + len(block)] = block.std(axis=1)
    return means, np.maximum(stds, _MIN_STD)


def _used_rows(rows: np.ndarray, num_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """``(distinct rows in ascending order, position of each trial's row among them)``, without sorting."""
    used = np.zeros(num_rows, dtype=bool)
    used[rows] = True
    position = np.cumsum(used) - 1
    return np.flatnonzero(used), position[rows]


def _side_statistics(matrix: np.ndarray, rows: np.ndarray, cohort: np.ndarray, backend: str,
                     top_n: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Cohort mean and std of the embedding of each trial's side (computed once per distinct row)."""
    distinct, position = _used_rows(rows, len(matrix))
    means, stds = cohort_statistics(matrix[distinct], cohort, backend, top_n)
    return means[position], stds[position]


def normalise_scores(scores: np.ndarray, enroll_matrix: np.ndarray, test_matrix: np.ndarray,
                     enroll_rows: np.ndarray, test_rows: np.ndarray, cohort: np.ndarray, method: str,
                     backend: str = "cosine", top_n: int | None = None) -> np.ndarray:
    """Normalise raw trial ``scores`` with ``method`` (one of SCORE_NORMS); returns float64 scores.

    Trial i is ``enroll_matrix[enroll_rows[i]]`` against ``test_matrix[test_rows[i]]``
    (as ``spk.scoring.index_trials`` gives); all matrices, cohort included, must be
    prepared alike and ``backend`` must be the one that made ``scores``. ``top_n``
    is for ``asnorm`` only (default DEFAULT_TOP_N).
    """
    if method not in SCORE_NORMS:
        raise ValueError(f"unknown score normalisation {method!r}; known: {', '.join(SCORE_NORMS)}")
    if top_n is not None and method != "asnorm":
        raise ValueError(f"top_n is for asnorm only, not {method}")
    scores = np.asarray(scores, dtype=np.float64)
    if method == "none":
        return scores
    if method == "asnorm":
        top_n = DEFAULT_TOP_N if top_n is None else top_n
        if top_n >= len(cohort):
            logger.info("AS-norm top-%d covers the whole cohort of %d: the same as S-norm", top_n, len(cohort))
    normalised = np.zeros_like(scores)
    sides = {"znorm": ("enroll",), "tnorm": ("test",)}.get(method, ("enroll", "test"))
    for side in sides:
        matrix, rows = (enroll_matrix, enroll_rows) if side == "enroll" else (test_matrix, test_rows)
        means, stds = _side_statistics(matrix, rows, cohort, backend, top_n)
        normalised += (scores - means) / stds
    return normalised / len(sides)


def score_trials_normalised(trials: Sequence, enroll: Embeddings, test: Embeddings, cohort: Embeddings | None,
                            method: str, backend: str = "cosine", top_n: int | None = None,
                            trials_path: str | os.PathLike | None = None, *, mean: np.ndarray | None = None,
                            length_norm: bool = False) -> np.ndarray:
    """Score every trial like ``spk.scoring.score_trials``, then normalise with ``method`` against ``cohort``.

    ``cohort`` is an ``(ids, matrix)`` pair or ``{id: vector}`` dict (needed unless
    ``method`` is ``none``); it is prepared with the same ``mean`` and
    ``length_norm`` as the enrollment and test embeddings.
    """
    get_backend(backend)
    if method not in SCORE_NORMS:
        raise ValueError(f"unknown score normalisation {method!r}; known: {', '.join(SCORE_NORMS)}")
    if method != "none" and cohort is None:
        raise ValueError(f"{method} needs a cohort of embeddings (e.g. the training speakers' spk_xvector.scp)")
    indexed = prepare_trials(index_trials(trials, enroll, test, trials_path), mean, length_norm)
    scores = score_indexed(indexed, backend)
    if method == "none":
        return scores
    cohort_matrix = prepare_embeddings(embedding_table(cohort, "cohort")[1], mean, length_norm)
    return normalise_scores(scores, *indexed, cohort_matrix, method, backend, top_n)
