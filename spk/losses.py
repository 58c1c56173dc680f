"""Training losses, by name.

A loss takes the model's outputs for a batch and the speaker labels and returns
a scalar.  Classification losses work on the head's logits.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from spk.models.registry import Registry

LOSSES = Registry("loss")


@LOSSES.register("softmax")
class SoftmaxCrossEntropy(nn.Module):
    """Cross-entropy over the training speakers (softmax pre-training; the head is dropped for embeddings)."""

    needs_head = True

    def __init__(self, label_smoothing: float = 0.0):
        super().__init__()
        self.label_smoothing = label_smoothing

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
