"""The SQLite speaker database: schema, speaker models, safety with foreign files, concurrent writers."""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from spk.speaker_db import SCHEMA_VERSION, Enrollment, ModelIdentity, SpeakerDB, SpeakerDBError

ROOT = Path(__file__).resolve().parents[1]
MODEL = ModelIdentity("a" * 64, 8, "exp/test_model")
OTHER_MODEL = ModelIdentity("b" * 64, 8, "exp/other_model")


def vectors(count: int, seed: int, dim: int = 8) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(size=dim).astype(np.float32) for _ in range(count)]


def items(vecs, prefix="utt") -> list[Enrollment]:
    return [Enrollment(f"/audio/{prefix}{i}.wav", 2.0 + i, v) for i, v in enumerate(vecs)]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_refused_unchanged(path: Path, match: str) -> None:
    """Opening ``path`` (to read, and to enroll into) fails with ``match`` and leaves its bytes as they were."""
    before = digest(path)
    for create in (False, True):
        with pytest.raises(SpeakerDBError, match=match):
            SpeakerDB.open(path, create=create, model=MODEL)
    assert digest(path) == before


def unit_mean(vecs) -> np.ndarray:
    return np.mean([v / np.linalg.norm(v) for v in vecs], axis=0)


def test_enroll_makes_speaker_models_from_unit_embeddings(tmp_path):
    path = tmp_path / "voices.db"
    first, more = vectors(2, 0), vectors(3, 1)
    with SpeakerDB.open(path, create=True, model=MODEL) as db:
        assert db.add_enrollments("alice", items(first)) == 2
        np.testing.assert_allclose(db.speaker_model("alice"), unit_mean(first), atol=1e-6)
        assert db.add_enrollments("alice", items(more, "more")) == 5  # enrolling again adds utterances
        np.testing.assert_allclose(db.speaker_model("alice"), unit_mean(first + more), atol=1e-6)
        db.add_enrollments("bob", items(vectors(1, 2)))
        infos = {info.name: info for info in db.speakers()}
        assert {name: info.num_utterances for name, info in infos.items()} == {"alice": 5, "bob": 1}
        assert infos["alice"].duration == pytest.approx(2 + 3 + 2 + 3 + 4)
        names, matrix = db.speaker_models()
        assert names == ["alice", "bob"] and matrix.shape == (2, 8) and matrix.dtype == np.float32
        stored = db.enrollments("alice")
        assert [e.source for e in stored] == ["/audio/utt0.wav", "/audio/utt1.wav", "/audio/more0.wav",
                                              "/audio/more1.wav", "/audio/more2.wav"]
        np.testing.assert_array_equal(stored[0].embedding, first[0])
    # the file itself: WAL mode, the schema version and the model identity in the meta table
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    meta = dict(conn.execute("SELECT key, value FROM meta"))
    assert meta["schema_version"] == str(SCHEMA_VERSION) and meta["model_id"] == MODEL.model_id
    assert meta["embedding_dim"] == "8" and meta["model_source"] == "exp/test_model"
    assert conn.execute("SELECT COUNT(*) FROM enrollments").fetchone()[0] == 6
    conn.close()


def test_remove_takes_utterances_and_model_along(tmp_path):
    path = tmp_path / "voices.db"
    with SpeakerDB.open(path, create=True, model=MODEL) as db:
        db.add_enrollments("alice", items(vectors(3, 0)))
        db.add_enrollments("bob", items(vectors(2, 1)))
        assert db.remove("alice") == 3
        assert db.speaker_names() == ["bob"]
        with pytest.raises(SpeakerDBError, match="'alice' is not enrolled.*bob"):
            db.remove("alice")
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT COUNT(*) FROM enrollments").fetchone()[0] == 2
    assert conn.execute("SELECT COUNT(*) FROM speaker_models").fetchone()[0] == 1
    conn.close()


def test_unknown_speaker_lists_known_ones(tmp_path):
    with SpeakerDB.open(tmp_path / "v.db", create=True, model=MODEL) as db:
        with pytest.raises(SpeakerDBError, match="no speakers yet"):
            db.speaker_model("carol")
        with pytest.raises(SpeakerDBError, match="no enrolled speakers"):
            db.speaker_models()
        for i in range(12):
            db.add_enrollments(f"spk{i:02d}", items(vectors(1, i)))
        with pytest.raises(SpeakerDBError) as error:
            db.speaker_model("carol")
    message = str(error.value)
    assert "'carol' is not enrolled" in message and "spk00, spk01" in message and "(12 in all)" in message
    assert "spk11" not in message  # a few names, not all


def test_a_failing_enrollment_writes_nothing(tmp_path):
    with SpeakerDB.open(tmp_path / "v.db", create=True, model=MODEL) as db:
        db.add_enrollments("alice", items(vectors(2, 0)))
        model_before = db.speaker_model("alice")
        with pytest.raises(SpeakerDBError, match="shape"):
            db.add_enrollments("alice", items(vectors(1, 5, dim=4)))
        # a failure inside the transaction (a duration that is not a number) rolls everything back
        bad = items(vectors(2, 3)) + [Enrollment("/audio/bad.wav", "not a number", vectors(1, 4)[0])]
        with pytest.raises(ValueError):
            db.add_enrollments("bob", bad)
        with pytest.raises(ValueError):
            db.add_enrollments("alice", bad)
        assert db.speaker_names() == ["alice"]
        assert [info.num_utterances for info in db.speakers()] == [2]
        np.testing.assert_array_equal(db.speaker_model("alice"), model_before)


@pytest.mark.parametrize("name", ["", "  ", " alice", "alice\n", "a\tb"])
def test_bad_speaker_names_are_refused(tmp_path, name):
    with SpeakerDB.open(tmp_path / "v.db", create=True, model=MODEL) as db:
        with pytest.raises(SpeakerDBError, match="speaker name"):
            db.add_enrollments(name, items(vectors(1, 0)))


def test_a_missing_database_is_not_created_except_by_enrollment(tmp_path):
    path = tmp_path / "voices.db"
    with pytest.raises(SpeakerDBError, match="does not exist.*spk enroll"):
        SpeakerDB.open(path)
    assert not path.exists()
    with pytest.raises(SpeakerDBError, match="folder .* does not exist"):
        SpeakerDB.open(tmp_path / "nowhere" / "voices.db", create=True, model=MODEL)


def test_random_bytes_are_refused_and_left_unchanged(tmp_path):
    path = tmp_path / "voices.db"
    path.write_bytes(np.random.default_rng(0).bytes(5000))
    assert_refused_unchanged(path, "not an SQLite file.*left unchanged")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["voices.db"]  # no -wal, -shm or -journal left


def test_damaged_sqlite_file_is_refused_and_left_unchanged(tmp_path):
    path = tmp_path / "voices.db"
    path.write_bytes(b"SQLite format 3\x00" + np.random.default_rng(1).bytes(4000))
    assert_refused_unchanged(path, "left unchanged")


def test_another_sqlite_database_is_refused_and_left_unchanged(tmp_path):
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, amount REAL)")
    conn.execute("INSERT INTO invoices(amount) VALUES (12.5)")
    conn.commit()
    conn.close()
    assert_refused_unchanged(path, "not a speaker database")


def test_an_empty_file_is_filled_only_by_enrollment(tmp_path):
    path = tmp_path / "voices.db"
    path.touch()
    with pytest.raises(SpeakerDBError, match="empty file"):
        SpeakerDB.open(path)
    with SpeakerDB.open(path, create=True, model=MODEL) as db:
        db.add_enrollments("alice", items(vectors(1, 0)))
    with SpeakerDB.open(path) as db:
        assert db.speaker_names() == ["alice"]


def test_a_database_of_another_model_is_refused(tmp_path):
    path = tmp_path / "voices.db"
    with SpeakerDB.open(path, create=True, model=MODEL) as db:
        db.add_enrollments("alice", items(vectors(1, 0)))
    for create in (False, True):
        with pytest.raises(SpeakerDBError, match="another model.*bbbbbbbbbbbb.*exp/other_model"):
            SpeakerDB.open(path, create=create, model=OTHER_MODEL)
    with SpeakerDB.open(path) as db:  # without a model: any reader may list it
        assert db.model == MODEL and db.speaker_names() == ["alice"]
        with pytest.raises(SpeakerDBError, match="another model"):
            db.check_model(OTHER_MODEL)


def test_a_newer_schema_is_refused(tmp_path):
    path = tmp_path / "voices.db"
    SpeakerDB.open(path, create=True, model=MODEL).close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    with pytest.raises(SpeakerDBError, match="schema version '99'"):
        SpeakerDB.open(path)


WRITER = """
import sys
import numpy as np
from spk.speaker_db import Enrollment, ModelIdentity, SpeakerDB
path, speaker, seed, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
import os, time
while not os.path.exists(go):
    time.sleep(0.001)
rng = np.random.default_rng(seed)
for i in range(15):  # one connection and one transaction per utterance, as separate enroll runs would
    with SpeakerDB.open(path, create=True, model=ModelIdentity("a" * 64, 8, "exp/test_model")) as db:
        db.add_enrollments(speaker, [Enrollment(f"/audio/{seed}-{i}.wav", 1.0, rng.normal(size=8).astype(np.float32))])
"""


@pytest.mark.parametrize("speakers", [("alice", "bob", "carol"), ("alice", "alice", "alice")])
def test_concurrent_writers_lose_nothing(tmp_path, speakers):
    """Three processes create the same new database and enroll at once: every utterance arrives."""
    path, go = tmp_path / "voices.db", tmp_path / "go"
    processes = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), speaker, str(seed), str(go)],
                                  cwd=ROOT, stderr=subprocess.PIPE, text=True)
                 for seed, speaker in enumerate(speakers)]
    go.touch()  # start them together
    for process in processes:
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, stderr
    with SpeakerDB.open(path) as db:
        counts = {info.name: info.num_utterances for info in db.speakers()}
        assert sum(counts.values()) == 45
        assert counts == {name: 15 * speakers.count(name) for name in set(speakers)}
        for name in counts:  # each model agrees with all of its utterances
            embeddings = [e.embedding for e in db.enrollments(name)]
            np.testing.assert_allclose(db.speaker_model(name), unit_mean(embeddings), atol=1e-6)


def test_a_second_connection_in_a_process_keeps_the_locks_of_the_first(tmp_path):
    """Closing any descriptor of a file drops all of a process's POSIX locks on it. A server opens one
    connection per thread; when opening one read the file through a descriptor of its own, the
    server's connections lost their locks, and the next process to close a connection (``spk audit``,
    ``spk keys``) took itself for the last user, checkpointed and deleted the WAL under the server,
    whose connections then failed with "disk I/O error"."""
    path = tmp_path / "voices.db"
    first = SpeakerDB.open(path, create=True, model=MODEL)
    first.record_decision("k", "verify", "alice", 0.5, "accept")
    SpeakerDB.open(path).close()  # another thread's connection, in the same process
    other = ("import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); c.execute('SELECT 1 FROM meta').fetchall(); "
             "c.close()")
    subprocess.run([sys.executable, "-c", other, str(path)], check=True, timeout=60)
    assert path.with_name(path.name + "-wal").exists(), "another process took the database for its own"
    first.record_decision("k", "verify", "alice", 0.6, "reject")
    assert len(first.audit_records()) == 2
    first.close()


def test_a_version_1_database_is_upgraded_in_place_and_keeps_its_speakers(tmp_path):
    path = tmp_path / "old.db"
    with SpeakerDB.open(path, create=True, model=MODEL) as db:
        db.add_enrollments("alice", items(vectors(2, 0)))
    with sqlite3.connect(path) as conn:  # what spk wrote before the server: no keys, no audit
        for name in ("audit_no_update", "audit_no_delete"):
            conn.execute(f"DROP TRIGGER {name}")
        conn.execute("DROP TABLE audit")
        conn.execute("DROP TABLE api_keys")
        conn.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    with SpeakerDB.open(path, model=MODEL) as db:
        assert db.speaker_names() == ["alice"] and db.api_keys() == []
        db.remove("alice")
        [record] = db.audit_records()
    assert (record.key_id, record.action, record.speaker) == ("cli", "remove", "alice")
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (str(SCHEMA_VERSION),)
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            conn.execute("UPDATE audit SET decision = 'accept'")


def test_enrollments_and_removals_are_audited_in_their_own_transaction(tmp_path):
    path = tmp_path / "voices.db"
    with SpeakerDB.open(path, create=True, model=MODEL) as db:
        db.add_enrollments("alice", items(vectors(2, 0)), actor="k1")
        with pytest.raises(SpeakerDBError):
            db.add_enrollments("bob", [Enrollment("/x.wav", 1.0, np.full(8, np.nan, np.float32))], actor="k1")
        db.record_decision("k2", "verify", "alice", 0.75, "accept", "request r1")
        rows = [(r.key_id, r.action, r.speaker, r.decision) for r in db.audit_records()]
        assert rows == [("k1", "enroll", "alice", None), ("k2", "verify", "alice", "accept")]
        assert [r.action for r in db.audit_records(limit=1)] == ["verify"]
        assert db.audit_records(after_id=2) == []
