"""Classification heads over embeddings, used for training and closed-set identification.

Every head is called as ``head(embeddings, labels=None)`` and returns logits over
the training speakers. Margin heads apply their margin to the target logit only
when ``labels`` are given (training); without labels they return plain scaled
cosines, which is what identification wants. Every head has ``set_epoch(epoch)``
(a no-op where there is nothing to schedule), so a trainer may call it on any head.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from spk.models.registry import Registry

HEADS = Registry("head")


@HEADS.register("linear")
class LinearSoftmaxHead(nn.Module):
    """ReLU + batch norm + affine layer to speaker logits (the x-vector classifier's last block)."""

    def __init__(self, embedding_dim: int, num_classes: int):
        super().__init__()
        self.norm = nn.BatchNorm1d(embedding_dim)
        self.output = nn.Linear(embedding_dim, num_classes)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Logits over the training speakers (``labels`` are accepted and ignored)."""
        return self.output(self.norm(torch.relu(embeddings)))

    def set_epoch(self, epoch: float) -> None:
        """Nothing to schedule."""


class CosineMarginHead(nn.Module):
    """Shared part of the margin heads: cosines between L2-normalised embeddings and class weights.

    ``margin`` is the full margin and ``scale`` the logit scale ``s``. With
    ``margin_warmup_epochs > 0`` the margin in use (``current_margin``) grows
    linearly from 0 at epoch 0 to ``margin`` at ``margin_warmup_epochs``, following
    :meth:`set_epoch`; it starts at 0 until ``set_epoch`` is called.
    """

    def __init__(self, embedding_dim: int, num_classes: int, margin: float = 0.2, scale: float = 30.0,
                 margin_warmup_epochs: float = 0):
        super().__init__()
        if margin < 0 or scale <= 0 or margin_warmup_epochs < 0:
            raise ValueError(f"need margin >= 0, scale > 0, margin_warmup_epochs >= 0; got margin={margin}, "
                             f"scale={scale}, margin_warmup_epochs={margin_warmup_epochs}")
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_dim))
        nn.init.xavier_uniform_(self.weight)
        self.margin = float(margin)
        self.scale = float(scale)
        self.margin_warmup_epochs = float(margin_warmup_epochs)
        self.current_margin = 0.0 if self.margin_warmup_epochs > 0 else self.margin

    def set_epoch(self, epoch: float) -> None:
        """Set the margin for (fractional) ``epoch``: ``margin * min(1, epoch / margin_warmup_epochs)``."""
        if self.margin_warmup_epochs > 0:
            self.current_margin = self.margin * min(1.0, max(0.0, epoch / self.margin_warmup_epochs))

    def cosine(self, embeddings: torch.Tensor) -> torch.Tensor:
        """(batch, num_classes) cosines between embeddings and class weights."""
        return F.linear(F.normalize(embeddings, dim=-1), F.normalize(self.weight, dim=-1))

    def target_logit(self, cosine: torch.Tensor) -> torch.Tensor:
        """The margin-penalised cosine used for the target class."""
        raise NotImplementedError

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """``s * cos`` for every class, with the margin on each row's target class when labels are given."""
        cosine = self.cosine(embeddings)
        if labels is None:
            return self.scale * cosine
        target = F.one_hot(labels.long(), cosine.shape[1]).bool()
        return self.scale * torch.where(target, self.target_logit(cosine), cosine)

    def extra_repr(self) -> str:
        return (f"embedding_dim={self.weight.shape[1]}, num_classes={self.weight.shape[0]}, margin={self.margin}, "
                f"scale={self.scale}, margin_warmup_epochs={self.margin_warmup_epochs}")


@HEADS.register("am_softmax")
class AdditiveMarginHead(CosineMarginHead):
    """Additive margin softmax (AM-softmax / CosFace): target logit ``s * (cos(theta) - m)``, others ``s * cos``."""

    def target_logit(self, cosine: torch.Tensor) -> torch.Tensor:
        return cosine - self.current_margin


@HEADS.register("aam_softmax")
class AdditiveAngularMarginHead(CosineMarginHead):
    """Additive angular margin softmax (AAM-softmax / ArcFace): target logit ``s * cos(theta + m)``.

    ``cos(theta + m)`` stops decreasing once ``theta + m > pi``; as in ArcFace, beyond
    ``theta > pi - m`` (``cos < cos(pi - m)``) the target uses ``cos(theta) - m * sin(m)``
    instead, which keeps the logit monotonic in theta. With ``easy_margin`` the margin
    is applied only where ``cos(theta) > 0`` (theta < pi/2) and the plain cosine is used elsewhere.
    """

    def __init__(self, embedding_dim: int, num_classes: int, margin: float = 0.2, scale: float = 30.0,
                 margin_warmup_epochs: float = 0, easy_margin: bool = False):
        super().__init__(embedding_dim, num_classes, margin, scale, margin_warmup_epochs)
        self.easy_margin = bool(easy_margin)

    def target_logit(self, cosine: torch.Tensor) -> torch.Tensor:
        m = self.current_margin
        sine = torch.sqrt((1.0 - cosine * cosine).clamp(min=1e-12))
        shifted = cosine * math.cos(m) - sine * math.sin(m)  # cos(theta + m)
        if self.easy_margin:
            return torch.where(cosine > 0, shifted, cosine)
        threshold = math.cos(math.pi - m)
        return torch.where(cosine > threshold, shifted, cosine - math.sin(math.pi - m) * m)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", easy_margin={self.easy_margin}"
