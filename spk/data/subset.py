"""Copy part of a data dir (Kaldi's ``subset_data_dir.sh``) or cut it into parts (``split_data.sh``).

Both keep every file consistent: per-utterance files keep the chosen utterances,
per-speaker files their speakers, per-recording files (``wav.scp``, ``reco2dur``)
the recordings they use, and ``spk2utt`` is regenerated. Files are copied line by
line, verbatim. Files the toolkit does not know are not copied.

``trials`` goes into a subset with the lines whose enroll id *and* test id are
both utterances or speakers of the subset (no trials file when no line survives);
split parts get no trials (they serve parallel jobs over utterances).
"""

from __future__ import annotations

import bisect
import itertools
import json
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from spk.data.errors import DataDirUsageError
from spk.data.formats import FORMATS
from spk.data.io import ScannedFile, c_sorted, utt2spk_to_spk2utt, write_lines
from spk.data.selection import Selection, kept_lines, kept_trial_lines, lines_by_part, select
from spk.data.validate import DataDirSummary, validate_and_scan, validate_data_dir

__all__ = ["SPLIT_INFO_NAME", "split_data_dir", "subset_data_dir"]

logger = logging.getLogger(__name__)

# Written into split{n}/ after all parts: the split mode and the source files it was made from.
SPLIT_INFO_NAME = ".split_info.json"
EXAMPLES_LOGGED = 3


def subset_data_dir(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    utts: Iterable[str] | None = None,
    speakers: Iterable[str] | None = None,
    first: int | None = None,
) -> DataDirSummary:
    """Write to ``dst`` the part of valid data dir ``src`` chosen by utterances, speakers and/or count.

    ``utts`` and ``speakers`` keep the utterances listed, or those of the speakers
    listed (both: utterances in both); ``first`` then keeps the first ``first``
    utterances in sorted order. Ids that ``src`` does not have are logged and
    ignored. Data-dir files already in ``dst`` that the subset does not have are
    removed so ``dst`` stays consistent. Returns the summary of the validated ``dst``.

    Raises :class:`DataDirError` when ``src`` is not valid, and
    :class:`DataDirUsageError` when nothing is chosen, nothing is left, or ``dst`` is ``src``.
    """
    src, dst = Path(src), Path(dst)
    if utts is None and speakers is None and first is None:
        raise DataDirUsageError("choose what to keep: utterances, speakers or the first N utterances")
    if first is not None and first < 1:
        raise DataDirUsageError(f"first must be at least 1, not {first}")
    if dst.exists() and dst.resolve() == src.resolve():
        raise DataDirUsageError(f"the subset must go to another directory than its source {src}")
    _, files = validate_and_scan(src)
    tables = {name: scanned.table for name, scanned in files.items() if name != "trials"}
    utt2spk = {utt: entry.value for utt, entry in tables["utt2spk"].items()}

    chosen = c_sorted(utt2spk)
    if utts is not None:
        wanted = set(utts)
        _log_unknown("utterances", wanted - utt2spk.keys(), src)
        chosen = [utt for utt in chosen if utt in wanted]
    if speakers is not None:
        wanted = set(speakers)
        _log_unknown("speakers", wanted - set(utt2spk.values()), src)
        chosen = [utt for utt in chosen if utt2spk[utt] in wanted]
    if first is not None:
        chosen = chosen[:first]
    if not chosen:
        raise DataDirUsageError(f"the subset of {src} is empty: none of the chosen utterances or speakers is in it")

    selection = select(utt2spk, _segments(tables), chosen)
    lines = kept_lines(tables, selection, utt2spk)
    if "trials" in files:
        _add_trials(lines, files["trials"], selection)
    _write_data_dir(dst, lines)
    logger.info("%s: %d of %d utterances of %s", dst, len(chosen), len(utt2spk), src)
    return validate_data_dir(dst)


def split_data_dir(src: str | os.PathLike, n: int, *, by_speaker: bool = False) -> list[Path]:
    """Cut valid data dir ``src`` into ``n`` balanced parts ``src/split{n}/{1..n}``; return their paths.

    Parts are contiguous runs of the sorted utterances (so results of parallel
    jobs concatenate in order), as equal in size as possible. With
    ``by_speaker`` they are runs of the sorted speakers, each speaker whole in
    one part, balancing the utterance counts.

    Existing parts are reused when they were made in the same mode from the same
    source files (same names, sizes and modification times); otherwise they are
    rewritten. Raises :class:`DataDirUsageError` when ``n`` is below 1 or above
    the number of utterances (of speakers, with ``by_speaker``), and
    :class:`DataDirError` when ``src`` is not valid.
    """
    src = Path(src)
    if n < 1:
        raise DataDirUsageError(f"cannot split into {n} parts; give at least 1")
    split_root = src / f"split{n}"
    parts = [split_root / str(index) for index in range(1, n + 1)]
    info = {"mode": "speaker" if by_speaker else "utterance", "sources": source_fingerprint(src)}
    if _read_split_info(split_root) == info and all(part.is_dir() for part in parts):
        logger.info("%s: up to date; reusing it", split_root)
        return parts

    _, files = validate_and_scan(src)
    tables = {name: scanned.table for name, scanned in files.items() if name != "trials"}
    utt2spk = {utt: entry.value for utt, entry in tables["utt2spk"].items()}
    groups = _split_by_speaker(utt2spk, n, src) if by_speaker else _split_by_utterance(utt2spk, n, src)
    segments = _segments(tables)
    selections = [select(utt2spk, segments, group) for group in groups]

    (split_root / SPLIT_INFO_NAME).unlink(missing_ok=True)  # parts are incomplete until it is rewritten
    for part, lines in zip(parts, lines_by_part(tables, selections, utt2spk)):
        _write_data_dir(part, lines)
    write_lines(split_root / SPLIT_INFO_NAME, [json.dumps(info, sort_keys=True)])
    logger.info("%s: %d parts by %s, %s utterances each", split_root, n, info["mode"],
                "/".join(str(len(group)) for group in groups))
    return parts


def _split_by_utterance(utt2spk: dict[str, str], n: int, src: Path) -> list[list[str]]:
    utts = c_sorted(utt2spk)
    if n > len(utts):
        raise DataDirUsageError(f"cannot split {src} into {n} parts: it has only {len(utts)} utterances")
    return [utts[cut.start:cut.stop] for cut in _balanced_runs([1] * len(utts), n)]


def _split_by_speaker(utt2spk: dict[str, str], n: int, src: Path) -> list[list[str]]:
    spk2utt = utt2spk_to_spk2utt(utt2spk)
    if n > len(spk2utt):
        raise DataDirUsageError(f"cannot split {src} into {n} parts by speaker: it has only {len(spk2utt)} speakers")
    speakers = list(spk2utt)
    runs = _balanced_runs([len(spk2utt[spk]) for spk in speakers], n)
    return [c_sorted(utt for spk in speakers[run.start:run.stop] for utt in spk2utt[spk]) for run in runs]


def _balanced_runs(weights: Sequence[int], n: int) -> list[range]:
    """Cut ``weights`` into ``n`` non-empty runs, in order, whose sums are close to ``sum / n``.

    Cut ``k`` goes where the running total is nearest ``k * sum / n``, leaving at
    least one item for every run. Unit weights give runs whose sizes differ by at most one.
    """
    prefix = [0, *itertools.accumulate(weights)]  # prefix[c] = sum(weights[:c])
    cuts = [0]
    for k in range(1, n):
        target = prefix[-1] * k / n
        low, high = cuts[-1] + 1, len(weights) - (n - k)
        above = bisect.bisect_left(prefix, target, low, high + 1)
        candidates = [c for c in (above - 1, above) if low <= c <= high]
        cuts.append(min(candidates, key=lambda c: abs(prefix[c] - target)))
    cuts.append(len(weights))
    return [range(start, stop) for start, stop in zip(cuts, cuts[1:])]


def _segments(tables):
    return {utt: entry.value for utt, entry in tables["segments"].items()} if "segments" in tables else None


def _add_trials(lines: dict[str, list[str]], trials: ScannedFile, selection: Selection) -> None:
    kept = kept_trial_lines(trials, selection)
    logger.info("trials: %d of %d lines have both ids in the subset", len(kept), len(trials.entries))
    if kept:
        lines["trials"] = kept


def _write_data_dir(dst: Path, lines: dict[str, list[str]]) -> None:
    """Write the non-empty files of ``lines`` into ``dst`` and remove other data-dir files there."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in FORMATS:
        if lines.get(name):
            write_lines(dst / name, lines[name])
        elif (dst / name).is_file():
            logger.info("%s: removing %s, which the new contents do not have", dst, name)
            (dst / name).unlink()


def _log_unknown(what: str, unknown: set[str], src: Path) -> None:
    if unknown:
        examples = ", ".join(repr(key) for key in c_sorted(unknown)[:EXAMPLES_LOGGED])
        logger.warning("%d %s are not in %s, e.g. %s; ignoring them", len(unknown), what, src, examples)


def source_fingerprint(src: Path, *, include_trials: bool = False) -> dict[str, list[int]]:
    """Size and modification time (ns) of every data-dir file of ``src`` (``trials`` only if asked).

    Writers that derive a data dir from ``src`` store it, so that an output made
    from files that have changed since is recognised as out of date.
    """
    fingerprint = {}
    for name in FORMATS:
        path = src / name
        if (name != "trials" or include_trials) and path.is_file():
            stat = path.stat()
            fingerprint[name] = [stat.st_size, stat.st_mtime_ns]
    return fingerprint


def _read_split_info(split_root: Path) -> dict | None:
    try:
        return json.loads((split_root / SPLIT_INFO_NAME).read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None
