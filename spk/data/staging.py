"""Writing a folder safely: build it beside its destination, then swap it into place.

The one writer of every folder that is made whole and must never be seen half
made: data dirs written by ``local/`` preparations, the outputs of
``spk augment``, model packages and the synthetic mini corpus.

- :func:`staged_folder` gives a fresh folder beside the destination to build in
  and swaps it into place when the build finished;
- :func:`swap_into_place` is the swap alone, for a caller that made its own
  staging folder (it must be on the destination's file system, e.g. beside it).

Guarantees: a failing build leaves the old destination as it was; the old one
is moved aside, then removed only once the new one took its place (and put back
if that rename fails); the new folder gets the usual permissions (the umask's).
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def staged_folder(dest: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty folder beside ``dest``; when the block ends normally, it becomes ``dest``.

    Whatever was at ``dest`` is replaced (see :func:`swap_into_place`). When the
    block raises, the staging folder is removed and ``dest`` is left untouched.
    The parent of ``dest`` is created if needed.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.staging-", dir=dest.parent))
    _usual_permissions(staging)
    try:
        yield staging
        swap_into_place(staging, dest)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def swap_into_place(new: str | os.PathLike, dest: str | os.PathLike) -> None:
    """Rename the finished folder ``new`` to ``dest``, replacing the folder, file or link there.

    The old ``dest`` is first renamed aside (a hidden name beside it) and removed
    after ``new`` took its place; if that rename fails, the old one is put back
    and the error raised. ``new`` must be on the file system of ``dest``.
    """
    new, dest = Path(new), Path(dest)
    if not (dest.exists() or dest.is_symlink()):
        new.rename(dest)
        return
    old = dest.with_name(f".{dest.name}.old-{os.getpid()}-{secrets.token_hex(4)}")
    dest.rename(old)
    try:
        new.rename(dest)
    except BaseException:
        old.rename(dest)
        raise
    if old.is_dir() and not old.is_symlink():
        shutil.rmtree(old, ignore_errors=True)
    else:
        old.unlink()


def _usual_permissions(folder: Path) -> None:
    """mkdtemp makes a private (0700) folder; the output should get the usual permissions (umask applies)."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
