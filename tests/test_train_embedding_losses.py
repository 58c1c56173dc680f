"""Training with embedding losses (triplet, contrastive, GE2E) on P x K batches, a margin head,
checkpoint averaging, and identification of a head-less model by cosine to speaker means."""

from __future__ import annotations


import numpy as np
import pytest
import torch

from spk.embed import extract_embeddings
from spk.identify import evaluate_identification
from spk.experiment import ExperimentConfig
from spk.train.dataset import SpeakerBalancedSampler
from spk.feature_store import FeatureStore
from spk.train.trainer import average_checkpoints, train
from spk.model_dir import load_trained
from tests.test_trainer import FEATURES, TINY, corpus, speaker_styles, write_feature_dir



@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("embedding_losses")
    styles = speaker_styles(6)
    write_feature_dir(root / "train", corpus(6, 5, seed=1), styles, seed=1)
    write_feature_dir(root / "ident", corpus(6, 2, seed=2, prefix="h"), styles, seed=2)
    return root


def pk_config(**overrides) -> ExperimentConfig:
    values = {**TINY, "speakers_per_batch": 3, "utts_per_speaker": 2, **overrides}
    return ExperimentConfig.from_dict(values)


@pytest.mark.parametrize("speakers_per_batch", [3, 4])  # 4 does not divide the 6 speakers
def test_speaker_balanced_batches(dirs, speakers_per_batch):
    store = FeatureStore(str(dirs / "train/feats.scp"), FEATURES, cmvn_scp=str(dirs / "train/cmvn.scp"))
    utt2label = {u: int(u.split("-")[0][3:]) for u in store.keys}
    sampler = SpeakerBalancedSampler(store, utt2label, speakers_per_batch=speakers_per_batch, utts_per_speaker=2,
                                     chunk_frames=(50, 80), seed=0)
    for epoch in (1, 2, 3):
        batches = list(sampler.batches(epoch))
        assert len(batches) == sampler.num_batches() > 0
        for batch in batches:
            labels = batch.labels.tolist()
            assert len(labels) == 2 * speakers_per_batch
            assert len(set(labels)) == speakers_per_batch and all(labels.count(l) == 2 for l in set(labels))
    first, again = sampler.epoch_plan(1), sampler.epoch_plan(1)
    assert np.array_equal(first[0], again[0])


@pytest.mark.parametrize("loss, loss_conf", [
    ("triplet", {"mining": "batch_hard"}),
    ("triplet", {"mining": "semi_hard", "distance": "cosine"}),
    ("contrastive", {}),
    ("ge2e", {"variant": "softmax"}),
    ("ge2e", {"variant": "contrast"}),
])
def test_embedding_loss_trains_without_a_head(tmp_path, dirs, loss, loss_conf):
    exp = tmp_path / loss
    train(exp, pk_config(loss=loss, loss_conf=loss_conf), FEATURES, dirs / "train")
    loaded = load_trained(exp)
    model, speakers = loaded.embedder, loaded.speakers
    assert model.head is None and len(speakers) == 6
    extract_embeddings(exp, dirs / "train", exp / "embeddings/train")
    extract_embeddings(exp, dirs / "ident", exp / "embeddings/ident")
    results = evaluate_identification(exp, exp / "embeddings/ident/xvector.scp", dirs / "ident",
                                      exp / "results/ident.json",
                                      speaker_embeddings_scp=exp / "embeddings/train/spk_xvector.scp")
    assert results["backend"] == "cosine_to_speaker_means" and results["num_test"] == 12
    assert np.isfinite(results["top1"])


def test_headless_identification_needs_speaker_embeddings(tmp_path, dirs):
    exp = tmp_path / "triplet"
    train(exp, pk_config(loss="triplet", epochs=1), FEATURES, dirs / "train")
    extract_embeddings(exp, dirs / "ident", exp / "embeddings/ident")
    with pytest.raises(ValueError, match="no classification head"):
        evaluate_identification(exp, exp / "embeddings/ident/xvector.scp", dirs / "ident", tmp_path / "r.json")


def test_aam_head_and_checkpoint_averaging(tmp_path, dirs):
    exp = tmp_path / "aam"
    config = ExperimentConfig.from_dict({**TINY, "epochs": 3, "average_last": 2, "head": "aam_softmax",
                                         "head_conf": {"margin": 0.2, "scale": 30, "margin_warmup_epochs": 1}})
    train(exp, config, FEATURES, dirs / "train")
    final = torch.load(exp / "models/final.pt", weights_only=True)
    expected = average_checkpoints(exp / "models", 3, 2)
    two = [torch.load(exp / f"models/epoch_00{e}.pt", weights_only=True)["model"] for e in (2, 3)]
    key = "segment.weight"
    assert torch.allclose(expected[key], (two[0][key] + two[1][key]) / 2)
    assert all(torch.equal(final["model"][k], expected[k]) for k in expected)
    assert final["averaged"] == 2
