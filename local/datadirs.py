"""Write the data dirs of a corpus preparation all at once, validated, with nothing half-written.

:func:`write_data_dirs` writes every set into a staging folder inside the data
root, validates each (``validate_data_dir``, and ``validate_trials`` for a trial
list), and only then moves the sets into place. A failure at any point before
that leaves the data root as it was. A set whose files come out exactly as they
already are is left untouched, so features computed from it stay valid; a set
that changed replaces the old folder whole (stale features go with it).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from local.corpus import Utterance
from spk.data import (
    FORMATS,
    DataDirSummary,
    Segment,
    Trial,
    swap_into_place,
    utt2spk_to_spk2utt,
    validate_data_dir,
    validate_trials,
    write_kv,
    write_reco2dur,
    write_segments,
    write_spk2utt,
    write_trials,
    write_utt2spk,
    write_wav_scp,
)
from spk.data.formats import RECORDING, SPEAKER, UTTERANCE

__all__ = ["DataSet", "write_data_dir", "write_data_dirs"]

logger = logging.getLogger("local.datadirs")

# Files a preparation may write; a set is "unchanged" only if none of these differs.
PREP_FILES = ("wav.scp", "segments", "utt2spk", "spk2utt", "reco2dur", "trials")


@dataclass
class DataSet:
    """One data dir to write: its utterances, an optional trial list, and more ``<key> <value>`` files.

    ``extra`` maps a file name (``spk2gender``, ``utt2lang``, ...) to its lines;
    each is cut down to the set's speakers, utterances or recordings, by what
    its keys name (a ``spk2*`` file names speakers, ``utt2*`` utterances).
    """

    utterances: Sequence[Utterance]
    trials: Sequence[Trial] | None = None
    extra: Mapping[str, Mapping[str, str]] = field(default_factory=dict)


def write_data_dir(path: str | os.PathLike, dataset: DataSet) -> None:
    """Write ``dataset`` as a data dir at ``path`` (a fresh folder; not validated: see :func:`write_data_dirs`).

    Raises ValueError when two utterances share an id or one recording id has two sources.
    """
    path = Path(path)
    utts = dataset.utterances
    _check_unique(utts, path)
    path.mkdir(parents=True, exist_ok=True)
    segmented = any(u.is_segment for u in utts)
    wav_scp = {(u.recording if segmented else u.utt): u.source for u in utts}
    write_wav_scp(path / "wav.scp", wav_scp)
    if segmented:
        write_segments(path / "segments", {u.utt: Segment(u.recording, u.start, u.end if u.end is not None
                                                          else u.recording_duration or -1) for u in utts})
    reco2dur = {(u.recording if segmented else u.utt): u.recording_duration for u in utts
                if u.recording_duration is not None}
    if reco2dur and len(reco2dur) == len(wav_scp):
        write_reco2dur(path / "reco2dur", reco2dur)
    utt2spk = {u.utt: u.speaker for u in utts}
    write_utt2spk(path / "utt2spk", utt2spk)
    write_spk2utt(path / "spk2utt", utt2spk_to_spk2utt(utt2spk))
    keys = {UTTERANCE: set(utt2spk), SPEAKER: set(utt2spk.values()), RECORDING: set(wav_scp)}
    for name, table in dataset.extra.items():
        wanted = keys.get(_key_kind(name))
        rows = {key: value for key, value in table.items() if wanted is None or key in wanted}
        if rows:
            write_kv(path / name, rows)
    if dataset.trials is not None:
        write_trials(path / "trials", dataset.trials)


def _key_kind(name: str) -> str | None:
    if name in FORMATS:
        return FORMATS[name].key_kind
    for prefix, kind in (("spk2", SPEAKER), ("utt2", UTTERANCE), ("reco2", RECORDING)):
        if name.startswith(prefix):
            return kind
    return None


def _check_unique(utts: Sequence[Utterance], path: Path) -> None:
    seen: dict[str, Utterance] = {}
    sources: dict[str, str] = {}
    for utt in utts:
        if utt.utt in seen:
            raise ValueError(f"{path}: utterance id {utt.utt!r} stands for both {seen[utt.utt].source!r} "
                             f"and {utt.source!r}; the corpus has two files with one name")
        seen[utt.utt] = utt
        if sources.setdefault(utt.recording, utt.source) != utt.source:
            raise ValueError(f"{path}: recording id {utt.recording!r} stands for both "
                             f"{sources[utt.recording]!r} and {utt.source!r}")


def write_data_dirs(data_root: str | os.PathLike, sets: Mapping[str, DataSet]) -> dict[str, DataDirSummary]:
    """Write each of ``sets`` as ``data_root/<name>``, validated, all or nothing (see the module docstring).

    Returns the summary of each data dir. Raises ValueError for an empty set,
    and :class:`~spk.data.DataDirError` when a written set does not validate
    (a bug in the preparation: nothing is moved into place then).
    """
    data_root = Path(data_root)
    for name, dataset in sets.items():
        if not dataset.utterances:
            raise ValueError(f"data set {name!r} has no utterances; nothing was written to {data_root}")
    data_root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=data_root))
    try:
        summaries = {}
        for name, dataset in sets.items():
            write_data_dir(staging / name, dataset)
            summaries[name] = validate_data_dir(staging / name)
            if dataset.trials is not None:
                ids = {u.utt for u in dataset.utterances} | {u.speaker for u in dataset.utterances}
                validate_trials(staging / name / "trials", ids, ids)
        for name in sets:
            _move_into_place(staging / name, data_root / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    for name, summary in summaries.items():
        summaries[name] = replace(summary, path=data_root / name)
        logger.info("data dir %s", summaries[name])
    return summaries


def _move_into_place(new: Path, dest: Path) -> None:
    """Put the staged set at ``dest``, unless ``dest`` already holds exactly these files."""
    if dest.is_dir() and _same_files(new, dest):
        logger.info("%s is unchanged; kept as it is (with any features made from it)", dest)
        return
    if dest.exists() or dest.is_symlink():
        logger.info("%s changed; replacing it (features made from the old one are dropped)", dest)
    swap_into_place(new, dest)


def _same_files(new: Path, old: Path) -> bool:
    names = set(PREP_FILES) | {p.name for p in new.iterdir()}
    for name in names:
        a, b = new / name, old / name
        if a.is_file() != b.is_file() or (a.is_file() and a.read_bytes() != b.read_bytes()):
            return False
    return True
