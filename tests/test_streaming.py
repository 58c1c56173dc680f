"""Streaming (spk/streaming.py): online features, carried RNN state, incremental pooling, scores, audio input.

Random-weight embedders on real speech (the LibriSpeech excerpt beside the project,
else the mini recipe's corpus); every final streaming embedding must equal the
offline one (compute_features -> normalise -> model.embed).
"""

from __future__ import annotations

import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from spk.audio import AudioError, read_audio
from spk.features import FeatureConfig, cmvn_stats, compute_features, normalise
from spk.models.embedder import build_embedder
from spk.streaming import OnlineFeatures, StreamingEmbedder, cosine_score, read_chunks, stream_scores

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "LibriSpeech" / "train-clean-100"
MINI = ROOT / "recipes" / "mini" / "corpus" / "mini" / "wav"
TOLERANCE = 1e-4


def _speech_files() -> list[Path]:
    for root, pattern in ((SHARED, "*/*/*.flac"), (MINI, "*/*/*.wav")):
        if root.is_dir():
            files = sorted(root.glob(pattern))
            if len(files) >= 2:
                return files
    return []


SPEECH = _speech_files()
pytestmark = pytest.mark.skipif(not SPEECH, reason="no real speech: neither ../shared/data nor the mini corpus")


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    """About 2.7 s of real speech at 16 kHz (not a whole number of 10 ms frames)."""
    return read_audio(str(SPEECH[0]))[8000: 8000 + 43_333]


@pytest.fixture(scope="module")
def other_speech() -> np.ndarray:
    return read_audio(str(SPEECH[1]))[:32000]


def model_for(config: dict, feature_config: FeatureConfig, seed: int = 0):
    torch.manual_seed(seed)
    model = build_embedder(config, feature_config.dim, None)
    for module in model.modules():  # non-trivial batch-norm statistics
        if isinstance(module, torch.nn.BatchNorm1d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return model.eval()


def offline_embedding(model, feature_config, waveform, global_stats=None) -> np.ndarray:
    feats = normalise(compute_features(waveform, feature_config), feature_config, global_stats=global_stats)
    with torch.no_grad():
        return model.embed(torch.from_numpy(feats)[None], torch.tensor([len(feats)]))[0].numpy()


def feed(stream: StreamingEmbedder, waveform: np.ndarray, chunk: int | list[int]):
    """Feed ``waveform`` in chunks; returns (end sample, interim embedding) after each chunk with frames."""
    sizes = chunk if isinstance(chunk, list) else [chunk]
    interim, start, i = [], 0, 0
    while start < len(waveform):
        end = start + sizes[i % len(sizes)]
        stream.accept_waveform(waveform[start:end])
        if stream.num_frames:
            interim.append((min(end, len(waveform)), stream.embedding().copy()))
        start, i = end, i + 1
    return interim


def lstm(**conf):
    return {"encoder": "lstm", "encoder_conf": {"hidden_size": 32, "num_layers": 2, **conf}}


def gru(**conf):
    return {"encoder": "gru", "encoder_conf": {"hidden_size": 32, "num_layers": 2, **conf}}


FBANK = FeatureConfig(num_mel_bins=40)
# (encoder, pooling and segment layers): every pooling, LSTM, GRU, LSTMP and an input layer
FORWARD_MODELS = {
    "lstm-mean": {**lstm(), "pooling": "mean", "embedding_dim": 16},
    "lstm-stats": {**lstm(), "pooling": "stats", "embedding_dim": 16},
    "lstm-last": {**lstm(), "pooling": "last", "embedding_dim": 16},
    "lstm-attentive": {**lstm(), "pooling": "attentive_stats", "pooling_conf": {"attention_dim": 16},
                       "segment_layers": [24], "embedding_dim": 16},
    "gru-mean": {**gru(), "pooling": "mean", "embedding_dim": 16},
    "gru-attentive": {**gru(), "pooling": "attentive_stats", "embedding_dim": 16},
    "lstmp-stats": {**lstm(proj_size=16, input_layer=24), "pooling": "stats", "embedding_dim": 16},
}
# sample counts per chunk: 0.1 s (frame-aligned), sizes off the 10 ms grid, and a mixed list
CHUNKS = [1600, 3797, 8000, [333, 2711, 160, 5003]]


# --------------------------------------------------------------------------- features


@pytest.mark.parametrize("config", [FBANK, FeatureConfig(kind="mfcc", num_mel_bins=30, num_ceps=13, delta_order=2),
                                    FeatureConfig(delta_order=1, delta_window=3)], ids=["fbank", "mfcc-dd", "delta-w3"])
@pytest.mark.parametrize("chunk", [7, 160, 1013, 40000])
def test_online_features_equal_offline_frames(speech, config, chunk):
    waveform = speech[:16000]
    online = OnlineFeatures(config)
    parts = [online.accept_waveform(waveform[i:i + chunk]) for i in range(0, len(waveform), chunk)]
    parts.append(online.finish())
    frames = np.concatenate(parts)
    offline = compute_features(waveform, config)
    assert frames.shape == offline.shape
    assert np.max(np.abs(frames - offline)) <= 1e-5
    assert online.num_frames == len(offline)


# --------------------------------------------------------------------------- exact incremental streaming


@pytest.mark.parametrize("name", sorted(FORWARD_MODELS))
@pytest.mark.parametrize("cmvn", ["none", "global"])
def test_exact_incremental_final_and_interim_equal_offline(speech, name, cmvn):
    config = replace(FBANK, cmvn=cmvn)
    global_stats = cmvn_stats(compute_features(speech, config)) * 3 if cmvn == "global" else None
    model = model_for(FORWARD_MODELS[name], config)
    reference = offline_embedding(model, config, speech, global_stats)
    for chunk in CHUNKS:
        stream = StreamingEmbedder(model, config, global_stats)
        assert stream.exact_incremental and stream.mode == "incremental"
        interim = feed(stream, speech, chunk)
        final = stream.finish()
        assert np.max(np.abs(final - reference)) <= TOLERANCE, chunk
        # every interim embedding is the offline embedding of the audio so far
        end, embedding = interim[len(interim) // 2]
        prefix = offline_embedding(model, config, speech[:end], global_stats)
        assert np.max(np.abs(embedding - prefix)) <= TOLERANCE, chunk
    assert not np.allclose(interim[0][1], final)


def test_deltas_lag_until_finish_and_final_is_exact(speech):
    config = FeatureConfig(kind="mfcc", num_mel_bins=30, num_ceps=13, delta_order=2, cmvn="none")
    model = model_for(FORWARD_MODELS["lstm-mean"], config)
    stream = StreamingEmbedder(model, config)
    feed(stream, speech, 2711)
    assert stream.num_frames == len(compute_features(speech, config)) - 4  # 2 x 2 frames of right context
    final = stream.finish()
    assert np.max(np.abs(final - offline_embedding(model, config, speech))) <= TOLERANCE


# --------------------------------------------------------------------------- non-causal features, bidirectional


@pytest.mark.parametrize("name", ["lstm-mean", "gru-attentive", "lstmp-stats"])
def test_utterance_cmvn_interim_running_mean_final_exact(speech, name):
    config = replace(FBANK, cmvn="utterance", norm_vars=name == "gru-attentive")
    model = model_for(FORWARD_MODELS[name], config)
    reference = offline_embedding(model, config, speech)
    for chunk in (1600, [333, 2711, 160, 5003]):
        stream = StreamingEmbedder(model, config)
        assert not stream.exact_incremental and stream.mode == "incremental+final"
        interim = [embedding for _, embedding in feed(stream, speech, chunk)]
        assert len(interim) >= 5 and all(np.isfinite(e).all() for e in interim)
        assert len({e.tobytes() for e in interim}) == len(interim)  # they change with every chunk
        assert np.max(np.abs(stream.finish() - reference)) <= TOLERANCE
        assert stream.embedding() is stream.finish()  # the final embedding stays


def test_vad_final_exact(speech):
    silence = np.zeros(8000, dtype=np.float32)
    waveform = np.concatenate([silence, speech, silence])
    config = replace(FBANK, vad=True, cmvn="none")
    assert len(compute_features(waveform, config)) < len(waveform) // 160 - 10  # VAD drops the silence
    model = model_for(FORWARD_MODELS["lstm-stats"], config)
    stream = StreamingEmbedder(model, config)
    assert stream.mode == "incremental+final"
    feed(stream, waveform, 3797)
    assert np.max(np.abs(stream.finish() - offline_embedding(model, config, waveform))) <= TOLERANCE


@pytest.mark.parametrize("model_config", [
    {**lstm(bidirectional=True), "pooling": "attentive_stats", "segment_layers": [24], "embedding_dim": 16},
    {**gru(bidirectional=True, num_layers=1), "pooling": "last", "embedding_dim": 16},
], ids=["blstm-attentive", "bgru-last"])
def test_bidirectional_reruns_and_equals_offline(speech, model_config):
    config = replace(FBANK, cmvn="utterance")
    model = model_for(model_config, config)
    stream = StreamingEmbedder(model, config)
    assert stream.mode == "rerun" and not stream.exact_incremental
    interim = feed(stream, speech, 8000)
    end, embedding = interim[1]
    assert np.max(np.abs(embedding - offline_embedding(model, config, speech[:end]))) <= TOLERANCE
    assert np.max(np.abs(stream.finish() - offline_embedding(model, config, speech))) <= TOLERANCE


def test_reset_starts_a_new_utterance(speech, other_speech):
    config = replace(FBANK, cmvn="none")
    model = model_for(FORWARD_MODELS["gru-mean"], config)
    stream = StreamingEmbedder(model, config)
    feed(stream, speech, 4000)
    stream.finish()
    stream.reset()
    feed(stream, other_speech, 4000)
    assert np.max(np.abs(stream.finish() - offline_embedding(model, config, other_speech))) <= TOLERANCE


def test_bad_input_is_a_clear_error(speech):
    config = replace(FBANK, cmvn="none")
    model = model_for(FORWARD_MODELS["lstm-mean"], config)
    stream = StreamingEmbedder(model, config)
    with pytest.raises(ValueError, match="float samples"):
        stream.accept_waveform((speech[:1600] * 32767).astype(np.int16))
    with pytest.raises(ValueError, match="mono"):
        stream.accept_waveform(np.zeros((2, 100), dtype=np.float32))
    stream.accept_waveform(speech[:200])  # less than one 25 ms frame
    with pytest.raises(ValueError, match="no feature frames yet"):
        stream.embedding()
    stream.accept_waveform(speech[200:1600])
    stream.finish()
    with pytest.raises(RuntimeError, match="finished"):
        stream.accept_waveform(speech[:1600])
    with pytest.raises(ValueError, match="global_cmvn"):
        StreamingEmbedder(model, replace(FBANK, cmvn="global"))


# --------------------------------------------------------------------------- scores and audio input


def write_wav(path: Path, waveform: np.ndarray, rate: int = 16000, subtype: str = "PCM_16", channels: int = 1):
    data = np.repeat(waveform[:, None], channels, axis=1) if channels > 1 else waveform
    sf.write(str(path), data, rate, subtype=subtype)
    return path


def test_stream_scores_end_with_the_offline_score(tmp_path, speech, other_speech):
    config = replace(FBANK, cmvn="utterance")
    model = model_for(FORWARD_MODELS["lstm-attentive"], config)
    path = write_wav(tmp_path / "test.wav", speech)
    speaker = offline_embedding(model, config, other_speech)
    center = np.full(16, 0.01, dtype=np.float32)
    scores = list(stream_scores(StreamingEmbedder(model, config), speaker, read_chunks(path, 0.3), center=center))
    seconds = [t for t, _ in scores]
    assert len(scores) == int(np.ceil(len(read_audio(str(path))) / 4800)) + 1
    assert seconds == sorted(seconds) and seconds[-1] == pytest.approx(len(speech) / 16000)
    expected = cosine_score(offline_embedding(model, config, read_audio(str(path))), speaker, center)
    assert abs(scores[-1][1] - expected) <= TOLERANCE
    assert all(-1.0 <= s <= 1.0 for _, s in scores)


def test_read_chunks_from_a_file_matches_read_audio(tmp_path, speech):
    path = write_wav(tmp_path / "a.wav", speech)
    chunks = list(read_chunks(path, 0.25))
    assert all(len(c) == 4000 for c in chunks[:-1]) and 0 < len(chunks[-1]) <= 4000
    assert np.array_equal(np.concatenate(chunks), read_audio(str(path)))
    with pytest.raises(AudioError, match="does not exist"):
        list(read_chunks(tmp_path / "missing.wav", 0.25))
    with pytest.raises(ValueError, match="chunk_seconds"):
        list(read_chunks(path, 0))


def test_read_chunks_from_pipes(tmp_path, speech):
    """WAV, FLAC and (when asked) raw PCM on a real pipe (a ``cat`` subprocess), as ``spk verify --stream -``
    reads stdin; bytes that are none of those are refused, not taken for raw PCM."""
    wav = write_wav(tmp_path / "a.wav", speech)
    flac = tmp_path / "a.flac"
    sf.write(str(flac), sf.read(str(wav), dtype="int16")[0], 16000, format="FLAC")
    raw = tmp_path / "a.raw"
    raw.write_bytes(sf.read(str(wav), dtype="int16")[0].astype("<i2").tobytes())
    expected = read_audio(str(wav))
    for path, raw_option in ((wav, False), (flac, False), (raw, True)):
        with subprocess.Popen(["cat", str(path)], stdout=subprocess.PIPE) as process:
            chunks = list(read_chunks(process.stdout, 0.1, raw=raw_option))
        assert all(len(c) == 1600 for c in chunks[:-1]), path
        assert np.array_equal(np.concatenate(chunks), expected), path
    text = tmp_path / "README.md"
    text.write_text("# not audio\n" * 5000)
    for path in (raw, text):
        with subprocess.Popen(["cat", str(path)], stdout=subprocess.PIPE) as process:
            with pytest.raises(AudioError, match="not WAV, FLAC or Ogg audio .* saying so"):
                list(read_chunks(process.stdout, 0.1))


@pytest.mark.parametrize("subtype, channels", [("PCM_24", 2), ("FLOAT", 1), ("PCM_U8", 1)])
def test_read_chunks_resamples_other_wav_formats_from_a_pipe(tmp_path, speech, subtype, channels):
    path = write_wav(tmp_path / "a8k.wav", speech[::2].copy(), rate=8000, subtype=subtype, channels=channels)
    expected = read_audio(str(path))  # soundfile + one-shot soxr, the offline reader
    with subprocess.Popen(["cat", str(path)], stdout=subprocess.PIPE) as process:
        streamed = np.concatenate(list(read_chunks(process.stdout, 0.2)))
    file_streamed = np.concatenate(list(read_chunks(path, 0.2)))
    assert abs(len(streamed) - len(expected)) <= 1 and len(file_streamed) == len(streamed)
    n = min(len(streamed), len(expected))
    assert np.max(np.abs(streamed[:n] - expected[:n])) <= 1e-3
    assert np.max(np.abs(file_streamed - streamed)) <= 1e-6


def test_read_chunks_rejects_unsupported_wav(tmp_path):
    path = tmp_path / "alaw.wav"
    sf.write(str(path), np.zeros(1600), 16000, subtype="ALAW")
    with subprocess.Popen(["cat", str(path)], stdout=subprocess.PIPE) as process:
        with pytest.raises(AudioError, match="format tag"):
            list(read_chunks(process.stdout, 0.1))


@pytest.mark.parametrize("name", sorted(FORWARD_MODELS) + ["blstm-mean"])
def test_long_pieces_are_encoded_block_by_block_to_the_same_embedding(name, monkeypatch):
    """A piece over LONG_PIECE_FRAMES goes through a forward-only encoder in blocks from the carried state,
    into the pooling's running form (memory that does not grow with the length): the embedding is the
    whole-sequence one. A bidirectional encoder cannot, and still embeds whole."""
    import spk.inference as inference
    from spk.inference import embed_features

    config = FORWARD_MODELS.get(name) or {**lstm(bidirectional=True), "pooling": "mean", "embedding_dim": 16}
    model = model_for(config, FBANK)
    feats = np.random.default_rng(3).normal(size=(701, FBANK.dim)).astype(np.float32)
    whole = embed_features(model, feats)
    monkeypatch.setattr(inference, "LONG_PIECE_FRAMES", 500)
    monkeypatch.setattr(inference, "BLOCK_FRAMES", 64)
    calls = []
    blockwise = inference._embed_blockwise
    monkeypatch.setattr(inference, "_embed_blockwise", lambda *args: calls.append(1) or blockwise(*args))
    blocks = embed_features(model, feats)
    np.testing.assert_allclose(blocks, whole, atol=2e-5)
    assert len(calls) == (0 if name == "blstm-mean" else 1)
