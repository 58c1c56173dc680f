"""Frame-level recurrent encoders: (batch, time, feat) + lengths -> (batch, time, dim)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from spk.models.registry import Registry

ENCODERS = Registry("encoder")


class RecurrentEncoder(nn.Module):
    """A stacked LSTM or GRU over packed sequences, so padding never leaks into the states.

    Options (the config's ``encoder_conf``):

    - ``hidden_size``, ``num_layers``, ``bidirectional``, ``dropout``: as in torch's RNNs;
    - ``proj_size``: LSTM only; an LSTM with projection (LSTMP, as in GE2E) through
      torch's ``proj_size``. The output per direction is then ``proj_size`` wide
      instead of ``hidden_size``. 0 means no projection; a GRU rejects any other value;
    - ``input_layer``: 0 for none, else a frame-level ``Linear(input_dim -> input_layer)``
      + ReLU applied to every frame before the RNN.

    ``output_dim`` is the width of each output frame (per-direction width times the
    number of directions); in a bidirectional encoder the first half of each frame is
    the forward direction and the second half the backward one (``num_directions``
    tells poolings which).
    """

    rnn_class: type[nn.Module] = nn.LSTM

    def __init__(self, input_dim: int, hidden_size: int = 256, num_layers: int = 2,
                 bidirectional: bool = False, dropout: float = 0.0, proj_size: int = 0,
                 input_layer: int = 0):
        super().__init__()
        if proj_size < 0 or input_layer < 0:
            raise ValueError(f"proj_size ({proj_size}) and input_layer ({input_layer}) must be >= 0")
        rnn_options = {}
        if proj_size:
            if self.rnn_class is not nn.LSTM:
                raise ValueError(
                    f"proj_size={proj_size} is an LSTM option (LSTMP); a {self.rnn_class.__name__} "
                    "encoder has no projection. Remove proj_size or use encoder: lstm")
            if proj_size >= hidden_size:
                raise ValueError(f"proj_size ({proj_size}) must be smaller than hidden_size ({hidden_size})")
            rnn_options["proj_size"] = proj_size
        self.input_layer = None
        rnn_input_dim = input_dim
        if input_layer:
            self.input_layer = nn.Sequential(nn.Linear(input_dim, input_layer), nn.ReLU())
            rnn_input_dim = input_layer
        self.rnn = self.rnn_class(
            rnn_input_dim, hidden_size, num_layers=num_layers, batch_first=True,
            bidirectional=bidirectional, dropout=dropout if num_layers > 1 else 0.0, **rnn_options)
        self.num_directions = 2 if bidirectional else 1
        self.output_dim = (proj_size or hidden_size) * self.num_directions

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Encode a padded batch; frames beyond each length come out as zeros."""
        if self.input_layer is not None:
            feats = self.input_layer(feats)  # frame-wise: padding frames are dropped or masked below
        total = feats.shape[1]
        if bool((lengths == total).all()):  # no padding (training chunks): nothing to pack
            return self.rnn(feats)[0]
        if self.num_directions == 1:
            # A forward-only RNN never sees the padding before a frame, so running it unpacked
            # and zeroing the padded frames gives the packed result. Much faster: torch's CPU
            # GRU over packed sequences is about 10x slower than over a padded batch.
            output = self.rnn(feats)[0]
            valid = torch.arange(total, device=feats.device)[None, :] < lengths.to(feats.device)[:, None]
            return output * valid[:, :, None]
        packed = pack_padded_sequence(feats, lengths.cpu(), batch_first=True, enforce_sorted=False)
        output, _ = self.rnn(packed)
        output, _ = pad_packed_sequence(output, batch_first=True, total_length=total)
        return output

    @property
    def carries_state(self) -> bool:
        """Whether frames can be encoded a block at a time from a carried state (forward-only RNNs)."""
        return self.num_directions == 1

    def step(self, feats: torch.Tensor, state=None):
        """Encode the next frames ``(1, time, feat)`` of one utterance from ``state`` (None at its start).

        Returns ``(frames (1, time, dim), new state)``; a forward-only encoder gives
        the frames :meth:`forward` gives for the whole utterance.
        """
        if not self.carries_state:
            raise RuntimeError("a bidirectional encoder cannot encode block by block: its backward "
                               "direction starts at the end of the utterance")
        if self.input_layer is not None:
            feats = self.input_layer(feats)
        return self.rnn(feats, state)


@ENCODERS.register("lstm")
class LSTMEncoder(RecurrentEncoder):
    """Stacked (optionally bidirectional, optionally projected: LSTMP) LSTM."""

    rnn_class = nn.LSTM


@ENCODERS.register("gru")
class GRUEncoder(RecurrentEncoder):
    """Stacked (optionally bidirectional) GRU; ``proj_size`` is rejected."""

    rnn_class = nn.GRU
