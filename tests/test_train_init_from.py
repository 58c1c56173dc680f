"""Fine-tuning from another model (``init_from``, ``freeze_layers``, ``init_lr_scale``) on the tiny
synthetic feature corpora of test_trainer: which tensors start from the source, which stay frozen,
which key mismatches are refused, and that a resumed run continues exactly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from spk.experiment import ConfigError, ExperimentConfig
from spk.features import FeatureConfig
from spk.package import write_package
from spk.train.init_from import InitFromError
from spk.train.trainer import train
from tests.test_trainer import DIM, FEATURES, TINY, corpus, speaker_styles, write_feature_dir

SOURCE = {**TINY, "encoder_conf": {"hidden_size": 16, "num_layers": 2, "input_layer": 12}, "epochs": 1}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Two training sets: 6 speakers (the source's) and 4 other ones."""
    root = tmp_path_factory.mktemp("data")
    styles = speaker_styles(10, seed=3)
    write_feature_dir(root / "six", corpus(6, 4, seed=1), styles, seed=1)
    others = {f"spk{s}": styles[f"spk{s + 6}"] for s in range(4)}  # the four are not the source's speakers
    write_feature_dir(root / "four", corpus(4, 5, seed=2, prefix="v"), others, seed=2)
    return root


@pytest.fixture(scope="module")
def source(tmp_path_factory, data) -> Path:
    exp = tmp_path_factory.mktemp("exp") / "source"
    train(exp, ExperimentConfig.from_dict(dict(SOURCE)), FEATURES, data / "six")
    return exp


def weights(exp: Path, name: str = "final.pt") -> dict[str, torch.Tensor]:
    return torch.load(exp / "models" / name, map_location="cpu", weights_only=True)["model"]


def parameters(exp: Path) -> dict[str, torch.Tensor]:
    """The trained tensors, without the head's batch-norm statistics (updated by every batch, even at lr 0)."""
    return {k: v for k, v in weights(exp).items() if "running_" not in k and "num_batches" not in k}


def config(**options) -> ExperimentConfig:
    return ExperimentConfig.from_dict({**SOURCE, **options})


def test_weights_start_as_the_source_and_a_head_of_another_size_is_fresh(tmp_path, data, source):
    # with a learning rate of 0 the final weights are the ones training started from
    tuned, scratch = tmp_path / "tuned", tmp_path / "scratch"
    train(tuned, config(init_from=str(source), optimizer_conf={"lr": 0.0}), FEATURES, data / "four")
    train(scratch, config(optimizer_conf={"lr": 0.0}), FEATURES, data / "four")
    start, before, fresh = parameters(tuned), parameters(source), parameters(scratch)
    assert before["head.output.weight"].shape[0] == 6 and start["head.output.weight"].shape[0] == 4
    for name, value in start.items():
        if name.startswith("head."):  # 4 speakers, not the source's 6: initialised as from scratch
            assert torch.equal(value, fresh[name]), name
        else:
            assert torch.equal(value, before[name]), name
            assert not torch.equal(value, fresh[name]), name
    assert ExperimentConfig.from_yaml(tuned / "config.yaml").init_from == str(source)


def test_a_package_with_the_same_speakers_gives_its_head_too(tmp_path, data, source):
    package = write_package(source, tmp_path / "package", onnx=False)
    tuned = tmp_path / "tuned"
    train(tuned, config(init_from=str(package), optimizer_conf={"lr": 0.0}), FEATURES, data / "six")
    start, before = parameters(tuned), parameters(source)
    assert start.keys() == before.keys()
    for name in before:
        assert torch.equal(start[name], before[name]), name


def test_frozen_layers_stay_bit_identical_and_initialised_ones_learn_slower(tmp_path, data, source):
    tuned = tmp_path / "tuned"
    train(tuned, config(init_from=str(source), freeze_layers=1, init_lr_scale=0.1, scheduler="none"),
          FEATURES, data / "four")
    after, before = weights(tuned), weights(source)
    frozen = [n for n in before if n.startswith("encoder.input_layer.") or n.endswith("_l0")]
    assert len(frozen) == 6  # input layer weight and bias, four tensors of the first LSTM layer
    for name in frozen:
        assert torch.equal(after[name], before[name]), name
    assert not torch.equal(after["encoder.rnn.weight_ih_l1"], before["encoder.rnn.weight_ih_l1"])
    # the optimiser: the fresh head at the full rate, the initialised, unfrozen tensors at a tenth of it
    groups = torch.load(tuned / "models" / "epoch_001.pt", weights_only=True)["optimizer"]["param_groups"]
    assert [g["lr"] for g in groups] == pytest.approx([0.01, 0.001])
    assert [len(g["params"]) for g in groups] == [4, 6]  # head (norm, output); layer 1 (4) + segment (2)


def test_differing_architecture_and_feature_keys_are_named_before_training(tmp_path, data, source):
    exp = tmp_path / "exp"
    wrong = config(init_from=str(source), encoder_conf={"hidden_size": 32, "num_layers": 2, "input_layer": 12},
                   embedding_activation="relu")
    with pytest.raises(InitFromError) as error:
        train(exp, wrong, FeatureConfig(kind="fbank", num_mel_bins=DIM, dither=1.0), data / "four")
    message = str(error.value)
    assert "encoder_conf: {'hidden_size': 32" in message and "{'hidden_size': 16" in message
    assert "embedding_activation: 'relu' here, 'none' in the source" in message
    assert "features.dither: 1.0 here, 0.0 in the source" in message
    assert "embedding_dim" not in message and "num_mel_bins" not in message
    assert not exp.exists()  # refused before any training work


def test_init_from_a_missing_model_or_freezing_without_it(tmp_path, data, source):
    with pytest.raises(InitFromError, match="init_from: model .*nowhere does not exist"):
        train(tmp_path / "a", config(init_from=str(tmp_path / "nowhere")), FEATURES, data / "four")
    with pytest.raises(ConfigError, match="freeze_layers and init_lr_scale .* no init_from"):
        train(tmp_path / "b", config(freeze_layers=1), FEATURES, data / "four")
    with pytest.raises(ConfigError, match="freeze_layers: 3, but the encoder has only 2 RNN layers"):
        train(tmp_path / "c", config(init_from=str(source), freeze_layers=3), FEATURES, data / "four")
    with pytest.raises(ConfigError, match="init_lr_scale: a number above 0"):
        config(init_lr_scale=0)


def test_resume_continues_exactly_without_reinitialising(tmp_path, data, source):
    def tuned_config():
        return config(init_from=str(source), freeze_layers=1, init_lr_scale=0.5, epochs=3)

    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train(straight, tuned_config(), FEATURES, data / "four")
    train(resumed, tuned_config(), FEATURES, data / "four")
    (resumed / "models" / "epoch_003.pt").unlink()  # as if killed during epoch 3
    (resumed / "models" / "final.pt").unlink()
    log = (resumed / "train_log.jsonl").read_text().splitlines()
    (resumed / "train_log.jsonl").write_text("\n".join(log[:2]) + "\n")
    train(resumed, tuned_config(), FEATURES, data / "four")
    records = [json.loads(line) for line in (resumed / "train_log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3]
    a, b = weights(straight), weights(resumed)
    for name in a:
        assert torch.equal(a[name], b[name]), name
    # a re-initialisation from the source would have undone epochs 1-2 of the unfrozen layers
    assert not torch.equal(b["encoder.rnn.weight_ih_l1"], weights(source)["encoder.rnn.weight_ih_l1"])
