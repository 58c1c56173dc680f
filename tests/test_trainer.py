"""Training (spk/train), embedding extraction (spk/embed.py) and identification (spk/identify.py)
on tiny synthetic feature data dirs: random matrices written with kaldiio, no audio."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import torch
import yaml

from spk.data import (
    DataDir,
    utt2spk_to_spk2utt,
    validate_data_dir,
    write_kv,
    write_spk2utt,
    write_utt2num_frames,
    write_utt2spk,
    write_wav_scp,
)
from spk.embed import extract_embeddings, feature_store_for, speaker_means
from spk.features import FeatureConfig, cmvn_stats
from spk.identify import evaluate_identification
from spk.scoring import load_embeddings
from spk.experiment import ConfigError, ExperimentConfig
from spk.train.dataset import ChunkSampler
from spk.feature_store import FeatureStore
from spk.train.egs import prepare_training_dirs
from spk.train.trainer import train
from spk.model_dir import TrainedModelError, load_trained

DIM = 20
FEATURES = FeatureConfig(kind="fbank", num_mel_bins=DIM)
TINY = {
    "encoder_conf": {"hidden_size": 16, "num_layers": 1},
    "embedding_dim": 8,
    "epochs": 2,
    "batch_size": 8,
    "chunk_frames": [50, 80],
    "optimizer_conf": {"lr": 0.01},
}



def speaker_styles(num_speakers: int, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per speaker: a per-dimension scale and offset.  Utterance CMVN removes the offset
    (mean normalisation) but keeps the scale, so speakers stay separable after it."""
    rng = np.random.default_rng(seed)
    return {f"spk{s}": (rng.uniform(0.2, 4.0, size=DIM), rng.normal(0.0, 3.0, size=DIM))
            for s in range(num_speakers)}


def write_feature_dir(path: Path, utterances: dict[str, tuple[str, int]],
                      styles: dict[str, tuple[np.ndarray, np.ndarray]], seed: int = 0) -> dict[str, np.ndarray]:
    """A data dir with feats.scp, cmvn.scp, utt2num_frames, dummy wav.scp, utt2spk, spk2utt.

    ``utterances`` maps utt -> (speaker, frames); returns the raw matrices."""
    rng = np.random.default_rng(seed)
    path.mkdir(parents=True)
    feats = {}
    for utt in sorted(utterances):
        speaker, frames = utterances[utt]
        scale, offset = styles[speaker]
        feats[utt] = (rng.normal(size=(frames, DIM)) * scale + offset).astype(np.float32)
    with kaldiio.WriteHelper(f"ark,scp:{path}/feats.ark,{path}/feats.scp") as writer:
        for utt in sorted(feats):
            writer(utt, feats[utt])
    with kaldiio.WriteHelper(f"ark,scp:{path}/cmvn.ark,{path}/cmvn.scp") as writer:
        for utt in sorted(feats):
            writer(utt, cmvn_stats(feats[utt]))
    utt2spk = {utt: speaker for utt, (speaker, _) in utterances.items()}
    write_wav_scp(path / "wav.scp", {utt: f"/nonexistent/{utt}.wav" for utt in utterances})
    write_utt2spk(path / "utt2spk", utt2spk)
    write_spk2utt(path / "spk2utt", utt2spk_to_spk2utt(utt2spk))
    write_utt2num_frames(path / "utt2num_frames", {utt: len(m) for utt, m in feats.items()})
    return feats


def corpus(num_speakers: int, utts_per_speaker: int, seed: int, prefix: str = "u",
           frames: tuple[int, int] = (120, 250)) -> dict[str, tuple[str, int]]:
    rng = np.random.default_rng(seed)
    return {f"spk{s}-{prefix}{u}": (f"spk{s}", int(rng.integers(frames[0], frames[1] + 1)))
            for s in range(num_speakers) for u in range(utts_per_speaker)}


@pytest.fixture(scope="module")
def styles():
    return speaker_styles(6)


@pytest.fixture(scope="module")
def train_dir(tmp_path_factory, styles) -> Path:
    path = tmp_path_factory.mktemp("data") / "train"
    write_feature_dir(path, corpus(6, 5, seed=1), styles, seed=1)
    validate_data_dir(path, need_feats=True, need_cmvn=True)
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory, train_dir) -> Path:
    exp = tmp_path_factory.mktemp("exp") / "tiny"
    train(exp, ExperimentConfig.from_dict(dict(TINY)), FEATURES, train_dir)
    return exp


def read_log(exp: Path) -> list[dict]:
    return [json.loads(line) for line in (exp / "train_log.jsonl").read_text().splitlines()]


# --------------------------------------------------------------------------- config


def test_config_unknown_key_is_named():
    with pytest.raises(ConfigError, match=r"my\.yaml: unknown key\(s\) hiden_size") as err:
        ExperimentConfig.from_dict({"hiden_size": 3, "epochs": 1}, source="my.yaml")
    assert "epochs" in str(err.value)  # lists the known keys


@pytest.mark.parametrize("chunk", [[80, 50], [0, 10], [100], [100.5, 200]])
def test_config_bad_chunk_frames(chunk):
    with pytest.raises(ConfigError, match="chunk_frames"):
        ExperimentConfig.from_dict({"chunk_frames": chunk})


def test_config_bad_epochs():
    with pytest.raises(ConfigError, match="epochs: must be positive"):
        ExperimentConfig.from_dict({"epochs": 0})


def test_config_yaml_round_trip(tmp_path):
    config = ExperimentConfig.from_dict({**TINY, "loss": "aam", "loss_conf": {"margin": 0.2}, "seed": 7})
    config.save(tmp_path / "c.yaml")
    assert not (tmp_path / "c.yaml.tmp").exists()
    again = ExperimentConfig.from_yaml(tmp_path / "c.yaml")
    assert again == config
    assert again.chunk_frames == (50, 80)
    assert yaml.safe_load((tmp_path / "c.yaml").read_text())["chunk_frames"] == [50, 80]


def test_config_yaml_not_a_mapping(tmp_path):
    (tmp_path / "c.yaml").write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        ExperimentConfig.from_yaml(tmp_path / "c.yaml")


# --------------------------------------------------------------------------- training


def test_train_writes_the_experiment(trained):
    for name in ("config.yaml", "speakers.txt", "models/epoch_001.pt", "models/epoch_002.pt",
                 "models/final.pt", "train_log.jsonl"):
        assert (trained / name).is_file(), name
    assert (trained / "speakers.txt").read_text().split() == [f"spk{s}" for s in range(6)]
    saved = ExperimentConfig.from_yaml(trained / "config.yaml")
    assert saved.features == FEATURES.to_dict()
    assert saved.embedding_dim == 8
    records = read_log(trained)
    assert [r["epoch"] for r in records] == [1, 2]
    assert records[1]["train_loss"] < records[0]["train_loss"] or records[1]["train_acc"] > 1 / 6
    assert records[1]["train_acc"] > 1 / 6


def test_train_with_validation_logs_valid_metrics(tmp_path, train_dir, styles):
    valid = tmp_path / "valid"
    write_feature_dir(valid, corpus(6, 1, seed=5, prefix="v"), styles, seed=5)
    exp = tmp_path / "exp"
    train(exp, ExperimentConfig.from_dict({**TINY, "epochs": 1}), FEATURES, train_dir, valid)
    (record,) = read_log(exp)
    assert 0.0 <= record["valid_acc"] <= 1.0 and record["valid_loss"] > 0


def final_weights(exp: Path) -> dict[str, torch.Tensor]:
    return torch.load(exp / "models" / "final.pt", map_location="cpu", weights_only=True)["model"]


def test_resume_gives_the_same_model(tmp_path, train_dir):
    def config():
        return ExperimentConfig.from_dict({**TINY, "epochs": 3})

    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train(straight, config(), FEATURES, train_dir)
    train(resumed, config(), FEATURES, train_dir)
    # simulate a run killed during epoch 3
    (resumed / "models" / "epoch_003.pt").unlink()
    (resumed / "models" / "final.pt").unlink()
    log = (resumed / "train_log.jsonl").read_text().splitlines()
    (resumed / "train_log.jsonl").write_text("\n".join(log[:2]) + "\n")
    kept = (resumed / "models" / "epoch_002.pt").stat()
    train(resumed, config(), FEATURES, train_dir, resume=True)
    # it resumed (epochs 1-2 untouched) rather than retraining from scratch, which would also match
    again = (resumed / "models" / "epoch_002.pt").stat()
    assert (again.st_ino, again.st_mtime_ns) == (kept.st_ino, kept.st_mtime_ns)
    assert read_log(resumed)[:2] == [json.loads(line) for line in log[:2]]

    a, b = final_weights(straight), final_weights(resumed)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert [r["epoch"] for r in read_log(resumed)] == [1, 2, 3]
    assert read_log(resumed)[2]["train_loss"] == read_log(straight)[2]["train_loss"]


def test_changed_config_starts_afresh(tmp_path, train_dir):
    exp = tmp_path / "exp"
    train(exp, ExperimentConfig.from_dict({**TINY, "epochs": 2}), FEATURES, train_dir)
    assert len(read_log(exp)) == 2
    train(exp, ExperimentConfig.from_dict({**TINY, "epochs": 1, "seed": 3}), FEATURES, train_dir)
    assert sorted(p.name for p in (exp / "models").iterdir()) == ["epoch_001.pt", "final.pt"]
    assert [r["epoch"] for r in read_log(exp)] == [1]
    assert ExperimentConfig.from_yaml(exp / "config.yaml").seed == 3


def test_no_resume_starts_afresh(tmp_path, train_dir):
    exp = tmp_path / "exp"
    train(exp, ExperimentConfig.from_dict({**TINY, "epochs": 1}), FEATURES, train_dir)
    train(exp, ExperimentConfig.from_dict({**TINY, "epochs": 1}), FEATURES, train_dir, resume=False)
    assert [r["epoch"] for r in read_log(exp)] == [1]


def test_train_too_little_data(tmp_path, train_dir):
    with pytest.raises(ValueError, match="too little data for one batch of 4096"):
        train(tmp_path / "exp", ExperimentConfig.from_dict({**TINY, "batch_size": 4096}), FEATURES, train_dir)


# --------------------------------------------------------------------------- sampler


@pytest.fixture(scope="module")
def store(train_dir) -> FeatureStore:
    return FeatureStore(str(train_dir / "feats.scp"), FEATURES, cmvn_scp=str(train_dir / "cmvn.scp"))


def make_sampler(store, train_dir, **options) -> ChunkSampler:
    utt2spk = DataDir(train_dir).utt2spk()
    speakers = sorted(set(utt2spk.values()))
    options = {"batch_size": 4, "chunk_frames": (100, 200), "seed": 0, **options}
    return ChunkSampler(store, {u: speakers.index(s) for u, s in utt2spk.items()}, **options)


def test_feature_store_applies_utterance_cmvn(store, train_dir):
    raw = kaldiio.load_scp(str(train_dir / "feats.scp"))
    key = store.keys[0]
    np.testing.assert_allclose(store[key], raw[key] - raw[key].mean(axis=0), atol=1e-4)
    assert store.num_frames(key) == len(raw[key])


def test_epoch_plan_is_deterministic(store, train_dir):
    sampler = make_sampler(store, train_dir)
    order, lengths = sampler.epoch_plan(1)
    order2, lengths2 = make_sampler(store, train_dir).epoch_plan(1)
    np.testing.assert_array_equal(order, order2)
    np.testing.assert_array_equal(lengths, lengths2)
    other_order, other_lengths = sampler.epoch_plan(2)
    assert not (np.array_equal(order, other_order) and np.array_equal(lengths, other_lengths))
    assert len(order) == sampler.num_batches() * 4 and len(lengths) == sampler.num_batches()
    assert ((lengths >= 100) & (lengths <= 200)).all()
    seeded = make_sampler(store, train_dir, seed=1).epoch_plan(1)
    assert not np.array_equal(order, seeded[0])


def test_batches_have_equal_length_chunks_of_their_utterances(store, train_dir):
    sampler = make_sampler(store, train_dir)
    order, planned = sampler.epoch_plan(3)
    batches = list(sampler.batches(3))
    assert len(batches) == sampler.num_batches() > 0
    capped = 0
    for b, batch in enumerate(batches):
        index = order[b * 4:(b + 1) * 4]
        length = batch.feats.shape[1]
        shortest = int(sampler.lengths[index].min())
        assert batch.feats.shape == (4, length, DIM)
        assert (batch.lengths == length).all()
        assert length == min(int(planned[b]), shortest)
        assert 100 <= length <= 200 or length == shortest
        capped += length < planned[b]
        np.testing.assert_array_equal(batch.labels.numpy(), sampler.labels[index])
        for chunk, utt_index in zip(batch.feats.numpy(), index):
            feats = store[sampler.utts[utt_index]]
            starts = [s for s in range(len(feats) - length + 1) if np.array_equal(feats[s:s + length], chunk)]
            assert starts, "a chunk is not a contiguous piece of its utterance"
    assert capped > 0  # utterances of 120-250 frames cap some chunks drawn from 100-200
    # the same epoch replays exactly; resuming mid-epoch gives the remaining batches
    again = list(sampler.batches(3, start_batch=2))
    for first, second in zip(batches[2:], again):
        assert torch.equal(first.feats, second.feats) and torch.equal(first.labels, second.labels)
    assert len(again) == len(batches) - 2


# --------------------------------------------------------------------------- egs


def test_prepare_training_dirs(tmp_path, styles):
    utts = corpus(4, 4, seed=2)
    utts["spk0-u0"] = ("spk0", 40)  # too short
    utts["spk1-u1"] = ("spk1", 30)  # too short
    for u in ("spk3-u1", "spk3-u2", "spk3-u3"):  # spk3 keeps one usable utterance: dropped
        utts[u] = ("spk3", 50)
    src = tmp_path / "src"
    write_feature_dir(src, utts, styles, seed=2)
    counts = prepare_training_dirs(src, tmp_path / "egs", min_frames=100, min_utts_per_speaker=2,
                                   valid_per_speaker=1, seed=0)
    assert counts == {"train": 7, "valid": 3, "valid_trials_utts": 0, "dropped_utts": 5, "dropped_speakers": 1}
    train_utts = DataDir(tmp_path / "egs/train").utt2spk()
    valid_utts = DataDir(tmp_path / "egs/valid").utt2spk()
    assert not set(train_utts) & set(valid_utts)
    assert sorted(valid_utts.values()) == ["spk0", "spk1", "spk2"]
    assert set(train_utts) | set(valid_utts) == {u for u, (s, n) in utts.items() if n >= 100 and s != "spk3"}
    for name in ("train", "valid"):
        summary = validate_data_dir(tmp_path / "egs" / name, need_feats=True, need_cmvn=True)
        assert summary.num_speakers == 3
    # the same seed gives the same split
    prepare_training_dirs(src, tmp_path / "egs2", min_frames=100, seed=0)
    assert DataDir(tmp_path / "egs2/valid").utt2spk() == valid_utts


def test_prepare_training_dirs_holds_out_all_copies_of_a_recording(tmp_path, styles):
    """With utt2uniq (offline augmentation, speed perturbation), no copy of a validation recording trains."""
    utts, uniq = {}, {}
    for s in range(3):
        for u in range(3):
            clean = f"spk{s}-u{u}"
            utts[clean] = (f"spk{s}", 150)
            uniq[clean] = clean
            for kind in ("music", "noise", "reverb"):
                utts[f"{clean}-{kind}"] = (f"spk{s}", 150)
                uniq[f"{clean}-{kind}"] = clean
            if s == 0:  # speed-perturbed copies are other speakers
                utts[f"sp0.9-{clean}"] = ("sp0.9-spk0", 160)
                uniq[f"sp0.9-{clean}"] = clean
    src = tmp_path / "src"
    write_feature_dir(src, utts, {**styles, "sp0.9-spk0": styles["spk0"]}, seed=5)
    write_kv(src / "utt2uniq", uniq)
    validate_data_dir(src, need_feats=True, need_cmvn=True)
    counts = prepare_training_dirs(src, tmp_path / "egs", min_frames=100, valid_per_speaker=1, seed=0)
    valid = DataDir(tmp_path / "egs/valid").utt2spk()
    train_utts = set(DataDir(tmp_path / "egs/train").utt2spk())
    assert len(valid) == counts["valid"] == 4  # one recording per speaker, sp0.9-spk0 included
    sources = {uniq.get(u, u) for u in valid}
    held = [u for u in valid if not u.startswith("sp0.9-")]
    assert all(u == uniq.get(u, u) for u in held), "the clean original validates"
    assert not {u for u in train_utts if uniq.get(u, u) in sources}, "a copy of a validation recording trains"
    # everything else trains: 3 speakers x 3 recordings x 4 versions + 3 speed copies, minus the held-out sources
    kept = {u for u in utts if uniq.get(u, u) not in sources}
    assert train_utts == kept
    assert (tmp_path / "egs/train/utt2uniq").is_file()
    validate_data_dir(tmp_path / "egs/train", need_feats=True, need_cmvn=True)


def test_prepare_training_dirs_errors(tmp_path, styles):
    src = tmp_path / "src"
    write_feature_dir(src, corpus(2, 2, seed=3), styles, seed=3)
    with pytest.raises(ValueError, match="lower --min-frames"):
        prepare_training_dirs(src, tmp_path / "egs", min_frames=10_000)
    (src / "utt2num_frames").unlink()
    with pytest.raises(ValueError, match="utt2num_frames is missing"):
        prepare_training_dirs(src, tmp_path / "egs", min_frames=10)


# --------------------------------------------------------------------------- embeddings, identification


@pytest.fixture(scope="module")
def ident_dir(tmp_path_factory, styles) -> Path:
    path = tmp_path_factory.mktemp("data") / "ident"
    write_feature_dir(path, corpus(6, 2, seed=4, prefix="t", frames=(60, 300)), styles, seed=4)
    return path


@pytest.fixture(scope="module")
def ident_embeddings(tmp_path_factory, trained, ident_dir) -> Path:
    out = tmp_path_factory.mktemp("emb") / "ident"
    assert extract_embeddings(trained, ident_dir, out) == {"utterances": 12, "speakers": 6}
    return out


def test_embeddings_files(ident_embeddings, ident_dir):
    ids, matrix = load_embeddings(ident_embeddings / "xvector.scp")
    assert ids == sorted(DataDir(ident_dir).utt2spk())
    assert matrix.shape == (12, 8) and np.isfinite(matrix).all()
    speakers, means = load_embeddings(ident_embeddings / "spk_xvector.scp")
    assert speakers == [f"spk{s}" for s in range(6)]
    expected = speaker_means(dict(zip(ids, matrix)), DataDir(ident_dir).utt2spk())
    for speaker, row in zip(speakers, means):
        np.testing.assert_allclose(row, expected[speaker], atol=1e-6)
    assert not list(ident_embeddings.glob("*.tmp*"))


def test_embedding_does_not_depend_on_batching(trained, ident_dir, ident_embeddings):
    loaded = load_trained(trained)
    model, store = loaded.embedder, feature_store_for(loaded, ident_dir)
    ids, matrix = load_embeddings(ident_embeddings / "xvector.scp")
    assert len({store.num_frames(u) for u in ids}) > 1  # lengths differ: the batch was padded
    with torch.no_grad():
        for utt, row in zip(ids, matrix):
            feats = torch.from_numpy(store[utt])[None]
            alone = model.embed(feats, torch.tensor([feats.shape[1]])).numpy()[0]
            np.testing.assert_allclose(row, alone, atol=1e-5, err_msg=utt)


def test_embed_without_final_model(tmp_path, trained, ident_dir):
    exp = tmp_path / "exp"
    exp.mkdir()
    shutil.copy(trained / "config.yaml", exp / "config.yaml")
    with pytest.raises(TrainedModelError, match="train the model first"):
        extract_embeddings(exp, ident_dir, tmp_path / "out")


def test_identification_results(tmp_path, trained, ident_dir, ident_embeddings):
    results_json = tmp_path / "results" / "ident.json"
    results_json.parent.mkdir()
    results = evaluate_identification(trained, ident_embeddings / "xvector.scp", ident_dir, results_json)
    saved = json.loads(results_json.read_text())
    for key in ("kind", "num_speakers", "num_test", "top1", "top5", "confusion"):
        assert key in saved, key
    assert saved["kind"] == "identification"
    assert saved["num_speakers"] == 6 and saved["num_test"] == 12
    assert 0 <= saved["top1"] <= saved["top5"] <= 100
    assert saved["top1"] == results["top1"]
    confusion = Path(saved["confusion"])
    assert confusion.is_file()
    rows = confusion.read_text().splitlines()
    assert rows[0].split(",")[1:] == [f"spk{s}" for s in range(6)]
    assert sum(int(x) for row in rows[1:] for x in row.split(",")[1:]) == 12


def test_identification_unknown_speaker(tmp_path, trained, styles):
    styles = {**styles, "zzz": styles["spk0"]}
    utts = {"spk0-a": ("spk0", 150), "zzz-a": ("zzz", 150)}
    data = tmp_path / "open"
    write_feature_dir(data, utts, styles)
    extract_embeddings(trained, data, tmp_path / "emb")
    with pytest.raises(ValueError, match="not seen in training.*zzz"):
        evaluate_identification(trained, tmp_path / "emb/xvector.scp", data, tmp_path / "r.json")
