"""Typed configs (spk.configs): every shipped config loads; wrong types and duplicate keys name the file and key."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from spk.configs import DuplicateKeyError, load_yaml
from spk.experiment import ConfigError, ExperimentConfig
from spk.features import FeatureConfig, FeatureConfigError

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted({path.resolve() for path in [*ROOT.glob("conf/*.yaml"), *ROOT.glob("recipes/*/conf/*.yaml")]})
FEATURE_KEYS = {f.name for f in fields(FeatureConfig)}
EXP, FEAT = (ExperimentConfig, ConfigError), (FeatureConfig, FeatureConfigError)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_shipped_config_loads(path):
    keys = set(yaml.safe_load(path.read_text()) or {})
    if keys <= FEATURE_KEYS:
        FeatureConfig.from_yaml(path)
    else:
        config = ExperimentConfig.from_yaml(path)
        config.phases()
        config.augmentation()


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "my.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("config, error_type, text, message", [
    (*EXP, "epochs: 12.5\n", "epochs: expected a whole number, got 12.5"),
    (*EXP, "epochs: 12.0\n", "epochs: expected a whole number, got 12.0"),
    (*EXP, 'on_the_fly_features: "no"\n',
     "on_the_fly_features: expected true or false, got 'no' (a quoted string: write it without quotes"),
    (*EXP, 'preload: "no"\n', "preload: true, false or auto, got 'no'"),
    (*EXP, "preload: 1\n", "preload: expected"),
    (*EXP, "precision: fp8\n", "precision: unknown 'fp8'; choose one of fp32, bf16, fp16"),
    (*EXP, "num_workers: -1\n", "num_workers: a whole number >= 0"),
    (*EXP, 'batch_size: "64"\n', "batch_size: expected a whole number, got '64'"),
    (*EXP, "grad_clip: five\n", "grad_clip: expected a number, got 'five'"),
    (*EXP, "epochs: true\n", "epochs: expected a whole number, got True"),
    (*EXP, "encoder: 3\n", "encoder: expected a string, got 3"),
    (*EXP, "chunk_frames: [150.5, 300]\n", "chunk_frames: expected a list of 2 whole numbers, got [150.5"),
    (*EXP, "segment_layers: 256\n", "segment_layers: expected a list of whole numbers, got 256"),
    (*EXP, "encoder_conf: [256, 2]\n", "encoder_conf: expected a mapping of key: value, got [256, 2]"),
    (*EXP, "finetune: {epochs: 2.5}\n", "finetune.epochs: expected a whole number, got 2.5"),
    (*EXP, "optimizer_conf: {lr: 1e-3}\n", "optimizer_conf.lr: '1e-3' is a string, not a number"),
    (*EXP, "augment: {spec_augment: {time_masks: 1.5}}\n", "augment.spec_augment.time_masks: expected a whole"),
    (*EXP, 'augment: {noise: {data: d, snr: [0, "15"]}}\n', "augment.noise.snr: expected [low, high]"),
    (*EXP, "augment: {babble: {data: d, snr: [0, 5], speakers: [3.0, 7]}}\n", "augment.babble.speakers: expected"),
    (*FEAT, 'vad: "no"\n', "vad: expected true or false, got 'no'"),
    (*FEAT, "num_mel_bins: 80.5\n", "num_mel_bins: expected a whole number, got 80.5"),
    (*FEAT, "frame_shift_ms: ten\n", "frame_shift_ms: expected a number, got 'ten'"),
])
def test_value_of_the_wrong_type_names_file_and_key(tmp_path, config, error_type, text, message):
    path = write(tmp_path, text)
    with pytest.raises(error_type) as error:
        config.from_yaml(path)
    assert str(error.value).startswith(f"{path}: ")
    assert message in str(error.value)


def test_whole_numbers_are_valid_floats_and_keep_their_value(tmp_path):
    config = ExperimentConfig.from_yaml(write(tmp_path, "warmup_epochs: 1\ngrad_clip: 5\npreload: no\n"))
    assert config.warmup_epochs == 1 and config.grad_clip == 5 and config.preload is False
    features = FeatureConfig.from_yaml(write(tmp_path, "frame_length_ms: 25\n"))
    assert features.frame_length_ms == 25 and features.to_dict()["frame_length_ms"] == 25  # feats.conf text unchanged


@pytest.mark.parametrize("config, error_type", [EXP, FEAT])
def test_duplicate_key_names_file_line_and_key(tmp_path, config, error_type):
    path = write(tmp_path, "# comment\nseed: 1\ndither: 0.0\nseed: 2\n")
    with pytest.raises(error_type) as error:
        config.from_yaml(path)
    assert str(error.value).startswith(f"{path}, line 4: duplicate key 'seed' (first set on line 2)")


def test_duplicate_key_in_a_nested_mapping_is_an_error(tmp_path):
    path = write(tmp_path, "encoder_conf:\n  hidden_size: 128\n  num_layers: 2\n  hidden_size: 256\n")
    with pytest.raises(ConfigError, match=r"line 4: duplicate key 'hidden_size' \(first set on line 2\)"):
        ExperimentConfig.from_yaml(path)


def test_merge_keys_are_not_duplicates():
    assert load_yaml("base: &b {a: 1, b: 2}\nuse: {<<: *b, b: 3}\n")["use"] == {"a": 1, "b": 3}
    with pytest.raises(DuplicateKeyError):
        load_yaml("{a: 1, a: 2}")


def test_invalid_yaml_names_the_file(tmp_path):
    path = write(tmp_path, "epochs: [8\n")
    with pytest.raises(ConfigError, match=f"{path}: not valid YAML"):
        ExperimentConfig.from_yaml(path)


@pytest.mark.parametrize("override, message", [
    ("epochs=12.5", "epochs: expected a whole number, got 12.5"),
    ("preload='no'", "preload: true, false or auto, got 'no'"),
    ("finetune.epochs=x", "finetune.epochs: expected a whole number, got 'x'"),
    ("loss_conf={margin: 1, margin: 2}", "duplicate key 'margin'"),
])
def test_overrides_are_checked_like_the_file(tmp_path, override, message):
    path = write(tmp_path, "epochs: 8\n")
    with pytest.raises(ConfigError) as error:
        ExperimentConfig.from_yaml(path, [override])
    assert message in str(error.value)
    assert str(path) in str(error.value) or override in str(error.value)


def test_spk_train_reports_a_bad_config_before_any_work(tmp_path):
    from spk.cli import main

    config = write(tmp_path, "epochs: 12.5\n")
    (tmp_path / "train").mkdir()
    result = CliRunner().invoke(main, ["train", "--config", str(config), "--train-dir", str(tmp_path / "train"),
                                       "--exp-dir", str(tmp_path / "exp")])
    assert result.exit_code == 1
    assert f"Error: {config}: epochs: expected a whole number, got 12.5" in result.output
    assert not (tmp_path / "exp").exists()
