"""The speaker embedder: encoder -> pooling -> segment layers -> embedding (-> head for training)."""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from spk.models.encoders import ENCODERS
from spk.models.heads import HEADS
from spk.models.pooling import POOLING

EMBEDDING_ACTIVATIONS = ("none", "relu")


def segment_block(input_dim: int, output_dim: int) -> nn.Sequential:
    """One x-vector segment-level block: Linear + ReLU + BatchNorm1d."""
    return nn.Sequential(nn.Linear(input_dim, output_dim), nn.ReLU(), nn.BatchNorm1d(output_dim))


class SpeakerEmbedder(nn.Module):
    """Maps a padded batch of feature sequences to fixed-size speaker embeddings.

    encoder -> pooling -> ``segment_layers`` (hidden sizes of Linear + ReLU +
    BatchNorm1d blocks, none by default) -> ``segment``, the affine embedding layer.
    The embedding is the output of that affine layer, taken before any
    non-linearity, as x-vectors are, unless ``embedding_activation`` is ``relu``
    (GE2E's embedding, as in Resemblyzer's encoder, is ReLU of the affine layer).  The classification ``head`` is used only in
    training and closed-set identification.
    """

    def __init__(self, encoder: nn.Module, pooling: nn.Module, embedding_dim: int,
                 head: nn.Module | None = None, segment_layers: Sequence[int] = (),
                 embedding_activation: str = "none"):
        super().__init__()
        if embedding_activation not in EMBEDDING_ACTIVATIONS:
            raise ValueError(f"embedding_activation: {embedding_activation!r} is not one of "
                             f"{', '.join(EMBEDDING_ACTIVATIONS)}")
        self.embedding_activation = embedding_activation
        sizes = [int(size) for size in segment_layers]
        if any(size <= 0 for size in sizes):
            raise ValueError(f"segment_layers must be positive sizes, got {list(segment_layers)}")
        self.encoder = encoder
        self.pooling = pooling
        widths = [pooling.output_dim, *sizes]
        self.segment_layers = nn.Sequential(*(segment_block(a, b) for a, b in zip(widths, widths[1:])))
        self.segment = nn.Linear(widths[-1], embedding_dim)
        self.head = head
        self.embedding_dim = embedding_dim

    def embed(self, feats: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(batch, time, feat) + lengths -> (batch, embedding_dim)."""
        frames = self.encoder(feats, lengths)
        return self.embed_pooled(self.pooling(frames, lengths))

    def embed_pooled(self, pooled: torch.Tensor) -> torch.Tensor:
        """(batch, pooled_dim) -> (batch, embedding_dim): the segment layers after the pooling."""
        embedding = self.segment(self.segment_layers(pooled))
        return torch.relu(embedding) if self.embedding_activation == "relu" else embedding

    def classify(self, embeddings: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Speaker logits from embeddings (needs a head). Margin heads use ``labels`` (training) only."""
        if self.head is None:
            raise RuntimeError("this embedder has no classification head")
        return self.head(embeddings, labels)

    def set_epoch(self, epoch: float) -> None:
        """Pass the (fractional) training epoch to the head, for schedules such as margin warm-up."""
        if self.head is not None:
            self.head.set_epoch(epoch)

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.embed(feats, lengths)


def build_embedder(config: dict[str, Any], input_dim: int, num_speakers: int | None) -> SpeakerEmbedder:
    """Build from the model part of an experiment config.

    Keys: ``encoder``, ``encoder_conf``, ``pooling``, ``pooling_conf``, ``embedding_dim``,
    ``segment_layers`` (list of hidden sizes, default none), ``embedding_activation``
    (``none``, the default, or ``relu``), ``head``, ``head_conf``.
    A pooling that takes ``num_directions`` (``last``) gets it from the encoder.
    """
    encoder = ENCODERS.build(config["encoder"], config.get("encoder_conf"), input_dim=input_dim)
    fixed: dict[str, Any] = {"input_dim": encoder.output_dim}
    if "num_directions" in POOLING.options(config["pooling"]):
        fixed["num_directions"] = getattr(encoder, "num_directions", 1)
    pooling = POOLING.build(config["pooling"], config.get("pooling_conf"), **fixed)
    head = None
    if num_speakers is not None and config.get("head"):
        head = HEADS.build(config["head"], config.get("head_conf"),
                           embedding_dim=config["embedding_dim"], num_classes=num_speakers)
    return SpeakerEmbedder(encoder, pooling, config["embedding_dim"], head,
                           segment_layers=config.get("segment_layers") or [],
                           embedding_activation=config.get("embedding_activation") or "none")
