"""What every corpus preparation shares: utterances, checks of the audio files, fixed-length segments.

A corpus module (``local/librispeech.py``, ``local/timit.py``, ...) finds the
audio of its corpus, turns each file into an :class:`Utterance` (or several,
cut by :func:`cut_into_segments`), decides which go where, and hands the sets
to :func:`local.datadirs.write_data_dirs`.

Files that cannot be used (missing, empty, not audio, oddly named) are skipped
with a warning that names them, through a :class:`SkipLog`; a corpus that
cannot be used at all raises :class:`CorpusError` saying what to get and where
to put it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import soundfile as sf

__all__ = ["CorpusError", "SkipLog", "Utterance", "audio_duration", "audio_durations", "by_speaker",
           "cut_into_segments", "durations_job", "durations_work_dir", "file_problem", "segment_times", "whole_file"]

logger = logging.getLogger("local.corpus")

SKIPS_LOGGED = 20


class CorpusError(RuntimeError):
    """A corpus (or one of its metadata files) cannot be used; the message says what to do."""


@dataclass(frozen=True, slots=True)
class Utterance:
    """One utterance as it goes into a data dir.

    ``utt`` starts with ``speaker`` (the data-dir contract). ``recording`` is the
    wav.scp key and ``source`` its value (a path, or a command ending in ``|``).
    ``session`` names the recording session (a LibriSpeech chapter, a VoxCeleb
    video, ...), so trials can tell same-session pairs. ``start``/``end`` cut the
    utterance out of its recording (seconds; ``end`` None: the whole recording,
    no ``segments`` line needed). ``recording_duration`` is in seconds, or None
    when it is not known without decoding (pipes).
    """

    utt: str
    speaker: str
    recording: str
    source: str
    session: str
    start: float = 0.0
    end: float | None = None
    recording_duration: float | None = None

    @property
    def is_segment(self) -> bool:
        """Whether the utterance is a cut of its recording (and needs a ``segments`` line)."""
        return self.end is not None

    @property
    def duration(self) -> float | None:
        """Length in seconds, or None when unknown."""
        end = self.end if self.end is not None else self.recording_duration
        return None if end is None else end - self.start

    def overlaps(self, other: Utterance) -> bool:
        """Whether the two share audio: the same recording and overlapping times."""
        if self.recording != other.recording:
            return False
        inf = float("inf")
        return self.start < (other.end if other.end is not None else inf) and \
            other.start < (self.end if self.end is not None else inf)


def whole_file(utt: str, speaker: str, path: Path, session: str, duration: float | None = None, *,
               source: str | None = None) -> Utterance:
    """An utterance that is a whole audio file: its recording id is ``utt``, its source the absolute path
    (without resolving links), or ``source`` when given (e.g. a decoding pipe)."""
    return Utterance(utt=utt, speaker=speaker, recording=utt, source=source or os.path.abspath(path),
                     session=session, recording_duration=duration)


def by_speaker(utterances: Iterable[Utterance]) -> dict[str, list[Utterance]]:
    """Speaker -> utterances, speakers sorted, utterances by id."""
    groups: dict[str, list[Utterance]] = defaultdict(list)
    for utt in utterances:
        groups[utt.speaker].append(utt)
    return {speaker: sorted(groups[speaker], key=lambda u: u.utt) for speaker in sorted(groups)}


class SkipLog:
    """Files (or lines) a preparation leaves out, each with why; logged as warnings that name them.

    The first :data:`SKIPS_LOGGED` are logged one by one, then only counted;
    :meth:`summary` logs the total.
    """

    def __init__(self, what: str = "files") -> None:
        self.what = what
        self.skipped: list[tuple[str, str]] = []

    def skip(self, where: str | os.PathLike, reason: str) -> None:
        """Leave out ``where`` (a path, or ``path:line``) because of ``reason``."""
        self.skipped.append((str(where), reason))
        if len(self.skipped) <= SKIPS_LOGGED:
            logger.warning("skipped %s: %s", where, reason)
        elif len(self.skipped) == SKIPS_LOGGED + 1:
            logger.warning("more %s are skipped; only the count is logged from here on", self.what)

    def __len__(self) -> int:
        return len(self.skipped)

    def summary(self) -> None:
        """Log how many were skipped in all (nothing when none was)."""
        if self.skipped:
            logger.warning("skipped %d %s in all (see the warnings above)", len(self.skipped), self.what)


def file_problem(path: Path) -> str | None:
    """Why ``path`` cannot hold audio (missing, not a file, empty), or None."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return "file not found"
    except OSError as error:
        return f"cannot read it ({error.strerror})"
    if not path.is_file():
        return "not a regular file"
    if stat.st_size == 0:
        return "the file is empty (0 bytes): download or extract it again"
    return None


def audio_duration(path: Path) -> tuple[float | None, str | None]:
    """``(seconds, None)`` for an audio file soundfile reads, else ``(None, why not)``; reads the header only."""
    problem = file_problem(path)
    if problem:
        return None, problem
    try:
        info = sf.info(str(path))
    except (RuntimeError, TypeError, sf.LibsndfileError) as error:
        return None, f"not audio that soundfile can read ({error})"
    if info.frames <= 0 or info.samplerate <= 0:
        return None, "the audio has no samples"
    return info.frames / info.samplerate, None


# A job reads about 10,000 headers a second (warm cache) and costs about a second to start: fewer
# files than this per job are read faster by fewer jobs.
FILES_PER_JOB = 20_000


def audio_durations(paths: list[Path], *, nj: int = 1, cmd: str | None = None, work_dir: Path | None = None,
                    log_dir: Path | None = None, progress: bool = True,
                    desc: str = "reading files") -> list[tuple[float | None, str | None]]:
    """:func:`audio_duration` of each of ``paths``, in their order; read by ``nj`` parallel jobs if asked.

    With one job and the local job command (``cmd`` None or ``"local"``) the headers are
    read here, in a loop (``desc`` names its progress bar), and nothing is written. Else the
    reads run as a step of :mod:`spk.jobs` (task ``durations``) in ``<work_dir>/.durations-<hash>``,
    a folder named after the list of files (and the current folder, against which relative
    paths are read): the list is written there once, job ``J`` reads its contiguous share
    and writes ``durations.<J>.tsv``, and the folder is removed once every job ended well.
    After a failure it stays (with the jobs' logs, unless ``log_dir`` puts them elsewhere),
    so running the preparation again runs only the failed jobs. Raises
    :class:`~spk.jobs.JobsFailed` when a job fails.
    """
    from spk.jobs import ParallelStep, parse_job_command, run_step

    paths = list(paths)
    command = parse_job_command(cmd)
    worth = max(1, math.ceil(len(paths) / FILES_PER_JOB))
    if worth < nj:
        logger.info("%d file(s): %d job(s), not %d: a job reads about 10,000 headers a second, and starting one "
                    "takes a second", len(paths), worth, nj)
    nj = max(1, min(nj, worth))
    if not paths or (nj == 1 and command.is_local()):
        from tqdm import tqdm

        return [audio_duration(Path(path)) for path in tqdm(paths, desc=desc, unit="file", disable=not progress)]
    if work_dir is None:
        raise ValueError("audio_durations: reading the headers as jobs needs a work_dir (e.g. the data dir)")
    names = [str(path) for path in paths]
    bad = next((name for name in names if "\n" in name or "\r" in name), None)
    if bad is not None:
        raise CorpusError(f"{bad!r}: a file name with a line break; rename it")
    work = durations_work_dir(names, work_dir)
    work.mkdir(parents=True, exist_ok=True)
    listing = work / "files.txt"
    if not listing.is_file():  # written once: a rerun after a failure finds it
        tmp = listing.with_suffix(".tmp")
        with open(tmp, "w", encoding="utf-8", errors="surrogateescape", newline="\n") as handle:
            handle.writelines(name + "\n" for name in names)
        tmp.replace(listing)
    step = ParallelStep(name="durations", task="durations", num_jobs=nj, work_dir=work,
                        log_dir=Path(log_dir) if log_dir else work / "log",
                        args={"files": str(listing), "count": len(names)})
    started = time.monotonic()
    run_step(step, command)
    results: list[tuple[float | None, str | None] | None] = [None] * len(names)
    for job in range(1, nj + 1):
        for index, result in _read_durations(work / f"durations.{job}.tsv"):
            results[index] = result
    missing = sum(result is None for result in results)
    if missing:  # only a changed work folder can get here: leave it for a look
        raise CorpusError(f"{work}: the jobs' durations.*.tsv miss {missing} of {len(names)} files; "
                          f"remove {work} and run again")
    shutil.rmtree(work)
    logger.info("%s: %d headers read by %d jobs in %.1f s", desc, len(names), nj, time.monotonic() - started)
    return results


def durations_work_dir(paths: list[Path | str], work_dir: Path) -> Path:
    """The work folder of :func:`audio_durations` for ``paths``: ``<work_dir>/.durations-<hash>``.

    The hash is of the list (as given, in order) and of the current folder, so a rerun
    with the same files finds the folder a failed run left.
    """
    from spk.jobs import inputs_key

    return Path(work_dir).absolute() / f".durations-{inputs_key(os.getcwd(), [str(path) for path in paths])}"


def durations_job(args: dict, job: int, num_jobs: int) -> None:
    """Job ``job`` of :func:`audio_durations` (task ``durations``): its contiguous share of the files.

    Writes ``durations.<job>.tsv`` beside the file list, atomically, one line per file:
    its index in the list, its seconds (empty when not audio) and, JSON-quoted, what is
    wrong with it (``""`` when nothing is).
    """
    listing = Path(args["files"])
    with open(listing, encoding="utf-8", errors="surrogateescape", newline="\n") as handle:
        names = [line[:-1] for line in handle]
    if len(names) != args["count"]:
        raise CorpusError(f"{listing} lists {len(names)} files, not {args['count']}: remove its folder and run again")
    from spk.jobs import job_share

    share = job_share(len(names), job, num_jobs)
    first, last = share.start, share.stop
    started = time.monotonic()
    out = listing.with_name(f"durations.{job}.tsv")
    tmp = out.with_suffix(".tmp")
    problems, every = 0, max(1000, (last - first) // 10)  # the log shows how far a long job is
    with open(tmp, "w", encoding="utf-8", newline="\n") as handle:
        for index in range(first, last):
            seconds, problem = audio_duration(Path(names[index]))
            problems += problem is not None
            handle.write(f"{index}\t{'' if seconds is None else repr(seconds)}\t{json.dumps(problem or '')}\n")
            if (index - first + 1) % every == 0 and index + 1 < last:
                logger.info("job %d: %d of %d files read", job, index - first + 1, last - first)
    tmp.replace(out)
    logger.info("job %d: files %d to %d read in %.1f s (%d cannot be used)", job, first + 1, last,
                time.monotonic() - started, problems)


def _read_durations(path: Path) -> list[tuple[int, tuple[float | None, str | None]]]:
    """The lines of a ``durations.<J>.tsv``, as written by :func:`durations_job`."""
    rows = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            index, seconds, problem = line.rstrip("\n").split("\t", 2)
            rows.append((int(index), (float(seconds) if seconds else None, json.loads(problem) or None)))
    return rows


def segment_times(duration: float, length: float, min_length: float) -> list[tuple[float, float]]:
    """Cut ``[0, duration)`` into pieces of ``length`` seconds.

    A remainder of at least ``min_length`` seconds is a piece of its own; a
    shorter one joins the piece before it (so no speech is lost and no piece is
    shorter than ``min_length``). A recording shorter than ``length`` is one
    piece when it lasts ``min_length`` or more, else none.
    """
    if length <= 0 or min_length <= 0 or min_length > length:
        raise ValueError(f"segment length {length} and minimum {min_length} must satisfy 0 < minimum <= length")
    count = int(duration // length)
    remainder = duration - count * length
    bounds = [(i * length, (i + 1) * length) for i in range(count)]
    if remainder >= min_length or (not bounds and duration >= min_length):
        bounds.append((count * length, duration))
    elif bounds:
        bounds[-1] = (bounds[-1][0], duration)
    return [(round(start, 3), round(end, 6)) for start, end in bounds]


def cut_into_segments(utt: Utterance, length: float, min_length: float) -> list[Utterance]:
    """The segments of a whole-recording utterance (see :func:`segment_times`), ids ``<utt>-<start>-<end>``.

    Start and end in the id are in centiseconds, zero-padded to 7 digits (Kaldi's
    convention), so ids sort in time order. Raises ValueError for an utterance
    whose duration is unknown or that is a segment already.
    """
    if utt.is_segment or utt.recording_duration is None:
        raise ValueError(f"{utt.utt}: only whole recordings of known duration can be cut into segments")
    return [replace(utt, utt=f"{utt.utt}-{round(start * 100):07d}-{round(end * 100):07d}", start=start, end=end)
            for start, end in segment_times(utt.recording_duration, length, min_length)]
