"""A speaker database in one SQLite file: enrolled speakers, their utterances and speaker models.

Tables
    ``meta``: ``key -> value`` text pairs: ``schema_version``, ``model_id`` (the
    identity of the embedder that made the embeddings, see
    :func:`spk.api.SpeakerModel.identity`), ``embedding_dim``, ``model_source``
    (where that model was loaded from when the database was made) and ``created``.
    ``speakers``: one row per speaker, ``name`` unique, ``created`` time.
    ``enrollments``: one row per enrollment utterance: speaker, ``source`` (the
    file or a description), ``duration`` in seconds, the utterance embedding as a
    little-endian float32 BLOB, ``added`` time.
    ``speaker_models``: per speaker, the mean of its L2-normalised enrollment
    embeddings (float32 BLOB) and how many utterances it averages. It is
    recomputed in the same transaction that adds utterances, so the model and
    its utterances always agree.
    ``api_keys``: the keys of ``spk serve`` (see :mod:`spk.service.auth`): id,
    name, scope, the SHA-256 of the secret (never the secret), created and
    revoked times.
    ``audit``: append-only (triggers refuse updates and deletes): one row per
    enrollment, removal, decision and key change: time, who (an API key id, or
    ``cli``), action, speaker, score, decision and a short detail; never audio.
    An enrollment or removal and its audit row are one transaction.

    Version 1 files (without the last two tables) are upgraded in place when opened.

Concurrency
    The file is in WAL mode (readers never block the writer), foreign keys are on
    (removing a speaker removes its utterances and model), every change is one
    ``BEGIN IMMEDIATE`` transaction, and connections wait up to
    :data:`BUSY_TIMEOUT_S` seconds for a lock, so several processes enrolling at
    the same time all succeed, one after the other.

Safety
    Only :meth:`SpeakerDB.open` with ``create=True`` (enrollment) makes a new file,
    readable and writable by its owner only (mode 600: it holds voiceprints). A file
    that is not SQLite, or SQLite without this schema, is an error and is not written to.
    A database made with another model is an error: embeddings of two models cannot be
    compared.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["SCHEMA_VERSION", "ApiKey", "AuditRecord", "Enrollment", "ModelIdentity", "SpeakerDB", "SpeakerDBError",
           "SpeakerInfo"]

SCHEMA_VERSION = 2
BUSY_TIMEOUT_S = 60.0
SQLITE_MAGIC = b"SQLite format 3\x00"
MAX_NAME_CHARS = 200
_SHOWN_NAMES = 8  # known speakers listed in an "unknown speaker" error

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS speakers (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS enrollments (
    id INTEGER PRIMARY KEY,
    speaker_id INTEGER NOT NULL REFERENCES speakers(id) ON DELETE CASCADE,
    source TEXT NOT NULL,
    duration REAL NOT NULL,
    embedding BLOB NOT NULL,
    added TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS enrollments_by_speaker ON enrollments(speaker_id);
CREATE TABLE IF NOT EXISTS speaker_models (
    speaker_id INTEGER PRIMARY KEY REFERENCES speakers(id) ON DELETE CASCADE,
    embedding BLOB NOT NULL,
    num_utterances INTEGER NOT NULL,
    updated TEXT NOT NULL
);
"""

# Added in version 2: ``_create_tables`` makes them for a new file, ``_initialise`` for a version 1 file.
_SCHEMA_V2 = (
    """CREATE TABLE IF NOT EXISTS api_keys (
        key_id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        scope TEXT NOT NULL,
        secret_sha256 TEXT NOT NULL,
        created TEXT NOT NULL,
        revoked TEXT
    )""",
    """CREATE TABLE IF NOT EXISTS audit (
        id INTEGER PRIMARY KEY,
        time TEXT NOT NULL,
        key_id TEXT NOT NULL,
        action TEXT NOT NULL,
        speaker TEXT,
        score REAL,
        decision TEXT,
        detail TEXT NOT NULL DEFAULT ''
    )""",
    "CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit "
    "BEGIN SELECT RAISE(ABORT, 'the audit table is append-only'); END",
    "CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit "
    "BEGIN SELECT RAISE(ABORT, 'the audit table is append-only'); END",
)


class SpeakerDBError(ValueError):
    """The speaker database is missing, unreadable, of another model, or lacks a speaker."""


@dataclass(frozen=True)
class ModelIdentity:
    """Which embedder made a database's embeddings: a content hash, the embedding size, and where it came from."""

    model_id: str
    embedding_dim: int
    source: str = ""


@dataclass(frozen=True)
class Enrollment:
    """One enrollment utterance: where it came from, its length in seconds and its embedding."""

    source: str
    duration: float
    embedding: np.ndarray


@dataclass(frozen=True)
class SpeakerInfo:
    """An enrolled speaker as :meth:`SpeakerDB.speakers` lists it."""

    name: str
    num_utterances: int
    duration: float
    created: str
    updated: str | None

    def to_dict(self) -> dict:
        """Plain mapping, for JSON output."""
        return {"speaker": self.name, "utterances": self.num_utterances, "duration_s": round(self.duration, 3),
                "created": self.created, "updated": self.updated}


@dataclass(frozen=True)
class AuditRecord:
    """One row of the append-only audit table."""

    id: int
    time: str
    key_id: str
    action: str
    speaker: str | None
    score: float | None
    decision: str | None
    detail: str

    def to_dict(self) -> dict:
        """Plain mapping, for JSON output."""
        return asdict(self)


@dataclass(frozen=True)
class ApiKey:
    """An API key's record (never its secret): id, name, scope, when made and when revoked (None: valid)."""

    key_id: str
    name: str
    scope: str
    created: str
    revoked: str | None = None

    def to_dict(self) -> dict:
        """Plain mapping, for JSON output."""
        return asdict(self)


def _audit(conn: sqlite3.Connection, time_: str, actor: str, action: str, speaker: str | None,
           score: float | None = None, decision: str | None = None, detail: str = "") -> None:
    """Append an audit row inside the caller's transaction."""
    conn.execute("INSERT INTO audit(time, key_id, action, speaker, score, decision, detail) "
                 "VALUES (?, ?, ?, ?, ?, ?, ?)", (time_, actor, action, speaker, score, decision, detail))


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _to_blob(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype="<f4").tobytes()


def _from_blob(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype="<f4").astype(np.float32)


def check_speaker_name(name: str) -> str:
    """``name`` if it can name a speaker (non-empty, no surrounding blanks or control characters)."""
    if not isinstance(name, str) or not name.strip():
        raise SpeakerDBError("a speaker name must be a non-empty string")
    if name != name.strip() or any(not ch.isprintable() for ch in name):
        raise SpeakerDBError(f"speaker name {name!r} has surrounding blanks or control characters; "
                             "give the name without them")
    if len(name) > MAX_NAME_CHARS:
        raise SpeakerDBError(f"speaker name {name[:20]!r}... is longer than {MAX_NAME_CHARS} characters")
    return name


class SpeakerDB:
    """An open speaker database (see the module docstring); use :meth:`open`, and close it (or use ``with``)."""

    def __init__(self, path: Path, connection: sqlite3.Connection, meta: dict[str, str]):
        self.path = path
        self._conn = connection
        self._meta = meta

    # --- opening ---------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | Path, *, create: bool = False, model: ModelIdentity | None = None) -> SpeakerDB:
        """Open the database at ``path``; with ``create`` (needs ``model``) make it when it does not exist.

        With ``model`` the database must have been made with that model. Raises
        :class:`SpeakerDBError` for a missing file (without ``create``), a file that is
        not a speaker database (left as it was), or a database of another model.
        """
        path = Path(path)
        if create and model is None:
            raise ValueError("creating a speaker database needs the model identity")
        fresh = _check_file(path, create)
        if create and not path.exists():
            _make_private_file(path)
        mode = "rwc" if create else "rw"
        try:
            connection = sqlite3.connect(f"{path.absolute().as_uri()}?mode={mode}", uri=True,
                                         timeout=BUSY_TIMEOUT_S, isolation_level=None)
        except sqlite3.Error as error:
            raise SpeakerDBError(f"cannot open speaker database {path}: {error}") from None
        try:
            meta = _set_up(connection, path, model if create else None, fresh)
        except sqlite3.DatabaseError as error:
            connection.close()
            _refuse_non_sqlite(path, error)
            raise SpeakerDBError(f"{path} is not a usable speaker database ({error}); it was left unchanged. "
                                 "Give a database made by 'spk enroll', or a new path to make one") from None
        except BaseException:
            connection.close()
            raise
        db = cls(path, connection, meta)
        if model is not None:
            db.check_model(model)
        return db

    def close(self) -> None:
        """Close the connection (the database stays as it is)."""
        self._conn.close()

    def __enter__(self) -> SpeakerDB:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- identity -----------------------------------------------------------------------

    @property
    def model(self) -> ModelIdentity:
        """The identity of the model the database was made with."""
        return ModelIdentity(self._meta["model_id"], int(self._meta["embedding_dim"]),
                             self._meta.get("model_source", ""))

    def check_model(self, model: ModelIdentity) -> None:
        """Raise :class:`SpeakerDBError` unless ``model`` is the model the database was made with."""
        mine = self.model
        if model.model_id != mine.model_id or model.embedding_dim != mine.embedding_dim:
            raise SpeakerDBError(
                f"{self.path} was made with another model (id {mine.model_id[:12]}, {mine.embedding_dim}-dim, "
                f"loaded from {mine.source or '?'}) than the one given (id {model.model_id[:12]}, "
                f"{model.embedding_dim}-dim, from {model.source or '?'}): embeddings of two models cannot be "
                "compared. Use the model the database was made with, or enroll the speakers again into a new "
                "database")

    # --- writing ------------------------------------------------------------------------

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taking the write lock at its start (waiting for other writers)."""
        with self._conn:  # commits at the end, rolls back on an exception
            self._conn.execute("BEGIN IMMEDIATE")
            yield self._conn

    def add_enrollments(self, speaker: str, enrollments: Sequence[Enrollment], *, actor: str = "cli",
                        detail: str = "") -> int:
        """Add utterances to ``speaker`` (made when new) and recompute its model; returns its utterance count.

        All utterances, the new model and the audit row (``actor``: who asked) are written
        in one transaction: either all of them are added or, on any error, none.
        """
        check_speaker_name(speaker)
        if not enrollments:
            raise SpeakerDBError(f"no enrollment utterances given for speaker {speaker!r}")
        dim = self.model.embedding_dim
        for item in enrollments:
            vector = np.asarray(item.embedding, dtype=np.float32)
            if vector.shape != (dim,) or not np.all(np.isfinite(vector)):
                raise SpeakerDBError(f"the embedding of {item.source} has shape {vector.shape} or non-finite "
                                     f"values; {self.path} holds finite {dim}-dim embeddings")
        now = _now()
        with self._transaction() as conn:
            conn.execute("INSERT OR IGNORE INTO speakers(name, created) VALUES (?, ?)", (speaker, now))
            (speaker_id,) = conn.execute("SELECT id FROM speakers WHERE name = ?", (speaker,)).fetchone()
            conn.executemany(
                "INSERT INTO enrollments(speaker_id, source, duration, embedding, added) VALUES (?, ?, ?, ?, ?)",
                [(speaker_id, str(item.source), float(item.duration), _to_blob(item.embedding), now)
                 for item in enrollments])
            count = self._update_model(conn, speaker_id, now)
            _audit(conn, now, actor, "enroll", speaker, detail=f"+{len(enrollments)} utterance(s), {count} in all"
                   + (f"; {detail}" if detail else ""))
        logger.info("%s: speaker %r now has %d enrollment utterance(s)", self.path, speaker, count)
        return count

    @staticmethod
    def _update_model(conn: sqlite3.Connection, speaker_id: int, now: str) -> int:
        """Recompute a speaker's model from all its utterances (inside the caller's transaction)."""
        rows = conn.execute("SELECT embedding FROM enrollments WHERE speaker_id = ? ORDER BY id",
                            (speaker_id,)).fetchall()
        matrix = np.stack([_from_blob(blob) for (blob,) in rows])
        unit = matrix / (np.linalg.norm(matrix, axis=1, keepdims=True) + 1e-12)
        mean = unit.mean(axis=0, dtype=np.float64).astype(np.float32)
        conn.execute(
            "INSERT INTO speaker_models(speaker_id, embedding, num_utterances, updated) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(speaker_id) DO UPDATE SET embedding = excluded.embedding, "
            "num_utterances = excluded.num_utterances, updated = excluded.updated",
            (speaker_id, _to_blob(mean), len(rows), now))
        return len(rows)

    def remove(self, speaker: str, *, actor: str = "cli", detail: str = "") -> int:
        """Remove a speaker with its utterances and model (and audit it); returns how many utterances went."""
        with self._transaction() as conn:
            row = conn.execute("SELECT id FROM speakers WHERE name = ?", (speaker,)).fetchone()
            if row is None:
                raise self._unknown(speaker)
            (count,) = conn.execute("SELECT COUNT(*) FROM enrollments WHERE speaker_id = ?", row).fetchone()
            conn.execute("DELETE FROM speakers WHERE id = ?", row)
            _audit(conn, _now(), actor, "remove", speaker, detail=f"{count} utterance(s)"
                   + (f"; {detail}" if detail else ""))
        logger.info("%s: removed speaker %r (%d utterance(s))", self.path, speaker, count)
        return int(count)

    def record_decision(self, actor: str, action: str, speaker: str | None, score: float | None,
                        decision: str, detail: str = "") -> None:
        """Append a decision (``verify``, ``identify``) to the audit table."""
        with self._transaction() as conn:
            _audit(conn, _now(), actor, action, speaker, score, decision, detail)

    def audit_records(self, limit: int | None = None, after_id: int = 0) -> list[AuditRecord]:
        """Audit rows after ``after_id``, oldest first; with ``limit``, only the newest ``limit`` of them."""
        query = ("SELECT id, time, key_id, action, speaker, score, decision, detail FROM audit WHERE id > ? "
                 "ORDER BY id DESC" + (" LIMIT ?" if limit is not None else ""))
        rows = self._conn.execute(query, (after_id, limit) if limit is not None else (after_id,)).fetchall()
        return [AuditRecord(*row) for row in reversed(rows)]

    # --- API keys (their meaning is spk.service.auth's) -----------------------------------

    def add_key(self, key: ApiKey, secret_sha256: str, actor: str = "cli") -> None:
        """Store a new API key's record and the hash of its secret."""
        with self._transaction() as conn:
            conn.execute("INSERT INTO api_keys(key_id, name, scope, secret_sha256, created) VALUES (?, ?, ?, ?, ?)",
                         (key.key_id, key.name, key.scope, secret_sha256, key.created))
            _audit(conn, key.created, actor, "key_create", None, detail=f"{key.key_id} ({key.scope}, {key.name})")

    def api_keys(self) -> list[ApiKey]:
        """Every API key, revoked ones included, oldest first."""
        return [ApiKey(*row) for row in self._conn.execute(
            "SELECT key_id, name, scope, created, revoked FROM api_keys ORDER BY created, key_id")]

    def api_key(self, key_id: str) -> tuple[ApiKey, str] | None:
        """``(record, secret hash)`` of one key, or None when there is no such key."""
        row = self._conn.execute("SELECT key_id, name, scope, created, revoked, secret_sha256 FROM api_keys "
                                 "WHERE key_id = ?", (key_id,)).fetchone()
        return None if row is None else (ApiKey(*row[:5]), row[5])

    def revoke_key(self, key_id: str, actor: str = "cli") -> ApiKey:
        """Revoke a key (its record stays, for the audit trail); revoking it again changes nothing."""
        with self._transaction() as conn:
            row = conn.execute("SELECT revoked FROM api_keys WHERE key_id = ?", (key_id,)).fetchone()
            if row is None:
                known = ", ".join(key.key_id for key in self.api_keys()) or "none"
                raise SpeakerDBError(f"there is no API key {key_id!r} in {self.path} (keys: {known}); "
                                     f"see 'spk keys list --db {self.path}'")
            if row[0] is None:
                now = _now()
                conn.execute("UPDATE api_keys SET revoked = ? WHERE key_id = ?", (now, key_id))
                _audit(conn, now, actor, "key_revoke", None, detail=key_id)
        return self.api_key(key_id)[0]

    # --- reading ------------------------------------------------------------------------

    def speakers(self) -> list[SpeakerInfo]:
        """Every enrolled speaker, by name, with its number of utterances and their total duration."""
        rows = self._conn.execute(
            "SELECT s.name, COUNT(e.id), COALESCE(SUM(e.duration), 0), s.created, m.updated "
            "FROM speakers s LEFT JOIN enrollments e ON e.speaker_id = s.id "
            "LEFT JOIN speaker_models m ON m.speaker_id = s.id GROUP BY s.id ORDER BY s.name").fetchall()
        return [SpeakerInfo(name, int(count), float(duration), created, updated)
                for name, count, duration, created, updated in rows]

    def speaker_names(self) -> list[str]:
        """Names of the enrolled speakers, sorted."""
        return [name for (name,) in self._conn.execute("SELECT name FROM speakers ORDER BY name")]

    def speaker_model(self, speaker: str) -> np.ndarray:
        """The model (mean L2-normalised enrollment embedding) of one speaker; unknown names are an error."""
        row = self._conn.execute(
            "SELECT m.embedding FROM speakers s JOIN speaker_models m ON m.speaker_id = s.id WHERE s.name = ?",
            (speaker,)).fetchone()
        if row is None:
            raise self._unknown(speaker)
        return _from_blob(row[0])

    def speaker_models(self) -> tuple[list[str], np.ndarray]:
        """``(names, matrix)`` of every speaker model, one row each, by name; an empty database is an error."""
        rows = self._conn.execute(
            "SELECT s.name, m.embedding FROM speakers s JOIN speaker_models m ON m.speaker_id = s.id "
            "ORDER BY s.name").fetchall()
        if not rows:
            raise SpeakerDBError(f"{self.path} has no enrolled speakers; enroll some with 'spk enroll'")
        return [name for name, _ in rows], np.stack([_from_blob(blob) for _, blob in rows])

    def enrollments(self, speaker: str) -> list[Enrollment]:
        """The enrollment utterances of one speaker, in the order they were added."""
        row = self._conn.execute("SELECT id FROM speakers WHERE name = ?", (speaker,)).fetchone()
        if row is None:
            raise self._unknown(speaker)
        return [Enrollment(source, float(duration), _from_blob(blob)) for source, duration, blob in
                self._conn.execute("SELECT source, duration, embedding FROM enrollments WHERE speaker_id = ? "
                                   "ORDER BY id", row)]

    def _unknown(self, speaker: str) -> SpeakerDBError:
        names = self.speaker_names()
        if not names:
            return SpeakerDBError(f"speaker {speaker!r} is not enrolled in {self.path}, which has no speakers yet; "
                                  "enroll with 'spk enroll'")
        shown = ", ".join(names[:_SHOWN_NAMES]) + (f" ... ({len(names)} in all)" if len(names) > _SHOWN_NAMES else "")
        return SpeakerDBError(f"speaker {speaker!r} is not enrolled in {self.path}; enrolled speakers: {shown}. "
                              f"See 'spk speakers list --db {self.path}'")


def _make_private_file(path: Path) -> None:
    """An empty file that only its owner may read or write: it will hold voiceprints and source paths.

    SQLite gives its ``-wal`` and ``-shm`` files the database file's permissions. When another
    process made the file first, that one's file is used as it is.
    """
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass
    except OSError as error:
        raise SpeakerDBError(f"cannot make speaker database {path}: {error.strerror}") from None


def _check_file(path: Path, create: bool) -> bool:
    """Refuse a path that cannot be (or become) a speaker database; True when it is new or empty."""
    if not path.exists():
        if not create:
            raise SpeakerDBError(f"speaker database {path} does not exist; make it by enrolling speakers "
                                 f"('spk enroll --db {path} ...'), or check the path")
        if not path.parent.is_dir():
            raise SpeakerDBError(f"cannot make speaker database {path}: folder {path.parent} does not exist")
        return True
    if not path.is_file():
        raise SpeakerDBError(f"speaker database {path} is not a regular file")
    size = path.stat().st_size
    if size == 0:
        if not create:
            raise SpeakerDBError(f"speaker database {path} is an empty file (0 bytes), with no speakers; "
                                 "enroll speakers with 'spk enroll' to fill it")
        return True  # another enrolling process may have just made it; an empty file holds nothing to lose
    # Its content is left to SQLite, which refuses a file that is not a database before writing anything:
    # opening the file here too would drop the locks that this process's other connections hold on it
    # (closing any descriptor of a file releases all of the process's POSIX locks on it), and another
    # process closing its connection would then delete the WAL under them ("disk I/O error").
    return False


def _refuse_non_sqlite(path: Path, error: sqlite3.DatabaseError) -> None:
    """Raise the message for a file that is not SQLite at all when SQLite refused ``path`` as not a
    database (its header is read only then: no connection of this process can hold locks on such a file)."""
    if getattr(error, "sqlite_errorname", "SQLITE_NOTADB") != "SQLITE_NOTADB" or "not a database" not in str(error):
        return
    with open(path, "rb") as stream:
        head = stream.read(len(SQLITE_MAGIC))
    if head != SQLITE_MAGIC:
        raise SpeakerDBError(f"{path} is not a speaker database: it is not an SQLite file (it starts with "
                             f"{head[:8]!r}); it was left unchanged. Check the path, or give a new one to make "
                             "a database") from None


def _initialise(conn: sqlite3.Connection, path: Path, model: ModelIdentity | None) -> dict[str, str]:
    """The meta of an existing speaker database (a version 1 one upgraded); with ``model``, make the schema
    when the file has none."""
    meta = _read_meta(conn, path, allow_empty=model is not None)
    if meta is None or meta.get("schema_version") == "1":
        meta = _create_or_upgrade(conn, path, model)
    version = meta.get("schema_version", "")
    if version != str(SCHEMA_VERSION):
        raise SpeakerDBError(f"{path} has speaker-database schema version {version!r}; this spk reads version "
                             f"{SCHEMA_VERSION}. Use the spk version that made it")
    missing = {"model_id", "embedding_dim"} - set(meta)
    if missing:
        raise SpeakerDBError(f"{path}: its meta table lacks {', '.join(sorted(missing))}; the database is damaged")
    return meta


def _create_or_upgrade(conn: sqlite3.Connection, path: Path, model: ModelIdentity | None) -> dict[str, str]:
    """Make the schema in an empty file, or upgrade a version 1 file, under the write lock."""
    with conn:
        conn.execute("BEGIN IMMEDIATE")  # one creator or upgrader at a time: the check and the change are atomic
        meta = _read_meta(conn, path, allow_empty=model is not None)
        if meta is None:
            # statement by statement: executescript() would commit the transaction first
            for statement in [*filter(str.strip, _SCHEMA.split(";")), *_SCHEMA_V2]:
                conn.execute(statement)
            conn.executemany("INSERT INTO meta(key, value) VALUES (?, ?)", [
                ("schema_version", str(SCHEMA_VERSION)), ("model_id", model.model_id),
                ("embedding_dim", str(model.embedding_dim)), ("model_source", model.source),
                ("created", _now())])
            logger.info("%s: new speaker database for model %s", path, model.model_id[:12])
            meta = _read_meta(conn, path)
        elif meta.get("schema_version") == "1":
            for statement in _SCHEMA_V2:
                conn.execute(statement)
            conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))
            logger.info("%s: upgraded from speaker-database schema 1 to %d (API keys, audit trail)",
                        path, SCHEMA_VERSION)
            meta = _read_meta(conn, path)
    return meta


def _read_meta(conn: sqlite3.Connection, path: Path, allow_empty: bool = False) -> dict[str, str] | None:
    """The meta table as a dict; None for a database without tables when ``allow_empty``."""
    tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "meta" not in tables:
        if allow_empty and not tables:
            return None
        raise SpeakerDBError(f"{path} is an SQLite database but not a speaker database (it has no meta table); "
                             "it was left unchanged. Give a database made by 'spk enroll', or a new path")
    return dict(conn.execute("SELECT key, value FROM meta"))


def _set_up(connection: sqlite3.Connection, path: Path, model, fresh: bool):
    """WAL mode, the tables (when creating) and the meta row, retried while another process holds the lock.

    Switching to WAL takes an exclusive lock and SQLite returns "database is locked" at once,
    without its busy timeout, when another process is creating the same file at that moment.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            if fresh:
                # a new (or empty) file is ours: WAL before the first table, so every process sees WAL
                connection.execute("PRAGMA journal_mode=WAL")
            meta = _initialise(connection, path, model)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA foreign_keys=ON")
            return meta
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)
