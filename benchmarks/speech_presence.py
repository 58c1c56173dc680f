"""Benchmark: what the speech-presence check (:mod:`spk.speech`, Silero VAD) finds in speech and in non-speech.

For every kind of input it prints the seconds of speech found over the whole
recording (frames with speech probability >= ``--threshold``), as a fraction of
the recording too, and how many recordings pass the rule of the check: at least
0.5 s of speech, or a quarter of a recording shorter than 2 s
(:func:`spk.speech.required_speech_seconds`). It also times the check as the
product runs it (stopping once enough speech is found), per recording.

Inputs
    librispeech    real read speech, 16 kHz (/work/shared/data/LibriSpeech, or --shared)
    fsdd           spoken digits, 8 kHz, resampled to 16 kHz with soxr (short: ~0.3-0.8 s)
    mini           the eSpeak NG corpus of the tests' tiny recipe (8/4/3 speakers, seed 0: the
                   product tests' audio), all of it, synthesised into --work on first use (~10 s)
    speech+noise   LibriSpeech mixed with white, pink or babble-like noise at 5 and 10 dB SNR
    quiet speech   LibriSpeech at -30 dB
    white/pink/brown noise, hum, tones (100 Hz - 3 kHz), "music" (rhythmic harmonic chords),
    silence (digital zero and -60 dB hiss), 4 s each

    python benchmarks/speech_presence.py                  # all, a sample of each corpus
    python benchmarks/speech_presence.py --per-corpus 0   # every file of each corpus
"""

from __future__ import annotations

import argparse
import glob
import random
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from spk import speech
from spk.augment import simulate

RATE = 16000
CLIP_S = 4.0


def _tone(freq: float, seconds: float, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return 0.3 * np.sin(2 * np.pi * freq * t + rng.uniform(0, 2 * np.pi))


def _music(seconds: float, rng: np.random.Generator) -> np.ndarray:
    """Chords of harmonic tones (a few partials each) changing every beat, with note attacks and decays."""
    out = np.zeros(int(seconds * RATE))
    beat = int(rng.uniform(0.25, 0.5) * RATE)
    roots = [220.0, 261.6, 293.7, 329.6, 392.0]
    for start in range(0, len(out), beat):
        root = rng.choice(roots)
        length = min(beat, len(out) - start)
        t = np.arange(length) / RATE
        envelope = np.exp(-t * rng.uniform(3, 8)) * np.minimum(1.0, t / 0.01)
        note = sum(sum(0.5 ** k * np.sin(2 * np.pi * root * ratio * (k + 1) * t) for k in range(4))
                   for ratio in (1.0, 1.26, 1.5))
        out[start:start + length] += envelope * note
    return 0.3 * out / (np.max(np.abs(out)) + 1e-9)


def synthetic_cases(rng: np.random.Generator, count: int) -> dict[str, list[np.ndarray]]:
    """Non-speech recordings of CLIP_S seconds, ``count`` of each kind (tones: one per frequency)."""
    n = int(CLIP_S * RATE)
    cases: dict[str, list[np.ndarray]] = {}
    for kind in ("white", "pink", "brown", "hum"):
        cases[f"{kind} noise"] = [0.1 * simulate.coloured_noise(kind, n, RATE, rng) for _ in range(count)]
    cases["loud white noise"] = [0.5 * rng.standard_normal(n).clip(-3, 3) / 3 for _ in range(count)]
    cases["tones 100 Hz-3 kHz"] = [_tone(f, CLIP_S, rng) for f in (100, 220, 440, 1000, 2000, 3000)]
    cases["music (chords)"] = [_music(CLIP_S, rng) for _ in range(count)]
    cases["silence (zeros)"] = [np.zeros(n)]
    cases["silence (-60 dB hiss)"] = [1e-3 * rng.standard_normal(n) for _ in range(count)]
    return cases


def _files(pattern: str, limit: int, seed: int) -> list[str]:
    files = sorted(glob.glob(pattern, recursive=True))
    if limit and len(files) > limit:
        files = sorted(random.Random(seed).sample(files, limit))
    return files


def _read(path: str) -> np.ndarray:
    samples, rate = sf.read(path, dtype="float32", always_2d=True)
    samples = samples.mean(axis=1)
    return soxr.resample(samples, rate, RATE, quality="HQ") if rate != RATE else samples


def mini_corpus(work: Path) -> Path:
    """The tests' tiny-recipe corpus (run.sh defaults: seed 0; 8 train, 4 test, 3 dev speakers)."""
    from local.mini import MiniConfig, generate_corpus

    return generate_corpus(work / "mini", MiniConfig(num_train_speakers=8, num_test_speakers=4,
                                                     num_dev_speakers=3, seed=0), nj=2)


def measure(name: str, clips: list[np.ndarray], rows: list[tuple]) -> None:
    """One row of the table: speech found over whole recordings, passes of the rule, and time per check."""
    if not clips:
        return
    speech_s, fraction, durations, passed, millis = [], [], [], 0, []
    for clip in clips:
        clip = np.asarray(clip, dtype=np.float32)
        probabilities = speech.speech_probabilities(clip)
        seconds = float(np.count_nonzero(probabilities >= speech.SPEECH_PROBABILITY) * speech.FRAME_S)
        duration = len(clip) / RATE
        speech_s.append(seconds)
        fraction.append(seconds / duration)
        durations.append(duration)
        start = time.perf_counter()
        presence = speech.speech_presence(clip)
        millis.append((time.perf_counter() - start) * 1000)
        passed += presence.enough
    rows.append((name, len(clips), np.median(durations), np.median(speech_s), np.min(speech_s), np.max(speech_s),
                 np.median(fraction), np.min(fraction), passed, np.median(millis), np.max(millis)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shared", default="/work/shared/data", help="Folder with LibriSpeech/ and fsdd/.")
    parser.add_argument("--per-corpus", type=int, default=60, help="Files per corpus (0: all).")
    parser.add_argument("--work", default="/tmp/spk_speech_bench", help="Where the mini corpus is synthesised.")
    parser.add_argument("--threshold", type=float, default=speech.SPEECH_PROBABILITY,
                        help="Speech probability of a speech frame.")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    speech.SPEECH_PROBABILITY = args.threshold
    rng = np.random.default_rng(args.seed)
    speech.speech_probabilities(np.zeros(RATE, dtype=np.float32))  # load the model outside the timings

    rows: list[tuple] = []
    libri = [_read(f) for f in _files(f"{args.shared}/LibriSpeech/**/*.flac", args.per_corpus, args.seed)]
    measure("LibriSpeech", libri, rows)
    fsdd = [_read(f) for f in _files(f"{args.shared}/fsdd/recordings/*.wav", args.per_corpus, args.seed)]
    measure("FSDD digits (8 kHz)", fsdd, rows)
    measure("FSDD digits >= 0.5 s", [clip for clip in fsdd if len(clip) >= 0.5 * RATE], rows)
    corpus = mini_corpus(Path(args.work))
    measure("mini (eSpeak, tests)", [_read(f) for f in _files(f"{corpus}/wav/**/*.wav", 0, args.seed)], rows)
    for kind in ("white", "pink", "babble_like"):
        for snr in (10, 5):
            noisy = [simulate.mix_at_snr(clip, simulate.coloured_noise(kind, len(clip), RATE, rng), snr)
                     for clip in libri[:20]]
            measure(f"LibriSpeech + {kind} {snr} dB", noisy, rows)
    measure("LibriSpeech at -30 dB", [clip * 10 ** (-30 / 20) for clip in libri[:20]], rows)
    for name, clips in synthetic_cases(rng, 5).items():
        measure(name, clips, rows)

    print(f"speech = frames with Silero VAD probability >= {speech.SPEECH_PROBABILITY:g}; rule: at least "
          f"{speech.MIN_SPEECH_S:g} s of speech, or {speech.MIN_SPEECH_FRACTION:g} x a duration under "
          f"{speech.MIN_SPEECH_S / speech.MIN_SPEECH_FRACTION:g} s; ms = the check as the product runs it "
          "(stops once enough speech is found)")
    header = (f"{'input':<32} {'n':>4} {'dur s':>6} {'speech s med':>12} {'min':>6} {'max':>6} {'frac med':>8} "
              f"{'min':>5} {'pass':>7} {'ms med':>7} {'max':>7}")
    print(header)
    print("-" * len(header))
    for name, n, duration, median, low, high, frac, frac_low, passed, ms, ms_max in rows:
        print(f"{name:<32} {n:>4} {duration:>6.2f} {median:>12.2f} {low:>6.2f} {high:>6.2f} {frac:>8.2f} "
              f"{frac_low:>5.2f} {f'{passed}/{n}':>7} {ms:>7.1f} {ms_max:>7.1f}")


if __name__ == "__main__":
    main()
