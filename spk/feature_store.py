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
    """Where training chunks come from: utterance ids, their lengths in frames, and normalised chunks.

    ``chunk_at`` takes an utterance's position in ``keys``: loader processes then touch no
    per-utterance Python object, so they do not copy the pages of the corpus index.
    """

    keys: list[str]

    def num_frames(self, key: str) -> int:
        """Frames of one utterance."""

    def index_of(self, key: str) -> int:
        """Position of ``key`` in ``keys``."""

    def chunk_at(self, index: int, start: int, length: int) -> np.ndarray:
        """Normalised float32 frames ``[start, start + length)`` of utterance ``keys[index]``."""


class ArkIndex:
    """The entries of an scp file, sorted by key, as arrays: a file number and a byte offset per key.

    Entries that are not ``file:offset`` (a pipe, a row range) are kept as text. Whole
    matrices and row ranges of uncompressed ones are read directly, anything else
    through kaldiio.
    """

    def __init__(self, scp: str):
        pairs = []
        with open(scp) as handle:
            for number, line in enumerate(handle, start=1):
                fields = line.split(maxsplit=1)
                if len(fields) != 2:
                    if fields:
                        raise ValueError(f"{scp}, line {number}: expected '<utterance> <ark>:<offset>', got {line!r}")
                    continue
                pairs.append((fields[0], fields[1].strip()))
        pairs.sort()
        self.keys = [key for key, _ in pairs]
        files: dict[str, int] = {}
        self._file_ids = np.full(len(pairs), -1, dtype=np.int32)
        self._offsets = np.zeros(len(pairs), dtype=np.int64)
        self._other: dict[int, str] = {}
        for i, (_, entry) in enumerate(pairs):
            path, _, offset = entry.rpartition(":")
            if path and offset.isdigit() and not path.rstrip().endswith("|"):
                self._file_ids[i] = files.setdefault(path, len(files))
                self._offsets[i] = int(offset)
            else:
                self._other[i] = entry
        self._files = list(files)

    def __len__(self) -> int:
        return len(self.keys)

    def entry(self, index: int) -> str:
        """The scp entry of ``keys[index]``, as written in the file."""
        if index in self._other:
            return self._other[index]
        return f"{self._files[self._file_ids[index]]}:{self._offsets[index]}"

    def read(self, index: int, rows: tuple[int, int] | None = None) -> np.ndarray:
        """The matrix of ``keys[index]``, or its ``rows`` (start, length), read only where it is uncompressed."""
        file_id = int(self._file_ids[index])
        if file_id >= 0:
            matrix = _read_rows(self._files[file_id], int(self._offsets[index]), rows or (0, 2**31))
            if matrix is not None:
                return matrix
        matrix = kaldiio.load_mat(self.entry(index))
        return matrix[rows[0]:rows[0] + rows[1]] if rows else matrix


# Kaldi binary headers of uncompressed matrices, before their row count: float32 and float64
_MATRIX_TYPES = {b"\x00BFM \x04": np.dtype("<f4"), b"\x00BDM \x04": np.dtype("<f8")}


def _read_rows(path: str, offset: int, rows: tuple[int, int]) -> np.ndarray | None:
    """Rows ``[start, start + length)`` of the uncompressed matrix at ``offset`` of ``path``, reading only
    them; None when the matrix there is not an uncompressed float or double one (compressed: kaldiio)."""
    start, length = rows
    with open(path, "rb") as handle:
        handle.seek(offset)
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


class FeatureStore:
    """Normalised feature matrices of a data dir, read from ``feats.scp`` (and ``cmvn.scp``).

    With ``preload`` every matrix is read and normalised once; otherwise each access
    reads from the ark (only a chunk's rows where the matrix is stored uncompressed).
    """

    def __init__(self, feats_scp: str, feature_config: FeatureConfig, *, cmvn_scp: str | None = None,
                 global_stats: np.ndarray | None = None, preload: bool = True,
                 num_frames: Mapping[str, int] | None = None):
        self.config = feature_config
        self.feats_scp = feats_scp
        self._num_frames = num_frames  # utt2num_frames: lengths without reading the arks
        self._feats = ArkIndex(feats_scp)
        self.keys = self._feats.keys
        self._position = {key: i for i, key in enumerate(self.keys)}
        self._cmvn = ArkIndex(cmvn_scp) if cmvn_scp else None
        self._cmvn_rows = None  # position in cmvn.scp of each utterance's statistics (-1: none)
        if self._cmvn is not None:
            cmvn_position = {key: i for i, key in enumerate(self._cmvn.keys)}
            self._cmvn_rows = np.array([cmvn_position.get(key, -1) for key in self.keys], dtype=np.int64)
        self.global_stats = global_stats
        if feature_config.cmvn == "global" and global_stats is None:
            if self._cmvn is None:
                raise ValueError("global CMVN needs cmvn.scp of the training set")
            self.global_stats = accumulate_stats(self._cmvn.read(i) for i in range(len(self._cmvn)))
        self._cache: list[np.ndarray] | None = None
        if preload:
            self._cache = [self._load(i) for i in range(len(self.keys))]

    def _load(self, index: int, rows: tuple[int, int] | None = None) -> np.ndarray:
        """The normalised matrix of ``keys[index]``, or only its ``rows`` (start, length): normalising is row
        by row (stored utterance statistics or global ones), so a slice normalised alone equals the same
        slice of the normalised matrix."""
        try:
            stats_row = int(self._cmvn_rows[index]) if self._cmvn_rows is not None else -1
            utt_stats = self._cmvn.read(stats_row) if stats_row >= 0 else None
            matrix = np.asarray(self._feats.read(index, rows), dtype=np.float32)
        except Exception as err:  # noqa: BLE001 - kaldiio raises many kinds (truncated, missing, garbled ark)
            raise TrainingDataError(
                f"utterance {self.keys[index]!r}: cannot read its features ({self._feats.entry(index)} in "
                f"{self.feats_scp}): {type(err).__name__}: {err}. Recompute them (stage 1) or drop the "
                f"utterance from the data dir") from None
        return normalise(matrix, self.config, utterance_stats=utt_stats, global_stats=self.global_stats)

    def __getitem__(self, key: str) -> np.ndarray:
        index = self._position[key]
        return self._cache[index] if self._cache is not None else self._load(index)

    @property
    def preloaded(self) -> bool:
        """Whether every matrix is held in memory."""
        return self._cache is not None

    def index_of(self, key: str) -> int:
        """Position of ``key`` in ``keys``."""
        return self._position[key]

    def num_frames(self, key: str) -> int:
        """Frames of one utterance: from ``num_frames`` (utt2num_frames) when given, else from the matrix."""
        if self._num_frames is not None and key in self._num_frames:
            return int(self._num_frames[key])
        return len(self[key])  # normalising never changes the number of frames

    def chunk(self, key: str, start: int, length: int) -> np.ndarray:
        """Normalised frames ``[start, start + length)`` of one utterance."""
        return self.chunk_at(self._position[key], start, length)

    def chunk_at(self, index: int, start: int, length: int) -> np.ndarray:
        """Normalised frames ``[start, start + length)`` of ``keys[index]`` (a :class:`ChunkSource`); when not
        preloaded, only those rows are read where the ark stores the matrix uncompressed."""
        matrix = self._cache[index][start:start + length] if self._cache is not None else \
            self._load(index, (start, length))
        if len(matrix) < length:
            key = self.keys[index]
            raise TrainingDataError(
                f"utterance {key!r}: its features ({self._feats.entry(index)} in {self.feats_scp}) end before "
                f"frame {start + length} of the {self.num_frames(key)} in utt2num_frames; the ark is "
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
