"""Tests for spk.models: shapes, padding invariance, the registries and build_embedder."""

import pytest
import torch

from spk.models import ENCODERS, HEADS, POOLING, SpeakerEmbedder, build_embedder
from spk.models.registry import Registry, RegistryError

FEAT_DIM = 12



def batch(lengths, dim=FEAT_DIM, seed=0):
    """A padded batch (zeros beyond each length) and its lengths."""
    generator = torch.Generator().manual_seed(seed)
    feats = torch.zeros(len(lengths), max(lengths), dim)
    for i, length in enumerate(lengths):
        feats[i, :length] = torch.randn(length, dim, generator=generator)
    return feats, torch.tensor(lengths)


@torch.no_grad()
def assert_padding_changes_nothing(model, feats, lengths):
    """Each utterance of a padded batch embeds as it does alone, and garbage written into the
    second utterance's padding changes nothing either."""
    padded = model(feats, lengths)
    for i, length in enumerate(lengths.tolist()):
        alone = model(feats[i:i + 1, :length], lengths[i:i + 1])
        torch.testing.assert_close(padded[i:i + 1], alone, atol=1e-5, rtol=0)
    noisy = feats.clone()
    noisy[1, int(lengths[1]):] = 1e3
    torch.testing.assert_close(model(noisy, lengths), padded, atol=1e-5, rtol=0)


def embedder(encoder="lstm", pooling="stats", bidirectional=False, hidden=16, layers=2, emb=10, head=None,
             num_speakers=None):
    torch.manual_seed(0)
    config = {"encoder": encoder, "encoder_conf": {"hidden_size": hidden, "num_layers": layers,
                                                   "bidirectional": bidirectional},
              "pooling": pooling, "embedding_dim": emb}
    if head:
        config["head"] = head
    return build_embedder(config, input_dim=FEAT_DIM, num_speakers=num_speakers)


# --- shapes ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["lstm", "gru"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_encoder_output_shape(name, bidirectional):
    encoder = ENCODERS.build(name, {"hidden_size": 8, "num_layers": 2, "bidirectional": bidirectional},
                             input_dim=FEAT_DIM)
    assert encoder.output_dim == (16 if bidirectional else 8)
    feats, lengths = batch([7, 4, 5])
    out = encoder(feats, lengths)
    assert out.shape == (3, 7, encoder.output_dim)
    # frames beyond each length come out as zeros
    assert torch.all(out[1, 4:] == 0) and torch.all(out[2, 5:] == 0)


@pytest.mark.parametrize("name", ["lstm", "gru"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_encoder_equals_a_packed_sequence_run(name, bidirectional):
    """Whatever path the encoder takes (unpacked for equal lengths or forward-only RNNs), its
    output is torch's packed-sequence result."""
    encoder = ENCODERS.build(name, {"hidden_size": 8, "num_layers": 2, "bidirectional": bidirectional},
                             input_dim=FEAT_DIM)
    for lengths in ([7, 4, 5], [6, 6]):
        feats, lengths = batch(lengths)
        packed = torch.nn.utils.rnn.pack_padded_sequence(feats, lengths, batch_first=True, enforce_sorted=False)
        expected, _ = torch.nn.utils.rnn.pad_packed_sequence(encoder.rnn(packed)[0], batch_first=True,
                                                             total_length=feats.shape[1])
        torch.testing.assert_close(encoder(feats, lengths), expected, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("name, factor", [("mean", 1), ("stats", 2)])
def test_pooling_output_shape(name, factor):
    pooling = POOLING.build(name, input_dim=6)
    assert pooling.output_dim == 6 * factor
    assert pooling(torch.randn(4, 9, 6), torch.tensor([9, 3, 1, 5])).shape == (4, 6 * factor)


def test_pooling_values_ignore_padding():
    frames = torch.randn(2, 6, 3)
    frames[1, 4:] = 100.0  # padding with garbage
    lengths = torch.tensor([6, 4])
    mean = POOLING.build("mean", input_dim=3)(frames, lengths)
    stats = POOLING.build("stats", input_dim=3)(frames, lengths)
    torch.testing.assert_close(mean[1], frames[1, :4].mean(dim=0))
    torch.testing.assert_close(stats[1, :3], frames[1, :4].mean(dim=0))
    torch.testing.assert_close(stats[1, 3:], frames[1, :4].std(dim=0, unbiased=False))


@pytest.mark.parametrize("encoder", ["lstm", "gru"])
@pytest.mark.parametrize("pooling", ["mean", "stats"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_embedding_shape(encoder, pooling, bidirectional):
    model = embedder(encoder, pooling, bidirectional, hidden=8, emb=5)
    assert isinstance(model, SpeakerEmbedder)
    assert model.embedding_dim == 5
    assert model.pooling.output_dim == 8 * (2 if bidirectional else 1) * (2 if pooling == "stats" else 1)
    feats, lengths = batch([10, 6])
    assert model(feats, lengths).shape == (2, 5)
    assert model.embed(feats, lengths).shape == (2, 5)


# --- padding invariance ------------------------------------------------------------------


@pytest.mark.parametrize("encoder", ["lstm", "gru"])
@pytest.mark.parametrize("pooling", ["mean", "stats"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_embedding_does_not_depend_on_padding(encoder, pooling, bidirectional):
    assert_padding_changes_nothing(embedder(encoder, pooling, bidirectional).eval(), *batch([25, 11, 17], seed=1))


# --- registries ---------------------------------------------------------------------------


def test_registered_names():
    assert ENCODERS.names() == ["gru", "lstm"]
    assert {"mean", "stats"} <= set(POOLING.names())
    assert "linear" in HEADS.names()


def test_unknown_encoder_lists_known_names():
    with pytest.raises(RegistryError) as error:
        ENCODERS.build("transformer", {}, input_dim=FEAT_DIM)
    message = str(error.value)
    assert "transformer" in message and "lstm" in message and "gru" in message
    with pytest.raises(RegistryError, match="lstm"):
        build_embedder({"encoder": "tdnn", "pooling": "mean", "embedding_dim": 4}, FEAT_DIM, None)


def test_unknown_option_is_named():
    with pytest.raises(RegistryError) as error:
        ENCODERS.build("lstm", {"hiden_size": 8}, input_dim=FEAT_DIM)
    message = str(error.value)
    assert "hiden_size" in message and "hidden_size" in message
    # options the caller sets are not options of the config
    with pytest.raises(RegistryError, match="input_dim"):
        ENCODERS.build("lstm", {"input_dim": 3}, input_dim=FEAT_DIM)
    with pytest.raises(RegistryError, match="epsilon"):
        build_embedder({"encoder": "gru", "pooling": "stats", "pooling_conf": {"epsilon": 1.0},
                        "embedding_dim": 4}, FEAT_DIM, None)


def test_registry_rejects_double_registration():
    registry = Registry("thing")
    registry.register("a")(dict)
    with pytest.raises(RegistryError, match="twice"):
        registry.register("a")(list)


def test_build_embedder_with_head_gives_speaker_logits():
    model = embedder("gru", "stats", head="linear", num_speakers=7, emb=6)
    assert model.head is not None
    feats, lengths = batch([9, 5, 7, 3])
    logits = model.classify(model(feats, lengths))
    assert logits.shape == (4, 7)
    assert torch.isfinite(logits).all()
    logits.sum().backward()  # gradients reach the encoder
    assert model.encoder.rnn.weight_ih_l0.grad is not None


def test_embedder_without_head():
    model = embedder(head="linear", num_speakers=None)  # no speakers: no head
    assert model.head is None
    with pytest.raises(RuntimeError, match="no classification head"):
        model.classify(torch.zeros(2, 10))
    assert embedder(num_speakers=5).head is None  # no head named: none built
