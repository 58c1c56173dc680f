"""Frame-level recurrent encoders: (batch, time, feat) + lengths -> (batch, time, dim)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from spk.models.registry import Registry

ENCODERS = Registry("encoder")


class RecurrentEncoder(nn.Module):
    """A stacked LSTM or GRU over packed sequences, so padding never leaks into the states."""

    rnn_class: type[nn.Module] = nn.LSTM

    def __init__(self, input_dim: int, hidden_size: int = 256, num_layers: int = 2,
                 bidirectional: bool = False, dropout: float = 0.0):
        super().__init__()
        self.rnn = self.rnn_class(
            input_dim, hidden_size, num_layers=num_layers, batch_first=True,
            bidirectional=bidirectional, dropout=dropout if num_layers > 1 else 0.0)
        self.output_dim = hidden_size * (2 if bidirectional else 1)

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Encode a padded batch; frames beyond each length come out as zeros."""
        packed = pack_padded_sequence(feats, lengths.cpu(), batch_first=True, enforce_sorted=False)
        output, _ = self.rnn(packed)
        output, _ = pad_packed_sequence(output, batch_first=True, total_length=feats.shape[1])
        return output


@ENCODERS.register("lstm")
class LSTMEncoder(RecurrentEncoder):
    """Stacked (optionally bidirectional) LSTM."""

    rnn_class = nn.LSTM


@ENCODERS.register("gru")
class GRUEncoder(RecurrentEncoder):
    """Stacked (optionally bidirectional) GRU."""

    rnn_class = nn.GRU
