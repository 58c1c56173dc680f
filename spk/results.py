"""Results files: the one place that writes and reads ``exp/<tag>/results/<name>.json``.

Two kinds, one file per trial list or identification test (keys in docs/architecture.md,
"Results files"):

- ``verification``: the trial-list metrics, where the scores are, and how they were
  made: the flat keys ``backend``, ``center_scp``, ``length_norm``, ``score_norm``,
  ``cohort_scp``, ``top_n`` and ``calibration`` that ``spk score`` has always written,
  plus ``scoring``, the complete :class:`ScoringSettings` record (every key, null
  where unused), which ``spk calibrate`` reads to fit a calibration for such scores;
- ``identification``: top-1/top-5 accuracy, the confusion matrix as a CSV beside the
  JSON (``<name>_confusion.csv``), the five worst speakers, and ``scoring`` (the
  backend and the speaker embeddings used).

Files are JSON objects with sorted keys, written atomically; NaN and infinities are
written as null.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from spk.data.io import atomic_write_text
from spk.metrics import per_class_accuracy

VERIFICATION = "verification"
IDENTIFICATION = "identification"
KINDS = (VERIFICATION, IDENTIFICATION)

# Speakers an identification result names as the worst recognised.
WORST_SPEAKERS = 5


@dataclass(frozen=True)
class ScoringSettings:
    """How verification scores were made from embeddings (the options of ``spk score``).

    ``center_scp``: embeddings whose mean was subtracted first (None: no centering);
    ``score_norm`` with its ``cohort_scp`` and, for asnorm, ``top_n`` (None: the
    default); ``calibration``: the calibration file that turned the scores into
    LLRs (None: raw scores). Paths are kept as given.
    """

    backend: str = "cosine"
    center_scp: str | None = None
    length_norm: bool = False
    score_norm: str = "none"
    cohort_scp: str | None = None
    top_n: int | None = None
    calibration: str | None = None

    def __post_init__(self):
        for name in ("center_scp", "cohort_scp", "calibration"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, os.fspath(value))

    def record(self) -> dict:
        """The ``scoring`` record of a results file."""
        return asdict(self)

    @classmethod
    def from_results(cls, record: Mapping, where: str | os.PathLike) -> "ScoringSettings":
        """The settings a verification results record holds; ``where`` names the file in errors.

        Files written before the ``scoring`` record existed give them from the flat keys.
        """
        scoring = record.get("scoring")
        if scoring is None:
            known = {f.name for f in fields(cls)}
            scoring = {key: record[key] for key in known if key in record}
            if scoring.get("score_norm", "none") != "asnorm":
                scoring.pop("top_n", None)
        if not isinstance(scoring, Mapping):
            raise ValueError(f"results file {where}: 'scoring' must be a JSON object, not {scoring!r}")
        unknown = set(scoring) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"results file {where}: unknown scoring keys {', '.join(sorted(unknown))}")
        return cls(**scoring)


# --------------------------------------------------------------------------- #
# building the records
# --------------------------------------------------------------------------- #

def verification_results(*, trials: str | os.PathLike, scores: str | os.PathLike, enroll_scp: str | os.PathLike,
                         test_scp: str | os.PathLike, settings: ScoringSettings, metrics: Mapping,
                         num_cohort: int | None = None, top_n_used: int | None = None,
                         calibrated_metrics: Mapping | None = None) -> dict:
    """The record of one scored trial list.

    ``metrics`` are ``spk.metrics.verification_metrics`` of the written scores;
    ``num_cohort`` and ``top_n_used`` (asnorm: the cohort members used per side) are
    given with score normalisation; ``calibrated_metrics`` (Cllr, actual DCF, ...) with
    a calibration.
    """
    record = {"kind": VERIFICATION, "trials": os.fspath(trials), "scores": os.fspath(scores),
              "enroll_scp": os.fspath(enroll_scp), "test_scp": os.fspath(test_scp),
              "backend": settings.backend, "center_scp": settings.center_scp, "length_norm": settings.length_norm,
              "score_norm": settings.score_norm, "scoring": settings.record(), **metrics}
    if settings.score_norm != "none":
        record.update(cohort_scp=settings.cohort_scp, num_cohort=num_cohort)
    if settings.score_norm == "asnorm":
        record["top_n"] = top_n_used
    if settings.calibration is not None:
        record.update(calibration=settings.calibration, **(calibrated_metrics or {}))
    return record


def write_identification_results(path: str | os.PathLike, metrics: Mapping, confusion, speakers: Sequence[str], *,
                                 embeddings: str | os.PathLike, backend: str,
                                 speaker_embeddings: str | os.PathLike | None = None,
                                 name: str | None = None) -> dict:
    """Write an identification results file and its confusion CSV (``<stem>_confusion.csv`` beside it).

    ``metrics`` are ``spk.metrics.identification_metrics``; ``confusion`` is the
    matrix over ``speakers`` (row = true speaker); ``backend`` says how posteriors
    were made and ``speaker_embeddings`` which speaker means they were scored
    against, if any. Returns the record written.
    """
    path = Path(path)
    confusion_csv = path.with_name(path.stem + "_confusion.csv")
    write_confusion_csv(confusion_csv, confusion, speakers)
    per_speaker = per_class_accuracy(confusion)
    worst = {speakers[i]: round(float(per_speaker[i]) * 100, 2)
             for i in np.argsort(per_speaker)[:WORST_SPEAKERS] if not np.isnan(per_speaker[i])}
    record = {**metrics, "kind": IDENTIFICATION, "confusion": str(confusion_csv), "embeddings": os.fspath(embeddings),
              "backend": backend, "worst_speakers": worst,
              "scoring": {"backend": backend,
                          "speaker_embeddings": None if speaker_embeddings is None else os.fspath(speaker_embeddings)}}
    if name:
        record["name"] = name
    write_results(path, record)
    return record


# --------------------------------------------------------------------------- #
# files
# --------------------------------------------------------------------------- #

def _plain(value):
    """JSON-ready copy of ``value``: numpy scalars and arrays become Python, NaN/inf become null."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def write_results(path: str | os.PathLike, record: Mapping) -> None:
    """Write one results file: sorted keys, indent 2, complete or not at all."""
    if record.get("kind") not in KINDS:
        raise ValueError(f"results for {path}: 'kind' must be one of {', '.join(KINDS)}, not {record.get('kind')!r}")
    atomic_write_text(path, json.dumps(_plain(record), sort_keys=True, indent=2, allow_nan=False) + "\n")


def read_results_file(path: str | os.PathLike) -> dict:
    """One results file as a dict; a file that is not a JSON object is a ValueError naming it."""
    try:
        record = json.loads(Path(path).read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"results file {path} is not valid JSON: {error}") from None
    if not isinstance(record, dict):
        raise ValueError(f"results file {path} does not hold a JSON object")
    return record


def read_results(exp_dir: str | os.PathLike) -> list[dict]:
    """All ``exp_dir/results/*.json``, sorted by name, each with ``name`` = the file stem."""
    results = []
    for path in sorted(Path(exp_dir, "results").glob("*.json")):
        record = read_results_file(path)
        record["name"] = path.stem
        results.append(record)
    return results


def _same_file(recorded: str, path: Path) -> bool:
    try:
        return os.path.samefile(recorded, path)
    except OSError:
        return False


def results_for_scores(scores: str | os.PathLike) -> Path | None:
    """The verification results file that ``spk score`` wrote with the score file ``scores``, or None.

    Looked for where stage 5 puts it: beside the scores with the same stem and
    ``.json`` (``calibration/dev_cosine.scores`` -> ``calibration/dev_cosine.json``),
    or in ``results/`` beside ``scores/`` (``scores/test_cosine`` ->
    ``results/test_cosine.json``). A candidate counts only when it records this very
    score file (paths as recorded, relative to the current directory).
    """
    scores = Path(scores)
    name = f"{scores.stem}.json"
    for candidate in (scores.with_name(name), scores.parent.parent / "results" / name):
        if candidate.is_file() and candidate != scores:
            try:
                record = read_results_file(candidate)
            except (OSError, ValueError):
                continue
            if record.get("kind") == VERIFICATION and _same_file(str(record.get("scores")), scores):
                return candidate
    return None


def write_confusion_csv(path: str | os.PathLike, matrix, class_names: Sequence[str]) -> None:
    """A confusion matrix as CSV: header ``true\\predicted,<class>...``, then one row per true class."""
    matrix = np.asarray(matrix)
    if matrix.shape != (len(class_names), len(class_names)):
        raise ValueError(f"confusion matrix shape {matrix.shape} does not fit {len(class_names)} class names")
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["true\\predicted", *class_names])
    for name, row in zip(class_names, matrix.tolist()):
        writer.writerow([name, *row])
    atomic_write_text(path, out.getvalue())


def read_confusion_csv(path: str | os.PathLike) -> tuple[np.ndarray, list[str]]:
    """``(matrix, class_names)`` from a file written by ``write_confusion_csv``."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise ValueError(f"confusion file {path} is empty")
    class_names = rows[0][1:]
    matrix = np.array([[float(x) for x in row[1:]] for row in rows[1:]])
    if matrix.shape != (len(class_names), len(class_names)):
        raise ValueError(f"confusion file {path}: {len(rows) - 1} rows for {len(class_names)} classes")
    return matrix, class_names
