"""The inference chain: waveform -> features -> normalisation -> embedder -> embedding -> posteriors.

One path serves every user of a trained model, so their embeddings agree by
construction, not by convention:

- :func:`waveform_features` turns audio into the normalised features the model
  was trained on (:func:`spk.features.compute_features`, then
  :func:`spk.features.normalise`: the same two steps stage 1 stores and
  :class:`spk.feature_store.FeatureStore` applies when stored features are read);
- :func:`embed_features` (one utterance) and :func:`embed_store` (every utterance
  of a data dir's stored features) run the embedder, on whole utterances or on
  fixed-length overlapping windows (:class:`Chunking`) whose length-normalised
  embeddings are averaged;
- :func:`head_posteriors` and :func:`score_posteriors` turn embeddings or scores
  into speaker probabilities.

Utterances (or windows) are sorted by length and batched up to a frame budget,
so padding stays small; the encoders ignore padding, so batching never changes a
result. Streaming (:mod:`spk.streaming`) feeds the same features and model a
chunk at a time and ends at the embedding :func:`embed_features` gives.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from tqdm import tqdm

from spk.feature_store import FeatureStore, pad_batch
from spk.features import FeatureConfig, compute_features, normalise

# Without calibration, identification probabilities are softmax(COSINE_SCALE * cosine): a typical
# AM-softmax scale, which makes a 0.1 cosine gap a factor of e^3.
COSINE_SCALE = 30.0
MAX_FRAMES_PER_BATCH = 60000
# A piece longer than this (10 minutes at a 10 ms shift) runs through a forward-only encoder a block of
# BLOCK_FRAMES at a time, from the carried state, into the pooling's running form: the same embedding,
# in memory that does not grow with the length (a whole 2-hour recording made the CPU LSTM fail).
LONG_PIECE_FRAMES = 60000
BLOCK_FRAMES = 6000


@dataclass(frozen=True)
class Chunking:
    """Fixed-length chunks: ``frames`` frames long, starts ``step`` frames apart (overlap ``frames - step``).

    With ``pad`` the chunks run past the end of the utterance instead (GE2E's
    "partial utterances", as Resemblyzer's ``embed_utterance`` cuts them): see
    :meth:`bounds`; the missing frames are zeros, which is what digital silence gives
    with un-normalised ``mel_power`` features.
    """

    frames: int
    step: int
    pad: bool = False
    min_coverage: float = 0.0

    def __post_init__(self) -> None:
        if self.frames < 1:
            raise ValueError(f"a chunk must be at least 1 frame long, not {self.frames}")
        if not 1 <= self.step <= self.frames:
            raise ValueError(f"the chunk step must be between 1 and the chunk length {self.frames} frames, "
                             f"not {self.step}")
        if not 0.0 <= self.min_coverage <= 1.0:
            raise ValueError(f"the chunk coverage must be between 0 and 1, not {self.min_coverage:g}")

    @classmethod
    def from_seconds(cls, chunk_seconds: float, overlap_seconds: float, frame_shift_ms: float) -> Chunking:
        """Chunks of ``chunk_seconds`` overlapping by ``overlap_seconds``, in frames of ``frame_shift_ms``."""
        if chunk_seconds <= 0:
            raise ValueError(f"--chunk-seconds must be positive, not {chunk_seconds:g}")
        if overlap_seconds < 0:
            raise ValueError(f"--chunk-overlap must be 0 or more seconds, not {overlap_seconds:g}")
        if overlap_seconds >= chunk_seconds:
            raise ValueError(f"--chunk-overlap ({overlap_seconds:g} s) must be smaller than "
                             f"--chunk-seconds ({chunk_seconds:g} s)")
        frames = round(chunk_seconds * 1000 / frame_shift_ms)
        step = frames - round(overlap_seconds * 1000 / frame_shift_ms)
        if frames < 1 or step < 1:
            raise ValueError(
                f"--chunk-seconds {chunk_seconds:g} with --chunk-overlap {overlap_seconds:g} gives chunks of "
                f"{frames} frames starting {step} frames apart at a {frame_shift_ms:g} ms frame shift; "
                "make the chunk longer or the overlap shorter")
        return cls(frames, step)

    def bounds(self, num_frames: int) -> list[tuple[int, int]]:
        """``(start, end)`` frames of the chunks of an utterance of ``num_frames`` frames.

        Chunks start every ``step`` frames; the last one ends at the last frame
        (so it may overlap its neighbour more than the others do) and no frame
        is left out. An utterance no longer than one chunk is one chunk, whole.

        With ``pad``, chunks start every ``step`` frames while a start is at most
        ``num_frames - frames + step``, so the last ones may end past the utterance (an
        utterance shorter than a chunk is one padded chunk); the last chunk is dropped
        when it covers less than ``min_coverage`` of its length with the utterance
        (``(num_frames - 1 - start) / frames``: the audio up to the last frame's
        centre), unless it is the only one.
        """
        if self.pad:
            starts = list(range(0, max(1, num_frames - self.frames + self.step + 1), self.step))
            if len(starts) > 1 and (num_frames - 1 - starts[-1]) / self.frames < self.min_coverage:
                starts.pop()
            return [(start, start + self.frames) for start in starts]
        if num_frames <= self.frames:
            return [(0, num_frames)]
        starts = list(range(0, num_frames - self.frames, self.step)) + [num_frames - self.frames]
        return [(start, start + self.frames) for start in starts]


# --------------------------------------------------------------------------- #
# waveform -> normalised features
# --------------------------------------------------------------------------- #

def waveform_features(waveform: np.ndarray, feature_config: FeatureConfig, global_cmvn: np.ndarray | None = None,
                      *, vad: bool = False) -> np.ndarray:
    """Normalised features ``(T, dim)`` of a float waveform at the config's rate, as training saw them.

    ``vad`` drops non-speech frames by energy VAD even when the config does not ask
    for it; ``global_cmvn`` is needed with ``cmvn: global``.
    """
    config = replace(feature_config, vad=True) if vad and not feature_config.vad else feature_config
    feats = compute_features(waveform, config)
    return normalise(np.ascontiguousarray(feats), feature_config, global_stats=global_cmvn)


# --------------------------------------------------------------------------- #
# features -> embeddings
# --------------------------------------------------------------------------- #

def length_batches(lengths: np.ndarray, max_frames_per_batch: int) -> Iterator[list[int]]:
    """Indices of ``lengths`` in batches, longest first, each padded to at most ``max_frames_per_batch``.

    A single item longer than the budget is a batch of its own.
    """
    order = np.argsort(-np.asarray(lengths), kind="stable")
    batch: list[int] = []
    for index in order:
        # sorted longest first, so the first item of a batch sets its padded length
        if batch and (len(batch) + 1) * lengths[batch[0]] > max_frames_per_batch:
            yield batch
            batch = []
        batch.append(int(index))
    if batch:
        yield batch


@torch.inference_mode()
def embed_pieces(embedder, matrix: Callable[[int], np.ndarray], pieces: Sequence[tuple[int, int, int]], *,
                 device: str | torch.device = "cpu", max_frames_per_batch: int = MAX_FRAMES_PER_BATCH,
                 show_progress: bool = False, unit: str = "utt") -> np.ndarray:
    """Embeddings of feature-matrix pieces ``(matrix index, start frame, end frame)``, one row per piece.

    ``matrix(i)`` gives the i-th normalised feature matrix; pieces of one matrix
    within a batch share one read of it.
    """
    lengths = np.array([end - start for _, start, end in pieces], dtype=np.int64)
    out = np.zeros((len(pieces), embedder.embedding_dim), dtype=np.float32)
    with tqdm(total=len(pieces), desc="embeddings", unit=unit, leave=False, disable=not show_progress) as progress:
        long = [i for i, length in enumerate(lengths) if length > LONG_PIECE_FRAMES and _embeds_blockwise(embedder)]
        for i in long:
            index, start, end = pieces[i]
            out[i] = _embed_blockwise(embedder, matrix(index)[start:end], device)
            progress.update(1)
        short = np.setdiff1d(np.arange(len(pieces)), long)
        for batch in length_batches(lengths[short], max_frames_per_batch):
            batch = short[batch]
            matrices: dict[int, np.ndarray] = {}
            rows = []
            for index, start, end in (pieces[i] for i in batch):
                if index not in matrices:
                    matrices[index] = matrix(index)
                rows.append(_zero_padded(matrices[index], start, end))
            feats, batch_lengths = pad_batch(rows)
            out[batch] = embedder.embed(feats.to(device), batch_lengths.to(device)).float().cpu().numpy()
            progress.update(len(batch))
    return out


def _embeds_blockwise(embedder) -> bool:
    """Whether the embedder's encoder carries its state (forward-only) and its pooling has a running form."""
    return getattr(embedder.encoder, "carries_state", False) and embedder.pooling.running() is not None


@torch.inference_mode()
def _embed_blockwise(embedder, feats: np.ndarray, device: str | torch.device) -> np.ndarray:
    """The embedding of one long feature matrix, encoded :data:`BLOCK_FRAMES` at a time."""
    state, running = None, embedder.pooling.running()
    for start in range(0, len(feats), BLOCK_FRAMES):
        block = torch.from_numpy(np.ascontiguousarray(feats[start:start + BLOCK_FRAMES])).unsqueeze(0).to(device)
        frames, state = embedder.encoder.step(block, state)
        running.update(frames[0])
    pooled = running.pooled().to(torch.float32).unsqueeze(0)
    return embedder.embed_pooled(pooled)[0].float().cpu().numpy()


def _zero_padded(feats: np.ndarray, start: int, end: int) -> np.ndarray:
    """Frames ``start:end`` of ``feats``, with zero frames for those past its end (padded chunks)."""
    piece = feats[start:end]
    missing = end - start - len(piece)
    if missing <= 0:
        return piece
    return np.concatenate([piece, np.zeros((missing, feats.shape[1]), dtype=feats.dtype)])


def average_chunks(chunk_embeddings: np.ndarray, owners: np.ndarray, num_utterances: int) -> np.ndarray:
    """Per utterance, the mean of its chunks' length-normalised embeddings (``owners[i]``: chunk i's row)."""
    chunks = np.asarray(chunk_embeddings, dtype=np.float64)
    unit = chunks / (np.linalg.norm(chunks, axis=1, keepdims=True) + 1e-12)
    sums = np.zeros((num_utterances, chunks.shape[1]), dtype=np.float64)
    np.add.at(sums, owners, unit)
    counts = np.bincount(owners, minlength=num_utterances)
    if np.any(counts == 0):
        raise ValueError(f"{int(np.sum(counts == 0))} utterance(s) have no chunk")
    return (sums / counts[:, None]).astype(np.float32)


def embed_matrices(embedder, matrix: Callable[[int], np.ndarray], lengths: Sequence[int], *,
                   chunking: Chunking | None = None, device: str | torch.device = "cpu",
                   max_frames_per_batch: int = MAX_FRAMES_PER_BATCH, show_progress: bool = False) -> np.ndarray:
    """Embeddings of ``len(lengths)`` normalised feature matrices (``matrix(i)`` has ``lengths[i]`` frames).

    Whole matrices by default. With ``chunking`` each is cut into the chunks of
    :meth:`Chunking.bounds`; the chunks of all matrices are batched together, and
    a matrix's embedding is the mean of its chunks' length-normalised embeddings
    (so a matrix of one chunk gets its own embedding scaled to unit length).
    """
    if chunking is None:
        pieces = [(i, 0, int(length)) for i, length in enumerate(lengths)]
        return embed_pieces(embedder, matrix, pieces, device=device, max_frames_per_batch=max_frames_per_batch,
                            show_progress=show_progress)
    pieces = [(i, start, end) for i, length in enumerate(lengths) for start, end in chunking.bounds(int(length))]
    chunks = embed_pieces(embedder, matrix, pieces, device=device, max_frames_per_batch=max_frames_per_batch,
                          show_progress=show_progress, unit="chunk")
    return average_chunks(chunks, np.array([owner for owner, _, _ in pieces], dtype=np.int64), len(lengths))


def embed_features(embedder, feats: np.ndarray, *, chunking: Chunking | None = None,
                   device: str | torch.device = "cpu") -> np.ndarray:
    """The embedding (float32, ``[E]``) of one utterance's normalised features, whole or windowed."""
    if len(feats) == 0:
        raise ValueError("no feature frames to embed")
    return embed_matrices(embedder, lambda _: feats, [len(feats)], chunking=chunking, device=device)[0]


def embed_store(embedder, store: FeatureStore, keys: list[str], *, device: str | torch.device = "cpu",
                max_frames_per_batch: int = MAX_FRAMES_PER_BATCH, chunking: Chunking | None = None,
                show_progress: bool = True) -> np.ndarray:
    """Embeddings of the stored utterances ``keys`` of ``store`` (rows in the order of ``keys``)."""
    return embed_matrices(embedder, lambda i: store[keys[i]], [store.num_frames(key) for key in keys],
                          chunking=chunking, device=device, max_frames_per_batch=max_frames_per_batch,
                          show_progress=show_progress)


# --------------------------------------------------------------------------- #
# embeddings or scores -> speaker probabilities
# --------------------------------------------------------------------------- #

@torch.inference_mode()
def head_posteriors(embedder, embeddings: np.ndarray) -> np.ndarray:
    """Softmax over the training speakers of the classifier head, one row per embedding row."""
    device = next(embedder.parameters()).device
    logits = embedder.classify(torch.from_numpy(np.asarray(embeddings, dtype=np.float32)).to(device))
    return torch.softmax(logits.float(), dim=1).cpu().numpy()


def score_posteriors(scores: np.ndarray, scale: float = COSINE_SCALE) -> np.ndarray:
    """Softmax over the last axis of ``scale * scores`` (float64): probabilities from cosine scores
    (``scale`` COSINE_SCALE) or from calibrated LLRs (``scale`` 1: posteriors under equal priors)."""
    logits = scale * np.asarray(scores, dtype=np.float64)
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def unit_length(vectors: np.ndarray) -> np.ndarray:
    """Rows (or a vector) scaled to unit L2 norm, float32."""
    vectors = np.asarray(vectors)
    # a vector's norm as np.linalg.norm computes it (a dot product), rows' as a reduction: each rounds its own way
    norms = np.linalg.norm(vectors) if vectors.ndim == 1 else np.linalg.norm(vectors, axis=-1, keepdims=True)
    return (vectors / (norms + 1e-12)).astype(np.float32)
