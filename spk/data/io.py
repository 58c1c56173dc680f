"""Read and write the files of a Kaldi data dir.

Readers come in two strengths:

- :func:`scan_file` reads every line it can and keeps the ones it cannot as
  :class:`BadLine` records, so the validator and the fixer can report or drop
  them all at once;
- ``read_*`` functions are strict: the first malformed line or duplicate key
  raises :class:`~spk.data.errors.DataFormatError` naming the file and the line.

Writers sort lines by key the way ``LC_ALL=C sort`` does and replace the file
atomically (a temporary file in the same directory, then :func:`os.replace`), so
a failure never leaves a half-written file behind.
"""

from __future__ import annotations

import gc
import os
import re
import secrets
import shutil
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from spk.data.errors import DataFormatError, Problem
from spk.data.formats import (FORMATS, KEY_VALUE, NONTARGET, TARGET, TRIAL, FileFormat, LineError, Segment,
                              Trial)

__all__ = [
    "BadLine",
    "Entry",
    "ScannedFile",
    "atomic_write_text",
    "c_sorted",
    "paused_gc",
    "read_id_list",
    "read_kv",
    "read_reco2dur",
    "read_scp",
    "read_segments",
    "read_spk2utt",
    "read_table",
    "read_trials",
    "read_utt2dur",
    "read_utt2num_frames",
    "read_utt2spk",
    "read_wav_scp",
    "scan_data_dir",
    "scan_file",
    "spk2utt_to_utt2spk",
    "utt2spk_to_spk2utt",
    "write_kv",
    "write_lines",
    "write_reco2dur",
    "write_scp",
    "write_segments",
    "write_spk2utt",
    "write_table",
    "write_trials",
    "write_utt2dur",
    "write_utt2num_frames",
    "write_utt2spk",
    "write_wav_scp",
]

_HAS_SPACE = re.compile(r"[ \t\r\n\f\v]")


class Entry(NamedTuple):
    """A well-formed line: its number (1-based), key, parsed value and the text after the key as written."""

    line: int
    key: str
    value: Any
    rest: str

    @property
    def text(self) -> str:
        """The line as ``<key> <rest>`` (one space after the key, the rest verbatim)."""
        return f"{self.key} {self.rest}"


class BadLine(NamedTuple):
    """A line that could not be parsed, kept verbatim with the reason."""

    line: int
    text: str
    reason: str


@dataclass
class ScannedFile:
    """Everything read from one file, good lines and bad.

    ``entries`` holds every well-formed line in file order; ``table`` the first
    entry of each key; ``duplicates`` a ``(repeat, first)`` pair for every later
    line of a key already seen.
    """

    name: str
    path: Path
    format: FileFormat
    entries: list[Entry] = field(default_factory=list)
    bad_lines: list[BadLine] = field(default_factory=list)
    table: dict[str, Entry] = field(default_factory=dict)
    duplicates: list[tuple[Entry, Entry]] = field(default_factory=list)

    def bad_line_problems(self) -> list[Problem]:
        """One :class:`Problem` per malformed line."""
        fix = "correct or delete the line"
        if self.format.key_kind != TRIAL:  # fix_data_dir leaves trial lists alone
            fix += f" (`spk data fix {self.path.parent}` drops it and keeps a backup)"
        return [Problem(self.name, bad.line, bad.reason, fix) for bad in self.bad_lines]


def c_sorted(strings: Iterable[str]) -> list[str]:
    """Sort as ``LC_ALL=C sort`` does: by the bytes of the UTF-8 encoding.

    Python orders ``str`` by code point, and UTF-8 preserves code-point order, so
    plain :func:`sorted` is exactly the C-locale byte order.
    """
    return sorted(strings)


@contextmanager
def paused_gc() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while building millions of small objects.

    Reading a large data dir creates a tuple or two per line; the collector would
    re-scan them all again and again (nearly halving the speed), though none of
    them can form a reference cycle. Reference counting still frees memory.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def scan_file(path: str | os.PathLike, file_format: FileFormat, name: str | None = None) -> ScannedFile:
    """Read every line of ``path`` as ``file_format``, keeping malformed lines as :class:`BadLine`.

    ``name`` is how problems refer to the file (default: the path as given).
    The key ends at the first space or tab; the rest of the line, without the
    blanks around it, is the value text, kept verbatim.
    """
    path = Path(path)
    scanned = ScannedFile(name or str(path), path, file_format)
    raw_lines = path.read_bytes().split(b"\n")
    if raw_lines and raw_lines[-1] == b"":
        raw_lines.pop()  # the newline that ends the last line
    with paused_gc():
        _scan_lines(raw_lines, scanned)
    return scanned


def _scan_lines(raw_lines: list[bytes], scanned: ScannedFile) -> None:
    """Parse ``raw_lines`` into the entries, table, duplicates and bad lines of ``scanned``."""
    entries, bad_lines, table, duplicates = scanned.entries, scanned.bad_lines, scanned.table, scanned.duplicates
    file_format = scanned.format
    parse = file_format.parse
    for number, raw in enumerate(raw_lines, start=1):
        # Split the bytes: bytes.split() splits on ASCII whitespace only, as Kaldi does.
        fields = raw.split(None, 1)
        if not fields:
            bad_lines.append(BadLine(number, "", "empty line"))
            continue
        try:
            key = sys.intern(fields[0].decode("utf-8"))  # ids repeat in every file: keep one copy
            rest = fields[1].rstrip().decode("utf-8") if len(fields) == 2 else ""
            value = parse(rest)
        except UnicodeDecodeError:
            bad_lines.append(BadLine(number, raw.decode("utf-8", "replace").strip(), "not valid UTF-8"))
            continue
        except LineError as error:
            reason = f"{error}; the layout is `{file_format.layout}`"
            bad_lines.append(BadLine(number, raw.decode("utf-8").strip(), reason))
            continue
        entry = Entry(number, key, value, rest)
        entries.append(entry)
        first = table.setdefault(key, entry)
        if first is not entry:
            duplicates.append((entry, first))


def scan_data_dir(path: str | os.PathLike, *, include_trials: bool = True) -> dict[str, ScannedFile]:
    """Scan every known file present in data dir ``path``, by file name (see :data:`FORMATS`)."""
    data_dir = Path(path)
    return {
        name: scan_file(data_dir / name, file_format, name)
        for name, file_format in FORMATS.items()
        if (data_dir / name).is_file() and (include_trials or name != "trials")
    }


def read_table(path: str | os.PathLike, file_format: FileFormat) -> dict[str, Any]:
    """Read a keyed file strictly: ``{key: value}`` in file order.

    Raises :class:`DataFormatError` at the first malformed line or repeated key.
    """
    scanned = scan_file(path, file_format)
    if scanned.bad_lines:
        raise DataFormatError(scanned.bad_line_problems()[0])
    if scanned.duplicates:
        repeat, first = scanned.duplicates[0]
        raise DataFormatError(Problem(
            scanned.name, repeat.line, f"duplicate key {repeat.key!r} (first on line {first.line})",
            "keep one of the two lines (`spk data fix DIR` keeps the first)"))
    return {entry.key: entry.value for entry in scanned.entries}


def read_kv(path: str | os.PathLike) -> dict[str, str]:
    """Any ``<key> <value>`` file: key -> the rest of the line, verbatim (strict, like every ``read_*``)."""
    return read_table(path, KEY_VALUE)


def read_wav_scp(path: str | os.PathLike) -> dict[str, str]:
    """``wav.scp``: recording id -> path or command ending in ``|`` (the rest of the line, verbatim)."""
    return read_table(path, FORMATS["wav.scp"])


def read_segments(path: str | os.PathLike) -> dict[str, Segment]:
    """``segments``: utterance id -> :class:`Segment` (recording, start, end in seconds)."""
    return read_table(path, FORMATS["segments"])


def read_utt2spk(path: str | os.PathLike) -> dict[str, str]:
    """``utt2spk``: utterance id -> speaker id."""
    return read_table(path, FORMATS["utt2spk"])


def read_spk2utt(path: str | os.PathLike) -> dict[str, list[str]]:
    """``spk2utt``: speaker id -> its utterance ids, in file order."""
    return read_table(path, FORMATS["spk2utt"])


def read_utt2dur(path: str | os.PathLike) -> dict[str, float]:
    """``utt2dur``: utterance id -> duration in seconds."""
    return read_table(path, FORMATS["utt2dur"])


def read_reco2dur(path: str | os.PathLike) -> dict[str, float]:
    """``reco2dur``: recording id -> duration in seconds."""
    return read_table(path, FORMATS["reco2dur"])


def read_utt2num_frames(path: str | os.PathLike) -> dict[str, int]:
    """``utt2num_frames``: utterance id -> number of feature frames."""
    return read_table(path, FORMATS["utt2num_frames"])


def read_scp(path: str | os.PathLike) -> dict[str, str]:
    """An archive index (``feats.scp``, ``cmvn.scp``, ``vad.scp``): key -> rxspecifier, verbatim."""
    return read_table(path, FORMATS["feats.scp"])


_TRIAL_TARGET = {TARGET.encode(): True, NONTARGET.encode(): False}


def read_trials(path: str | os.PathLike) -> list[Trial]:
    """``trials``: one :class:`Trial` per line, in file order (the toolkit's only trials reader).

    Raises :class:`DataFormatError` at the first malformed line (wrong field count,
    a label other than ``target``/``nontarget``, an empty line), naming the file and
    the line. An empty file gives an empty list.
    """
    raw_lines = Path(path).read_bytes().split(b"\n")
    if raw_lines and raw_lines[-1] == b"":
        raw_lines.pop()
    trials = []
    append, new = trials.append, tuple.__new__  # tuple.__new__ skips Trial's Python-level constructor
    # A plain loop: trial lists run to millions of lines, and the general scanner, which keeps
    # every line as an entry, is several times slower. It words the error when a line is bad.
    try:
        with paused_gc():
            for raw in raw_lines:
                enroll, test, label = raw.split()  # bytes.split(): the ASCII whitespace the scanner splits at
                append(new(Trial, (enroll.decode("utf-8"), test.decode("utf-8"), _TRIAL_TARGET[label])))
    except (ValueError, KeyError):  # wrong field count, invalid UTF-8 (a ValueError too), unknown label
        scanned = scan_file(path, FORMATS["trials"])
        if scanned.bad_lines:
            raise DataFormatError(scanned.bad_line_problems()[0]) from None
        return [Trial(entry.key, *entry.value) for entry in scanned.entries]
    return trials


def read_id_list(path: str | os.PathLike) -> list[str]:
    """The first field of every non-blank line (an utterance or speaker list), in file order.

    Any further fields are ignored, so a ``utt2spk`` or ``spk2utt`` also works as a list.
    """
    ids = []
    for raw in Path(path).read_bytes().split(b"\n"):
        fields = raw.split(None, 1)
        if fields:
            ids.append(fields[0].decode("utf-8"))
    return ids


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Replace ``path`` with ``text`` (UTF-8) so that readers see the old or the new file, never half.

    The text goes to a temporary file in the same directory, is flushed to disk,
    then renamed over ``path``. A replaced file keeps its permissions; a new one
    gets the usual ones (umask applies); missing parent folders are created, and a file
    that already has exactly this text is left untouched. On failure the temporary file is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = text.encode("utf-8")
    if path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data:
        return  # unchanged: keep the modification time that up-to-date checks rely on
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(temporary, "x", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        if path.exists():
            shutil.copymode(path, temporary)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_lines(path: str | os.PathLike, lines: Iterable[str]) -> None:
    """Write ``lines`` (no newlines inside) atomically, one per line, in the given order."""
    atomic_write_text(path, "".join(f"{line}\n" for line in lines))


def write_table(path: str | os.PathLike, rows: Mapping[str, Any], file_format: FileFormat) -> None:
    """Write ``{key: value}`` as ``file_format``, sorted by key in C order, atomically.

    Raises ``ValueError``, before writing anything, for a line that could not be
    read back: a key that is empty or holds whitespace, a value that spans lines
    or does not fit the format (e.g. a speaker id with a space in ``utt2spk``).
    """
    lines = []
    for key in c_sorted(rows):
        value_text = file_format.format(rows[key])
        if not key or _HAS_SPACE.search(key):
            raise ValueError(f"{path}: key {key!r} is empty or contains whitespace")
        if "\n" in value_text:
            raise ValueError(f"{path}: the value of {key!r} spans lines: {value_text!r}")
        try:
            file_format.parse(value_text)
        except LineError as error:
            raise ValueError(f"{path}: the value of {key!r} would not read back ({error}): {value_text!r}") from None
        lines.append(f"{key} {value_text}")
    write_lines(path, lines)


def write_kv(path: str | os.PathLike, mapping: Mapping[str, Any]) -> None:
    """Write any ``<key> <value>`` file from key -> value (written with ``str``), sorted, atomically."""
    write_table(path, {key: str(value) for key, value in mapping.items()}, KEY_VALUE)


def write_wav_scp(path: str | os.PathLike, wav_scp: Mapping[str, str]) -> None:
    """Write ``wav.scp`` from recording id -> path or command ending in ``|``."""
    write_table(path, wav_scp, FORMATS["wav.scp"])


def write_segments(path: str | os.PathLike, segments: Mapping[str, Segment | tuple[str, float, float]]) -> None:
    """Write ``segments`` from utterance id -> ``(recording, start, end)``, times in seconds."""
    write_table(path, segments, FORMATS["segments"])


def write_utt2spk(path: str | os.PathLike, utt2spk: Mapping[str, str]) -> None:
    """Write ``utt2spk`` from utterance id -> speaker id."""
    write_table(path, utt2spk, FORMATS["utt2spk"])


def write_spk2utt(path: str | os.PathLike, spk2utt: Mapping[str, Sequence[str]]) -> None:
    """Write ``spk2utt`` from speaker id -> utterance ids (each line's ids sorted in C order)."""
    write_table(path, {spk: c_sorted(utts) for spk, utts in spk2utt.items()}, FORMATS["spk2utt"])


def write_utt2dur(path: str | os.PathLike, utt2dur: Mapping[str, float]) -> None:
    """Write ``utt2dur`` from utterance id -> seconds."""
    write_table(path, utt2dur, FORMATS["utt2dur"])


def write_reco2dur(path: str | os.PathLike, reco2dur: Mapping[str, float]) -> None:
    """Write ``reco2dur`` from recording id -> seconds."""
    write_table(path, reco2dur, FORMATS["reco2dur"])


def write_utt2num_frames(path: str | os.PathLike, utt2num_frames: Mapping[str, int]) -> None:
    """Write ``utt2num_frames`` from utterance id -> frame count."""
    write_table(path, utt2num_frames, FORMATS["utt2num_frames"])


def write_scp(path: str | os.PathLike, scp: Mapping[str, str]) -> None:
    """Write an archive index (``feats.scp``, ``cmvn.scp``, ...) from key -> rxspecifier."""
    write_table(path, scp, FORMATS["feats.scp"])


def write_trials(path: str | os.PathLike, trials: Iterable[Trial | tuple[str, str, bool]]) -> None:
    """Write ``trials`` (``<enroll-id> <test-id> target|nontarget``), sorted by enroll id then test id."""
    trials = [Trial(*trial) for trial in trials]
    for trial in trials:
        for name in (trial.enroll, trial.test):
            if not name or _HAS_SPACE.search(name):
                raise ValueError(f"{path}: id {name!r} is empty or contains whitespace")
    trials.sort(key=lambda trial: (trial.enroll, trial.test))
    write_lines(path, (f"{trial.enroll} {trial.test} {trial.label}" for trial in trials))


def utt2spk_to_spk2utt(utt2spk: Mapping[str, str]) -> dict[str, list[str]]:
    """Invert ``utt2spk``: speaker -> its utterances, both in C order."""
    spk2utt: dict[str, list[str]] = {}
    for utt in c_sorted(utt2spk):
        spk2utt.setdefault(utt2spk[utt], []).append(utt)
    return {spk: spk2utt[spk] for spk in c_sorted(spk2utt)}


def spk2utt_to_utt2spk(spk2utt: Mapping[str, Iterable[str]]) -> dict[str, str]:
    """Invert ``spk2utt``: utterance -> speaker, in C order.

    Raises ``ValueError`` when an utterance is listed under two speakers.
    """
    utt2spk: dict[str, str] = {}
    for spk, utts in spk2utt.items():
        for utt in utts:
            if utt in utt2spk and utt2spk[utt] != spk:
                raise ValueError(f"utterance {utt!r} is listed under speakers {utt2spk[utt]!r} and {spk!r}")
            utt2spk[utt] = spk
    return {utt: utt2spk[utt] for utt in c_sorted(utt2spk)}
