"""Masked temporal pooling: (batch, time, dim) + lengths -> (batch, pooled_dim)."""

from __future__ import annotations

import torch
from torch import nn

from spk.models.registry import Registry

POOLING = Registry("pooling")


def length_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """(batch, max_len) float mask, 1 on real frames and 0 on padding."""
    steps = torch.arange(max_len, device=lengths.device)
    return (steps[None, :] < lengths[:, None]).float()


@POOLING.register("mean")
class TemporalAveragePooling(nn.Module):
    """Average of the frames of each utterance (padding excluded)."""

    def __init__(self, input_dim: int):
        super().__init__()
        self.output_dim = input_dim

    def forward(self, frames: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        mask = length_mask(lengths, frames.shape[1]).unsqueeze(-1)
        return (frames * mask).sum(dim=1) / lengths.clamp(min=1).unsqueeze(-1).to(frames.dtype)


@POOLING.register("stats")
class StatisticsPooling(nn.Module):
    """Mean and standard deviation of the frames (x-vector statistics pooling)."""

    def __init__(self, input_dim: int, eps: float = 1e-5):
        super().__init__()
        self.output_dim = 2 * input_dim
        self.eps = eps

    def forward(self, frames: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        mask = length_mask(lengths, frames.shape[1]).unsqueeze(-1)
        count = lengths.clamp(min=1).unsqueeze(-1).to(frames.dtype)
        mean = (frames * mask).sum(dim=1) / count
        variance = (((frames - mean.unsqueeze(1)) ** 2) * mask).sum(dim=1) / count
        return torch.cat([mean, torch.sqrt(variance.clamp(min=self.eps))], dim=-1)
