"""Augmentation operations: SNR of added noise, alignment of reverberation, speed perturbation, SpecAugment."""

import numpy as np
import pytest
import torch

from spk.augment import add_noise, reverberate, spec_augment, speed_perturb
from spk.augment.simulate import NOISE_TYPES, coloured_noise, exponential_rir

RATE = 16000


def _speech_like(seconds: float, seed: int = 0) -> np.ndarray:
    """Amplitude-modulated harmonic signal with pauses: a stand-in for speech with silent stretches."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    f0 = 120 + 20 * np.sin(2 * np.pi * 0.5 * t)
    phase = 2 * np.pi * np.cumsum(f0) / RATE
    voiced = sum(np.sin(k * phase) / k for k in range(1, 12))
    envelope = np.clip(np.sin(2 * np.pi * 2.5 * t), 0, None)
    return (0.3 * voiced * envelope + 0.001 * rng.standard_normal(len(t))).astype(np.float32)


def _snr_db(speech: np.ndarray, mixture: np.ndarray) -> float:
    noise = mixture.astype(np.float64) - speech.astype(np.float64)
    return 10 * np.log10(np.mean(speech.astype(np.float64) ** 2) / np.mean(noise**2))


@pytest.mark.parametrize("kind", NOISE_TYPES)
@pytest.mark.parametrize("snr", [-5.0, 0.0, 7.5, 20.0])
def test_add_noise_reaches_the_requested_snr(kind, snr):
    speech = _speech_like(1.3)
    noise = coloured_noise(kind, int(0.4 * RATE), RATE, np.random.default_rng(1)) * 0.05  # shorter: tiled
    mixed = add_noise(speech, noise, snr)
    assert mixed.shape == speech.shape and mixed.dtype == np.float32
    assert abs(_snr_db(speech, mixed) - snr) < 0.5


def test_add_noise_crops_long_noise_from_its_start():
    speech = _speech_like(0.5)
    noise = coloured_noise("white", 3 * len(speech), RATE, np.random.default_rng(2))
    mixed = add_noise(speech, noise, 10.0)
    residual = mixed - speech
    gain = residual[100] / noise[100]
    np.testing.assert_allclose(residual, gain * noise[: len(speech)], rtol=1e-3, atol=1e-6)


def test_add_noise_rejects_empty_noise():
    with pytest.raises(ValueError, match="0 samples"):
        add_noise(_speech_like(0.1), np.zeros(0, dtype=np.float32), 5.0)


def test_reverberate_keeps_the_length():
    speech = _speech_like(0.7)
    rir = exponential_rir(RATE, 0.5, np.random.default_rng(0))
    assert len(rir) > len(speech) // 2
    out = reverberate(speech, rir)
    assert out.shape == speech.shape and out.dtype == np.float32


def test_reverberate_with_a_delta_returns_the_input():
    speech = _speech_like(0.5)
    delta = np.zeros(400, dtype=np.float32)
    delta[0] = 1.0
    np.testing.assert_allclose(reverberate(speech, delta), speech, atol=1e-6)


def test_reverberate_with_a_delayed_scaled_delta_returns_the_input_aligned():
    speech = _speech_like(0.5)
    delta = np.zeros(1000, dtype=np.float32)
    delta[237] = 0.25  # unit-energy normalisation removes the scale, the peak shift removes the delay
    np.testing.assert_allclose(reverberate(speech, delta), speech, atol=1e-6)


def test_reverberated_speech_is_aligned_with_the_input():
    rng = np.random.default_rng(3)
    speech = 0.1 * coloured_noise("babble_like", RATE, RATE, rng)  # speech-shaped and broadband
    rir = exponential_rir(RATE, 0.4, rng, pre_delay_s=0.0)
    rir = np.concatenate([0.01 * rng.standard_normal(300).astype(np.float32), rir])  # direct path at 300
    out = reverberate(speech, rir)
    assert not np.allclose(out, speech / np.sqrt(np.sum(rir.astype(np.float64) ** 2)), atol=1e-3)
    xcorr = np.correlate(out.astype(np.float64), speech.astype(np.float64), mode="full")
    lag = int(np.argmax(xcorr)) - (len(speech) - 1)
    assert lag == 0


def test_reverberate_rejects_a_silent_rir():
    with pytest.raises(ValueError, match="impulse response"):
        reverberate(_speech_like(0.1), np.zeros(100, dtype=np.float32))


@pytest.mark.parametrize("factor", [0.9, 1.1])
def test_speed_perturb_divides_the_duration(factor):
    wave = _speech_like(1.234)
    out = speed_perturb(wave, factor)
    assert abs(len(out) - round(len(wave) / factor)) <= 2
    assert out.dtype == np.float32


def test_speed_perturb_shifts_the_pitch():
    t = np.arange(RATE) / RATE
    tone = np.sin(2 * np.pi * 1000 * t).astype(np.float32)
    out = speed_perturb(tone, 1.1)
    spectrum = np.abs(np.fft.rfft(out * np.hanning(len(out))))
    peak_hz = np.argmax(spectrum) * RATE / len(out)
    assert abs(peak_hz - 1100) < 5


def test_speed_perturb_rejects_a_bad_factor():
    with pytest.raises(ValueError, match="factor"):
        speed_perturb(_speech_like(0.1), 0.0)


def _masked(feats, out):
    return (out == 0) & (feats != 0)


def test_spec_augment_masks_within_each_valid_length():
    generator = torch.Generator().manual_seed(0)
    feats = torch.randn(6, 50, 20) + 5.0  # no zeros before masking
    lengths = torch.tensor([50, 40, 30, 20, 10, 5])
    out = spec_augment(feats, lengths, time_masks=2, max_time_width=8, freq_masks=2, max_freq_width=5,
                       generator=generator)
    assert out.shape == feats.shape
    assert torch.all(feats > 0), "the input must not be changed"
    masked = _masked(feats, out)
    assert masked.any()
    for i, length in enumerate(lengths.tolist()):
        frames = masked[i].all(dim=1)  # whole frames zeroed = time masks
        dims = masked[i, :length].all(dim=0)  # whole dimensions zeroed = frequency masks
        assert not frames[length:].any(), "a time mask reached into the padding"
        assert frames.sum() <= 2 * 8 and dims.sum() <= 2 * 5
        # every zero belongs to a masked frame or a masked dimension
        inside = (torch.arange(50) < length)[:, None]
        assert torch.equal(masked[i], (frames[:, None] | dims[None, :]) & inside)


def test_spec_augment_is_deterministic_given_the_generator():
    feats = torch.randn(4, 30, 10) + 5.0
    kwargs = dict(time_masks=1, max_time_width=10, freq_masks=1, max_freq_width=4)
    a = spec_augment(feats, [30] * 4, generator=torch.Generator().manual_seed(5), **kwargs)
    b = spec_augment(feats, [30] * 4, generator=torch.Generator().manual_seed(5), **kwargs)
    c = spec_augment(feats, [30] * 4, generator=torch.Generator().manual_seed(6), **kwargs)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_spec_augment_prob_zero_changes_nothing():
    feats = torch.randn(3, 20, 8)
    out = spec_augment(feats, [20, 20, 20], time_masks=2, max_time_width=5, freq_masks=2, max_freq_width=3,
                       generator=torch.Generator().manual_seed(0), prob=0.0)
    assert torch.equal(out, feats)


def test_spec_augment_rejects_a_negative_count():
    with pytest.raises(ValueError, match="time_masks"):
        spec_augment(torch.zeros(1, 5, 3), [5], time_masks=-1, max_time_width=2, freq_masks=0, max_freq_width=0,
                     generator=torch.Generator())
