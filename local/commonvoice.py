"""Mozilla Common Voice as data dirs: speakers from ``client_id``, one or more languages.

The corpus as distributed (one folder per language in a release, e.g. ``cv-corpus-17.0-2024-03-15/``)::

    <corpus-dir>/<lang>/validated.tsv     client_id  path  sentence  up_votes  down_votes  age  gender ...
    <corpus-dir>/<lang>/clips/<path>      common_voice_<lang>_<n>.mp3

The ``client_id`` (a 128-hex-digit hash) is the speaker. Data dirs get a short,
stable speaker id instead, the first 12 hex digits of its sha256
(:func:`speaker_id`), and every data dir keeps the mapping in ``spk2client_id``.
Utterance ids are ``<speaker>-<clip name without .mp3>``; ``utt2lang`` gives
each utterance's language. mp3 is read by soundfile directly.

:func:`prepare` keeps speakers with at least ``min_utts_per_speaker`` clips
(optionally at most ``max_utts_per_speaker``, drawn at random), holds
``num_test_speakers`` of them out for ``test`` (with balanced ``trials``), and
of each other speaker holds ``ident_utts_per_speaker`` clips out for
``ident_test`` (closed-set identification); the rest is ``train``.
"""

from __future__ import annotations

import csv
import hashlib
import logging
from pathlib import Path

import click

from local.cli import COMMAND_SETTINGS, prep_errors, prep_options, words
from local.corpus import CorpusError, SkipLog, Utterance, by_speaker, file_problem, whole_file
from local.datadirs import DataSet, write_data_dirs
from local.splits import draw, split_by_count
from local.trials import make_trials
from spk.data import DataDirSummary

logger = logging.getLogger("local.commonvoice")

HOW_TO_GET = (
    "download the Common Voice dataset of each language from https://commonvoice.mozilla.org/datasets "
    "(free, after giving an e-mail address and accepting the terms) and extract it so that "
    "{dir}/<lang>/validated.tsv and {dir}/<lang>/clips/ exist; then pass that folder as --corpus-dir")
SPEAKER_ID_DIGITS = 12


def speaker_id(client_id: str) -> str:
    """The short stable speaker id of a ``client_id``: the first 12 hex digits of its sha256."""
    return hashlib.sha256(client_id.encode("utf-8")).hexdigest()[:SPEAKER_ID_DIGITS]


def read_validated(lang_dir: Path, skips: SkipLog) -> tuple[list[Utterance], dict[str, str]]:
    """The clips of ``<lang_dir>/validated.tsv`` that are there and not empty, and speaker id -> client_id.

    Rows with a wrong number of fields, no speaker, an odd clip name or a missing
    or empty clip are skipped (a warning names the line or the clip). Raises
    CorpusError when the file is missing or has no ``client_id``/``path`` columns.
    """
    tsv = lang_dir / "validated.tsv"
    if not tsv.is_file():
        raise CorpusError(f"{tsv} is missing: " + HOW_TO_GET.format(dir=lang_dir.parent))
    utterances, clients = [], {}
    seen: set[str] = set()
    with open(tsv, encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader, [])
        if "client_id" not in header or "path" not in header:
            raise CorpusError(f"{tsv}:1: the header has no client_id and path columns (found {header}); "
                              "is this a Common Voice validated.tsv?")
        client_col, path_col = header.index("client_id"), header.index("path")
        for number, row in enumerate(reader, start=2):
            clip = _usable_clip(row, header, client_col, path_col, seen, f"{tsv}:{number}", skips)
            if clip is None:
                continue
            client = row[client_col].strip()
            path = lang_dir / "clips" / clip
            problem = file_problem(path)
            if problem:
                skips.skip(path, problem)
                continue
            speaker = speaker_id(client)
            if clients.setdefault(speaker, client) != client:
                raise CorpusError(f"client ids {clients[speaker]} and {client} share the speaker id {speaker}; "
                                  "raise SPEAKER_ID_DIGITS in local/commonvoice.py")
            utt = f"{speaker}-{clip.rsplit('.', 1)[0]}"
            utterances.append(whole_file(utt, speaker, path, session=utt))
    logger.info("%s: %d usable clips of %d speakers", tsv, len(utterances), len(clients))
    return utterances, clients


def _usable_clip(row: list[str], header: list[str], client_col: int, path_col: int, seen: set[str], where: str,
                 skips: SkipLog) -> str | None:
    """The clip name of a ``validated.tsv`` row, or None (and a warning) when the row cannot be used."""
    if len(row) != len(header):
        skips.skip(where, f"{len(row)} fields where the header has {len(header)}")
        return None
    client, clip = row[client_col].strip(), row[path_col].strip()
    if not client or not clip or "/" in clip or clip.startswith(".") or any(c.isspace() for c in clip):
        skips.skip(where, f"no client_id or an odd clip name {clip!r}")
        return None
    if clip in seen:
        skips.skip(where, f"clip {clip} is listed again")
        return None
    seen.add(clip)
    return clip


def select_speakers(utterances: list[Utterance], *, min_utts: int, max_utts: int | None,
                    seed: int) -> dict[str, list[Utterance]]:
    """Speakers with at least ``min_utts`` clips, each cut to ``max_utts`` clips drawn at random when given."""
    speakers = by_speaker(utterances)
    kept = {s: utts for s, utts in speakers.items() if len(utts) >= min_utts}
    logger.info("%d of %d speakers have at least %d clips (%d clips); the others are left out",
                len(kept), len(speakers), min_utts, sum(map(len, kept.values())))
    if max_utts is not None:
        for speaker, utts in kept.items():
            if len(utts) > max_utts:
                chosen = set(draw([u.utt for u in utts], max_utts, seed, speaker))
                kept[speaker] = [u for u in utts if u.utt in chosen]
    return kept


def prepare(corpus_dir: str | Path, data_dir: str | Path, *, languages: tuple[str, ...], min_utts_per_speaker: int,
            max_utts_per_speaker: int | None, num_test_speakers: int, ident_utts_per_speaker: int,
            max_targets_per_speaker: int | None = 100, seed: int) -> dict[str, DataDirSummary]:
    """Write ``train``, ``ident_test`` (unless ``ident_utts_per_speaker`` is 0) and ``test`` (with ``trials``).

    See the module docstring. A training speaker with too few clips to hold some
    out keeps them all for training. Returns the summary of each data dir.
    """
    if not languages:
        raise CorpusError("--languages is empty: name at least one language folder (e.g. en)")
    corpus_dir = Path(corpus_dir)
    skips = SkipLog("clips and lines")
    utterances, clients, utt2lang = [], {}, {}
    for language in languages:
        lang_dir = corpus_dir / language
        if not lang_dir.is_dir():
            raise CorpusError(f"no Common Voice language folder {lang_dir}: " + HOW_TO_GET.format(dir=corpus_dir))
        found, found_clients = read_validated(lang_dir, skips)
        utterances += found
        clients.update(found_clients)
        utt2lang.update({u.utt: language for u in found})
    skips.summary()
    speakers = select_speakers(utterances, min_utts=max(2, min_utts_per_speaker), max_utts=max_utts_per_speaker,
                               seed=seed)
    if num_test_speakers > len(speakers) - 1:
        raise CorpusError(f"--num-test-speakers {num_test_speakers}: only {len(speakers)} speakers have "
                          f"{min_utts_per_speaker} clips or more; lower it (or --min-utts-per-speaker)")
    test = draw(list(speakers), num_test_speakers, seed, "test-speakers")
    train, ident, kept_whole = [], [], 0
    for speaker in sorted(set(speakers) - set(test)):
        split = split_by_count(speakers[speaker], seed, num_held_out=ident_utts_per_speaker) \
            if ident_utts_per_speaker > 0 else None
        if split is None:
            kept_whole += ident_utts_per_speaker > 0
            train += speakers[speaker]
            continue
        train += split[0]
        ident += split[1]
    if kept_whole:
        logger.warning("%d training speakers have too few clips to hold %d out for identification; all their "
                       "clips train", kept_whole, ident_utts_per_speaker)
    test_utts = [u for s in test for u in speakers[s]]
    extra = {"utt2lang": utt2lang, "spk2client_id": clients}
    sets = {"train": DataSet(train, extra=extra),
            "test": DataSet(test_utts, make_trials(test_utts, seed, max_targets_per_speaker=max_targets_per_speaker),
                            extra)}
    if ident:
        sets["ident_test"] = DataSet(ident, extra=extra)
    return write_data_dirs(data_dir, sets)


@click.command("commonvoice", context_settings=COMMAND_SETTINGS)
@prep_options(corpus_help="A Common Voice release folder, holding <lang>/validated.tsv and <lang>/clips/.",
              max_targets_per_speaker=100)
@click.option("--languages", required=True, callback=words,
              help="Language folders to read, separated by spaces or commas.")
@click.option("--min-utts-per-speaker", type=int, required=True, help="Leave out speakers with fewer clips.")
@click.option("--max-utts-per-speaker", type=int, required=True,
              help="Keep at most this many clips of a speaker, drawn at random (0: all).")
@click.option("--num-test-speakers", type=int, required=True, help="Speakers held out of training for the trials.")
@click.option("--ident-utts-per-speaker", type=int, required=True,
              help="Clips of each training speaker held out for identification (0: no ident_test).")
def command(corpus_dir, languages, data_dir, min_utts_per_speaker, max_utts_per_speaker, num_test_speakers,
            ident_utts_per_speaker, max_targets_per_speaker, seed) -> None:
    """Common Voice: write train, ident_test and test (with trials)."""
    with prep_errors():
        prepare(corpus_dir, data_dir, languages=languages, min_utts_per_speaker=min_utts_per_speaker,
                max_utts_per_speaker=max_utts_per_speaker or None, num_test_speakers=num_test_speakers,
                ident_utts_per_speaker=ident_utts_per_speaker,
                max_targets_per_speaker=max_targets_per_speaker or None, seed=seed)
