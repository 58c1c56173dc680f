"""The augmentation operations on waveforms and feature batches (no sources, no data dirs).

Waveform operations (numpy, float32 mono in, float32 out, same conventions as
:mod:`spk.audio`):

- :func:`add_noise` mixes noise, music or babble at a signal-to-noise ratio;
- :func:`reverberate` convolves with a room impulse response, keeping the
  length and the time alignment of the input;
- :func:`speed_perturb` changes speed and pitch together, as Kaldi's and sox's
  ``speed`` effect does.

Feature operation (torch): :func:`spec_augment` masks random time and
frequency stripes of a batch of normalised features.

The functions draw no random numbers except :func:`spec_augment`, which takes a
``torch.Generator``; callers choose offsets, SNRs and factors with their own
seeded generators so that results are reproducible.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import soxr

from spk.augment.simulate import mix_at_snr

if TYPE_CHECKING:  # torch is imported where it is used, so that offline augmentation workers do not load it
    import torch

__all__ = ["add_noise", "reverberate", "speed_perturb", "spec_augment", "rir_peak"]


def add_noise(speech: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """``speech`` plus ``noise`` scaled so that the mixture has ``snr_db`` dB SNR.

    The output has the length of ``speech``; ``noise`` is tiled when shorter and
    cut when longer, from its first sample (pick a random offset before calling).
    Signal and noise power are mean powers over the whole of ``speech`` and of
    the (tiled/cut) noise, as Kaldi's and WeSpeaker's augmentation compute them.
    Silent speech gets no noise; all-zero noise adds nothing.
    """
    speech = np.asarray(speech, dtype=np.float32)
    noise = np.asarray(noise, dtype=np.float32)
    if speech.ndim != 1 or noise.ndim != 1:
        raise ValueError(f"add_noise: expected 1-D waveforms, got speech {speech.shape} and noise {noise.shape}")
    if len(noise) == 0:
        raise ValueError("add_noise: the noise has 0 samples")
    if not np.isfinite(snr_db):
        raise ValueError(f"add_noise: snr_db must be finite, got {snr_db}")
    if len(speech) == 0:
        return speech.copy()
    return mix_at_snr(speech, noise, float(snr_db))


def rir_peak(rir: np.ndarray) -> int:
    """Index of the direct path of an impulse response: the sample of largest magnitude."""
    return int(np.argmax(np.abs(rir)))


def reverberate(speech: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """``speech`` convolved with the room impulse response ``rir``, same length, aligned to the direct path.

    The RIR is first scaled to unit energy (sum of squares 1), as WeSpeaker and
    Kaldi's ``wav-reverberate`` do, so the level of the result depends on how
    much of the RIR's energy is in its direct path, not on how the RIR file was
    recorded or scaled. The full convolution is then shifted left by the index
    of the RIR's peak (its largest-magnitude sample, taken as the direct path)
    and cut to ``len(speech)``, like ``wav-reverberate --shift-output``: a
    delayed impulse returns the input unchanged and reverberated speech stays
    aligned with the clean speech and its features. A RIR whose peak is at
    sample 0 is not shifted.
    """
    speech = np.asarray(speech, dtype=np.float32)
    rir = np.asarray(rir, dtype=np.float64)
    if speech.ndim != 1 or rir.ndim != 1:
        raise ValueError(f"reverberate: expected 1-D arrays, got speech {speech.shape} and rir {rir.shape}")
    energy = float(np.sum(rir**2))
    if len(rir) == 0 or energy <= 0.0 or not np.isfinite(energy):
        raise ValueError("reverberate: the impulse response is empty, silent or not finite")
    if len(speech) == 0:
        return speech.copy()
    rir = rir / np.sqrt(energy)
    shift = rir_peak(rir)
    from scipy import signal  # a second to import: only when reverberating

    wet = signal.fftconvolve(speech.astype(np.float64), rir, mode="full")
    return wet[shift:shift + len(speech)].astype(np.float32)


def speed_perturb(wave: np.ndarray, factor: float, rate: int = 16000) -> np.ndarray:
    """Play ``wave`` ``factor`` times as fast: duration divided by ``factor``, pitch times ``factor``.

    Kaldi's and sox's ``speed`` semantics: the samples are taken to be at rate
    ``rate * factor`` and resampled to ``rate`` with soxr, so the output has
    about ``round(len(wave) / factor)`` samples. Speed-perturbed speech sounds
    like another speaker, so Kaldi-style recipes usually give it a new speaker
    label; that is the caller's choice.
    """
    wave = np.asarray(wave, dtype=np.float32)
    if wave.ndim != 1:
        raise ValueError(f"speed_perturb: expected a 1-D waveform, got shape {wave.shape}")
    if not (np.isfinite(factor) and factor > 0):
        raise ValueError(f"speed_perturb: factor must be a positive number, got {factor}")
    if factor == 1.0 or len(wave) == 0:
        return wave.copy()
    return soxr.resample(wave, rate * float(factor), float(rate), quality="HQ").astype(np.float32, copy=False)


def spec_augment(feats: torch.Tensor, lengths, *, time_masks: int, max_time_width: int, freq_masks: int,
                 max_freq_width: int, generator: torch.Generator, prob: float = 1.0) -> torch.Tensor:
    """SpecAugment masking of a (B, T, D) batch; returns a new tensor, ``feats`` is not changed.

    Each chosen item (every item, or each with probability ``prob``) gets
    ``time_masks`` stripes of whole frames and ``freq_masks`` stripes of
    feature dimensions set to 0. A stripe's width is uniform in
    ``[0, max_width]`` (capped by the item's valid length, or by D) and its
    start uniform over the positions where it fits, so time masks stay within
    the item's ``lengths[i]`` valid frames and padding is untouched. 0 is the
    mean of features after mean normalisation (CMVN), so a masked stripe carries
    no information rather than an unusual value; the batch must therefore be
    mean-normalised (utterance or global CMVN) for the fill to mean "average".
    Random numbers come only from ``generator``, so a batch is masked the same
    way whenever the generator is seeded the same way.
    """
    import torch

    if feats.dim() != 3:
        raise ValueError(f"spec_augment: expected a (B, T, D) batch, got shape {tuple(feats.shape)}")
    for name, value in (("time_masks", time_masks), ("max_time_width", max_time_width),
                        ("freq_masks", freq_masks), ("max_freq_width", max_freq_width)):
        if value < 0:
            raise ValueError(f"spec_augment: {name} must be >= 0, got {value}")
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f"spec_augment: prob must be in [0, 1], got {prob}")
    batch, frames, dim = feats.shape
    lengths = torch.as_tensor(lengths, dtype=torch.int64).reshape(-1)
    if len(lengths) != batch:
        raise ValueError(f"spec_augment: {len(lengths)} lengths for a batch of {batch}")
    chosen = torch.rand(batch, generator=generator) < prob
    valid = lengths.clamp(max=frames)
    time_mask = _stripes(time_masks, max_time_width, valid, frames, generator)  # (B, T)
    freq_mask = _stripes(freq_masks, max_freq_width, torch.full((batch,), dim), dim, generator)  # (B, D)
    in_length = torch.arange(frames)[None, :] < valid[:, None]  # (B, T)
    mask = (time_mask[:, :, None] | (freq_mask[:, None, :] & in_length[:, :, None])) & chosen[:, None, None]
    return feats.masked_fill(mask.to(feats.device), 0.0)


def _stripes(count: int, max_width: int, sizes: torch.Tensor, span: int,
             generator: torch.Generator) -> torch.Tensor:
    """(B, span) mask of ``count`` stripes per row within ``[0, sizes[b])``, widths uniform in
    ``[0, min(max_width, sizes[b])]`` and starts uniform over the positions where the stripe fits."""
    import torch

    draws = torch.rand(len(sizes), count, 2, generator=generator, dtype=torch.float64)
    sizes = sizes[:, None]
    widths = (draws[..., 0] * (sizes.clamp(max=max_width) + 1)).long()
    starts = (draws[..., 1] * (sizes - widths + 1)).long()
    positions = torch.arange(span)[None, None, :]
    inside = (positions >= starts[..., None]) & (positions < (starts + widths)[..., None])  # (B, count, span)
    return inside.any(dim=1)
