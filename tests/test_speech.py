"""The speech-presence check (:mod:`spk.speech`): real Silero VAD (ONNX, onnxruntime) on real speech, noise,
tones, music and silence; the rule; early stopping; long audio; streams; threads; and the product refusing
noise through the API and ``spk verify`` (exit 3), the issue's "white noise accepted as ls103" case.

The LibriSpeech and FSDD tests skip where ../shared/data is absent."""

from __future__ import annotations

import glob
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from spk import speech
from spk.api import SpeakerModel, SpkError, SpkInputError
from spk.augment import simulate

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
RATE = 16000


def _librispeech(index: int = 0) -> np.ndarray:
    files = sorted(glob.glob(str(SHARED / "LibriSpeech" / "**" / "*.flac"), recursive=True))
    if not files:
        pytest.skip(f"no LibriSpeech files under {SHARED}")
    samples, rate = sf.read(files[index], dtype="float32")
    assert rate == RATE
    return samples


def _white_noise(seconds: float = 4.0, seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(int(seconds * RATE))).astype(np.float32)


def _tone(freq: float = 440.0, seconds: float = 4.0) -> np.ndarray:
    return (0.3 * np.sin(2 * np.pi * freq * np.arange(int(seconds * RATE)) / RATE)).astype(np.float32)


def _chords(seconds: float = 4.0) -> np.ndarray:
    """Harmonic chords changing every 0.3 s, each note struck and decaying: a crude piece of music."""
    out = np.zeros(int(seconds * RATE), dtype=np.float32)
    beat = int(0.3 * RATE)
    t = np.arange(beat) / RATE
    for index, start in enumerate(range(0, len(out) - beat + 1, beat)):
        root = (220.0, 261.6, 329.6, 392.0)[index % 4]
        note = sum(0.5 ** k * np.sin(2 * np.pi * root * ratio * (k + 1) * t) for k in range(4) for ratio in (1, 1.5))
        out[start:start + beat] = 0.1 * np.exp(-5 * t) * note
    return out


def test_real_speech_is_speech():
    samples = _librispeech()
    probabilities = speech.speech_probabilities(samples)
    assert probabilities.shape == (-(-len(samples) // speech.FRAME),)
    assert np.all((probabilities >= 0) & (probabilities <= 1))
    assert np.mean(probabilities >= speech.SPEECH_PROBABILITY) > 0.5  # read speech: mostly speech
    presence = speech.speech_presence(samples)
    assert presence.enough and presence.required_s == speech.MIN_SPEECH_S


def test_noise_tones_music_and_silence_are_not_speech():
    cases = {"white noise": _white_noise(), "tone": _tone(), "low tone": _tone(100.0), "music": _chords(),
             "silence": np.zeros(4 * RATE, dtype=np.float32),
             "pink noise": 0.1 * simulate.coloured_noise("pink", 4 * RATE, RATE, np.random.default_rng(1))}
    for name, samples in cases.items():
        presence = speech.speech_presence(samples)
        assert not presence.enough, name
        assert presence.speech_s < 0.2 and presence.duration_s == 4.0, (name, presence)


def test_speech_in_noise_at_5_db_is_speech():
    samples = _librispeech(1)
    noisy = simulate.mix_at_snr(samples, simulate.coloured_noise("white", len(samples), RATE,
                                                                 np.random.default_rng(2)), 5.0)
    assert speech.speech_presence(noisy).enough


def test_8_khz_digits_are_resampled_and_pass():
    files = sorted(glob.glob(str(SHARED / "fsdd" / "recordings" / "*_jackson_*.wav")))[:5]
    if not files:
        pytest.skip(f"no FSDD files under {SHARED}")
    for path in files:
        samples, rate = sf.read(path, dtype="float32")
        assert rate == 8000
        presence = speech.speech_presence(samples, rate)
        assert presence.duration_s == pytest.approx(len(samples) / rate, abs=1e-3)
        assert presence.enough, (path, presence)


def test_the_rule_asks_a_quarter_of_a_short_clip_and_half_a_second_of_a_long_one():
    assert speech.required_speech_seconds(1.0) == pytest.approx(0.25)
    assert speech.required_speech_seconds(2.0) == pytest.approx(0.5)
    assert speech.required_speech_seconds(600.0) == pytest.approx(0.5)
    assert speech.required_speech_seconds(0.0) == speech.FRAME_S  # never "enough" without a speech frame
    assert not speech.speech_presence(np.zeros(0, dtype=np.float32)).enough


def test_the_check_stops_once_it_has_found_enough_speech():
    samples = _librispeech()
    assert speech.speech_seconds(samples) > 5.0
    found = speech.speech_presence(samples)
    assert speech.MIN_SPEECH_S <= found.speech_s < speech.MIN_SPEECH_S + 2 * speech.FRAME_S  # a lower bound
    probabilities = speech.speech_probabilities(samples)
    assert speech.speech_seconds(samples, stop_at_s=1.0) == pytest.approx(1.0, abs=speech.FRAME_S)
    assert np.isfinite(probabilities).all()


def test_long_audio_runs_as_segments_with_the_same_start():
    samples = np.concatenate([_librispeech()] * 5)[:int(70 * RATE)]  # three segments of up to 30 s
    probabilities = speech.speech_probabilities(samples)
    assert probabilities.shape == (-(-len(samples) // speech.FRAME),)
    first = speech.speech_probabilities(samples[:int(20 * RATE)])
    np.testing.assert_allclose(probabilities[:len(first) - 1], first[:-1], atol=1e-5)
    assert np.mean(probabilities >= speech.SPEECH_PROBABILITY) > 0.5
    noise = _white_noise(70.0)
    assert speech.speech_seconds(noise) < 0.2


def test_a_stream_finds_what_the_whole_recording_gives():
    for samples in (_librispeech()[:5 * RATE], _white_noise(3.0), _tone(seconds=1.3)):
        whole = speech.speech_presence(samples)
        for piece in (333, 4000):
            stream = speech.SpeechStream()
            for start in range(0, len(samples), piece):
                stream.accept(samples[start:start + piece])
            assert stream.finish() == whole


def test_threads_share_one_model_with_their_own_state():
    clips = [_librispeech()[:3 * RATE], _white_noise(3.0, seed=5), _tone(seconds=3.0)]
    expected = [speech.speech_probabilities(clip) for clip in clips]
    failures = []

    def work(offset: int) -> None:
        for index in range(6):
            clip = (offset + index) % len(clips)
            if not np.array_equal(speech.speech_probabilities(clips[clip]), expected[clip]):
                failures.append((offset, index))

    threads = [threading.Thread(target=work, args=(offset,)) for offset in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures


def test_a_missing_package_is_named_with_the_command_that_installs_it(monkeypatch):
    monkeypatch.setattr(speech, "_session", None)
    monkeypatch.setattr(speech, "_DISTRIBUTION", "spk-no-such-package")
    with pytest.raises(speech.SpeechModelError, match="pip install silero-vad onnxruntime"):
        speech.speech_presence(_tone())
    from spk.api import _speech_model

    with pytest.raises(SpkError, match="--no-speech-check"):
        _speech_model(lambda: speech.speech_presence(_tone()))
    with pytest.raises(SpkError, match="pip install silero-vad onnxruntime"):
        _speech_model(speech.SpeechStream)  # a stream fails when it is made, before any audio


# --- the product (the tiny model of the shared test recipe) ------------------------------------------


def test_the_api_refuses_noise_unless_told_not_to_check(product, model):
    with pytest.raises(SpkInputError) as refused:
        model.embed(_white_noise())
    assert "the waveform holds too little speech: 0.00 s of speech in 4.00 s" in str(refused.value)
    assert "noise, music or silence" in str(refused.value)
    assert model.speech_check
    unchecked = SpeakerModel(model.trained, speech_check=False)
    assert unchecked.embed(_white_noise()).shape == (model.embedding_dim,)


def test_spk_verify_refuses_white_noise_with_exit_3(product, model, tmp_path):
    from tests.test_cli_product import assert_clean_error, spk

    db = tmp_path / "voices.db"
    model.enroll(db, "alice", product.utts_of("spk009")[:1])
    noise = tmp_path / "white_noise.wav"
    sf.write(noise, _white_noise(), RATE)
    args = ("verify", "--model", product.exp, "--db", db, "--claim", "alice")
    assert_clean_error(spk(*args, noise), 3, "white_noise.wav holds too little speech", "Silero VAD")
    assert_clean_error(spk(*args, "--stream", noise), 3, "the streamed audio holds too little speech")
    assert spk(*args, "--no-speech-check", noise).returncode in (0, 1)  # a decision, as before the check
    assert spk(*args, product.utts_of("spk009")[1]).returncode in (0, 1)
