"""API keys of ``spk serve``: their format, how they are stored and checked, their scopes, and rate limits.

A key reads ``spk_<id>_<secret>``: ``id`` is 8 hex digits, public (it names the key in
listings, logs and the audit trail), ``secret`` is 32 random bytes in URL-safe base64. The
database keeps only the SHA-256 of the secret: the secret has 256 bits of entropy, so a
slow password hash would add nothing, and a stolen database yields no usable key.

Scopes: ``verify`` may verify and identify; ``admin`` may do everything (enroll, remove,
list speakers, manage keys, read the audit trail, and verify/identify).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone

from spk.speaker_db import ApiKey, SpeakerDB

__all__ = ["SCOPES", "AuthError", "RateLimiter", "authenticate", "create_key", "has_scope", "require_scope"]

SCOPES = ("admin", "verify")
_KEY = re.compile(r"spk_([0-9a-f]{8})_([A-Za-z0-9_-]{43})")
_NAME_CHARS = 100


class AuthError(ValueError):
    """A key is missing, malformed, unknown or revoked (HTTP 401), or lacks a scope (403): ``status`` says which."""

    def __init__(self, message: str, status: int = 401):
        super().__init__(message)
        self.status = status


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def create_key(db: SpeakerDB, name: str, scope: str, actor: str = "cli") -> tuple[str, ApiKey]:
    """Make a key with ``scope`` and store its hash in ``db``; returns ``(the key, its record)``.

    The key itself is returned only here: it cannot be recovered later.
    """
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}; a key's scope is one of: {', '.join(SCOPES)}")
    if not name.strip() or len(name) > _NAME_CHARS or any(not ch.isprintable() for ch in name):
        raise ValueError(f"a key name must be 1 to {_NAME_CHARS} printable characters, not {name[:20]!r}")
    while True:
        key_id = secrets.token_hex(4)
        if db.api_key(key_id) is None:
            break
    secret = secrets.token_urlsafe(32)
    record = ApiKey(key_id, name.strip(), scope, datetime.now(timezone.utc).isoformat(timespec="seconds"))
    db.add_key(record, _digest(secret), actor=actor)
    return f"spk_{key_id}_{secret}", record


def has_scope(key: ApiKey, scope: str) -> bool:
    """Whether ``key`` may do what ``scope`` allows (``admin`` includes ``verify``)."""
    return key.scope == "admin" or key.scope == scope


def authenticate(db: SpeakerDB, presented: str | None) -> ApiKey:
    """The record of the valid, unrevoked key ``presented``; else :class:`AuthError` (401)."""
    if not presented:
        raise AuthError("an API key is needed: send 'Authorization: Bearer <key>' (make one with 'spk keys create')")
    match = _KEY.fullmatch(presented.strip())
    if match is None:
        raise AuthError("the API key is malformed; keys look like spk_<8 hex digits>_<43 characters>")
    key_id, secret = match.groups()
    stored = db.api_key(key_id)
    # compare a digest even for an unknown id, so the answer takes as long either way
    expected = stored[1] if stored is not None else _digest("")
    if not hmac.compare_digest(expected, _digest(secret)) or stored is None:
        raise AuthError("the API key is not valid")
    key = stored[0]
    if key.revoked is not None:
        raise AuthError(f"the API key {key_id} was revoked at {key.revoked}")
    return key


def require_scope(key: ApiKey, scope: str) -> None:
    """:class:`AuthError` (403) unless ``key`` may do what ``scope`` allows."""
    if not has_scope(key, scope):
        raise AuthError(f"the API key {key.key_id} has scope {key.scope!r}, and this needs {scope!r}", status=403)


@dataclass
class _Bucket:
    tokens: float
    stamp: float


class RateLimiter:
    """A token bucket per key: ``rate`` requests a second on average, bursts of up to ``burst``."""

    def __init__(self, rate: float, burst: int | None = None):
        self.rate = rate
        self.burst = burst if burst is not None else max(1, round(2 * rate))
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def retry_after(self, key_id: str) -> float:
        """Take a token for ``key_id``: 0.0 when allowed, else the seconds until one is free (nothing taken)."""
        if self.rate <= 0:
            return 0.0
        now = time.monotonic()
        with self._lock:
            bucket = self._buckets.setdefault(key_id, _Bucket(float(self.burst), now))
            bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.stamp) * self.rate)
            bucket.stamp = now
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return 0.0
            return (1.0 - bucket.tokens) / self.rate
