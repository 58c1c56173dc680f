"""Masked temporal pooling: (batch, time, dim) + lengths -> (batch, pooled_dim).

Every pooling here also has a running form (``pooling.running()``): an accumulator
that takes one utterance's frames a block at a time (``update``) and gives the
pooled vector of everything so far (``pooled``), equal to the batch form on all
the frames within float rounding. Streaming embeddings use it, so a live stream
needs memory for the sums only, not for its frames.
"""

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

    def running(self) -> "RunningMean":
        """The running form: frame sums (float64)."""
        return RunningMean()


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

    def running(self) -> "RunningStatistics":
        """The running form: sums of x and x^2 (float64)."""
        return RunningStatistics(self.eps)


@POOLING.register("last")
class LastFramePooling(nn.Module):
    """The encoder's last hidden state: the output at each utterance's last real frame.

    For a unidirectional encoder that is the frame at ``length - 1``. For a
    bidirectional one (``num_directions=2``; :func:`spk.models.build_embedder`
    sets it from the encoder, so a config does not) the frame is split in two
    halves, forward then backward as torch lays them out, and the result is the
    forward half at ``length - 1`` concatenated with the backward half at frame 0:
    each direction's final state, having seen the whole utterance. Output width =
    ``input_dim`` either way. Padding is never read.
    """

    def __init__(self, input_dim: int, num_directions: int = 1):
        super().__init__()
        if num_directions not in (1, 2):
            raise ValueError(f"num_directions must be 1 or 2, not {num_directions}")
        if input_dim % num_directions:
            raise ValueError(f"input_dim {input_dim} does not split into {num_directions} directions")
        self.output_dim = input_dim
        self.num_directions = num_directions

    def forward(self, frames: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        last = (lengths.to(frames.device).long() - 1).clamp(min=0)
        index = last.view(-1, 1, 1).expand(-1, 1, frames.shape[-1])
        at_last = frames.gather(1, index).squeeze(1)
        if self.num_directions == 1:
            return at_last
        half = frames.shape[-1] // 2
        return torch.cat([at_last[:, :half], frames[:, 0, half:]], dim=-1)

    def running(self) -> "RunningLast | None":
        """The running form (forward-only encoders: the backward half needs the whole utterance)."""
        return RunningLast() if self.num_directions == 1 else None


@POOLING.register("attentive_stats")
class AttentiveStatisticsPooling(nn.Module):
    """Attentive statistics pooling (Okabe et al., 2018).

    A small MLP scores every frame, ``e_t = v^T tanh(W h_t + b) + k`` (hidden width
    ``attention_dim``); a softmax over the real frames (padding masked to -inf) gives
    weights ``a_t``; the output is the weighted mean and the weighted standard
    deviation, ``2 * input_dim`` wide.
    """

    def __init__(self, input_dim: int, attention_dim: int = 128, eps: float = 1e-5):
        super().__init__()
        self.attention = nn.Sequential(nn.Linear(input_dim, attention_dim), nn.Tanh(),
                                       nn.Linear(attention_dim, 1))
        self.output_dim = 2 * input_dim
        self.eps = eps

    def attention_weights(self, frames: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(batch, time) frame weights: each row sums to 1 over the real frames and is 0 on padding."""
        real = length_mask(lengths, frames.shape[1]).bool()
        scores = self.attention(frames).squeeze(-1).masked_fill(~real, float("-inf"))
        return torch.softmax(scores, dim=1)

    def forward(self, frames: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        real = length_mask(lengths, frames.shape[1]).bool().unsqueeze(-1)
        frames = frames.masked_fill(~real, 0.0)  # garbage in the padding cannot reach the sums
        weights = self.attention_weights(frames, lengths).unsqueeze(-1)
        mean = (weights * frames).sum(dim=1)
        variance = (weights * (frames - mean.unsqueeze(1)) ** 2).sum(dim=1)
        return torch.cat([mean, torch.sqrt(variance.clamp(min=self.eps))], dim=-1)

    def running(self) -> "RunningAttentiveStatistics":
        """The running form: attention-weighted sums kept relative to the running maximum score."""
        return RunningAttentiveStatistics(self.attention, self.eps)


# --------------------------------------------------------------------------- #
# running forms: one utterance's frames [time, dim] a block at a time
# --------------------------------------------------------------------------- #

class RunningMean:
    """Running :class:`TemporalAveragePooling`."""

    def __init__(self):
        self.total, self.count = None, 0

    def update(self, frames: torch.Tensor) -> None:
        part = frames.double().sum(dim=0)
        self.total = part if self.total is None else self.total + part
        self.count += len(frames)

    def pooled(self) -> torch.Tensor:
        return self.total / self.count


class RunningStatistics:
    """Running :class:`StatisticsPooling`."""

    def __init__(self, eps: float):
        self.eps = eps
        self.total = self.squares = None
        self.count = 0

    def update(self, frames: torch.Tensor) -> None:
        frames = frames.double()
        part, part_sq = frames.sum(dim=0), (frames * frames).sum(dim=0)
        if self.total is None:
            self.total, self.squares = part, part_sq
        else:
            self.total, self.squares = self.total + part, self.squares + part_sq
        self.count += len(frames)

    def pooled(self) -> torch.Tensor:
        mean = self.total / self.count
        variance = self.squares / self.count - mean * mean
        return torch.cat([mean, torch.sqrt(variance.clamp(min=self.eps))])


class RunningLast:
    """Running :class:`LastFramePooling` of a forward-only encoder."""

    def __init__(self):
        self.last = None

    def update(self, frames: torch.Tensor) -> None:
        self.last = frames[-1]

    def pooled(self) -> torch.Tensor:
        return self.last


class RunningAttentiveStatistics:
    """Running :class:`AttentiveStatisticsPooling`: softmax-weighted sums rescaled by a running maximum
    of the attention scores (a running log-sum-exp), so no weight overflows."""

    def __init__(self, attention: nn.Module, eps: float):
        self.attention = attention
        self.eps = eps
        self.max_score = None
        self.weight = self.total = self.squares = None

    def update(self, frames: torch.Tensor) -> None:
        scores = self.attention(frames).squeeze(-1).double()
        frames = frames.double()
        new_max = scores.max()
        if self.max_score is not None:
            new_max = torch.maximum(new_max, self.max_score)
            rescale = torch.exp(self.max_score - new_max)
            self.weight, self.total, self.squares = (self.weight * rescale, self.total * rescale,
                                                     self.squares * rescale)
        weights = torch.exp(scores - new_max)
        part_w, part, part_sq = weights.sum(), weights @ frames, weights @ (frames * frames)
        if self.max_score is None:
            self.weight, self.total, self.squares = part_w, part, part_sq
        else:
            self.weight, self.total, self.squares = self.weight + part_w, self.total + part, self.squares + part_sq
        self.max_score = new_max

    def pooled(self) -> torch.Tensor:
        mean = self.total / self.weight
        variance = self.squares / self.weight - mean * mean
        return torch.cat([mean, torch.sqrt(variance.clamp(min=self.eps))])
