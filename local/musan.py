"""MUSAN (openslr.org/17) as augmentation data dirs: ``musan_noise``, ``musan_music``, ``musan_speech``.

The corpus as distributed (``musan.tar.gz`` unpacks to ``musan/``), 16 kHz wav::

    <corpus-dir>/musan/noise/{free-sound,sound-bible}/noise-free-sound-0000.wav ...
    <corpus-dir>/musan/music/{fma,fma-western-art,hd-classical,jamendo,rfm}/music-fma-0000.wav ...
    <corpus-dir>/musan/speech/{librivox,us-gov}/speech-librivox-0000.wav ...

with ``ANNOTATIONS`` (and ``LICENSE``/``README``) files beside the audio; ``<corpus-dir>``
may also be the ``musan`` folder itself. Each file is one recording, utterance and
speaker (id: its name without ``.wav``, already unique in MUSAN), as
``spk augment data`` wants its noise, music and babble sources, with ``utt2dur``.
Other files (not ``.wav``), empty or unreadable audio and repeated names are left
out with a warning naming them. ``music_vocals=False`` leaves out music that
``ANNOTATIONS`` marks as having vocals (Kaldi's ``make_musan.sh --use-vocals false``).

``--download`` fetches ``musan.tar.gz`` (11 GB; md5 checked) and extracts it first.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import click

from local.cli import COMMAND_SETTINGS, prep_errors, prep_options, words
from local.corpus import CorpusError, SkipLog, Utterance, audio_durations, whole_file
from local.datadirs import DataSet, write_data_dirs
from local.download import RemoteFile, fetch_and_extract, on_mirrors
from spk.data import DataDirSummary
from spk.data.formats import format_seconds

logger = logging.getLogger("local.musan")

PARTS = ("noise", "music", "speech")
OPENSLR_URLS = ("https://www.openslr.org/resources/17", "https://us.openslr.org/resources/17",
                "https://openslr.elda.org/resources/17")
ARCHIVE_NAME = "musan.tar.gz"
# As published by OpenSLR for resources/17 (the md5 WeSpeaker and PaddleSpeech check too).
ARCHIVE_MD5 = "0c472d4fc0c5141eca47ad1ffeb2a7df"
TEXT_FILES = {"ANNOTATIONS", "LICENSE", "README"}
_SPACE = re.compile(r"\s")


def find_musan_dir(corpus_dir: str | Path) -> Path:
    """``<corpus-dir>/musan``, or ``<corpus-dir>`` itself when it holds the parts; CorpusError saying how to get it."""
    corpus_dir = Path(corpus_dir)
    for candidate in (corpus_dir / "musan", corpus_dir):
        if any((candidate / part).is_dir() for part in PARTS):
            return candidate
    raise CorpusError(f"MUSAN is not in {corpus_dir} (looked for {corpus_dir / 'musan'}/{{noise,music,speech}}). "
                      f"Download it with --download, or get {OPENSLR_URLS[0]}/{ARCHIVE_NAME} "
                      f"(https://www.openslr.org/17) and extract it in {corpus_dir}")


def read_vocals(path: Path) -> dict[str, bool]:
    """A music ``ANNOTATIONS`` file: recording id -> whether it has vocals (the field that is ``Y`` or ``N``).

    MUSAN writes ``<id> <genres> <Y|N> <artist>`` or ``<id> <Y|N> <genres> <artist>``;
    lines with neither are warned about and ignored.
    """
    vocals = {}
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        flags = [field for field in fields[1:3] if field in ("Y", "N")]
        if not flags:
            logger.warning("%s:%d: no Y/N vocals field; line ignored", path, number)
            continue
        vocals[fields[0]] = flags[0] == "Y"
    return vocals


def scan_part(part_dir: Path, skips: SkipLog, *, progress: bool = True, nj: int = 1, cmd: str | None = None,
              work_dir: Path | None = None) -> list[Utterance]:
    """Every readable ``<source>/<id>.wav`` of one part (noise, music or speech), each its own speaker.

    ``nj`` jobs through ``cmd`` read the headers when asked (see :func:`local.corpus.audio_durations`).
    """
    candidates = []
    for source_dir in sorted(part_dir.iterdir()):
        if not source_dir.is_dir():
            if source_dir.name not in TEXT_FILES:
                skips.skip(source_dir, "not a source folder of MUSAN")
            continue
        for path in sorted(source_dir.iterdir()):
            if path.name in TEXT_FILES:
                continue
            if path.suffix.lower() != ".wav" or not path.is_file():
                skips.skip(path, "not a .wav file")
            elif _SPACE.search(path.stem) or not path.stem:
                skips.skip(path, "the name has spaces (ids may not)")
            else:
                candidates.append(path)
    utterances, first = [], {}
    durations = audio_durations(candidates, nj=nj, cmd=cmd, work_dir=work_dir, progress=progress,
                                desc=f"reading {part_dir.name}")
    for path, (duration, problem) in zip(candidates, durations):
        if problem:
            skips.skip(path, problem)
            continue
        utt = path.stem
        if utt in first:
            skips.skip(path, f"another file has this name ({first[utt]})")
            continue
        first[utt] = path
        utterances.append(whole_file(utt, utt, path, path.parent.name, duration))
    return utterances


def prepare(corpus_dir: str | Path, data_dir: str | Path, *, parts: tuple[str, ...] = PARTS,
            music_vocals: bool = True, progress: bool = True, nj: int = 1,
            cmd: str | None = None) -> dict[str, DataDirSummary]:
    """Write ``musan_<part>`` for each of ``parts`` under ``data_dir`` (all or nothing); see the module docstring.

    ``nj`` jobs through job command ``cmd`` read the audio headers (see :func:`local.corpus.audio_durations`).
    """
    unknown = [part for part in parts if part not in PARTS]
    if unknown or not parts:
        raise CorpusError(f"--parts {' '.join(parts)}: choose from {' '.join(PARTS)}")
    root = find_musan_dir(corpus_dir)
    sets = {}
    for part in parts:
        part_dir = root / part
        if not part_dir.is_dir():
            raise CorpusError(f"{part_dir} is missing: MUSAN is incomplete. Extract {ARCHIVE_NAME} again "
                              "(or leave this part out with --parts)")
        skips = SkipLog()
        utterances = scan_part(part_dir, skips, progress=progress, nj=nj, cmd=cmd, work_dir=Path(data_dir))
        if part == "music" and not music_vocals:
            utterances = _without_vocals(part_dir, utterances)
        skips.summary()
        if not utterances:
            raise CorpusError(f"{part_dir}: no readable .wav file; extract {ARCHIVE_NAME} again")
        logger.info("%s: %d recordings, %.1f hours", part_dir, len(utterances),
                    sum(u.duration for u in utterances) / 3600)
        sets[f"musan_{part}"] = DataSet(utterances, extra={"utt2dur": {u.utt: format_seconds(u.duration)
                                                                       for u in utterances}})
    return write_data_dirs(data_dir, sets)


def _without_vocals(part_dir: Path, utterances: list[Utterance]) -> list[Utterance]:
    vocals: dict[str, bool] = {}
    for listing in sorted(part_dir.glob("*/ANNOTATIONS")):
        vocals.update(read_vocals(listing))
    if not vocals:
        raise CorpusError(f"{part_dir}: no ANNOTATIONS file says which music has vocals; extract "
                          f"{ARCHIVE_NAME} again, or keep all music (leave out --no-music-vocals)")
    unknown = [u.utt for u in utterances if u.utt not in vocals]
    if unknown:
        logger.warning("%d music recordings are not in ANNOTATIONS (e.g. %s); kept", len(unknown), unknown[0])
    kept = [u for u in utterances if not vocals.get(u.utt, False)]
    logger.info("%s: left out %d recordings with vocals", part_dir, len(utterances) - len(kept))
    return kept


def archive(*, base_urls: tuple[str, ...] = OPENSLR_URLS, md5: str | None = ARCHIVE_MD5) -> RemoteFile:
    """The :class:`RemoteFile` of ``musan.tar.gz``."""
    return on_mirrors(ARCHIVE_NAME, base_urls, md5=md5)


def download_musan(corpus_dir: str | Path, download_dir: str | Path | None = None, *,
             base_urls: tuple[str, ...] = OPENSLR_URLS, md5: str | None = ARCHIVE_MD5, **options) -> None:
    """Download ``musan.tar.gz`` (resumable, md5 checked) into ``download_dir`` and extract it into ``corpus_dir``.

    Skipped when this tool extracted it before, and when ``corpus_dir/musan`` is
    already there without an archive of ours beside it (extracted by hand).
    ``download_dir`` defaults to ``corpus_dir/downloads``; ``options`` go to :func:`download_file`.
    """
    fetch_and_extract(archive(base_urls=base_urls, md5=md5), Path(corpus_dir), download_dir,
                      present=(Path(corpus_dir) / "musan",), **options)


@click.command("musan", context_settings=COMMAND_SETTINGS)
@prep_options(corpus_help="Folder holding musan/ (the download is extracted here).", seed=False, jobs=True)
@click.option("--parts", default="noise music speech", show_default=True, callback=words,
              help="Parts to prepare, separated by spaces or commas.")
@click.option("--music-vocals/--no-music-vocals", default=True, show_default=True,
              help="Keep music with vocals (ANNOTATIONS say which).")
@click.option("--download/--no-download", default=False, show_default=True,
              help="Download and extract musan.tar.gz (11 GB) from openslr.org first.")
@click.option("--download-dir", type=click.Path(file_okay=False), default=None,
              help="Where the archive goes [default: CORPUS_DIR/downloads].")
def command(corpus_dir, data_dir, parts, music_vocals, download, download_dir, nj, cmd) -> None:
    """MUSAN: optionally download, then write musan_noise, musan_music and musan_speech."""
    with prep_errors():
        if download:
            download_musan(corpus_dir, download_dir)
        prepare(corpus_dir, data_dir, parts=parts, music_vocals=music_vocals, nj=nj, cmd=cmd)
