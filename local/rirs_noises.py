"""RIRS_NOISES (openslr.org/28) as augmentation data dirs: simulated and real RIRs, isotropic and point-source noises.

The corpus as distributed (``rirs_noises.zip`` unpacks to ``RIRS_NOISES/``), 16 kHz wav::

    RIRS_NOISES/simulated_rirs/{smallroom,mediumroom,largeroom}/rir_list
    RIRS_NOISES/simulated_rirs/smallroom/Room001/Room001-00001.wav ...
    RIRS_NOISES/real_rirs_isotropic_noises/{rir_list,noise_list,*.wav}
    RIRS_NOISES/pointsource_noises/{noise_list,*.wav}

The lists are Kaldi's (``reverberate_data_dir.py``) and, as in Kaldi, decide what
is used: one line per file, ``--rir-id <id> --room-id <room> ... <path>`` or
``--noise-id <id> --noise-type <type> ... <path>``, the path relative to the folder
holding ``RIRS_NOISES``. :func:`prepare` writes (each recording its own utterance and
speaker, with ``utt2dur``):

- ``rirs_smallroom``, ``rirs_mediumroom``, ``rirs_largeroom``: the simulated RIRs
  (Kaldi's voxceleb v2 recipe uses small and medium rooms);
- ``rirs_real``: the real RIRs (some are multi-channel: ``spk augment data`` reads
  channel 0 of a RIR, as Kaldi does);
- ``noises_isotropic``: the real isotropic noises; ``noises_pointsource``: the point-source noises.

Malformed list lines, listed files that are missing, empty or not audio are left
out with a warning naming them; wav files no list names are counted in a warning.
``<corpus-dir>`` is the folder holding ``RIRS_NOISES`` (or ``RIRS_NOISES`` itself).

``--download`` fetches ``rirs_noises.zip`` (1.3 GB; md5 checked) and extracts it first.
"""

from __future__ import annotations

import logging
from pathlib import Path, PurePosixPath

import click

from local.cli import COMMAND_SETTINGS, prep_errors, prep_options, words
from local.corpus import CorpusError, SkipLog, Utterance, audio_durations, whole_file
from local.datadirs import DataSet, write_data_dirs
from local.download import RemoteFile, extract_zip, fetch_and_extract, on_mirrors
from spk.data import DataDirSummary
from spk.data.formats import format_seconds

logger = logging.getLogger("local.rirs_noises")

OPENSLR_URLS = ("https://www.openslr.org/resources/28", "https://us.openslr.org/resources/28",
                "https://openslr.elda.org/resources/28")
ARCHIVE_NAME = "rirs_noises.zip"
# As published by OpenSLR in resources/28/checksum.md5 (the md5 WeSpeaker and PaddleSpeech check too).
ARCHIVE_MD5 = "e6f48e257286e05de56413b4779d8ffb"
ROOT = "RIRS_NOISES"
# data dir -> (list file under RIRS_NOISES, the option naming the id)
SETS = {
    "rirs_smallroom": ("simulated_rirs/smallroom/rir_list", "rir-id"),
    "rirs_mediumroom": ("simulated_rirs/mediumroom/rir_list", "rir-id"),
    "rirs_largeroom": ("simulated_rirs/largeroom/rir_list", "rir-id"),
    "rirs_real": ("real_rirs_isotropic_noises/rir_list", "rir-id"),
    "noises_isotropic": ("real_rirs_isotropic_noises/noise_list", "noise-id"),
    "noises_pointsource": ("pointsource_noises/noise_list", "noise-id"),
}


def find_root(corpus_dir: str | Path) -> Path:
    """``<corpus-dir>/RIRS_NOISES`` (or ``<corpus-dir>`` when it is that folder); CorpusError saying how to get it."""
    corpus_dir = Path(corpus_dir)
    for candidate in (corpus_dir / ROOT, corpus_dir):
        if (candidate / "simulated_rirs").is_dir() or (candidate / "pointsource_noises").is_dir():
            return candidate
    raise CorpusError(f"RIRS_NOISES is not in {corpus_dir} (looked for {corpus_dir / ROOT}/simulated_rirs). "
                      f"Download it with --download, or get {OPENSLR_URLS[0]}/{ARCHIVE_NAME} "
                      f"(https://www.openslr.org/28) and unzip it in {corpus_dir}")


def parse_list_line(line: str) -> tuple[dict[str, str], str]:
    """``--key value ... <path>`` -> ({key: value}, path); ValueError when it is not that shape."""
    options, paths = {}, []
    tokens = line.split()
    index = 0
    while index < len(tokens):
        token = tokens[index]
        if token.startswith("--"):
            if index + 1 >= len(tokens):
                raise ValueError(f"{token} has no value")
            options[token[2:]] = tokens[index + 1]
            index += 2
        else:
            paths.append(token)
            index += 1
    if len(paths) != 1:
        raise ValueError(f"expected one file path after the options, found {len(paths)}")
    return options, paths[0]


def _resolve(root: Path, list_path: Path, listed: str) -> Path:
    """A listed path: relative to the folder holding RIRS_NOISES, else to the list's folder (by name)."""
    relative = PurePosixPath(listed)
    candidates = []
    if relative.parts and relative.parts[0] == ROOT:
        candidates.append(root.parent / relative)
    candidates += [root / relative, list_path.parent / relative.name]
    return next((path for path in candidates if path.exists()), candidates[0])


def read_list(root: Path, name: str, id_key: str, skips: SkipLog, *, progress: bool = True, nj: int = 1,
              cmd: str | None = None, work_dir: Path | None = None) -> list[Utterance]:
    """The usable recordings of one list (see the module docstring), each its own utterance and speaker.

    ``nj`` jobs through ``cmd`` read the headers when asked (see :func:`local.corpus.audio_durations`).
    """
    list_path = root / name
    entries, seen = [], {}
    for number, line in enumerate(list_path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{list_path}:{number}"
        try:
            options, listed = parse_list_line(line)
        except ValueError as error:
            skips.skip(where, f"not `--{id_key} <id> ... <path>` ({error})")
            continue
        rec_id = options.get(id_key)
        if not rec_id:
            skips.skip(where, f"no --{id_key}")
            continue
        if rec_id in seen:
            skips.skip(where, f"--{id_key} {rec_id} is on line {seen[rec_id]} already")
            continue
        seen[rec_id] = number
        entries.append((rec_id, options.get("room-id") or options.get("room-linkage") or rec_id,
                        _resolve(root, list_path, listed), where))
    utterances = []
    durations = audio_durations([entry[2] for entry in entries], nj=nj, cmd=cmd, work_dir=work_dir,
                                progress=progress, desc=f"reading {name}")
    for (rec_id, session, path, where), (duration, problem) in zip(entries, durations):
        if problem:
            skips.skip(path, f"{problem} (listed in {where})")
            continue
        utterances.append(whole_file(rec_id, rec_id, path, session, duration))
    _warn_unlisted(list_path.parent, {Path(u.source).name for u in utterances}, name)
    return utterances


def _warn_unlisted(folder: Path, used: set[str], name: str) -> None:
    if name.startswith("real_rirs_isotropic_noises"):
        return  # that folder holds the files of two lists
    unlisted = [p for p in folder.rglob("*.wav") if p.name not in used]
    if unlisted:
        logger.warning("%d wav files under %s are not in %s (e.g. %s); left out, as Kaldi does", len(unlisted),
                       folder, name, unlisted[0])


def prepare(corpus_dir: str | Path, data_dir: str | Path, *, sets: tuple[str, ...] = tuple(SETS),
            progress: bool = True, nj: int = 1, cmd: str | None = None) -> dict[str, DataDirSummary]:
    """Write each of ``sets`` (names of :data:`SETS`) under ``data_dir``, all or nothing; see the module docstring.

    ``nj`` jobs through job command ``cmd`` read the audio headers (see :func:`local.corpus.audio_durations`).
    """
    unknown = [name for name in sets if name not in SETS]
    if unknown or not sets:
        raise CorpusError(f"--sets {' '.join(sets)}: choose from {' '.join(SETS)}")
    root = find_root(corpus_dir)
    datasets = {}
    for name in sets:
        list_name, id_key = SETS[name]
        if not (root / list_name).is_file():
            raise CorpusError(f"{root / list_name} is missing: RIRS_NOISES is incomplete. Unzip {ARCHIVE_NAME} "
                              "again (or leave this set out with --sets)")
        skips = SkipLog()
        utterances = read_list(root, list_name, id_key, skips, progress=progress, nj=nj, cmd=cmd,
                               work_dir=Path(data_dir))
        skips.summary()
        if not utterances:
            raise CorpusError(f"{root / list_name}: none of the listed files is usable audio; unzip "
                              f"{ARCHIVE_NAME} again")
        logger.info("%s: %d recordings from %s", name, len(utterances), root / list_name)
        datasets[name] = DataSet(utterances, extra={"utt2dur": {u.utt: format_seconds(u.duration)
                                                                for u in utterances}})
    return write_data_dirs(data_dir, datasets)


# --- download -------------------------------------------------------------------------------------


def archive(*, base_urls: tuple[str, ...] = OPENSLR_URLS, md5: str | None = ARCHIVE_MD5) -> RemoteFile:
    """The :class:`RemoteFile` of ``rirs_noises.zip``."""
    return on_mirrors(ARCHIVE_NAME, base_urls, md5=md5)


def download_rirs_noises(corpus_dir: str | Path, download_dir: str | Path | None = None, *,
                         base_urls: tuple[str, ...] = OPENSLR_URLS, md5: str | None = ARCHIVE_MD5,
                         **options) -> None:
    """Download ``rirs_noises.zip`` (resumable, md5 checked) into ``download_dir`` and unzip it into ``corpus_dir``.

    Skipped when this tool extracted it before, and when ``corpus_dir/RIRS_NOISES``
    is already there without an archive of ours beside it (unzipped by hand).
    ``download_dir`` defaults to ``corpus_dir/downloads``; ``options`` go to :func:`download_file`.
    """
    fetch_and_extract(archive(base_urls=base_urls, md5=md5), Path(corpus_dir), download_dir,
                      present=(Path(corpus_dir) / ROOT,), extract=extract_zip, **options)


@click.command("rirs_noises", context_settings=COMMAND_SETTINGS)
@prep_options(corpus_help="Folder holding RIRS_NOISES/ (the download is unzipped here).", seed=False,
              jobs=True)
@click.option("--sets", default=" ".join(SETS), show_default=True, callback=words,
              help="Data dirs to write, separated by spaces or commas.")
@click.option("--download/--no-download", default=False, show_default=True,
              help="Download and unzip rirs_noises.zip (1.3 GB) from openslr.org first.")
@click.option("--download-dir", type=click.Path(file_okay=False), default=None,
              help="Where the archive goes [default: CORPUS_DIR/downloads].")
def command(corpus_dir, data_dir, sets, download, download_dir, nj, cmd) -> None:
    """RIRS_NOISES: optionally download, then write one data dir per set of room impulse responses or noises."""
    with prep_errors():
        if download:
            download_rirs_noises(corpus_dir, download_dir)
        prepare(corpus_dir, data_dir, sets=sets, nj=nj, cmd=cmd)
