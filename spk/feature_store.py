"""Normalised feature matrices of a data dir (``feats.scp`` + ``cmvn.scp``), and padded batches of them.

Training, validation and embedding extraction all read stored features through
:class:`FeatureStore`, so a matrix is normalised the same way wherever it is used.
"""

from __future__ import annotations

import kaldiio
import numpy as np
import torch

from spk.features import FeatureConfig, accumulate_stats, normalise


class FeatureStore:
    """Normalised feature matrices of a data dir, read from ``feats.scp`` (and ``cmvn.scp``).

    With ``preload`` every matrix is read and normalised once; otherwise each
    access reads from the ark (kaldiio keeps the files open).
    """

    def __init__(self, feats_scp: str, feature_config: FeatureConfig, *, cmvn_scp: str | None = None,
                 global_stats: np.ndarray | None = None, preload: bool = True):
        self.config = feature_config
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
        utt_stats = self._cmvn[key] if (self._cmvn is not None and key in self._cmvn) else None
        return normalise(np.asarray(self._feats[key], dtype=np.float32), self.config,
                         utterance_stats=utt_stats, global_stats=self.global_stats)

    def __getitem__(self, key: str) -> np.ndarray:
        if self._cache is not None:
            return self._cache[key]
        return self._load(key)

    def num_frames(self, key: str) -> int:
        """Frames of one utterance (when not preloaded, read from the ark without normalising)."""
        if self._cache is not None:
            return len(self._cache[key])
        return len(self._feats[key])  # normalising never changes the number of frames


def pad_batch(matrices: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-pad variable-length matrices into (B, T_max, D) plus their lengths."""
    lengths = torch.tensor([len(m) for m in matrices], dtype=torch.int64)
    dim = matrices[0].shape[1]
    out = torch.zeros(len(matrices), int(lengths.max()), dim)
    for i, m in enumerate(matrices):
        out[i, :len(m)] = torch.from_numpy(np.asarray(m))
    return out, lengths
