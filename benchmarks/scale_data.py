"""Training sets of a chosen number of hours for benchmarks/train_memory.py, cheap on disk and in memory.

Features: ``base`` hours of distinct matrices (fbank-like: per speaker a
per-dimension scale and offset on Gaussian frames, utterances of 4-10 s) are
written once, one matrix at a time, to ``feats.ark`` (+ ``cmvn.ark``). A set of
H hours lists those matrices cyclically under new utterance ids (copy ``c``:
``c003-<utt>``, speaker ``c003-<speaker>``) until it holds H hours, every scp line
pointing at the shared ark offsets. Preloading such a set really holds H hours
in memory (each utterance is read separately); streaming reads what it needs.

Audio: ten recordings (16 kHz, 16-bit) of a synthetic voiced signal (harmonics
of a wandering f0, a syllable-rate envelope, a little noise), at most one hour
in all, cut by ``segments`` into utterances of 4-10 s; a set repeats the
segments under new ids the same way. ``utt2num_frames`` counts frames as the
feature code does (25 ms windows every 10 ms, snip edges).

A generated set is reused when its ``ready.json`` matches the asked parameters.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import kaldiio
import numpy as np
import soundfile as sf

from spk.data import (read_scp, read_segments, read_utt2num_frames, read_utt2spk, utt2spk_to_spk2utt, write_scp,
                      write_segments, write_spk2utt, write_utt2num_frames, write_utt2spk, write_wav_scp)
from spk.features import cmvn_stats

RATE = 16000
WINDOW, SHIFT = 400, 160  # 25 ms and 10 ms at 16 kHz
FRAMES_PER_HOUR = 360_000  # 10 ms frames
UTT_SECONDS = (4.0, 10.0)
UTTS_PER_SPEAKER = 20
RECORDINGS = 10
MAX_AUDIO_HOURS = 1.0


def frames_of(samples: int) -> int:
    """Frames of ``samples`` samples: 25 ms windows every 10 ms, snip edges (as the feature code counts)."""
    return 0 if samples < WINDOW else 1 + (samples - WINDOW) // SHIFT


def _hours_tag(hours: float) -> str:
    return f"{hours:g}h"


def _ready(path: Path, params: dict) -> bool:
    marker = path / "ready.json"
    return marker.is_file() and json.loads(marker.read_text()) == params


def _mark_ready(path: Path, params: dict) -> None:
    (path / "ready.json").write_text(json.dumps(params, sort_keys=True) + "\n")


def _fresh_dir(path: Path) -> None:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)


def feature_material(work: Path, base_hours: float, dim: int, seed: int = 0) -> Path:
    """``base_hours`` of distinct feature matrices in ``work`` (written one at a time); its dir."""
    path = work / f"features_{_hours_tag(base_hours)}_{dim}d"
    params = {"hours": base_hours, "dim": dim, "seed": seed}
    if _ready(path, params):
        return path
    _fresh_dir(path)
    rng = np.random.default_rng(seed)
    target = base_hours * FRAMES_PER_HOUR
    total, utt2spk, num_frames = 0, {}, {}
    with kaldiio.WriteHelper(f"ark,scp:{path}/feats.ark,{path}/feats.scp") as feats, \
            kaldiio.WriteHelper(f"ark,scp:{path}/cmvn.ark,{path}/cmvn.scp") as cmvn:
        speaker = 0
        while total < target:
            name = f"spk{speaker:05d}"
            scale, offset = rng.uniform(0.2, 4.0, size=dim), rng.normal(0.0, 3.0, size=dim)
            for number in range(UTTS_PER_SPEAKER):
                if total >= target:
                    break
                frames = int(rng.integers(UTT_SECONDS[0] * 100, UTT_SECONDS[1] * 100 + 1))
                matrix = (rng.standard_normal((frames, dim), dtype=np.float32) * scale + offset).astype(np.float32)
                utt = f"{name}-u{number:03d}"
                feats(utt, matrix)
                cmvn(utt, cmvn_stats(matrix))
                utt2spk[utt], num_frames[utt] = name, frames
                total += frames
            speaker += 1
    write_utt2spk(path / "utt2spk", utt2spk)
    write_utt2num_frames(path / "utt2num_frames", num_frames)
    _mark_ready(path, params)
    return path


def _voiced(rng: np.random.Generator, seconds: float) -> np.ndarray:
    """A voice-like signal: harmonics of a wandering f0 under a syllable-rate envelope, plus noise; int16."""
    samples = int(round(seconds * RATE))
    t = np.arange(samples) / RATE
    f0 = rng.uniform(90, 250) * (1 + 0.08 * np.sin(2 * np.pi * rng.uniform(0.1, 0.4) * t))
    phase = 2 * np.pi * np.cumsum(f0) / RATE
    wave = sum(np.sin(k * phase) / k for k in range(1, 9))
    envelope = 0.5 * (1 + np.sin(2 * np.pi * 4.0 * t + rng.uniform(0, 2 * np.pi))) ** 2
    wave = wave * envelope + 0.02 * rng.standard_normal(samples)
    return np.clip(wave / np.abs(wave).max() * 0.5 * 32767, -32768, 32767).astype(np.int16)


def audio_material(work: Path, hours: float, seed: int = 0) -> Path:
    """Ten recordings of ``hours`` in all (16 kHz 16-bit wav) and their segments of 4-10 s; its dir."""
    path = work / f"audio_{_hours_tag(hours)}"
    params = {"hours": hours, "seed": seed, "recordings": RECORDINGS}
    if _ready(path, params):
        return path
    _fresh_dir(path)
    rng = np.random.default_rng(seed)
    seconds = hours * 3600 / RECORDINGS
    wav_scp, segments, utt2spk, num_frames = {}, {}, {}, {}
    for number in range(RECORDINGS):
        rec = f"rec{number:02d}"
        wav = path / f"{rec}.wav"
        sf.write(wav, _voiced(rng, seconds), RATE, subtype="PCM_16")
        wav_scp[rec] = str(wav)
        start, index, steps = 0, 0, int(seconds * 100)  # in 10 ms steps: segment times are exact sample positions
        while steps - start >= UTT_SECONDS[0] * 100:
            length = int(rng.integers(UTT_SECONDS[0] * 100, min(UTT_SECONDS[1] * 100, steps - start) + 1))
            utt = f"{rec}-s{index // UTTS_PER_SPEAKER:02d}-u{index:04d}"
            segments[utt] = (rec, start / 100, (start + length) / 100)
            utt2spk[utt] = utt.rsplit("-", 1)[0]
            num_frames[utt] = frames_of(length * SHIFT)
            start, index = start + length, index + 1
    if not segments:
        raise ValueError(f"{hours} h of audio in {RECORDINGS} recordings is too little for one "
                         f"{UTT_SECONDS[0]:g}-s utterance; ask for more hours")
    write_wav_scp(path / "wav.scp", wav_scp)
    write_segments(path / "segments", segments)
    write_utt2spk(path / "utt2spk", utt2spk)
    write_utt2num_frames(path / "utt2num_frames", num_frames)
    _mark_ready(path, params)
    return path


def _cyclic(utts: list[str], num_frames: dict[str, int], hours: float) -> list[tuple[str, str]]:
    """``(new id prefix, material utterance)`` pairs repeating ``utts`` until they hold ``hours``."""
    target, total, picked = hours * FRAMES_PER_HOUR, 0, []
    for copy in range(math.ceil(target / max(1, sum(num_frames.values()))) + 1):
        for utt in utts:
            if total >= target:
                return picked
            picked.append((f"c{copy:03d}-", utt))
            total += num_frames[utt]
    return picked


def _repeated_set(material: Path, hours: float, write_sources) -> Path:
    """A data dir of ``hours`` listing the material's utterances cyclically under new ids (copy prefixes).

    ``write_sources(path, ids)`` writes the tables that say where each new id's data
    lie (``ids``: new id -> material utterance); the lengths and speakers are written here.
    """
    path = material / f"train_{_hours_tag(hours)}"
    params = {"hours": hours}
    if _ready(path, params):
        return path
    _fresh_dir(path)
    utt2spk, num_frames = read_utt2spk(material / "utt2spk"), read_utt2num_frames(material / "utt2num_frames")
    picked = _cyclic(sorted(num_frames), num_frames, hours)
    ids = {prefix + utt: utt for prefix, utt in picked}
    new_utt2spk = {new: prefix + utt2spk[utt] for (prefix, utt), new in zip(picked, ids)}
    write_sources(path, ids)
    write_utt2num_frames(path / "utt2num_frames", {new: num_frames[utt] for new, utt in ids.items()})
    write_utt2spk(path / "utt2spk", new_utt2spk)
    write_spk2utt(path / "spk2utt", utt2spk_to_spk2utt(new_utt2spk))
    _mark_ready(path, params)
    return path


def feature_set(material: Path, hours: float) -> Path:
    """A feature data dir of ``hours``: scp lines pointing at the material's ark offsets (see the module docstring)."""
    def write_sources(path: Path, ids: dict[str, str]) -> None:
        feats, cmvn = read_scp(material / "feats.scp"), read_scp(material / "cmvn.scp")
        write_scp(path / "feats.scp", {new: feats[utt] for new, utt in ids.items()})
        write_scp(path / "cmvn.scp", {new: cmvn[utt] for new, utt in ids.items()})
        # stage-1 dirs list the audio too; these features have none, so wav.scp names paths never read
        write_wav_scp(path / "wav.scp", {new: f"/nonexistent/{new}.wav" for new in ids})

    return _repeated_set(material, hours, write_sources)


def audio_set(material: Path, hours: float) -> Path:
    """An audio data dir of ``hours`` (the material's wav.scp, its segments under new ids) for on-the-fly features."""
    def write_sources(path: Path, ids: dict[str, str]) -> None:
        segments = read_segments(material / "segments")
        shutil.copy(material / "wav.scp", path / "wav.scp")
        write_segments(path / "segments", {new: segments[utt] for new, utt in ids.items()})

    return _repeated_set(material, hours, write_sources)


def training_sets(work: Path, hours: list[float], dim: int, *, audio: bool, features: bool) -> dict:
    """``{("features"|"audio", hours): data dir}`` for every asked set, generated under ``work`` when missing."""
    base = min(hours)
    sets = {}
    if features:
        material = feature_material(work, base, dim)
        sets.update({("features", h): feature_set(material, h) for h in hours})
    if audio:
        material = audio_material(work, min(base, MAX_AUDIO_HOURS))
        sets.update({("audio", h): audio_set(material, h) for h in hours})
    return sets
