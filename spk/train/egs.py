"""Stage 2: training examples.  Drop utterances too short for a training chunk and speakers with
too few utterances, then hold out a few utterances per speaker for validation accuracy and,
optionally, whole speakers with a trial list for validation EER."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np

from spk.data import DataDir, DataDirUsageError, Trial, read_kv, subset_data_dir, write_trials

logger = logging.getLogger(__name__)


def prepare_training_dirs(src: Path, dst: Path, *, min_frames: int, min_utts_per_speaker: int = 2,
                          valid_per_speaker: int = 1, valid_speakers: int = 0,
                          seed: int = 0) -> dict[str, int]:
    """Write ``dst/train`` and ``dst/valid`` (data dirs with features) from ``src``.

    With ``valid_speakers`` > 0, that many speakers (drawn with ``seed``) leave
    training altogether and go to ``dst/valid_trials`` with a balanced ``trials``
    list of their utterances, for the validation EER the trainer logs each epoch.

    ``src`` must have ``utt2num_frames`` (stage 1 writes it).  A speaker keeps its
    utterances of at least ``min_frames`` frames if it has at least
    ``min_utts_per_speaker`` of them; ``valid_per_speaker`` of those, drawn with
    ``seed``, go to ``valid`` when the speaker would keep at least one for training.
    Where ``src`` has ``utt2uniq`` (augmented or speed-perturbed copies), the draw is
    over source recordings: a held-out recording's clean original validates and all
    its copies, under any speaker, leave training, so validation sees no audio that trained.
    """
    data = DataDir(src)
    if not data.has("utt2num_frames"):
        raise DataDirUsageError(f"{src}/utt2num_frames is missing: compute features first (stage 1)")
    num_frames = data.utt2num_frames()
    spk2utt = data.spk2utt()
    rng = np.random.default_rng(seed)
    utt2uniq = read_kv(Path(src) / "utt2uniq") if data.has("utt2uniq") else {}
    train, valid, trial_utts = [], [], []
    held_sources: set[str] = set()
    dropped_utts = dropped_speakers = 0
    usable = [s for s in sorted(spk2utt)
              if sum(num_frames.get(u, 0) >= min_frames for u in spk2utt[s]) >= max(2, min_utts_per_speaker)]
    if valid_speakers and valid_speakers > len(usable) - 2:
        raise DataDirUsageError(f"{src}: cannot hold out {valid_speakers} validation speakers of "
                                f"{len(usable)} usable ones; lower --valid-speakers")
    held_speakers = set(rng.choice(usable, size=valid_speakers, replace=False).tolist()) if valid_speakers else set()
    for speaker in sorted(spk2utt):
        if speaker in held_speakers:
            trial_utts.extend(u for u in spk2utt[speaker] if num_frames.get(u, 0) >= min_frames)
            continue
        long_enough = [u for u in spk2utt[speaker] if num_frames.get(u, 0) >= min_frames]
        dropped_utts += len(spk2utt[speaker]) - len(long_enough)
        if len(long_enough) < min_utts_per_speaker:
            dropped_speakers += 1
            continue
        # Copies of one recording (utt2uniq: augmented or speed-perturbed) are held out together.
        groups: dict[str, list[str]] = {}
        for utt in long_enough:
            groups.setdefault(utt2uniq.get(utt, utt), []).append(utt)
        held_groups = set()
        if valid_per_speaker and len(groups) > valid_per_speaker:
            held_groups = set(rng.choice(list(groups), size=valid_per_speaker, replace=False).tolist())
        for group in sorted(held_groups):
            members = groups[group]
            valid.append(group if group in members else members[0])  # the clean original where there is one
            held_sources.add(group)
        train.extend(long_enough)  # less every copy of a held-out recording, below
    if held_sources:  # under any speaker: speed-perturbed copies (sp0.9-<spk>) are other speakers
        train = [u for u in train if utt2uniq.get(u, u) not in held_sources]
        utt2spk = data.utt2spk()
        training_speakers = {utt2spk[u] for u in train}
        valid = [u for u in valid if utt2spk[u] in training_speakers]  # a speaker left without training audio
    if not train:
        raise DataDirUsageError(
            f"{src}: no utterance has {min_frames} frames in a speaker with {min_utts_per_speaker} such "
            "utterances; lower --min-frames / --min-utts or check the features")
    dst = Path(dst)
    subset_data_dir(src, dst / "train", utts=train)
    if valid:
        subset_data_dir(src, dst / "valid", utts=valid)
    if not trial_utts and (dst / "valid_trials").exists():
        shutil.rmtree(dst / "valid_trials")  # left from a run with validation speakers
    if trial_utts:
        subset_data_dir(src, dst / "valid_trials", utts=trial_utts)
        trials = balanced_trials(trial_utts, data.utt2spk(), seed)
        write_trials(dst / "valid_trials" / "trials", trials)
    logger.info("training examples in %s: %d train and %d valid utterances; dropped %d short utterances "
                "and %d speakers with fewer than %d usable utterances", dst, len(train), len(valid),
                dropped_utts, dropped_speakers, min_utts_per_speaker)
    return {"train": len(train), "valid": len(valid), "valid_trials_utts": len(trial_utts),
            "dropped_utts": dropped_utts, "dropped_speakers": dropped_speakers}


def balanced_trials(utts: list[str], utt2spk: dict[str, str], seed: int) -> list[Trial]:
    """Every same-speaker pair and as many different-speaker pairs drawn at random."""
    targets, nontargets = [], []
    for i, a in enumerate(utts):
        for b in utts[i + 1:]:
            (targets if utt2spk[a] == utt2spk[b] else nontargets).append(Trial(a, b, utt2spk[a] == utt2spk[b]))
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(nontargets), size=min(len(targets), len(nontargets)), replace=False)
    return targets + [nontargets[i] for i in sorted(chosen)]
