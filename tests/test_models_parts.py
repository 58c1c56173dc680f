"""Tests for the model parts: encoder options, last / attentive pooling, segment layers, margin heads."""

import math

import pytest
import torch

from spk.models import ENCODERS, HEADS, POOLING, build_embedder
from spk.models.registry import RegistryError
from tests.test_models import assert_padding_changes_nothing
from tests.test_models import batch as padded_batch

FEAT_DIM = 6
ENCODER_OPTIONS = [
    {"bidirectional": False},
    {"bidirectional": True},
    {"bidirectional": False, "proj_size": 3},
    {"bidirectional": True, "proj_size": 3},
    {"bidirectional": True, "input_layer": 5},
]
POOLINGS = {"mean": 1, "stats": 2, "last": 1, "attentive_stats": 2}



def batch(lengths, dim=FEAT_DIM, seed=0):
    """A padded batch of FEAT_DIM-dim frames (zeros beyond each length) and its lengths."""
    return padded_batch(lengths, dim, seed)


def model_config(encoder, pooling, encoder_conf, **extra):
    return {"encoder": encoder, "encoder_conf": {"hidden_size": 4, "num_layers": 2, **encoder_conf},
            "pooling": pooling, "pooling_conf": {"attention_dim": 8} if pooling == "attentive_stats" else {},
            "embedding_dim": 3, **extra}


def combinations():
    for encoder in ["lstm", "gru"]:
        for options in ENCODER_OPTIONS:
            if encoder == "gru" and "proj_size" in options:
                continue
            for pooling in POOLINGS:
                yield encoder, options, pooling


COMBINATIONS = list(combinations())
IDS = [f"{e}-{'-'.join(f'{k}={v}' for k, v in o.items())}-{p}" for e, o, p in COMBINATIONS]


# --- encoders ------------------------------------------------------------------------------


@pytest.mark.parametrize("options", ENCODER_OPTIONS, ids=str)
def test_encoder_options_output_dim(options):
    if "proj_size" in options:
        names = ["lstm"]
    else:
        names = ["lstm", "gru"]
    for name in names:
        encoder = ENCODERS.build(name, {"hidden_size": 4, **options}, input_dim=FEAT_DIM)
        width = options.get("proj_size", 4) * (2 if options["bidirectional"] else 1)
        assert encoder.output_dim == width
        feats, lengths = batch([5, 2])
        out = encoder(feats, lengths)
        assert out.shape == (2, 5, width)
        assert torch.all(out[1, 2:] == 0)


def test_lstm_projection_and_input_layer_are_built():
    encoder = ENCODERS.build("lstm", {"hidden_size": 4, "proj_size": 2, "input_layer": 5}, input_dim=FEAT_DIM)
    assert encoder.rnn.proj_size == 2 and encoder.rnn.input_size == 5
    assert encoder.input_layer[0].in_features == FEAT_DIM and encoder.input_layer[0].out_features == 5
    assert ENCODERS.build("lstm", {"hidden_size": 4}, input_dim=FEAT_DIM).input_layer is None


def test_gru_rejects_proj_size():
    with pytest.raises(ValueError, match="proj_size.*LSTM"):
        ENCODERS.build("gru", {"hidden_size": 4, "proj_size": 2}, input_dim=FEAT_DIM)
    assert ENCODERS.build("gru", {"hidden_size": 4, "proj_size": 0}, input_dim=FEAT_DIM).output_dim == 4


# --- whole embedder: shapes and padding invariance -----------------------------------------


@pytest.mark.parametrize("encoder, options, pooling", COMBINATIONS, ids=IDS)
def test_embedding_shape_every_combination(encoder, options, pooling):
    torch.manual_seed(0)
    model = build_embedder(model_config(encoder, pooling, options), FEAT_DIM, None)
    assert model.pooling.output_dim == model.encoder.output_dim * POOLINGS[pooling]
    feats, lengths = batch([6, 3])
    assert model(feats, lengths).shape == (2, 3)


@pytest.mark.parametrize("pooling", list(POOLINGS))
@pytest.mark.parametrize("options", ENCODER_OPTIONS, ids=str)
def test_embedding_does_not_depend_on_padding(pooling, options):
    torch.manual_seed(0)
    model = build_embedder(model_config("lstm", pooling, options, segment_layers=[7]), FEAT_DIM, None).eval()
    assert_padding_changes_nothing(model, *batch([9, 4, 6], seed=1))


# --- pooling --------------------------------------------------------------------------------


def test_last_pooling_values():
    frames = torch.arange(2 * 4 * 4, dtype=torch.float32).view(2, 4, 4)
    lengths = torch.tensor([4, 2])
    uni = POOLING.build("last", input_dim=4)(frames, lengths)
    torch.testing.assert_close(uni, torch.stack([frames[0, 3], frames[1, 1]]))
    bi = POOLING.build("last", {"num_directions": 2}, input_dim=4)(frames, lengths)
    # forward half at the last real frame, backward half at frame 0
    torch.testing.assert_close(bi[1], torch.cat([frames[1, 1, :2], frames[1, 0, 2:]]))
    torch.testing.assert_close(bi[0], torch.cat([frames[0, 3, :2], frames[0, 0, 2:]]))


def test_last_pooling_of_bidirectional_lstm_is_final_state():
    """Pooling equals the LSTM's h_n of both directions (what build_embedder wires up)."""
    torch.manual_seed(0)
    model = build_embedder(model_config("lstm", "last", {"bidirectional": True, "num_layers": 1}), FEAT_DIM, None)
    assert model.pooling.num_directions == 2
    feats, lengths = batch([5, 3])
    with torch.no_grad():
        pooled = model.pooling(model.encoder(feats, lengths), lengths)
        packed = torch.nn.utils.rnn.pack_padded_sequence(feats, lengths, batch_first=True, enforce_sorted=False)
        _, (h_n, _) = model.encoder.rnn(packed)
    torch.testing.assert_close(pooled, torch.cat([h_n[0], h_n[1]], dim=-1))


def test_num_directions_comes_from_the_encoder_not_the_config():
    with pytest.raises(RegistryError, match="num_directions"):
        build_embedder(model_config("lstm", "last", {}, pooling_conf={"num_directions": 2}), FEAT_DIM, None)


def test_attentive_weights_sum_to_one_and_skip_padding():
    torch.manual_seed(0)
    pooling = POOLING.build("attentive_stats", {"attention_dim": 5}, input_dim=3)
    frames = torch.randn(3, 7, 3)
    frames[1, 4:] = 100.0
    lengths = torch.tensor([7, 4, 1])
    weights = pooling.attention_weights(frames, lengths)
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(3))
    assert torch.all(weights[1, 4:] == 0) and torch.all(weights[2, 1:] == 0)
    assert torch.all(weights[0] > 0)
    out = pooling(frames, lengths)
    assert out.shape == (3, 6)
    w = weights[1, :4, None]
    mean = (w * frames[1, :4]).sum(0)
    torch.testing.assert_close(out[1, :3], mean)
    torch.testing.assert_close(out[1, 3:], ((w * (frames[1, :4] - mean) ** 2).sum(0)).sqrt())


# --- segment layers -------------------------------------------------------------------------


def test_segment_layers():
    torch.manual_seed(0)
    model = build_embedder(model_config("gru", "stats", {}, segment_layers=[7, 5]), FEAT_DIM, None)
    assert [block[0].out_features for block in model.segment_layers] == [7, 5]
    assert isinstance(model.segment_layers[0][2], torch.nn.BatchNorm1d)
    assert model.segment.in_features == 5 and model.segment.out_features == 3
    feats, lengths = batch([6, 3, 4])
    embeddings = model(feats, lengths)
    assert embeddings.shape == (3, 3)
    assert (embeddings < 0).any()  # the affine output, before any non-linearity
    plain = build_embedder(model_config("gru", "stats", {}), FEAT_DIM, None)
    assert len(plain.segment_layers) == 0 and plain.segment.in_features == 8
    with pytest.raises(ValueError, match="segment_layers"):
        build_embedder(model_config("gru", "stats", {}, segment_layers=[0]), FEAT_DIM, None)


# --- heads ----------------------------------------------------------------------------------


def two_class_head(name, **conf):
    """A head with class weights along the axes, and an embedding at 60 degrees from class 0."""
    head = HEADS.build(name, {"margin": 0.2, "scale": 30.0, **conf}, embedding_dim=2, num_classes=2)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[2.0, 0.0], [0.0, 3.0]]))  # norms must not matter
    theta = math.pi / 3
    embeddings = 4.0 * torch.tensor([[math.cos(theta), math.sin(theta)]])
    return head, embeddings, theta


def test_am_softmax_logits_by_hand():
    head, x, theta = two_class_head("am_softmax")
    s, m = 30.0, 0.2
    logits = head(x, torch.tensor([0]))
    torch.testing.assert_close(logits, torch.tensor([[s * (math.cos(theta) - m), s * math.sin(theta)]]))
    logits = head(x, torch.tensor([1]))
    torch.testing.assert_close(logits, torch.tensor([[s * math.cos(theta), s * (math.sin(theta) - m)]]))


def test_aam_softmax_logits_by_hand():
    head, x, theta = two_class_head("aam_softmax")
    s, m = 30.0, 0.2
    logits = head(x, torch.tensor([0]))
    torch.testing.assert_close(logits, torch.tensor([[s * math.cos(theta + m), s * math.cos(math.pi / 2 - theta)]]))


@pytest.mark.parametrize("name", ["am_softmax", "aam_softmax"])
def test_no_margin_without_labels(name):
    head, x, theta = two_class_head(name)
    torch.testing.assert_close(head(x), torch.tensor([[30 * math.cos(theta), 30 * math.sin(theta)]]))


@pytest.mark.parametrize("name", ["am_softmax", "aam_softmax"])
def test_margin_warmup(name):
    head, x, theta = two_class_head(name, margin_warmup_epochs=4)
    assert head.current_margin == 0.0
    head.set_epoch(2.0)
    assert head.current_margin == pytest.approx(0.1)
    expected = math.cos(theta) - 0.1 if name == "am_softmax" else math.cos(theta + 0.1)
    assert head(x, torch.tensor([0]))[0, 0].item() == pytest.approx(30 * expected, abs=1e-4)
    head.set_epoch(10.0)
    assert head.current_margin == pytest.approx(0.2)


def test_aam_target_logit_is_monotonic_past_pi():
    head = HEADS.build("aam_softmax", {"margin": 0.5}, embedding_dim=2, num_classes=2)
    cosines = torch.cos(torch.linspace(0, math.pi, 200))
    target = head.target_logit(cosines)
    assert torch.all(target[1:] <= target[:-1])
    assert torch.all(target <= cosines + 1e-6)
    easy = HEADS.build("aam_softmax", {"margin": 0.5, "easy_margin": True}, embedding_dim=2, num_classes=2)
    torch.testing.assert_close(easy.target_logit(torch.tensor([-0.5])), torch.tensor([-0.5]))


def test_heads_through_the_embedder():
    for name in ["linear", "am_softmax", "aam_softmax"]:
        torch.manual_seed(0)
        model = build_embedder(model_config("lstm", "attentive_stats", {}, head=name), FEAT_DIM, 5)
        feats, lengths = batch([6, 3, 4])
        labels = torch.tensor([0, 4, 2])
        model.set_epoch(1.5)  # every head takes it
        logits = model.classify(model(feats, lengths), labels)
        assert logits.shape == (3, 5)
        torch.nn.functional.cross_entropy(logits, labels).backward()
        assert model.encoder.rnn.weight_ih_l0.grad is not None
        assert model.classify(model(feats, lengths)).shape == (3, 5)


# --- registries -----------------------------------------------------------------------------


def test_registered_part_names():
    assert {"last", "attentive_stats"} <= set(POOLING.names())
    assert {"linear", "am_softmax", "aam_softmax"} <= set(HEADS.names())


def test_unknown_pooling_and_head_names_and_options():
    with pytest.raises(RegistryError, match="attentive_stats"):
        POOLING.build("attention", input_dim=4)
    with pytest.raises(RegistryError, match="aam_softmax"):
        HEADS.build("arcface", embedding_dim=4, num_classes=3)
    with pytest.raises(RegistryError, match="attention_dim"):
        POOLING.build("attentive_stats", {"attn_dim": 3}, input_dim=4)
    with pytest.raises(RegistryError, match="margin"):
        HEADS.build("am_softmax", {"marign": 0.3}, embedding_dim=4, num_classes=3)
    with pytest.raises(RegistryError, match="linear"):
        build_embedder({**model_config("lstm", "mean", {}), "head": "cosface"}, FEAT_DIM, 3)
    with pytest.raises(RegistryError, match="proj_size"):
        ENCODERS.build("lstm", {"projection": 3}, input_dim=FEAT_DIM)
