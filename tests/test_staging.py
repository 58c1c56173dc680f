"""The one stage-then-swap writer (spk.data.staging)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from spk.data import staged_folder, swap_into_place


def test_staged_folder_replaces_the_old_one_with_usual_permissions(tmp_path):
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "old.txt").write_text("old\n")
    with staged_folder(dest) as staging:
        assert staging.parent == tmp_path and not dest.samefile(staging)
        (staging / "new.txt").write_text("new\n")
        assert (dest / "old.txt").is_file()  # the old one stays until the build is finished
    assert sorted(p.name for p in dest.iterdir()) == ["new.txt"]
    umask = os.umask(0)
    os.umask(umask)
    assert dest.stat().st_mode & 0o777 == 0o777 & ~umask  # not mkdtemp's private 0700
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # nothing staged or old left beside it


def test_failing_build_leaves_the_destination_as_it_was(tmp_path):
    dest = tmp_path / "a" / "out"
    dest.mkdir(parents=True)
    (dest / "old.txt").write_text("old\n")
    with pytest.raises(RuntimeError, match="build failed"), staged_folder(dest) as staging:
        (staging / "half.txt").write_text("half\n")
        raise RuntimeError("build failed")
    assert [p.name for p in dest.parent.iterdir()] == ["out"]
    assert [p.name for p in dest.iterdir()] == ["old.txt"]


def test_swap_replaces_a_file_or_link_and_puts_the_old_back_when_the_rename_fails(tmp_path, monkeypatch):
    new = tmp_path / "new"
    new.mkdir()
    (tmp_path / "target").write_text("target\n")
    link = tmp_path / "dest"
    link.symlink_to(tmp_path / "target")
    swap_into_place(new, link)
    assert link.is_dir() and not link.is_symlink() and (tmp_path / "target").is_file()

    other = tmp_path / "other"
    other.mkdir()
    real_rename = Path.rename

    def refuse_new(self, target):
        if self == other:
            raise OSError("rename refused")
        return real_rename(self, target)

    monkeypatch.setattr(Path, "rename", refuse_new)
    with pytest.raises(OSError, match="rename refused"):
        swap_into_place(other, link)
    assert link.is_dir() and sorted(p.name for p in tmp_path.iterdir()) == ["dest", "other", "target"]
