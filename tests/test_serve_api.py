"""``spk serve`` through real HTTP on 127.0.0.1: keys and scopes, rate limits, upload limits, the input checks
the command line shares, the audit trail, and the key and audit commands.

One server (uvicorn in a thread, an untrained model) serves the module; every test makes its own keys,
so rate limits and audit rows of one test do not leak into another.
"""

from __future__ import annotations

import json
import sqlite3
import stat

import httpx
import numpy as np
import pytest

from spk.speaker_db import SpeakerDB
from tests.serve_helpers import ThreadServer, make_key, speech_files, speech_wav, untrained_model, wav_bytes
from tests.test_cli_product import spk

MAX_UPLOAD = 600_000
MAX_AUDIO_S = 8.0


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    model = untrained_model(root / "model")
    with ThreadServer(model, root / "voices.db", max_upload_bytes=MAX_UPLOAD, max_audio_s=MAX_AUDIO_S,
                      rate_limit=2, burst=6, max_files=3) as running:
        running.db = root / "voices.db"
        running.model = model
        yield running


def _key(server, scope: str = "admin") -> dict:
    return {"Authorization": f"Bearer {make_key(server.db, scope)}"}


def _audio(data: bytes, name: str = "clip.wav"):
    return {"audio": (name, data, "application/octet-stream")}


def _state(server) -> tuple:
    """Everything a refused request must leave alone: speakers, utterances, models and audit rows."""
    with sqlite3.connect(server.db) as conn:
        return tuple(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
                     for table in ("speakers", "enrollments", "speaker_models", "audit"))


def _enroll(server, headers, speaker: str, *clips: bytes) -> httpx.Response:
    files = [("audio", (f"{i}.wav", clip, "audio/wav")) for i, clip in enumerate(clips)]
    return httpx.post(f"{server.url}/v1/enroll", headers=headers, data={"speaker": speaker}, files=files,
                      timeout=30)


def test_service_endpoints_need_no_key_and_describe_the_api(server):
    assert httpx.get(f"{server.url}/v1/health").json() == {"status": "ok"}
    ready = httpx.get(f"{server.url}/v1/ready").json()
    assert ready["ready"] is True and ready["calibrated"] is True
    schema = httpx.get(f"{server.url}/openapi.json").json()
    assert {"/v1/enroll", "/v1/verify", "/v1/identify", "/v1/speakers", "/v1/speakers/{speaker}",
            "/v1/keys", "/v1/audit"} <= set(schema["paths"])
    assert "audio" in json.dumps(schema["components"]["schemas"])


def test_enroll_verify_identify_remove_and_their_audit_rows(server):
    admin, verifier = _key(server, "admin"), _key(server, "verify")
    answer = _enroll(server, admin, "reader0", speech_wav(0, 4.0), speech_wav(0, 6.0))
    assert answer.status_code == 201, answer.text
    assert answer.json() == {"speaker": "reader0", "utterances": 2, "added": 2}
    verdict = httpx.post(f"{server.url}/v1/verify", headers=verifier, data={"speaker": "reader0"},
                         files=_audio(speech_wav(0, 3.0)), timeout=30)
    assert verdict.status_code == 200, verdict.text
    body = verdict.json()
    assert body["decision"] in ("accept", "reject") and body["accept"] == (body["score"] >= body["threshold"])
    assert body["operating_point"] == "eer" and body["llr"] == pytest.approx(10 * body["score"] - 5)
    ranking = httpx.post(f"{server.url}/v1/identify", headers=verifier, files=_audio(speech_wav(0, 3.0)),
                         data={"top_k": "1"}, timeout=30)
    assert ranking.status_code == 200 and len(ranking.json()["candidates"]) == 1
    listed = httpx.get(f"{server.url}/v1/speakers", headers=admin).json()["speakers"]
    assert {"speaker": "reader0", "utterances": 2} .items() <= next(
        s for s in listed if s["speaker"] == "reader0").items()
    removed = httpx.delete(f"{server.url}/v1/speakers/reader0", headers=admin)
    assert removed.json() == {"speaker": "reader0", "removed_utterances": 2}
    assert httpx.delete(f"{server.url}/v1/speakers/reader0", headers=admin).status_code == 404

    admin_id, verify_id = (h["Authorization"].split("_")[1] for h in (admin, verifier))
    records = httpx.get(f"{server.url}/v1/audit", headers=admin, params={"limit": 1000}).json()["records"]
    mine = [(r["key_id"], r["action"], r["speaker"], r["decision"]) for r in records
            if r["key_id"] in (admin_id, verify_id)]
    assert mine == [(admin_id, "enroll", "reader0", None),
                    (verify_id, "verify", "reader0", body["decision"]),
                    (verify_id, "identify", "reader0", ranking.json()["candidates"][0] and
                     ("unknown" if ranking.json()["unknown"] else "identified")),
                    (admin_id, "remove", "reader0", None)]
    # the trail is append-only, whoever opens the file
    with sqlite3.connect(server.db) as conn, pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("DELETE FROM audit")


@pytest.mark.parametrize("headers, status, says", [
    ({}, 401, "an API key is needed"),
    ({"Authorization": "Basic dXNlcjpwdw=="}, 401, "Bearer"),
    ({"Authorization": "Bearer spk_00000000_" + "A" * 43}, 401, "not valid"),
    ({"X-API-Key": "letmein"}, 401, "malformed"),
])
def test_requests_without_a_valid_key_get_401_and_touch_nothing(server, headers, status, says):
    before = _state(server)
    answer = _enroll(server, headers, "intruder", speech_wav(0))
    assert answer.status_code == status and says in answer.json()["error"]
    assert answer.headers["www-authenticate"] == "Bearer"
    assert _state(server) == before


def test_a_verify_key_cannot_enroll_remove_or_list_and_a_revoked_key_nothing(server, tmp_path):
    admin, verifier = _key(server, "admin"), _key(server, "verify")
    assert _enroll(server, admin, "kept", speech_wav(1)).status_code == 201
    before = _state(server)
    assert _enroll(server, verifier, "sneaky", speech_wav(0)).status_code == 403
    assert httpx.delete(f"{server.url}/v1/speakers/kept", headers=verifier).status_code == 403
    assert httpx.get(f"{server.url}/v1/speakers", headers=verifier).status_code == 403
    assert httpx.post(f"{server.url}/v1/keys", headers=verifier, json={"name": "x", "scope": "admin"}
                      ).status_code == 403
    assert _state(server) == before
    # revoked with the command line while the server runs: refused from the next request on
    key_id = verifier["Authorization"].split("_")[1]
    result = spk("keys", "revoke", "--db", server.db, key_id)
    assert result.returncode == 0, result.stderr
    refused = httpx.post(f"{server.url}/v1/verify", headers=verifier, data={"speaker": "kept"},
                         files=_audio(speech_wav(1)))
    assert refused.status_code == 401 and "revoked" in refused.json()["error"]


def test_the_rate_limit_answers_429_with_retry_after(server):
    verifier = _key(server, "verify")
    codes = [httpx.get(f"{server.url}/v1/speakers", headers=verifier).status_code for _ in range(8)]
    assert codes[:6] == [403] * 6  # the burst: the key is checked, its scope refused
    assert 429 in codes[6:]
    limited = httpx.get(f"{server.url}/v1/speakers", headers=verifier)
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
    # another key has its own bucket
    assert httpx.get(f"{server.url}/v1/speakers", headers=_key(server)).status_code == 200


def _noise(seconds: float, scale: float = 0.3) -> bytes:
    return wav_bytes(np.random.default_rng(0).normal(0, scale, int(16000 * seconds)).clip(-1, 1))


@pytest.mark.parametrize("make_upload, status, says", [
    (lambda: open(__file__, "rb").read()[:4000], 415, "not WAV, FLAC or Ogg"),  # text piped as audio: ACCEPT before
    (lambda: np.int16(np.zeros(32000)).tobytes(), 415, "not WAV, FLAC or Ogg"),  # raw PCM without a header
    (lambda: b"", 422, "is empty (0 bytes)"),  # the CLI once said "drop it from the data dir"
    (lambda: speech_wav(0)[:30], 422, ""),  # a torn WAV header
    (lambda: wav_bytes(np.zeros(16000 * 2)), 422, "silence"),
    (lambda: speech_wav(0, 0.2), 422, "too short"),
    (lambda: wav_bytes(np.full(32000, np.nan, np.float32), subtype="FLOAT"), 422, "damaged"),  # NaN samples
    (lambda: _noise(4.0), 422, "speech"),  # white noise: accepted as a speaker before
    (lambda: speech_wav(0, 9.0)[:44] + b"\0" * 20, 422, ""),
    (lambda: wav_bytes(np.zeros(int(8000 * (MAX_AUDIO_S + 1))), 8000), 413, "at most"),  # too long, small file
    (lambda: b"RIFF" + b"\0" * (MAX_UPLOAD + 10), 413, "over the limit"),  # too many bytes
])
def test_unusable_uploads_are_refused_and_change_nothing(server, make_upload, status, says):
    admin = _key(server, "admin")
    assert _enroll(server, admin, "target", speech_wav(2)).status_code == 201
    before = _state(server)
    upload = make_upload()
    for answer in (_enroll(server, admin, "newcomer", upload),
                   httpx.post(f"{server.url}/v1/verify", headers=admin, data={"speaker": "target"},
                              files=_audio(upload), timeout=30)):
        assert answer.status_code == status, answer.text
        assert says in answer.json()["error"] and answer.json()["status"] == status
    assert _state(server) == before


def test_a_flac_upload_is_decoded_as_flac(server):
    """A FLAC piped to the CLI was once read as raw PCM (7.98 s instead of 14.09 s)."""
    import soundfile as sf

    path = speech_files(3)[2]
    admin = _key(server)
    assert _enroll(server, admin, "flac", speech_wav(2)).status_code == 201
    answer = httpx.post(f"{server.url}/v1/verify", headers=admin, data={"speaker": "flac"},
                        files=_audio(path.read_bytes(), path.name), timeout=30)
    assert answer.status_code in (200, 413), answer.text
    seconds = sf.info(str(path)).duration
    if seconds <= MAX_AUDIO_S:
        assert answer.json()["duration_s"] == pytest.approx(seconds, abs=0.01)
    else:
        assert f"{seconds:.1f} s long" in answer.json()["error"]


def test_a_body_sent_without_length_is_cut_at_the_limit(server):
    admin = _key(server)
    before = _state(server)

    def chunks():
        for _ in range(20):
            yield b"x" * 50_000

    answer = httpx.post(f"{server.url}/v1/enroll", headers={**admin, "Content-Type": "multipart/form-data; "
                                                            "boundary=zzz"}, content=chunks(), timeout=30)
    assert answer.status_code == 413
    assert _state(server) == before


def test_one_bad_file_in_an_enrollment_adds_none_of_them(server):
    admin = _key(server)
    before = _state(server)
    answer = _enroll(server, admin, "partial", speech_wav(0), b"not audio at all")
    assert answer.status_code == 415 and "'1.wav'" in answer.json()["error"]
    too_many = _enroll(server, admin, "many", *[speech_wav(0)] * 4)
    assert too_many.status_code == 413 and "at most 3" in too_many.json()["error"]
    assert _state(server) == before


@pytest.mark.parametrize("fields, status, says", [
    ({"speaker": ""}, 422, "speaker"),
    ({"speaker": "x" * 300}, 422, "longer than"),
    ({"speaker": "ghost"}, 404, "not enrolled"),
    ({"speaker": "target", "threshold": "nan"}, 422, "finite"),
    ({"speaker": "target", "operating_point": "banana"}, 422, "operating point"),
])
def test_bad_claims_are_refused_before_any_audio_work(server, fields, status, says):
    admin = _key(server)
    _enroll(server, admin, "target", speech_wav(2))
    before = _state(server)
    answer = httpx.post(f"{server.url}/v1/verify", headers=admin, data=fields, files=_audio(speech_wav(0)))
    assert answer.status_code == status and says in answer.json()["error"], answer.text
    assert _state(server) == before


def test_keys_over_http_and_the_secret_is_never_stored(server):
    admin = _key(server)
    made = httpx.post(f"{server.url}/v1/keys", headers=admin, json={"name": "kiosk 3", "scope": "verify"})
    assert made.status_code == 201
    secret = made.json()["key"]
    assert secret.startswith(f"spk_{made.json()['key_id']}_")
    assert secret.split("_", 2)[2].encode() not in server.db.read_bytes()
    listed = httpx.get(f"{server.url}/v1/keys", headers=admin).json()["keys"]
    assert all("key" not in k or k["key"] is None for k in listed)
    assert httpx.post(f"{server.url}/v1/keys", headers=admin, json={"name": "x", "scope": "root"}
                      ).status_code == 422
    gone = httpx.delete(f"{server.url}/v1/keys/{made.json()['key_id']}", headers=admin)
    assert gone.status_code == 200 and gone.json()["revoked"]
    assert httpx.post(f"{server.url}/v1/identify", headers={"Authorization": f"Bearer {secret}"},
                      files=_audio(speech_wav(0))).status_code == 401


def test_the_database_is_private_and_the_key_and_audit_commands(tmp_path):
    model = untrained_model(tmp_path / "model")
    db = tmp_path / "new.db"
    made = spk("keys", "create", "--db", db, "--name", "ops", "--scope", "admin", "--model", model)
    assert made.returncode == 0, made.stderr
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    key = made.stdout.strip()
    assert key.startswith("spk_") and "cannot be shown again" in made.stderr
    listed = spk("keys", "list", "--db", db, "--json")
    [record] = json.loads(listed.stdout)["keys"]
    assert record["name"] == "ops" and record["scope"] == "admin" and key not in listed.stdout
    missing = spk("keys", "list", "--db", tmp_path / "none.db")
    assert missing.returncode == 3 and "--model" in missing.stderr
    unknown = spk("keys", "revoke", "--db", db, "ffffffff")
    assert unknown.returncode == 3 and record["key_id"] in unknown.stderr
    trail = spk("audit", "--db", db, "--json")
    assert [json.loads(line)["action"] for line in trail.stdout.splitlines()] == ["key_create"]


def test_a_request_that_cannot_be_served_in_time_gets_503_and_changes_nothing(tmp_path):
    import threading

    model = untrained_model(tmp_path / "model")
    with ThreadServer(model, tmp_path / "v.db", request_timeout_s=0.5, inference_workers=1) as busy:
        busy.db = tmp_path / "v.db"
        admin = _key(busy)
        release = threading.Event()
        busy.app.state.service.pool.submit(release.wait, 30)  # the only inference worker is taken
        try:
            before = _state(busy)
            answer = _enroll(busy, admin, "late", speech_wav(0))
            assert answer.status_code == 503 and "0.5 s" in answer.json()["error"]
        finally:
            release.set()
        assert _enroll(busy, admin, "on time", speech_wav(0)).status_code == 201
        with SpeakerDB.open(busy.db) as db:  # the late request's work, dequeued after its deadline, did nothing
            assert db.speaker_names() == ["on time"]
        assert _state(busy)[0] == before[0] + 1


def test_a_vanished_database_is_503_not_a_crash(tmp_path):
    model = untrained_model(tmp_path / "model")
    db = tmp_path / "v.db"
    key = {"Authorization": f"Bearer {make_key(db, 'admin', model=model)}"}
    with ThreadServer(model, db) as server:
        # the server keeps a connection per thread: used once before the file goes, they must notice it went
        for _ in range(3):
            assert httpx.post(f"{server.url}/v1/verify", headers=key, data={"speaker": "x"},
                              files=_audio(speech_wav(0))).status_code == 404
        db.rename(tmp_path / "moved.db")
        assert httpx.get(f"{server.url}/v1/ready").status_code == 503
        answer = httpx.post(f"{server.url}/v1/verify", headers=key, data={"speaker": "x"},
                            files=_audio(speech_wav(0)))
        assert answer.status_code == 503 and "does not exist" in answer.json()["error"]


def test_answers_carry_security_headers_and_the_page_loads_nothing_from_elsewhere(server):
    answer = httpx.get(f"{server.url}/v1/health")
    assert "default-src 'self'" in answer.headers["content-security-policy"]
    assert answer.headers["x-frame-options"] == "DENY" and answer.headers["cache-control"] == "no-store"
    assert len(answer.headers["x-request-id"]) == 16
    assert httpx.get(f"{server.url}/docs").status_code == 404  # Swagger UI would load scripts from a CDN
    page = httpx.get(f"{server.url}/")
    if page.status_code == 200:
        assert "http://" not in page.text and "https://" not in page.text
