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


def _read_scp(scp: str) -> dict[str, str]:
    entries = {}
    with open(scp) as handle:
        for number, line in enumerate(handle, start=1):
            fields = line.split(maxsplit=1)
            if len(fields) != 2:
                if fields:
                    raise ValueError(f"{scp}, line {number}: expected '<utterance> <ark>:<offset>', got {line!r}")
                continue
            entries[fields[0]] = fields[1].strip()
    return entries


# Kaldi binary headers of uncompressed matrices, before their row count: float32 and float64
_MATRIX_TYPES = {b"\x00BFM \x04": np.dtype("<f4"), b"\x00BDM \x04": np.dtype("<f8")}


def _read_rows(entry: str, rows: tuple[int, int]) -> np.ndarray | None:
    """Rows ``[start, start + length)`` of the uncompressed matrix at ``entry`` ("ark:offset"), reading
    only them; None for any other entry (compressed, piped, sliced), which is read whole instead."""
    path, _, offset = entry.rpartition(":")
    if not path or not offset.isdigit() or path.endswith("|"):
        return None
    start, length = rows
    with open(path, "rb") as handle:
        handle.seek(int(offset))
        header = handle.read(15)
        dtype = _MATRIX_TYPES.get(header[:6])
        if len(header) < 15 or dtype is None or header[10:11] != b"\x04":
            return None
        num_rows = int.from_bytes(header[6:10], "little")
        num_cols = int.from_bytes(header[11:15], "little")
        length = max(0, min(length, num_rows - start))
        handle.seek(start * num_cols * dtype.itemsize, 1)
        data = handle.read(length * num_cols * dtype.itemsize)
    whole_rows = len(data) // (num_cols * dtype.itemsize)
    return np.frombuffer(data, dtype=dtype, count=whole_rows * num_cols).reshape(whole_rows, num_cols).copy()


def _read_matrix(entry: str) -> np.ndarray:
    """The whole matrix at ``entry``: directly when uncompressed, else through kaldiio."""
    matrix = _read_rows(entry, (0, 2**31))
    return matrix if matrix is not None else kaldiio.load_mat(entry)


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
        self._entries = _read_scp(feats_scp)  # utterance -> "ark:offset"
        self._cmvn = _read_scp(cmvn_scp) if cmvn_scp else None  # utterance -> "ark:offset" of its statistics
        self.global_stats = global_stats
        if feature_config.cmvn == "global" and global_stats is None:
            if self._cmvn is None:
                raise ValueError("global CMVN needs cmvn.scp of the training set")
            self.global_stats = accumulate_stats(_read_matrix(entry) for entry in self._cmvn.values())
        self.keys = sorted(self._entries)
        self._cache: dict[str, np.ndarray] | None = None
        if preload:
            self._cache = {key: self._load(key) for key in self.keys}

    def _load(self, key: str, rows: tuple[int, int] | None = None) -> np.ndarray:
        """The normalised matrix of ``key``, or only its ``rows`` (start, length): normalising is row by row
        (stored utterance statistics or global ones), so a slice normalised alone equals the same slice of
        the normalised matrix."""
        try:
            utt_stats = _read_matrix(self._cmvn[key]) if (self._cmvn is not None and key in self._cmvn) else None
            matrix = _read_rows(self._entries[key], rows) if rows else None
            if matrix is None:
                matrix = np.asarray(kaldiio.load_mat(self._entries[key]), dtype=np.float32)
                if rows:
                    matrix = matrix[rows[0]:rows[0] + rows[1]]
        except Exception as err:  # noqa: BLE001 - kaldiio raises many kinds (truncated, missing, garbled ark)
            raise TrainingDataError(
                f"utterance {key!r}: cannot read its features ({self._entries.get(key)} in "
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
        return len(kaldiio.load_mat(self._entries[key]))  # normalising never changes the number of frames

    def chunk(self, key: str, start: int, length: int) -> np.ndarray:
        """Normalised frames ``[start, start + length)`` of one utterance (a :class:`ChunkSource`); when not
        preloaded, only those rows are read where the ark stores the matrix uncompressed."""
        matrix = self._cache[key][start:start + length] if self._cache is not None else \
            self._load(key, (start, length))
        if len(matrix) < length:
            raise TrainingDataError(
                f"utterance {key!r}: its features ({self._entries[key]} in {self.feats_scp}) end before frame "
                f"{start + length} of the {self.num_frames(key)} in utt2num_frames; the ark is "
                f"truncated or the data dir files disagree. Recompute the features (stage 1)")
        return matrix


def pad_batch(matrices: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-pad variable-length matrices into (B, T_max, D) plus their lengths."""
    lengths = torch.tensor([len(m) for m in matrices], dtype=torch.int64)
    dim = matrices[0].shape[1]
    out = torch.zeros(len(matrices), int(lengths.max()), dim)
    for i, m in enumerate(matrices):
        out[i, :len(m)] = torch.from_numpy(np.asarray(m))
    return out, lengths
