"""Validation speakers with a trial list (stage 2), validation EER per epoch, best model, early stopping."""

from __future__ import annotations

import json

import pytest
import torch

from spk.data import DataDir, DataDirUsageError, validate_data_dir, validate_trials
from spk.experiment import ExperimentConfig
from spk.train.egs import prepare_training_dirs
from spk.train.trainer import train
from tests.test_trainer import FEATURES, TINY, corpus, speaker_styles, write_feature_dir


@pytest.fixture(scope="module")
def egs(tmp_path_factory):
    root = tmp_path_factory.mktemp("valid_eer")
    write_feature_dir(root / "all", corpus(8, 5, seed=5), speaker_styles(8), seed=5)
    counts = prepare_training_dirs(root / "all", root / "egs", min_frames=50, valid_per_speaker=1,
                                   valid_speakers=2, seed=0)
    return root / "egs", counts


def test_validation_speakers_leave_training(egs):
    egs_dir, counts = egs
    held = set(DataDir(egs_dir / "valid_trials").speaker_ids())
    assert len(held) == 2 and counts["valid_trials_utts"] == 10
    assert not held & set(DataDir(egs_dir / "train").speaker_ids())
    assert not held & set(DataDir(egs_dir / "valid").speaker_ids())
    validate_data_dir(egs_dir / "valid_trials", need_feats=True)
    utts = set(DataDir(egs_dir / "valid_trials").utt_ids())
    trials = validate_trials(egs_dir / "valid_trials" / "trials", utts, utts)
    assert sum(t.target for t in trials) == len(trials) / 2 == 2 * 10  # C(5,2) per speaker


def test_too_many_validation_speakers(tmp_path, egs):
    egs_dir, _ = egs
    with pytest.raises(DataDirUsageError, match="--valid-speakers"):
        prepare_training_dirs(egs_dir.parent / "all", tmp_path / "egs", min_frames=50, valid_speakers=7)


def test_validation_eer_logged_and_best_model_kept(tmp_path, egs):
    egs_dir, _ = egs
    exp = tmp_path / "exp"
    train(exp, ExperimentConfig.from_dict(dict(TINY)), FEATURES, egs_dir / "train", egs_dir / "valid",
          valid_trials_dir=egs_dir / "valid_trials")
    records = [json.loads(line) for line in (exp / "train_log.jsonl").read_text().splitlines()]
    assert all(0 <= r["valid_eer"] <= 100 for r in records)
    best_epoch = min(records, key=lambda r: (r["valid_eer"], r["epoch"]))["epoch"]
    best = torch.load(exp / "models/best.pt", weights_only=True)
    assert best["epoch"] == best_epoch


def test_early_stopping(tmp_path, egs):
    egs_dir, _ = egs
    exp = tmp_path / "exp"
    # lr 0: the model never changes, so the validation EER never improves after epoch 1
    config = ExperimentConfig.from_dict({**TINY, "epochs": 6, "early_stopping_patience": 2,
                                         "optimizer_conf": {"lr": 0.0}, "scheduler": "none"})
    train(exp, config, FEATURES, egs_dir / "train", valid_trials_dir=egs_dir / "valid_trials")
    records = [json.loads(line) for line in (exp / "train_log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert torch.load(exp / "models/final.pt", weights_only=True)["epoch"] == 3
