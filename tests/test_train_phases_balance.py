"""Two-phase training (softmax pre-training, then triplet fine-tuning, in one config) and
the answers to imbalanced speakers: class weights and speaker-balanced oversampling."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from spk.losses import LOSSES
from spk.experiment import ConfigError, ExperimentConfig
from spk.train.dataset import ChunkSampler
from spk.feature_store import FeatureStore
from spk.train.trainer import make_sampler, set_class_weights, train
from spk.model_dir import load_trained
from tests.test_trainer import FEATURES, TINY, corpus, speaker_styles, write_feature_dir

FINETUNE = {"loss": "triplet", "loss_conf": {"mining": "batch_hard"}, "epochs": 1,
            "speakers_per_batch": 3, "utts_per_speaker": 2, "optimizer_conf": {"lr": 0.001}}


@pytest.fixture(scope="module")
def train_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("phases") / "train"
    write_feature_dir(path, corpus(6, 5, seed=1), speaker_styles(6), seed=1)
    return path


@pytest.fixture(scope="module")
def imbalanced_store(tmp_path_factory):
    """spk0 has 20 utterances, the other three speakers 2 each."""
    path = tmp_path_factory.mktemp("imbalanced") / "train"
    utterances = {**corpus(1, 20, seed=4), **{k: v for k, v in corpus(4, 2, seed=5).items()
                                               if not k.startswith("spk0-")}}
    write_feature_dir(path, utterances, speaker_styles(4), seed=4)
    store = FeatureStore(str(path / "feats.scp"), FEATURES, cmvn_scp=str(path / "cmvn.scp"))
    return store, {u: int(u.split("-")[0][3:]) for u in store.keys}


# ------------------------------------------------------------------- two phases


def test_phases_of_a_two_phase_config():
    config = ExperimentConfig.from_dict({**TINY, "finetune": FINETUNE})
    first, second = config.phases()
    assert first.loss == "softmax" and first.epochs == 2 and first.finetune == {}
    assert second.loss == "triplet" and second.epochs == 1 and second.optimizer_conf == {"lr": 0.001}
    assert second.encoder_conf == first.encoder_conf  # one network for both phases
    assert ExperimentConfig.from_dict(dict(TINY)).phases() == [ExperimentConfig.from_dict(dict(TINY))]


@pytest.mark.parametrize("finetune, message", [
    ({"los": "triplet"}, "finetune: unknown key(s) los"),
    ({"embedding_dim": 16}, "embedding_dim cannot change between phases"),
    ({"epochs": 0}, "epochs: must be positive"),
    ({"speaker_balance": "upsample"}, "speaker_balance: unknown 'upsample'"),
    ({"epochs": 2.5}, "finetune.epochs: expected a whole number, got 2.5"),
])
def test_bad_finetune_phase_is_named_before_training(finetune, message):
    with pytest.raises(ConfigError, match="finetune"):
        ExperimentConfig.from_dict({**TINY, "finetune": finetune})
    with pytest.raises(ConfigError) as error:
        ExperimentConfig.from_dict({**TINY, "finetune": finetune})
    assert message in str(error.value)


def test_softmax_then_triplet(tmp_path, train_dir):
    exp = tmp_path / "two_phase"
    train(exp, ExperimentConfig.from_dict({**TINY, "finetune": FINETUNE}), FEATURES, train_dir)
    pretrained = torch.load(exp / "pretrain/models/final.pt", weights_only=True)["model"]
    assert any(key.startswith("head.") for key in pretrained)  # phase 1 trained a softmax head
    assert [json.loads(line)["epoch"] for line in open(exp / "pretrain/train_log.jsonl")] == [1, 2]
    assert [json.loads(line)["epoch"] for line in open(exp / "train_log.jsonl")] == [1]

    loaded = load_trained(exp)
    model, config, speakers = loaded.embedder, loaded.config, loaded.speakers
    assert model.head is None and config.finetune == FINETUNE and len(speakers) == 6
    final = model.state_dict()
    # The fine-tuning phase started from the pre-trained encoder and changed it.
    key = "encoder.rnn.weight_ih_l0"
    assert key in final and key in pretrained
    assert not torch.equal(final[key], pretrained[key])
    assert torch.norm(final[key] - pretrained[key]) < 0.5 * torch.norm(pretrained[key])  # not a fresh init

    # Changing only the fine-tuning options keeps the finished pre-training phase.
    pretrain_log = (exp / "pretrain/train_log.jsonl").read_text()
    other = ExperimentConfig.from_dict({**TINY, "finetune": {**FINETUNE, "optimizer_conf": {"lr": 0.002}}})
    shutil.copytree(exp, tmp_path / "copy")
    train(tmp_path / "copy", other, FEATURES, train_dir)
    # (a retrained phase would log other epoch timings)
    assert (tmp_path / "copy/pretrain/train_log.jsonl").read_text() == pretrain_log
    assert (tmp_path / "copy/train_log.jsonl").read_text() != (exp / "train_log.jsonl").read_text()
    assert [json.loads(line)["epoch"] for line in open(tmp_path / "copy/train_log.jsonl")] == [1]

    # Rerunning the same command finds both phases finished and changes nothing.
    train(exp, ExperimentConfig.from_dict({**TINY, "finetune": FINETUNE}), FEATURES, train_dir)
    assert torch.equal(torch.load(exp / "models/final.pt", weights_only=True)["model"][key], final[key])


# ------------------------------------------------------------------- imbalance


def test_oversampling_gives_each_speaker_an_equal_share(imbalanced_store):
    store, utt2label = imbalanced_store
    plain = ChunkSampler(store, utt2label, batch_size=4, chunk_frames=(50, 80), seed=0)
    balanced = ChunkSampler(store, utt2label, batch_size=4, chunk_frames=(50, 80), seed=0, oversample=True)
    assert balanced.num_batches() == plain.num_batches()  # same epoch length

    def shares(sampler):
        counts = np.zeros(4)
        for epoch in range(1, 31):
            order, _ = sampler.epoch_plan(epoch)
            counts += np.bincount(sampler.labels[order], minlength=4)
        return counts / counts.sum()

    assert shares(plain)[0] > 0.6  # spk0 dominates without balancing
    np.testing.assert_allclose(shares(balanced), 0.25, atol=0.04)
    assert np.isclose(balanced.balanced_probabilities().sum(), 1.0)
    first, again = balanced.epoch_plan(3), balanced.epoch_plan(3)
    assert np.array_equal(first[0], again[0])  # still replayable after a restart


def test_class_weights_are_inverse_to_each_speakers_chunks(imbalanced_store):
    store, utt2label = imbalanced_store
    config = ExperimentConfig.from_dict({**TINY, "speaker_balance": "class_weights"})
    loss_fn = LOSSES.build("softmax", {})
    sampler = make_sampler(config, store, utt2label, "logits")
    set_class_weights(loss_fn, config, sampler, 4)
    chunks = np.bincount(sampler.labels, weights=sampler.chunks_per_utt, minlength=4)
    weights = loss_fn.class_weights.numpy()
    np.testing.assert_allclose(weights * chunks, chunks.sum() / 4, rtol=1e-6)  # every speaker weighs the same
    assert weights[0] < weights[1]

    logits, labels = torch.randn(5, 4), torch.tensor([0, 1, 2, 3, 0])
    per_example = F.cross_entropy(logits, labels, reduction="none")
    w = torch.from_numpy(weights).float()[labels]
    assert torch.isclose(loss_fn(logits, labels), (w * per_example).sum() / w.sum())
    assert "class_weights" not in loss_fn.state_dict()  # recomputed from the data, not checkpointed


def test_class_weights_need_a_classification_loss(imbalanced_store):
    store, utt2label = imbalanced_store
    config = ExperimentConfig.from_dict({**TINY, "loss": "triplet", "speaker_balance": "class_weights",
                                         "speakers_per_batch": 2, "utts_per_speaker": 2})
    sampler = make_sampler(config, store, utt2label, "embeddings")
    with pytest.raises(ValueError, match="class_weights needs a classification loss"):
        set_class_weights(LOSSES.build("triplet", {}), config, sampler, 4)


@pytest.mark.parametrize("balance", ["class_weights", "oversample"])
def test_training_with_speaker_balance(tmp_path, train_dir, balance):
    exp = tmp_path / balance
    train(exp, ExperimentConfig.from_dict({**TINY, "speaker_balance": balance}), FEATURES, train_dir)
    assert (exp / "models/final.pt").exists()
    record = json.loads((exp / "train_log.jsonl").read_text().splitlines()[-1])
    assert np.isfinite(record["train_loss"])


# ------------------------------------------------------------------- overrides


def test_overrides_set_plain_and_nested_keys(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("epochs: 8\nloss_conf: {margin: 0.2}\n")
    config = ExperimentConfig.from_yaml(path, ["epochs=30", "loss_conf.margin=0.3", "chunk_frames=[150, 250]",
                                               "finetune.epochs=2", "finetune.loss=triplet"])
    assert config.epochs == 30 and config.loss_conf == {"margin": 0.3} and config.chunk_frames == (150, 250)
    assert config.phases()[1].epochs == 2
    assert path.read_text() == "epochs: 8\nloss_conf: {margin: 0.2}\n"  # the file is untouched


@pytest.mark.parametrize("override, message", [
    ("epochs", "expected KEY=VALUE"),
    ("epoch=3", "unknown key(s) epoch"),
    ("epochs.x=3", "epochs is not a mapping"),
    ("loss_conf={a: [", "not valid YAML"),
    ("epochs=12.5", "epochs: expected a whole number, got 12.5"),
])
def test_bad_override_is_named(tmp_path, override, message):
    path = tmp_path / "c.yaml"
    path.write_text("epochs: 8\n")
    with pytest.raises(ConfigError) as error:
        ExperimentConfig.from_yaml(path, [override])
    assert message in str(error.value) and override.split("=")[0] in str(error.value)
