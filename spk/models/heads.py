"""Classification heads over embeddings, used for training and closed-set identification."""

from __future__ import annotations

import torch
from torch import nn

from spk.models.registry import Registry

HEADS = Registry("head")


@HEADS.register("linear")
class LinearSoftmaxHead(nn.Module):
    """ReLU + batch norm + affine layer to speaker logits (the x-vector classifier's last block)."""

    def __init__(self, embedding_dim: int, num_classes: int):
        super().__init__()
        self.norm = nn.BatchNorm1d(embedding_dim)
        self.output = nn.Linear(embedding_dim, num_classes)

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Logits over the training speakers."""
        return self.output(self.norm(torch.relu(embeddings)))
