"""``spk serve`` as an operator runs it: a real process, behind TLS, logging one JSON object per line."""

from __future__ import annotations

import json
import shutil
import subprocess

import httpx
import pytest

from tests.serve_helpers import ServerProcess, make_key, speech_wav, untrained_model


def _self_signed(folder) -> tuple:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed (apt-get install openssl)")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


def test_https_with_a_certificate_and_json_log_lines(tmp_path):
    model = untrained_model(tmp_path / "model")
    db = tmp_path / "voices.db"
    admin = make_key(db, "admin", model=model)
    cert, key = _self_signed(tmp_path)
    log = tmp_path / "serve.log"
    with ServerProcess(model, db, log, "--ssl-certfile", str(cert), "--ssl-keyfile", str(key),
                       tls_cert=cert) as server:
        assert server.url.startswith("https://")
        with httpx.Client(verify=server.ssl_context(), timeout=30) as client:
            enrolled = client.post(f"{server.url}/v1/enroll", headers={"Authorization": f"Bearer {admin}"},
                                   data={"speaker": "reader"}, files={"audio": ("a.wav", speech_wav(0))})
            assert enrolled.status_code == 201, enrolled.text
            assert client.get(f"{server.url}/v1/speakers").status_code == 401
        with pytest.raises(httpx.HTTPError):  # plain HTTP is not served on the TLS port
            httpx.get(server.url.replace("https", "http") + "/v1/health", timeout=5)
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]  # every line is JSON
    requests = [line for line in lines if line["logger"] == "spk.service.access"]
    enroll = next(line for line in requests if line["path"] == "/v1/enroll")
    assert enroll["status"] == 201 and enroll["latency_ms"] > 0 and enroll["key_id"] == admin.split("_")[1]
    assert enroll["method"] == "POST" and len(enroll["request_id"]) == 16 and enroll["client"].startswith("127.")
    refused = next(line for line in requests if line["path"] == "/v1/speakers")
    assert refused["status"] == 401 and refused["key_id"] is None
    assert any("https://127.0.0.1" in line["message"] for line in lines)
