"""Options of the product commands that are wrong before anything is loaded: usage errors (exit 2)
that name the option, with no model loaded and no database touched; a bug's exit status (4, never
1, which means REJECT); and the database file's mode."""

from __future__ import annotations

import json
import os
import stat

import pytest
from click.testing import CliRunner

from spk.cli import main
from spk.speaker_db import ModelIdentity, SpeakerDB

# A model path that does not exist: a command that loaded it first would exit 3, not 2.
NO_MODEL = "/nonexistent/model"


@pytest.mark.parametrize("args, option, says", [
    (["verify", "--db", "v.db", "--claim", "alice", "--threshold", "nan", "a.wav"], "--threshold", "finite"),
    (["verify", "--db", "v.db", "--claim", "alice", "--threshold", "inf", "a.wav"], "--threshold", "finite"),
    (["similarity", "--threshold", "nan", "a.wav", "b.wav"], "--threshold", "finite"),
    (["identify", "--db", "v.db", "--unknown-threshold", "nan", "a.wav"], "--unknown-threshold", "finite"),
    (["enroll", "--db", "v.db", "--speaker", "", "a.wav"], "--speaker", "non-empty"),
    (["enroll", "--db", "v.db", "--speaker", "x" * 300, "a.wav"], "--speaker", "longer than 200"),
    (["enroll", "--db", "v.db", "--speaker", "bob\n", "a.wav"], "--speaker", "control characters"),
    (["verify", "--db", "v.db", "--claim", " ", "a.wav"], "--claim", "non-empty"),
    (["verify", "--db", "v.db", "--claim", "alice", "--device", "banana", "a.wav"], "--device",
     "'banana' is not a device; use cpu, cuda, cuda:N or auto"),
])
def test_bad_options_are_usage_errors_before_the_model_loads(tmp_path, args, option, says):
    args = [str(tmp_path / arg) if arg.endswith((".db", ".wav")) else arg for arg in args]
    result = CliRunner().invoke(main, [args[0], "--model", NO_MODEL, *args[1:], "--json"], prog_name="spk")
    assert result.exit_code == 2, result.output
    assert option in result.stderr and says in result.stderr, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1])["exit_code"] == 2
    assert not (tmp_path / "v.db").exists()


def test_a_new_speaker_database_is_private(tmp_path):
    """Voiceprints and source paths: only the owner may read the file, and its WAL files, whatever the umask."""
    old_umask = os.umask(0o022)
    try:
        with SpeakerDB.open(tmp_path / "voices.db", create=True, model=ModelIdentity("id", 4, "test")) as db:
            files = [path for path in tmp_path.iterdir() if path.name.startswith("voices.db")]
            assert {path.name for path in files} >= {"voices.db", "voices.db-wal"}
            for path in files:
                assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
            assert db.speakers() == []
    finally:
        os.umask(old_umask)


def test_a_bug_is_exit_4_with_its_traceback_never_1(tmp_path, monkeypatch):
    """An exception nobody expected (e.g. a crash inside the model) is not a rejection."""
    with SpeakerDB.open(tmp_path / "voices.db", create=True, model=ModelIdentity("id", 4, "test")):
        pass

    def crash(self):
        raise RuntimeError("could not create a primitive")

    monkeypatch.setattr(SpeakerDB, "speakers", crash)
    result = CliRunner().invoke(main, ["speakers", "list", "--db", str(tmp_path / "voices.db"), "--json"])
    assert result.exit_code == 4, result.output
    assert json.loads(result.stdout)["exit_code"] == 4
    assert "internal error (RuntimeError: could not create a primitive); this is a bug" in result.stderr
    assert "Traceback (most recent call last)" in result.stderr
