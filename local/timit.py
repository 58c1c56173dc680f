"""TIMIT (LDC93S1) as data dirs: closed-set identification on the training speakers, trials on the test ones.

The corpus as the LDC distributes it (upper or lower case, or a mix)::

    <corpus-dir>/TRAIN/DR1/FCJF0/SI1027.WAV     NIST SPHERE, 16 kHz (with .PHN, .WRD, .TXT beside)
    <corpus-dir>/TEST/DR1/FAKS0/SX133.WAV

``<corpus-dir>`` may also be a folder holding one of ``TIMIT/`` or ``data/`` with
that layout. Speaker ids are the speaker folder names (``FCJF0``: gender, initials,
a digit), utterance ids ``<speaker>-<sentence>`` (``FCJF0-SI1027``), upper case
whatever the case of the files.

The two SA sentences every speaker reads are the same text for all and are left
out by default (``include_sa``), which leaves 8 per speaker (5 SX, 3 SI).
:func:`prepare` writes:

- ``train``: 5 sentences of each of the 462 training speakers (SincNet's protocol);
- ``ident_test``: their other 3 sentences, for closed-set identification;
- ``test``: every sentence of the 168 test speakers, with balanced ``trials``.
  TIMIT recorded each speaker in one session: all target trials are same-session.

TIMIT is licensed, not downloadable: :data:`HOW_TO_GET` says what to get and where to put it.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import click

from local.cli import COMMAND_SETTINGS, prep_errors, prep_options, required_switch
from local.corpus import CorpusError, SkipLog, Utterance, audio_durations, by_speaker, whole_file
from local.datadirs import DataSet, write_data_dirs
from local.splits import split_by_count
from local.trials import make_trials
from spk.data import DataDirSummary

logger = logging.getLogger("local.timit")

HOW_TO_GET = (
    "TIMIT is licensed by the Linguistic Data Consortium and cannot be downloaded here: get LDC93S1 "
    "(https://catalog.ldc.upenn.edu/LDC93S1, free for LDC members) and unpack it so that "
    "{dir}/TRAIN/DR1/<speaker>/SI*.WAV and {dir}/TEST/... exist (lower-case names work too); "
    "then pass that folder as --corpus-dir")
_DIALECT = re.compile(r"^dr[1-8]$", re.IGNORECASE)
_SPEAKER = re.compile(r"^[mf][a-z]{3}[0-9]$", re.IGNORECASE)
_SENTENCE = re.compile(r"^(s[aix][0-9]+)\.wav$", re.IGNORECASE)
_ANNOTATION = re.compile(r"^s[aix][0-9]+\.(phn|wrd|txt)$", re.IGNORECASE)
PARTS = ("train", "test")


def child_ignoring_case(folder: Path, name: str) -> Path | None:
    """The entry of ``folder`` called ``name`` in any case; CorpusError when two spellings are there."""
    matches = [entry for entry in folder.iterdir() if entry.name.lower() == name.lower()]
    if len(matches) > 1:
        raise CorpusError(f"{folder} has both {matches[0].name} and {matches[1].name}; keep one")
    return matches[0] if matches else None


def find_timit_root(corpus_dir: Path) -> Path:
    """The folder holding ``TRAIN`` and ``TEST`` (any case): ``corpus_dir`` or its ``TIMIT``/``data`` subfolder."""
    corpus_dir = Path(corpus_dir)
    if corpus_dir.is_dir():
        for candidate in (corpus_dir, child_ignoring_case(corpus_dir, "timit"), child_ignoring_case(corpus_dir, "data")):
            if candidate is not None and candidate.is_dir() and all(_has_folder(candidate, part) for part in PARTS):
                return candidate
    raise CorpusError(f"no TIMIT corpus in {corpus_dir} (no TRAIN and TEST folders). "
                      + HOW_TO_GET.format(dir=corpus_dir))


def _has_folder(folder: Path, name: str) -> bool:
    child = child_ignoring_case(folder, name)
    return child is not None and child.is_dir()


def scan_part(part_dir: Path, skips: SkipLog, *, include_sa: bool, progress: bool = True, nj: int = 1,
              cmd: str | None = None, work_dir: Path | None = None) -> list[Utterance]:
    """Every readable sentence of ``TRAIN`` or ``TEST``; odd names, empty and non-audio files are skipped.

    ``nj`` jobs through ``cmd`` read the headers when asked (see :func:`local.corpus.audio_durations`).
    """
    candidates: list[tuple[str, str, Path]] = []
    seen: dict[tuple[str, str], Path] = {}
    for dialect_dir in sorted(part_dir.iterdir()):
        if not (dialect_dir.is_dir() and _DIALECT.match(dialect_dir.name)):
            skips.skip(dialect_dir, "not a dialect-region folder (DR1 to DR8)")
            continue
        for speaker_dir in sorted(dialect_dir.iterdir()):
            if not (speaker_dir.is_dir() and _SPEAKER.match(speaker_dir.name)):
                skips.skip(speaker_dir, "not a speaker folder (like FCJF0)")
                continue
            for path in sorted(speaker_dir.iterdir()):
                match = _SENTENCE.match(path.name)
                if match:
                    sentence = match.group(1).upper()
                    if (speaker_dir.name.upper(), sentence) in seen:
                        skips.skip(path, f"{seen[speaker_dir.name.upper(), sentence].name} is the same sentence "
                                         "in another case; remove one")
                        continue
                    seen[speaker_dir.name.upper(), sentence] = path
                    if include_sa or not sentence.startswith("SA"):
                        candidates.append((speaker_dir.name.upper(), sentence, path))
                elif not _ANNOTATION.match(path.name):
                    skips.skip(path, "not a TIMIT sentence file (like SI1027.WAV)")
    utterances = []
    durations = audio_durations([path for _, _, path in candidates], nj=nj, cmd=cmd, work_dir=work_dir,
                                progress=progress, desc=f"reading {part_dir.name}")
    for (speaker, sentence, path), (duration, problem) in zip(candidates, durations):
        if problem:
            skips.skip(path, problem)
            continue
        utt = f"{speaker}-{sentence}"
        utterances.append(whole_file(utt, speaker, path, speaker, duration))
    return utterances


def read_timit(corpus_dir: Path, *, include_sa: bool = False, progress: bool = True, nj: int = 1,
               cmd: str | None = None, work_dir: Path | None = None) -> dict[str, list[Utterance]]:
    """``{"train": [...], "test": [...]}``: the usable sentences of each part.

    ``nj``, ``cmd`` and ``work_dir`` are for the header reads (see :func:`scan_part`).

    Raises CorpusError when the corpus is not there (saying how to get it), when
    a speaker appears twice, or when a part has no usable sentence.
    """
    root = find_timit_root(corpus_dir)
    skips = SkipLog()
    parts = {part: scan_part(child_ignoring_case(root, part), skips, include_sa=include_sa, progress=progress,
                             nj=nj, cmd=cmd, work_dir=work_dir)
             for part in PARTS}
    skips.summary()
    folders: dict[str, Path] = {}
    for part, utts in parts.items():
        for utt in utts:
            folder = Path(utt.source).parent
            if folders.setdefault(utt.speaker, folder) != folder:
                raise CorpusError(f"speaker {utt.speaker} is in both {folders[utt.speaker]} and {folder}; "
                                  "a TIMIT speaker has one folder: remove the copy")
        if not utts:
            raise CorpusError(f"no usable TIMIT sentence in {root}/{part.upper()}. " + HOW_TO_GET.format(dir=root))
        logger.info("TIMIT %s: %d sentences of %d speakers", part, len(utts), len({u.speaker for u in utts}))
    return parts


def prepare(corpus_dir: str | Path, data_dir: str | Path, *, include_sa: bool, num_train_sentences: int = 5,
            num_test_sentences: int = 3, max_targets_per_speaker: int | None = 500, seed: int,
            progress: bool = True, nj: int = 1, cmd: str | None = None) -> dict[str, DataDirSummary]:
    """Write ``train``, ``ident_test`` and ``test`` (with ``trials``) under ``data_dir``; see the module docstring.

    A training speaker with fewer than ``num_train_sentences`` + 1 usable
    sentences is left out of identification with a warning. ``nj`` jobs through job
    command ``cmd`` read the audio headers (see :func:`local.corpus.audio_durations`).
    Returns the summary of each data dir.
    """
    parts = read_timit(Path(corpus_dir), include_sa=include_sa, progress=progress, nj=nj, cmd=cmd,
                       work_dir=Path(data_dir))
    train, ident, left_out = [], [], []
    for speaker, utts in by_speaker(parts["train"]).items():
        split = split_by_count(utts, seed, num_train=num_train_sentences, num_held_out=num_test_sentences)
        if split is None:
            left_out.append(f"{speaker} ({len(utts)})")
            continue
        train += split[0]
        ident += split[1]
    if left_out:
        logger.warning("%d training speakers have fewer than %d usable sentences and are left out of "
                       "identification: %s", len(left_out), num_train_sentences + 1, ", ".join(left_out[:10]))
    if not train:
        raise CorpusError(f"no TIMIT training speaker has {num_train_sentences + 1} usable sentences")
    trials = make_trials(parts["test"], seed, max_targets_per_speaker=max_targets_per_speaker)
    genders = {u.speaker: u.speaker[0].lower() for part in parts.values() for u in part}
    extra = {"spk2gender": genders}
    return write_data_dirs(data_dir, {"train": DataSet(train, extra=extra), "ident_test": DataSet(ident, extra=extra),
                                      "test": DataSet(parts["test"], trials, extra)})


@click.command("timit", context_settings=COMMAND_SETTINGS)
@prep_options(corpus_help="Folder holding TRAIN/ and TEST/ (LDC93S1; any case).", max_targets_per_speaker=500,
              jobs=True)
@required_switch("include-sa", "Keep the two SA sentences (the same text for every speaker).")
@click.option("--train-sentences", default=5, show_default=True,
              help="Sentences per training speaker for training (identification protocol).")
@click.option("--test-sentences", default=3, show_default=True,
              help="Held-out sentences per training speaker for identification.")
def command(corpus_dir, data_dir, include_sa, train_sentences, test_sentences, max_targets_per_speaker, seed, nj,
            cmd) -> None:
    """TIMIT: write train, ident_test and test (with trials)."""
    with prep_errors():
        prepare(corpus_dir, data_dir, include_sa=include_sa, num_train_sentences=train_sentences,
                num_test_sentences=test_sentences, max_targets_per_speaker=max_targets_per_speaker or None,
                seed=seed, nj=nj, cmd=cmd)
