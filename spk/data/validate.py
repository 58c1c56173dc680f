"""Check a data dir against the contract, like Kaldi's ``utils/validate_data_dir.sh``.

:func:`validate_data_dir` reads every known file, collects *all* problems and
raises one :class:`~spk.data.errors.DataDirError` listing each as
``<file>:<line>: <what is wrong>. Fix: <what to do>``. Things Kaldi only warns
about (a missing but derivable ``spk2utt``, recordings no segment uses, optional
files that cover only some utterances) are logged and returned as warnings.

What is checked:

- ``wav.scp`` and ``utt2spk`` exist; ``spk2utt``, when present, agrees with ``utt2spk``;
- every line is well formed; every file is sorted as ``LC_ALL=C sort`` sorts and
  its keys are unique;
- the speaker id is a prefix of the utterance id (so that sorting by utterance
  also groups speakers, which Kaldi relies on);
- every utterance has a recording: a ``wav.scp`` entry, or a ``segments`` line
  whose recording is in ``wav.scp``; without ``segments`` every recording is an
  utterance;
- segments: ``start >= 0``, ``end > start`` (or ``end == -1``: to the end), and,
  when ``reco2dur`` knows the recording, ``end`` at most 0.01 s past its end;
- per-utterance files (``feats.scp``, ``cmvn.scp``, ``utt2dur``, ``utt2num_frames``,
  ...) name only utterances of ``utt2spk``; missing entries are problems when the
  caller needs the file (``need_feats``, ...), warnings otherwise;
- ``trials``, when present: well-formed lines with a ``target``/``nontarget`` label.
  Whether its ids are known depends on the enroll and test sets, which may be other
  data dirs: check that with :func:`validate_trials`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path

from spk.data.errors import DataDirError, Problem
from spk.data.formats import FORMATS, UTTERANCE, Trial, format_seconds, key_kind
from spk.data.io import Entry, ScannedFile, c_sorted, scan_data_dir, scan_file

__all__ = ["DataDirSummary", "SEGMENT_END_TOLERANCE_S", "validate_and_scan", "validate_data_dir", "validate_trials"]

logger = logging.getLogger(__name__)

# Kaldi's extract-segments accepts segments that end this far past the recording.
SEGMENT_END_TOLERANCE_S = 0.01
# Per-utterance files that must name only utterances of utt2spk.
PER_UTTERANCE_FILES = ("feats.scp", "cmvn.scp", "vad.scp", "utt2dur", "utt2num_frames", "text",
                       "utt2lang", "utt2uniq")
EXAMPLES_SHOWN = 3
WARNINGS_LOGGED = 20


@dataclass(frozen=True)
class DataDirSummary:
    """What a valid data dir holds; ``warnings`` are the things worth a look but not errors."""

    path: Path
    num_utterances: int
    num_speakers: int
    num_recordings: int
    files: tuple[str, ...]
    warnings: tuple[Problem, ...] = ()

    def __str__(self) -> str:
        return (f"{self.path}: {self.num_utterances} utterances, {self.num_speakers} speakers, "
                f"{self.num_recordings} recordings ({', '.join(self.files)})")


def validate_data_dir(
    path: str | os.PathLike,
    *,
    need_feats: bool = False,
    need_cmvn: bool = False,
    need_durations: bool = False,
) -> DataDirSummary:
    """Check data dir ``path`` and return its summary, or raise one error listing every problem.

    ``need_feats``, ``need_cmvn`` and ``need_durations`` make ``feats.scp``,
    ``cmvn.scp`` and ``utt2dur`` required for every utterance (stages that read
    them pass these). Raises :class:`DataDirError` with ``.problems``.
    """
    summary, _ = validate_and_scan(path, need_feats=need_feats, need_cmvn=need_cmvn, need_durations=need_durations)
    return summary


def validate_and_scan(
    path: str | os.PathLike,
    *,
    need_feats: bool = False,
    need_cmvn: bool = False,
    need_durations: bool = False,
) -> tuple[DataDirSummary, dict[str, ScannedFile]]:
    """:func:`validate_data_dir`, also returning the files it read (by name) for callers that go on to use them."""
    data_dir = Path(path)
    if not data_dir.is_dir():
        raise DataDirError(f"data dir '{data_dir}'", [Problem(
            str(data_dir), None, "is not a directory", "give the path of a data dir (it holds wav.scp, utt2spk, ...)")])
    check = _DataDirCheck(data_dir, needed={"feats.scp": need_feats, "cmvn.scp": need_cmvn,
                                            "utt2dur": need_durations})
    check.run()
    _log_warnings(check.warnings, prefix=f"{data_dir}: ")
    if check.problems:
        raise DataDirError(f"data dir '{data_dir}'", check.problems)
    utt2spk = check.tables["utt2spk"]
    summary = DataDirSummary(
        path=data_dir,
        num_utterances=len(utt2spk),
        num_speakers=len({entry.value for entry in utt2spk.values()}),
        num_recordings=len(check.tables["wav.scp"]),
        files=tuple(check.files),
        warnings=tuple(check.warnings),
    )
    return summary, check.files


def validate_trials(
    trials_path: str | os.PathLike,
    enroll_ids: Collection[str] | None = None,
    test_ids: Collection[str] | None = None,
) -> list[Trial]:
    """Check a trial list and return its trials; raise :class:`DataDirError` listing every problem.

    Lines must be ``<enroll-id> <test-id> target|nontarget`` and a pair may not
    appear with both labels. When given, ``enroll_ids`` (e.g. the speakers and
    utterances of the enroll data dir: an enroll id may stand for a speaker model)
    and ``test_ids`` (the test utterances) must contain every id of the list.
    Repeated pairs and a list without target or without non-target trials are warnings.
    """
    scanned = scan_file(trials_path, FORMATS["trials"])
    problems: list[Problem] = []
    warnings: list[Problem] = []
    _check_trial_lines(scanned, problems, warnings)
    enroll_ids = None if enroll_ids is None else set(enroll_ids)
    test_ids = None if test_ids is None else set(test_ids)
    for entry in scanned.entries:
        test = entry.value[0]
        if enroll_ids is not None and entry.key not in enroll_ids:
            problems.append(Problem(scanned.name, entry.line, f"enroll id {entry.key!r} is not in the enroll set",
                                    "use a speaker or utterance id of the enroll data dir, or delete the line"))
        if test_ids is not None and test not in test_ids:
            problems.append(Problem(scanned.name, entry.line, f"test id {test!r} is not in the test set",
                                    "use an utterance id of the test data dir, or delete the line"))
    _log_warnings(warnings)
    if problems:
        raise DataDirError(f"trial list '{trials_path}'", problems)
    return [Trial(entry.key, *entry.value) for entry in scanned.entries]


def _check_trial_lines(scanned: ScannedFile, problems: list[Problem], warnings: list[Problem]) -> None:
    """Malformed lines and conflicting pairs are problems; repeats and one-sided lists are warnings."""
    problems.extend(scanned.bad_line_problems())
    first: dict[tuple[str, str], Entry] = {}
    for entry in scanned.entries:
        test, target = entry.value
        earlier = first.setdefault((entry.key, test), entry)
        if earlier is entry:
            continue
        if earlier.value[1] != target:
            problems.append(Problem(scanned.name, entry.line,
                                    f"pair {entry.key!r} {test!r} is labelled differently on line {earlier.line}",
                                    "keep the line with the right label"))
        else:
            warnings.append(Problem(scanned.name, entry.line,
                                    f"pair {entry.key!r} {test!r} repeats line {earlier.line}",
                                    "delete the repeat; it counts the trial twice"))
    labels = {entry.value[1] for entry in scanned.entries}
    for target, kind in ((True, "target"), (False, "nontarget")):
        if scanned.entries and target not in labels:
            warnings.append(Problem(scanned.name, None, f"has no {kind} trials",
                                    "add some: EER and minDCF need both kinds"))


def _log_warnings(warnings: list[Problem], prefix: str = "") -> None:
    for warning in warnings[:WARNINGS_LOGGED]:
        logger.warning("%s%s", prefix, warning)
    if len(warnings) > WARNINGS_LOGGED:
        logger.warning("%s... and %d more warnings", prefix, len(warnings) - WARNINGS_LOGGED)


def _examples(keys: Iterable[str]) -> str:
    keys = list(keys)
    shown = ", ".join(repr(key) for key in keys[:EXAMPLES_SHOWN])
    return shown + (", ..." if len(keys) > EXAMPLES_SHOWN else "")


class _DataDirCheck:
    """The state of one validation run: scanned files, their tables, problems and warnings."""

    def __init__(self, data_dir: Path, needed: dict[str, bool]) -> None:
        self.data_dir = data_dir
        self.needed = needed
        self.files = scan_data_dir(data_dir)
        self.tables = {name: scanned.table for name, scanned in self.files.items()}
        self.problems: list[Problem] = []
        self.warnings: list[Problem] = []
        self.run_fix = f"run `spk data fix {data_dir}`"
        self.drop_fix = f"`spk data fix {data_dir}` drops it"

    def problem(self, file: str, line: int | None, what: str, fix: str) -> None:
        self.problems.append(Problem(file, line, what, fix))

    def warning(self, file: str, line: int | None, what: str, fix: str) -> None:
        self.warnings.append(Problem(file, line, what, fix))

    def run(self) -> None:
        self.check_lines()
        if not self.check_required_files():
            return
        self.check_speakers()
        self.check_spk2utt()
        if "segments" in self.files:
            self.check_segments()
        else:
            self.check_wav_scp_utterances()
        self.check_reco2dur()
        for name in PER_UTTERANCE_FILES:
            self.check_per_utterance_file(name)
        if "trials" in self.files:
            _check_trial_lines(self.files["trials"], self.problems, self.warnings)

    def check_lines(self) -> None:
        """Well-formed lines, C-sorted, unique keys, in every keyed file."""
        for name, scanned in self.files.items():
            if name == "trials":
                continue
            self.problems.extend(scanned.bad_line_problems())
            for previous, entry in zip(scanned.entries, scanned.entries[1:]):
                if entry.key < previous.key:
                    self.problem(name, entry.line, f"not sorted: {entry.key!r} comes after {previous.key!r}",
                                 f"sort with `LC_ALL=C sort -k1,1 -u` or {self.run_fix}")
                    break  # one report per file is enough: sorting fixes all
            for repeat, first in scanned.duplicates:
                self.problem(name, repeat.line, f"duplicate key {repeat.key!r} (also on line {first.line})",
                             f"keep one of the two lines; {self.drop_fix} (keeping the first)")

    def check_required_files(self) -> bool:
        """wav.scp and utt2spk exist and utt2spk is not empty; False if checking further is pointless."""
        present = True
        if "wav.scp" not in self.files:
            self.problem("wav.scp", None, "missing", "write `<rec-id> <path>` (or `<rec-id> <command> |`) "
                                                     "for every recording")
            present = False
        if "utt2spk" not in self.files:
            fix = "write `<utt-id> <spk-id>` for every utterance"
            if "spk2utt" in self.files:
                fix += f", or {self.run_fix} to derive it from spk2utt"
            self.problem("utt2spk", None, "missing", fix)
            present = False
        elif not self.tables["utt2spk"] and not self.files["utt2spk"].bad_lines:
            self.problem("utt2spk", None, "has no utterances", "write `<utt-id> <spk-id>` for every utterance")
            present = False
        if "spk2utt" not in self.files:
            self.warning("spk2utt", None, "missing (derivable from utt2spk)", f"{self.run_fix} to write it")
        return present

    def check_speakers(self) -> None:
        """Kaldi's rule: the speaker id is a prefix of the utterance id."""
        for utt, entry in self.tables["utt2spk"].items():
            spk = entry.value
            if not utt.startswith(spk):
                self.problem("utt2spk", entry.line, f"speaker-id {spk!r} is not a prefix of utterance-id {utt!r}",
                             f"rename the utterance to start with its speaker id (e.g. '{spk}-{utt}') in every "
                             "file, so that sorting by utterance also groups speakers")

    def check_spk2utt(self) -> None:
        """spk2utt lists each utterance once, under the speaker utt2spk gives it."""
        if "spk2utt" not in self.files:
            return
        utt2spk = self.tables["utt2spk"]
        regenerate = f"regenerate spk2utt from utt2spk: {self.run_fix}"
        listed: dict[str, Entry] = {}
        for spk, entry in self.tables["spk2utt"].items():
            for utt in entry.value:
                if utt in listed:
                    self.problem("spk2utt", entry.line,
                                 f"utterance {utt!r} is listed again (first on line {listed[utt].line})", regenerate)
                    continue
                listed[utt] = entry
                if utt not in utt2spk:
                    self.problem("spk2utt", entry.line, f"utterance {utt!r} of speaker {spk!r} is not in utt2spk",
                                 regenerate)
                elif utt2spk[utt].value != spk:
                    self.problem("spk2utt", entry.line, f"lists utterance {utt!r} under speaker {spk!r}, "
                                 f"but utt2spk gives it to {utt2spk[utt].value!r}", regenerate)
        for utt, entry in utt2spk.items():
            if utt not in listed:
                self.problem("utt2spk", entry.line,
                             f"utterance {utt!r} of speaker {entry.value!r} is missing from spk2utt", regenerate)

    def check_wav_scp_utterances(self) -> None:
        """Without segments, wav.scp and utt2spk name the same utterances."""
        wav_scp, utt2spk = self.tables["wav.scp"], self.tables["utt2spk"]
        for utt, entry in utt2spk.items():
            if utt not in wav_scp:
                self.problem("utt2spk", entry.line,
                             f"utterance {utt!r} has no recording: it is not in wav.scp "
                             "(and there is no segments file)",
                             f"add its recording to wav.scp, or delete the utterance ({self.drop_fix})")
        for rec, entry in wav_scp.items():
            if rec not in utt2spk:
                self.problem("wav.scp", entry.line,
                             f"utterance {rec!r} has no speaker: it is not in utt2spk "
                             "(without a segments file every recording is an utterance)",
                             f"add `{rec} <spk-id>` to utt2spk, or delete the line ({self.drop_fix})")

    def check_segments(self) -> None:
        """Each segment has a speaker, a known recording and sane times; each utterance a segment."""
        wav_scp, utt2spk = self.tables["wav.scp"], self.tables["utt2spk"]
        reco2dur = self.tables.get("reco2dur", {})
        segments = self.tables["segments"]
        delete = f"correct the line or delete it ({self.drop_fix})"
        for utt, entry in segments.items():
            rec, start, end = entry.value
            if utt not in utt2spk:
                self.problem("segments", entry.line, f"utterance {utt!r} has no speaker: it is not in utt2spk",
                             f"add `{utt} <spk-id>` to utt2spk, or delete the line ({self.drop_fix})")
            if rec not in wav_scp:
                self.problem("segments", entry.line, f"recording {rec!r} of utterance {utt!r} is not in wav.scp",
                             f"add the recording to wav.scp, or delete the line ({self.drop_fix})")
            if start < 0:
                self.problem("segments", entry.line, f"start {format_seconds(start)} s is negative", delete)
            if end != -1 and end <= start:
                self.problem("segments", entry.line,
                             f"end {format_seconds(end)} s is not after start {format_seconds(start)} s", delete)
            elif rec in reco2dur and end > reco2dur[rec].value + SEGMENT_END_TOLERANCE_S:
                self.problem("segments", entry.line,
                             f"end {format_seconds(end)} s is past the end of recording {rec!r} "
                             f"({format_seconds(reco2dur[rec].value)} s in reco2dur)",
                             f"end the segment within the recording (or at -1 for its end), or delete the line "
                             f"({self.drop_fix})")
        for utt, entry in utt2spk.items():
            if utt not in segments:
                self.problem("utt2spk", entry.line, f"utterance {utt!r} has no recording: it is not in segments",
                             f"add its segment, or delete the utterance ({self.drop_fix})")
        used = {entry.value.recording for entry in segments.values()}
        unused = [rec for rec in wav_scp if rec not in used]
        if unused:
            self.warning("wav.scp", None, f"{len(unused)} recordings are used by no segment: {_examples(unused)}",
                         f"{self.run_fix} to remove them")

    def check_reco2dur(self) -> None:
        """reco2dur names recordings of wav.scp and holds positive durations."""
        wav_scp = self.tables["wav.scp"]
        for rec, entry in self.tables.get("reco2dur", {}).items():
            if rec not in wav_scp:
                self.problem("reco2dur", entry.line, f"recording {rec!r} is not in wav.scp",
                             f"delete the line ({self.drop_fix})")
            self.check_amount("reco2dur", entry, "duration")

    def check_amount(self, name: str, entry: Entry, what: str) -> None:
        """A duration or frame count: negative is an error, zero a warning."""
        if entry.value < 0:
            self.problem(name, entry.line, f"{what} {entry.value} is negative",
                         f"correct the line or delete it ({self.drop_fix})")
        elif entry.value == 0:
            self.warning(name, entry.line, f"{what} of {entry.key!r} is 0", "check the audio; an empty utterance "
                         "gives no features")

    def check_per_utterance_file(self, name: str) -> None:
        """The file names only known utterances (or speakers, for Kaldi's cmvn.scp) and covers them all."""
        needed = self.needed.get(name, False)
        if name not in self.files:
            if needed:
                self.problem(name, None, "missing", _how_to_make(name))
            return
        table = self.tables[name]
        utt2spk = self.tables["utt2spk"]
        speakers = {entry.value for entry in utt2spk.values()}
        kind = key_kind(name, table, utt2spk, speakers)
        owners = utt2spk if kind == UTTERANCE else speakers
        for key, entry in table.items():
            if key not in owners:
                self.problem(name, entry.line, f"{kind} {key!r} is not in utt2spk",
                             f"delete the line ({self.drop_fix}), or add the {kind} to utt2spk")
            if name == "utt2dur":
                self.check_amount(name, entry, "duration")
            elif name == "utt2num_frames":
                self.check_amount(name, entry, "frame count")
        missing = c_sorted(key for key in owners if key not in table)
        if missing:
            fix = _how_to_make(name)
            if kind == UTTERANCE:  # fix_data_dir drops utterances, never whole speakers
                fix += f"; or drop those utterances: {self.run_fix}"
            report = self.problem if needed else self.warning
            report(name, None, f"{len(missing)} of {len(owners)} {kind}s have no entry: {_examples(missing)}", fix)


def _how_to_make(name: str) -> str:
    """What writes file ``name``, for a fix message."""
    if name in ("feats.scp", "cmvn.scp"):
        return "compute features and CMVN statistics for every utterance (stage 1)"
    if name == "utt2dur":
        return "write `<utt-id> <seconds>` for every utterance to utt2dur"
    return f"write `{FORMATS[name].layout}` for every {FORMATS[name].key_kind}"
