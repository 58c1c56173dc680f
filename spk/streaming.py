"""Streaming embeddings and verification scores: audio in chunks, a running embedding out.

:class:`StreamingEmbedder` takes 16 kHz float chunks of any size and keeps

- **features** incrementally (kaldi-native-fbank's online extractor gives the
  offline frames exactly; deltas wait for their ``delta_order * delta_window``
  frames of right context, and the last frames are completed by :meth:`finish`);
- **the recurrent state** between chunks, for forward-only encoders: each new
  frame goes through the RNN once, from the saved ``(h, c)``;
- **the pooling** in the model's own running form (``model.pooling.running()``,
  :mod:`spk.models.pooling`): ``mean`` a sum, ``stats`` sums of x and x^2 (float64),
  ``attentive_stats`` attention-weighted sums rescaled by a running maximum of the
  attention scores (a running log-sum-exp), ``last`` the last output.

The segment layers then run on the pooled vector, so :meth:`embedding` costs
little at any time. Modes (``stream.mode``; ``stream.exact_incremental``):

``incremental`` (exact)
    ``cmvn: none`` or ``global`` (causal), no VAD, a forward-only encoder and one
    of the four poolings: the carried state gives the exact offline embedding of
    everything so far, interim and final.
``incremental+final`` (interim approximate, final exact)
    ``cmvn: utterance`` subtracts the mean of the whole utterance, which is not
    known until it ends; energy VAD also needs the utterance's mean energy. Interim
    embeddings normalise each frame with the running mean of the frames so far (and
    do not drop non-speech frames); :meth:`finish` recomputes the exact offline
    embedding from the buffered features (one pass over the utterance, once).
``rerun`` (every embedding exact for the audio so far)
    A bidirectional encoder (its backward direction starts at the end) or another
    pooling cannot carry state: :meth:`embedding` runs the model over all buffered
    features, normalised with the statistics of everything so far (cost grows
    with the audio: one full pass per call).

The final embedding equals the offline one (``compute_features`` -> ``normalise``
-> ``model.embed``) within float rounding in every mode.
"""

from __future__ import annotations

import io
import os
import struct
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

import kaldi_native_fbank as knf
import numpy as np
import soundfile as sf
import soxr
import torch

from spk.audio import MEMORY_CONTAINERS, RESAMPLE_QUALITY, AudioError
from spk.features import FeatureConfig, cmvn_stats, energy_vad, frame_log_energy, normalise, online_extractor
from spk.inference import embed_features
from spk.models.embedder import SpeakerEmbedder
from spk.scoring import centred_cosine
from spk.model_dir import TrainedModel

SAMPLE_RATE = 16000


# --------------------------------------------------------------------------- #
# features
# --------------------------------------------------------------------------- #

class OnlineFeatures:
    """Raw (un-normalised) feature frames of a waveform that arrives in chunks.

    The frames equal :func:`spk.features.compute_features` of the whole waveform
    without VAD: static fbank/MFCC from kaldi-native-fbank's online extractor,
    then deltas computed on a window of static frames around the new ones (Kaldi
    clamps delta windows at the utterance edges only, so a frame's deltas are
    final once ``delta_order * delta_window`` further frames exist, or at the end).
    """

    def __init__(self, config: FeatureConfig):
        if config.sample_rate != SAMPLE_RATE:
            raise ValueError(f"streaming needs features at {SAMPLE_RATE} Hz; the feature config says "
                             f"sample_rate: {config.sample_rate}")
        self.config = config
        self._extractor = online_extractor(config)  # the offline feature options, exactly
        self._context = config.delta_order * config.delta_window if config.delta_order else 0
        self._static = np.zeros((0, config.base_dim), dtype=np.float32)  # tail kept for delta context
        self._static_start = 0  # index of self._static[0] among all static frames
        self._static_total = 0
        self.num_frames = 0  # frames emitted so far
        self._finished = False

    def accept_waveform(self, samples: np.ndarray) -> np.ndarray:
        """Add float samples in [-1, 1]; returns the newly completed frames ``(n, dim)``."""
        if self._finished:
            raise RuntimeError("the waveform was finished; start a new stream")
        self._extractor.accept_waveform(float(self.config.sample_rate),
                                        np.asarray(samples, dtype=np.float32) * 32768.0)
        return self._collect(final=False)

    def finish(self) -> np.ndarray:
        """Mark the end of the waveform; returns the last frames (those that waited for right context)."""
        if self._finished:
            return np.zeros((0, self.config.dim), dtype=np.float32)
        self._extractor.input_finished()
        self._finished = True
        return self._collect(final=True)

    def _collect(self, final: bool) -> np.ndarray:
        ready = self._extractor.num_frames_ready
        if ready > self._static_total:
            new = np.array([self._extractor.get_frame(i) for i in range(self._static_total, ready)],
                           dtype=np.float32)
            self._extractor.pop(ready)  # keep no second copy of the frames inside the extractor
            self._static = np.concatenate([self._static, new]) if len(self._static) else new
            self._static_total = ready
        if not self._context:
            out, self._static = self._static, self._static[:0]
            self._static_start = self._static_total
            self.num_frames = self._static_total
            return out
        upto = self._static_total if final else max(self.num_frames, self._static_total - self._context)
        if upto <= self.num_frames:
            return np.zeros((0, self.config.dim), dtype=np.float32)
        options = knf.DeltaOptions()
        options.order = self.config.delta_order
        options.window = self.config.delta_window
        window_start = max(0, self.num_frames - self._context)  # the clamp at 0 is the real utterance start
        window = self._static[window_start - self._static_start: upto + self._context - self._static_start]
        feats = knf.compute_deltas(options, window)
        out = np.ascontiguousarray(feats[self.num_frames - window_start: upto - window_start], dtype=np.float32)
        self.num_frames = upto
        keep_from = max(0, upto - self._context)
        self._static = self._static[keep_from - self._static_start:]
        self._static_start = keep_from
        return out


class _Frames:
    """A growing (n, dim) float32 matrix with amortised appends."""

    def __init__(self, dim: int):
        self._data = np.zeros((256, dim), dtype=np.float32)
        self.size = 0

    def append(self, rows: np.ndarray) -> None:
        needed = self.size + len(rows)
        if needed > len(self._data):
            grown = np.zeros((max(needed, 2 * len(self._data)), self._data.shape[1]), dtype=np.float32)
            grown[: self.size] = self._data[: self.size]
            self._data = grown
        self._data[self.size: needed] = rows
        self.size = needed

    def view(self) -> np.ndarray:
        return self._data[: self.size]


# --------------------------------------------------------------------------- #
# the streaming embedder
# --------------------------------------------------------------------------- #

class StreamingEmbedder:
    """Running speaker embedding of audio fed in chunks; see the module docstring for the modes.

    ``model`` is a :class:`SpeakerEmbedder` (put in eval mode), ``feature_config``
    the features it was trained on, ``global_cmvn`` the training set's CMVN
    statistics (needed with ``cmvn: global``).
    """

    def __init__(self, model: SpeakerEmbedder, feature_config: FeatureConfig,
                 global_cmvn: np.ndarray | None = None):
        if feature_config.cmvn == "global" and global_cmvn is None:
            raise ValueError("the features use cmvn: global; pass global_cmvn (the training set's CMVN stats, "
                             "the model's global_cmvn)")
        self.model = model.eval()
        self.feature_config = feature_config
        self.global_cmvn = None if global_cmvn is None else np.asarray(global_cmvn, dtype=np.float64)
        self.device = next(model.parameters()).device
        # a forward-only encoder carries its state from chunk to chunk, and the pooling keeps running sums
        self._incremental = (getattr(model.encoder, "carries_state", False)
                             and getattr(model.pooling, "running", lambda: None)() is not None)
        causal = feature_config.cmvn != "utterance" and not feature_config.vad
        if not self._incremental:
            self.mode = "rerun"
        else:
            self.mode = "incremental" if causal else "incremental+final"
        self.exact_incremental = self.mode == "incremental"
        self.reset()

    @classmethod
    def for_model(cls, trained: TrainedModel) -> "StreamingEmbedder":
        """A stream for a model loaded by :func:`spk.model_dir.load_trained`."""
        return cls(trained.embedder, trained.feature_config, trained.global_cmvn)

    def reset(self) -> None:
        """Forget all audio: start a new utterance."""
        self._features = OnlineFeatures(self.feature_config)
        self._raw = _Frames(self.feature_config.dim)  # kept unless the running embedding is already exact
        self._num_frames = 0
        self._waveform: list[np.ndarray] = []  # kept only for VAD, which needs the whole utterance
        self._running_stats = None
        self._state = None
        self._pool = self.model.pooling.running() if self._incremental else None
        self._cache: tuple[int, np.ndarray] | None = None
        self._final: np.ndarray | None = None
        self.num_samples = 0

    @property
    def seconds(self) -> float:
        """Seconds of audio accepted so far."""
        return self.num_samples / SAMPLE_RATE

    @property
    def num_frames(self) -> int:
        """Feature frames available so far (deltas lag their right context until :meth:`finish`)."""
        return self._num_frames

    @property
    def finished(self) -> bool:
        return self._final is not None

    def accept_waveform(self, samples: np.ndarray) -> None:
        """Add a chunk of 16 kHz mono float samples in [-1, 1] (any length, e.g. 0.1-0.5 s)."""
        if self._final is not None:
            raise RuntimeError("this stream is finished; call reset() to start a new utterance")
        samples = np.asarray(samples)
        if samples.ndim != 1:
            raise ValueError(f"accept_waveform takes mono samples (one dimension), got shape {samples.shape}")
        if not np.issubdtype(samples.dtype, np.floating):
            raise ValueError(f"accept_waveform takes float samples in [-1, 1], got {samples.dtype}; "
                             "divide 16-bit PCM by 32768")
        samples = samples.astype(np.float32, copy=False)
        if self.feature_config.vad:
            self._waveform.append(samples.copy())
        self.num_samples += len(samples)
        self._add_frames(self._features.accept_waveform(samples))

    def _add_frames(self, raw: np.ndarray) -> None:
        if not len(raw):
            return
        self._num_frames += len(raw)
        if self.mode != "incremental":  # a long live stream then needs no memory per frame
            self._raw.append(raw)
        if self.feature_config.cmvn == "utterance":
            stats = cmvn_stats(raw)
            self._running_stats = stats if self._running_stats is None else self._running_stats + stats
        if self._pool is not None:
            self._step(self._normalise(raw))

    def _normalise(self, raw: np.ndarray) -> np.ndarray:
        """CMVN with what is known now: global stats, or the running stats of the utterance so far."""
        return normalise(raw, self.feature_config, utterance_stats=self._running_stats,
                         global_stats=self.global_cmvn)

    @torch.inference_mode()
    def _step(self, feats: np.ndarray) -> None:
        """Run new frames through the encoder from the carried state and into the pooling sums."""
        x = torch.from_numpy(feats).to(self.device).unsqueeze(0)
        output, self._state = self.model.encoder.step(x, self._state)
        self._pool.update(output[0])

    @torch.inference_mode()
    def _from_pooled(self) -> np.ndarray:
        pooled = self._pool.pooled().to(torch.float32).unsqueeze(0)
        return self.model.embed_pooled(pooled)[0].cpu().numpy()

    def _offline(self, feats: np.ndarray) -> np.ndarray:
        return embed_features(self.model, np.ascontiguousarray(feats), device=self.device)

    def embedding(self) -> np.ndarray:
        """The running embedding (float32, ``[E]``) of everything accepted so far."""
        if self._final is not None:
            return self._final
        if self._num_frames == 0:
            raise ValueError(f"no feature frames yet ({self.seconds:.3f} s of audio): an embedding needs "
                             f"at least one {self.feature_config.frame_length_ms:g} ms frame")
        if self._cache is not None and self._cache[0] == self._num_frames:
            return self._cache[1]
        if self._pool is not None:
            embedding = self._from_pooled()
        else:
            embedding = self._offline(self._normalise(self._raw.view()))
        self._cache = (self._num_frames, embedding)
        return embedding

    def finish(self) -> np.ndarray:
        """End the utterance and return its final embedding, equal to the offline one."""
        if self._final is not None:
            return self._final
        self._add_frames(self._features.finish())
        if self.feature_config.vad:
            # VAD needs the whole utterance: compute_features' VAD step, on the frames already made
            waveform = np.concatenate(self._waveform) if self._waveform else np.zeros(0, np.float32)
            raw = self._raw.view()
            feats = raw[energy_vad(frame_log_energy(waveform, self.feature_config)[: len(raw)], self.feature_config)]
            if len(feats) == 0:
                raise ValueError(f"no frame to embed in the {self.seconds:.2f} s of audio (too short, or "
                                 "energy VAD found no speech)")
            self._final = self._offline(normalise(feats, self.feature_config, global_stats=self.global_cmvn))
        elif self._num_frames == 0:
            self.embedding()  # raises: too little audio for one frame
        elif self.mode == "incremental":
            self._final = self.embedding()
        else:  # with the statistics of the whole utterance, as offline
            self._final = self._offline(normalise(self._raw.view(), self.feature_config,
                                                  global_stats=self.global_cmvn))
        return self._final


# --------------------------------------------------------------------------- #
# scores and audio input
# --------------------------------------------------------------------------- #

def cosine_score(embedding: np.ndarray, speaker_embedding: np.ndarray, center: np.ndarray | None = None) -> float:
    """Cosine similarity after subtracting ``center`` from both (as ``spk score --center-scp``)."""
    a, b = np.ravel(embedding), np.ravel(speaker_embedding)
    if a.shape != b.shape:
        raise ValueError(f"the speaker embedding has dimension {b.size} but the model's embeddings {a.size}")
    return float(centred_cosine(a, b, center)[0])


def stream_scores(embedder: StreamingEmbedder | TrainedModel, speaker_embedding: np.ndarray,
                  chunks: Iterable[np.ndarray], *, center: np.ndarray | None = None) -> Iterator[tuple[float, float]]:
    """Yield ``(seconds_so_far, cosine score)`` as chunks arrive; the last item is the final score.

    ``embedder`` is a fresh :class:`StreamingEmbedder` or a model from
    :func:`spk.model_dir.load_trained`. A running score follows every chunk once
    there is a frame; after the chunks run out, one more item holds the score of
    :meth:`StreamingEmbedder.finish`, the exact offline score (same seconds).
    ``center`` is subtracted from both embeddings first, as in ``spk score``.
    """
    stream = StreamingEmbedder.for_model(embedder) if isinstance(embedder, TrainedModel) else embedder
    if stream.num_samples or stream.finished:
        raise ValueError("stream_scores needs a fresh stream; call reset() on it first")
    for chunk in chunks:
        stream.accept_waveform(chunk)
        if stream.num_frames:
            yield stream.seconds, cosine_score(stream.embedding(), speaker_embedding, center)
    yield stream.seconds, cosine_score(stream.finish(), speaker_embedding, center)


def read_chunks(source: str | os.PathLike | BinaryIO, chunk_seconds: float = 0.25, *,
                raw: bool = False) -> Iterator[np.ndarray]:
    """Audio as 16 kHz mono float32 chunks of ``chunk_seconds`` (the last may be shorter).

    ``source`` is a file path (any format soundfile reads), ``"-"`` for standard
    input, or a binary stream (e.g. a subprocess's stdout). A stream carries WAV
    (PCM 8/16/24/32-bit or float; its ``RIFF`` header), read chunk by chunk as it
    arrives; FLAC or Ogg (their own headers), decoded from memory once the stream
    ends; or, only with ``raw=True``, raw 16 kHz 16-bit little-endian mono PCM. Any
    other stream is an :class:`AudioError`: bytes are never taken for audio unless
    asked. A live pipe (``arecord -f S16_LE -r 16000 -c 1 -t raw`` with ``raw=True``,
    or ``-t wav``) gives chunks in real time. Other rates are resampled with soxr.
    """
    if not chunk_seconds > 0:
        raise ValueError(f"chunk_seconds must be positive, not {chunk_seconds!r}")
    if isinstance(source, (str, os.PathLike)) and str(source) != "-":
        yield from _file_chunks(Path(source), chunk_seconds)
        return
    stream = sys.stdin.buffer if isinstance(source, (str, os.PathLike)) else source
    yield from _stream_chunks(stream, chunk_seconds, raw)


def _file_chunks(path: Path, chunk_seconds: float) -> Iterator[np.ndarray]:
    if not path.is_file():
        raise AudioError(f"audio file {path} does not exist")
    try:
        handle = sf.SoundFile(str(path))
    except (sf.LibsndfileError, RuntimeError) as error:
        raise AudioError(f"audio file {path} cannot be read ({error}); convert it to WAV or FLAC") from None
    yield from _soundfile_chunks(handle, chunk_seconds)


def _file_chunks_in_memory(data: bytes, kind: str, chunk_seconds: float) -> Iterator[np.ndarray]:
    try:
        handle = sf.SoundFile(io.BytesIO(data))
    except (sf.LibsndfileError, RuntimeError) as error:
        raise AudioError(f"stdin: {kind} audio that cannot be decoded ({error})") from None
    yield from _soundfile_chunks(handle, chunk_seconds)


def _soundfile_chunks(handle: sf.SoundFile, chunk_seconds: float) -> Iterator[np.ndarray]:
    """The chunks of an open soundfile, mono, resampled to 16 kHz."""
    with handle:
        resampler = _Resampler(handle.samplerate)
        block = max(1, round(chunk_seconds * handle.samplerate))
        for frames in handle.blocks(blocksize=block, dtype="float32", always_2d=True):
            out = resampler(frames.mean(axis=1, dtype=np.float32) if frames.shape[1] > 1 else frames[:, 0])
            if len(out):
                yield out
        tail = resampler.flush()
        if len(tail):
            yield tail


class _Resampler:
    """Chunk-wise soxr resampling to 16 kHz (identity at 16 kHz), with clipping as spk.audio does."""

    def __init__(self, rate: int):
        self._stream = None if rate == SAMPLE_RATE else soxr.ResampleStream(
            rate, SAMPLE_RATE, 1, dtype="float32", quality=RESAMPLE_QUALITY)

    def __call__(self, samples: np.ndarray, last: bool = False) -> np.ndarray:
        samples = np.ascontiguousarray(samples, dtype=np.float32)
        if self._stream is not None:
            samples = self._stream.resample_chunk(samples, last=last)
        return np.clip(samples, -1.0, 1.0).astype(np.float32, copy=False)

    def flush(self) -> np.ndarray:
        if self._stream is None:
            return np.zeros(0, dtype=np.float32)
        return self(np.zeros(0, dtype=np.float32), last=True)


_PCM, _FLOAT, _EXTENSIBLE = 1, 3, 0xFFFE


def _read_exact(stream: BinaryIO, size: int) -> bytes:
    """Up to ``size`` bytes; fewer only at the end of the stream (pipes return short reads)."""
    parts, remaining = [], size
    while remaining > 0:
        part = stream.read(remaining)
        if not part:
            break
        parts.append(part)
        remaining -= len(part)
    return b"".join(parts)


def _wav_header(stream: BinaryIO, first: bytes) -> tuple[int, int, int, str, int | None]:
    """Parse a WAV header from a non-seekable stream: (rate, channels, bytes per sample, kind, data bytes)."""
    rest = _read_exact(stream, 8)
    if len(rest) < 8 or rest[4:8] != b"WAVE":
        raise AudioError("stdin: a RIFF header without WAVE; send WAV or raw 16 kHz 16-bit PCM")
    fmt = None
    while True:
        head = _read_exact(stream, 8)
        if len(head) < 8:
            raise AudioError("stdin: the WAV stream ended before its data chunk")
        chunk_id, size = head[:4], struct.unpack("<I", head[4:])[0]
        if chunk_id == b"data":
            if fmt is None:
                raise AudioError("stdin: the WAV stream has a data chunk before its fmt chunk")
            rate, channels, width, kind = fmt
            unknown = size in (0, 0xFFFFFFFF) or first == b"RF64"  # streamed WAV: length not known
            return rate, channels, width, kind, None if unknown else size
        body = _read_exact(stream, size + (size & 1))
        if chunk_id == b"fmt ":
            tag, channels, rate, _, _, bits = struct.unpack("<HHIIHH", body[:16])
            if tag == _EXTENSIBLE and len(body) >= 26:
                tag = struct.unpack("<H", body[24:26])[0]
            if tag == _PCM and bits in (8, 16, 24, 32):
                kind = "int"
            elif tag == _FLOAT and bits in (32, 64):
                kind = "float"
            else:
                raise AudioError(f"stdin: WAV format tag {tag} with {bits} bits is not supported; send PCM "
                                 "or float WAV, or raw 16 kHz 16-bit PCM")
            if channels < 1 or rate < 1:
                raise AudioError(f"stdin: bad WAV header ({channels} channels at {rate} Hz)")
            fmt = (rate, channels, bits // 8, kind)


def _decode(data: bytes, channels: int, width: int, kind: str) -> np.ndarray:
    """Interleaved little-endian samples -> float32 mono (channel mean), scaled as soundfile does."""
    if kind == "float":
        samples = np.frombuffer(data, dtype="<f4" if width == 4 else "<f8").astype(np.float32)
    elif width == 1:
        samples = (np.frombuffer(data, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 3:
        bytes3 = np.frombuffer(data, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        values = bytes3[:, 0] | (bytes3[:, 1] << 8) | (bytes3[:, 2] << 16)
        samples = (np.where(values >= 1 << 23, values - (1 << 24), values) / float(1 << 23)).astype(np.float32)
    else:
        dtype, scale = ("<i2", 32768.0) if width == 2 else ("<i4", 2147483648.0)
        samples = (np.frombuffer(data, dtype=dtype) / scale).astype(np.float32)
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1, dtype=np.float32)
    return samples


# Containers read from a stream whole (soundfile decodes them from memory), by their first bytes; WAV streams.
_WHOLE_STREAM_FORMATS = {head: kind for head, kind in MEMORY_CONTAINERS.items() if kind != "WAV"}


def _stream_chunks(stream: BinaryIO, chunk_seconds: float, raw: bool) -> Iterator[np.ndarray]:
    if raw:
        rate, channels, width, kind, remaining = SAMPLE_RATE, 1, 2, "int", None
        pending = b""
    else:
        first = _read_exact(stream, 4)
        if first in _WHOLE_STREAM_FORMATS:
            yield from _file_chunks_in_memory(first + stream.read(), _WHOLE_STREAM_FORMATS[first], chunk_seconds)
            return
        if first not in (b"RIFF", b"RF64"):
            raise AudioError(f"stdin: not WAV, FLAC or Ogg audio (it starts with {first!r}); send one of those, "
                             "or raw 16 kHz 16-bit mono PCM saying so (--raw)")
        rate, channels, width, kind, remaining = _wav_header(stream, first)
        pending = b""
    resampler = _Resampler(rate)
    frame_bytes = channels * width
    block = max(1, round(chunk_seconds * rate)) * frame_bytes
    while True:
        want = max(0, block - len(pending))
        if remaining is not None:
            want = min(want, remaining)
        new = _read_exact(stream, want) if want else b""
        if remaining is not None:
            remaining -= len(new)
        data, pending = pending + new, b""
        usable = len(data) - len(data) % frame_bytes  # a torn sample can only be at the very end
        if usable:
            out = resampler(_decode(data[:usable], channels, width, kind))
            if len(out):
                yield out
        if len(new) < want or remaining == 0:  # end of the stream, or of the WAV data chunk
            break
    tail = resampler.flush()
    if len(tail):
        yield tail


__all__ = ["OnlineFeatures", "StreamingEmbedder", "cosine_score", "read_chunks", "stream_scores"]
