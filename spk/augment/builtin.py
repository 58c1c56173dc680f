"""Built-in augmentation sources for machines without MUSAN or RIRS_NOISES: noise, music, room impulse responses.

:func:`make_sources` writes, deterministically from a seed, three Kaldi data dirs
of 16 kHz wav files (each recording its own speaker, with ``utt2dur``) that
``spk augment data`` draws from as it would from MUSAN and RIRS_NOISES::

    <out>/noise/   18 recordings, 4-10 s each (about 2 min): 2 of each of 9 kinds
                   (white, pink, brown, babble-like, hum, bursts, fan, keyboard, traffic)
    <out>/music/   8 pieces, 8-15 s each (about 1.5 min): notes and chords with harmonics
                   and envelopes, a bass line, and in most a beat of percussive bursts
    <out>/rirs/    300 room impulse responses (about 2 min in all): 20 shoebox rooms of
                   each size (smallroom 2-10 m, mediumroom 10-30 m, largeroom 30-50 m wide,
                   2-5 m high, wall absorption 0.2-0.8, RT60 about 0.05-1.5 s), 5 random
                   source/microphone placements per room (Kaldi's simulated_rirs design)
    <out>/speech/  optional (``speech_from``): a random subset of an existing data dir, the
                   talkers for babble (wav.scp points at the original files; nothing is copied)

Generating everything takes a few seconds of CPU and about 16 MB of disk. Another
seed gives other recordings of the same kinds: use one seed for training sources and
another for a test condition, so that test noise is never heard in training.

RIRs are simulated by :mod:`spk.augment.rooms` and written as float wav (peak 1);
noise and music as 16-bit PCM.
"""

from __future__ import annotations

import logging
import math
import os
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy import signal

from spk.data import (
    DataDirSummary,
    DataDirUsageError,
    subset_data_dir,
    utt2spk_to_spk2utt,
    validate_data_dir,
    write_kv,
    write_spk2utt,
    write_utt2dur,
    write_utt2spk,
    write_wav_scp,
)
from spk.augment import rooms
from spk.augment.simulate import coloured_noise
from spk.data.derived import check_replaceable, read_info, stage_and_move

__all__ = [
    "MUSIC_PIECES",
    "NOISE_KINDS",
    "RATE",
    "SourcesInfo",
    "make_sources",
    "make_speech_set",
    "music_recordings",
    "noise_recordings",
    "room_impulse_responses",
    "write_recordings",
]

logger = logging.getLogger(__name__)

RATE = 16000
NOISE_KINDS = ("white", "pink", "brown", "babble_like", "hum", "bursts", "fan", "keyboard", "traffic")
NOISES_PER_KIND = 2
MUSIC_PIECES = 8
ROOMS_PER_SIZE = 20
RIRS_PER_ROOM = 5
INFO_NAME = ".sources.json"


def _rng(seed: int, *keys: str | int) -> np.random.Generator:
    """A generator for one recording: the same seed and keys give the same numbers, whatever else is made."""
    words = [seed] + [zlib.crc32(k.encode()) if isinstance(k, str) else k for k in keys]
    return np.random.default_rng(words)


def _level(wave: np.ndarray, rms: float = 0.1, peak: float = 0.95) -> np.ndarray:
    """Scale to ``rms``, or lower if needed so that no sample exceeds ``peak`` (16-bit files must not clip)."""
    wave = np.asarray(wave, dtype=np.float64)
    power = np.sqrt(np.mean(wave**2)) + 1e-12
    wave = wave * (rms / power)
    top = np.max(np.abs(wave))
    if top > peak:
        wave *= peak / top
    return wave.astype(np.float32)


# --- noise ---------------------------------------------------------------------------------------


def _bursts(n: int, rng: np.random.Generator) -> np.ndarray:
    """Random bursts and clicks (5-80 ms of filtered noise) over a quiet floor."""
    out = 0.02 * rng.standard_normal(n)
    position = 0
    while True:
        position += int(rng.exponential(0.25) * RATE)
        length = int(rng.uniform(0.005, 0.08) * RATE)
        if position + length >= n:
            break
        burst = rng.standard_normal(length) * np.exp(-np.arange(length) / (length / 4))
        low = rng.uniform(100, 2000)
        burst = signal.sosfilt(signal.butter(2, [low, min(low * rng.uniform(2, 6), 7500)], "bandpass",
                                             fs=RATE, output="sos"), burst)
        out[position:position + length] += rng.uniform(0.3, 1.0) * burst / (np.std(burst) + 1e-12)
    return out


def _fan(n: int, rng: np.random.Generator) -> np.ndarray:
    """A fan: band noise with a slow swell plus a wobbling blade-pass tone and its harmonics."""
    t = np.arange(n) / RATE
    centre = rng.uniform(150, 1500)
    band = signal.sosfilt(signal.butter(2, [centre / 2, centre * 2], "bandpass", fs=RATE, output="sos"),
                          rng.standard_normal(n))
    band /= np.std(band) + 1e-12
    blade = rng.uniform(40, 200)
    wobble = 1 + 0.01 * np.sin(2 * np.pi * rng.uniform(0.1, 0.5) * t)
    phase = 2 * np.pi * np.cumsum(blade * wobble) / RATE
    tones = sum(rng.uniform(0.2, 1.0) / k * np.sin(k * phase + rng.uniform(0, 2 * np.pi)) for k in range(1, 5))
    swell = 1 + 0.2 * np.sin(2 * np.pi * rng.uniform(0.05, 0.3) * t + rng.uniform(0, 2 * np.pi))
    return swell * (band + rng.uniform(0.3, 1.0) * tones)


def _keyboard(n: int, rng: np.random.Generator) -> np.ndarray:
    """Typing: short damped resonant clicks at bursty intervals, over a little room noise."""
    out = 0.005 * rng.standard_normal(n)
    resonances = rng.uniform(1000, 5000, size=3)
    position = 0
    while True:
        position += int((rng.gamma(2.0, 0.08) + (rng.uniform(0.5, 1.5) if rng.random() < 0.1 else 0)) * RATE)
        length = int(rng.uniform(0.01, 0.03) * RATE)
        if position + length >= n:
            break
        k = np.arange(length) / RATE
        decay = np.exp(-k / rng.uniform(0.002, 0.008))
        click = sum(np.sin(2 * np.pi * f * rng.uniform(0.9, 1.1) * k) for f in resonances) * decay
        click += 0.5 * rng.standard_normal(length) * decay
        out[position:position + length] += rng.uniform(0.3, 1.0) * click
    return out


def _traffic(n: int, rng: np.random.Generator) -> np.ndarray:
    """Passing vehicles: low-passed noise swelling and fading, over a distant rumble."""
    t = np.arange(n) / RATE
    rumble = coloured_noise("brown", n, RATE, rng).astype(np.float64)
    out = 0.3 * rumble
    for _ in range(rng.integers(1, 5)):
        centre, width = rng.uniform(0, n / RATE), rng.uniform(0.5, 2.5)
        envelope = np.exp(-0.5 * ((t - centre) / width) ** 2)
        cutoff = rng.uniform(300, 1500)
        car = signal.sosfilt(signal.butter(2, cutoff, "lowpass", fs=RATE, output="sos"), rng.standard_normal(n))
        out += rng.uniform(0.5, 2.0) * envelope * car / (np.std(car) + 1e-12)
    return out


_NOISE_MAKERS: dict[str, Callable[[int, np.random.Generator], np.ndarray]] = {
    "bursts": _bursts, "fan": _fan, "keyboard": _keyboard, "traffic": _traffic,
}


def noise_recordings(seed: int, per_kind: int = NOISES_PER_KIND) -> dict[str, np.ndarray]:
    """``noise-<kind>-<nn>`` -> 4-10 s of 16 kHz noise, ``per_kind`` of each of :data:`NOISE_KINDS`."""
    recordings = {}
    for kind in NOISE_KINDS:
        for index in range(1, per_kind + 1):
            rng = _rng(seed, "noise", kind, index)
            n = int(rng.uniform(4.0, 10.0) * RATE)
            wave = _NOISE_MAKERS[kind](n, rng) if kind in _NOISE_MAKERS else coloured_noise(kind, n, RATE, rng)
            recordings[f"noise-{kind.replace('_', '')}-{index:02d}"] = _level(wave)
    return recordings


# --- music ---------------------------------------------------------------------------------------

_SCALES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10), "dorian": (0, 2, 3, 5, 7, 9, 10),
           "pentatonic": (0, 2, 4, 7, 9)}


def _midi_hz(note: float) -> float:
    return 440.0 * 2 ** ((note - 69) / 12)


@dataclass(frozen=True)
class _Timbre:
    """Harmonic amplitudes and an attack/decay/sustain/release envelope (seconds, sustain level)."""

    harmonics: np.ndarray
    attack: float
    decay: float
    sustain: float
    release: float

    @classmethod
    def draw(cls, rng: np.random.Generator, *, plucked: bool) -> _Timbre:
        count = int(rng.integers(4, 11))
        slope = rng.uniform(0.8, 2.0)
        harmonics = rng.uniform(0.5, 1.0, count) / np.arange(1, count + 1) ** slope
        if plucked:
            return cls(harmonics, rng.uniform(0.002, 0.01), rng.uniform(0.1, 0.4), rng.uniform(0.0, 0.3),
                       rng.uniform(0.05, 0.2))
        return cls(harmonics, rng.uniform(0.05, 0.3), rng.uniform(0.1, 0.5), rng.uniform(0.5, 0.9),
                   rng.uniform(0.2, 0.6))

    def render(self, frequency: float, seconds: float) -> np.ndarray:
        """One note: harmonics below 7.5 kHz under the envelope (the release follows ``seconds``)."""
        n = int((seconds + self.release) * RATE)
        t = np.arange(n) / RATE
        wave = np.zeros(n)
        for k, amplitude in enumerate(self.harmonics, start=1):
            if k * frequency < 7500:
                wave += amplitude * np.sin(2 * np.pi * k * frequency * t)
        envelope = np.interp(t, [0, self.attack, self.attack + self.decay, max(seconds, self.attack + self.decay),
                                 seconds + self.release], [0, 1, self.sustain, self.sustain, 0])
        return wave * envelope


def _add(track: np.ndarray, sound: np.ndarray, start: int, gain: float) -> None:
    end = min(len(track), start + len(sound))
    if end > start:
        track[start:end] += gain * sound[: end - start]


def _drum(kind: str, rng: np.random.Generator) -> np.ndarray:
    """A kick (falling sine), snare (noise and tone) or hi-hat (high-passed noise) hit."""
    if kind == "kick":
        n = int(0.25 * RATE)
        t = np.arange(n) / RATE
        sweep = 2 * np.pi * np.cumsum(50 + 100 * np.exp(-t / 0.03)) / RATE
        return np.sin(sweep) * np.exp(-t / 0.08)
    if kind == "snare":
        n = int(0.18 * RATE)
        t = np.arange(n) / RATE
        noise = signal.sosfilt(signal.butter(2, [1000, 6000], "bandpass", fs=RATE, output="sos"),
                               rng.standard_normal(n))
        return (0.6 * noise / (np.std(noise) + 1e-12) + 0.5 * np.sin(2 * np.pi * 190 * t)) * np.exp(-t / 0.05)
    n = int(0.06 * RATE)
    t = np.arange(n) / RATE
    noise = signal.sosfilt(signal.butter(2, 7000, "highpass", fs=RATE, output="sos"), rng.standard_normal(n))
    return 0.4 * noise / (np.std(noise) + 1e-12) * np.exp(-t / 0.012)


def _piece(rng: np.random.Generator) -> np.ndarray:
    """A few bars: a chord pad, a bass line, a melody walking on a scale, and (mostly) a beat."""
    seconds = rng.uniform(8.0, 15.0)
    beat = 60.0 / rng.uniform(70, 150)
    scale = _SCALES[rng.choice(list(_SCALES))]
    root = int(rng.integers(48, 60))
    n = int(seconds * RATE)
    track = np.zeros(n + RATE)
    pad, bass, lead = (_Timbre.draw(rng, plucked=False), _Timbre.draw(rng, plucked=True),
                       _Timbre.draw(rng, plucked=bool(rng.random() < 0.5)))

    def pitch(degree: int) -> int:
        octave, step = divmod(degree, len(scale))
        return root + 12 * octave + scale[step]

    bars = int(math.ceil(seconds / (4 * beat)))
    for bar in range(bars):
        degree = int(rng.choice([0, 3, 4, 5])) if bar % 4 else 0
        start = int(bar * 4 * beat * RATE)
        for voice in (0, 2, 4):
            _add(track, pad.render(_midi_hz(pitch(degree + voice)), 4 * beat), start, 0.12)
        for step in range(4):
            _add(track, bass.render(_midi_hz(pitch(degree) - 12), beat * 0.9), start + int(step * beat * RATE), 0.3)
    time, degree = 0.0, 7
    while time < seconds:
        length = beat * float(rng.choice([0.5, 0.5, 1.0, 1.0, 1.5, 2.0]))
        degree = int(np.clip(degree + rng.integers(-2, 3), 3, 13))
        if rng.random() > 0.15:  # some rests
            _add(track, lead.render(_midi_hz(pitch(degree)), length * 0.95), int(time * RATE), 0.25)
        time += length
    if rng.random() < 0.75:
        hits = {"kick": _drum("kick", rng), "snare": _drum("snare", rng), "hat": _drum("hat", rng)}
        for eighth in range(int(seconds / (beat / 2))):
            start = int(eighth * beat / 2 * RATE)
            _add(track, hits["hat"], start, 0.3)
            if eighth % 4 == 0:
                _add(track, hits["kick"], start, 0.8)
            elif eighth % 4 == 2:
                _add(track, hits["snare"], start, 0.5)
    return track[:n]


def music_recordings(seed: int, count: int = MUSIC_PIECES) -> dict[str, np.ndarray]:
    """``music-<nn>`` -> an 8-15 s synthetic piece at 16 kHz, ``count`` of them."""
    return {f"music-{index:02d}": _level(_piece(_rng(seed, "music", index)), rms=0.1)
            for index in range(1, count + 1)}


# --- room impulse responses ------------------------------------------------------------------------


def room_impulse_responses(seed: int, rooms_per_size: int = ROOMS_PER_SIZE,
                           rirs_per_room: int = RIRS_PER_ROOM) -> dict[str, tuple[np.ndarray, float]]:
    """``<size>-Room<nnn>-<nnnnn>`` (Kaldi's ids) -> (impulse response at 16 kHz, the room's RT60 in s)."""
    rirs = {}
    for size_name in rooms.ROOM_SIZES:
        for room_index in range(1, rooms_per_size + 1):
            rng = _rng(seed, "rir", size_name, room_index)
            size, absorption = rooms.random_room(size_name, rng)
            rt60 = rooms.eyring_rt60(size, absorption)
            for rir_index in range(1, rirs_per_room + 1):
                rir = rooms.direct_peaked_rir(size, absorption, rng)
                rirs[f"{size_name}-Room{room_index:03d}-{rir_index:05d}"] = (rir, rt60)
    return rirs


# --- writing -----------------------------------------------------------------------------------------


def write_recordings(data_dir: str | os.PathLike, recordings: Mapping[str, np.ndarray], *, subtype: str = "PCM_16",
                     final_dir: str | os.PathLike | None = None,
                     extra: Mapping[str, Mapping[str, str]] | None = None) -> None:
    """Write ``recordings`` (id -> 16 kHz samples) as ``<data_dir>/wav/<id>.wav`` and a data dir over them.

    Each recording is an utterance and its own speaker (so ``spk data validate``
    passes); ``utt2dur`` is written. ``final_dir`` is where ``data_dir`` will be
    moved to (wav.scp names the files there); ``extra`` adds ``<key> <value>`` files.
    """
    data_dir = Path(data_dir)
    final_dir = Path(final_dir if final_dir is not None else data_dir).absolute()
    (data_dir / "wav").mkdir(parents=True, exist_ok=True)
    for rec, wave in recordings.items():
        sf.write(data_dir / "wav" / f"{rec}.wav", wave, RATE, subtype=subtype)
    write_wav_scp(data_dir / "wav.scp", {rec: str(final_dir / "wav" / f"{rec}.wav") for rec in recordings})
    utt2spk = {rec: rec for rec in recordings}
    write_utt2spk(data_dir / "utt2spk", utt2spk)
    write_spk2utt(data_dir / "spk2utt", utt2spk_to_spk2utt(utt2spk))
    write_utt2dur(data_dir / "utt2dur", {rec: len(wave) / RATE for rec, wave in recordings.items()})
    for name, table in (extra or {}).items():
        write_kv(data_dir / name, table)


@dataclass(frozen=True)
class SourcesInfo:
    """What :func:`make_sources` made: a summary per data dir, and whether it was already there."""

    summaries: dict[str, DataDirSummary]
    reused: bool


def make_speech_set(src: str | os.PathLike, dst: str | os.PathLike, *, num: int | None = None,
                    seed: int = 0) -> DataDirSummary:
    """Write to ``dst`` a random subset of ``num`` recordings of data dir ``src`` (all when None): babble talkers.

    Uses :func:`spk.data.subset_data_dir`, so wav.scp (and segments) point at the
    original audio. Raises :class:`DataDirUsageError` for a ``num`` below 1.
    """
    from spk.data import DataDir

    if num is not None and num < 1:
        raise DataDirUsageError(f"--num-speech must be at least 1, not {num}")
    utts = DataDir(src).utt_ids()
    if num is not None and num < len(utts):
        rng = _rng(seed, "speech")
        utts = sorted(rng.choice(utts, size=num, replace=False).tolist())
    return subset_data_dir(src, dst, utts=utts)


def make_sources(out: str | os.PathLike, *, seed: int = 0, speech_from: str | os.PathLike | None = None,
                 num_speech: int | None = 300, rooms_per_size: int = ROOMS_PER_SIZE,
                 rirs_per_room: int = RIRS_PER_ROOM, noises_per_kind: int = NOISES_PER_KIND,
                 music_pieces: int = MUSIC_PIECES, force: bool = False) -> SourcesInfo:
    """Write ``<out>/{noise,music,rirs}`` (and ``<out>/speech`` from ``speech_from``); see the module docstring.

    All or nothing: everything is written into a staging folder beside ``out``,
    validated, then moved into place (an old ``out`` is replaced whole). When
    ``out`` was made by this function with the same options it is kept as it is
    unless ``force``.
    """
    out = Path(out)
    options = {"seed": seed, "speech_from": str(Path(speech_from).absolute()) if speech_from else None,
               "num_speech": num_speech if speech_from else None, "rooms_per_size": rooms_per_size,
               "rirs_per_room": rirs_per_room, "noises_per_kind": noises_per_kind, "music_pieces": music_pieces}
    for name, value in options.items():
        if isinstance(value, int) and not isinstance(value, bool) and name != "seed" and value < 1:
            raise DataDirUsageError(f"{name.replace('_', '-')} must be at least 1, not {value}")
    names = ["noise", "music", "rirs"] + (["speech"] if speech_from else [])
    check_replaceable(out, INFO_NAME, "spk augment sources", DataDirUsageError)
    if not force and read_info(out, INFO_NAME) == options:
        logger.info("%s: already made with these options (seed %d); keeping it", out, seed)
        return SourcesInfo({name: validate_data_dir(out / name) for name in names}, reused=True)

    def build(staging: Path) -> None:
        if speech_from:  # first: a bad source dir fails before any work
            make_speech_set(speech_from, staging / "speech", num=num_speech, seed=seed)
        write_recordings(staging / "noise", noise_recordings(seed, noises_per_kind), final_dir=out / "noise")
        write_recordings(staging / "music", music_recordings(seed, music_pieces), final_dir=out / "music")
        rirs = room_impulse_responses(seed, rooms_per_size, rirs_per_room)
        write_recordings(staging / "rirs", {rec: rir for rec, (rir, _) in rirs.items()}, subtype="FLOAT",
                         final_dir=out / "rirs", extra={"utt2rt60": {rec: f"{rt60:.3f}"
                                                                     for rec, (_, rt60) in rirs.items()}})
        for name in names:
            validate_data_dir(staging / name)

    stage_and_move(out, options, build, INFO_NAME)
    summaries = {name: validate_data_dir(out / name) for name in names}
    for summary in summaries.values():
        logger.info("augmentation sources: %s", summary)
    return SourcesInfo(summaries, reused=False)
