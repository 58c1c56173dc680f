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

import logging
import os
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import soundfile as sf

__all__ = ["CorpusError", "SkipLog", "Utterance", "audio_duration", "by_speaker", "cut_into_segments",
           "file_problem", "segment_times", "whole_file"]

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
