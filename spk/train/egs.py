"""Stage 2: training examples.  Drop utterances too short for a training chunk and speakers with
too few utterances, then hold out a few utterances per speaker for validation."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from spk.data import DataDir, DataDirUsageError, subset_data_dir

logger = logging.getLogger(__name__)


def prepare_training_dirs(src: Path, dst: Path, *, min_frames: int, min_utts_per_speaker: int = 2,
                          valid_per_speaker: int = 1, seed: int = 0) -> dict[str, int]:
    """Write ``dst/train`` and ``dst/valid`` (data dirs with features) from ``src``.

    ``src`` must have ``utt2num_frames`` (stage 1 writes it).  A speaker keeps its
    utterances of at least ``min_frames`` frames if it has at least
    ``min_utts_per_speaker`` of them; ``valid_per_speaker`` of those, drawn with
    ``seed``, go to ``valid`` when the speaker would keep at least one for training.
    """
    data = DataDir(src)
    if not data.has("utt2num_frames"):
        raise DataDirUsageError(f"{src}/utt2num_frames is missing: compute features first (stage 1)")
    num_frames = data.utt2num_frames()
    spk2utt = data.spk2utt()
    rng = np.random.default_rng(seed)
    train, valid = [], []
    dropped_utts = dropped_speakers = 0
    for speaker in sorted(spk2utt):
        long_enough = [u for u in spk2utt[speaker] if num_frames.get(u, 0) >= min_frames]
        dropped_utts += len(spk2utt[speaker]) - len(long_enough)
        if len(long_enough) < min_utts_per_speaker:
            dropped_speakers += 1
            continue
        held = set()
        if valid_per_speaker and len(long_enough) > valid_per_speaker:
            held = set(rng.choice(long_enough, size=valid_per_speaker, replace=False).tolist())
        valid.extend(sorted(held))
        train.extend(u for u in long_enough if u not in held)
    if not train:
        raise DataDirUsageError(
            f"{src}: no utterance has {min_frames} frames in a speaker with {min_utts_per_speaker} such "
            "utterances; lower --min-frames / --min-utts or check the features")
    dst = Path(dst)
    subset_data_dir(src, dst / "train", utts=train)
    if valid:
        subset_data_dir(src, dst / "valid", utts=valid)
    logger.info("training examples in %s: %d train and %d valid utterances; dropped %d short utterances "
                "and %d speakers with fewer than %d usable utterances", dst, len(train), len(valid),
                dropped_utts, dropped_speakers, min_utts_per_speaker)
    return {"train": len(train), "valid": len(valid), "dropped_utts": dropped_utts,
            "dropped_speakers": dropped_speakers}
