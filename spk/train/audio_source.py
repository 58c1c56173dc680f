"""On-the-fly features: training chunks computed from the audio, with no feature dump.

With ``on_the_fly_features: true`` in the experiment config, the training data
dir needs ``wav.scp`` (and ``segments`` where it has them) and ``utt2num_frames``
or ``utt2dur`` for the lengths, but no ``feats.scp``. Each chunk's samples are
read when its batch is made (in a loader worker when ``num_workers`` > 0), turned
into features by :class:`spk.augment.online.ChunkFeaturizer` (the frames equal
the dumped rows of the same chunk, dither aside) and normalised:

- ``cmvn: utterance`` uses the chunk's own statistics, as augmented chunks do
  (reading a whole long utterance for its mean would cost what the chunk saves);
- ``cmvn: global`` uses the statistics the trainer was given (``cmvn.scp`` of a
  dumped training set, or a model's ``global_cmvn.npy``);
- dither, when the feature config asks for it, is drawn from a generator seeded
  with ``(seed, utterance, first frame)``, so a chunk is the same in any process.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np

from spk.audio import AudioError
from spk.augment.errors import AugmentError
from spk.augment.online import ChunkFeaturizer, WaveformStore
from spk.data import DataDir
from spk.feature_store import TrainingDataError
from spk.features import FeatureConfig, normalise


def utterance_frames(data_dir: Path, feature_config: FeatureConfig) -> dict[str, int]:
    """Frames of each utterance: ``utt2num_frames``, else from ``utt2dur`` (one frame less, against rounding)."""
    data = DataDir(data_dir)
    if data.has("utt2num_frames"):
        return data.utt2num_frames()
    if not data.has("utt2dur"):
        raise TrainingDataError(
            f"{data_dir}: on-the-fly features need the utterance lengths: utt2num_frames or utt2dur "
            f"(`spk features` writes both; most `spk prepare` corpora write utt2dur)")
    # one frame less than the rounded duration gives: never past the end of the audio
    return {utt: max(0, feature_config.frames_in(int(seconds * feature_config.sample_rate)) - 1)
            for utt, seconds in data.utt2dur().items()}


class AudioFeatureSource:
    """A :class:`spk.feature_store.ChunkSource` that computes each chunk's features from the audio."""

    def __init__(self, data_dir: Path, feature_config: FeatureConfig, *, seed: int = 0,
                 global_stats: np.ndarray | None = None):
        data_dir = Path(data_dir)
        if feature_config.cmvn == "global" and global_stats is None:
            raise TrainingDataError(
                f"{data_dir}: on-the-fly features with cmvn: global need the training set's statistics "
                f"(cmvn.scp of dumped features); use cmvn: utterance or none, or dump the features (stage 1)")
        self.data_dir = data_dir
        self.config = feature_config
        self.seed = seed
        self.global_stats = global_stats
        self._frames = utterance_frames(data_dir, feature_config)
        self.keys = sorted(self._frames)
        self._position = {key: i for i, key in enumerate(self.keys)}
        try:
            waves = WaveformStore(data_dir, self.keys, feature_config.sample_rate, preload=False)
            self._featurizer = ChunkFeaturizer(feature_config, waves)
        except AugmentError as err:
            raise TrainingDataError(f"on-the-fly features: {err}") from None

    def num_frames(self, key: str) -> int:
        """Frames of one utterance, from the data dir's lengths (no audio is read)."""
        return self._frames[key]

    def index_of(self, key: str) -> int:
        """Position of ``key`` in ``keys``."""
        return self._position[key]

    def chunk_at(self, index: int, start: int, length: int) -> np.ndarray:
        """:meth:`chunk` of ``keys[index]``."""
        return self.chunk(self.keys[index], start, length)

    def chunk(self, key: str, start: int, length: int) -> np.ndarray:
        """Normalised features of frames ``[start, start + length)`` of ``key``, computed from its audio."""
        rng = np.random.default_rng([self.seed, zlib.crc32(key.encode()), start]) if self.config.dither > 0 else None
        try:
            feats = self._featurizer.chunk_features(key, start, length, rng=rng)
        except (AugmentError, AudioError, OSError, ValueError, RuntimeError) as err:
            raise TrainingDataError(f"utterance {key!r} of {self.data_dir}/wav.scp: {err}") from None
        return normalise(feats, self.config, global_stats=self.global_stats)
