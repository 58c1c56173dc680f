"""local/download.py against a real HTTP server on 127.0.0.1: resume, checksums, skips, safe extraction."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import pytest

from local.download import (
    ChecksumError,
    DownloadError,
    RemoteFile,
    completion_flag,
    download_file,
    extract_tar,
)
from tests.fileserver import FileServer

pytest_plugins = ("tests.fileserver",)  # the `server` fixture

PAYLOAD = bytes(range(256)) * 4000  # 1 MB, every byte value


def remote(server: FileServer, name: str = "data.bin", data: bytes = PAYLOAD, **checks) -> RemoteFile:
    server.files[f"/files/{name}"] = data
    if not checks:
        checks = {"md5": hashlib.md5(data).hexdigest()}
    return RemoteFile(urls=(f"{server.url}/files/{name}",), name=name, **checks)


FAST = {"progress": False, "retry_wait": 0.0, "timeout": 10.0}


def test_download_verifies_renames_and_leaves_no_part(server, tmp_path):
    path = download_file(remote(server), tmp_path, **FAST)
    assert path == tmp_path / "data.bin" and path.read_bytes() == PAYLOAD
    assert not (tmp_path / "data.bin.part").exists()
    assert server.requests == [("/files/data.bin", None)]


def test_sha256_is_checked_too(server, tmp_path):
    file = remote(server, sha256=hashlib.sha256(PAYLOAD).hexdigest())
    assert download_file(file, tmp_path, **FAST).read_bytes() == PAYLOAD
    bad = remote(server, name="other.bin", sha256="0" * 64)
    with pytest.raises(ChecksumError, match="sha256"):
        download_file(bad, tmp_path, **FAST)


def test_present_file_is_skipped_without_a_request(server, tmp_path):
    file = remote(server)
    download_file(file, tmp_path, **FAST)
    download_file(file, tmp_path, **FAST)
    assert len(server.requests) == 1
    assert (tmp_path / ".data.bin.checked").is_file()  # verified once, remembered


def test_present_file_with_a_wrong_checksum_is_an_error(server, tmp_path):
    (tmp_path / "data.bin").write_bytes(PAYLOAD[:1000])
    with pytest.raises(ChecksumError, match="delete it and run again"):
        download_file(remote(server), tmp_path, **FAST)
    assert server.requests == []


def test_interrupted_download_keeps_the_part_and_resumes_with_range(server, tmp_path):
    file = remote(server)
    server.cut_after = 300_000
    with pytest.raises(DownloadError, match="run again to resume") as error:
        download_file(file, tmp_path, retries=0, **FAST)
    part = tmp_path / "data.bin.part"
    assert part.stat().st_size == 300_000 and "300000 bytes are kept" in str(error.value)
    assert not (tmp_path / "data.bin").exists()

    path = download_file(file, tmp_path, retries=0, **FAST)
    assert path.read_bytes() == PAYLOAD and not part.exists()
    assert server.requests[-1] == ("/files/data.bin", "bytes=300000-")


def test_interruption_is_resumed_within_one_call(server, tmp_path):
    server.cut_after = 123_457
    path = download_file(remote(server), tmp_path, retries=2, **FAST)
    assert path.read_bytes() == PAYLOAD
    assert [r for _, r in server.requests] == [None, "bytes=123457-"]


def test_server_without_range_support_starts_over(server, tmp_path):
    server.ranges = False
    (tmp_path / "data.bin.part").write_bytes(b"x" * 5000)  # junk from an earlier attempt
    path = download_file(remote(server), tmp_path, **FAST)
    assert path.read_bytes() == PAYLOAD
    assert server.requests == [("/files/data.bin", "bytes=5000-")]


def test_complete_part_is_not_fetched_again(server, tmp_path):
    (tmp_path / "data.bin.part").write_bytes(PAYLOAD)  # a previous run died before the rename
    assert download_file(remote(server), tmp_path, **FAST).read_bytes() == PAYLOAD
    assert server.requests == [("/files/data.bin", f"bytes={len(PAYLOAD)}-")]  # answered 416


def test_checksum_mismatch_is_clear_and_leaves_nothing(server, tmp_path):
    file = remote(server, md5="0123456789abcdef0123456789abcdef")
    with pytest.raises(ChecksumError) as error:
        download_file(file, tmp_path, **FAST)
    message = str(error.value)
    assert "data.bin" in message and "0123456789abcdef0123456789abcdef" in message
    assert hashlib.md5(PAYLOAD).hexdigest() in message
    assert list(tmp_path.iterdir()) == []


def test_failed_content_check_removes_the_download(server, tmp_path):
    def must_be_short(path: Path) -> None:
        if path.stat().st_size > 10:
            raise DownloadError(f"{path.name} is too long")

    file = RemoteFile(urls=(f"{server.url}/files/a.txt",), name="a.txt", check=must_be_short)
    server.files["/files/a.txt"] = b"0123456789abcdef"
    with pytest.raises(DownloadError, match="too long"):
        download_file(file, tmp_path, **FAST)
    assert list(tmp_path.iterdir()) == []


def test_http_errors_and_mirrors(server, tmp_path):
    missing = RemoteFile(urls=(f"{server.url}/nothing.bin",), name="nothing.bin")
    with pytest.raises(DownloadError, match="HTTP 404"):
        download_file(missing, tmp_path, **FAST)
    server.files["/mirror/data.bin"] = PAYLOAD
    mirrored = RemoteFile(urls=(f"{server.url}/gone/data.bin", f"{server.url}/mirror/data.bin"), name="data.bin",
                          md5=hashlib.md5(PAYLOAD).hexdigest())
    assert download_file(mirrored, tmp_path, **FAST).read_bytes() == PAYLOAD


def test_unreachable_server_is_a_clear_error(tmp_path):
    httpd = FileServer()  # bound, never serving: take its port, then close it
    url = httpd.url
    httpd.server_close()
    with pytest.raises(DownloadError, match="cannot connect"):
        download_file(RemoteFile(urls=(f"{url}/x.bin",), name="x.bin"), tmp_path, **FAST)


# --------------------------------------------------------------------------- extraction


def make_tar(path: Path, members: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
    return path


def test_extract_once_and_redo_when_half_done(tmp_path):
    archive = make_tar(tmp_path / "a.tar.gz", {"Corpus/x/1.txt": b"one", "Corpus/x/2.txt": b"two"})
    target = tmp_path / "out"
    extract_tar(archive, target, progress=False)
    assert (target / "Corpus/x/2.txt").read_bytes() == b"two"
    flag = completion_flag(archive, target)
    assert flag.is_file()
    (target / "Corpus/x/2.txt").unlink()
    extract_tar(archive, target, progress=False)  # complete: skipped
    assert not (target / "Corpus/x/2.txt").exists()
    flag.unlink()  # as if interrupted before the end
    extract_tar(archive, target, progress=False)
    assert (target / "Corpus/x/2.txt").read_bytes() == b"two" and flag.is_file()


@pytest.mark.parametrize("members, links, bad", [
    ({"ok.txt": b"1", "../evil.txt": b"2"}, None, "../evil.txt"),
    ({"/tmp/evil.txt": b"2"}, None, "/tmp/evil.txt"),
    ({"ok.txt": b"1"}, {"sub/link": "../../outside"}, "sub/link"),
    ({"ok.txt": b"1"}, {"abs": "/etc/passwd"}, "abs"),
])
def test_extraction_refuses_paths_outside_the_target(tmp_path, members, links, bad):
    archive = make_tar(tmp_path / "bad.tar.gz", members, links)
    target = tmp_path / "out"
    with pytest.raises(DownloadError, match="refusing") as error:
        extract_tar(archive, target, progress=False)
    assert repr(bad) in str(error.value)
    assert not (tmp_path / "evil.txt").exists() and not (target / "ok.txt").exists()
    assert not completion_flag(archive, target).exists()


def test_damaged_archive_is_a_clear_error(tmp_path):
    archive = tmp_path / "broken.tar.gz"
    archive.write_bytes(b"\x1f\x8b\x08\x00 not really gzip")
    with pytest.raises(DownloadError, match="download it again"):
        extract_tar(archive, tmp_path / "out", progress=False)
