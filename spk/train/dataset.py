"""Training examples: random fixed-length chunks of normalised features, with speaker labels.

An epoch is a shuffled list of ``(utterance, start)`` chunks drawn with a
generator seeded by ``(seed, epoch)``, so an epoch can be replayed exactly after
a restart.  All chunks of one batch share one length, drawn from the configured
range, so batches need no padding.  A sampler's ``augmenter`` (see
:mod:`spk.augment.online`) may replace chunks by augmented ones; it is
called with each batch's position, so augmentation replays exactly as well.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from spk.feature_store import ChunkSource

logger = logging.getLogger(__name__)


@dataclass
class Batch:
    """A batch of equal-length chunks: feats (B, T, D), lengths (B,), labels (B,)."""

    feats: torch.Tensor
    lengths: torch.Tensor
    labels: torch.Tensor

    def pin_memory(self) -> "Batch":
        """The batch in page-locked memory, for fast non-blocking copies to a GPU (DataLoader calls this)."""
        return Batch(self.feats.pin_memory(), self.lengths.pin_memory(), self.labels.pin_memory())


class ChunkSampler:
    """Plans the chunks of each epoch and cuts batches from a :class:`FeatureStore`.

    Each utterance gives chunks in proportion to its length, so a speaker with
    more speech is seen more often.  ``oversample`` instead draws the epoch's
    chunks (with replacement) so that every speaker gets the same share, within
    a speaker in proportion to utterance length: the usual answer to imbalanced data.
    """

    def __init__(self, store: ChunkSource, utt2label: dict[str, int], *, batch_size: int,
                 chunk_frames: tuple[int, int], chunks_per_second: float = 0.0, seed: int = 0,
                 frame_shift_s: float = 0.01, oversample: bool = False):
        self.store = store
        self.utts = [u for u in store.keys if u in utt2label]
        missing = len(store.keys) - len(self.utts)
        if missing:
            logger.warning("%d utterances with features have no speaker label; not used", missing)
        if not self.utts:
            raise ValueError("no training utterances: feats.scp and utt2spk have no utterance in common")
        self.labels = np.array([utt2label[u] for u in self.utts], dtype=np.int64)
        self.lengths = np.array([store.num_frames(u) for u in self.utts], dtype=np.int64)
        self.store_rows = np.array([store.index_of(u) for u in self.utts], dtype=np.int64)  # positions in store.keys
        self.batch_size = batch_size
        self.chunk_frames = chunk_frames
        self.seed = seed
        self.rank, self.world_size = 0, 1
        mean_chunk = (chunk_frames[0] + chunk_frames[1]) / 2
        if chunks_per_second > 0:
            per_utt = self.lengths * frame_shift_s * chunks_per_second
        else:
            per_utt = self.lengths / mean_chunk
        self.chunks_per_utt = np.maximum(1, np.round(per_utt)).astype(np.int64)
        self.oversample = oversample
        # Called as augmenter(batch, chunks, epoch, batch_index) -> Batch on every batch, e.g. a
        # spk.augment.online.ChunkAugmenter; it must depend on nothing but its arguments (resume, DDP).
        self.augmenter = None

    def num_batches(self) -> int:
        """Batches per epoch over all processes (the last partial batch is dropped)."""
        return int(self.chunks_per_utt.sum()) // self.batch_size

    def shard(self, rank: int, world_size: int) -> None:
        """Make :meth:`batches` yield only this process's share (every ``world_size``-th batch, from ``rank``).

        All processes plan the same epoch, so together they see each batch once.
        """
        self.rank, self.world_size = rank, world_size

    def num_local_batches(self) -> int:
        """Batches per epoch for this process (equal for every process)."""
        return self.num_batches() // self.world_size

    def epoch_plan(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """(utterance index per chunk, chunk length per batch) for ``epoch``, deterministic."""
        rng = np.random.default_rng([self.seed, epoch])
        if self.oversample:
            order = rng.choice(len(self.utts), size=self.num_batches() * self.batch_size,
                               p=self.balanced_probabilities())
        else:
            order = np.repeat(np.arange(len(self.utts)), self.chunks_per_utt)
            rng.shuffle(order)
            order = order[: self.num_batches() * self.batch_size]
        chunk_lengths = rng.integers(self.chunk_frames[0], self.chunk_frames[1] + 1, size=self.num_batches())
        return order, chunk_lengths

    def balanced_probabilities(self) -> np.ndarray:
        """Per-utterance draw probabilities giving each speaker an equal share of chunks."""
        per_speaker = np.bincount(self.labels, weights=self.chunks_per_utt)
        speakers = np.count_nonzero(per_speaker)
        return self.chunks_per_utt / per_speaker[self.labels] / speakers

    def plan(self, epoch: int) -> "EpochPlan":
        """Everything that decides ``epoch``'s batches: a pure function of the seed and the epoch."""
        order, chunk_lengths = self.epoch_plan(epoch)
        offsets = np.random.default_rng([self.seed, epoch, 1]).random(len(order))
        return EpochPlan(epoch, order, chunk_lengths, offsets)

    def batch_at(self, plan: "EpochPlan", local: int) -> Batch:
        """This process's ``local``-th batch of ``plan``'s epoch; the same in any process that asks."""
        b = local * self.world_size + self.rank
        rows = slice(b * self.batch_size, (b + 1) * self.batch_size)
        batch, starts = self._cut(plan.order[rows], plan.offsets[rows], int(plan.chunk_lengths[b]))
        if self.augmenter is not None:
            chunks = [(self.utts[utt_index], start) for utt_index, start in zip(plan.order[rows], starts)]
            batch = self.augmenter(batch, chunks, plan.epoch, b)
        return batch

    def batches(self, epoch: int, start_batch: int = 0):
        """Yield this process's batches of ``epoch`` from its ``start_batch``-th on (to resume mid-epoch)."""
        plan = self.plan(epoch)
        for local in range(start_batch, self.num_local_batches()):
            yield self.batch_at(plan, local)

    def _cut(self, utt_indices: np.ndarray, offsets: np.ndarray, chunk_length: int) -> tuple[Batch, list[int]]:
        """One chunk of ``chunk_length`` frames (or the shortest utterance's length) per utterance,
        with each chunk's first frame. Utterances are addressed by number, not by name (see
        :class:`~spk.feature_store.ChunkSource`)."""
        length = int(min(chunk_length, self.lengths[utt_indices].min()))
        chunks, starts = [], []
        for utt_index, offset in zip(utt_indices, offsets):
            start = int(offset * (int(self.lengths[utt_index]) - length + 1))
            chunks.append(self.store.chunk_at(int(self.store_rows[utt_index]), start, length))
            starts.append(start)
        batch = Batch(
            feats=torch.from_numpy(np.stack(chunks)),
            lengths=torch.full((len(utt_indices),), length, dtype=torch.int64),
            labels=torch.from_numpy(self.labels[utt_indices]),
        )
        return batch, starts


@dataclass
class EpochPlan:
    """One epoch's chunks: utterance index per chunk, chunk length per batch, start offset (0-1) per chunk."""

    epoch: int
    order: np.ndarray
    chunk_lengths: np.ndarray
    offsets: np.ndarray


class SpeakerBalancedSampler(ChunkSampler):
    """Batches of P speakers x K chunks, as triplet, contrastive and GE2E losses need.

    Each epoch walks through the speakers in a shuffled order, P at a time (a
    speaker appears about equally often whatever its amount of speech), and draws
    K of each speaker's utterances (with repeats when it has fewer than K).  The
    number of batches per epoch matches the chunk sampler's, so epochs cost the same.
    """

    def __init__(self, store: ChunkSource, utt2label: dict[str, int], *, speakers_per_batch: int,
                 utts_per_speaker: int, chunk_frames: tuple[int, int], chunks_per_second: float = 0.0,
                 seed: int = 0):
        super().__init__(store, utt2label, batch_size=speakers_per_batch * utts_per_speaker,
                         chunk_frames=chunk_frames, chunks_per_second=chunks_per_second, seed=seed)
        self.speakers_per_batch = speakers_per_batch
        self.utts_per_speaker = utts_per_speaker
        self.utts_of = [np.flatnonzero(self.labels == label) for label in np.unique(self.labels)]
        if len(self.utts_of) < speakers_per_batch:
            raise ValueError(f"P x K batches need at least P={speakers_per_batch} speakers; "
                             f"the training set has {len(self.utts_of)}")

    def epoch_plan(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, epoch])
        num_batches = self.num_batches()
        speaker_order = np.concatenate([rng.permutation(len(self.utts_of))
                                        for _ in range(num_batches * self.speakers_per_batch
                                                       // len(self.utts_of) + 1)])
        order = []
        for b in range(num_batches):
            for speaker in self._distinct(speaker_order, b * self.speakers_per_batch):
                utts = self.utts_of[speaker]
                order.append(rng.choice(utts, size=self.utts_per_speaker,
                                        replace=len(utts) < self.utts_per_speaker))
        chunk_lengths = rng.integers(self.chunk_frames[0], self.chunk_frames[1] + 1, size=num_batches)
        return np.concatenate(order) if order else np.zeros(0, dtype=np.int64), chunk_lengths

    def _distinct(self, speaker_order: np.ndarray, start: int) -> np.ndarray:
        """The P speakers of the batch starting at ``start`` of ``speaker_order``, all different.

        A batch that straddles two of the concatenated permutations can repeat a
        speaker (when P does not divide the number of speakers); each repeat is
        swapped, in ``speaker_order`` itself, with the next later speaker not yet
        in the batch, so the batches after it stay a walk through the speakers.
        """
        end = start + self.speakers_per_batch
        seen: set[int] = set()
        for position in range(start, end):
            if speaker_order[position] in seen:
                later = next((j for j in range(end, len(speaker_order)) if speaker_order[j] not in seen), None)
                if later is None:  # the tail holds only speakers of this batch: take an unused one
                    speaker_order[position] = min(set(range(len(self.utts_of))) - seen)
                else:
                    speaker_order[position], speaker_order[later] = speaker_order[later], speaker_order[position]
            seen.add(int(speaker_order[position]))
        return speaker_order[start:end]
