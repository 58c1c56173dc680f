"""Export a speaker embedder to TorchScript and ONNX.

The exported graphs take ``feats`` (float32, ``[B, T, D]``, features normalised
as the model was trained) and ``lengths`` (int64, ``[B]``) and return the
embeddings (``[B, E]``), exactly as :meth:`SpeakerEmbedder.embed` does.

What the graphs support
    Any batch size and any number of frames ``T >= 1`` (both axes are dynamic),
    with or without padding: every sequence ``b`` uses its first ``lengths[b]``
    frames and the padding after them is never read. Lengths must be between 1
    and ``T``. Both directions of a bidirectional encoder are exact on padded
    batches too: the backward direction runs over each sequence reversed within
    its own length (a gather), not over the padding.

How
    The training encoder packs padded batches (``pack_padded_sequence``), which
    neither tracing nor ONNX can express, and branches on the data. The export
    wrapper :class:`ExportableEmbedder` has no data-dependent control flow:
    a forward-only RNN runs over the padded batch (a frame never sees the padding
    after it) and is masked; a bidirectional one runs layer by layer, each
    direction a one-layer RNN with the trained weights. ONNX's LSTM operator has
    no projection, so an LSTMP layer is exported as a scripted time loop (an ONNX
    ``Loop``); TorchScript keeps torch's fused LSTM for it.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from spk.models.embedder import SpeakerEmbedder
from spk.models.encoders import RecurrentEncoder

logger = logging.getLogger(__name__)

ONNX_OPSET = 17
INPUT_NAMES = ("feats", "lengths")
OUTPUT_NAME = "embeddings"
VERIFY_LENGTHS = (50, 173, 400)
VERIFY_TOLERANCE = 1e-4


class ExportError(RuntimeError):
    """A model could not be exported, or its export does not reproduce it."""


def projected_lstm_loop(x: torch.Tensor, weight_ih: torch.Tensor, weight_hh: torch.Tensor, bias: torch.Tensor,
                        weight_hr: torch.Tensor) -> torch.Tensor:
    """One direction of one LSTMP layer over ``x [B, T, I]`` as an explicit time loop.

    Same gates and projection as ``torch.nn.LSTM(proj_size=...)`` (input, forget,
    cell and output gates in torch's order; ``h_t = W_hr (o_t * tanh(c_t))``), with
    ``bias = b_ih + b_hh``. Run scripted (:func:`_scripted_loop`), so that tracing keeps
    the loop and ONNX gets a ``Loop``.
    """
    gates_x = torch.matmul(x, weight_ih.t()) + bias  # all input projections at once
    h = torch.zeros(x.size(0), weight_hr.size(0), dtype=x.dtype, device=x.device)
    c = torch.zeros(x.size(0), weight_hh.size(0) // 4, dtype=x.dtype, device=x.device)
    outputs = []
    for t in range(x.size(1)):
        gates = gates_x[:, t] + torch.matmul(h, weight_hh.t())
        i, f, g, o = gates.chunk(4, 1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.matmul(torch.sigmoid(o) * torch.tanh(c), weight_hr.t())
        outputs.append(h)
    return torch.stack(outputs, 1)


@functools.cache
def _scripted_loop():
    with warnings.catch_warnings():  # torch 2.13 deprecates torch.jit; it still works
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        return torch.jit.script(projected_lstm_loop)


class ProjectedLSTMLayer(nn.Module):
    """One direction of one LSTMP layer, run by :func:`projected_lstm_loop` (for ONNX)."""

    def __init__(self, weight_ih: torch.Tensor, weight_hh: torch.Tensor, bias_ih: torch.Tensor,
                 bias_hh: torch.Tensor, weight_hr: torch.Tensor):
        super().__init__()
        self.register_buffer("weight_ih", weight_ih.detach().clone())
        self.register_buffer("weight_hh", weight_hh.detach().clone())
        self.register_buffer("bias", (bias_ih + bias_hh).detach().clone())
        self.register_buffer("weight_hr", weight_hr.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _scripted_loop()(x, self.weight_ih, self.weight_hh, self.bias, self.weight_hr)


def _layer_weights(rnn: nn.RNNBase, layer: int, reverse: bool) -> dict[str, torch.Tensor]:
    """The trained weights of one layer and direction, renamed as a one-layer RNN's (``*_l0``)."""
    suffix = f"_l{layer}" + ("_reverse" if reverse else "")
    return {name[: -len(suffix)] + "_l0": getattr(rnn, name)
            for name in rnn._flat_weights_names if name.endswith(suffix)}


def _one_direction(rnn: nn.RNNBase, layer: int, reverse: bool, input_size: int, onnx_compatible: bool) -> nn.Module:
    """A forward-only one-layer RNN holding the weights of ``rnn``'s ``layer``/direction."""
    weights = _layer_weights(rnn, layer, reverse)
    proj_size = getattr(rnn, "proj_size", 0)
    if proj_size and onnx_compatible:
        return ProjectedLSTMLayer(weights["weight_ih_l0"], weights["weight_hh_l0"], weights["bias_ih_l0"],
                                  weights["bias_hh_l0"], weights["weight_hr_l0"])
    options = {"proj_size": proj_size} if proj_size else {}
    single = type(rnn)(input_size, rnn.hidden_size, num_layers=1, batch_first=True, **options)
    single.load_state_dict({name: value.detach().clone() for name, value in weights.items()})
    return _FirstOutput(single)


class _FirstOutput(nn.Module):
    """An ``nn.LSTM``/``nn.GRU`` returning only its output sequence."""

    def __init__(self, rnn: nn.RNNBase):
        super().__init__()
        self.rnn = rnn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rnn(x)[0]


def reverse_within_lengths(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Each sequence's first ``lengths[b]`` frames in reverse order; the padding stays where it is.

    Applying it twice gives ``x`` back.
    """
    steps = torch.arange(x.shape[1], device=x.device).unsqueeze(0)
    last = lengths.to(x.device).long().unsqueeze(1) - 1
    index = torch.where(steps <= last, last - steps, steps)
    return x.gather(1, index.unsqueeze(-1).expand(-1, -1, x.shape[2]))


class ExportableEncoder(nn.Module):
    """The encoder of a :class:`SpeakerEmbedder` without packing or data-dependent branches."""

    def __init__(self, encoder: RecurrentEncoder, onnx_compatible: bool = False):
        super().__init__()
        if not isinstance(encoder, RecurrentEncoder):
            raise ExportError(f"cannot export an encoder of type {type(encoder).__name__}")
        rnn = encoder.rnn
        self.input_layer = encoder.input_layer if encoder.input_layer is not None else nn.Identity()
        self.bidirectional = bool(rnn.bidirectional)
        proj_size = getattr(rnn, "proj_size", 0)
        self.forward_layers = nn.ModuleList()
        self.backward_layers = nn.ModuleList()
        if not self.bidirectional and not (proj_size and onnx_compatible):
            self.forward_layers.append(_FirstOutput(rnn))  # the fused multi-layer RNN as trained
            return
        width = rnn.input_size
        for layer in range(rnn.num_layers):
            self.forward_layers.append(_one_direction(rnn, layer, False, width, onnx_compatible))
            if self.bidirectional:
                self.backward_layers.append(_one_direction(rnn, layer, True, width, onnx_compatible))
            width = (proj_size or rnn.hidden_size) * (2 if self.bidirectional else 1)

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        x = self.input_layer(feats)
        if self.bidirectional:
            for forward_rnn, backward_rnn in zip(self.forward_layers, self.backward_layers):
                backward = reverse_within_lengths(backward_rnn(reverse_within_lengths(x, lengths)), lengths)
                x = torch.cat([forward_rnn(x), backward], dim=2)
        else:
            for forward_rnn in self.forward_layers:
                x = forward_rnn(x)
        steps = torch.arange(x.shape[1], device=x.device).unsqueeze(0)
        valid = (steps < lengths.to(x.device).unsqueeze(1)).to(x.dtype)
        return x * valid.unsqueeze(-1)


class ExportableEmbedder(nn.Module):
    """``feats [B, T, D]`` + ``lengths [B]`` -> embeddings ``[B, E]``, traceable and ONNX-exportable.

    Shares the pooling and segment layers (and their weights) with ``model``; the
    classification head is left out.
    """

    def __init__(self, model: SpeakerEmbedder, onnx_compatible: bool = False):
        super().__init__()
        self.encoder = ExportableEncoder(model.encoder, onnx_compatible)
        self.pooling = model.pooling
        self.segment_layers = model.segment_layers
        self.segment = model.segment
        self.relu = getattr(model, "embedding_activation", "none") == "relu"
        self.embedding_dim = model.embedding_dim
        self.eval()

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        frames = self.encoder(feats, lengths)
        embeddings = self.segment(self.segment_layers(self.pooling(frames, lengths)))
        return torch.relu(embeddings) if self.relu else embeddings


def _input_dim(model: SpeakerEmbedder) -> int:
    encoder = model.encoder
    if encoder.input_layer is not None:
        return int(encoder.input_layer[0].in_features)
    return int(encoder.rnn.input_size)


def example_inputs(feature_dim: int, lengths=(23, 17), seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A padded batch of random features (float32) and their lengths (int64)."""
    generator = torch.Generator().manual_seed(seed)
    lengths_tensor = torch.tensor(list(lengths), dtype=torch.int64)
    feats = torch.randn(len(lengths), int(max(lengths)), feature_dim, generator=generator)
    return feats, lengths_tensor


def export_torchscript(model: SpeakerEmbedder, path: str | Path) -> Path:
    """Trace ``model``'s embedder and save it with ``torch.jit.save``; returns ``path``.

    Load it with ``torch.jit.load(path)`` and call it as ``module(feats, lengths)``.
    """
    path = Path(path)
    wrapper = ExportableEmbedder(model.cpu().eval())
    feats, lengths = example_inputs(_input_dim(model))
    with torch.no_grad(), warnings.catch_warnings():
        # Shape arithmetic on the constant feature width is recorded as constants; the
        # dynamic axes are checked by verify_exports on inputs of other sizes.
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.\w+` is deprecated", category=DeprecationWarning)
        traced = torch.jit.trace(wrapper, (feats, lengths), check_trace=False)
        torch.jit.save(traced, str(path))
    return path


def export_onnx(model: SpeakerEmbedder, path: str | Path, opset: int = ONNX_OPSET) -> Path:
    """Export ``model``'s embedder to ONNX (batch and time axes dynamic); returns ``path``.

    Inputs ``feats`` (float32 ``[batch, frames, D]``) and ``lengths`` (int64 ``[batch]``),
    output ``embeddings`` (float32 ``[batch, E]``). Uses torch's TorchScript-based
    exporter (``dynamo=False``), which needs the ``onnx`` package (``pip install 'spk[export]'``).
    """
    if importlib.util.find_spec("onnx") is None:
        raise ExportError("the onnx package is not installed, and torch's ONNX exporter needs it: "
                          "pip install 'spk[export]', or export without ONNX (spk export --no-onnx)")
    path = Path(path)
    wrapper = ExportableEmbedder(model.cpu().eval(), onnx_compatible=True)
    feats, lengths = example_inputs(_input_dim(model))
    dynamic_axes = {"feats": {0: "batch", 1: "frames"}, "lengths": {0: "batch"}, OUTPUT_NAME: {0: "batch"}}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.onnx.*")
        torch.onnx.export(wrapper, (feats, lengths), str(path), dynamo=False, input_names=list(INPUT_NAMES),
                          output_names=[OUTPUT_NAME], dynamic_axes=dynamic_axes, opset_version=opset)
    return path


def onnx_session(path: str | Path):
    """An onnxruntime CPU inference session for an exported embedder."""
    try:
        import onnxruntime
    except ImportError:
        raise ExportError("onnxruntime is not installed: pip install 'spk[export]' "
                          "(or onnxruntime) to run ONNX models") from None
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = max(1, torch.get_num_threads())
    options.log_severity_level = 3  # errors only
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def verify_exports(model: SpeakerEmbedder, torchscript_path: str | Path | None = None,
                   onnx_path: str | Path | None = None, lengths=VERIFY_LENGTHS,
                   tolerance: float = VERIFY_TOLERANCE) -> dict[str, float]:
    """Compare exported graphs with ``model`` on random inputs; raise :class:`ExportError` past ``tolerance``.

    Every length in ``lengths`` is run alone (batch of one, no padding: the product
    case) and all together as one padded batch. Returns the largest absolute
    difference of the embeddings per format (``torchscript``, ``onnx``).
    """
    model = model.cpu().eval()
    dim = _input_dim(model)
    cases = [example_inputs(dim, (length,), seed=length) for length in lengths]
    cases.append(example_inputs(dim, tuple(lengths), seed=1))
    runners = {}
    if torchscript_path is not None:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*torch\.jit\.\w+` is deprecated", category=DeprecationWarning)
            scripted = torch.jit.load(str(torchscript_path), map_location="cpu")
        runners["torchscript"] = lambda f, n: scripted(f, n).numpy()
    if onnx_path is not None:
        session = onnx_session(onnx_path)
        runners["onnx"] = lambda f, n: session.run([OUTPUT_NAME], {"feats": f.numpy(), "lengths": n.numpy()})[0]
    worst = {}
    with torch.no_grad():
        for name, run in runners.items():
            diffs = [float(np.max(np.abs(run(f, n) - model.embed(f, n).numpy()))) for f, n in cases]
            worst[name] = max(diffs)
            if not worst[name] <= tolerance:
                where = torchscript_path if name == "torchscript" else onnx_path
                raise ExportError(f"the {name} export {where} differs from the PyTorch model by up to "
                                  f"{worst[name]:.2e} (tolerance {tolerance:g}); do not use it")
            logger.debug("%s export matches the model: max abs diff %.2e", name, worst[name])
    return worst
