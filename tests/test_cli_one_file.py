"""``spk similarity`` and ``spk embed-audio`` through the command line (in this process: see
``tests.test_cli_product.spk``) on the tiny real model (the ``product`` fixture): scores and decisions,
--json, Kaldi and NumPy outputs equal to the API's embeddings, exit codes (0/1 decision, 2 usage, 3 bad
audio or model), and no output when a file fails; plus the output writer (spk.embedding_files)."""

from __future__ import annotations

import re

import kaldiio
import numpy as np
import pytest

from spk.embedding_files import EmbeddingOutput, EmbeddingOutputError
from tests.test_cli_product import assert_clean_error, spk, spk_json

SIMILARITY_KEYS = {"a", "b", "score", "llr", "threshold", "operating_point", "accept", "decision", "note"}


def test_similarity(product, model, tmp_path):
    alice, bob = product.utts_of("spk009"), product.utts_of("spk010")
    assert model.calibration is not None  # the tiny recipe's model is calibrated

    code, itself = spk_json("similarity", "--model", product.exp, alice[0], alice[0])
    assert set(itself) == SIMILARITY_KEYS
    assert itself["score"] == pytest.approx(1.0, abs=1e-5)
    assert itself["llr"] == pytest.approx(model.llr(itself["score"]), abs=1e-4)
    assert itself["threshold"] == pytest.approx(model.threshold("eer")) and itself["operating_point"] == "eer"
    assert code == 0 and itself["decision"] == "accept" and itself["accept"] is True and itself["note"] is None

    options = {"windowed": True, "window_s": 1.5, "hop_s": 0.75, "vad": True}
    code, same = spk_json("similarity", "--model", product.exp, alice[0], alice[1], "--window", "1.5", "--vad")
    assert same["score"] == pytest.approx(model.score(model.embed(alice[0], **options),
                                                      model.embed(alice[1], **options)), abs=1e-5)
    assert code == (0 if same["accept"] else 1) and same["accept"] == (same["score"] >= same["threshold"])

    result = spk("similarity", "--model", product.exp, alice[0], bob[0], "--window", "1.5", "--vad",
                 "--threshold", "1.5")  # no cosine reaches 1.5
    assert result.returncode == 1, result.stderr
    assert result.stdout.startswith("REJECT different speakers: score") and "threshold 1.5000, LLR" in result.stdout
    other = float(re.search(r"score (-?[0-9.]+)", result.stdout).group(1))
    assert other == pytest.approx(model.score(model.embed(alice[0], **options), model.embed(bob[0], **options)),
                                  abs=1e-4)
    assert other < same["score"]

    # no calibration and no threshold: the score alone, with a note, exit 0
    code, out = spk_json("similarity", "--model", product.headless_exp, alice[0], bob[0])
    assert code == 0 and set(out) == SIMILARITY_KEYS and -1 <= out["score"] <= 1
    assert out["decision"] is None and out["accept"] is None and out["threshold"] is None and out["llr"] is None
    assert out["note"].startswith("no decision: ") and "no score calibration" in out["note"]
    assert "--threshold" in out["note"]

    (tmp_path / "notaudio.wav").write_text("this is not audio\n")
    assert_clean_error(spk("similarity", "--model", product.exp, alice[0], tmp_path / "notaudio.wav"), 3,
                       "cannot read audio", "notaudio.wav")

    assert_clean_error(spk("similarity", "--model", product.exp, alice[0], alice[1], "--threshold", "0.5",
                           "--operating-point", "eer"), 2, "not both")
    code, out = spk_json("similarity", "--model", product.exp, alice[0])
    assert code == 2 and "Missing argument 'B'" in out["error"]


def test_embed_audio(product, model, tmp_path):
    files = product.utts_of("spk009")[:2] + product.utts_of("spk010")[:1]
    expected = np.stack([model.embed(path) for path in files])

    code, out = spk_json("embed-audio", "--model", product.exp, "--out", tmp_path / "emb.npy", *files)
    assert code == 0 and out["files"] == files and out["format"] == "npy" and out["keys"] is None
    assert out["num_embeddings"] == 3 and out["embedding_dim"] == model.embedding_dim
    matrix = np.load(tmp_path / "emb.npy")
    assert matrix.dtype == np.float32 and matrix.shape == (3, model.embedding_dim)
    np.testing.assert_allclose(matrix, expected, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(matrix, axis=1), 1.0, atol=1e-5)
    assert (tmp_path / "emb.files.txt").read_text().splitlines() == files

    ark, scp = tmp_path / "kaldi/emb.ark", tmp_path / "kaldi/emb.scp"
    result = spk("embed-audio", "--model", product.exp, "--out", f"ark,scp:{ark},{scp}", *files)
    assert result.returncode == 0 and f"{ark} and {scp}" in result.stdout, result.stderr
    keys = [path.rsplit("/", 1)[1].rsplit(".", 1)[0] for path in files]
    table = kaldiio.load_scp(str(scp))
    assert list(table) == keys
    np.testing.assert_allclose(np.stack([table[key] for key in keys]), expected, atol=1e-6)
    assert [key for key, _ in kaldiio.load_ark(str(ark))] == keys

    # one bad file: nothing is written, not even the folder
    (tmp_path / "notaudio.wav").write_text("this is not audio\n")
    code, out = spk_json("embed-audio", "--model", product.exp, "--out", f"ark:{tmp_path}/new/emb.ark",
                         files[0], tmp_path / "notaudio.wav")
    assert code == 3 and "cannot read audio" in out["error"] and "notaudio.wav" in out["error"]
    assert not (tmp_path / "new").exists()

    # keys clash, or a wrong --out: usage errors, before the model is loaded
    assert_clean_error(spk("embed-audio", "--model", product.exp, "--out", f"ark:{tmp_path}/x.ark", files[0],
                           tmp_path / "notaudio.wav", tmp_path / "notaudio.flac"), 2, "both give the key 'notaudio'")
    assert_clean_error(spk("embed-audio", "--model", product.exp, "--out", tmp_path / "emb.txt", files[0]), 2,
                       "--out", "X.npy, ark:X.ark or ark,scp:X.ark,X.scp")
    assert not (tmp_path / "x.ark").exists() and not (tmp_path / "emb.txt").exists()


def test_embedding_output_forms_and_atomic_writes(tmp_path, monkeypatch):
    """The writer alone: each --out form, text arks, a failure that leaves the old output as it was."""
    matrix = np.random.default_rng(0).normal(size=(2, 4)).astype(np.float32)
    sources = ["a/one.wav", "b/two.flac"]
    text = EmbeddingOutput.parse(f"ark,t,scp:{tmp_path}/t.ark,{tmp_path}/t.scp")
    assert text.write(sources, matrix)["keys"] == ["one", "two"]
    table = kaldiio.load_scp(str(tmp_path / "t.scp"))
    np.testing.assert_allclose(np.stack([table["one"], table["two"]]), matrix, atol=1e-6)

    out = EmbeddingOutput.parse(str(tmp_path / "e.npy"))
    out.write(sources, matrix)
    before = (tmp_path / "e.npy").read_bytes()
    with pytest.raises(EmbeddingOutputError, match="3 files"):
        out.write(sources + ["c.wav"], matrix)
    calls = []

    def failing_fsync(descriptor):  # the second file cannot be written (a full disk, say)
        calls.append(descriptor)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")

    monkeypatch.setattr("spk.embedding_files.os.fsync", failing_fsync)
    with pytest.raises(OSError, match="No space left"):
        out.write(sources[::-1], matrix * 2)
    assert (tmp_path / "e.npy").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.files.txt", "e.npy", "t.ark", "t.scp"]

    for bad, message in [("emb", "neither a .npy"), ("scp:x.scp", "not a Kaldi output"),
                         ("ark,scp:x.ark", "two paths"), ("ark,p:x.ark", "unknown Kaldi option"),
                         ("ark:-", "standard output"), ("ark,scp:x,x", "same file")]:
        with pytest.raises(EmbeddingOutputError, match=message):
            EmbeddingOutput.parse(bad)
    with pytest.raises(EmbeddingOutputError, match="whitespace"):
        EmbeddingOutput.parse("ark:x.ark").keys(["dir/my file.wav"])
    with pytest.raises(EmbeddingOutputError, match="a.wav is given twice"):
        EmbeddingOutput.parse("ark:x.ark").keys(["x/a.wav", "x/a.wav"])
    assert EmbeddingOutput.parse("e.npy").keys(["x/a.wav", "y/a.wav"]) is None  # rows need no unique keys
