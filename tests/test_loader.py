"""Training data loading (spk/train/loader.py, spk/train/audio_source.py): loader worker processes,
preload: auto, on-the-fly features, bad training data, mixed precision."""

from __future__ import annotations

import shutil
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import torch

from spk.data import DataDir, write_wav_scp
from spk.experiment import ExperimentConfig
from spk.feature_store import FeatureStore, TrainingDataError
from spk.features import FeatureConfig
from spk.train.audio_source import AudioFeatureSource, utterance_frames
from spk.train.dataset import ChunkSampler, SpeakerBalancedSampler
from spk.train.loader import chunk_source, decide_preload, epoch_batches
from spk.train.trainer import train
from tests.test_train_augment import write_audio_data_dir

# no dither and no CMVN: computed chunks then equal the dumped rows, whatever the chunk
PLAIN = FeatureConfig(kind="fbank", num_mel_bins=20, dither=0.0, cmvn="none")
TINY = {"encoder_conf": {"hidden_size": 8, "num_layers": 1}, "embedding_dim": 8, "epochs": 2, "batch_size": 6,
        "chunk_frames": [40, 60], "optimizer_conf": {"lr": 0.01}}


@pytest.fixture(scope="module")
def audio_dir(tmp_path_factory) -> Path:
    return write_audio_data_dir(tmp_path_factory.mktemp("loader") / "train", 4, 5, (1.0, 1.5), PLAIN, seed=5)


def labels_of(data_dir: Path) -> dict[str, int]:
    utt2spk = DataDir(data_dir).utt2spk()
    speakers = sorted(set(utt2spk.values()))
    return {utt: speakers.index(spk) for utt, spk in utt2spk.items()}


def all_batches(sampler, epoch: int, start: int = 0, **options) -> list:
    with epoch_batches(sampler, epoch, start, **options) as batches:
        return list(batches)


def assert_same_batches(a: list, b: list) -> None:
    assert len(a) == len(b) > 0
    for x, y in zip(a, b):
        assert torch.equal(x.feats, y.feats) and torch.equal(x.labels, y.labels) and torch.equal(x.lengths, y.lengths)


@pytest.mark.parametrize("sampler_class", [ChunkSampler, SpeakerBalancedSampler])
def test_worker_processes_make_the_batches_a_thread_makes(audio_dir, sampler_class):
    store = FeatureStore(str(audio_dir / "feats.scp"), PLAIN, preload=False,
                         num_frames=DataDir(audio_dir).utt2num_frames())
    options = {"batch_size": 6} if sampler_class is ChunkSampler else {"speakers_per_batch": 3, "utts_per_speaker": 2}
    sampler = sampler_class(store, labels_of(audio_dir), chunk_frames=(40, 60), seed=3, **options)
    in_thread = all_batches(sampler, epoch=2)
    assert_same_batches(in_thread, all_batches(sampler, epoch=2, num_workers=2))
    assert_same_batches(in_thread[3:], all_batches(sampler, epoch=2, start=3, num_workers=2))  # resuming mid-epoch


def test_on_the_fly_chunks_equal_the_dumped_rows(audio_dir):
    source = AudioFeatureSource(audio_dir, PLAIN)
    dumped = kaldiio.load_scp(str(audio_dir / "feats.scp"))
    assert source.keys == sorted(dumped.keys())
    for utt in source.keys[:4]:
        assert source.num_frames(utt) == len(dumped[utt])
        for start, length in ((0, 40), (13, 50), (source.num_frames(utt) - 45, 45)):
            np.testing.assert_allclose(source.chunk(utt, start, length), dumped[utt][start:start + length],
                                       atol=1e-4, rtol=0)


def test_on_the_fly_lengths_from_utt2dur_stay_inside_the_audio(audio_dir, tmp_path):
    data = tmp_path / "train"
    shutil.copytree(audio_dir, data)
    (data / "utt2num_frames").unlink()
    frames = utterance_frames(data, PLAIN)
    exact = DataDir(audio_dir).utt2num_frames()
    assert all(exact[utt] - 2 <= frames[utt] <= exact[utt] for utt in exact)
    source = AudioFeatureSource(data, PLAIN)
    utt = source.keys[0]
    assert source.chunk(utt, frames[utt] - 30, 30).shape == (30, PLAIN.dim)


def test_preload_auto_follows_the_available_memory(caplog):
    frames = {"a": 1000, "b": 3000}  # 4000 frames x 20 dims x 4 bytes = 320 kB
    with caplog.at_level("INFO", logger="spk"):
        assert decide_preload("auto", frames, 20, available=10**6) is True
        assert decide_preload("auto", frames, 20, available=5 * 10**5) is False
        assert decide_preload(True, frames, 20) is True
    assert "preloaded (preload: auto" in caplog.text and "read from the arks for each batch (preload: auto" in caplog.text


def test_chunk_source_streams_what_does_not_fit(audio_dir, monkeypatch):
    monkeypatch.setattr("spk.train.loader.available_memory_bytes", lambda: 1000)
    store, _ = chunk_source(audio_dir, PLAIN, preload="auto", on_the_fly=False)
    assert isinstance(store, FeatureStore) and not store.preloaded
    monkeypatch.setattr("spk.train.loader.available_memory_bytes", lambda: 10**12)
    store, _ = chunk_source(audio_dir, PLAIN, preload="auto", on_the_fly=False)
    assert store.preloaded


def broken_copy(audio_dir: Path, tmp_path: Path, victim_index: int) -> tuple[Path, str]:
    data = tmp_path / "train"
    shutil.copytree(audio_dir, data)
    victim = sorted(DataDir(data).utt2spk())[victim_index]
    return data, victim


def test_an_unreadable_wav_stops_training_naming_it_and_the_rerun_resumes(audio_dir, tmp_path):
    num_workers = 2  # the error crosses from a loader process (the thread path raises the same error)
    data, victim = broken_copy(audio_dir, tmp_path, 7)
    wav_scp = DataDir(data).wav_scp()
    good = Path(wav_scp[victim]).read_bytes()
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF this is not audio")
    write_wav_scp(data / "wav.scp", {**wav_scp, victim: str(broken)})
    config = {**TINY, "on_the_fly_features": True, "num_workers": num_workers}
    exp = tmp_path / "exp"
    with pytest.raises(TrainingDataError) as error:
        train(exp, ExperimentConfig.from_dict(config), PLAIN, data)
    assert repr(victim) in str(error.value) and str(broken) in str(error.value)
    assert "the rerun resumes there" in str(error.value)
    saved = torch.load(exp / "models/interrupted.pt", weights_only=True)
    assert saved["epoch"] == 1 and saved["batch"] >= 1  # the batches before the broken one were trained
    broken.write_bytes(good)  # fixed where it lies
    resumed = torch.load(train(exp, ExperimentConfig.from_dict(config), PLAIN, data), weights_only=True)["model"]
    assert not (exp / "models/interrupted.pt").exists()
    whole = torch.load(train(tmp_path / "whole", ExperimentConfig.from_dict(config), PLAIN, audio_dir),
                       weights_only=True)["model"]
    assert all(torch.equal(resumed[key], whole[key]) for key in whole)


def test_a_truncated_ark_stops_training_naming_the_utterance_and_file(audio_dir, tmp_path):
    data, _ = broken_copy(audio_dir, tmp_path, 0)
    feats_scp = {line.split()[0]: line.split()[1] for line in (data / "feats.scp").read_text().splitlines()}
    ark = Path(feats_scp[sorted(feats_scp)[0]].rsplit(":", 1)[0].replace(str(audio_dir), str(data)))
    (data / "feats.scp").write_text("".join(f"{utt} {entry.replace(str(audio_dir), str(data))}\n"
                                            for utt, entry in feats_scp.items()))
    last = max(feats_scp, key=lambda utt: int(feats_scp[utt].rsplit(":", 1)[1]))
    rows, cols = kaldiio.load_mat(feats_scp[last]).shape
    ark.write_bytes(ark.read_bytes()[:-(rows - 20) * cols * 4])  # the last matrix keeps 20 rows, below any chunk
    config = ExperimentConfig.from_dict({**TINY, "preload": False, "epochs": 6})
    with pytest.raises(TrainingDataError) as error:
        train(tmp_path / "exp", config, PLAIN, data)
    assert repr(last) in str(error.value) and str(ark) in str(error.value)


def test_bf16_trains_on_cpu_or_says_why_not(audio_dir, tmp_path, caplog):
    config = ExperimentConfig.from_dict({**TINY, "precision": "bf16", "epochs": 1})
    with caplog.at_level("INFO", logger="spk"):
        final = train(tmp_path / "exp", config, PLAIN, audio_dir)
    weights = torch.load(final, weights_only=True)["model"]
    assert all(torch.isfinite(tensor).all() for tensor in weights.values())
    # this machine's oneDNN has no bf16 LSTM: the run says so and trains in fp32; elsewhere it trains in bf16
    assert "cannot run in bf16 on cpu with this torch build" in caplog.text or ", bf16, " in caplog.text


def test_lengths_only_stage_1_is_enough_to_train_on_the_fly(audio_dir, tmp_path):
    from click.testing import CliRunner

    from spk.cli import main

    data = tmp_path / "train"
    data.mkdir()
    for name in ("wav.scp", "utt2spk", "spk2utt"):
        shutil.copy(audio_dir / name, data / name)
    (tmp_path / "plain.yaml").write_text(__import__("yaml").safe_dump(PLAIN.to_dict()))
    (tmp_path / "tiny.yaml").write_text(__import__("yaml").safe_dump({**TINY, "epochs": 1}))
    runner = CliRunner()
    result = runner.invoke(main, ["features", "--config", str(tmp_path / "plain.yaml"), "--feat-dir",
                                  str(tmp_path / "fbank"), "--lengths-only", str(data)])
    assert result.exit_code == 0, result.output
    assert not (data / "feats.scp").exists()
    assert DataDir(data).utt2num_frames() == DataDir(audio_dir).utt2num_frames()
    train_command = ["train", "--config", str(tmp_path / "tiny.yaml"), "--feature-config", str(tmp_path / "plain.yaml"),
                     "--train-dir", str(data), "--exp-dir", str(tmp_path / "exp")]
    refused = runner.invoke(main, train_command)
    assert refused.exit_code != 0 and "feats.scp" in refused.output  # dumped features are the default
    result = runner.invoke(main, [*train_command, "--set", "on_the_fly_features=true"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "exp/models/final.pt").exists()
