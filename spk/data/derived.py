"""Folders derived from data dirs by a command (augmented copies, combinations, built-in sources).

Such a folder carries an info file: the JSON of the options it was made with
(including fingerprints of the files it was made from). The info file says

- that the command made it, so it may be replaced (never someone else's folder);
- whether it is up to date: made again only when the options or sources changed.

It is written by :func:`stage_and_move` through :func:`spk.data.staging.staged_folder`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Callable

from spk.data.staging import staged_folder
from spk.data.subset import source_fingerprint

__all__ = ["check_new_place", "check_replaceable", "fingerprint", "read_info", "stage_and_move"]

logger = logging.getLogger(__name__)


def check_replaceable(out: Path, info_name: str, command: str, error: type[Exception]) -> None:
    """Raise ``error`` unless ``out`` is absent, empty, or was written by ``command`` (has ``info_name``)."""
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise error(f"--out {out} exists and is not a folder; remove it or choose another --out")
    if out.is_dir() and not (out / info_name).is_file() and any(out.iterdir()):
        raise error(f"--out {out} exists and was not written by `{command}`; remove it or choose another --out")


def check_new_place(src: Path, out: Path, error: type[Exception], others: Iterable[Path] = (),
                    option: str = "--src") -> None:
    """Raise ``error`` unless ``src`` is a folder and ``out`` overlaps neither it nor ``others`` (only read)."""
    if not src.is_dir():
        raise error(f"{option} {src}: no such data dir")
    target = out.absolute().resolve()
    for path in [src, *others]:
        path = path.absolute().resolve()
        if target == path or path.is_relative_to(target) or target.is_relative_to(path):
            raise error(f"--out {out} overlaps {path}, which is only read; write the copies somewhere else")


def fingerprint(path: Path) -> dict[str, list[int]]:
    """Size and mtime of every file a derived dir may be made from (``trials`` included: it is carried along)."""
    return source_fingerprint(path, include_trials=True)


def read_info(out: Path, info_name: str) -> dict | None:
    """The options ``out`` was made with, or None (not made, or unreadable)."""
    try:
        return json.loads((out / info_name).read_text())
    except (OSError, ValueError):
        return None


def stage_and_move(out: Path, options: dict, build: Callable[[Path], None], info_name: str) -> None:
    """Run ``build(staging)`` in a fresh folder beside ``out``, record ``options``, then put it at ``out``.

    The swap is :func:`spk.data.staging.staged_folder`'s: an old ``out`` is
    removed after the swap, and a failing build leaves ``out`` as it was.
    """
    with staged_folder(out) as staging:
        build(staging)
        (staging / info_name).write_text(json.dumps(options, sort_keys=True) + "\n")
        if out.exists():
            logger.info("%s: replacing the old one (made with other options or sources)", out)
