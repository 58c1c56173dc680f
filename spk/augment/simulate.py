"""Simulated acoustic conditions: coloured noise, room impulse responses, channel EQ, SNR mixing.

The ``mini`` corpus (``local/mini.py``) uses them to give each recording session
its own channel; the built-in sources (:mod:`spk.augment.builtin`) use the
coloured noises. ``reverberate`` here keeps the RIR's scale and takes its first
sample as the direct path (the RIRs of :func:`exponential_rir`); augmentation
uses :func:`spk.augment.ops.reverberate` (unit-energy RIR, aligned to its peak).

Every function takes a ``numpy.random.Generator`` so results are reproducible.
"""

from __future__ import annotations

import numpy as np
from scipy import fft, signal

NOISE_TYPES = ("white", "pink", "brown", "babble_like", "hum")


def coloured_noise(kind: str, num_samples: int, rate: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS noise of one of :data:`NOISE_TYPES`.

    ``pink`` and ``brown`` fall by 3 and 6 dB per octave; ``babble_like`` is
    speech-shaped noise with a syllable-rate (3-6 Hz) amplitude modulation;
    ``hum`` is mains hum (50 or 60 Hz and harmonics) over a little white noise.
    """
    if kind not in NOISE_TYPES:
        raise ValueError(f"unknown noise type {kind!r}; choose one of {', '.join(NOISE_TYPES)}")
    if kind == "hum":
        t = np.arange(num_samples) / rate
        base = rng.choice([50.0, 60.0])
        hum = sum(rng.uniform(0.2, 1.0) / k * np.sin(2 * np.pi * base * k * t + rng.uniform(0, 2 * np.pi))
                  for k in range(1, 6))
        noise = hum + 0.05 * rng.standard_normal(num_samples)
    else:
        white = rng.standard_normal(num_samples)
        spectrum = fft.rfft(white)
        freqs = np.fft.rfftfreq(num_samples, 1.0 / rate)
        freqs[0] = freqs[1] if len(freqs) > 1 else 1.0
        if kind == "white":
            shape = np.ones_like(freqs)
        elif kind == "pink":
            shape = 1.0 / np.sqrt(freqs)
        elif kind == "brown":
            shape = 1.0 / freqs
        else:  # speech-shaped: a broad hump around 500 Hz, -6 dB/octave above
            shape = 1.0 / (1.0 + (freqs / 500.0) ** 2) * np.sqrt(freqs / (freqs + 100.0))
        noise = fft.irfft(spectrum * shape, n=num_samples)
        if kind == "babble_like":
            t = np.arange(num_samples) / rate
            envelope = 1.0 + 0.8 * np.sin(2 * np.pi * rng.uniform(3, 6) * t + rng.uniform(0, 2 * np.pi))
            noise = noise * envelope
    rms = np.sqrt(np.mean(noise**2)) + 1e-12
    return (noise / rms).astype(np.float32)


def mix_at_snr(speech: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """Add ``noise`` (tiled or cut to length) to ``speech`` so that the mixture has ``snr_db``.

    Signal power is the mean power of the whole of ``speech``.
    """
    if len(noise) < len(speech):
        noise = np.tile(noise, int(np.ceil(len(speech) / len(noise))))
    noise = noise[: len(speech)]
    speech_power = np.mean(speech.astype(np.float64) ** 2)
    noise_power = np.mean(noise.astype(np.float64) ** 2) + 1e-20
    gain = np.sqrt(speech_power / (noise_power * 10 ** (snr_db / 10.0)))
    return (speech + gain * noise).astype(np.float32)


def exponential_rir(rate: int, rt60: float, rng: np.random.Generator, *,
                    direct_to_reverberant_db: float = 3.0, pre_delay_s: float = 0.0) -> np.ndarray:
    """A room impulse response: a direct path at sample 0 plus an exponentially decaying tail.

    The tail is Gaussian noise decaying by 60 dB in ``rt60`` seconds, starting
    after a short gap with a few sparse early reflections, scaled so that the
    energy ratio of the direct path to the tail is ``direct_to_reverberant_db``.
    The direct path stays at index 0, so convolution does not shift the speech.
    """
    length = max(int(rt60 * rate * 1.2), 16)
    t = np.arange(length) / rate
    decay = np.exp(-6.9078 * t / rt60)  # ln(1000) = 6.9078: -60 dB at rt60
    tail = rng.standard_normal(length) * decay
    gap = int((0.002 + pre_delay_s) * rate)
    tail[:gap] = 0.0
    gap = min(gap, length - 1)
    for _ in range(6):  # sparse early reflections, within the first 50 ms and within the RIR
        delay = rng.integers(gap, max(gap + 1, min(length, int(0.05 * rate))))
        tail[delay] += rng.uniform(-1, 1) * decay[delay] * 3
    tail_energy = np.sum(tail**2) + 1e-20
    tail *= np.sqrt(10 ** (-direct_to_reverberant_db / 10.0) / tail_energy)
    rir = tail
    rir[0] = 1.0
    return rir.astype(np.float32)


def reverberate(speech: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """Convolve with ``rir`` and keep the first ``len(speech)`` samples (aligned to the direct path)."""
    wet = signal.fftconvolve(speech, rir, mode="full")[: len(speech)]
    return wet.astype(np.float32)


def random_eq(rate: int, rng: np.random.Generator, *, num_bands: int = 3, max_gain_db: float = 8.0) -> np.ndarray:
    """A random channel as second-order sections: a band limit plus ``num_bands`` peaking filters.

    Models the colouring of a microphone, a room and a transmission path.
    """
    sections = []
    low_cut = rng.uniform(60.0, 300.0)
    high_cut = rng.uniform(3400.0, min(7600.0, rate / 2 - 200))
    sections.append(signal.butter(2, low_cut, "highpass", fs=rate, output="sos"))
    sections.append(signal.butter(4, high_cut, "lowpass", fs=rate, output="sos"))
    for _ in range(num_bands):
        centre = float(np.exp(rng.uniform(np.log(150.0), np.log(min(6000.0, rate / 2 - 500)))))
        gain_db = rng.uniform(-max_gain_db, max_gain_db)
        sections.append(_peaking_sos(centre, gain_db, rng.uniform(0.7, 2.5), rate))
    return np.concatenate(sections, axis=0)


def _peaking_sos(centre: float, gain_db: float, q: float, rate: int) -> np.ndarray:
    """One peaking-EQ biquad (Audio EQ Cookbook) as a second-order section."""
    amp = 10 ** (gain_db / 40.0)
    w0 = 2 * np.pi * centre / rate
    alpha = np.sin(w0) / (2 * q)
    b = np.array([1 + alpha * amp, -2 * np.cos(w0), 1 - alpha * amp])
    a = np.array([1 + alpha / amp, -2 * np.cos(w0), 1 - alpha / amp])
    return np.concatenate([b / a[0], a / a[0]])[None, :]


def apply_eq(speech: np.ndarray, sos: np.ndarray) -> np.ndarray:
    """Filter ``speech`` through the second-order sections ``sos``."""
    return signal.sosfilt(sos, speech).astype(np.float32)
