"""The no-training baseline: the utterance mean of normalised MFCCs, scored by cosine.

Each utterance becomes the average of its 40 MFCCs (25 ms / 10 ms frames), after
the MFCCs are mean- and variance-normalised with statistics of the whole set
(per-utterance mean normalisation would make every average zero).  It captures
the long-term spectral envelope, nothing learnt; a trained embedder that does
not beat it on a corpus has learnt nothing useful there.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from tqdm import tqdm

from spk.audio import AudioReader
from spk.data import DataDir
from spk.embed import write_embeddings
from spk.features import FeatureConfig
from spk.inference import waveform_features

logger = logging.getLogger(__name__)

BASELINE_FEATURES = FeatureConfig(kind="mfcc", num_mel_bins=40, num_ceps=40, cmvn="none")


def mfcc_mean_embeddings(data_dir: Path) -> dict[str, np.ndarray]:
    """Baseline vectors of every utterance of ``data_dir``, computed from the audio."""
    data = DataDir(data_dir)
    reader = AudioReader(data.wav_scp(), data.segments(), target_rate=BASELINE_FEATURES.sample_rate)
    sums, counts = {}, {}
    total = np.zeros(BASELINE_FEATURES.dim)
    total_sq = np.zeros(BASELINE_FEATURES.dim)
    frames = 0
    for utt in tqdm(sorted(data.utt2spk()), desc="baseline MFCC", unit="utt", leave=False):
        feats = waveform_features(reader.read(utt), BASELINE_FEATURES).astype(np.float64)
        sums[utt], counts[utt] = feats.sum(axis=0), len(feats)
        total += feats.sum(axis=0)
        total_sq += (feats**2).sum(axis=0)
        frames += len(feats)
    mean = total / frames
    std = np.sqrt(np.maximum(total_sq / frames - mean**2, 1e-10))
    # mean over frames of (x - mean) / std  ==  (utterance mean - mean) / std
    return {utt: ((sums[utt] / counts[utt] - mean) / std).astype(np.float32) for utt in sums}


def write_baseline_embeddings(data_dir: Path, out_dir: Path) -> int:
    """Write the baseline vectors of ``data_dir`` as ``out_dir/xvector.{ark,scp}``."""
    vectors = mfcc_mean_embeddings(data_dir)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    write_embeddings(Path(out_dir) / "xvector", vectors)
    logger.info("%s: baseline MFCC-mean vectors for %d utterances in %s", data_dir, len(vectors), out_dir)
    return len(vectors)
