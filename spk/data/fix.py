"""Make a data dir consistent, like Kaldi's ``utils/fix_data_dir.sh``, without losing anything.

:func:`fix_data_dir`

1. drops lines that cannot be used: malformed lines, repeated keys (the first
   line of a key is kept), segments with impossible times, negative durations;
2. keeps only the utterances found in every per-utterance file (``utt2spk``,
   ``segments`` with a recording in ``wav.scp`` or else ``wav.scp`` itself,
   ``feats.scp``, ``utt2dur``, ...), the speakers of those utterances and the
   recordings they use;
3. sorts every file in C order and regenerates ``spk2utt`` from ``utt2spk``
   (``utt2spk`` is derived from ``spk2utt`` when only that exists).

Before a file changes, its original is copied to ``DIR/.backup/<time>/<file>``;
the lines dropped from it go to ``<file>.dropped`` there (so they can be put
back) and the reason for each to ``fix.log``. Only then are the new files
written, each atomically. A dir that is already consistent is left untouched.

Not fixed, because it needs a person: speaker ids that are not a prefix of their
utterance ids (renaming utterances changes every file and downstream archives),
and ``trials`` (a trial list is an evaluation protocol; dropping trials silently
would change results). :func:`~spk.data.validate.validate_data_dir` still reports those.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path

from spk.data.errors import DataDirError, Problem
from spk.data.formats import SPEAKER, UTTERANCE, format_seconds, key_kind
from spk.data.io import Entry, atomic_write_text, c_sorted, scan_data_dir
from spk.data.selection import kept_lines, select
from spk.data.validate import SEGMENT_END_TOLERANCE_S

__all__ = ["BACKUP_DIR_NAME", "FixSummary", "fix_data_dir"]

logger = logging.getLogger(__name__)

BACKUP_DIR_NAME = ".backup"
EXAMPLES_LOGGED = 3


@dataclass(frozen=True)
class FixSummary:
    """What :func:`fix_data_dir` kept, dropped and changed, and where the originals are."""

    path: Path
    num_utterances: int
    num_speakers: int
    num_recordings: int
    dropped: dict[str, int]
    changed: tuple[str, ...]
    backup_dir: Path | None

    def __str__(self) -> str:
        kept = (f"{self.path}: kept {self.num_utterances} utterances, {self.num_speakers} speakers, "
                f"{self.num_recordings} recordings")
        if not self.changed:
            return f"{kept}; nothing to change"
        dropped = ", ".join(f"{name} {count}" for name, count in self.dropped.items() if count) or "none"
        return (f"{kept}; rewrote {', '.join(self.changed)}; lines dropped: {dropped}; "
                f"originals in {self.backup_dir}")


@dataclass(frozen=True)
class _Dropped:
    line: int
    text: str
    reason: str


def fix_data_dir(path: str | os.PathLike) -> FixSummary:
    """Keep the consistent part of data dir ``path``, back up the rest, and say what changed.

    Raises :class:`DataDirError` (and changes nothing) when there is nothing to
    build on: no ``wav.scp``, neither ``utt2spk`` nor ``spk2utt``, or no utterance
    that is consistent across all files.
    """
    data_dir = Path(path)
    files = scan_data_dir(data_dir, include_trials=False)
    where = f"data dir '{data_dir}'"
    if "wav.scp" not in files:
        raise DataDirError(where, [Problem("wav.scp", None, "missing; there is nothing to fix without it",
                                           "write `<rec-id> <path>` for every recording")])
    if "utt2spk" not in files and "spk2utt" not in files:
        raise DataDirError(where, [Problem("utt2spk", None, "missing, and there is no spk2utt to derive it from",
                                           "write `<utt-id> <spk-id>` for every utterance")])
    dropped: dict[str, list[_Dropped]] = defaultdict(list)
    tables = _usable_tables(files, dropped)
    utt2spk = _utt2spk(tables)
    reasons = _why_not_kept(tables, utt2spk)
    keep = [utt for utt in utt2spk if utt not in reasons]
    if not keep:
        raise DataDirError(where, [Problem("utt2spk", None, "no utterance is consistent across the files; "
                                           "nothing was changed", "check that the files name the same utterances")])
    segments = {utt: entry.value for utt, entry in tables["segments"].items()} if "segments" in tables else None
    selection = select(utt2spk, segments, keep)
    new_lines = kept_lines(tables, selection, utt2spk)
    if "utt2spk" not in tables:  # derived from spk2utt
        new_lines["utt2spk"] = [f"{utt} {utt2spk[utt]}" for utt in c_sorted(selection.utterances)]

    speakers = set(utt2spk.values())
    for name, table in tables.items():
        if name == "spk2utt":
            continue
        kind = key_kind(name, table, utt2spk, speakers)
        for key, entry in table.items():
            if key not in selection.ids(kind):
                reason = _reason(key, kind, reasons, has_segments=segments is not None)
                dropped[name].append(_Dropped(entry.line, entry.text, reason))

    changed = [name for name, lines in new_lines.items() if _rendered(lines) != _read_text(data_dir / name)]
    unchanged = FixSummary(data_dir, len(selection.utterances), len(selection.speakers), len(selection.recordings),
                           dropped={}, changed=(), backup_dir=None)
    if not changed:
        logger.info("%s: consistent already; nothing changed", data_dir)
        return unchanged

    backup_dir = _new_backup_dir(data_dir)
    for name in changed:
        if (data_dir / name).exists():
            shutil.copy2(data_dir / name, backup_dir / name)
    _write_dropped(backup_dir, dropped)
    for name in changed:
        atomic_write_text(data_dir / name, _rendered(new_lines[name]))
    _log_dropped(data_dir, dropped)
    logger.info("%s: rewrote %s; originals in %s", data_dir, ", ".join(changed), backup_dir)
    return replace(unchanged, dropped={name: len(lines) for name, lines in sorted(dropped.items())},
                   changed=tuple(changed), backup_dir=backup_dir)


def _usable_tables(files, dropped: dict[str, list[_Dropped]]) -> dict[str, dict[str, Entry]]:
    """``{key: entry}`` per file without malformed lines, repeated keys and impossible values."""
    tables = {}
    for name, scanned in files.items():
        for bad in scanned.bad_lines:
            dropped[name].append(_Dropped(bad.line, bad.text, bad.reason))
        for repeat, first in scanned.duplicates:
            dropped[name].append(_Dropped(repeat.line, repeat.text, f"repeats key {repeat.key!r} of line {first.line}"))
            if repeat.value != first.value:
                logger.warning("%s:%d: key %r repeats line %d with a different value; kept line %d",
                               name, repeat.line, repeat.key, first.line, first.line)
        tables[name] = dict(scanned.table)  # a copy: impossible values are removed below
    reco2dur = {rec: entry.value for rec, entry in tables.get("reco2dur", {}).items() if entry.value >= 0}
    for name in ("segments", "utt2dur", "reco2dur", "utt2num_frames"):
        table = tables.get(name, {})
        for key, entry in list(table.items()):
            reason = _impossible_value(name, entry.value, reco2dur)
            if reason:
                dropped[name].append(_Dropped(entry.line, entry.text, reason))
                del table[key]
    return tables


def _impossible_value(name: str, value, reco2dur: dict[str, float]) -> str | None:
    """Why a parsed value cannot be used, or None."""
    if name in ("utt2dur", "reco2dur", "utt2num_frames") and value < 0:
        return f"negative {'frame count' if name == 'utt2num_frames' else 'duration'} {value}"
    if name != "segments":
        return None
    recording, start, end = value
    if start < 0:
        return f"negative start {format_seconds(start)}"
    if end != -1 and end <= start:
        return f"end {format_seconds(end)} is not after start {format_seconds(start)}"
    if recording in reco2dur and end > reco2dur[recording] + SEGMENT_END_TOLERANCE_S:
        return (f"end {format_seconds(end)} is past the end of recording {recording!r} "
                f"({format_seconds(reco2dur[recording])} s)")
    return None


def _utt2spk(tables: dict[str, dict[str, Entry]]) -> dict[str, str]:
    """utt2spk as a plain mapping, derived from spk2utt when the file is missing."""
    if "utt2spk" in tables:
        return {utt: entry.value for utt, entry in tables["utt2spk"].items()}
    logger.info("utt2spk is missing; deriving it from spk2utt")
    utt2spk: dict[str, str] = {}
    for spk, entry in tables["spk2utt"].items():
        for utt in entry.value:
            if utt in utt2spk:
                logger.warning("spk2utt:%d: utterance %r is also listed under speaker %r; kept that one",
                               entry.line, utt, utt2spk[utt])
            else:
                utt2spk[utt] = spk
    return utt2spk


def _why_not_kept(tables: dict[str, dict[str, Entry]], utt2spk: dict[str, str]) -> dict[str, str]:
    """For every utterance that cannot stay, why; utterances that can stay are absent."""
    wav_scp = tables["wav.scp"]
    segments = tables.get("segments")
    speakers = set(utt2spk.values())
    per_utterance = [name for name, table in tables.items()
                     if name not in ("utt2spk", "segments") and key_kind(name, table, utt2spk, speakers) == UTTERANCE]
    candidates = set(utt2spk).union(*(tables[name] for name in per_utterance), segments if segments is not None
                                    else wav_scp)
    reasons = {}
    for utt in candidates:
        if utt not in utt2spk:
            reasons[utt] = f"utterance {utt!r} has no speaker in utt2spk"
        elif segments is not None and utt not in segments:
            reasons[utt] = f"utterance {utt!r} has no line in segments"
        elif segments is not None and segments[utt].value.recording not in wav_scp:
            reasons[utt] = f"recording {segments[utt].value.recording!r} of utterance {utt!r} is not in wav.scp"
        elif segments is None and utt not in wav_scp:
            reasons[utt] = f"utterance {utt!r} has no recording in wav.scp"
        else:
            missing = [name for name in per_utterance if utt not in tables[name]]
            if missing:
                reasons[utt] = f"utterance {utt!r} is missing from {', '.join(missing)}"
    return reasons


def _reason(key: str, kind: str, reasons: dict[str, str], *, has_segments: bool) -> str:
    """Why the line of ``key`` (an id of ``kind``) was not kept."""
    if kind == SPEAKER:
        return f"speaker {key!r} has no utterance left"
    if key in reasons and (kind == UTTERANCE or not has_segments):  # without segments recordings are utterances
        return reasons[key]
    return f"recording {key!r} is used by no utterance left"


def _rendered(lines: list[str]) -> str:
    return "".join(f"{line}\n" for line in lines)


def _read_text(path: Path) -> str | None:
    """The file's text, or None when it does not exist or is not UTF-8 (either way: rewrite it)."""
    try:
        return path.read_bytes().decode("utf-8")
    except (FileNotFoundError, UnicodeDecodeError):
        return None


def _new_backup_dir(data_dir: Path) -> Path:
    """A fresh ``DIR/.backup/<YYYYmmdd-HHMMSS>[-N]`` so that earlier backups are never overwritten."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    root = data_dir / BACKUP_DIR_NAME
    root.mkdir(exist_ok=True)
    for attempt in range(1, 1000):
        candidate = root / (stamp if attempt == 1 else f"{stamp}-{attempt}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
    raise RuntimeError(f"cannot create a new backup directory in {root}")


def _write_dropped(backup_dir: Path, dropped: dict[str, list[_Dropped]]) -> None:
    """``<file>.dropped`` (the lines verbatim, in file order) and ``fix.log`` (why each went)."""
    log_lines = []
    for name in sorted(dropped):
        lines = sorted(dropped[name], key=lambda item: item.line)
        (backup_dir / f"{name}.dropped").write_text(_rendered([item.text for item in lines]), encoding="utf-8")
        log_lines += [f"{name}:{item.line}: {item.reason}" for item in lines]
    if log_lines:
        (backup_dir / "fix.log").write_text(_rendered(log_lines), encoding="utf-8")


def _log_dropped(data_dir: Path, dropped: dict[str, list[_Dropped]]) -> None:
    """One log line per file with a few examples; ``fix.log`` in the backup has every reason."""
    for name in sorted(dropped):
        items = sorted(dropped[name], key=lambda item: item.line)
        examples = "; ".join(f"line {item.line}: {item.reason}" for item in items[:EXAMPLES_LOGGED])
        more = f"; and {len(items) - EXAMPLES_LOGGED} more" if len(items) > EXAMPLES_LOGGED else ""
        logger.warning("%s/%s: dropped %d line(s): %s%s", data_dir, name, len(items), examples, more)
