"""The mel_power front end, its waveform options, padded chunks and the ReLU embedding option."""

import numpy as np
import pytest
import torch

from spk.experiment import ConfigError, ExperimentConfig
from spk.features import FeatureConfig, FeatureConfigError, compute_features, online_extractor
from spk.inference import Chunking, _zero_padded
from spk.mel_power import hz_to_mel, mel_filterbank, mel_to_hz, normalise_loudness
from spk.models import build_embedder

MEL_POWER = dict(kind="mel_power", num_mel_bins=40, low_freq=0.0, cmvn="none")


def test_slaney_mel_scale_is_linear_below_1khz_and_inverts():
    assert hz_to_mel(600.0) == pytest.approx(9.0)
    hz = np.array([0.0, 440.0, 1000.0, 3000.0, 8000.0])
    assert np.allclose(mel_to_hz(hz_to_mel(hz)), hz)


def test_filterbank_matches_librosa():
    librosa = pytest.importorskip("librosa")
    for rate, n_fft, bins in ((16000, 400, 40), (8000, 256, 23)):
        ours = mel_filterbank(rate, n_fft, bins, 0.0, rate / 2)
        theirs = librosa.filters.mel(sr=rate, n_fft=n_fft, n_mels=bins)
        assert np.allclose(ours, theirs, atol=1e-7, rtol=1e-5)


def test_mel_power_frames_silence_and_a_tone():
    config = FeatureConfig(**MEL_POWER)
    assert config.dim == 40
    assert np.all(compute_features(np.zeros(16000, np.float32), config) == 0)
    t = np.arange(16050) / 16000
    feats = compute_features((0.1 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32), config)
    assert feats.shape == (1 + 16050 // 160, 40)
    centres = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(8000.0), 42))[1:-1]
    assert abs(centres[int(np.argmax(feats[50]))] - 1000) < 120
    # no log: doubling the amplitude quadruples the power
    louder = compute_features((0.2 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32), config)
    assert np.allclose(louder[50], 4 * feats[50], rtol=1e-4)


def test_mel_power_matches_librosa_melspectrogram():
    librosa = pytest.importorskip("librosa")
    rng = np.random.default_rng(0)
    wave = (0.1 * rng.standard_normal(12345)).astype(np.float32)
    ours = compute_features(wave, FeatureConfig(**MEL_POWER))
    theirs = librosa.feature.melspectrogram(y=wave, sr=16000, n_fft=400, hop_length=160, n_mels=40).T
    assert ours.shape == theirs.shape
    assert np.allclose(ours, theirs, rtol=1e-4, atol=1e-6 * theirs.max())


def test_energy_vad_with_centred_frames_keeps_the_frame_count_aligned():
    rng = np.random.default_rng(1)
    wave = np.concatenate([np.zeros(8000), 0.3 * rng.standard_normal(16000), np.zeros(8000)]).astype(np.float32)
    voiced = compute_features(wave, FeatureConfig(**MEL_POWER, vad=True))
    assert 90 < len(voiced) < 120  # about the 1 s of noise out of 201 frames


def test_loudness_is_raised_to_the_target_and_never_lowered():
    quiet = np.full(1000, 0.001, np.float32)
    raised = normalise_loudness(quiet, -30.0)
    assert 20 * np.log10(np.sqrt(np.mean(raised.astype(np.float64) ** 2))) == pytest.approx(-30.0, abs=0.01)
    loud = np.full(1000, 0.5, np.float32)
    assert np.array_equal(normalise_loudness(loud, -30.0), loud)
    assert np.array_equal(normalise_loudness(np.zeros(10, np.float32), -30.0), np.zeros(10))
    feats = compute_features(quiet, FeatureConfig(**MEL_POWER, loudness_dbfs=-30.0))
    assert feats.max() > compute_features(quiet, FeatureConfig(**MEL_POWER)).max() * 100


def test_silence_trim_cuts_silence():
    pytest.importorskip("webrtcvad")
    from spk.mel_power import trim_long_silences

    assert len(trim_long_silences(np.zeros(16000, np.float32), 16000)) == 0
    with pytest.raises(ValueError, match="22050"):
        trim_long_silences(np.zeros(22050, np.float32), 22050)


def test_bad_options_and_streaming_are_refused():
    with pytest.raises(FeatureConfigError, match="silence_trim"):
        FeatureConfig.from_dict({"silence_trim": "energy"})
    with pytest.raises(FeatureConfigError, match="cannot be streamed"):
        online_extractor(FeatureConfig(**MEL_POWER))
    with pytest.raises(FeatureConfigError, match="cannot be streamed"):
        online_extractor(FeatureConfig(loudness_dbfs=-30.0))


def test_padded_chunks_follow_the_partial_utterance_rule():
    partials = Chunking(160, 77, pad=True, min_coverage=0.75)
    assert partials.bounds(100) == [(0, 160)]
    assert partials.bounds(300) == [(0, 160), (77, 237), (154, 314)]
    assert partials.bounds(250) == [(0, 160), (77, 237)]  # the third would cover (249 - 154) / 160 < 0.75
    assert Chunking(160, 77).bounds(250) == [(0, 160), (77, 237), (90, 250)]
    with pytest.raises(ValueError, match="coverage"):
        Chunking(160, 77, pad=True, min_coverage=1.5)
    feats = np.ones((5, 2), np.float32)
    padded = _zero_padded(feats, 3, 8)
    assert padded.shape == (5, 2) and np.all(padded[:2] == 1) and np.all(padded[2:] == 0)


def test_relu_embedding_option():
    torch.manual_seed(0)
    model = {"encoder": "lstm", "encoder_conf": {"hidden_size": 8, "num_layers": 1}, "pooling": "last",
             "embedding_dim": 6}
    feats, lengths = torch.randn(4, 10, 5), torch.tensor([10, 10, 7, 3])
    plain = build_embedder(model, 5, None).eval()
    relu = build_embedder({**model, "embedding_activation": "relu"}, 5, None).eval()
    relu.load_state_dict(plain.state_dict())
    with torch.no_grad():
        before, after = plain.embed(feats, lengths), relu.embed(feats, lengths)
    assert (before < 0).any()
    assert torch.equal(after, torch.relu(before))
    with pytest.raises(ValueError, match="embedding_activation"):
        build_embedder({**model, "embedding_activation": "tanh"}, 5, None)
    with pytest.raises(ConfigError, match="embedding_activation"):
        ExperimentConfig(embedding_activation="tanh")
