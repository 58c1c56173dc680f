"""The ``mel_power`` front end: a mel *power* spectrogram computed with numpy, and its waveform options.

This is the front end of GE2E speaker encoders such as Resemblyzer's, as librosa
computes it (``librosa.feature.melspectrogram`` with its defaults): frames centred
on every hop (the waveform padded with ``n_fft // 2`` zeros at both ends, so an
utterance of ``n`` samples gives ``1 + n // hop`` frames), a periodic Hann window
as long as the FFT, the squared magnitude of the FFT, then triangular filters on
the Slaney mel scale with Slaney's area normalisation. No logarithm, no
pre-emphasis, no dithering: a frame of digital silence is all zeros.

Two waveform steps may come before it (``spk.features.FeatureConfig`` options,
for any feature kind):

- :func:`normalise_loudness` (``loudness_dbfs``): scale the waveform so that its
  RMS level is the target in dB relative to full scale, only ever louder
  (quieter audio is raised, louder audio is left alone);
- :func:`trim_long_silences` (``silence_trim: webrtcvad``): WebRTC's voice
  activity detector (aggressiveness 3) on 30 ms windows, smoothed with a moving
  average over 8 windows and rounded, the voiced regions widened by 3 windows on
  each side (so pauses of up to 6 windows, 0.18 s, are kept whole); audio outside
  them is cut out. It needs the ``webrtcvad`` module (``pip install webrtcvad-wheels``).
"""

from __future__ import annotations

import functools

import numpy as np

# The Slaney mel scale: linear below 1 kHz (3 mels per 200 Hz), logarithmic above it
# (27 mels per factor of 6.4).
_LINEAR_HZ_PER_MEL = 200.0 / 3
_BREAK_HZ = 1000.0
_BREAK_MEL = _BREAK_HZ / _LINEAR_HZ_PER_MEL
_LOG_STEP = np.log(6.4) / 27.0

VAD_WINDOW_MS = 30
VAD_SMOOTHING_WINDOWS = 8
VAD_WIDENING_WINDOWS = 3
VAD_AGGRESSIVENESS = 3
INT16_MAX = 2**15 - 1


def hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    """Frequencies in Hz to the Slaney mel scale."""
    hz = np.asarray(hz, dtype=np.float64)
    safe = np.maximum(hz, _BREAK_HZ)
    return np.where(hz < _BREAK_HZ, hz / _LINEAR_HZ_PER_MEL, _BREAK_MEL + np.log(safe / _BREAK_HZ) / _LOG_STEP)


def mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    """Slaney mels back to Hz."""
    mel = np.asarray(mel, dtype=np.float64)
    return np.where(mel < _BREAK_MEL, mel * _LINEAR_HZ_PER_MEL, _BREAK_HZ * np.exp(_LOG_STEP * (mel - _BREAK_MEL)))


@functools.lru_cache(maxsize=8)
def mel_filterbank(sample_rate: int, n_fft: int, num_bins: int, low_hz: float, high_hz: float) -> np.ndarray:
    """Slaney-normalised triangular mel filters ``(num_bins, n_fft // 2 + 1)``, float32 (read-only).

    Filter edges are ``num_bins + 2`` points evenly spaced in Slaney mels from
    ``low_hz`` to ``high_hz``; each triangle is scaled by ``2 / (upper - lower edge in Hz)``
    so that every filter has the same area.
    """
    if not 0 <= low_hz < high_hz <= sample_rate / 2:
        raise ValueError(f"mel filters need 0 <= low_freq ({low_hz:g}) < high_freq ({high_hz:g}) <= "
                         f"half the sample rate ({sample_rate / 2:g})")
    fft_hz = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(low_hz), hz_to_mel(high_hz), num_bins + 2))
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (fft_hz[None, :] - lower) / (centre - lower)
    falling = (upper - fft_hz[None, :]) / (upper - centre)
    weights = np.maximum(0.0, np.minimum(rising, falling)) * (2.0 / (upper - lower))
    weights = weights.astype(np.float32)
    weights.flags.writeable = False
    return weights


@functools.lru_cache(maxsize=8)
def _hann(length: int) -> np.ndarray:
    """The periodic Hann window of ``length`` samples (as used for spectral analysis)."""
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(length) / length)
    window.flags.writeable = False
    return window


def mel_power_spectrogram(waveform: np.ndarray, sample_rate: int, n_fft: int, hop: int, num_bins: int,
                          low_hz: float, high_hz: float, block_frames: int = 4096) -> np.ndarray:
    """Mel power spectrogram ``(1 + len // hop, num_bins)``, float32, of a float waveform (see the module doc).

    Frames are transformed ``block_frames`` at a time, so long audio needs little memory.
    """
    samples = np.asarray(waveform, dtype=np.float32)
    half = n_fft // 2
    padded = np.concatenate([np.zeros(half, np.float32), samples, np.zeros(half, np.float32)])
    num_frames = 1 + len(samples) // hop
    filters = mel_filterbank(sample_rate, n_fft, num_bins, float(low_hz), float(high_hz))
    window = _hann(n_fft)
    out = np.empty((num_frames, num_bins), dtype=np.float32)
    offsets = np.arange(n_fft)[None, :]
    for first in range(0, num_frames, block_frames):
        count = min(block_frames, num_frames - first)
        frames = padded[(first + np.arange(count))[:, None] * hop + offsets] * window
        spectrum = np.fft.rfft(frames, axis=1)
        power = (spectrum.real**2 + spectrum.imag**2).astype(np.float32)
        out[first:first + count] = power @ filters.T
    return out


def normalise_loudness(waveform: np.ndarray, target_dbfs: float) -> np.ndarray:
    """The waveform scaled up so its RMS level is ``target_dbfs`` dB re full scale; never scaled down.

    Full scale is the 16-bit integer range (a waveform of RMS ``1.0`` is at about 0 dBFS).
    Silence (RMS 0) is returned unchanged.
    """
    samples = np.asarray(waveform, dtype=np.float32)
    rms = float(np.sqrt(np.mean(np.square(samples.astype(np.float64) * INT16_MAX)))) if len(samples) else 0.0
    if rms <= 0.0:
        return samples
    gain_db = target_dbfs - 20.0 * np.log10(rms / INT16_MAX)
    if gain_db <= 0:
        return samples
    return samples * np.float32(10.0 ** (gain_db / 20.0))


def _webrtcvad():
    try:
        import webrtcvad
    except ImportError:
        raise ImportError("silence_trim: webrtcvad needs the webrtcvad module; install it with "
                          "'pip install webrtcvad-wheels' (or 'pip install spk[pretrained]'), or set "
                          "silence_trim: none") from None
    return webrtcvad


def trim_long_silences(waveform: np.ndarray, sample_rate: int) -> np.ndarray:
    """The waveform without its long non-speech stretches (WebRTC VAD; see the module doc).

    The waveform is first cut to a whole number of 30 ms windows. ``sample_rate``
    must be one WebRTC's VAD accepts (8, 16, 32 or 48 kHz).
    """
    webrtcvad = _webrtcvad()
    if sample_rate not in (8000, 16000, 32000, 48000):
        raise ValueError(f"silence_trim: webrtcvad works at 8, 16, 32 or 48 kHz, not {sample_rate} Hz")
    window = VAD_WINDOW_MS * sample_rate // 1000
    samples = np.asarray(waveform, dtype=np.float32)
    samples = samples[:len(samples) - len(samples) % window]
    if len(samples) == 0:
        return samples
    pcm = np.round(samples * INT16_MAX).astype("<i2").tobytes()
    detector = webrtcvad.Vad(VAD_AGGRESSIVENESS)
    step = 2 * window  # bytes per window
    voiced = np.array([detector.is_speech(pcm[start:start + step], sample_rate)
                       for start in range(0, len(pcm), step)], dtype=np.float64)
    # centred moving average (the extra window of an even width on the right), zeros beyond the ends
    width = VAD_SMOOTHING_WINDOWS
    padded = np.concatenate([np.zeros((width - 1) // 2), voiced, np.zeros(width // 2)])
    smoothed = np.convolve(padded, np.ones(width), mode="valid") / width
    speech = np.round(smoothed).astype(bool)
    # widen each voiced run by VAD_WIDENING_WINDOWS windows on both sides
    reach = VAD_WIDENING_WINDOWS
    widened = np.convolve(speech.astype(np.int64), np.ones(2 * reach + 1, dtype=np.int64), mode="same") > 0
    return samples[np.repeat(widened, window)]
