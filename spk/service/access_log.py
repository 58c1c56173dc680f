"""What happens around every request: its body is read within limits, and one JSON log line records it.

:class:`RequestGuard` is a plain ASGI middleware. Before the application sees a request it
reads the whole body, refusing with 413 one over ``max_body_bytes`` (at once when the
``Content-Length`` says so, else as soon as the bytes pass the limit) and with 408 one whose
body does not arrive within ``body_timeout_s``; so no handler ever waits on a slow client
or holds more than the limit. Every answer gets :data:`SECURITY_HEADERS`. After the response
it logs one line: time, request id, method, path, status, latency, the key id (set by the
authentication) and the client.

:class:`JsonFormatter` writes every log record of the server as one JSON object per line.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from datetime import datetime, timezone

__all__ = ["JsonFormatter", "RequestGuard"]

access_logger = logging.getLogger("spk.service.access")
# On every answer: the page runs only its own scripts and cannot be framed; nothing is cached or sniffed.
SECURITY_HEADERS = [
    # blob: scripts and media are the page's own: its microphone worklet and its recordings
    (b"content-security-policy", b"default-src 'self'; script-src 'self' blob:; media-src 'self' blob:; "
                                 b"frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
]


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, ms), level, logger, message, and the record's ``fields``."""

    def format(self, record: logging.LogRecord) -> str:
        line = {"time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
                "level": record.levelname.lower(), "logger": record.name, "message": record.getMessage()}
        line.update(getattr(record, "fields", {}))
        if record.exc_info:
            line["traceback"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def _json_response(status: int, message: str, headers: list[tuple[bytes, bytes]] = ()) -> tuple[dict, dict]:
    body = json.dumps({"error": message, "status": status}).encode()
    start = {"type": "http.response.start", "status": status,
             "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                         *headers]}
    return start, {"type": "http.response.body", "body": body}


class RequestGuard:
    """ASGI middleware: bounded request bodies (413, 408) and the JSON access log line (module docstring)."""

    def __init__(self, app, max_body_bytes: int, body_timeout_s: float):
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.body_timeout_s = body_timeout_s

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = uuid.uuid4().hex[:16]
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        status = {"code": 500}

        async def send_logged(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                message = {**message, "headers": [*message.get("headers", []), *SECURITY_HEADERS,
                                                  (b"x-request-id", request_id.encode())]}
            await send(message)

        try:
            body, refusal = await self._read_body(scope, receive)
            if refusal is not None:
                status["code"] = refusal[0]["status"]
                await send_logged(refusal[0])
                await send_logged(refusal[1])
                return
            replayed = False

            async def replay():
                nonlocal replayed
                if not replayed:
                    replayed = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()

            await self.app(scope, replay, send_logged)
        finally:
            client = scope.get("client")
            access_logger.info("%s %s %d", scope["method"], scope["path"], status["code"], extra={"fields": {
                "request_id": request_id, "method": scope["method"], "path": scope["path"],
                "status": status["code"], "latency_ms": round(1000 * (time.perf_counter() - started), 2),
                "key_id": state.get("key_id"), "client": f"{client[0]}:{client[1]}" if client else None}})

    async def _read_body(self, scope, receive) -> tuple[bytes, tuple[dict, dict] | None]:
        """The whole body, or a refusal (413, 408) to send instead of calling the application."""
        limit = self.max_body_bytes
        too_large = _json_response(413, f"the request body is over the limit of {limit / 1e6:g} MB "
                                        "(spk serve --max-upload-mb); send shorter audio")
        length = dict(scope.get("headers", [])).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            return b"", too_large
        parts, size = [], 0
        deadline = time.monotonic() + self.body_timeout_s
        while True:
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                return b"", _json_response(408, f"the request body did not arrive within {self.body_timeout_s:g} s")
            if message["type"] == "http.disconnect":
                return b"", _json_response(400, "the client went away before sending the whole body")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return b"", too_large
            parts.append(chunk)
            if not message.get("more_body", False):
                return b"".join(parts), None
