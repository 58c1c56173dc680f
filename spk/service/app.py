"""The HTTP API of ``spk serve``: a FastAPI application over one loaded model and one speaker database.

:func:`create_app` builds it from a loaded :class:`spk.api.SpeakerModel` and
:class:`ServeSettings`. Paths are versioned (``/v1/...``); ``/openapi.json`` describes
them; ``/`` is the web page.

How a request is served
    :class:`spk.service.access_log.RequestGuard` reads the body within the upload limit
    (413) and logs the request as one JSON line. The key is checked against the
    database (401, 403) and its rate limit (429). Audio is decoded from memory
    (:func:`spk.audio.read_audio_bytes`: WAV, FLAC or Ogg by their header, else 415; over
    ``max_audio_s``, 413) and goes through the same input checks and inference chain as
    the command line (:class:`spk.api.SpeakerModel`: too short, silent, damaged or no
    speech is 422). Inference runs in a pool of ``inference_workers`` threads, off the
    event loop; a request that cannot finish within ``request_timeout_s`` (waiting for a
    worker included) gets 503 and changes nothing. An enrollment writes its utterances,
    its speaker model and its audit row in one transaction, after the embeddings are
    made; every decision is appended to the audit table.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import anyio
from fastapi import Depends, FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from spk.api import SpeakerModel, SpkError, SpkInputError, parse_operating_point
from spk.audio import AudioError, AudioFormatError, AudioTooLongError, read_audio_bytes, require_container
from spk.service.access_log import RequestGuard
from spk.service.auth import AuthError, RateLimiter, authenticate, create_key, require_scope
from spk.speaker_db import SpeakerDB, SpeakerDBError, check_speaker_name

__all__ = ["API_VERSION", "ServeSettings", "create_app"]

API_VERSION = "v1"
WEB_DIR = Path(__file__).with_name("web")
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServeSettings:
    """What ``spk serve`` is given besides the model: the database and the limits."""

    db_path: Path
    max_upload_bytes: int = 16_000_000
    max_audio_s: float = 120.0
    max_files: int = 10  # per enrollment request
    rate_limit: float = 20.0  # requests per second per key; 0: none
    burst: int | None = None  # default: twice the rate
    request_timeout_s: float = 30.0
    inference_workers: int = 2


class ServiceError(Exception):
    """An answer other than 2xx, with its status and message."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


# --- response bodies (for the OpenAPI schema) ------------------------------------------------

class ErrorBody(BaseModel):
    error: str
    status: int


class VerifyBody(BaseModel):
    speaker: str
    decision: str = Field(description="accept or reject")
    accept: bool
    score: float = Field(description="cosine similarity to the speaker's model")
    llr: Optional[float] = Field(description="calibrated log-likelihood ratio (null without a calibration)")
    threshold: float
    operating_point: Optional[str] = Field(description="eer, far=..., bayes=...; null for an explicit threshold")
    duration_s: float


class CandidateBody(BaseModel):
    speaker: str
    probability: float
    score: Optional[float]
    llr: Optional[float]


class IdentifyBody(BaseModel):
    speaker: str = Field(description="the best enrolled speaker, or 'unknown'")
    unknown: bool
    candidates: list[CandidateBody]
    unknown_threshold: Optional[float]
    duration_s: float


class EnrollBody(BaseModel):
    speaker: str
    utterances: int = Field(description="the speaker's enrollment utterances now")
    added: int = Field(description="utterances added by this request")


class SpeakerBody(BaseModel):
    speaker: str
    utterances: int
    duration_s: float
    created: str
    updated: Optional[str]


class SpeakersBody(BaseModel):
    speakers: list[SpeakerBody]


class RemovedBody(BaseModel):
    speaker: str
    removed_utterances: int


class KeyBody(BaseModel):
    key_id: str
    name: str
    scope: str
    created: str
    revoked: Optional[str]
    key: Optional[str] = Field(None, description="the key itself: only in the answer that creates it")


class KeysBody(BaseModel):
    keys: list[KeyBody]


class NewKey(BaseModel):
    name: str
    scope: str = Field(description="admin or verify")


class AuditBody(BaseModel):
    records: list[dict[str, Any]]


_ERRORS = {status: {"model": ErrorBody} for status in (401, 403, 404, 413, 415, 422, 429, 503)}


# --- the application ----------------------------------------------------------------------------

def create_app(model: SpeakerModel, settings: ServeSettings) -> FastAPI:
    """The FastAPI application serving ``model`` over the database ``settings.db_path`` (which must exist)."""
    service = _Service(model, settings)
    app = FastAPI(title="spk speaker verification", version=API_VERSION,
                  description="Enroll speakers, verify claims and identify speakers with a trained spk model. "
                              "Send an API key as 'Authorization: Bearer <key>'.",
                  responses=_ERRORS, docs_url=None, redoc_url=None)  # their pages load scripts from a CDN
    app.state.service = service
    _add_error_handlers(app)
    _add_routes(app, service)
    if WEB_DIR.is_dir():
        app.mount("/static", StaticFiles(directory=WEB_DIR), name="static")
    app.add_middleware(RequestGuard, max_body_bytes=settings.max_upload_bytes,
                       body_timeout_s=settings.request_timeout_s)
    return app


class _Service:
    """The state every request shares: the model, the settings, the inference pool and the rate limiter."""

    def __init__(self, model: SpeakerModel, settings: ServeSettings):
        self.model = model
        self.settings = settings
        self.pool = ThreadPoolExecutor(settings.inference_workers, thread_name_prefix="spk-inference")
        self.limiter = RateLimiter(settings.rate_limit, settings.burst)
        self._connections = threading.local()
        with self.database() as db:  # fail at start, not at the first request
            self.model_id = db.model.model_id

    @contextmanager
    def database(self) -> Iterator[SpeakerDB]:
        """The calling thread's connection to the speaker database, opened on its first use and kept.

        Opening one (with its schema and model checks) costs about a millisecond, and a
        verification used it three times. Each statement still reads the latest commit, so
        keys revoked or speakers enrolled by another process count at once. The connection
        is opened again when the file at the database path is no longer the one it was
        opened on (moved, deleted or replaced: an acknowledged write must not go to a file
        that nobody will read), and after it raised a database error.
        """
        identity = _file_identity(self.settings.db_path)
        held = getattr(self._connections, "held", None)
        if held is not None and held[1] != identity:
            held[0].close()
            held = self._connections.held = None
        if held is None:
            held = self._connections.held = (self.model.open_db(self.settings.db_path), identity)
        try:
            yield held[0]
        except (sqlite3.Error, SpeakerDBError):
            self._connections.held = None
            held[0].close()
            raise

    async def infer(self, work: Callable[[], Any]) -> Any:
        """Run ``work`` in the inference pool within the request timeout (503 when it cannot); audio or input
        that cannot be used is answered as :func:`_input_error` says (413, 415, 422)."""
        timeout = self.settings.request_timeout_s
        deadline = time.monotonic() + timeout

        def guarded():
            if time.monotonic() > deadline:  # waited in the queue past the timeout: do nothing
                raise ServiceError(503, "the server is busy; try again later")
            return work()

        future = asyncio.get_running_loop().run_in_executor(self.pool, guarded)
        try:
            return await asyncio.wait_for(future, timeout)
        except _INPUT_ERRORS as error:
            raise _input_error(error) from None
        except asyncio.TimeoutError:
            raise ServiceError(503, f"the request took longer than {timeout:g} s (spk serve --request-timeout); "
                                    "nothing was changed; try again later, or send shorter audio",
                               {"Retry-After": "1"}) from None

    async def record_decision(self, actor: str, action: str, speaker: str, score: float | None, decision: str,
                              detail: str) -> None:
        """Append a decision to the audit table, from a thread (never on the event loop)."""

        def record():
            with self.database() as db:
                db.record_decision(actor, action, speaker, score, decision, detail)

        await anyio.to_thread.run_sync(record)

    def decode(self, data: bytes, filename: str | None):
        return read_audio_bytes(data, name=_upload_name(filename), target_rate=self.model.feature_config.sample_rate,
                                max_seconds=self.settings.max_audio_s)


def _file_identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of the file at ``path``; None when there is none."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


def _key_dependency(scope: str):
    """A FastAPI dependency: the key of the request if it is valid for ``scope`` and within its rate."""

    def check(request: Request):  # a plain function: FastAPI runs it in a thread (it reads the database)
        service: _Service = request.app.state.service
        presented = request.headers.get("x-api-key")
        authorization = request.headers.get("authorization", "")
        if authorization:
            kind, _, value = authorization.partition(" ")
            if kind.lower() != "bearer":
                raise AuthError("send the key as 'Authorization: Bearer <key>'")
            presented = value.strip()
        with service.database() as db:
            key = authenticate(db, presented)
        request.state.key_id = key.key_id
        wait = service.limiter.retry_after(key.key_id)  # refused requests count too
        if wait > 0:
            raise ServiceError(429, f"the rate limit of key {key.key_id} ({service.limiter.rate:g} requests/s) "
                                    "is reached; slow down", {"Retry-After": str(max(1, math.ceil(wait)))})
        require_scope(key, scope)
        return key

    return check


def _add_error_handlers(app: FastAPI) -> None:
    def answer(status: int, message: str, headers: dict | None = None) -> JSONResponse:
        return JSONResponse({"error": message, "status": status}, status_code=status, headers=headers)

    @app.exception_handler(ServiceError)
    async def service_error(_request, error: ServiceError):
        return answer(error.status, str(error), error.headers)

    @app.exception_handler(AuthError)
    async def auth_error(_request, error: AuthError):
        headers = {"WWW-Authenticate": "Bearer"} if error.status == 401 else None
        return answer(error.status, str(error), headers)

    @app.exception_handler(SpeakerDBError)
    async def database_error(_request, error: SpeakerDBError):  # the database went away or was damaged
        logger.error("speaker database: %s", error)
        return answer(503, f"the speaker database cannot be used now: {error}")

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request, error: RequestValidationError):
        problems = "; ".join(f"{'.'.join(str(p) for p in item.get('loc', ())[1:]) or 'request'}: "
                             f"{item.get('msg', '')}" for item in error.errors())
        return answer(422, f"invalid request: {problems}")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request, error: StarletteHTTPException):
        return answer(error.status_code, str(error.detail), getattr(error, "headers", None))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, error: Exception):
        request_id = request.scope.get("state", {}).get("request_id")
        logger.error("internal error in %s %s", request.method, request.url.path, exc_info=error,
                     extra={"fields": {"request_id": request_id}})
        return answer(500, f"internal error (request {request_id}); the server log has the details")


def _input_error(error: Exception) -> ServiceError:
    """The HTTP answer to audio or a request that cannot be used."""
    if isinstance(error, AudioFormatError):
        return ServiceError(415, str(error))
    if isinstance(error, AudioTooLongError):
        return ServiceError(413, str(error))
    return ServiceError(422, str(error))


_INPUT_ERRORS = (AudioError, SpkInputError, SpkError, SpeakerDBError)


async def _read_uploads(service: _Service, uploads: list[UploadFile]) -> list[tuple[bytes, str | None]]:
    """The uploads' bytes and names; a request with too many files, or a file that is not audio by its
    header, is refused here, before it waits for an inference worker."""
    if len(uploads) > service.settings.max_files:
        raise ServiceError(413, f"{len(uploads)} audio files in one request; at most "
                                f"{service.settings.max_files} are accepted")
    files = [(await upload.read(), upload.filename) for upload in uploads]
    for data, filename in files:
        try:
            require_container(data, _upload_name(filename))
        except AudioError as error:
            raise _input_error(error) from None
    return files


def _upload_name(filename: str | None) -> str:
    return f"upload {filename!r}" if filename else "the upload"


def _checked_speaker(name: str) -> str:
    try:
        return check_speaker_name(name)
    except SpeakerDBError as error:
        raise ServiceError(422, str(error)) from None


def _add_routes(app: FastAPI, service: _Service) -> None:
    admin, verifier = Depends(_key_dependency("admin")), Depends(_key_dependency("verify"))
    v = f"/{API_VERSION}"

    @app.get(f"{v}/health", tags=["service"])
    def health() -> dict:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get(f"{v}/ready", tags=["service"])
    def ready() -> JSONResponse:
        """Readiness: the model is loaded and the speaker database opens."""
        try:
            with service.database() as db:
                count = len(db.speaker_names())
        except SpeakerDBError as error:
            return JSONResponse({"ready": False, "error": str(error)}, status_code=503)
        return JSONResponse({"ready": True, "model": service.model_id[:12], "speakers": count,
                             "calibrated": service.model.calibration is not None})

    @app.get("/", include_in_schema=False)
    def page():
        index = WEB_DIR / "index.html"
        if not index.is_file():
            raise ServiceError(404, "this installation has no web page")
        return FileResponse(index)

    @app.post(f"{v}/enroll", status_code=201, response_model=EnrollBody, tags=["speakers"])
    async def enroll(request: Request, speaker: str = Form(...), audio: list[UploadFile] = File(...),
                     key=admin) -> EnrollBody:
        """Add one or more recordings to a speaker (made when new). All of them or none are added."""
        speaker = _checked_speaker(speaker)
        uploads = await _read_uploads(service, audio)

        def embed():
            waveforms = [service.decode(data, filename) for data, filename in uploads]
            sources = [f"upload:{filename or 'audio'}"[:200] for _, filename in uploads]
            return service.model.enrollments(waveforms, speaker=speaker, sources=sources)

        items = await service.infer(embed)

        def write() -> int:
            with service.database() as db:
                return db.add_enrollments(speaker, items, actor=key.key_id,
                                          detail=f"request {request.state.request_id}")

        count = await anyio.to_thread.run_sync(write)
        return EnrollBody(speaker=speaker, utterances=count, added=len(items))

    @app.post(f"{v}/verify", response_model=VerifyBody, tags=["decisions"])
    async def verify(request: Request, speaker: str = Form(...), audio: UploadFile = File(...),
                     operating_point: Optional[str] = Form(None), threshold: Optional[float] = Form(None),
                     key=verifier) -> VerifyBody:
        """Accept or reject the claim that the recording is ``speaker``."""
        speaker = _checked_speaker(speaker)
        if threshold is not None and not math.isfinite(threshold):
            raise ServiceError(422, f"threshold must be a finite number, not {threshold}")
        if threshold is not None and operating_point is not None:
            raise ServiceError(422, "give either threshold or operating_point, not both")
        if operating_point is not None:
            try:
                parse_operating_point(operating_point)
            except SpkError as error:
                raise ServiceError(422, str(error)) from None
        [(data, filename)] = await _read_uploads(service, [audio])
        reference = await anyio.to_thread.run_sync(_speaker_model, service, speaker)

        def decide():
            waveform = service.decode(data, filename)
            result = service.model.verify(waveform, reference, speaker, threshold=threshold,
                                          operating_point=operating_point or "eer")
            return result, len(waveform) / service.model.feature_config.sample_rate

        result, duration = await service.infer(decide)
        decision = "accept" if result.accept else "reject"
        await service.record_decision(key.key_id, "verify", speaker, result.score, decision,
                                      f"request {request.state.request_id}; threshold {result.threshold:.4f}")
        return VerifyBody(speaker=speaker, decision=decision, accept=result.accept, score=result.score,
                          llr=result.llr, threshold=result.threshold, operating_point=result.operating_point,
                          duration_s=round(duration, 3))

    @app.post(f"{v}/identify", response_model=IdentifyBody, tags=["decisions"])
    async def identify(request: Request, audio: UploadFile = File(...), top_k: int = Form(5, ge=1, le=100),
                       unknown_threshold: Optional[float] = Form(None), key=verifier) -> IdentifyBody:
        """The most probable enrolled speakers; ``unknown`` when the best score is below ``unknown_threshold``."""
        if unknown_threshold is not None and not math.isfinite(unknown_threshold):
            raise ServiceError(422, f"unknown_threshold must be a finite number, not {unknown_threshold}")
        [(data, filename)] = await _read_uploads(service, [audio])

        def rank():
            waveform = service.decode(data, filename)
            with service.database() as db:
                if not db.speaker_names():
                    raise ServiceError(404, "no speakers are enrolled yet; enroll some first (POST /v1/enroll)")
                result = service.model.identify(waveform, top_k, db, unknown_threshold)
            return result, len(waveform) / service.model.feature_config.sample_rate

        result, duration = await service.infer(rank)
        best = result.candidates[0]
        await service.record_decision(key.key_id, "identify", best.speaker, best.score,
                                      "unknown" if result.unknown else "identified",
                                      f"request {request.state.request_id}; top {len(result.candidates)}")
        return IdentifyBody(speaker=result.speaker, unknown=result.unknown,
                            candidates=[CandidateBody(**vars(c)) for c in result.candidates],
                            unknown_threshold=result.unknown_threshold, duration_s=round(duration, 3))

    @app.get(f"{v}/speakers", response_model=SpeakersBody, tags=["speakers"])
    def list_speakers(key=admin) -> SpeakersBody:
        """Every enrolled speaker with its number of utterances."""
        with service.database() as db:
            return SpeakersBody(speakers=[SpeakerBody(**info.to_dict()) for info in db.speakers()])

    @app.delete(f"{v}/speakers/{{speaker}}", response_model=RemovedBody, tags=["speakers"])
    def remove_speaker(speaker: str, request: Request, key=admin) -> RemovedBody:
        """Remove a speaker, its utterances and its model."""
        with service.database() as db:
            if speaker not in db.speaker_names():
                raise ServiceError(404, f"speaker {speaker!r} is not enrolled")
            count = db.remove(speaker, actor=key.key_id, detail=f"request {request.state.request_id}")
        return RemovedBody(speaker=speaker, removed_utterances=count)

    @app.get(f"{v}/keys", response_model=KeysBody, tags=["keys"])
    def list_keys(key=admin) -> KeysBody:
        """Every API key (never their secrets), revoked ones included."""
        with service.database() as db:
            return KeysBody(keys=[KeyBody(**k.to_dict()) for k in db.api_keys()])

    @app.post(f"{v}/keys", status_code=201, response_model=KeyBody, tags=["keys"])
    def new_key(body: NewKey, key=admin) -> KeyBody:
        """Make a key; the answer holds the key itself, which cannot be shown again."""
        with service.database() as db:
            try:  # an unknown scope or a bad name
                secret, record = create_key(db, body.name, body.scope, actor=key.key_id)
            except ValueError as error:
                raise ServiceError(422, str(error)) from None
        return KeyBody(**record.to_dict(), key=secret)

    @app.delete(f"{v}/keys/{{key_id}}", response_model=KeyBody, tags=["keys"])
    def revoke_key(key_id: str, key=admin) -> KeyBody:
        """Revoke a key: requests with it get 401 from now on."""
        with service.database() as db:
            if db.api_key(key_id) is None:
                raise ServiceError(404, f"there is no API key {key_id!r}")
            return KeyBody(**db.revoke_key(key_id, actor=key.key_id).to_dict())

    @app.get(f"{v}/audit", response_model=AuditBody, tags=["keys"])
    def audit(limit: int = 100, key=admin) -> AuditBody:
        """The newest ``limit`` audit records, oldest first."""
        with service.database() as db:
            return AuditBody(records=[r.to_dict() for r in db.audit_records(limit=max(1, min(limit, 10000)))])


def _speaker_model(service: _Service, speaker: str):
    with service.database() as db:
        try:
            return db.speaker_model(speaker)
        except SpeakerDBError:  # the only error it raises: an unknown speaker
            raise ServiceError(404, f"speaker {speaker!r} is not enrolled") from None
