"""The whole mini recipe, stages 0-6, at tiny size, through its real run.sh (a real subprocess)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.product_model import run_recipe


@pytest.fixture(scope="module")
def recipe(product) -> Path:
    """The tiny mini recipe the product tests share: a copy of recipes/mini/run.sh with links to the
    shared path.sh, steps and conf and to its local/, run once through stages 0-6."""
    return product.recipe


@pytest.fixture(scope="module")
def first_run(product) -> subprocess.CompletedProcess:
    """That run of stages 0-6 (tests/product_model.py): the whole recipe at tiny size."""
    assert product.first_run.returncode == 0, product.first_run.stderr[-4000:]
    return product.first_run


def test_all_stages_write_the_design_files(recipe, first_run):
    for path in ["data/train/feats.scp", "data/test/trials", "data/ident_test/feats.scp",
                 "data/train_egs/train/utt2spk", "exp/tiny/config.yaml", "exp/tiny/models/final.pt",
                 "exp/tiny/embeddings/test/xvector.scp", "exp/tiny/embeddings/test/spk_xvector.scp",
                 "exp/tiny/RESULTS.md", "exp/RESULTS.md", "exp/baseline_mfcc_mean/RESULTS.md"]:
        assert (recipe / path).exists(), path
    verification = json.loads((recipe / "exp/tiny/results/test_cosine.json").read_text())
    for key in ("kind", "trials", "num_target", "num_nontarget", "eer", "min_dcf_0.01",
                "min_dcf_0.001", "roc_auc", "backend", "threshold_eer"):
        assert key in verification
    assert verification["num_target"] == verification["num_nontarget"] > 0
    assert 0 <= verification["eer"] <= 100
    identification = json.loads((recipe / "exp/tiny/results/ident_test_identification.json").read_text())
    assert identification["kind"] == "identification" and identification["num_speakers"] == 8
    assert Path(recipe / identification["confusion"]).exists()
    table = (recipe / "exp/RESULTS.md").read_text()
    assert "tiny" in table and "baseline_mfcc_mean" in table
    assert "| tiny |" in first_run.stdout  # the comparison table ends the run's output


def test_dev_set_calibrates_and_noisy_test_condition_is_scored(recipe, first_run):
    """The dev speakers' trials fit calibration.json; test_noisy (the same trials on reverberated,
    noisy audio) is scored and reported beside the clean test set."""
    calibration = json.loads((recipe / "exp/tiny/calibration.json").read_text())
    assert calibration["dev_trials"] == "data/dev/trials" and calibration["scoring"]["backend"] == "cosine"
    assert (recipe / "data/test_noisy/trials").read_text() == (recipe / "data/test/trials").read_text()
    noisy = json.loads((recipe / "exp/tiny/results/test_noisy_cosine.json").read_text())
    assert noisy["num_target"] == verification_targets(recipe) and "cllr" in noisy
    assert "| tiny | test_noisy_cosine |" in (recipe / "exp/RESULTS.md").read_text()


def verification_targets(recipe: Path) -> int:
    return json.loads((recipe / "exp/tiny/results/test_cosine.json").read_text())["num_target"]


def test_stage_2_offline_augmentation_and_speed_perturbation(recipe, first_run):
    """Kaldi-v2 style: speed-perturbed copies as new speakers, plus augmented copies, combined,
    with features, as the training examples of a model."""
    result = run_recipe(recipe, "--stage", "2", "--stop-stage", "3", "--speed-perturb", "true",
                        "--aug-offline", "reverb,noise", "--aug-sources", "data/aug_sources", "--aug-num", "40",
                        "--tag", "tiny_offline_aug", "--train-overrides", "epochs=1")
    assert result.returncode == 0, result.stderr[-4000:]
    assert "features merged from the combined dirs" in result.stdout + result.stderr  # not extracted twice
    train = recipe / "data/train_sp_combined_egs/train"
    speakers = set((train / "utt2spk").read_text().split()[1::2])
    assert {s for s in speakers if s.startswith("sp0.9-")} and {s for s in speakers if s.startswith("sp1.1-")}
    utts = (train / "utt2spk").read_text().split()[0::2]
    assert 0 < sum(u.endswith(("-reverb", "-noise")) for u in utts) <= 40
    assert (recipe / "exp/tiny_offline_aug/models/final.pt").exists()


def test_rerun_skips_finished_work(recipe, first_run):
    final = recipe / "exp/tiny/models/final.pt"
    before = final.stat().st_mtime_ns
    result = run_recipe(recipe, "--stage", "0", "--stop-stage", "3")
    assert result.returncode == 0, result.stderr[-4000:]
    assert "mini corpus already complete" in result.stderr
    assert "features are up to date; skipping" in result.stderr
    assert "already trained; skipping" in result.stderr
    assert final.stat().st_mtime_ns == before


def test_stage_3_alone_retrains(recipe, first_run):
    final = recipe / "exp/tiny/models/final.pt"
    before = final.stat().st_mtime_ns
    result = run_recipe(recipe, "--stage", "3", "--stop-stage", "3")
    assert result.returncode == 0, result.stderr[-4000:]
    assert final.stat().st_mtime_ns != before


def test_unknown_option_is_rejected(recipe):
    result = run_recipe(recipe, "--no-such-option", "1")
    assert result.returncode != 0
    assert "unknown option --no-such-option" in result.stderr


def test_rescoring_with_score_normalisation_and_calibration(recipe, first_run):
    """Stages 4-6 again with chunked embeddings, centering, AS-norm and a calibration (fitted here on
    the test trials themselves, which only a test may do): the normalised, calibrated system joins the table."""
    result = run_recipe(recipe, "--stage", "4", "--stop-stage", "6", "--baseline", "false", "--center", "true",
                        "--score-norm", "asnorm", "--top-n", "4", "--calib-set", "test",
                        "--embed-chunk", "1.5", "--embed-overlap", "0.5")
    assert result.returncode == 0, result.stderr[-4000:]
    assert (recipe / "exp/tiny/calibration.json").exists()
    raw = json.loads((recipe / "exp/tiny/results/test_cosine.json").read_text())
    normalised = json.loads((recipe / "exp/tiny/results/test_cosine_asnorm.json").read_text())
    assert raw["score_norm"] == "none" and raw["center_scp"].endswith("embeddings/train/xvector.scp")
    assert normalised["score_norm"] == "asnorm" and normalised["top_n"] == 4
    assert {"cllr", "cllr_uncalibrated", "act_dcf_0.01"} <= set(normalised)
    assert "| tiny | test_cosine_asnorm |" in (recipe / "exp/RESULTS.md").read_text()
