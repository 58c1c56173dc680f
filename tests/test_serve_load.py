"""``spk serve`` under load and faults, as a real process on 127.0.0.1 (issue 16, items 5 and 6).

- The load test of ``benchmarks/serve_load.py`` in short form (its own functions): concurrent
  verify, identify, good and bad enrollments; zero errors, and a database that agrees with
  every answer.
- kill -9 of the server during a burst of concurrent enrollments, then a restart on the same
  database: every acknowledged enrollment is complete (speaker, utterances, model, audit row),
  those in flight at the kill landed whole or not at all, and ``PRAGMA integrity_check`` is ok.
- SIGTERM during a slow enrollment: it completes with 201, new connections are refused
  meanwhile, and the process exits 0.

The model is untrained (``serve_helpers.untrained_model``): these tests are about the server's
mechanics, not recognition.
"""

from __future__ import annotations

import signal
import socket
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.serve_helpers import (
    LIBRISPEECH,
    ServerProcess,
    make_key,
    speech_files,
    untrained_model,
    wav_bytes,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import serve_load


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return untrained_model(tmp_path_factory.mktemp("serve_load") / "model")


@pytest.fixture(scope="module")
def clips() -> serve_load.Clips:
    speech_files(1)  # skips without ../shared/data
    return serve_load.load_clips(LIBRISPEECH, count=4, seconds=3.0)


def _keys(db: Path, model: Path) -> tuple[str, str]:
    return make_key(db, "admin", "load admin", model=model), make_key(db, "verify", "load verify")


def test_short_load_has_no_errors_and_a_consistent_database(tmp_path, model, clips):
    db = tmp_path / "speakers.db"
    admin, verifier = _keys(db, model)
    with ServerProcess(model, db, tmp_path / "serve.log", "--rate-limit", "0") as server:
        before = serve_load.enroll_speakers(server.url, admin, clips, "short", count=2)
        audit_after = serve_load.audit_baseline(db)
        plan = serve_load.LoadPlan(server.url, admin, verifier, clips, list(before), clients=8, seconds=3.0,
                                   bad_enroll=0.5, prefix="short")
        outcomes, wall = serve_load.run_load(plan)
    summary = serve_load.summarize(outcomes, wall)
    print(serve_load.format_table(summary))
    assert summary["errors"] == 0, summary["error_examples"]
    assert {"verify", "identify", "enroll", "enroll_bad"} <= set(summary["kinds"]), summary["kinds"]
    report = serve_load.check_database(db, outcomes, before, audit_after)
    assert report["ok"], report["problems"]
    assert report["enrollments_acknowledged"] > 0 and report["enrollments_failed"] > 0
    assert report["audit_decision_rows"] == report["decisions_acknowledged"] > 0


def test_kill_9_during_enrollments_loses_no_acknowledged_one(tmp_path, model, clips):
    db = tmp_path / "speakers.db"
    admin, verifier = _keys(db, model)
    audit_after = serve_load.audit_baseline(db)
    server = ServerProcess(model, db, tmp_path / "serve.log", "--rate-limit", "0").start()
    plan = serve_load.LoadPlan(server.url, admin, verifier, clips, [], clients=8, seconds=60.0,
                               mix={"enroll": 1.0}, bad_enroll=0.0, max_files=3, prefix="burst")
    outcomes: list[serve_load.Outcome] = []
    stop = threading.Event()
    burst = threading.Thread(target=serve_load.run_load, args=(plan, stop, outcomes))
    burst.start()
    try:
        deadline = time.monotonic() + 30
        while sum(o.acknowledged for o in outcomes) < 10 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        stop.set()  # no request starts after this; the ones in flight meet the kill
        server.process.kill()
        server.process.wait(10)
        burst.join(60)
    acknowledged = [o for o in outcomes if o.acknowledged]
    in_flight = [o for o in outcomes if o.status is None]
    print(f"kill -9: {len(acknowledged)} acknowledged enrollment(s), {len(in_flight)} in flight")
    assert len(acknowledged) >= 10 and not burst.is_alive()
    assert all(o.status == 201 for o in outcomes if o.status is not None), \
        [(o.status, o.error) for o in outcomes if o.status not in (None, 201)]
    assert in_flight, "no enrollment was in flight at the kill; the test did not test it"

    with ServerProcess(model, db, tmp_path / "serve.log") as restarted:
        report = serve_load.check_database(db, outcomes, {}, audit_after, in_flight_ok=True)
        print(f"after the restart: {report['speakers']} speaker(s), {report['in_flight_landed']} of "
              f"{len(in_flight)} in-flight enrollment(s) landed whole, the others not at all")
        assert report["ok"], report["problems"]
        assert report["integrity_check"] == "ok"
        ready = httpx.get(f"{restarted.url}/v1/ready", timeout=10).json()
        assert ready["speakers"] == report["speakers"] >= len(acknowledged)
        answer = httpx.post(f"{restarted.url}/v1/verify", headers={"Authorization": f"Bearer {verifier}"},
                            data={"speaker": acknowledged[0].speaker},
                            files={"audio": ("clip.wav", clips.speech[0], "audio/wav")}, timeout=30)
        assert answer.status_code == 200, answer.text


def _long_speech(seconds: float) -> bytes:
    """``seconds`` of real speech (LibriSpeech files one after the other) as WAV bytes."""
    import soundfile as sf

    pieces, total = [], 0
    for path in speech_files(40):
        samples, _rate = sf.read(str(path), dtype="float32")
        pieces.append(samples)
        total += len(samples)
        if total >= seconds * 16000:
            break
    return wav_bytes(np.concatenate(pieces)[:int(seconds * 16000)])


def _refused_soon(port: int, within_s: float = 2.0) -> bool:
    """Whether connecting to ``port`` is refused within ``within_s`` (it is tried every 20 ms)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except ConnectionRefusedError:
            return True
        time.sleep(0.02)
    return False


def test_sigterm_lets_the_request_in_flight_finish_and_exits_0(tmp_path, model):
    db = tmp_path / "speakers.db"
    admin = make_key(db, "admin", model=model)
    server = ServerProcess(model, db, tmp_path / "serve.log", "--max-upload-mb", "100", "--workers", "1").start()
    # two recordings of 110 s (the limit is 120 s): honest work for one inference thread (2 s here)
    recording = _long_speech(110.0)
    request = httpx.Request("POST", f"{server.url}/v1/enroll", headers={"Authorization": f"Bearer {admin}"},
                            data={"speaker": "long"},
                            files=[("audio", (f"long{i}.wav", recording, "audio/wav")) for i in range(2)])
    body = request.read()
    uploaded = threading.Event()

    def chunks():
        for offset in range(0, len(body), 1 << 20):
            yield body[offset:offset + (1 << 20)]
        uploaded.set()  # the whole body is handed to the socket: the server has it in a moment

    answer: dict = {}

    def enroll():
        headers = {**request.headers, "Content-Length": str(len(body))}
        answer["response"] = httpx.post(str(request.url), headers=headers, content=chunks(), timeout=60)
        answer["done"] = time.perf_counter()

    client = threading.Thread(target=enroll)
    try:
        client.start()
        assert uploaded.wait(30), "the upload did not finish"
        time.sleep(0.05)
        sigterm = time.perf_counter()
        server.signal(signal.SIGTERM)
        refused = _refused_soon(server.port)
        still_working = client.is_alive()
        client.join(60)
        status = server.wait(60)
    finally:
        if server.process.poll() is None:
            server.process.kill()
    response = answer["response"]
    print(f"enrollment answered {answer['done'] - sigterm:.2f} s after SIGTERM")
    assert refused, "new connections were still accepted 2 s after SIGTERM"
    assert still_working, "the enrollment finished before new connections were refused; make it slower"
    assert response.status_code == 201 and response.json()["added"] == 2, response.text
    assert status == 0, f"spk serve exited {status} after SIGTERM"
    assert '"status": 201' in (tmp_path / "serve.log").read_text()
