"""The speaker embedder: encoder -> pooling -> segment layer -> embedding (-> head for training)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from spk.models.encoders import ENCODERS
from spk.models.heads import HEADS
from spk.models.pooling import POOLING


class SpeakerEmbedder(nn.Module):
    """Maps a padded batch of feature sequences to fixed-size speaker embeddings.

    The embedding is the output of the affine segment layer after pooling, taken
    before any non-linearity, as x-vectors are.  The classification ``head`` is
    used only in training and closed-set identification.
    """

    def __init__(self, encoder: nn.Module, pooling: nn.Module, embedding_dim: int,
                 head: nn.Module | None = None):
        super().__init__()
        self.encoder = encoder
        self.pooling = pooling
        self.segment = nn.Linear(pooling.output_dim, embedding_dim)
        self.head = head
        self.embedding_dim = embedding_dim

    def embed(self, feats: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(batch, time, feat) + lengths -> (batch, embedding_dim)."""
        frames = self.encoder(feats, lengths)
        return self.segment(self.pooling(frames, lengths))

    def classify(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Speaker logits from embeddings (needs a head)."""
        if self.head is None:
            raise RuntimeError("this embedder has no classification head")
        return self.head(embeddings)

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.embed(feats, lengths)


def build_embedder(config: dict[str, Any], input_dim: int, num_speakers: int | None) -> SpeakerEmbedder:
    """Build from the model part of an experiment config (``encoder``, ``pooling``, ``head``, ...)."""
    encoder = ENCODERS.build(config["encoder"], config.get("encoder_conf"), input_dim=input_dim)
    pooling = POOLING.build(config["pooling"], config.get("pooling_conf"), input_dim=encoder.output_dim)
    head = None
    if num_speakers is not None and config.get("head"):
        head = HEADS.build(config["head"], config.get("head_conf"),
                           embedding_dim=config["embedding_dim"], num_classes=num_speakers)
    return SpeakerEmbedder(encoder, pooling, config["embedding_dim"], head)
