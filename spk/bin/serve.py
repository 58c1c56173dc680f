"""``spk serve``, ``spk keys`` and ``spk audit``: a trained model and a speaker database as an HTTP service.

Exit status as the product commands: 0 success, 2 usage error, 3 a model, database or
key error (with a message, no traceback).
"""

from __future__ import annotations

import json
import logging
import signal
import sys
from pathlib import Path

import click

from spk.bin.product import _check_device, _Command, _echo_json, _fail, _json_option
from spk.service.auth import SCOPES, create_key
from spk.speaker_db import SpeakerDB, SpeakerDBError

logger = logging.getLogger("spk.service")


def _db_option(help_text: str):
    return click.option("--db", "db_path", required=True, metavar="FILE", help=help_text)


@click.command("serve", cls=_Command)
@click.option("--model", "model_path", required=True, metavar="DIR|NAME",
              help="A trained experiment dir, a model package dir, or a pretrained model's name.")
@_db_option("Speaker database (SQLite); made when it does not exist. API keys and the audit trail live in it.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (0.0.0.0: every interface; put TLS in front, see --ssl-certfile).")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option("--device", default="cpu", show_default=True, callback=_check_device)
@click.option("--max-upload-mb", default=16.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Largest request body; larger ones get 413.")
@click.option("--max-audio-seconds", default=120.0, show_default=True,
              type=click.FloatRange(min=0, min_open=True), help="Longest recording; longer ones get 413.")
@click.option("--max-files", default=10, show_default=True, type=click.IntRange(min=1),
              help="Most recordings in one enrollment request.")
@click.option("--rate-limit", default=20.0, show_default=True, type=click.FloatRange(min=0),
              help="Requests per second per API key (0: no limit); over it, 429.")
@click.option("--burst", default=None, type=click.IntRange(min=1),
              help="Requests a key may make at once before the rate applies [default: twice the rate].")
@click.option("--request-timeout", default=30.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Seconds a request may take, waiting for a worker included; over it, 503 (408 for a slow "
                   "upload), and nothing is changed.")
@click.option("--workers", default=0, type=click.IntRange(min=0),
              help="Inference threads (requests computed at once) [default: the cores, at most 4].")
@click.option("--ssl-certfile", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Serve HTTPS with this certificate (PEM) ...")
@click.option("--ssl-keyfile", type=click.Path(exists=True, dir_okay=False), default=None,
              help="... and this private key.")
@click.option("--graceful-timeout", default=30.0, show_default=True, type=click.FloatRange(min=0),
              help="On SIGTERM, seconds to let requests in flight finish.")
def serve(model_path, db_path, host, port, device, max_upload_mb, max_audio_seconds, max_files, rate_limit, burst,
          request_timeout, workers, ssl_certfile, ssl_keyfile, graceful_timeout):
    """Serve enrollment, verification and identification over HTTP (JSON API /v1, web page at /).

    Every request but /v1/health, /v1/ready, the page and the API description needs an
    API key ('spk keys create'). Logs are one JSON object per line on stderr.
    """
    if (ssl_certfile is None) != (ssl_keyfile is None):
        raise click.UsageError("give both --ssl-certfile and --ssl-keyfile, or neither")
    _json_logging()
    import torch

    try:
        import uvicorn
        from threadpoolctl import threadpool_limits

        from spk.service.app import ServeSettings, create_app
    except ImportError as error:
        _fail(f"spk serve needs the 'serve' extra ({error}): pip install 'spk[serve]' "
              "(fastapi, uvicorn, python-multipart, threadpoolctl)", False)
    from spk.api import SpeakerModel, SpkError
    from spk.threads import available_cores

    cores = available_cores().cores
    workers = workers or min(4, cores)
    torch.set_num_threads(max(1, cores // workers))
    # numpy's OpenBLAS threads spin between the server's small matrix products and took a whole core
    # (benchmarks/serve_load.py: 27.7 requests/s with them, 42.3 without); requests run in parallel already
    threadpool_limits(1, user_api="blas")
    try:
        model = SpeakerModel.load(model_path, device=device)
        with model.open_db(db_path, create=True) as db:
            if not any(key.revoked is None for key in db.api_keys()):
                logger.warning("%s has no valid API key: every request will get 401; make one with "
                               "'spk keys create --db %s --name NAME --scope admin'", db_path, db_path)
        settings = ServeSettings(Path(db_path), max_upload_bytes=int(max_upload_mb * 1e6),
                                 max_audio_s=max_audio_seconds, max_files=max_files, rate_limit=rate_limit,
                                 burst=burst, request_timeout_s=request_timeout, inference_workers=workers)
        app = create_app(model, settings)
    except (SpkError, SpeakerDBError, OSError) as error:
        _fail(str(error), False)
    logger.info("serving %s with database %s on %s://%s:%d (%d inference thread(s), %d torch thread(s) each)",
                model.source, db_path, "https" if ssl_certfile else "http", host, port, workers,
                torch.get_num_threads())
    config = uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False,
                            timeout_graceful_shutdown=graceful_timeout, ssl_certfile=ssl_certfile,
                            ssl_keyfile=ssl_keyfile, server_header=False)
    server = uvicorn.Server(config)
    # After a graceful stop uvicorn raises the signal again with the handlers it found installed: with
    # Python's defaults the process would then die of SIGTERM (status 143) or a KeyboardInterrupt. The
    # stop was clean, so those handlers do nothing and 'spk serve' exits 0.
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, lambda *_: None)
    server.run()
    if not server.started:
        _fail(f"the server could not start on {host}:{port} (see the log above)", False)


def _json_logging() -> None:
    """Every log record (spk's and uvicorn's at INFO, any other library's warnings) and Python's warnings as
    one JSON line on stderr."""
    from spk.service.access_log import JsonFormatter

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    logging.captureWarnings(True)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    for name in ("spk", "uvicorn", "uvicorn.error"):
        named = logging.getLogger(name)
        named.handlers[:] = []
        named.setLevel(logging.INFO)
        named.propagate = True


# --- keys --------------------------------------------------------------------------------------

@click.group("keys")
def keys():
    """Create, list and revoke the API keys of 'spk serve' (kept as hashes in the speaker database)."""


def _open_db(db_path: str, as_json: bool, model_path: str | None = None) -> SpeakerDB:
    try:
        if model_path is not None and not Path(db_path).exists():
            from spk.api import SpeakerModel

            return SpeakerModel.load(model_path).open_db(db_path, create=True)
        return SpeakerDB.open(db_path)
    except SpeakerDBError as error:
        message = str(error)
        if model_path is None and not Path(db_path).exists():
            message += "; or give --model to make it now"
        _fail(message, as_json)
    except Exception as error:  # a model that does not load
        _fail(str(error), as_json)


@keys.command("create", cls=_Command)
@_db_option("Speaker database of the server.")
@click.option("--name", required=True, help="Who or what the key is for (shown in listings and the audit).")
@click.option("--scope", required=True, type=click.Choice(SCOPES),
              help="admin: enroll, remove, list, keys, audit and verify; verify: verify and identify only.")
@click.option("--model", "model_path", default=None, metavar="DIR|NAME",
              help="Make the database with this model when it does not exist yet.")
@_json_option
def create(db_path, name, scope, model_path, as_json):
    """Make an API key and print it: it is shown only once (the database keeps its hash)."""
    with _open_db(db_path, as_json, model_path) as db:
        try:
            secret, record = create_key(db, name, scope)
        except ValueError as error:
            _fail(str(error), as_json)
    if as_json:
        _echo_json({**record.to_dict(), "key": secret})
        return
    click.echo(secret)
    click.echo(f"key {record.key_id} ({scope}, {record.name}): keep it secret; it cannot be shown again",
               err=True)


@keys.command("list", cls=_Command)
@_db_option("Speaker database of the server.")
@_json_option
def list_keys(db_path, as_json):
    """List the API keys (never their secrets)."""
    with _open_db(db_path, as_json) as db:
        records = db.api_keys()
    if as_json:
        _echo_json({"keys": [record.to_dict() for record in records]})
        return
    if not records:
        click.echo(f"{db_path}: no API keys")
    for record in records:
        state = f"revoked {record.revoked}" if record.revoked else "valid"
        click.echo(f"{record.key_id}  {record.scope:<6}  {record.created}  {state:<33}  {record.name}")


@keys.command("revoke", cls=_Command)
@_db_option("Speaker database of the server.")
@_json_option
@click.argument("key_id")
def revoke(db_path, as_json, key_id):
    """Revoke the key KEY_ID (as 'spk keys list' shows it): the server refuses it from its next request."""
    with _open_db(db_path, as_json) as db:
        try:
            record = db.revoke_key(key_id)
        except SpeakerDBError as error:
            _fail(str(error), as_json)
    if as_json:
        _echo_json(record.to_dict())
    else:
        click.echo(f"revoked key {record.key_id} ({record.scope}, {record.name}) at {record.revoked}")


# --- audit -------------------------------------------------------------------------------------

@click.command("audit", cls=_Command)
@_db_option("Speaker database.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(min=1),
              help="Show the newest LIMIT records.")
@click.option("--after", "after_id", default=0, type=click.IntRange(min=0),
              help="Only records after this record id (to follow the trail).")
@_json_option
def audit(db_path, limit, after_id, as_json):
    """Show the audit trail: every enrollment, removal, decision and key change, oldest first (no audio)."""
    with _open_db(db_path, as_json) as db:
        records = db.audit_records(limit=limit, after_id=after_id)
    if as_json:
        for record in records:
            click.echo(json.dumps(record.to_dict()))
        return
    if not records:
        click.echo(f"{db_path}: no audit records" + (f" after {after_id}" if after_id else ""))
    for r in records:
        score = "" if r.score is None else f"{r.score:.4f}"
        click.echo(f"{r.id:>6}  {r.time}  {r.key_id:<10} {r.action:<10} {r.speaker or '-':<20} {score:>8}  "
                   f"{r.decision or '':<10} {r.detail}")


__all__ = ["audit", "keys", "serve"]
