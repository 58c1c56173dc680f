"""``spk enroll / verify / identify / speakers`` on a tiny real model: outputs, --json, exit codes
(0 accept, 1 reject, 2 usage, 3 input/model/database errors), bad input, and enrollments by processes
running at the same time.

Most commands run in this process through click (:func:`spk`): the same entry point, exit statuses and
output streams as ``python -m spk``, without a second or two of torch import per command. Real
processes run where processes are the point (a whole session from the shell, a pipe on standard
input, concurrent writers)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
import traceback
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from spk.api import SpeakerModel

SPK = [sys.executable, "-m", "spk"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def spk(*args, cwd=None, process: bool = False, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    """``spk ARGS`` with ``stdin`` (default: empty) on standard input: in this process, or as a real process
    with ``process``.

    In this process an exception that escapes the command is written to stderr as a traceback and gives
    exit status 1, as the interpreter does for a real process.
    """
    argv = [str(arg) for arg in args]
    if process:
        return subprocess.run([*SPK, *argv], capture_output=True, text=True, timeout=300, cwd=cwd, env=ENV,
                              input=(stdin or b"").decode("latin-1"))
    from click.testing import CliRunner

    from spk.cli import main

    with contextlib.chdir(cwd or os.getcwd()):
        result = CliRunner().invoke(main, argv, prog_name="spk", input=stdin)
    stderr = result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        stderr += "Traceback (most recent call last):\n" + "".join(traceback.format_exception(result.exception))
    return subprocess.CompletedProcess(["spk", *argv], result.exit_code, result.stdout, stderr)


def spk_json(*args, process: bool = False) -> tuple[int, dict]:
    """Run with --json: (exit status, the one JSON object printed on stdout)."""
    result = spk(*args, "--json", process=process)
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, (result.stdout, result.stderr)
    return result.returncode, json.loads(lines[0])


def assert_clean_error(result: subprocess.CompletedProcess, code: int, *phrases: str) -> None:
    """Exit status ``code``, the message on stderr, no traceback."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    for phrase in phrases:
        assert phrase in result.stderr, (phrase, result.stderr)


def digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_a_whole_session(product, model, tmp_path):
    """Enroll two speakers, list them, verify a true and a false claim, identify, remove."""
    db = tmp_path / "voices.db"
    alice, bob = product.utts_of("spk009"), product.utts_of("spk010")
    exp = product.exp

    code, out = spk_json("enroll", "--model", exp, "--db", db, "--speaker", "alice", alice[0], alice[1],
                         process=True)  # the real entry point, once
    assert code == 0 and out == {"speaker": "alice", "added": 2, "utterances": 2, "db": str(db)}
    result = spk("enroll", "--model", exp, "--db", db, "--speaker", "bob", *bob[:2])
    assert result.returncode == 0 and "enrolled bob: 2 utterance(s) added, 2 in all" in result.stdout

    code, listing = spk_json("speakers", "list", "--db", db)
    assert code == 0 and [(s["speaker"], s["utterances"]) for s in listing["speakers"]] == [("alice", 2), ("bob", 2)]
    assert listing["model_id"] == model.identity.model_id
    table = spk("speakers", "list", "--db", db).stdout
    assert "alice" in table and "bob" in table

    # a threshold between a true claim (alice's own voice) and a false one (bob's), scored here by the API
    with model.open_db(db) as opened:
        alice_model = opened.speaker_model("alice")
    true_scores = {p: model.score(alice_model, model.embed(p)) for p in alice[2:6]}
    false_scores = {p: model.score(alice_model, model.embed(p)) for p in bob[2:6]}
    true_file, false_file = max(true_scores, key=true_scores.get), min(false_scores, key=false_scores.get)
    assert true_scores[true_file] > false_scores[false_file]
    threshold = (true_scores[true_file] + false_scores[false_file]) / 2

    result = spk("verify", "--model", exp, "--db", db, "--claim", "alice", true_file, "--threshold", threshold)
    assert result.returncode == 0 and result.stdout.startswith("ACCEPT alice: score")
    assert f"{true_scores[true_file]:.4f}" in result.stdout and "LLR" in result.stdout
    code, out = spk_json("verify", "--model", exp, "--db", db, "--claim", "alice", false_file, "--threshold", threshold)
    assert code == 1 and out["decision"] == "reject" and out["accept"] is False
    assert out["score"] == pytest.approx(false_scores[false_file], abs=1e-5)
    assert out["threshold"] == pytest.approx(threshold) and out["operating_point"] is None
    assert out["llr"] == pytest.approx(model.llr(out["score"]), abs=1e-4)

    # a calibrated operating point, with windows and VAD
    code, out = spk_json("verify", "--model", exp, "--db", db, "--claim", "alice", true_file,
                         "--operating-point", "far=0.01", "--window", "1.5", "--hop", "0.5", "--vad")
    assert out["threshold"] == pytest.approx(model.threshold("far=0.01")) and out["operating_point"] == "far=0.01"
    windowed = model.embed(true_file, windowed=True, window_s=1.5, hop_s=0.5, vad=True)
    assert out["score"] == pytest.approx(model.score(alice_model, windowed), abs=1e-5)
    assert code == (0 if out["accept"] else 1) and out["accept"] == (out["score"] >= out["threshold"])

    code, out = spk_json("identify", "--model", exp, "--db", db, true_file, "--unknown-threshold", "1.5")
    assert code == 0 and out["speaker"] == "unknown" and out["unknown"] is True and out["backend"] == "speaker_db"
    assert [c["speaker"] for c in out["candidates"]] == ["alice", "bob"]  # alice's voice scores highest
    assert sum(c["probability"] for c in out["candidates"]) == pytest.approx(1.0)
    result = spk("identify", "--model", exp, true_file, "--top-k", "3")
    assert result.returncode == 0 and result.stdout.startswith("speaker: spk00")  # a training speaker
    assert len([line for line in result.stdout.splitlines() if " p=" in line]) == 3

    code, out = spk_json("speakers", "remove", "--db", db, "bob")
    assert code == 0 and out == {"removed": "bob", "utterances": 2, "db": str(db)}
    assert "alice" in spk("speakers", "list", "--db", db).stdout
    assert "bob" not in spk("speakers", "list", "--db", db).stdout


def test_bad_audio_is_exit_3_with_a_clear_message(product, model, tmp_path):
    db = tmp_path / "voices.db"
    exp, alice = product.exp, product.utts_of("spk009")
    model.enroll(db, "alice", alice[:1])
    before = digest(db)
    rng = np.random.default_rng(0)
    sf.write(tmp_path / "silence.wav", np.zeros(48000, dtype=np.float32), 16000)
    sf.write(tmp_path / "short.wav", rng.normal(scale=0.1, size=4000).astype(np.float32), 16000)
    (tmp_path / "notaudio.wav").write_text("this is not audio\n")

    result = spk("verify", "--model", exp, "--db", db, "--claim", "alice", tmp_path / "notaudio.wav")
    assert_clean_error(result, 3, "cannot read audio", "notaudio.wav")
    code, out = spk_json("enroll", "--model", exp, "--db", db, "--speaker", "alice", alice[1],
                         tmp_path / "silence.wav")
    assert code == 3 and "silence.wav is silence only" in out["error"] and out["exit_code"] == 3
    assert digest(db) == before  # the good file of the failed enrollment was not added either
    code, out = spk_json("identify", "--model", exp, "--db", db, tmp_path / "short.wav")
    assert code == 3 and "short.wav is too short: 0.25 s" in out["error"]
    nan = rng.normal(scale=0.1, size=48000).astype(np.float32)
    nan[1000:2000] = np.nan
    sf.write(tmp_path / "nan.wav", nan, 16000, subtype="FLOAT")
    code, out = spk_json("verify", "--model", exp, "--db", db, "--claim", "alice", tmp_path / "nan.wav")
    assert code == 3 and "samples that are not numbers (NaN or infinite)" in out["error"]
    (tmp_path / "empty.wav").write_bytes(b"")
    code, out = spk_json("enroll", "--model", exp, "--db", db, "--speaker", "alice", tmp_path / "empty.wav")
    assert code == 3 and "empty (0 bytes)" in out["error"] and "data dir" not in out["error"]
    assert digest(db) == before


def test_database_problems_are_exit_3_and_leave_files_alone(product, model, tmp_path):
    """Database errors are found before the model is loaded."""
    db = tmp_path / "voices.db"
    exp, alice = product.exp, product.utts_of("spk009")
    model.enroll(db, "alice", alice[:1])

    code, out = spk_json("verify", "--model", exp, "--db", db, "--claim", "carol", alice[1])
    assert code == 3 and "'carol' is not enrolled" in out["error"] and "alice" in out["error"]

    missing = tmp_path / "none.db"
    assert_clean_error(spk("verify", "--model", exp, "--db", missing, "--claim", "alice", alice[1]), 3,
                       "does not exist", "spk enroll")
    assert_clean_error(spk("speakers", "list", "--db", missing), 3, "does not exist")
    assert_clean_error(spk("identify", "--model", exp, "--db", missing, alice[1]), 3, "does not exist")
    assert not missing.exists()

    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(np.random.default_rng(0).bytes(8192))
    before = digest(corrupt)
    for args in (("verify", "--model", exp, "--db", corrupt, "--claim", "alice", alice[1]),
                 ("enroll", "--model", exp, "--db", corrupt, "--speaker", "alice", alice[1]),
                 ("speakers", "list", "--db", corrupt), ("speakers", "remove", "--db", corrupt, "alice")):
        assert_clean_error(spk(*args), 3, "not an SQLite file", "left unchanged")
    code, out = spk_json("speakers", "list", "--db", corrupt)
    assert code == 3 and "not a speaker database" in out["error"]
    assert digest(corrupt) == before

    code, out = spk_json("speakers", "remove", "--db", db, "bob")
    assert code == 3 and "'bob' is not enrolled" in out["error"]

    empty = tmp_path / "empty.db"  # a 0-byte file (e.g. from touch) holds nothing: enroll makes it a database
    empty.write_bytes(b"")
    code, out = spk_json("enroll", "--model", exp, "--db", empty, "--speaker", "alice", alice[1])
    assert code == 0 and out["utterances"] == 1
    assert_clean_error(spk("speakers", "list", "--db", tmp_path / "other_empty.db"), 3, "does not exist")


def test_wrong_models_are_exit_3(product, model, tmp_path):
    db = tmp_path / "voices.db"
    alice = product.utts_of("spk009")
    result = spk("enroll", "--model", tmp_path / "no_such_exp", "--db", db, "--speaker", "alice", alice[0])
    assert_clean_error(result, 3, "no_such_exp does not exist")
    assert not db.exists()
    untrained = tmp_path / "untrained"
    untrained.mkdir()
    (untrained / "config.yaml").write_text((product.exp / "config.yaml").read_text())
    result = spk("identify", "--model", untrained, alice[0])
    assert_clean_error(result, 3, "models/final.pt is missing", "train the model first")
    code, out = spk_json("identify", "--model", product.recipe, alice[0])
    assert code == 3 and "neither config.yaml" in out["error"]
    # a model without classifier head cannot identify training speakers
    code, out = spk_json("identify", "--model", product.headless_exp, alice[0])
    assert code == 3 and "no classifier head" in out["error"]
    # a database of another model
    model.enroll(db, "alice", alice[:1])
    result = spk("verify", "--model", product.headless_exp, "--db", db, "--claim", "alice", alice[1],
                 "--threshold", "0.5")
    assert_clean_error(result, 3, "another model")
    # operating points need a calibration
    SpeakerModel.load(product.headless_exp).enroll(tmp_path / "h.db", "a", alice[:1])
    result = spk("verify", "--model", product.headless_exp, "--db", tmp_path / "h.db", "--claim", "a", alice[1])
    assert_clean_error(result, 3, "no score calibration", "--calib-set", "--threshold")


def test_usage_errors_are_exit_2(product, tmp_path):
    alice = product.utts_of("spk009")
    code, out = spk_json("verify", "--model", product.exp, "--db", tmp_path / "v.db", "--claim", "alice")
    assert code == 2 and "Missing argument 'AUDIO'" in out["error"]
    result = spk("verify", "--model", product.exp, "--db", tmp_path / "v.db", "--claim", "alice", alice[0],
                 "--threshold", "0.5", "--operating-point", "eer")
    assert_clean_error(result, 2, "not both")
    code, out = spk_json("verify", "--model", product.exp, "--db", tmp_path / "v.db", "--claim", "alice", alice[0],
                         "--operating-point", "median")
    assert code == 2 and "--operating-point" in out["error"]
    assert_clean_error(spk("identify", "--model", product.exp, alice[0], "--hop", "1"), 2, "--hop needs --window")
    assert_clean_error(spk("identify", "--model", product.exp, alice[0], "--top-k", "0"), 2, "--top-k")
    assert_clean_error(spk("enroll", "--model", product.exp, "--db", tmp_path / "v.db", alice[0]), 2, "--speaker")
    assert not (tmp_path / "v.db").exists()


def test_enrollments_at_the_same_time_lose_nothing(product, tmp_path):
    """Three 'spk enroll' processes started together on one new database (two of them enrolling the
    same speaker) all succeed, and every utterance is there."""
    db = tmp_path / "voices.db"
    jobs = [("carol", product.utts_of("spk011")[:3]), ("dave", product.utts_of("spk012")[:4]),
            ("carol", product.utts_of("spk011")[3:5])]
    processes = [subprocess.Popen([*SPK, "enroll", "--model", str(product.exp), "--db", str(db), "--speaker", name,
                                   *paths, "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env=ENV)
                 for name, paths in jobs]
    for process, (name, paths) in zip(processes, jobs):
        stdout, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr
        assert json.loads(stdout)["added"] == len(paths)
    code, listing = spk_json("speakers", "list", "--db", db)
    assert {s["speaker"]: s["utterances"] for s in listing["speakers"]} == {"carol": 5, "dave": 4}


def test_streaming_verification_ends_at_the_offline_score(product, model, tmp_path):
    """spk verify --stream, from a file and from standard input: a running score per chunk, and the
    final decision equal to the offline one (same score, same exit status)."""
    db = tmp_path / "voices.db"
    alice = product.utts_of("spk009")
    assert spk("enroll", "--model", product.exp, "--db", db, "--speaker", "alice", alice[0]).returncode == 0
    sample = alice[1]
    code, offline = spk_json("verify", "--model", product.exp, "--db", db, "--claim", "alice", sample,
                             "--threshold", "0.5")

    result = spk("verify", "--model", product.exp, "--db", db, "--claim", "alice", sample, "--threshold", "0.5",
                 "--stream", "--chunk-seconds", "0.3", "--json")
    lines = [json.loads(line) for line in result.stdout.strip().splitlines()]
    running, final = lines[:-1], lines[-1]
    assert result.returncode == code
    duration = sf.info(sample).duration
    assert len(running) >= int(duration / 0.3) - 1
    assert [r["seconds"] for r in running] == sorted(r["seconds"] for r in running)
    assert running[-1]["seconds"] == pytest.approx(duration, abs=1e-3)
    assert final["decision"] == offline["decision"]
    assert final["score"] == pytest.approx(offline["score"], abs=1e-4)

    with open(sample, "rb") as stdin:  # a pipe, as from a microphone
        piped = subprocess.run([*SPK, "verify", "--model", str(product.exp), "--db", str(db), "--claim", "alice",
                                "--threshold", "0.5", "--stream", "-"], stdin=stdin, capture_output=True,
                               text=True, timeout=300, env=ENV)
    assert piped.returncode == code, piped.stderr
    assert f"score {offline['score']:.4f}" in piped.stdout.strip().splitlines()[-1]
    assert len(piped.stdout.strip().splitlines()) > 2

    # bytes that are not audio are refused, not taken for raw PCM (which must be asked for)
    not_audio = (Path(__file__).parents[1] / "README.md").read_bytes()[:64000]
    assert_clean_error(spk("verify", "--model", product.exp, "--db", db, "--claim", "alice", "--threshold", "0.5",
                           "--stream", "-", stdin=not_audio), 3, "not WAV, FLAC or Ogg audio", "--raw")
    raw = sf.read(sample, dtype="int16")[0].astype("<i2").tobytes()
    result = spk("verify", "--model", product.exp, "--db", db, "--claim", "alice", "--threshold", "0.5",
                 "--stream", "--raw", "-", stdin=raw)
    assert result.returncode == code and f"score {offline['score']:.4f}" in result.stdout.splitlines()[-1]
    assert_clean_error(spk("verify", "--model", product.exp, "--db", db, "--claim", "alice", sample, "--raw"),
                       2, "--raw describes standard input")
    assert_clean_error(spk("verify", "--model", product.exp, "--db", db, "--claim", "alice", sample,
                           "--stream", "--window", "3"), 2, "--stream")
    assert_clean_error(spk("verify", "--model", product.exp, "--db", db, "--claim", "alice",
                           tmp_path / "missing.wav", "--stream", "--threshold", "0.5"), 3, "does not exist")
