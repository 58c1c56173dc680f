"""The outputs of ``spk augment``: when one may be replaced, and with which options it was made.

Used by the writers of ``spk augment`` (copies, combinations, sources). A folder is
only replaced when one of them made it: it carries an info file (JSON of the
options it was made with), which also tells when it is up to date.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Callable

from spk.data.staging import staged_folder

logger = logging.getLogger(__name__)


def check_replaceable(out: Path, info_name: str, command: str, error: type[Exception]) -> None:
    """Raise ``error`` unless ``out`` is absent, empty, or was written by ``command`` (has ``info_name``)."""
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise error(f"--out {out} exists and is not a folder; remove it or choose another --out")
    if out.is_dir() and not (out / info_name).is_file() and any(out.iterdir()):
        raise error(f"--out {out} exists and was not written by `{command}`; remove it or choose another --out")


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
