"""LibriSpeech (openslr.org/12) as data dirs for verification and closed-set identification.

The corpus as distributed::

    <corpus-dir>/LibriSpeech/SPEAKERS.TXT                  ID | SEX | SUBSET | MINUTES | NAME
    <corpus-dir>/LibriSpeech/<subset>/<spk>/<chapter>/<spk>-<chapter>-<utt>.flac

(``<corpus-dir>/<subset>/...`` works too). Any list of subsets is read. Each
file is one utterance, id ``<spk>-<chapter>-<utt>`` (speaker first, as the
data-dir contract wants); the chapter is its recording session.

:func:`prepare` writes three data dirs:

- ``test``: the held-out speakers, every utterance, and ``trials`` (balanced,
  deterministic; see :func:`local.trials.make_trials`). The held-out speakers
  are those of the test subsets (``test-clean``, ``test-other`` when listed),
  then more drawn at random (speakers with two or more utterances first) until
  there are ``num_test_speakers``, then every speaker too short for the
  identification split (below), who can still serve verification;
- ``train``: the other speakers' first ``train_seconds_per_speaker`` seconds
  (SincNet's protocol: the same amount of training speech per speaker);
- ``ident_test``: the rest of those speakers' speech, for closed-set identification.

With ``segment_length`` every file is cut into fixed-length segments first (a
``segments`` file; see :func:`local.corpus.segment_times`), so corpora with a few
long utterances per speaker (the 251-speaker excerpt in ``../shared/data`` has
one each) give several utterances per speaker: trials then pair non-overlapping
segments of one recording, which is same-session verification (easier than
cross-session), and identification tests on other segments of the recordings
that trained.

``--download`` fetches and extracts the subsets' archives first (see :func:`download_subsets`).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import click

from local.cli import COMMAND_SETTINGS, prep_errors, prep_options, required_switch, words
from local.corpus import (
    CorpusError,
    SkipLog,
    Utterance,
    audio_durations,
    by_speaker,
    cut_into_segments,
    whole_file,
)
from local.datadirs import DataSet, write_data_dirs
from local.download import RemoteFile, fetch_and_extract, on_mirrors
from local.splits import draw, split_by_seconds
from local.trials import make_trials
from spk.data import DataDirSummary

logger = logging.getLogger("local.librispeech")

SUBSETS = ("dev-clean", "dev-other", "test-clean", "test-other", "train-clean-100", "train-clean-360",
           "train-other-500")
OPENSLR_URLS = ("https://www.openslr.org/resources/12", "https://us.openslr.org/resources/12",
                "https://openslr.elda.org/resources/12")
# As published in https://www.openslr.org/resources/12/md5sum.txt
ARCHIVE_MD5 = {
    "dev-clean": "42e2234ba48799c1f50f24a7926300a1",
    "dev-other": "c8d0bcc9cca99d4f8b62fcc847357931",
    "test-clean": "32fa31d27d2e1cad72775fee3f4849a9",
    "test-other": "fb5a50374b501bb3bac4815ee91d3135",
    "train-clean-100": "2a93770f6d5c6c964bc36631d331a522",
    "train-clean-360": "c0e676e450a7ff2f54aeade5171606fa",
    "train-other-500": "d1a0fd59409feb2c614ce4d30c387708",
}
_AUDIO_NAME = re.compile(r"^(\d+)-(\d+)-(\d+)\.flac$", re.IGNORECASE)
_TRANSCRIPT_NAME = re.compile(r"^\d+-\d+\.trans\.txt$")


def find_subset_dir(corpus_dir: Path, subset: str) -> Path:
    """``<corpus-dir>/LibriSpeech/<subset>`` (or ``<corpus-dir>/<subset>``); CorpusError saying how to get it."""
    candidates = [Path(corpus_dir) / "LibriSpeech" / subset, Path(corpus_dir) / subset]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    raise CorpusError(
        f"LibriSpeech subset {subset!r} is not in {corpus_dir} (looked for {candidates[0]} and {candidates[1]}). "
        f"Download it with --download, or get {OPENSLR_URLS[0]}/{subset}.tar.gz (https://www.openslr.org/12) "
        f"and extract it in {corpus_dir}")


def read_speakers_txt(path: Path) -> dict[str, tuple[str, str]]:
    """``SPEAKERS.TXT``: speaker -> (gender ``m``/``f``, subset). Malformed lines are warned about and skipped."""
    speakers = {}
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith(";"):
            continue
        fields = [field.strip() for field in line.split("|", 4)]  # names may hold '|'
        if len(fields) < 3 or not fields[0].isdigit() or fields[1].upper() not in ("M", "F"):
            logger.warning("%s:%d: not `ID | SEX | SUBSET | MINUTES | NAME`; line ignored", path, number)
            continue
        speakers[fields[0]] = (fields[1].lower(), fields[2])
    return speakers


def scan_subset(subset_dir: Path, skips: SkipLog, *, progress: bool = True, nj: int = 1, cmd: str | None = None,
                work_dir: Path | None = None) -> list[Utterance]:
    """Every readable ``<spk>/<chapter>/<spk>-<chapter>-<utt>.flac`` of a subset, as whole-file utterances.

    Files that do not fit the layout, are empty or are not audio are skipped
    (named in a warning); transcripts (``*.trans.txt``) are ignored. ``nj`` jobs through
    ``cmd`` read the headers when asked (see :func:`local.corpus.audio_durations`).
    """
    candidates = []
    for spk_dir in sorted(subset_dir.iterdir()):
        if not (spk_dir.is_dir() and spk_dir.name.isdigit()):
            skips.skip(spk_dir, "not a speaker folder (LibriSpeech speaker folders are numbers)")
            continue
        for chapter_dir in sorted(spk_dir.iterdir()):
            if not (chapter_dir.is_dir() and chapter_dir.name.isdigit()):
                skips.skip(chapter_dir, "not a chapter folder (LibriSpeech chapter folders are numbers)")
                continue
            for path in sorted(chapter_dir.iterdir()):
                match = _AUDIO_NAME.match(path.name)
                if match and match.group(1, 2) == (spk_dir.name, chapter_dir.name):
                    candidates.append(path)
                elif not _TRANSCRIPT_NAME.match(path.name):
                    skips.skip(path, f"not a LibriSpeech audio file ({spk_dir.name}-{chapter_dir.name}-NNNN.flac)")
    utterances = []
    durations = audio_durations(candidates, nj=nj, cmd=cmd, work_dir=work_dir, progress=progress,
                                desc=f"reading {subset_dir.name}")
    for path, (duration, problem) in zip(candidates, durations):
        if problem:
            skips.skip(path, problem)
            continue
        utt = path.name[: -len(".flac")]
        speaker, chapter, _ = utt.split("-")
        utterances.append(whole_file(utt, speaker, path, f"{speaker}-{chapter}", duration))
    return utterances


def read_corpus(corpus_dir: Path, subsets: tuple[str, ...], *, progress: bool = True, nj: int = 1,
                cmd: str | None = None,
                work_dir: Path | None = None) -> tuple[list[Utterance], dict[str, str], dict[str, str]]:
    """The utterances of ``subsets``, each speaker's subset, and the genders ``SPEAKERS.TXT`` gives.

    ``nj``, ``cmd`` and ``work_dir`` are for the header reads (see :func:`scan_subset`).
    """
    skips = SkipLog()
    directories = {subset: find_subset_dir(corpus_dir, subset) for subset in subsets}
    genders = {}
    for speakers_txt in sorted({directory.parent / "SPEAKERS.TXT" for directory in directories.values()}):
        if speakers_txt.is_file():
            genders.update({spk: gender for spk, (gender, _) in read_speakers_txt(speakers_txt).items()})
        else:
            logger.warning("%s is missing: speakers' genders are unknown (spk2gender is not written)", speakers_txt)
    utterances, subset_of = [], {}
    for subset, directory in directories.items():
        found = scan_subset(directory, skips, progress=progress, nj=nj, cmd=cmd, work_dir=work_dir)
        for utt in found:
            if subset_of.setdefault(utt.speaker, subset) != subset:
                raise CorpusError(f"speaker {utt.speaker} is in both {subset_of[utt.speaker]} and {subset}; "
                                  "LibriSpeech speakers belong to one subset: check the corpus folders")
        logger.info("%s: %d utterances of %d speakers", directory, len(found), len({u.speaker for u in found}))
        utterances += found
    skips.summary()
    if not utterances:
        raise CorpusError(f"no readable LibriSpeech audio in {corpus_dir} for subsets {', '.join(subsets)}")
    return utterances, subset_of, genders


def segment_all(utterances: list[Utterance], length: float, min_length: float) -> list[Utterance]:
    """Every utterance cut into segments; files shorter than ``min_length`` are left out with a warning."""
    skips = SkipLog("utterances")
    segments = []
    for utt in utterances:
        pieces = cut_into_segments(utt, length, min_length)
        if not pieces:
            skips.skip(utt.source, f"{utt.recording_duration:.2f} s is shorter than the minimum segment "
                       f"length {min_length} s")
        segments += pieces
    skips.summary()
    return segments


def plan_sets(utterances: list[Utterance], subset_of: dict[str, str], *, test_subsets: tuple[str, ...],
              num_test_speakers: int, train_seconds_per_speaker: float, seed: int) -> dict[str, list[Utterance]]:
    """Split utterances into ``train``, ``ident_test`` and ``test`` as the module docstring says.

    With ``train_seconds_per_speaker`` <= 0 there is no identification split:
    ``train`` has all of the training speakers' speech and ``ident_test`` is absent.
    """
    speakers = by_speaker(utterances)
    test = {s for s in speakers if subset_of[s] in test_subsets}
    need = num_test_speakers - len(test)
    if need > 0:
        others = [s for s in speakers if s not in test]
        several = [s for s in others if len(speakers[s]) >= 2]  # they give target trials
        pool = several if len(several) >= need else others
        if need > len(pool) or need >= len(others):
            raise CorpusError(f"--num-test-speakers {num_test_speakers}: there are only {len(speakers)} speakers "
                              f"({len(test)} in test subsets); lower it so that some are left to train")
        test.update(draw(pool, need, seed, "test-speakers"))
    sets: dict[str, list[Utterance]] = {"train": [], "ident_test": [], "test": []}
    too_short = []
    for speaker in (s for s in speakers if s not in test):
        if train_seconds_per_speaker <= 0:
            sets["train"] += speakers[speaker]
            continue
        split = split_by_seconds(speakers[speaker], train_seconds_per_speaker, seed)
        if split is None:
            too_short.append(speaker)
            continue
        sets["train"] += split[0]
        sets["ident_test"] += split[1]
    if too_short:
        logger.warning("%d speakers have too little speech for %g s of training plus a held-out utterance "
                       "(e.g. %s); they join the test speakers (verification only)", len(too_short),
                       train_seconds_per_speaker, ", ".join(too_short[:5]))
        test.update(too_short)
    sets["test"] = [u for s in sorted(test) for u in speakers[s]]
    if not sets["train"]:
        raise CorpusError("no training speaker is left: lower --num-test-speakers or --train-seconds-per-speaker, "
                          "or add subsets")
    if train_seconds_per_speaker <= 0:
        del sets["ident_test"]
    return sets


def prepare(corpus_dir: str | Path, data_dir: str | Path, *, subsets: tuple[str, ...],
            test_subsets: tuple[str, ...] | None = None, segment_length: float, min_segment_length: float,
            num_test_speakers: int, train_seconds_per_speaker: float, max_targets_per_speaker: int | None = 500,
            seed: int, progress: bool = True, nj: int = 1, cmd: str | None = None) -> dict[str, DataDirSummary]:
    """Write ``train``, ``ident_test`` and ``test`` (with ``trials``) under ``data_dir``; see the module docstring.

    ``test_subsets`` default to the ``test-*`` subsets among ``subsets``.
    ``segment_length`` 0 keeps whole files. ``nj`` jobs through job command ``cmd`` read the
    audio headers (see :func:`local.corpus.audio_durations`). Returns the summary of each data dir.
    """
    corpus_dir = Path(corpus_dir)
    if segment_length > 0 and not 0 < min_segment_length <= segment_length:
        raise CorpusError(f"--min-segment-length {min_segment_length} must be above 0 and at most "
                          f"--segment-length {segment_length}")
    if test_subsets is None:
        test_subsets = tuple(s for s in subsets if s.startswith("test-"))
    unknown = [s for s in test_subsets if s not in subsets]
    if unknown:
        raise CorpusError(f"--test-subsets {' '.join(unknown)} not among --subsets {' '.join(subsets)}")
    utterances, subset_of, genders = read_corpus(corpus_dir, subsets, progress=progress, nj=nj, cmd=cmd,
                                                 work_dir=Path(data_dir))
    if segment_length > 0:
        utterances = segment_all(utterances, segment_length, min_segment_length)
        logger.info("cut into %d segments of %g s (a last piece shorter than %g s joins the one before)",
                    len(utterances), segment_length, min_segment_length)
    sets = plan_sets(utterances, subset_of, test_subsets=test_subsets, num_test_speakers=num_test_speakers,
                     train_seconds_per_speaker=train_seconds_per_speaker, seed=seed)
    trials = make_trials(sets["test"], seed, max_targets_per_speaker=max_targets_per_speaker)
    extra = {"spk2gender": genders} if genders else {}
    return write_data_dirs(data_dir, {name: DataSet(utts, trials if name == "test" else None, extra)
                                      for name, utts in sets.items()})


def archive(subset: str, *, base_urls: tuple[str, ...] = OPENSLR_URLS,
            md5: dict[str, str] | None = None) -> RemoteFile:
    """The :class:`RemoteFile` of a subset's ``.tar.gz``."""
    md5 = ARCHIVE_MD5 if md5 is None else md5
    if subset not in md5:
        raise CorpusError(f"no download for LibriSpeech subset {subset!r}; the subsets are {', '.join(SUBSETS)}")
    name = f"{subset}.tar.gz"
    return on_mirrors(name, base_urls, md5=md5[subset])


def download_subsets(subsets: tuple[str, ...], corpus_dir: str | Path, download_dir: str | Path | None = None, *,
             base_urls: tuple[str, ...] = OPENSLR_URLS, md5: dict[str, str] | None = None,
             **options) -> None:
    """Download and extract each subset into ``corpus_dir`` (giving ``corpus_dir/LibriSpeech/<subset>``).

    Skipped for a subset this tool has extracted completely before, and for one
    already in ``corpus_dir`` that it did not download (extracted by hand).
    Archives go to ``download_dir`` (default ``corpus_dir/downloads``) and are
    kept, so nothing is fetched twice. ``options`` go to :func:`download_file`.
    """
    corpus_dir = Path(corpus_dir)
    for subset in subsets:
        fetch_and_extract(archive(subset, base_urls=base_urls, md5=md5), corpus_dir, download_dir,
                          present=(corpus_dir / "LibriSpeech" / subset, corpus_dir / subset), **options)


@click.command("librispeech", context_settings=COMMAND_SETTINGS)
@prep_options(corpus_help="Folder holding LibriSpeech/<subset>/ (downloads are extracted here).",
              max_targets_per_speaker=500, jobs=True)
@click.option("--subsets", required=True, callback=words, help="Subsets to read, separated by spaces or commas.")
@click.option("--test-subsets", default=None, callback=words,
              help="Subsets whose speakers are held out for trials [default: the test-* ones of --subsets].")
@click.option("--segment-length", type=float, required=True,
              help="Cut files into segments of this many seconds (0: keep whole files).")
@click.option("--min-segment-length", type=float, required=True,
              help="A shorter last piece joins the segment before; shorter files are left out.")
@click.option("--num-test-speakers", type=int, required=True,
              help="At least this many speakers are kept out of training for the trials.")
@click.option("--train-seconds-per-speaker", type=float, required=True,
              help="Training speech per training speaker; the rest is held out for identification "
                   "(0: train on everything, no ident_test).")
@required_switch("download", "Download and extract the subsets from openslr.org first.")
@click.option("--download-dir", type=click.Path(file_okay=False), default=None,
              help="Where archives go [default: CORPUS_DIR/downloads].")
def command(corpus_dir, subsets, test_subsets, data_dir, segment_length, min_segment_length, num_test_speakers,
            train_seconds_per_speaker, max_targets_per_speaker, seed, download, download_dir, nj, cmd) -> None:
    """LibriSpeech: optionally download the subsets, then write train, ident_test and test (with trials)."""
    with prep_errors():
        if download:
            download_subsets(subsets, corpus_dir, download_dir)
        prepare(corpus_dir, data_dir, subsets=subsets, test_subsets=test_subsets or None,
                segment_length=segment_length, min_segment_length=min_segment_length,
                num_test_speakers=num_test_speakers, train_seconds_per_speaker=train_seconds_per_speaker,
                max_targets_per_speaker=max_targets_per_speaker or None, seed=seed, nj=nj, cmd=cmd)
