"""VoxCeleb1 and VoxCeleb2 as data dirs, with the trial lists and identification split as distributed.

The corpora as distributed (``vox1_dev_wav.zip`` and ``vox1_test_wav.zip`` both
unzip to ``wav/``; ``vox2_dev_aac.zip`` to ``dev/aac/``)::

    <vox1-dir>/wav/<spk>/<video>/<nnnnn>.wav            (dev/wav/ and test/wav/ are read too)
    <vox2-dir>/dev/aac/<spk>/<video>/<nnnnn>.m4a        (or <vox2-dir>/aac/)
    <meta-dir>/veri_test2.txt, list_test_all2.txt, list_test_hard2.txt, veri_test.txt, iden_split.txt

Utterance ids come from the paths: ``id10270/x6uYqmx31kE/00001.wav`` is
``id10270-x6uYqmx31kE-00001`` (speaker first); the video is the recording session.
m4a files are decoded through ffmpeg in wav.scp
(``ffmpeg -nostdin -loglevel error -i X -f wav -ac 1 -ar 16000 - |``).

:func:`prepare` writes:

- one data dir per trial list (:data:`TRIAL_LISTS`: ``vox1_o`` is Vox1-O cleaned,
  ``vox1_e`` Vox1-E, ``vox1_h`` Vox1-H, ``vox1_o_orig`` the original Vox1-O),
  with the list's files and its lines as Kaldi ``trials`` (``1`` target, ``0`` non-target);
- ``train`` from ``vox2_dev`` (every VoxCeleb2 dev speaker; the usual protocol)
  and/or ``vox1_dev`` (the 1,211 VoxCeleb1 speakers outside the Vox1-O test set).
  Speakers of the chosen trial lists are removed from it: Vox1-E and Vox1-H use
  all 1,251 VoxCeleb1 speakers, so with them nothing of VoxCeleb1 can train;
- with ``iden``, ``iden_train``, ``iden_dev`` and ``iden_test`` from ``iden_split.txt``
  (``1`` train, ``2`` dev, ``3`` test; 1,251 speakers) for closed-set identification.

The trial lists and the split can be downloaded (:func:`download_meta`); the
audio is given out on request only: :data:`HOW_TO_GET` says how.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

import click

from local.cli import COMMAND_SETTINGS, prep_errors, prep_options, required_switch, words
from local.corpus import CorpusError, SkipLog, Utterance, audio_durations, file_problem, whole_file
from local.datadirs import DataSet, write_data_dirs
from local.download import DownloadError, RemoteFile, download_file, on_mirrors
from spk.data import DataDirSummary, Trial

logger = logging.getLogger("local.voxceleb")

HOW_TO_GET = (
    "VoxCeleb audio is given out on request: fill in the form linked from "
    "https://www.robots.ox.ac.uk/~vgg/data/voxceleb/ to get the download links, then unzip "
    "vox1_dev_wav.zip and vox1_test_wav.zip into VOX1_DIR (giving VOX1_DIR/wav/id10001/...) and "
    "vox2_dev_aac.zip into VOX2_DIR (giving VOX2_DIR/dev/aac/id00012/...)")
TRIAL_LISTS = {
    "vox1_o": "veri_test2.txt",       # Vox1-O, cleaned
    "vox1_e": "list_test_all2.txt",   # Vox1-E, cleaned
    "vox1_h": "list_test_hard2.txt",  # Vox1-H, cleaned
    "vox1_o_orig": "veri_test.txt",   # Vox1-O as first published
}
IDEN_SPLIT = "iden_split.txt"
IDEN_SETS = {"1": "iden_train", "2": "iden_dev", "3": "iden_test"}
META_URLS = ("https://mm.kaist.ac.kr/datasets/voxceleb/meta", "https://www.robots.ox.ac.uk/~vgg/data/voxceleb/meta")
# The VoxCeleb site publishes no checksums for its lists; these md5 sums are those other
# toolkits check the lists against (PaddleSpeech's voxceleb1 recipe, DrBenchmark).
META_MD5 = {
    "veri_test.txt": "29fc7cc1c5d59f0816dc15d6e8be60f7",
    "veri_test2.txt": "b73110731c9223c1461fe49cb48dddfc",
    "list_test_all2.txt": "a53e059deb562ffcfc092bf5d90d9f3a",
    "list_test_hard2.txt": "857790e09d579a68eb2e339a090343c8",
}
META_LINES = {IDEN_SPLIT: 153516}  # no known checksum: the line count is checked instead
# The 40 speakers of vox1_test_wav.zip (the Vox1-O test set); the other 1,211 are Vox1 dev.
VOX1_TEST_SPEAKERS = frozenset(f"id{number}" for number in range(10270, 10310))
FFMPEG_PIPE = "ffmpeg -nostdin -loglevel error -i {path} -f wav -ac 1 -ar 16000 - |"
TRAIN_SOURCES = ("vox1_dev", "vox2_dev")
_SPEAKER = re.compile(r"^id\d{5}$")
_FILE = re.compile(r"^\d{5}\.(wav|m4a)$")


def ids_from_path(relative: str) -> tuple[str, str, str]:
    """``<spk>/<video>/<nnnnn>.<ext>`` -> (utterance id, speaker, session); ValueError for another shape."""
    parts = relative.strip().split("/")
    if len(parts) != 3 or not _SPEAKER.match(parts[0]) or not _FILE.match(parts[2]) or not parts[1] \
            or any(c.isspace() for c in parts[1]):
        raise ValueError(f"{relative!r} is not <speaker>/<video>/<nnnnn>.wav")
    speaker, video, name = parts
    return f"{speaker}-{video}-{name.rsplit('.', 1)[0]}", speaker, f"{speaker}/{video}"


def audio_roots(corpus_dir: Path, folder: str, layouts: Iterable[str]) -> list[Path]:
    """The folders named ``folder`` under ``corpus_dir`` at each of ``layouts`` (``""``, ``"dev"``, ...) that exist."""
    return [root for root in (Path(corpus_dir) / layout / folder for layout in layouts) if root.is_dir()]


def scan_audio(roots: list[Path], extension: str, skips: SkipLog, *, progress: bool = True, nj: int = 1,
               cmd: str | None = None, work_dir: Path | None = None) -> dict[str, Utterance]:
    """``<spk>/<video>/<nnnnn>.<extension>`` under each root, by that relative path.

    wav files get their duration from the header (unreadable ones are skipped), read by
    ``nj`` jobs through job command ``cmd`` when asked (see :func:`local.corpus.audio_durations`,
    whose work folder goes into ``work_dir``); m4a files are only checked for being there
    and non-empty, and are read through an ffmpeg pipe. Other files are skipped with a warning.
    """
    from tqdm import tqdm

    found: list[tuple[str, Path]] = []
    for root in roots:
        for spk_dir in sorted(root.iterdir()):
            if not (spk_dir.is_dir() and _SPEAKER.match(spk_dir.name)):
                skips.skip(spk_dir, "not a VoxCeleb speaker folder (like id10001)")
                continue
            for video_dir in sorted(spk_dir.iterdir()):
                if not video_dir.is_dir():
                    skips.skip(video_dir, "not a video folder")
                    continue
                for path in sorted(video_dir.iterdir()):
                    relative = f"{spk_dir.name}/{video_dir.name}/{path.name}"
                    if path.suffix != f".{extension}" or not _FILE.match(path.name):
                        skips.skip(path, f"not a VoxCeleb audio file (like 00001.{extension})")
                    else:
                        found.append((relative, path))
    index: dict[str, Utterance] = {}
    desc = f"reading {extension} files"
    if extension == "wav":
        durations = audio_durations([path for _, path in found], nj=nj, cmd=cmd, work_dir=work_dir,
                                    progress=progress, desc=desc)
    else:
        durations = [(None, file_problem(path))
                     for _, path in tqdm(found, desc=desc, unit="file", disable=not progress)]
    for (relative, path), (duration, problem) in zip(found, durations):
        source = None if extension == "wav" else FFMPEG_PIPE.format(path=shlex.quote(os.path.abspath(path)))
        if problem:
            skips.skip(path, problem)
            continue
        if relative in index:
            skips.skip(path, f"the same file as {index[relative].source} (in two folders); the first is used")
            continue
        utt, speaker, session = ids_from_path(relative)
        index[relative] = whole_file(utt, speaker, path, session, duration, source=source)
    return index


def read_trial_list(path: Path) -> list[tuple[bool, str, str, int]]:
    """A distributed trial list: ``(target, enroll path, test path, line number)`` per line.

    Raises CorpusError naming the file and line of the first malformed line.
    """
    trials = []
    for number, line in enumerate(_read_lines(path), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 3 or fields[0] not in ("0", "1"):
            raise CorpusError(f"{path}:{number}: expected `<1|0> <spk>/<video>/<n>.wav <spk>/<video>/<n>.wav`, "
                              f"found {line.strip()!r}; download the list again (--download)")
        for relative in fields[1:]:
            _check_path(relative, path, number)
        trials.append((fields[0] == "1", fields[1], fields[2], number))
    return trials


def read_iden_split(path: Path) -> list[tuple[str, str, int]]:
    """``iden_split.txt``: ``(set number "1"|"2"|"3", path, line number)`` per line; CorpusError naming a bad line."""
    entries = []
    for number, line in enumerate(_read_lines(path), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or fields[0] not in IDEN_SETS:
            raise CorpusError(f"{path}:{number}: expected `<1|2|3> <spk>/<video>/<n>.wav`, found {line.strip()!r}")
        _check_path(fields[1], path, number)
        entries.append((fields[0], fields[1], number))
    return entries


def _read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise CorpusError(f"{path} is missing: download it with --download, or get it from "
                          f"{META_URLS[0]}/{path.name} and put it in {path.parent}")
    return path.read_text(encoding="utf-8").splitlines()


def _check_path(relative: str, path: Path, number: int) -> None:
    try:
        ids_from_path(relative)
    except ValueError as error:
        raise CorpusError(f"{path}:{number}: {error}") from None


def trial_set(name: str, path: Path, audio: dict[str, Utterance]) -> DataSet:
    """The data set of one distributed trial list; trials whose audio is missing are dropped with a warning."""
    skips = SkipLog("trials")
    utterances: dict[str, Utterance] = {}
    trials = []
    for target, enroll, test, number in read_trial_list(path):
        missing = [p for p in (enroll, test) if p not in audio]
        if missing:
            skips.skip(f"{path}:{number}", f"no audio for {' and '.join(missing)}")
            continue
        for relative in (enroll, test):
            utterances[relative] = audio[relative]
        trials.append(Trial(audio[enroll].utt, audio[test].utt, target))
    skips.summary()
    if not trials:
        raise CorpusError(f"no trial of {path} has its audio: is VOX1_DIR right? " + HOW_TO_GET)
    logger.info("%s (%s): %d trials (%d target) over %d files", name, path.name, len(trials),
                sum(t.target for t in trials), len(utterances))
    return DataSet(list(utterances.values()), trials)


def iden_sets(path: Path, audio: dict[str, Utterance]) -> dict[str, DataSet]:
    """``iden_train``, ``iden_dev`` and ``iden_test`` from ``iden_split.txt``; files without audio are skipped."""
    skips = SkipLog()
    sets: dict[str, list[Utterance]] = {name: [] for name in IDEN_SETS.values()}
    for number_set, relative, number in read_iden_split(path):
        if relative not in audio:
            skips.skip(f"{path}:{number}", f"no audio for {relative}")
            continue
        sets[IDEN_SETS[number_set]].append(audio[relative])
    skips.summary()
    empty = [name for name, utts in sets.items() if not utts]
    if empty:
        raise CorpusError(f"{path}: no audio for any file of {', '.join(empty)}: is VOX1_DIR right? " + HOW_TO_GET)
    return {name: DataSet(utts) for name, utts in sets.items()}


def _check_choices(chosen: tuple[str, ...], choices: Iterable[str], option: str) -> None:
    unknown = [name for name in chosen if name not in choices]
    if unknown:
        raise CorpusError(f"{option} {' '.join(unknown)}: choose from {', '.join(choices)}")


def training_set(train_on: tuple[str, ...], vox1: dict[str, Utterance], vox2: dict[str, Utterance],
                 test_speakers: set[str], *, keep_test_speakers: bool) -> DataSet:
    """``train`` from the chosen sources, without the trial lists' speakers unless ``keep_test_speakers``."""
    _check_choices(train_on, TRAIN_SOURCES, "--train-on")
    utts = []
    if "vox1_dev" in train_on:
        utts += [u for u in vox1.values() if u.speaker not in VOX1_TEST_SPEAKERS]
    if "vox2_dev" in train_on:
        utts += list(vox2.values())
    overlap = {u.speaker for u in utts} & test_speakers
    if overlap and keep_test_speakers:
        logger.warning("%d training speakers are also in the trial lists (--keep-test-speakers): the results "
                       "are not on unseen speakers", len(overlap))
    elif overlap:
        logger.warning("%d speakers of the trial lists are removed from training (Vox1-E/H use every "
                       "VoxCeleb1 speaker: train on vox2_dev to test on them)", len(overlap))
        utts = [u for u in utts if u.speaker not in overlap]
    if not utts:
        raise CorpusError(f"no training utterance is left from {' '.join(train_on)}: give the corpus folder "
                          "(--vox1-dir / --vox2-dir), or train on vox2_dev when testing on Vox1-E/H")
    return DataSet(utts)


def prepare(data_dir: str | Path, *, vox1_dir: str | Path | None = None, vox2_dir: str | Path | None = None,
            meta_dir: str | Path | None = None, trial_lists: tuple[str, ...], train_on: tuple[str, ...], iden: bool,
            keep_test_speakers: bool = False, progress: bool = True, nj: int = 1,
            cmd: str | None = None) -> dict[str, DataDirSummary]:
    """Write the data dirs the module docstring lists under ``data_dir``; returns their summaries.

    ``meta_dir`` holds the trial lists and ``iden_split.txt`` (default ``vox1_dir/meta``).
    ``nj`` jobs through job command ``cmd`` read the wav headers (see :func:`local.corpus.audio_durations`).
    """
    _check_choices(trial_lists, TRIAL_LISTS, "--trial-lists")
    needs_vox1 = bool(trial_lists) or iden or "vox1_dev" in train_on
    if needs_vox1 and vox1_dir is None:
        raise CorpusError("the trial lists, the identification split and vox1_dev need --vox1-dir")
    if "vox2_dev" in train_on and vox2_dir is None:
        raise CorpusError("training on vox2_dev needs --vox2-dir (or choose --train-on vox1_dev)")
    meta = Path(meta_dir) if meta_dir is not None else Path(vox1_dir or ".") / "meta"
    skips = SkipLog()
    jobs = {"progress": progress, "nj": nj, "cmd": cmd, "work_dir": Path(data_dir)}
    vox1 = _read_audio(vox1_dir, "wav", ("", "dev", "test"), skips, **jobs) if needs_vox1 else {}
    vox2 = _read_audio(vox2_dir, "aac", ("dev", ""), skips, **jobs) if "vox2_dev" in train_on else {}
    skips.summary()
    if vox2 and shutil.which("ffmpeg") is None:
        logger.warning("ffmpeg is not on PATH: VoxCeleb2's m4a files are read through it from stage 1 on; "
                       "install it (e.g. apt-get install ffmpeg)")
    sets = {name: trial_set(name, meta / TRIAL_LISTS[name], vox1) for name in trial_lists}
    if train_on:
        test_speakers = {u.speaker for dataset in sets.values() for u in dataset.utterances}
        sets["train"] = training_set(train_on, vox1, vox2, test_speakers, keep_test_speakers=keep_test_speakers)
    if iden:
        sets.update(iden_sets(meta / IDEN_SPLIT, vox1))
    if not sets:
        raise CorpusError("nothing to prepare: choose --trial-lists, --train-on and/or --iden")
    return write_data_dirs(data_dir, sets)


def _read_audio(corpus_dir: str | Path, folder: str, layouts: tuple[str, ...], skips: SkipLog,
                **scan_options) -> dict[str, Utterance]:
    roots = audio_roots(Path(corpus_dir), folder, layouts)
    if not roots:
        looked = ", ".join(str(Path(corpus_dir) / layout / folder) for layout in layouts)
        raise CorpusError(f"no VoxCeleb audio in {corpus_dir} (looked for {looked}). " + HOW_TO_GET)
    index = scan_audio(roots, "wav" if folder == "wav" else "m4a", skips, **scan_options)
    logger.info("%s: %d files of %d speakers", ", ".join(map(str, roots)), len(index),
                len({u.speaker for u in index.values()}))
    return index


def meta_file(name: str, *, base_urls: tuple[str, ...] = META_URLS, md5: dict[str, str] | None = None,
              lines: dict[str, int] | None = None) -> RemoteFile:
    """The :class:`RemoteFile` of a trial list or ``iden_split.txt`` (checked by md5, or by line count)."""
    md5 = META_MD5 if md5 is None else md5
    expected_lines = (META_LINES if lines is None else lines).get(name)
    return on_mirrors(name, base_urls, md5=md5.get(name), check=_line_count(expected_lines) if expected_lines else None)


def _line_count(expected: int) -> Callable[[Path], None]:
    """A :class:`RemoteFile` check: the file has ``expected`` non-blank lines."""
    def check(path: Path) -> None:
        count = sum(1 for line in path.read_bytes().splitlines() if line.strip())
        if count != expected:
            raise DownloadError(f"{path.name}: {count} lines downloaded, {expected} expected; "
                                "the download was removed: run again")
    return check


def download_meta(trial_lists: tuple[str, ...], meta_dir: str | Path, *, iden: bool = False,
                  base_urls: tuple[str, ...] = META_URLS, md5: dict[str, str] | None = None,
                  lines: dict[str, int] | None = None, **options) -> None:
    """Download the chosen trial lists (and ``iden_split.txt`` with ``iden``) into ``meta_dir``; present ones are kept."""
    _check_choices(trial_lists, TRIAL_LISTS, "--trial-lists")
    names = [TRIAL_LISTS[name] for name in trial_lists] + ([IDEN_SPLIT] if iden else [])
    for name in names:
        download_file(meta_file(name, base_urls=base_urls, md5=md5, lines=lines), meta_dir, **options)
    logger.info("VoxCeleb lists are in %s. The audio is not downloaded: %s", meta_dir, HOW_TO_GET)


@click.command("voxceleb", context_settings=COMMAND_SETTINGS)
@prep_options(seed=False, jobs=True)
@click.option("--vox1-dir", type=click.Path(file_okay=False), default=None,
              help="VoxCeleb1: holds wav/<spk>/<video>/<n>.wav (or dev/wav, test/wav).")
@click.option("--vox2-dir", type=click.Path(file_okay=False), default=None,
              help="VoxCeleb2: holds dev/aac/<spk>/<video>/<n>.m4a (or aac/).")
@click.option("--meta-dir", type=click.Path(file_okay=False), default=None,
              help="Trial lists and iden_split.txt [default: VOX1_DIR/meta].")
@click.option("--trial-lists", required=True, callback=words,
              help=f"Trial lists to prepare, from {', '.join(TRIAL_LISTS)} ('' for none).")
@click.option("--train-on", required=True, callback=words,
              help="Training data: vox2_dev, vox1_dev or both ('' for no train set).")
@required_switch("iden", "Also write iden_train, iden_dev, iden_test from iden_split.txt.")
@click.option("--keep-test-speakers/--no-keep-test-speakers", default=False, show_default=True,
              help="Keep the trial lists' speakers in training (not speaker-independent).")
@required_switch("download", "Download the trial lists (and iden_split.txt) first; the audio needs a request.")
def command(vox1_dir, vox2_dir, meta_dir, data_dir, trial_lists, train_on, iden, keep_test_speakers, download, nj,
            cmd) -> None:
    """VoxCeleb: optionally download the lists, then write the training set, one set per trial list and/or
    the identification split."""
    with prep_errors():
        if download:
            download_meta(trial_lists, meta_dir or Path(vox1_dir or ".") / "meta", iden=iden)
        prepare(data_dir, vox1_dir=vox1_dir, vox2_dir=vox2_dir, meta_dir=meta_dir, trial_lists=trial_lists,
                train_on=train_on, iden=iden, keep_test_speakers=keep_test_speakers, nj=nj, cmd=cmd)
