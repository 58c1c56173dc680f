"""On-the-fly augmentation in training: config, sources, chunk/sample alignment, batches,
the background batch thread, and deterministic, resumable training runs (real wav files,
real features, real `spk train` processes)."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from spk.data import utt2spk_to_spk2utt, write_spk2utt, write_utt2spk, write_wav_scp
from spk.features import FeatureConfig
from spk.make_features import make_features
from spk.augment import AugmentError
from spk.augment.online import ChunkAugmenter
from spk.augment.simulate import apply_eq, coloured_noise, exponential_rir, random_eq
from spk.augment.sources import SourceSet
from spk.experiment import AugmentConfig, ConfigError, ExperimentConfig
from spk.train.dataset import ChunkSampler
from spk.feature_store import FeatureStore
from spk.train.prefetch import Prefetcher
from spk.train.trainer import make_augmenter, train

RATE = 16000
FBANK = FeatureConfig(kind="fbank", num_mel_bins=20)
MFCC_DELTAS = FeatureConfig(kind="mfcc", num_mel_bins=23, num_ceps=13, delta_order=2)
SPK = str(Path(sys.executable).with_name("spk"))


# --------------------------------------------------------------------------- data


def voice(f0: float, seconds: float, rng: np.random.Generator, sos) -> np.ndarray:
    """A buzzy voiced signal with syllable-rate pauses through a speaker's channel EQ."""
    t = np.arange(int(seconds * RATE)) / RATE
    phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.05 * np.sin(2 * np.pi * rng.uniform(2, 4) * t))) / RATE
    buzz = sum(np.sin(k * phase) / k for k in range(1, 20))
    envelope = np.clip(np.sin(2 * np.pi * rng.uniform(2, 4) * t + rng.uniform(0, 6)), 0.05, None)
    wave = apply_eq(buzz * envelope + 0.02 * rng.standard_normal(len(t)), sos)
    return (0.3 * wave / np.abs(wave).max()).astype(np.float32)


def write_audio_data_dir(path: Path, speakers: int, utts: int, seconds: tuple[float, float],
                         features: FeatureConfig, seed: int = 0) -> Path:
    """A training data dir of real 16-bit wav files with features and CMVN statistics (stage 1)."""
    rng = np.random.default_rng(seed)
    (path / "wav").mkdir(parents=True)
    wav_scp, utt2spk = {}, {}
    for s in range(speakers):
        f0, sos = rng.uniform(90, 250), random_eq(RATE, rng)
        for u in range(utts):
            utt = f"spk{s}-u{u}"
            wav = path / "wav" / f"{utt}.wav"
            sf.write(wav, voice(f0, rng.uniform(*seconds), rng, sos), RATE, subtype="PCM_16")
            wav_scp[utt], utt2spk[utt] = str(wav), f"spk{s}"
    write_wav_scp(path / "wav.scp", wav_scp)
    write_utt2spk(path / "utt2spk", utt2spk)
    write_spk2utt(path / "spk2utt", utt2spk_to_spk2utt(utt2spk))
    make_features(path, features, path / "fbank")
    return path


def write_source_dir(path: Path, waves: dict[str, np.ndarray], subtype: str = "PCM_16") -> Path:
    (path / "wav").mkdir(parents=True)
    entries = {}
    for name, wave in waves.items():
        sf.write(path / "wav" / f"{name}.wav", wave, RATE, subtype=subtype)
        entries[name] = str(path / "wav" / f"{name}.wav")
    write_wav_scp(path / "wav.scp", entries)
    return path


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("augment")
    rng = np.random.default_rng(1)
    write_audio_data_dir(root / "train", 6, 8, (1.6, 2.4), FBANK, seed=2)
    (root / "features.yaml").write_text(yaml.safe_dump(FBANK.to_dict()))
    write_source_dir(root / "noise", {f"n{i}": 0.1 * coloured_noise(kind, int(3.3 * RATE), RATE, rng)
                                      for i, kind in enumerate(["white", "pink", "hum"])})
    write_source_dir(root / "music", {"m0": 0.1 * coloured_noise("brown", int(0.7 * RATE), RATE, rng)})  # short: tiled
    write_source_dir(root / "speech", {f"s{i}": voice(rng.uniform(90, 250), 2.5, rng, random_eq(RATE, rng))
                                       for i in range(4)})
    rirs = {f"r{i}": exponential_rir(RATE, rt60, rng) for i, rt60 in enumerate([0.3, 0.6])}
    write_source_dir(root / "rirs", {k: 0.5 * v / np.abs(v).max() for k, v in rirs.items()}, subtype="FLOAT")
    return root


def augment_options(root: Path, **changes) -> dict:
    options = {"prob": 0.6,
               "noise": {"data": str(root / "noise"), "snr": [0, 15]},
               "music": {"data": str(root / "music"), "snr": [5, 15]},
               "babble": {"data": str(root / "speech"), "snr": [13, 20], "speakers": [2, 3]},
               "reverb": {"data": str(root / "rirs")},
               "reverb_noise": {"weight": 1},
               "spec_augment": {"prob": 0.5, "time_masks": 1, "max_time_width": 5, "freq_masks": 1,
                                "max_freq_width": 3}}
    options.update(changes)
    return {k: v for k, v in options.items() if v is not None}


def sampler_for(root: Path, augment: dict | None, features: FeatureConfig = FBANK, data: str = "train",
                seed: int = 0, batch_size: int = 8) -> ChunkSampler:
    data_dir = root / data
    config = ExperimentConfig.from_dict({"batch_size": batch_size, "chunk_frames": [40, 60], "seed": seed,
                                         **({"augment": augment} if augment else {})})
    store = FeatureStore(str(data_dir / "feats.scp"), features, cmvn_scp=str(data_dir / "cmvn.scp"))
    utt2spk = dict(line.split() for line in (data_dir / "utt2spk").read_text().splitlines())
    speakers = sorted(set(utt2spk.values()))
    sampler = ChunkSampler(store, {u: speakers.index(s) for u, s in utt2spk.items()}, batch_size=batch_size,
                           chunk_frames=config.chunk_frames, seed=seed)
    if augment:
        sampler.augmenter = make_augmenter(config.augmentation(), features, data_dir, store, sampler, config)
    return sampler


# --------------------------------------------------------------------------- config


def test_config_round_trip_and_kinds(root):
    config = ExperimentConfig.from_dict({"augment": augment_options(root)})
    augmentation = config.augmentation()
    assert augmentation.prob == 0.6 and augmentation.babble.speakers == (2, 3)
    assert [name for name, _ in augmentation.kinds()] == ["noise", "music", "babble", "reverb", "reverb_noise"]
    assert ExperimentConfig.from_dict(yaml.safe_load(yaml.safe_dump(config.to_dict()))) == config
    assert ExperimentConfig.from_dict({}).augmentation() is None
    alone = AugmentConfig.from_dict({"spec_augment": {}})
    assert alone.prob == 0.0 and alone.spec_augment.prob == 0.5  # SpecAugment alone needs no source


@pytest.mark.parametrize("augment, message", [
    ({"nosie": {}}, r"augment: unknown key\(s\) nosie; known keys: prob, noise, music"),
    ({"noise": {"data": "d"}}, r"augment\.noise: missing snr"),
    ({"noise": {"data": "d", "snr": [15, 0]}}, r"augment\.noise\.snr: expected \[low, high\] with low <= high"),
    ({"noise": {"data": "d", "snr": 5}}, r"augment\.noise\.snr: expected \[low, high\]"),
    ({"noise": {"data": "d", "snr": [0, 5], "sped": 1}}, r"augment\.noise: unknown key\(s\) sped; known keys"),
    ({"music": {"data": "d", "snr": [0, 5], "speakers": [3, 7]}}, r"augment\.music: unknown key\(s\) speakers"),
    ({"babble": {"data": "d", "snr": [0, 5], "speakers": [0, 2]}}, r"augment\.babble\.speakers: .*low >= 1"),
    ({"babble": {"data": "d", "snr": [0, 5], "speakers": [2.5, 4]}}, r"augment\.babble\.speakers: .*whole"),
    ({"reverb": {"weight": 1}}, r"augment\.reverb: missing data"),
    ({"reverb": {"data": 3}}, r"augment\.reverb\.data: expected the path"),
    ({"reverb": {"data": "r"}, "reverb_noise": {}}, r"augment\.reverb_noise: needs both reverb .* and noise"),
    ({"prob": 1.5, "reverb": {"data": "r"}}, r"augment\.prob: expected a number in \[0.0, 1.0\]"),
    ({"prob": 0.5}, r"augment: prob is 0.5 but no augmentation kind"),
    ({"reverb": {"data": "r", "weight": -1}}, r"augment\.reverb\.weight: expected a number >= 0"),
    ({"spec_augment": {"prob": 2}}, r"augment\.spec_augment\.prob"),
    ({"spec_augment": {"time_masks": -1}}, r"augment\.spec_augment\.time_masks: expected a whole number"),
    ({"spec_augment": {"masks": 1}}, r"augment\.spec_augment: unknown key\(s\) masks"),
    ("noise", r"augment: expected a mapping"),
])
def test_config_errors_name_the_key(augment, message):
    with pytest.raises(ConfigError, match=message):
        ExperimentConfig.from_dict({"augment": augment}, source="exp.yaml")


def test_finetune_phase_can_turn_augmentation_off(root):
    config = ExperimentConfig.from_dict({"augment": augment_options(root), "finetune": {"loss": "aam",
                                                                                         "augment": {}}})
    first, second = config.phases()
    assert first.augmentation() is not None and second.augmentation() is None


def test_missing_source_dir_is_named(root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(AugmentError, match=r"augment\.noise\.data: data/musan_noise is not a data dir .*"
                                                r"relative to the working directory"):
        sampler_for(root, augment_options(root, noise={"data": "data/musan_noise", "snr": [0, 5]}))


def test_vad_features_are_refused(root):
    config = AugmentConfig.from_dict({"reverb": {"data": str(root / "rirs")}})
    with pytest.raises(AugmentError, match="vad: false"):
        ChunkAugmenter(config, FeatureConfig(num_mel_bins=20, vad=True), None, {}, seed=0)


# --------------------------------------------------------------------------- sources


def test_source_stretch_reads_a_random_range(root):
    source = SourceSet(root / "noise", "augment.noise.data", RATE)
    rng = np.random.default_rng(0)
    stretch = source.stretch(8000, rng)
    assert stretch.shape == (8000,) and stretch.dtype == np.float32
    # it is a contiguous range of one of the recordings
    found = False
    for utt in source.ids:
        whole = sf.read(root / "noise" / "wav" / f"{utt}.wav", dtype="float32")[0]
        for offset in range(len(whole) - 8000 + 1):
            if whole[offset] == stretch[0] and np.array_equal(whole[offset:offset + 8000], stretch):
                found = True
                break
    assert found
    short = SourceSet(root / "music", "augment.music.data", RATE).stretch(20000, rng)  # 0.7 s recording, tiled
    assert len(short) == 20000
    np.testing.assert_array_equal(short[11200:20000], short[:8800])


# --------------------------------------------------------------------------- alignment


@pytest.mark.parametrize("features", [FBANK, MFCC_DELTAS], ids=["fbank", "mfcc_deltas"])
def test_chunk_features_of_the_clean_audio_equal_the_stored_rows(root, tmp_path, features):
    data = root / "train" if features is FBANK else \
        write_audio_data_dir(tmp_path / "train", 2, 2, (1.0, 1.3), features, seed=4)
    config = AugmentConfig.from_dict({"reverb": {"data": str(root / "rirs")}})
    utts = sorted(dict(line.split() for line in (data / "utt2spk").read_text().splitlines()))
    augmenter = ChunkAugmenter.build(config, features, data, utts, seed=0)
    raw = kaldiio.load_scp(str(data / "feats.scp"))
    for utt in utts[:3]:
        stored = np.asarray(raw[utt])
        for start, length in ((0, 40), (17, 55), (len(stored) - 48, 48)):
            begin, end = augmenter.featurizer.sample_range(start, length)
            assert (begin, end) == (start * 160, (start + length - 1) * 160 + 400)
            recomputed = augmenter.featurizer.chunk_features(utt, start, length)
            assert recomputed.shape == (length, features.dim)
            np.testing.assert_allclose(recomputed, stored[start:start + length], atol=1e-4, rtol=0)


def test_audio_read_on_demand_gives_the_preloaded_chunks(root):
    config = AugmentConfig.from_dict(augment_options(root, spec_augment=None))
    utts = sorted(dict(line.split() for line in (root / "train" / "utt2spk").read_text().splitlines()))[:4]
    preloaded = ChunkAugmenter.build(config, FBANK, root / "train", utts, seed=0, preload=True)
    on_demand = ChunkAugmenter.build(config, FBANK, root / "train", utts, seed=0, preload=False)
    for utt in utts:
        np.testing.assert_array_equal(on_demand.featurizer.chunk_features(utt, 5, 50),
                                      preloaded.featurizer.chunk_features(utt, 5, 50))
        a = preloaded.augmented_chunk(utt, 5, 50, np.random.default_rng(3))
        b = on_demand.augmented_chunk(utt, 5, 50, np.random.default_rng(3))
        np.testing.assert_array_equal(a, b)


def test_audio_that_does_not_match_the_features_is_an_error(root, tmp_path):
    data = tmp_path / "train"
    data.mkdir()
    for name in ("utt2spk", "spk2utt", "feats.scp", "cmvn.scp"):
        (data / name).write_text((root / "train" / name).read_text())
    wav_scp = dict(line.split() for line in (root / "train" / "wav.scp").read_text().splitlines())
    short = tmp_path / "short.wav"
    sf.write(short, sf.read(wav_scp["spk0-u1"])[0][:RATE], RATE, subtype="PCM_16")  # 1 s of a longer utterance
    wav_scp["spk0-u1"] = str(short)
    write_wav_scp(data / "wav.scp", wav_scp)
    with pytest.raises(AugmentError, match=r"'spk0-u1': its audio in wav.scp gives 98 frames but feats.scp has"):
        sampler_for(tmp_path, augment_options(root), data="train")


def test_unreadable_training_audio_is_named(root, tmp_path):
    data = tmp_path / "train"
    data.mkdir()
    for name in ("utt2spk", "spk2utt", "feats.scp", "cmvn.scp"):
        (data / name).write_text((root / "train" / name).read_text())
    wav_scp = dict(line.split() for line in (root / "train" / "wav.scp").read_text().splitlines())
    wav_scp["spk1-u2"] = str(tmp_path / "gone.wav")
    write_wav_scp(data / "wav.scp", wav_scp)
    with pytest.raises(AugmentError, match=r"utterance 'spk1-u2' .*gone\.wav.*file not found"):
        sampler_for(tmp_path, augment_options(root), data="train")


def test_spk_train_reports_a_missing_source_dir_by_its_key(root, tmp_path):
    config = {**TINY, "epochs": 1, "augment": {"reverb": {"data": "data/rirs_missing"}}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    result = subprocess.run([SPK, "train", "--config", str(tmp_path / "c.yaml"), "--train-dir", str(root / "train"),
                             "--feature-config", str(root / "features.yaml"), "--exp-dir", str(tmp_path / "exp")],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "Error: augment.reverb.data: data/rirs_missing is not a data dir with wav.scp" in result.stderr
    assert "Traceback" not in result.stderr


# --------------------------------------------------------------------------- batches


def test_augmented_batches_keep_shapes_and_change_only_chosen_chunks(root):
    clean = sampler_for(root, None)
    augmented = sampler_for(root, augment_options(root, spec_augment=None))
    changed = total = 0
    for a, b in zip(clean.batches(1), augmented.batches(1)):
        assert a.feats.shape == b.feats.shape and b.feats.dtype == torch.float32
        assert torch.equal(a.lengths, b.lengths) and torch.equal(a.labels, b.labels)
        differs = (a.feats != b.feats).flatten(1).any(dim=1)
        changed += int(differs.sum())
        total += len(differs)
        for row in b.feats[differs].numpy():  # augmented chunks: utterance CMVN of the chunk itself
            np.testing.assert_allclose(row.mean(axis=0), 0.0, atol=1e-4)
            assert np.isfinite(row).all()
    assert 0.45 < changed / total < 0.75  # prob 0.6


def test_augmented_batches_are_deterministic_and_resumable(root):
    sampler = sampler_for(root, augment_options(root))
    first = list(sampler.batches(2))
    again = list(sampler_for(root, augment_options(root)).batches(2, start_batch=3))
    assert len(again) == len(first) - 3
    for a, b in zip(first[3:], again):
        assert torch.equal(a.feats, b.feats)
    other_epoch = next(sampler.batches(3))
    assert not torch.equal(other_epoch.feats, first[0].feats)


def test_each_kind_changes_the_chunk(root):
    for kind in ("noise", "music", "babble", "reverb", "reverb_noise"):
        options = {"prob": 1.0, kind: augment_options(root)[kind]}
        if kind == "reverb_noise":
            options.update(noise=augment_options(root)["noise"], reverb=augment_options(root)["reverb"])
            options["noise"] = {**options["noise"], "weight": 0}
            options["reverb"] = {**options["reverb"], "weight": 0}
        batch = next(sampler_for(root, options).batches(1))
        clean = next(sampler_for(root, None).batches(1))
        assert (batch.feats != clean.feats).flatten(1).any(dim=1).all(), kind


def test_babble_leaves_out_the_chunks_own_speaker(root, monkeypatch):
    import spk.augment.online as online

    speakers = []

    def spy(*args, **kwargs):
        speakers.append(kwargs["speaker"])
        return online_babble(*args, **kwargs)

    online_babble = online.babble_track
    monkeypatch.setattr(online, "babble_track", spy)
    config = AugmentConfig.from_dict({"prob": 1.0, "babble": augment_options(root)["babble"]})
    augmenter = ChunkAugmenter.build(config, FBANK, root / "train", ["spk3-u1"], seed=0)
    augmenter.augmented_chunk("spk3-u1", 5, 40, np.random.default_rng(0))
    assert speakers == ["spk3"]


def test_spec_augment_alone_masks_the_batch(root):
    clean = next(sampler_for(root, None).batches(1))
    masked = next(sampler_for(root, {"spec_augment": {"prob": 1.0, "time_masks": 2, "max_time_width": 5,
                                                      "freq_masks": 0, "max_freq_width": 0}}).batches(1))
    zeroed = (masked.feats == 0).all(dim=2) & (clean.feats != 0).any(dim=2)
    assert zeroed.any() and zeroed.sum(dim=1).max() <= 10
    assert torch.equal(masked.feats[~zeroed], clean.feats[~zeroed])


# --------------------------------------------------------------------------- background thread


def test_prefetcher_keeps_order_and_raises_errors():
    assert list(Prefetcher(iter(range(50)), depth=3)) == list(range(50))

    def failing():
        yield 1
        raise ValueError("bad batch")

    prefetched = Prefetcher(failing())
    assert next(prefetched) == 1
    with pytest.raises(ValueError, match="bad batch"):
        next(prefetched)


def test_prefetcher_stops_its_thread_when_closed():
    produced = []

    def endless():
        for i in range(10**9):
            produced.append(i)
            yield i

    before = threading.active_count()
    with Prefetcher(endless(), depth=2) as items:
        assert next(items) == 0
    assert threading.active_count() == before
    count = len(produced)
    time.sleep(0.05)
    assert len(produced) == count <= 4


# --------------------------------------------------------------------------- training runs

TINY = {"encoder_conf": {"hidden_size": 8, "num_layers": 1}, "embedding_dim": 8, "epochs": 3, "batch_size": 4,
        "chunk_frames": [20, 30], "optimizer_conf": {"lr": 0.01}, "encoder": "lstm"}


def weights(exp: Path) -> dict[str, torch.Tensor]:
    return torch.load(exp / "models" / "final.pt", map_location="cpu", weights_only=True)["model"]


@pytest.fixture(scope="module")
def augmented_run(root) -> tuple[dict, Path]:
    config = {**TINY, "augment": augment_options(root)}
    (root / "tiny.yaml").write_text(yaml.safe_dump(config))
    train(root / "exp_a", ExperimentConfig.from_dict(config), FBANK, root / "train")
    return config, root / "exp_a"


def test_training_with_augmentation_is_deterministic(root, augmented_run):
    config, exp_a = augmented_run
    train(root / "exp_b", ExperimentConfig.from_dict(config), FBANK, root / "train")
    a, b = weights(exp_a), weights(root / "exp_b")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    saved = ExperimentConfig.from_yaml(exp_a / "config.yaml")
    assert saved.augmentation() == ExperimentConfig.from_dict(config).augmentation()


def test_interrupted_augmented_run_resumes_to_the_same_weights(root, augmented_run):
    _, exp_a = augmented_run
    exp = root / "exp_stopped"
    command = [SPK, "train", "--config", str(root / "tiny.yaml"), "--train-dir", str(root / "train"),
               "--feature-config", str(root / "features.yaml"), "--exp-dir", str(exp), "--threads", "1"]
    with open(root / "stopped.log", "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=log)
        deadline = time.time() + 120
        while not (exp / "models/epoch_001.pt").exists() and process.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        process.send_signal(signal.SIGINT)
        process.wait(timeout=120)
    assert process.returncode == 128 + signal.SIGINT, (root / "stopped.log").read_text()[-2000:]
    saved = torch.load(exp / "models/interrupted.pt", weights_only=True)
    assert saved["epoch"] == 2 and saved["batch"] >= 1  # stopped inside epoch 2
    resumed = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from" in resumed.stderr and "on-the-fly augmentation" in resumed.stderr
    a, b = weights(exp_a), weights(exp)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
