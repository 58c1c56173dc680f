"""What each file of a Kaldi data dir looks like: its key, its line layout, its values.

Every line is ``<key> <value>``. The key is the first field; the value is the rest
of the line after the whitespace that follows the key, parsed by the file's
:class:`FileFormat`. Fields are separated by spaces or tabs (Kaldi's rule; other
Unicode spaces belong to the field).

Keys name utterances, speakers or recordings; :data:`FORMATS` says which, so the
validator, :func:`~spk.data.fix.fix_data_dir` and the subset/split functions know
how to keep every file consistent with the others.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

__all__ = [
    "ANY",
    "FORMATS",
    "FileFormat",
    "KEY_VALUE",
    "LineError",
    "Segment",
    "Trial",
    "UTTERANCE",
    "SPEAKER",
    "RECORDING",
    "TRIAL",
    "TARGET",
    "NONTARGET",
    "cmvn_key_kind",
    "format_seconds",
    "key_kind",
    "split_fields",
]

UTTERANCE = "utterance"
SPEAKER = "speaker"
RECORDING = "recording"
TRIAL = "trial"
ANY = "any"  # keys of a file the toolkit does not know

TARGET = "target"
NONTARGET = "nontarget"

_FIELD_SEPARATOR = re.compile(r"[ \t\r\n\f\v]+")


class Segment(NamedTuple):
    """One line of ``segments``: an utterance cut from ``recording``, times in seconds.

    ``end`` of ``-1`` means "to the end of the recording" (Kaldi's convention). A
    Segment unpacks as ``(recording, start, end)``, the tuple
    :class:`spk.audio.AudioReader` takes.
    """

    recording: str
    start: float
    end: float


class Trial(NamedTuple):
    """One line of ``trials``: does ``test`` come from the speaker of ``enroll``?"""

    enroll: str
    test: str
    target: bool

    @property
    def label(self) -> str:
        """``"target"`` or ``"nontarget"``, as written in the file."""
        return TARGET if self.target else NONTARGET


class LineError(ValueError):
    """The value of one line is malformed; the reader adds file, line and layout."""


@dataclass(frozen=True)
class FileFormat:
    """How one data-dir file is laid out.

    ``key_kind`` is what the first field names (``UTTERANCE``, ``SPEAKER``,
    ``RECORDING``; ``TRIAL`` for the trial list, whose lines have no unique key).
    ``parse`` turns the text after the key into a value and raises
    :class:`LineError` when it cannot; ``format`` turns a value back into that text.
    """

    name: str
    key_kind: str
    layout: str
    parse: Callable[[str], Any]
    format: Callable[[Any], str]


def split_fields(text: str) -> list[str]:
    """Split text into fields at ASCII whitespace (spaces, tabs, ...), as Kaldi does.

    ``str.split()`` would also split at Unicode spaces and ASCII control
    characters, which Kaldi keeps inside a field; it is used only when the text
    has none of those (printable ASCII: spaces are the only whitespace).
    """
    if text.isascii() and text.isprintable():
        return text.split()
    return [field for field in _FIELD_SEPARATOR.split(text) if field]


def format_seconds(value: float) -> str:
    """Write a time or duration with up to microsecond precision and no trailing zeros."""
    text = f"{float(value):.6f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def _number(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise LineError(f"{what} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise LineError(f"{what} {text!r} is not a finite number")
    return value


def _fields(rest: str, count: int) -> list[str]:
    fields = split_fields(rest)
    if len(fields) != count:
        raise LineError(f"expected {count + 1} fields, found {len(fields) + 1}")
    return fields


def _parse_text(rest: str) -> str:
    """Everything after the key, kept verbatim (a path, a command ending in ``|``, an rxspecifier)."""
    if not rest:
        raise LineError("expected 2 or more fields, found 1")
    return rest


def _parse_word(rest: str) -> str:
    return _fields(rest, 1)[0]


def _parse_words(rest: str) -> list[str]:
    words = split_fields(rest)
    if not words:
        raise LineError("expected 2 or more fields, found 1")
    return words


def _parse_seconds(rest: str) -> float:
    return _number(_fields(rest, 1)[0], "duration")


def _parse_count(rest: str) -> int:
    (text,) = _fields(rest, 1)
    try:
        return int(text)
    except ValueError:
        raise LineError(f"frame count {text!r} is not an integer") from None


def _parse_segment(rest: str) -> Segment:
    recording, start, end = _fields(rest, 3)
    return Segment(recording, _number(start, "start time"), _number(end, "end time"))


def _parse_trial(rest: str) -> tuple[str, bool]:
    test, label = _fields(rest, 2)
    if label not in (TARGET, NONTARGET):
        raise LineError(f"label {label!r} is neither 'target' nor 'nontarget'")
    return test, label == TARGET


def _format_text(value: str) -> str:
    return str(value)


def _format_words(value) -> str:
    return " ".join(value)


def _format_segment(value) -> str:
    recording, start, end = value
    return f"{recording} {format_seconds(start)} {format_seconds(end)}"


def _format_trial(value) -> str:
    test, target = value
    return f"{test} {TARGET if target else NONTARGET}"


def _format_count(value) -> str:
    return str(int(value))


FORMATS: dict[str, FileFormat] = {
    spec.name: spec
    for spec in (
        FileFormat("wav.scp", RECORDING, "<rec-id> <path>, or <rec-id> <command> |", _parse_text, _format_text),
        FileFormat("segments", UTTERANCE, "<utt-id> <rec-id> <start-s> <end-s>", _parse_segment, _format_segment),
        FileFormat("utt2spk", UTTERANCE, "<utt-id> <spk-id>", _parse_word, _format_text),
        FileFormat("spk2utt", SPEAKER, "<spk-id> <utt-id> <utt-id> ...", _parse_words, _format_words),
        FileFormat("utt2dur", UTTERANCE, "<utt-id> <seconds>", _parse_seconds, format_seconds),
        FileFormat("utt2num_frames", UTTERANCE, "<utt-id> <frames>", _parse_count, _format_count),
        FileFormat("reco2dur", RECORDING, "<rec-id> <seconds>", _parse_seconds, format_seconds),
        FileFormat("feats.scp", UTTERANCE, "<utt-id> <ark>:<offset>", _parse_text, _format_text),
        # Per utterance in spk (features.py); Kaldi's per-speaker cmvn.scp is recognised
        # by its keys (see spk.data.formats.cmvn_key_kind).
        FileFormat("cmvn.scp", UTTERANCE, "<utt-id> <ark>:<offset>", _parse_text, _format_text),
        FileFormat("vad.scp", UTTERANCE, "<utt-id> <ark>:<offset>", _parse_text, _format_text),
        FileFormat("text", UTTERANCE, "<utt-id> <transcript>", _parse_text, _format_text),
        FileFormat("utt2lang", UTTERANCE, "<utt-id> <language>", _parse_word, _format_text),
        FileFormat("utt2uniq", UTTERANCE, "<utt-id> <original-utt-id>", _parse_word, _format_text),
        FileFormat("spk2gender", SPEAKER, "<spk-id> m|f", _parse_word, _format_text),
        FileFormat("reco2file_and_channel", RECORDING, "<rec-id> <file-id> <channel>", _parse_text, _format_text),
        FileFormat("trials", TRIAL, "<enroll-id> <test-id> target|nontarget", _parse_trial, _format_trial),
    )
}


# Any `<key> <value>` file, the value kept verbatim (see spk.data.io.read_kv).
KEY_VALUE = FileFormat("key-value file", ANY, "<key> <value>", _parse_text, _format_text)


def cmvn_key_kind(keys, utterances, speakers) -> str:
    """Whether a ``cmvn.scp`` is per utterance (spk's layout) or per speaker (Kaldi's).

    It is per speaker when none of its keys is an utterance and some are speakers.
    """
    keys = list(keys)
    if keys and not any(key in utterances for key in keys) and any(key in speakers for key in keys):
        return SPEAKER
    return UTTERANCE


def key_kind(name: str, keys, utterances, speakers) -> str:
    """What the keys of file ``name`` name, looking at ``cmvn.scp``'s keys to tell its layout."""
    if name == "cmvn.scp":
        return cmvn_key_kind(keys, utterances, speakers)
    return FORMATS[name].key_kind
