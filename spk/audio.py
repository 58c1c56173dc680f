"""Read any ``wav.scp`` entry as float32 mono audio at the target sample rate.

A ``wav.scp`` value is either a file path (any format soundfile reads: WAV, FLAC,
NIST SPHERE, MP3, OGG, ...) or a shell command ending in ``|`` whose standard
output is audio in one of those formats (Kaldi's "extended filename"). An optional
``segments`` file cuts recordings into utterances by start and end time in seconds.

Output
    float32, one dimension, values in [-1, 1], resampled with soxr (quality "HQ")
    to ``target_rate`` (``None`` keeps the native rate). Integer PCM is scaled the
    way soundfile does it, so a 16-bit value ``x`` becomes ``x / 32768``. Values are
    clipped to [-1, 1] at the end, which only matters for float files that exceed
    full scale and for the small overshoot resampling can add near full scale.

Multi-channel policy
    ``channel="mean"`` (the default) averages all channels. This is the common
    choice for speaker embedding: the channels of a multi-microphone recording
    carry the same talker, and the mean uses all of them. Note that Kaldi takes
    channel 0 by default (``compute-fbank-feats`` with its default
    ``--channel=-1`` warns and uses channel 0 of multi-channel input); pass
    ``channel=0`` to match Kaldi. An int picks that channel (0-based); a channel
    the audio does not have is an error. For telephone corpora with one talker
    per channel (e.g. Switchboard), give each side its own wav.scp entry through
    a pipe, as Kaldi recipes do (``sph2pipe -f wav -p -c 1 FILE |``).

Segments
    Times are in seconds of the recording; a cut covers the samples
    ``[round(start * rate), round(end * rate))``. ``end`` of ``-1`` or ``None``
    means "to the end of the recording" (Kaldi convention). An end past the end of
    the recording by at most 0.01 s is clipped to it; further is an error.
    Files are read by range (no decoding of the rest), except MP3, where seeking
    in libsndfile is not sample-exact, so the file is decoded from its start.
    Piped recordings are decoded whole and sliced.

Errors
    Every failure raises :class:`AudioError`, whose message names the utterance
    (when known), the source, what went wrong and what to do about it.
"""

from __future__ import annotations

import io
import os
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import soundfile as sf
import soxr

__all__ = ["AudioError", "AudioFormatError", "AudioReader", "AudioTooLongError", "audio_container", "is_pipe",
           "read_audio", "read_audio_bytes", "read_audio_file", "read_audio_with_rate", "read_segment",
           "require_container"]

RESAMPLE_QUALITY = "HQ"
SEGMENT_END_TOLERANCE_S = 0.01
SPHERE_HEADER_BYTES = 1024
STDERR_TAIL_CHARS = 2000


class AudioError(Exception):
    """Audio could not be read; the message names the utterance, the source and the fix."""


class AudioFormatError(AudioError):
    """Bytes handed over as audio are not in an accepted container (by their header)."""


class AudioTooLongError(AudioError):
    """Audio handed over is longer than the caller accepts (known from its header, before decoding)."""


# Containers accepted from memory (uploads, standard input), by their first bytes.
MEMORY_CONTAINERS = {b"RIFF": "WAV", b"RF64": "WAV", b"fLaC": "FLAC", b"OggS": "Ogg"}


@dataclass(frozen=True)
class _Origin:
    """What is being read, for error messages."""

    source: str
    utt_id: str | None = None
    given: bool = False  # handed to the product (a file argument), not an entry of a data dir

    def error(self, problem: str, hint: str = "") -> AudioError:
        """Build an AudioError that says where, what and (if given) what to do."""
        where = f"source {self.source!r}"
        if self.utt_id is not None:
            where = f"utterance {self.utt_id!r} ({where})"
        message = f"{where}: {problem}"
        if hint:
            message += f". {hint}"
        return AudioError(message)


def is_pipe(source: str) -> bool:
    """Whether a wav.scp value is a shell command (ends in ``|``) rather than a file path."""
    return source.rstrip().endswith("|")


def read_audio(
    source: str,
    *,
    target_rate: int | None = 16000,
    channel: str | int = "mean",
    utt_id: str | None = None,
) -> np.ndarray:
    """Read a whole wav.scp entry (file path or ``command |``) as float32 mono.

    Resampled to ``target_rate`` (``None`` keeps the native rate); ``channel`` is
    ``"mean"`` or a 0-based channel index; ``utt_id`` only names the utterance in
    error messages. Raises AudioError on any failure.
    """
    samples, _ = read_audio_with_rate(source, target_rate=target_rate, channel=channel, utt_id=utt_id)
    return samples


def read_audio_file(path: str | os.PathLike, *, target_rate: int | None = 16000,
                    channel: str | int = "mean") -> np.ndarray:
    """Read an audio file as float32 mono, resampled to ``target_rate``.

    Unlike :func:`read_audio`, ``path`` is always a file name, never a ``command |``:
    this is the reader for audio handed to the product (CLI, API), where a name is
    data, not something to run.
    """
    _check_options(target_rate, channel)
    path = os.fspath(path)
    origin = _Origin(path, given=True)
    samples, rate = _read_file_range(path, 0.0, None, channel, origin)
    return _finish(samples, rate, target_rate, origin)


def audio_container(head: bytes) -> str | None:
    """The container (``WAV``, ``FLAC``, ``Ogg``) that bytes starting with ``head`` claim to be, or None."""
    kind = MEMORY_CONTAINERS.get(bytes(head[:4]))
    if kind == "WAV" and head[8:12] != b"WAVE":
        return None
    return kind


def require_container(data: bytes, name: str = "the upload") -> str:
    """The container of audio bytes (:func:`audio_container`), or :class:`AudioFormatError` naming ``name``
    (:class:`AudioError` when there are no bytes at all)."""
    if not data:
        raise AudioError(f"{name} is empty (0 bytes): nothing was recorded or sent; send a recording")
    kind = audio_container(data[:12])
    if kind is None:
        raise AudioFormatError(f"{name} is not WAV, FLAC or Ogg audio (it starts with {bytes(data[:8])!r}); "
                               "send one of those")
    return kind


def read_audio_bytes(data: bytes, *, name: str = "the upload", target_rate: int | None = 16000,
                     max_seconds: float | None = None) -> np.ndarray:
    """Decode WAV, FLAC or Ogg audio held in memory to float32 mono at ``target_rate``.

    For audio handed over by others (HTTP uploads): the container is recognised by its
    header before anything is decoded (anything else is an :class:`AudioFormatError`),
    the duration is read from the header and checked against ``max_seconds`` before
    decoding (:class:`AudioTooLongError`), and nothing is written to disk or run.
    ``name`` names the audio in messages.
    """
    _check_options(target_rate, "mean")
    kind = require_container(data, name)
    origin = _Origin(name, given=True)
    try:
        with sf.SoundFile(io.BytesIO(data)) as audio:
            rate, frames = audio.samplerate, audio.frames
            if max_seconds is not None and frames / rate > max_seconds:
                raise AudioTooLongError(f"{name} is {frames / rate:.1f} s long; at most {max_seconds:g} s is "
                                        "accepted: send a shorter recording")
            samples = audio.read(dtype="float32", always_2d=True)
    except (RuntimeError, TypeError) as exc:
        raise AudioError(f"{name}: {kind} audio that cannot be decoded ({exc}); send a complete, undamaged "
                         "file") from None
    if not np.all(np.isfinite(samples)):
        raise AudioError(f"{name} holds samples that are not numbers (NaN or infinite): the audio is damaged; "
                         "record or export it again")
    return _finish(_to_mono(samples, "mean", origin), rate, target_rate, origin)


def read_audio_with_rate(
    source: str,
    *,
    target_rate: int | None = 16000,
    channel: str | int = "mean",
    utt_id: str | None = None,
) -> tuple[np.ndarray, int]:
    """Like :func:`read_audio`, but also return the rate of the samples.

    The rate is ``target_rate``, or the native rate when ``target_rate`` is None.
    """
    return _read_cut(source, 0.0, None, target_rate=target_rate, channel=channel, utt_id=utt_id)


def read_segment(
    source: str,
    start: float,
    end: float | None,
    *,
    target_rate: int | None = 16000,
    channel: str | int = "mean",
    utt_id: str | None = None,
) -> np.ndarray:
    """Read ``[start, end)`` seconds of a wav.scp entry as float32 mono.

    ``end`` of ``-1`` or ``None`` reads to the end of the recording; an end past
    the recording by more than 0.01 s is an error. Files are read by range; a
    pipe is decoded whole and sliced. Other arguments as in :func:`read_audio`.
    """
    samples, _ = _read_cut(source, start, end, target_rate=target_rate, channel=channel, utt_id=utt_id)
    return samples


class AudioReader:
    """Utterance audio by id over a wav.scp mapping and an optional segments mapping.

    Without ``segments`` every wav.scp key is an utterance. With ``segments``
    (``utt_id -> (rec_id, start_s, end_s)``) the utterances are the segments, and
    each recording is looked up in ``wav_scp``. The most recently decoded piped
    recording is kept, so consecutive segments of one piped recording decode it
    once; files are read by range directly.
    """

    def __init__(
        self,
        wav_scp: Mapping[str, str],
        segments: Mapping[str, tuple[str, float, float]] | None = None,
        target_rate: int | None = 16000,
        channel: str | int = "mean",
    ) -> None:
        _check_options(target_rate, channel)
        self.target_rate = target_rate
        self.channel = channel
        self._wav_scp = dict(wav_scp)
        self._segments = None
        if segments is not None:
            self._segments = {
                utt: (rec, float(start), -1.0 if end is None else float(end))
                for utt, (rec, start, end) in segments.items()
            }
        self._utt_ids = sorted(self._segments if self._segments is not None else self._wav_scp)
        self._cached_pipe: tuple[str, np.ndarray, int] | None = None

    @property
    def utt_ids(self) -> list[str]:
        """Utterance ids in sorted (``LC_ALL=C``) order."""
        return list(self._utt_ids)

    def __len__(self) -> int:
        """Number of utterances."""
        return len(self._utt_ids)

    def read(self, utt_id: str) -> np.ndarray:
        """Float32 mono samples of one utterance at ``target_rate``."""
        samples, rate, origin = self._read_native(utt_id)
        return _finish(samples, rate, self.target_rate, origin)

    def duration(self, utt_id: str) -> float:
        """Length of one utterance in seconds (decodes it; use utt2dur for many)."""
        samples, rate, _ = self._read_native(utt_id)
        return len(samples) / rate

    def _rec_id(self, utt_id: str) -> str:
        if self._segments is None:
            if utt_id not in self._wav_scp:
                raise AudioError(f"utterance {utt_id!r} is not in wav.scp. Check the utterance id")
            return utt_id
        if utt_id not in self._segments:
            raise AudioError(f"utterance {utt_id!r} is not in segments. Check the utterance id")
        rec_id = self._segments[utt_id][0]
        if rec_id not in self._wav_scp:
            raise AudioError(
                f"utterance {utt_id!r}: its recording {rec_id!r} (from segments) is not in wav.scp. "
                "Add the recording to wav.scp or fix the data dir"
            )
        return rec_id

    def _read_native(self, utt_id: str) -> tuple[np.ndarray, int, _Origin]:
        """Mono samples of the utterance at the recording's own rate, checked non-empty."""
        source = self._wav_scp[self._rec_id(utt_id)]
        start, end = (0.0, None) if self._segments is None else self._segments[utt_id][1:]
        origin = _Origin(source, utt_id)
        samples, rate = _cut_native(source, start, end, self.channel, origin, self._decode_pipe_cached)
        _check_not_empty(samples, origin)
        return samples, rate, origin

    def _decode_pipe_cached(self, source: str, channel: str | int, origin: _Origin) -> tuple[np.ndarray, int]:
        """:func:`_decode_pipe`, remembering the last command's output (same command, same audio)."""
        if self._cached_pipe is None or self._cached_pipe[0] != source:
            self._cached_pipe = (source, *_decode_pipe(source, channel, origin))
        return self._cached_pipe[1], self._cached_pipe[2]


# --- reading ---------------------------------------------------------------------


def _read_cut(
    source: str,
    start: float,
    end: float | None,
    *,
    target_rate: int | None,
    channel: str | int,
    utt_id: str | None,
) -> tuple[np.ndarray, int]:
    """Mono ``[start, end)`` of a source, resampled; the public readers all land here."""
    _check_options(target_rate, channel)
    origin = _Origin(source, utt_id)
    samples, rate = _cut_native(source, start, end, channel, origin)
    return _finish(samples, rate, target_rate, origin), target_rate or rate


def _cut_native(
    source: str,
    start: float,
    end: float | None,
    channel: str | int,
    origin: _Origin,
    decode_pipe: Callable[[str, str | int, _Origin], tuple[np.ndarray, int]] | None = None,
) -> tuple[np.ndarray, int]:
    """Mono ``[start, end)`` at the native rate: a file by range, a pipe decoded whole and sliced."""
    if not is_pipe(source):
        return _read_file_range(source, start, end, channel, origin)
    recording, rate = (decode_pipe or _decode_pipe)(source, channel, origin)
    return _slice(recording, rate, start, end, origin), rate


def _read_file_range(
    path: str, start: float, end: float | None, channel: str | int, origin: _Origin
) -> tuple[np.ndarray, int]:
    """Mono samples of ``[start, end)`` seconds of an audio file, at its native rate."""
    _check_file(path, origin)
    try:
        with sf.SoundFile(path) as audio:
            rate = audio.samplerate
            first, last = _frame_range(start, end, rate, audio.frames, origin)
            if audio.format == "MP3":
                # libsndfile's MP3 seek is not sample-exact: decode from the start.
                frames = audio.read(last, dtype="float32", always_2d=True)[first:]
            else:
                audio.seek(first)
                frames = audio.read(last - first, dtype="float32", always_2d=True)
    except (RuntimeError, TypeError) as exc:
        raise _unreadable(origin, exc, _file_head(path)) from exc
    return _to_mono(frames, channel, origin), rate


def _decode_pipe(source: str, channel: str | int, origin: _Origin) -> tuple[np.ndarray, int]:
    """Run a ``command |`` entry and decode its whole output to mono at its native rate."""
    data = _run_pipe(source, origin)
    try:
        frames, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (RuntimeError, TypeError) as exc:
        raise _unreadable(origin, exc, data[:SPHERE_HEADER_BYTES]) from exc
    return _to_mono(frames, channel, origin), rate


def _run_pipe(source: str, origin: _Origin) -> bytes:
    """Standard output of the command in a ``command |`` entry; errors quote its stderr."""
    command = source.rstrip()[:-1].strip()
    if not command:
        raise origin.error("the pipe has no command before '|'", "Write '<command> |' in wav.scp")
    result = subprocess.run(command, shell=True, stdin=subprocess.DEVNULL, capture_output=True)
    stderr = _tail(result.stderr)
    if result.returncode != 0:
        raise origin.error(
            f"the command {command!r} failed with exit status {result.returncode}; "
            f"its stderr ends with:\n{stderr}",
            "Run the command by hand to see why",
        )
    if not result.stdout:
        detail = f"; its stderr ends with:\n{stderr}" if stderr else ""
        raise origin.error(
            f"the command {command!r} wrote nothing to stdout{detail}",
            "The command must write the audio to stdout "
            "(e.g. 'sox IN -t wav - |', 'ffmpeg -i IN -f wav - |')",
        )
    return result.stdout


def _tail(stderr: bytes) -> str:
    text = stderr.decode("utf-8", errors="replace").strip()
    return text[-STDERR_TAIL_CHARS:] if text else "(empty)"


def _check_file(path: str, origin: _Origin) -> None:
    """Fail early, with a plain message, on a path that cannot hold audio."""
    if not os.path.exists(path):
        raise origin.error("file not found", "Check the path" if origin.given else
                           "Check the path in wav.scp (relative paths resolve from the working directory)")
    if not os.path.isfile(path):
        raise origin.error("not a regular file", "Give an audio file" if origin.given else
                           "wav.scp must name an audio file or end in '|'")
    if os.path.getsize(path) == 0:
        raise origin.error("the file is empty (0 bytes)", "Record or copy the audio again, or give another file"
                           if origin.given else "Re-create or re-download the file, or drop it from the data dir")


def _file_head(path: str) -> bytes:
    try:
        with open(path, "rb") as stream:
            return stream.read(SPHERE_HEADER_BYTES)
    except OSError:
        return b""


def _unreadable(origin: _Origin, exc: Exception, head: bytes) -> AudioError:
    """The error for audio soundfile cannot decode, explaining compressed SPHERE."""
    coding = _sphere_compression(head)
    if coding is not None:
        fix = (
            "Decode it in wav.scp through sph2pipe instead: '<rec-id> sph2pipe -f wav FILE |'"
            if not is_pipe(origin.source)
            else "Add 'sph2pipe -f wav' to the command so that it writes WAV"
        )
        return origin.error(
            f"compressed NIST SPHERE (sample_coding {coding}), which libsndfile cannot read", fix
        )
    return origin.error(
        f"soundfile cannot read it: {exc}",
        "Check that it is a complete audio file in a format libsndfile reads (WAV, FLAC, SPHERE, MP3, OGG), "
        "or convert it through a pipe in wav.scp (e.g. 'ffmpeg -i FILE -f wav - |')",
    )


def _sphere_compression(head: bytes) -> str | None:
    """The ``sample_coding`` of a compressed NIST SPHERE header, or None."""
    if not head.startswith(b"NIST_1A"):
        return None
    for line in head.decode("latin-1").splitlines():
        fields = line.split()
        if len(fields) == 3 and fields[0] == "sample_coding":
            coding = fields[2]
            return coding if any(name in coding for name in ("shorten", "wavpack", "shortpack")) else None
    return None


# --- cutting, channels, rate -------------------------------------------------------


def _frame_range(
    start: float, end: float | None, rate: int, num_frames: int, origin: _Origin
) -> tuple[int, int]:
    """Frame indices ``[first, last)`` of ``[start, end)`` seconds in a recording."""
    duration = num_frames / rate
    to_end = end is None or end == -1
    if start < 0:
        raise origin.error(f"segment start {start} s is negative", "Fix the segments file")
    if not to_end and end <= start:
        raise origin.error(f"segment end {end} s is not after its start {start} s", "Fix the segments file")
    if start > 0 and start >= duration:
        raise origin.error(
            f"segment starts at {start} s but the recording is only {duration:.3f} s long",
            "Fix the segments file",
        )
    if not to_end and end > duration + SEGMENT_END_TOLERANCE_S:
        raise origin.error(
            f"segment ends at {end} s but the recording is only {duration:.3f} s long",
            f"Fix the segments file (at most {SEGMENT_END_TOLERANCE_S} s of overshoot is allowed)",
        )
    first = int(round(start * rate))
    last = num_frames if to_end else min(int(round(end * rate)), num_frames)
    return first, last


def _slice(samples: np.ndarray, rate: int, start: float, end: float | None, origin: _Origin) -> np.ndarray:
    first, last = _frame_range(start, end, rate, len(samples), origin)
    return samples[first:last]


def _to_mono(frames: np.ndarray, channel: str | int, origin: _Origin) -> np.ndarray:
    """One channel out of ``(frames, channels)`` data, by the module's channel policy."""
    if channel == "mean":
        return frames[:, 0] if frames.shape[1] == 1 else frames.mean(axis=1, dtype=np.float32)
    if not 0 <= channel < frames.shape[1]:
        raise origin.error(
            f"channel {channel} requested but the audio has {frames.shape[1]} channel(s)",
            f"Use a channel from 0 to {frames.shape[1] - 1}, or 'mean'",
        )
    return frames[:, channel]


def _finish(samples: np.ndarray, rate: int, target_rate: int | None, origin: _Origin) -> np.ndarray:
    """Check, resample and clip mono samples into the module's output contract."""
    _check_not_empty(samples, origin)
    if target_rate is not None and target_rate != rate:
        samples = soxr.resample(samples, rate, target_rate, quality=RESAMPLE_QUALITY)
    return np.clip(samples, -1.0, 1.0).astype(np.float32, copy=False)


def _check_not_empty(samples: np.ndarray, origin: _Origin) -> None:
    if len(samples) == 0 and origin.given:
        raise origin.error("the audio has 0 samples", "Record or export it again")
    if len(samples) == 0:
        raise origin.error(
            "the audio has 0 samples", "Drop the utterance from the data dir, or fix its segment times"
        )


def _check_options(target_rate: int | None, channel: str | int) -> None:
    if target_rate is not None and not (_is_int(target_rate) and target_rate > 0):
        raise AudioError(f"target_rate must be a positive integer or None, not {target_rate!r}")
    if channel != "mean" and not _is_int(channel):
        raise AudioError(f"channel must be 'mean' or a channel index (int), not {channel!r}")


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)
