"""Downloads for the public corpora: resumable, checksummed, skipped when present; safe tar extraction.

:func:`download_file` fetches one :class:`RemoteFile` into a folder:

- a file already there whose checksum matches is kept (its check is remembered
  in ``.<name>.checked``, so a large archive is not hashed again on every run);
- the bytes go to ``<name>.part``; an interrupted download is resumed from where
  it stopped with an HTTP ``Range`` request (a server that ignores ``Range`` is
  read again from the start), retrying a few times before giving up;
- the finished ``.part`` is checked (md5 or sha256, and an optional caller's
  check) and only then renamed to ``<name>``, so a final file is never corrupt.
  A checksum mismatch removes the ``.part`` (resuming it could not help) and
  raises :class:`ChecksumError` naming the file, the URL and both sums.

:func:`extract_tar` unpacks a tar archive (``.tar``, ``.tar.gz``, ...) into a
folder, refusing members that would land outside it (absolute paths, ``..``,
links pointing out, device files), and writes ``.<archive>.complete`` when it is
done: an extraction that was interrupted has no flag and is redone.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import socket
import stat
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

logger = logging.getLogger("local.download")

CHUNK_BYTES = 1 << 20
PART_SUFFIX = ".part"
USER_AGENT = "spk-data-prep/1.0 (python urllib)"
# Errors after which a download is worth resuming: the connection broke or timed out.
_TRANSIENT = (http.client.IncompleteRead, ConnectionError, socket.timeout, TimeoutError, urllib.error.URLError)


class DownloadError(RuntimeError):
    """A file could not be downloaded or extracted; the message says which and what to do."""


class ChecksumError(DownloadError):
    """A downloaded (or already present) file does not have the published checksum."""


class _Interrupted(DownloadError):
    """The server stopped sending before the end of the file (resumable)."""


@dataclass(frozen=True)
class RemoteFile:
    """A file to download: its URLs (mirrors, tried in order), its local name and its published checksum.

    ``md5`` or ``sha256`` (hex) is checked when given; ``check``, when given, is
    called on the finished download before it is renamed into place and raises
    :class:`DownloadError` when the content is wrong (e.g. a line count, for
    files without a published checksum).
    """

    urls: tuple[str, ...]
    name: str
    md5: str | None = None
    sha256: str | None = None
    check: Callable[[Path], None] | None = None

    def __post_init__(self) -> None:
        if not self.urls:
            raise ValueError(f"{self.name}: no URL to download it from")
        if "/" in self.name or self.name in ("", ".", ".."):
            raise ValueError(f"{self.name!r} is not a plain file name")

    @property
    def checksum(self) -> tuple[str, str] | None:
        """``(algorithm, hex digest)`` to verify, sha256 preferred; None when none was published."""
        if self.sha256:
            return "sha256", self.sha256.lower()
        if self.md5:
            return "md5", self.md5.lower()
        return None


def on_mirrors(name: str, base_urls: tuple[str, ...], **checksums) -> RemoteFile:
    """The :class:`RemoteFile` ``name`` found under each of ``base_urls`` (mirrors, in order)."""
    return RemoteFile(urls=tuple(f"{url.rstrip('/')}/{name}" for url in base_urls), name=name, **checksums)


def fetch_and_extract(remote: RemoteFile, corpus_dir: Path, download_dir: Path | None, *, present: tuple[Path, ...],
                      extract: Callable[..., Path] | None = None, **options) -> None:
    """Download ``remote`` into ``download_dir`` (default ``corpus_dir/downloads``) and extract it into
    ``corpus_dir`` (:func:`extract_tar`, or ``extract``).

    Skipped when this tool extracted it before, and when one of the folders
    ``present`` (where the archive's content may be) is already there without an
    archive of ours beside it: extracted by hand. ``options`` go to :func:`download_file`.
    """
    corpus_dir = Path(corpus_dir)
    download_dir = Path(download_dir) if download_dir is not None else corpus_dir / "downloads"
    if completion_flag(remote.name, corpus_dir).is_file():
        logger.info("%s is already downloaded and extracted in %s", remote.name, corpus_dir)
        return
    there = next((path for path in present if path.is_dir()), None)
    if there is not None and not any((download_dir / n).exists() for n in (remote.name, remote.name + ".part")):
        logger.info("%s is already there (not downloaded by this tool); using it as it is", there)
        return
    extract = extract or extract_tar
    extract(download_file(remote, download_dir, **options), corpus_dir, progress=options.get("progress", True))


def file_digest(path: Path, algorithm: str, *, progress: bool = False) -> str:
    """Hex digest of a file with ``hashlib`` algorithm ``algorithm`` (``"md5"``, ``"sha256"``)."""
    from tqdm import tqdm

    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle, tqdm(total=path.stat().st_size, unit="B", unit_scale=True,
                                          desc=f"checking {path.name}", disable=not progress) as bar:
        for block in iter(lambda: handle.read(CHUNK_BYTES), b""):
            digest.update(block)
            bar.update(len(block))
    return digest.hexdigest()


def download_file(remote: RemoteFile, dest_dir: str | os.PathLike, *, retries: int = 3, timeout: float = 60.0,
                  retry_wait: float = 2.0, progress: bool = True) -> Path:
    """Download ``remote`` into ``dest_dir`` (see the module docstring) and return the final path.

    ``retries`` is how many times an interrupted transfer is resumed within this
    call; when they run out the ``.part`` file stays, and running again resumes it.
    Raises :class:`DownloadError` (HTTP errors, no mirror reachable, a failed
    ``check``) and :class:`ChecksumError`.
    """
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    final = dest_dir / remote.name
    if final.exists():
        _check_present(remote, final, progress)
        logger.info("%s is already there%s; skipping the download", final, " (checksum verified)" if remote.checksum else "")
        return final
    part = dest_dir / (remote.name + PART_SUFFIX)
    errors = []
    for url in remote.urls:
        try:
            _fetch_with_resume(url, part, retries=retries, timeout=timeout, retry_wait=retry_wait,
                               progress=progress)
            break
        except _Interrupted as error:
            raise DownloadError(f"{error}; {part.stat().st_size if part.exists() else 0} bytes are kept in "
                                f"{part}: run again to resume") from None
        except DownloadError as error:
            errors.append(str(error))
            logger.warning("%s", error)
    else:
        raise DownloadError(f"could not download {remote.name} from any of its URLs:\n  " + "\n  ".join(errors)
                            + "\nCheck the network (or a proxy), or download it by hand into " + str(dest_dir))
    _verify_part(remote, part, final, progress)
    os.replace(part, final)
    _remember_check(remote, final)
    logger.info("downloaded %s (%d bytes)", final, final.stat().st_size)
    return final


def _check_present(remote: RemoteFile, final: Path, progress: bool) -> None:
    """A file already in place must have the published checksum (checked once, then remembered)."""
    checksum = remote.checksum
    if checksum is None:
        return
    if _check_marker(final).is_file() and _check_marker(final).read_text() == _check_record(remote, final):
        return
    algorithm, expected = checksum
    actual = file_digest(final, algorithm, progress=progress)
    if actual != expected:
        raise ChecksumError(f"{final} is present but its {algorithm} is {actual}, not the published {expected}: "
                            "it is incomplete or another file; delete it and run again to download it afresh")
    _remember_check(remote, final)


def _check_marker(final: Path) -> Path:
    return final.with_name(f".{final.name}.checked")


def _check_record(remote: RemoteFile, final: Path) -> str:
    stat = final.stat()
    algorithm, digest = remote.checksum or ("none", "-")
    return f"{algorithm} {digest} {stat.st_size} {stat.st_mtime_ns}\n"


def _remember_check(remote: RemoteFile, final: Path) -> None:
    if remote.checksum is not None:
        _check_marker(final).write_text(_check_record(remote, final))


def _verify_part(remote: RemoteFile, part: Path, final: Path, progress: bool) -> None:
    """Checksum and caller's check of a finished download; a bad one is removed."""
    checksum = remote.checksum
    if checksum is not None:
        algorithm, expected = checksum
        actual = file_digest(part, algorithm, progress=progress)
        if actual != expected:
            part.unlink()
            raise ChecksumError(
                f"downloaded {final.name} from {remote.urls[0]}, but its {algorithm} is {actual}, not the "
                f"published {expected}; the download was removed (nothing was written to {final}). Run again; "
                "if it fails again, the server's file has changed: check the URL and the published checksum")
    else:
        logger.warning("%s has no published checksum; only its length is checked", final.name)
    if remote.check is not None:
        try:
            remote.check(part)
        except DownloadError:
            part.unlink()
            raise


def _fetch_with_resume(url: str, part: Path, *, retries: int, timeout: float, retry_wait: float,
                       progress: bool) -> None:
    """Fill ``part`` with the whole file at ``url``, resuming after interruptions up to ``retries`` times."""
    for attempt in range(retries + 1):
        try:
            _fetch(url, part, timeout=timeout, progress=progress)
            return
        except (_Interrupted, *_TRANSIENT) as error:
            if isinstance(error, urllib.error.URLError) and not part.exists():
                raise DownloadError(f"{url}: cannot connect ({error.reason})") from None
            if attempt == retries:
                raise _Interrupted(f"{url}: the transfer broke off ({error})") from None
            logger.warning("%s: the transfer broke off (%s); resuming in %.0f s (%d of %d)", url, error,
                           retry_wait, attempt + 1, retries)
            time.sleep(retry_wait)


def _fetch(url: str, part: Path, *, timeout: float, progress: bool) -> None:
    """One request: append to ``part`` from its current size (``Range``), or start over if the server must."""
    from tqdm import tqdm

    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        if error.code == 416 and offset:  # nothing after offset: the part holds the whole file already
            logger.info("%s: %s is already complete", url, part)
            return
        raise DownloadError(f"{url}: HTTP {error.code} {error.reason}") from None
    with response:
        if offset and (response.status != 206 or _range_start(response) != offset):
            logger.warning("%s: the server does not resume downloads (no Range support); starting over", url)
            offset = 0
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length is not None else None
        mode = "ab" if offset else "wb"
        received = offset
        with open(part, mode) as handle, tqdm(total=total, initial=offset, unit="B", unit_scale=True,
                                              desc=part.name[: -len(PART_SUFFIX)], disable=not progress) as bar:
            while True:
                block = response.read(CHUNK_BYTES)
                if not block:
                    break
                handle.write(block)
                received += len(block)
                bar.update(len(block))
    if total is not None and received < total:
        raise _Interrupted(f"{url}: got {received} of {total} bytes")


def _range_start(response) -> int | None:
    """The first byte of a 206 response, from ``Content-Range: bytes START-END/TOTAL``."""
    value = response.headers.get("Content-Range", "")
    try:
        return int(value.split()[1].split("-")[0])
    except (IndexError, ValueError):
        return None


# --- extraction ---------------------------------------------------------------------------


def completion_flag(archive: str | os.PathLike, target_dir: str | os.PathLike) -> Path:
    """The flag :func:`extract_tar` writes into ``target_dir`` when ``archive`` is fully extracted."""
    return Path(target_dir) / f".{Path(archive).name}.complete"


def extract_tar(archive: str | os.PathLike, target_dir: str | os.PathLike, *, progress: bool = True) -> Path:
    """Extract tar ``archive`` into ``target_dir`` safely, once; returns ``target_dir``.

    Skipped when the completion flag is there. Every member is checked before
    anything is written: one that would land outside ``target_dir`` (absolute
    path, ``..``, a link pointing out) or is a device or fifo raises
    :class:`DownloadError` naming it. A half-extracted archive (no flag) is
    extracted again over what is there.
    """
    return _extract_once(Path(archive), Path(target_dir), _tar_members, (tarfile.TarError, EOFError, OSError),
                         progress)


def extract_zip(archive: str | os.PathLike, target_dir: str | os.PathLike, *, progress: bool = True) -> Path:
    """Extract zip ``archive`` into ``target_dir`` safely, once, as :func:`extract_tar` does.

    A member that would land outside ``target_dir`` (absolute path, ``..``, a drive
    letter) or is a symbolic link raises :class:`DownloadError` naming it.
    """
    return _extract_once(Path(archive), Path(target_dir), _zip_members, (zipfile.BadZipFile, EOFError, OSError),
                         progress)


def _extract_once(archive: Path, target_dir: Path, open_members, errors: tuple, progress: bool) -> Path:
    """Check every member, then extract them all, and leave the completion flag; skip when it is there.

    ``open_members(archive, target_dir)`` is a context manager giving the checked
    members and a function that extracts one of them.
    """
    from tqdm import tqdm

    flag = completion_flag(archive, target_dir)
    if flag.is_file():
        logger.info("%s is already extracted into %s; skipping", archive.name, target_dir)
        return target_dir
    target_dir.mkdir(parents=True, exist_ok=True)
    try:
        with open_members(archive, target_dir) as (members, extract):
            for member in tqdm(members, desc=f"extracting {archive.name}", unit="file", disable=not progress):
                extract(member)
    except errors as error:
        raise DownloadError(f"cannot extract {archive}: {error}. If the archive is damaged, delete it and "
                            "download it again") from None
    flag.write_text(f"{archive.name} {len(members)} members\n")
    logger.info("extracted %s (%d members) into %s", archive.name, len(members), target_dir)
    return target_dir


@contextmanager
def _tar_members(archive: Path, target_dir: Path):
    with tarfile.open(archive, "r:*") as tar:
        members = tar.getmembers()
        for member in members:
            _check_member(member, archive)
        # members were checked above; the "data" filter (Python >= 3.11.4) checks them again
        yield members, lambda member: tar.extract(member, target_dir, **_EXTRACT_OPTIONS)


@contextmanager
def _zip_members(archive: Path, target_dir: Path):
    with zipfile.ZipFile(archive) as handle:
        members = handle.infolist()
        for member in members:
            _check_zip_member(member, archive)
        yield members, lambda member: handle.extract(member, target_dir)


def _check_zip_member(member: zipfile.ZipInfo, archive: Path) -> None:
    """Refuse a zip member that could write outside the target folder, or a link."""
    name = PurePosixPath(member.filename.replace("\\", "/"))
    if name.is_absolute() or ".." in name.parts or (name.parts and ":" in name.parts[0]):
        raise DownloadError(f"{archive}: member {member.filename!r} would be written outside the target folder; "
                            "refusing to extract this archive")
    if stat.S_ISLNK(member.external_attr >> 16):
        raise DownloadError(f"{archive}: member {member.filename!r} is a symbolic link; refusing to extract "
                            "this archive")


_EXTRACT_OPTIONS = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}


def _check_member(member: tarfile.TarInfo, archive: Path) -> None:
    """Refuse a member that could write outside the target folder."""
    name = PurePosixPath(member.name)
    if name.is_absolute() or ".." in name.parts:
        raise DownloadError(f"{archive}: member {member.name!r} would be written outside the target folder; "
                            "refusing to extract this archive")
    if member.issym() or member.islnk():
        link = PurePosixPath(member.linkname)
        resolved = link if member.islnk() else name.parent / link
        if link.is_absolute() or _escapes(resolved):
            raise DownloadError(f"{archive}: member {member.name!r} links to {member.linkname!r}, outside the "
                                "target folder; refusing to extract this archive")
    if member.isdev() or member.isfifo():
        raise DownloadError(f"{archive}: member {member.name!r} is a device or fifo; refusing to extract it")


def _escapes(path: PurePosixPath) -> bool:
    """Whether a relative path climbs above its starting folder."""
    depth = 0
    for part in path.parts:
        depth += -1 if part == ".." else 0 if part == "." else 1
        if depth < 0:
            return True
    return False
