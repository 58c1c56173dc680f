"""Normalised feature matrices of a data dir (``feats.scp`` + ``cmvn.scp``), and padded batches of them.

Training, validation and embedding extraction all read stored features through
:class:`FeatureStore`, so a matrix is normalised the same way wherever it is used.
Training cuts its chunks from a :class:`ChunkSource`: a :class:`FeatureStore`, or
audio turned into features on the fly (:class:`spk.train.audio_source.AudioFeatureSource`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import kaldiio
import numpy as np
import torch

from spk.features import FeatureConfig, accumulate_stats, normalise


class TrainingDataError(Exception):
    """An utterance's features or audio cannot be read; the message names the utterance and its file."""


class ChunkSource(Protocol):
    """Where training chunks come from: utterance ids, their lengths in frames, and normalised chunks."""

    keys: list[str]

    def num_frames(self, key: str) -> int:
        """Frames of one utterance."""

    def chunk(self, key: str, start: int, length: int) -> np.ndarray:
        """Normalised float32 frames ``[start, start + length)`` of one utterance."""


def scp_entry(scp: str, key: str) -> str:
    """What ``scp`` says for ``key`` (the file and offset), for error messages; a scan of the file."""
    try:
        with open(scp) as handle:
            for line in handle:
                fields = line.split(maxsplit=1)
                if fields and fields[0] == key:
                    return fields[1].strip() if len(fields) > 1 else ""
    except OSError:
        pass
    return f"(not found in {scp})"


class FeatureStore:
    """Normalised feature matrices of a data dir, read from ``feats.scp`` (and ``cmvn.scp``).

    With ``preload`` every matrix is read and normalised once; otherwise each
    access reads from the ark (kaldiio keeps the files open).
    """

    def __init__(self, feats_scp: str, feature_config: FeatureConfig, *, cmvn_scp: str | None = None,
                 global_stats: np.ndarray | None = None, preload: bool = True,
                 num_frames: Mapping[str, int] | None = None):
        self.config = feature_config
        self.feats_scp = feats_scp
        self._num_frames = num_frames  # utt2num_frames: lengths without reading the arks
        self._feats = kaldiio.load_scp(feats_scp)
        self._cmvn = kaldiio.load_scp(cmvn_scp) if cmvn_scp else None
        self.global_stats = global_stats
        if feature_config.cmvn == "global" and global_stats is None:
            if self._cmvn is None:
                raise ValueError("global CMVN needs cmvn.scp of the training set")
            self.global_stats = accumulate_stats(self._cmvn[key] for key in self._cmvn)
        self.keys = sorted(self._feats.keys())
        self._cache: dict[str, np.ndarray] | None = None
        if preload:
            self._cache = {key: self._load(key) for key in self.keys}

    def _load(self, key: str) -> np.ndarray:
        try:
            utt_stats = self._cmvn[key] if (self._cmvn is not None and key in self._cmvn) else None
            matrix = np.asarray(self._feats[key], dtype=np.float32)
        except Exception as err:  # noqa: BLE001 - kaldiio raises many kinds (truncated, missing, garbled ark)
            raise TrainingDataError(
                f"utterance {key!r}: cannot read its features ({scp_entry(self.feats_scp, key)} in "
                f"{self.feats_scp}): {type(err).__name__}: {err}. Recompute them (stage 1) or drop the "
                f"utterance from the data dir") from None
        return normalise(matrix, self.config, utterance_stats=utt_stats, global_stats=self.global_stats)

    def __getitem__(self, key: str) -> np.ndarray:
        if self._cache is not None:
            return self._cache[key]
        return self._load(key)

    @property
    def preloaded(self) -> bool:
        """Whether every matrix is held in memory."""
        return self._cache is not None

    def num_frames(self, key: str) -> int:
        """Frames of one utterance: from ``num_frames`` (utt2num_frames) when given, else from the matrix."""
        if self._num_frames is not None and key in self._num_frames:
            return int(self._num_frames[key])
        if self._cache is not None:
            return len(self._cache[key])
        return len(self._feats[key])  # normalising never changes the number of frames

    def chunk(self, key: str, start: int, length: int) -> np.ndarray:
        """Normalised frames ``[start, start + length)`` of one utterance (a :class:`ChunkSource`)."""
        matrix = self[key]
        if start + length > len(matrix):
            raise TrainingDataError(
                f"utterance {key!r}: its features ({scp_entry(self.feats_scp, key)} in {self.feats_scp}) have "
                f"{len(matrix)} frames, fewer than the {self.num_frames(key)} of utt2num_frames; the ark is "
                f"truncated or the data dir files disagree. Recompute the features (stage 1)")
        return matrix[start:start + length]


def pad_batch(matrices: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-pad variable-length matrices into (B, T_max, D) plus their lengths."""
    lengths = torch.tensor([len(m) for m in matrices], dtype=torch.int64)
    dim = matrices[0].shape[1]
    out = torch.zeros(len(matrices), int(lengths.max()), dim)
    for i, m in enumerate(matrices):
        out[i, :len(m)] = torch.from_numpy(np.asarray(m))
    return out, lengths
