"""Tests for spk.features and spk.make_features: real WAVs in real data dirs, kaldi-native-fbank as reference."""

import os

import kaldi_native_fbank as knf
import kaldiio
import numpy as np
import pytest
import soundfile as sf

from spk.data import read_kv, utt2spk_to_spk2utt, write_spk2utt, write_utt2spk, write_wav_scp
from spk.features import (
    FeatureConfig,
    FeatureConfigError,
    accumulate_stats,
    cmvn_stats,
    compute_features,
    compute_static,
    energy_vad,
    frame_log_energy,
    normalise,
)
from spk.make_features import FeatureExtractionError, features_up_to_date, make_features

RATE = 16000


# --- helpers -----------------------------------------------------------------------


def chirp_int16(seconds=1.3, rate=RATE, seed=0):
    """A 100 Hz -> 6 kHz chirp plus noise as int16 samples (every frame differs)."""
    n = int(seconds * rate)
    t = np.arange(n) / rate
    f0, f1 = 100.0, 6000.0
    phase = 2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * seconds))
    noise = np.random.default_rng(seed).normal(0, 0.05, n)
    return np.round(np.clip(0.5 * np.sin(phase) + noise, -1, 1) * 32767).astype(np.int16)


def make_data_dir(root, utts, *, missing=()):
    """A data dir with one 16-bit WAV per utterance; ``utts`` maps utt-id -> int16 samples.

    Utterances in ``missing`` point to a file that does not exist.
    """
    data_dir = root / "data" / "set"
    wav_dir = root / "wav"
    data_dir.mkdir(parents=True)
    wav_dir.mkdir(exist_ok=True)
    wav_scp, utt2spk = {}, {}
    for utt, samples in utts.items():
        path = wav_dir / f"{utt}.wav"
        if utt not in missing:
            sf.write(str(path), samples, RATE, subtype="PCM_16")
        wav_scp[utt] = str(path)
        utt2spk[utt] = utt.split("-")[0]
    write_wav_scp(data_dir / "wav.scp", wav_scp)
    write_utt2spk(data_dir / "utt2spk", utt2spk)
    write_spk2utt(data_dir / "spk2utt", utt2spk_to_spk2utt(utt2spk))
    return data_dir


def knf_reference(path, kind, num_bins, num_ceps=40):
    """kaldi-native-fbank features of a WAV file, every option set here explicitly."""
    samples, rate = sf.read(str(path), dtype="int16")
    samples = samples.astype(np.float32)  # int16 range, as Kaldi reads WAVs
    options = knf.FbankOptions() if kind == "fbank" else knf.MfccOptions()
    if kind == "mfcc":
        options.num_ceps = num_ceps
    options.frame_opts.samp_freq = float(rate)
    options.frame_opts.frame_length_ms = 25.0
    options.frame_opts.frame_shift_ms = 10.0
    options.frame_opts.dither = 0.0
    options.mel_opts.num_bins = num_bins
    options.mel_opts.low_freq = 20.0
    options.mel_opts.high_freq = 0.0
    extractor = knf.OnlineFbank(options) if kind == "fbank" else knf.OnlineMfcc(options)
    extractor.accept_waveform(float(rate), samples)
    extractor.input_finished()
    return np.array([extractor.get_frame(i) for i in range(extractor.num_frames_ready)]), len(samples)


def kaldi_delta_scales(window, order):
    """Kaldi's DeltaFeatures filters: scales[i] is the (2*i*window+1)-tap filter of order i."""
    scales = [np.array([1.0])]
    normaliser = sum(j * j for j in range(-window, window + 1))
    for _ in range(order):
        previous = scales[-1]
        current = np.zeros(len(previous) + 2 * window)
        for j in range(-window, window + 1):
            current[j + window: j + window + len(previous)] += j * previous
        scales.append(current / normaliser)
    return scales


def numpy_deltas(feats, window=2, order=2):
    """Static features, deltas, delta-deltas the way Kaldi computes them (edge frames replicated)."""
    num_frames = len(feats)
    blocks = [feats]
    for scale in kaldi_delta_scales(window, order)[1:]:
        offset = (len(scale) - 1) // 2
        out = np.zeros_like(feats, dtype=np.float64)
        for j, weight in enumerate(scale):
            index = np.clip(np.arange(num_frames) + j - offset, 0, num_frames - 1)
            out += weight * feats[index]
        blocks.append(out)
    return np.concatenate(blocks, axis=1)


def regression_delta(feats, window=2):
    """First-order regression delta, written out: sum n (c[t+n] - c[t-n]) / (2 sum n^2)."""
    num_frames = len(feats)
    index = np.arange(num_frames)
    out = np.zeros_like(feats, dtype=np.float64)
    for n in range(1, window + 1):
        ahead = feats[np.minimum(index + n, num_frames - 1)]
        behind = feats[np.maximum(index - n, 0)]
        out += n * (ahead - behind)
    return out / (2 * sum(n * n for n in range(1, window + 1)))


@pytest.fixture(scope="module")
def two_utts():
    return {"spkA-utt1": chirp_int16(1.3, seed=1), "spkB-utt1": chirp_int16(1.1, seed=2)}


# --- parity with kaldi-native-fbank through make_features ---------------------------


@pytest.mark.parametrize("kind, num_bins, dim", [("fbank", 80, 80), ("mfcc", 40, 40)])
def test_make_features_matches_kaldi_native_fbank(tmp_path, two_utts, kind, num_bins, dim):
    data_dir = make_data_dir(tmp_path, two_utts)
    config = FeatureConfig(kind=kind, num_mel_bins=num_bins, num_ceps=40)
    result = make_features(data_dir, config, tmp_path / "fbank", nj=2)
    assert result == {"done": 2, "failed": 0, "skipped": 0}

    feats = dict(kaldiio.load_scp(str(data_dir / "feats.scp")))
    assert sorted(feats) == sorted(two_utts)
    wav_scp = read_kv(data_dir / "wav.scp")
    num_frames = read_kv(data_dir / "utt2num_frames")
    durations = read_kv(data_dir / "utt2dur")
    cmvn = dict(kaldiio.load_scp(str(data_dir / "cmvn.scp")))
    for utt, ours in feats.items():
        reference, num_samples = knf_reference(wav_scp[utt], kind, num_bins)
        assert ours.shape == (1 + (num_samples - 400) // 160, dim)
        assert ours.shape == reference.shape
        np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-4)
        assert int(num_frames[utt]) == len(ours)
        assert float(durations[utt]) == pytest.approx(num_samples / RATE, abs=1e-3)
        assert cmvn[utt].shape == (2, dim + 1)
        np.testing.assert_allclose(cmvn[utt], cmvn_stats(ours), rtol=1e-6)
    assert (data_dir / "feats.conf").exists()
    assert features_up_to_date(data_dir, config)


def test_compute_static_matches_reference_in_memory(tmp_path):
    samples = chirp_int16(0.5, seed=3)
    path = tmp_path / "a.wav"
    sf.write(str(path), samples, RATE, subtype="PCM_16")
    reference, _ = knf_reference(path, "fbank", 80)
    ours = compute_static(samples / 32768.0, FeatureConfig())
    np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-4)


def test_too_short_waveform_gives_no_frames():
    assert compute_static(np.zeros(399, dtype=np.float32), FeatureConfig()).shape == (0, 80)
    assert compute_features(np.zeros(399, dtype=np.float32), FeatureConfig()).shape == (0, 80)


def test_too_short_waveform_with_deltas_has_full_dim():
    assert compute_features(np.zeros(399, dtype=np.float32), FeatureConfig(delta_order=2)).shape == (0, 240)


# --- deltas ---------------------------------------------------------------------------


def test_deltas_are_kaldi_regression_deltas():
    waveform = chirp_int16(0.6, seed=4) / 32768.0
    static = compute_features(waveform, FeatureConfig(num_mel_bins=23))
    with_deltas = compute_features(waveform, FeatureConfig(num_mel_bins=23, delta_order=2))
    assert with_deltas.shape == (len(static), 3 * 23)
    assert FeatureConfig(num_mel_bins=23, delta_order=2).dim == 69
    np.testing.assert_array_equal(with_deltas[:, :23], static)
    static64 = static.astype(np.float64)
    np.testing.assert_allclose(with_deltas[:, 23:46], regression_delta(static64), atol=1e-3)
    np.testing.assert_allclose(with_deltas, numpy_deltas(static64, window=2, order=2), atol=1e-3)


def test_first_order_deltas_only():
    waveform = chirp_int16(0.4, seed=5) / 32768.0
    config = FeatureConfig(kind="mfcc", num_mel_bins=23, num_ceps=13, delta_order=1)
    feats = compute_features(waveform, config)
    assert feats.shape[1] == 26 == config.dim
    np.testing.assert_allclose(feats[:, 13:], regression_delta(feats[:, :13].astype(np.float64)), atol=1e-3)


# --- CMVN -----------------------------------------------------------------------------


def random_feats(frames, dim=5, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(3.0, 2.0, (frames, dim)) * np.arange(1, dim + 1)).astype(np.float32)


def test_cmvn_stats_are_sums_squares_and_count():
    feats = random_feats(50)
    stats = cmvn_stats(feats)
    assert stats.shape == (2, 6)
    x = feats.astype(np.float64)
    np.testing.assert_allclose(stats[0, :5], x.sum(axis=0), rtol=1e-6)
    np.testing.assert_allclose(stats[1, :5], (x**2).sum(axis=0), rtol=1e-6)
    assert stats[0, 5] == 50
    assert stats[1, 5] == 0


@pytest.mark.parametrize("norm_vars", [False, True])
def test_utterance_cmvn(norm_vars):
    feats = random_feats(80, seed=1)
    out = normalise(feats, FeatureConfig(cmvn="utterance", norm_vars=norm_vars))
    x = feats.astype(np.float64)
    expected = x - x.mean(axis=0)
    if norm_vars:
        expected /= x.std(axis=0)
    np.testing.assert_allclose(out, expected, atol=1e-4)
    np.testing.assert_allclose(out.mean(axis=0), 0, atol=1e-4)
    if norm_vars:
        np.testing.assert_allclose(out.std(axis=0), 1, atol=1e-4)
    # explicit statistics give the same result
    np.testing.assert_allclose(
        normalise(feats, FeatureConfig(norm_vars=norm_vars), utterance_stats=cmvn_stats(feats)), out, atol=1e-6)


@pytest.mark.parametrize("norm_vars", [False, True])
def test_global_cmvn_uses_global_stats(norm_vars):
    a, b = random_feats(40, seed=2), random_feats(70, seed=3) + 5.0
    global_stats = accumulate_stats([cmvn_stats(a), cmvn_stats(b)])
    both = np.concatenate([a, b]).astype(np.float64)
    mean, std = both.mean(axis=0), both.std(axis=0)
    config = FeatureConfig(cmvn="global", norm_vars=norm_vars)
    out = normalise(a, config, global_stats=global_stats)
    expected = (a - mean) / (std if norm_vars else 1.0)
    np.testing.assert_allclose(out, expected, atol=1e-4)
    # the utterance's own mean is NOT removed
    assert np.abs(out.mean(axis=0)).max() > 0.5
    with pytest.raises(ValueError, match="global_stats"):
        normalise(a, config)


def test_cmvn_none_is_identity():
    feats = random_feats(10)
    np.testing.assert_array_equal(normalise(feats, FeatureConfig(cmvn="none")), feats)


def test_accumulate_stats_sums():
    stats = [cmvn_stats(random_feats(n, seed=n)) for n in (5, 9, 13)]
    total = accumulate_stats(iter(stats))
    np.testing.assert_allclose(total, stats[0] + stats[1] + stats[2])
    assert total[0, -1] == 27
    with pytest.raises(ValueError, match="empty"):
        accumulate_stats([])


# --- VAD ------------------------------------------------------------------------------


def silence_tone_silence(rate=RATE):
    rng = np.random.default_rng(7)
    quiet = lambda seconds: 1e-4 * rng.standard_normal(int(seconds * rate))  # noqa: E731
    t = np.arange(int(0.6 * rate)) / rate
    tone = 0.5 * np.sin(2 * np.pi * 440 * t)
    return np.concatenate([quiet(0.5), tone, quiet(0.5)]).astype(np.float32)


def test_energy_vad_keeps_the_tone():
    waveform = silence_tone_silence()
    config = FeatureConfig()
    log_energy = frame_log_energy(waveform, config)
    assert len(log_energy) == 1 + (len(waveform) - 400) // 160
    voiced = energy_vad(log_energy, config)
    starts = np.arange(len(voiced)) * 160
    in_tone = (starts >= 0.5 * RATE) & (starts + 400 <= 1.1 * RATE)
    in_silence = (starts + 400 <= 0.5 * RATE) | (starts >= 1.1 * RATE)
    assert voiced[in_tone].mean() > 0.95
    assert voiced[in_silence].mean() < 0.05
    assert energy_vad(np.zeros(0, dtype=np.float32), config).shape == (0,)


def test_compute_features_with_vad_drops_silence():
    waveform = silence_tone_silence()
    everything = compute_features(waveform, FeatureConfig(delta_order=1))
    speech = compute_features(waveform, FeatureConfig(delta_order=1, vad=True))
    assert speech.shape[1] == everything.shape[1] == 160
    # the tone is 0.6 s of 1.6 s: about 37% of the frames
    assert 0.3 * len(everything) < len(speech) < 0.45 * len(everything)


# --- configuration --------------------------------------------------------------------


def test_unknown_config_key_is_named():
    with pytest.raises(FeatureConfigError, match="num_mel_binz") as error:
        FeatureConfig.from_dict({"num_mel_binz": 40}, source="conf/fbank.yaml")
    assert "conf/fbank.yaml" in str(error.value)
    assert "num_mel_bins" in str(error.value)  # the known options are listed


@pytest.mark.parametrize("values, word", [
    ({"kind": "plp"}, "kind"),
    ({"cmvn": "speaker"}, "cmvn"),
    ({"delta_order": 3}, "delta_order"),
    ({"kind": "mfcc", "num_mel_bins": 23, "num_ceps": 40}, "num_ceps"),
])
def test_bad_config_values(values, word):
    with pytest.raises(FeatureConfigError, match=word):
        FeatureConfig.from_dict(values)
    with pytest.raises(FeatureConfigError, match=word):
        FeatureConfig(**values)


def test_yaml_round_trip(tmp_path):
    import yaml

    config = FeatureConfig(kind="mfcc", num_mel_bins=30, num_ceps=20, delta_order=2, vad=True,
                           cmvn="global", norm_vars=True, high_freq=-400.0)
    path = tmp_path / "mfcc.yaml"
    path.write_text(yaml.safe_dump(config.to_dict()))
    assert FeatureConfig.from_yaml(path) == config
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert FeatureConfig.from_yaml(empty) == FeatureConfig()
    listing = tmp_path / "list.yaml"
    listing.write_text("- kind\n- fbank\n")
    with pytest.raises(FeatureConfigError, match="mapping"):
        FeatureConfig.from_yaml(listing)
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: fbank\nframe_len: 20\n")
    with pytest.raises(FeatureConfigError, match="frame_len") as error:
        FeatureConfig.from_yaml(bad)
    assert str(bad) in str(error.value)


# --- make_features: skipping, forcing, failures ----------------------------------------


def test_make_features_skips_then_forces(tmp_path, two_utts):
    data_dir = make_data_dir(tmp_path, two_utts)
    config = FeatureConfig(num_mel_bins=23)
    assert make_features(data_dir, config, tmp_path / "fbank", nj=2)["skipped"] == 0
    feats_mtime = (data_dir / "feats.scp").stat().st_mtime_ns
    assert make_features(data_dir, config, tmp_path / "fbank", nj=2) == {"done": 2, "failed": 0, "skipped": 1}
    assert (data_dir / "feats.scp").stat().st_mtime_ns == feats_mtime
    forced = make_features(data_dir, config, tmp_path / "fbank", nj=1, force=True)
    assert forced == {"done": 2, "failed": 0, "skipped": 0}
    # another config is not up to date
    assert not features_up_to_date(data_dir, FeatureConfig(num_mel_bins=24))
    assert make_features(data_dir, FeatureConfig(num_mel_bins=24), tmp_path / "fbank")["skipped"] == 0
    assert next(iter(kaldiio.load_scp(str(data_dir / "feats.scp")).values())).shape[1] == 24


def test_features_stale_after_wav_scp_changes(tmp_path, two_utts):
    data_dir = make_data_dir(tmp_path, two_utts)
    config = FeatureConfig(num_mel_bins=23)
    make_features(data_dir, config, tmp_path / "fbank")
    assert features_up_to_date(data_dir, config)
    newer = (data_dir / "feats.scp").stat().st_mtime + 10
    os.utime(data_dir / "wav.scp", (newer, newer))
    assert not features_up_to_date(data_dir, config)
    assert make_features(data_dir, config, tmp_path / "fbank")["skipped"] == 0


def test_features_stale_when_an_utterance_is_added(tmp_path, two_utts):
    data_dir = make_data_dir(tmp_path, two_utts)
    config = FeatureConfig(num_mel_bins=23)
    make_features(data_dir, config, tmp_path / "fbank")
    (data_dir / "feats.scp").write_text((data_dir / "feats.scp").read_text().splitlines()[0] + "\n")
    assert not features_up_to_date(data_dir, config)


def test_half_the_audio_missing_fails_and_writes_nothing(tmp_path, two_utts):
    data_dir = make_data_dir(tmp_path, two_utts, missing={"spkB-utt1"})
    with pytest.raises(FeatureExtractionError) as error:
        make_features(data_dir, FeatureConfig(num_mel_bins=23), tmp_path / "fbank", nj=2)
    message = str(error.value)
    assert str(data_dir) in message
    assert "1 of 2" in message and "95%" in message
    assert "spkB-utt1" in message  # the first failure is quoted
    for name in ("feats.scp", "cmvn.scp", "utt2num_frames", "feats.conf"):
        assert not (data_dir / name).exists(), name


def test_few_missing_below_threshold_still_succeeds(tmp_path):
    utts = {f"spk{i % 3}-utt{i:02d}": chirp_int16(0.05, seed=i) for i in range(25)}
    data_dir = make_data_dir(tmp_path, utts, missing={"spk1-utt01"})
    result = make_features(data_dir, FeatureConfig(num_mel_bins=23), tmp_path / "fbank", nj=2)
    assert result == {"done": 24, "failed": 1, "skipped": 0}
    feats = read_kv(data_dir / "feats.scp")
    assert len(feats) == 24 and "spk1-utt01" not in feats
    # a data dir whose feats.scp misses an utterance is not up to date
    assert not features_up_to_date(data_dir, FeatureConfig(num_mel_bins=23))


def test_failed_run_keeps_previous_feature_lists(tmp_path, two_utts):
    data_dir = make_data_dir(tmp_path, two_utts)
    config = FeatureConfig(num_mel_bins=23)
    make_features(data_dir, config, tmp_path / "fbank")
    before = {name: (data_dir / name).read_text() for name in ("feats.scp", "cmvn.scp", "utt2num_frames")}
    os.remove(read_kv(data_dir / "wav.scp")["spkA-utt1"])
    with pytest.raises(FeatureExtractionError):
        make_features(data_dir, config, tmp_path / "fbank", force=True)
    for name, text in before.items():
        assert (data_dir / name).read_text() == text, name


def test_failed_run_keeps_previous_features_loadable(tmp_path, two_utts):
    data_dir = make_data_dir(tmp_path, two_utts)
    config = FeatureConfig(num_mel_bins=23)
    make_features(data_dir, config, tmp_path / "fbank")
    before = {utt: feats.copy() for utt, feats in kaldiio.load_scp(str(data_dir / "feats.scp")).items()}
    os.remove(read_kv(data_dir / "wav.scp")["spkA-utt1"])
    with pytest.raises(FeatureExtractionError):
        make_features(data_dir, config, tmp_path / "fbank", force=True)
    after = kaldiio.load_scp(str(data_dir / "feats.scp"))
    for utt, feats in before.items():
        np.testing.assert_array_equal(after[utt], feats)


# --- compressed arks ---------------------------------------------------------------------------


def test_compressed_features_are_smaller_and_close(tmp_path, two_utts):
    """``spk features --compress``: Kaldi's 8-bit speech-feature compression, read back by kaldiio unchanged.

    Each column is quantised to 8 bits piecewise linearly between its 0th, 25th, 75th and
    100th percentiles with 64, 128 and 63 steps; the coarsest step is at most (max - min) / 63
    of the column, so rounding is off by at most half of it. The assertion allows one whole
    step: the percentiles themselves are stored as 16-bit values of the matrix's range.
    """
    from click.testing import CliRunner

    from spk.cli import main

    plain = make_data_dir(tmp_path / "plain", two_utts)
    packed = make_data_dir(tmp_path / "packed", two_utts)
    make_features(plain, FeatureConfig(), tmp_path / "plain" / "fbank")
    result = CliRunner().invoke(main, ["features", str(packed), "--feat-dir", str(tmp_path / "packed" / "fbank"),
                                       "--compress"])
    assert result.exit_code == 0, result.output

    def ark_bytes(root):
        return sum(p.stat().st_size for p in (root / "fbank").glob("*.ark") if ".cmvn." not in p.name)

    assert ark_bytes(tmp_path / "packed") < 0.3 * ark_bytes(tmp_path / "plain")
    exact = kaldiio.load_scp(str(plain / "feats.scp"))
    stored = kaldiio.load_scp(str(packed / "feats.scp"))
    cmvn = kaldiio.load_scp(str(packed / "cmvn.scp"))
    for utt in two_utts:
        reference, decompressed = exact[utt], stored[utt]
        assert decompressed.shape == reference.shape and decompressed.dtype == np.float32
        step = (reference.max(axis=0) - reference.min(axis=0)) / 63
        assert np.all(np.abs(decompressed - reference) <= step)
        assert not np.array_equal(decompressed, reference)
        # CMVN statistics of the stored (decompressed) values, as Kaldi computes them
        np.testing.assert_allclose(cmvn[utt], cmvn_stats(decompressed), rtol=1e-6)
    assert (plain / "feats.conf").read_text() == (packed / "feats.conf").read_text()
