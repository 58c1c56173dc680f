"""The Python API on a tiny real model: embeddings equal stage 4's, windows, VAD, scoring, calibration,
verification, identification, enrollment, and clear errors for bad audio and bad model dirs."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch
import yaml

from spk.api import (COSINE_SCALE, CalibrationError, ModelLoadError, SpeakerModel, SpkError, SpkInputError,
                     parse_operating_point)
from spk.embed import feature_store_for
from spk.features import compute_features, frame_log_energy, normalise
from spk.inference import Chunking, embed_store, head_posteriors
from spk.scoring import load_embeddings
from spk.speaker_db import SpeakerDBError


@pytest.fixture(scope="module")
def headless(product) -> SpeakerModel:
    return SpeakerModel.load(product.headless_exp)


def stored(product, data_set: str, name: str = "xvector") -> dict[str, np.ndarray]:
    """Stage 4's embeddings of a data set (their scp paths are relative to the recipe folder)."""
    scp = product.exp / "embeddings" / data_set / f"{name}.scp"
    text = scp.read_text().replace(" exp/", f" {product.recipe}/exp/")
    absolute = scp.with_name(f"{name}.abs.scp")
    absolute.write_text(text)
    ids, matrix = load_embeddings(absolute)
    return dict(zip(ids, matrix))


def unit(vector) -> np.ndarray:
    return vector / np.linalg.norm(vector)


def copy_exp(product, tmp_path) -> Path:
    """A copy of the trained tiny experiment to change things in (the original stays as it is)."""
    target = tmp_path / "exp_copy"
    (target / "models").mkdir(parents=True)
    for name in ("config.yaml", "speakers.txt", "calibration.json", "models/final.pt"):
        shutil.copy(product.exp / name, target / name)
    return target


# --- embeddings ---------------------------------------------------------------------------


def test_embedding_of_a_file_equals_stage_4(product, model):
    reference = stored(product, "test")
    paths = product.wav_paths("test")
    utts = sorted(paths)[::5]
    for utt in utts:
        embedding = model.embed(paths[utt])
        assert embedding.dtype == np.float32 and np.linalg.norm(embedding) == pytest.approx(1.0, abs=1e-6)
        np.testing.assert_allclose(embedding, unit(reference[utt]), atol=1e-5)


def test_waveform_input_equals_file_input(product, model):
    path = product.utts_of("spk009")[0]
    samples, rate = sf.read(path, dtype="float32")
    assert rate == 16000
    np.testing.assert_allclose(model.embed(samples), model.embed(path), atol=1e-6)
    # two identical channels average to the same mono signal
    np.testing.assert_allclose(model.embed(np.stack([samples, samples], axis=1)), model.embed(path), atol=1e-6)
    # another rate is resampled to the model's 16 kHz
    at_48k = soxr.resample(samples, 16000, 48000, quality="HQ")
    assert float(np.dot(model.embed(at_48k, sample_rate=48000), model.embed(path))) > 0.999


def test_windowed_embedding_equals_chunked_stage_4(product, model):
    """Windows of 1 s every 0.5 s average like 'spk embed --chunk-seconds 1 --chunk-overlap 0.5'."""
    store = feature_store_for(model.trained, product.test_data)
    paths = product.wav_paths("test")
    keys = sorted(paths)[:3]
    chunked = embed_store(model.model, store, keys, chunking=Chunking.from_seconds(1.0, 0.5, 10.0),
                          show_progress=False)
    for key, expected in zip(keys, chunked):
        windowed = model.embed(paths[key], windowed=True, window_s=1.0, hop_s=0.5)
        np.testing.assert_allclose(windowed, unit(expected), atol=1e-5)
        assert float(np.dot(windowed, model.embed(paths[key]))) < 1 - 1e-4  # windows do change the result


def test_windowed_short_audio_is_one_window(product, model):
    path = product.utts_of("spk009")[0]
    np.testing.assert_allclose(model.embed(path, windowed=True, window_s=30.0, hop_s=15.0), model.embed(path),
                               atol=1e-6)
    with pytest.raises(SpkError, match="hop"):
        model.embed(path, windowed=True, window_s=1.0, hop_s=2.0)


def test_vad_drops_silence_around_speech(product, model):
    samples, _ = sf.read(product.utts_of("spk010")[0], dtype="float32")
    quiet = np.random.default_rng(0).normal(scale=1e-4, size=32000).astype(np.float32)  # 2 s near silence
    padded = np.concatenate([quiet, samples, quiet])
    plain = model.embed(samples)
    with_vad, without_vad = model.embed(padded, vad=True), model.embed(padded)
    assert float(np.dot(with_vad, plain)) > float(np.dot(without_vad, plain))
    assert float(np.dot(with_vad, plain)) > 0.97
    # the VAD is compute_features' own, energies computed in blocks (equal for any block size)
    config = replace(model.feature_config, vad=True)
    np.testing.assert_array_equal(model._features(padded, "padded", True),
                                  normalise(compute_features(padded, config), config))
    for size in (100_000, 16000 * 3 + 7, 401, 399):
        wave = np.random.default_rng(size).normal(scale=0.1, size=size).astype(np.float32)
        np.testing.assert_array_equal(frame_log_energy(wave, config, block_frames=50),
                                      frame_log_energy(wave, config, block_frames=10**9))
    # a short burst of speech in a long silence: too little speech for the speech-presence check; without that
    # check, enough audio without VAD, and too little speech left after the energy VAD
    burst = np.concatenate([quiet, samples[8000:12800], quiet])
    with pytest.raises(SpkInputError, match="holds too little speech"):
        model.embed(burst)
    unchecked = SpeakerModel(model.trained, speech_check=False)
    unchecked.embed(burst)
    with pytest.raises(SpkInputError, match="too little speech.*after voice activity detection"):
        unchecked.embed(burst, vad=True)


def test_bad_audio_is_a_clear_input_error(product, model, tmp_path):
    rng = np.random.default_rng(0)
    sf.write(tmp_path / "short.wav", rng.normal(scale=0.1, size=4800).astype(np.float32), 16000)
    sf.write(tmp_path / "silence.wav", np.zeros(32000, dtype=np.float32), 16000)
    sf.write(tmp_path / "hiss.wav", rng.normal(scale=1e-5, size=48000).astype(np.float32), 16000)
    (tmp_path / "text.wav").write_text("this is not audio\n")
    cases = {"short.wav": "too short: 0.30 s", "silence.wav": "silence only", "hiss.wav": "silence only",
             "text.wav": "cannot read audio", "missing.wav": "does not exist"}
    for name, message in cases.items():
        with pytest.raises(SpkInputError, match=message) as error:
            model.embed(tmp_path / name)
        assert name in str(error.value)
        assert isinstance(error.value, ValueError)
    with pytest.raises(SpkInputError, match="int16 samples"):
        model.embed(np.zeros(16000, dtype=np.int16))
    with pytest.raises(SpkInputError, match="NaN"):
        model.embed(np.full(16000, np.nan, dtype=np.float32))


# --- scoring and calibration --------------------------------------------------------------------


def test_score_llr_and_thresholds_come_from_the_calibration(product, model):
    calibration = json.loads((product.exp / "calibration.json").read_text())
    a, b = model.embed(product.utts_of("spk009")[0]), model.embed(product.utts_of("spk010")[0])
    score = model.score(a, b)
    assert score == pytest.approx(float(np.dot(a, b)), abs=1e-6)
    assert model.llr(score) == pytest.approx(calibration["a"] * score + calibration["b"])
    assert model.threshold("eer") == calibration["thresholds"]["eer"]["score"]
    assert model.threshold("far=0.01") == calibration["thresholds"]["far_0.01"]["score"]
    assert model.threshold("bayes=0.01") == calibration["thresholds"]["bayes_0.01"]["score"]
    assert "far=0.01" in model.operating_points() and "eer" in model.operating_points()
    with pytest.raises(CalibrationError, match="no threshold for operating point 'far=0.05'.*far=0.01"):
        model.threshold("far=0.05")
    with pytest.raises(SpkError, match="not 'eer'"):
        model.threshold("median")
    assert parse_operating_point(" FAR = 1e-2 ") == "far_0.01"


def test_without_calibration_llr_and_operating_points_say_what_to_do(product, headless):
    with pytest.raises(CalibrationError, match="--calib-set.*--threshold"):
        headless.threshold("eer")
    with pytest.raises(CalibrationError, match="no score calibration"):
        headless.llr(0.5)
    reference = headless.embed(product.utts_of("spk009")[0])
    result = headless.verify(product.utts_of("spk009")[1], reference, "alice", threshold=0.1)
    assert result.llr is None and result.operating_point is None and result.threshold == 0.1


def test_a_centre_vector_is_subtracted_before_the_cosine(product, model, tmp_path):
    exp = copy_exp(product, tmp_path)
    center = np.random.default_rng(0).normal(scale=0.1, size=model.embedding_dim).astype(np.float32)
    np.save(exp / "center.npy", center)
    centred = SpeakerModel.load(exp)
    a, b = model.embed(product.utts_of("spk009")[0]), model.embed(product.utts_of("spk011")[0])
    expected = float(np.dot(unit(a - center), unit(b - center)))
    assert centred.score(a, b) == pytest.approx(expected, abs=1e-6)
    assert abs(centred.score(a, b) - model.score(a, b)) > 1e-4
    # a calibration fitted on centred scores brings its own centre, which then wins
    calibration = json.loads((exp / "calibration.json").read_text())
    calibration["scoring"] = {"backend": "cosine", "score_norm": "none", "center": [0.0] * model.embedding_dim}
    (exp / "calibration.json").write_text(json.dumps(calibration))
    assert SpeakerModel.load(exp).score(a, b) == pytest.approx(model.score(a, b), abs=1e-6)
    # a calibration of other scores is not applied to cosine scores
    calibration["scoring"] = {"backend": "euclidean", "score_norm": "none", "center": None}
    (exp / "calibration.json").write_text(json.dumps(calibration))
    with pytest.raises(CalibrationError, match="euclidean"):
        SpeakerModel.load(exp).threshold("eer")


# --- verification, identification, enrollment ---------------------------------------------------


def test_enroll_verify_and_identify_with_a_database(product, model, tmp_path):
    path = tmp_path / "voices.db"
    alice, bob = product.utts_of("spk009"), product.utts_of("spk010")
    assert model.enroll(path, "alice", alice[:2]) == 2
    with model.open_db(path) as db:
        assert model.enroll(db, "bob", bob[:2]) == 2
        assert model.enroll(db, "alice", alice[2:3]) == 3
        enrolled = [model.embed(p) for p in alice[:3]]
        np.testing.assert_allclose(db.speaker_model("alice"), np.mean(enrolled, axis=0), atol=1e-5)
        assert db.enrollments("alice")[0].source == str(Path(alice[0]).absolute())
        assert db.enrollments("alice")[0].duration == pytest.approx(sf.info(alice[0]).duration, abs=1e-3)

        result = model.verify(alice[0], db, "alice")
        expected = model.score(db.speaker_model("alice"), model.embed(alice[0]))
        assert result.score == pytest.approx(expected, abs=1e-6)
        assert result.threshold == model.threshold("eer") and result.operating_point == "eer"
        assert result.llr == pytest.approx(model.llr(result.score))
        assert result.accept == (result.score >= result.threshold)
        assert result.to_dict()["decision"] == ("accept" if result.accept else "reject")
        assert model.verify(alice[0], db, "alice", threshold=result.score - 1e-6).accept
        assert not model.verify(alice[0], db, "alice", threshold=result.score + 1e-6).accept
        with pytest.raises(SpeakerDBError, match="'carol' is not enrolled.*alice, bob"):
            model.verify(alice[0], db, "carol")

        ranking = model.identify(alice[5], db=db)
        scores = {c.speaker: c.score for c in ranking.candidates}
        assert set(scores) == {"alice", "bob"} and ranking.backend == "speaker_db"
        assert ranking.speaker == max(scores, key=scores.get)
        llrs = np.array([c.llr for c in ranking.candidates])
        np.testing.assert_allclose([c.probability for c in ranking.candidates],
                                   np.exp(llrs) / np.exp(llrs).sum(), atol=1e-9)  # softmax of the LLRs
        assert ranking.candidates[0].llr == pytest.approx(model.llr(ranking.candidates[0].score))
        assert len(model.identify(alice[5], db=db, top_k=1).candidates) == 1
        refused = model.identify(alice[5], db=db, unknown_threshold=1.01)
        assert refused.speaker == "unknown" and refused.unknown
    # by path too; a missing database is an error and is not created
    assert model.verify(alice[0], path, "alice").score == pytest.approx(result.score)
    with pytest.raises(SpeakerDBError, match="does not exist"):
        model.identify(alice[0], db=tmp_path / "none.db")
    assert not (tmp_path / "none.db").exists()


def test_identification_without_calibration_uses_scaled_cosine(product, headless, tmp_path):
    with headless.open_db(tmp_path / "v.db", create=True) as db:
        for name, speaker in (("a", "spk009"), ("b", "spk010"), ("c", "spk011")):
            headless.enroll(db, name, product.utts_of(speaker)[:2])
        ranking = headless.identify(product.utts_of("spk011")[4], db=db, top_k=3)
    scores = np.array([c.score for c in ranking.candidates])
    expected = np.exp(COSINE_SCALE * scores) / np.exp(COSINE_SCALE * scores).sum()
    np.testing.assert_allclose([c.probability for c in ranking.candidates], expected, atol=1e-9)
    assert all(c.llr is None for c in ranking.candidates)


def test_closed_set_identification_matches_stage_5_posteriors(product, model):
    reference = stored(product, "ident_test")
    paths = product.wav_paths("ident_test")
    utt = sorted(paths)[0]
    ranking = model.identify(paths[utt], top_k=3)
    posteriors = head_posteriors(model.model, reference[utt][None, :])[0]
    order = np.argsort(-posteriors)[:3]
    assert [c.speaker for c in ranking.candidates] == [model.speakers[i] for i in order]
    np.testing.assert_allclose([c.probability for c in ranking.candidates], posteriors[order], atol=1e-5)
    assert ranking.backend == "classifier_head" and ranking.speaker == ranking.candidates[0].speaker
    with pytest.raises(SpkError, match="needs|give a speaker database"):
        model.identify(paths[utt], unknown_threshold=0.5)


def test_a_model_without_head_needs_a_database_to_identify(product, headless):
    assert not headless.has_head
    with pytest.raises(SpkError, match="no classifier head.*--db"):
        headless.identify(product.utts_of("spk009")[0])


def test_one_bad_enrollment_file_leaves_the_database_unchanged(product, model, tmp_path):
    path = tmp_path / "voices.db"
    model.enroll(path, "alice", product.utts_of("spk009")[:1])
    before = path.read_bytes()
    (tmp_path / "bad.wav").write_bytes(b"RIFF....garbage")
    with pytest.raises(SpkInputError, match="bad.wav"):
        model.enroll(path, "alice", [product.utts_of("spk009")[1], tmp_path / "bad.wav"])
    with model.open_db(path) as db:
        assert [info.num_utterances for info in db.speakers()] == [1]
    assert path.read_bytes() == before


def test_a_database_of_another_model_is_refused(product, model, headless, tmp_path):
    path = tmp_path / "voices.db"
    model.enroll(path, "alice", product.utts_of("spk009")[:1])
    assert model.identity != headless.identity
    assert SpeakerModel.load(product.exp).identity == model.identity  # stable across loads
    with pytest.raises(SpeakerDBError, match="another model"):
        headless.verify(product.utts_of("spk009")[1], path, "alice", threshold=0.5)
    with pytest.raises(SpeakerDBError, match="another model"):
        headless.enroll(path, "bob", product.utts_of("spk010")[:1])


# --- loading -----------------------------------------------------------------------------------


def test_wrong_model_directories_are_clear_errors(product, tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        SpeakerModel.load(tmp_path / "nothing")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ModelLoadError, match="not a directory"):
        SpeakerModel.load(tmp_path / "file")
    with pytest.raises(ModelLoadError, match="neither config.yaml .* nor spk_package.json"):
        SpeakerModel.load(product.recipe)
    exp = copy_exp(product, tmp_path)
    (exp / "models/final.pt").unlink()
    with pytest.raises(ModelLoadError, match=r"models/final.pt is missing; train the model first"):
        SpeakerModel.load(exp)
    (exp / "models/final.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelLoadError, match="cannot load the model of"):
        SpeakerModel.load(exp)


def test_global_cmvn_needs_its_statistics(product, model, tmp_path):
    exp = copy_exp(product, tmp_path)
    config = yaml.safe_load((exp / "config.yaml").read_text())
    config["features"]["cmvn"] = "global"
    (exp / "config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(ModelLoadError, match="global CMVN.*global_cmvn.npy is missing"):
        SpeakerModel.load(exp)
    store = feature_store_for(model.trained, product.test_data)
    stats = np.zeros((2, model.feature_config.dim + 1))
    for key in store.keys:  # utterance-normalised features' statistics: means near zero
        feats = store[key]
        stats[0, :-1] += feats.sum(axis=0)
        stats[1, :-1] += (feats ** 2).sum(axis=0)
        stats[0, -1] += len(feats)
    np.save(exp / "global_cmvn.npy", stats)
    loaded = SpeakerModel.load(exp)
    assert loaded.identity != model.identity  # the statistics are part of what makes the embeddings
    assert loaded.embed(product.utts_of("spk009")[0]).shape == (model.embedding_dim,)


def test_torch_settings_are_left_alone(model, product):
    threads = torch.get_num_threads()
    model.embed(product.utts_of("spk009")[0])
    assert torch.get_num_threads() == threads


def test_a_model_package_loads_like_its_experiment(product, model, tmp_path):
    """An exported package gives the same embeddings and identity, so a database serves both."""
    package = pytest.importorskip("spk.package")
    package_dir = package.write_package(product.exp, tmp_path / "pkg", onnx=False)
    packaged = SpeakerModel.load(package_dir)
    assert packaged.identity.model_id == model.identity.model_id
    assert packaged.speakers == model.speakers and packaged.threshold("eer") == model.threshold("eer")
    path = product.utts_of("spk009")[0]
    np.testing.assert_allclose(packaged.embed(path), model.embed(path), atol=1e-6)
    model.enroll(tmp_path / "voices.db", "alice", product.utts_of("spk009")[1:3])
    result = packaged.verify(path, tmp_path / "voices.db", "alice")
    assert result.score == pytest.approx(model.verify(path, tmp_path / "voices.db", "alice").score, abs=1e-6)
    (package_dir / "speakers.txt").write_text("tampered\n")
    with pytest.raises(ModelLoadError, match="cannot load the model package.*speakers.txt"):
        SpeakerModel.load(package_dir)
