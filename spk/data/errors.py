"""Errors about data directories: one :class:`Problem` per thing wrong, many per error."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["DataDirError", "DataDirUsageError", "DataFormatError", "Problem"]

# A message lists at most this many problems; all of them stay in ``.problems``.
MAX_LISTED_PROBLEMS = 50


@dataclass(frozen=True)
class Problem:
    """One thing wrong in a data-dir file, where it is and how to fix it.

    ``file`` is the file's name inside its data dir (``"utt2spk"``) or a path for
    files read on their own; ``line`` is 1-based, or ``None`` when the problem is
    about the whole file (missing file, missing entries).
    """

    file: str
    line: int | None
    what: str
    fix: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.what}. Fix: {self.fix}"


class DataDirError(Exception):
    """A data dir (or one of its files) breaks the contract; ``.problems`` lists every problem.

    The message names what was checked and lists each problem as
    ``<file>:<line>: <what is wrong>. Fix: <what to do>``.
    """

    def __init__(self, where: str, problems: Sequence[Problem]) -> None:
        self.where = where
        self.problems = list(problems)
        count = len(self.problems)
        lines = [f"{where} has {count} problem{'s' if count != 1 else ''}:"]
        lines += [f"  {problem}" for problem in self.problems[:MAX_LISTED_PROBLEMS]]
        if count > MAX_LISTED_PROBLEMS:
            lines.append(f"  ... and {count - MAX_LISTED_PROBLEMS} more")
        super().__init__("\n".join(lines))


class DataFormatError(DataDirError):
    """A line of a data-dir file cannot be read (a reader's error: one problem, file and line named)."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(f"file '{problem.file}'", [problem])
        self.problem = problem

    def __str__(self) -> str:
        return str(self.problem)


class DataDirUsageError(ValueError):
    """A request a data dir cannot satisfy: an empty subset, more split parts than utterances, ..."""
