"""Tests for spk.augment.simulate: noise colours, SNR mixing, room impulse responses, random EQ."""

import numpy as np
import pytest
from scipy import signal

from spk.augment.simulate import (
    NOISE_TYPES,
    apply_eq,
    coloured_noise,
    exponential_rir,
    mix_at_snr,
    random_eq,
    reverberate,
)

RATE = 16000


def speech_like(seconds=1.0, rate=RATE, seed=0):
    """Harmonics with a syllable-rate envelope: loud and quiet parts, as speech has."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    voiced = sum(np.sin(2 * np.pi * 150 * k * t + rng.uniform(0, 6.3)) / k for k in range(1, 8))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t) ** 2
    return (0.3 * voiced * envelope).astype(np.float32)


def snr_db(speech, mixture):
    speech = speech.astype(np.float64)
    noise = mixture.astype(np.float64) - speech
    return 10 * np.log10(np.mean(speech**2) / np.mean(noise**2))


@pytest.mark.parametrize("kind", NOISE_TYPES)
@pytest.mark.parametrize("snr", [-5.0, 0.0, 5.0, 10.0, 20.0])
def test_mix_at_snr_hits_the_requested_snr(kind, snr):
    rng = np.random.default_rng(1)
    speech = speech_like()
    noise = 3.0 * coloured_noise(kind, len(speech), RATE, rng)  # the noise level must not matter
    mixture = mix_at_snr(speech, noise, snr)
    assert mixture.dtype == np.float32 and mixture.shape == speech.shape
    assert abs(snr_db(speech, mixture) - snr) < 0.5


@pytest.mark.parametrize("noise_len", [1000, 16000, 40000])
def test_mix_at_snr_tiles_or_cuts_the_noise(noise_len):
    rng = np.random.default_rng(2)
    speech = speech_like(1.0)
    noise = coloured_noise("white", noise_len, RATE, rng)
    mixture = mix_at_snr(speech, noise, 10.0)
    assert mixture.shape == speech.shape
    assert abs(snr_db(speech, mixture) - 10.0) < 0.5
    added = mixture.astype(np.float64) - speech
    if noise_len < len(speech):  # tiled: the added noise repeats with the noise's period
        np.testing.assert_allclose(added[noise_len:2 * noise_len], added[:noise_len], atol=1e-5)


@pytest.mark.parametrize("kind", NOISE_TYPES)
def test_coloured_noise_has_unit_rms(kind):
    noise = coloured_noise(kind, 24000, RATE, np.random.default_rng(3))
    assert noise.dtype == np.float32 and noise.shape == (24000,)
    assert np.isfinite(noise).all()
    assert np.sqrt(np.mean(noise.astype(np.float64) ** 2)) == pytest.approx(1.0, abs=1e-4)


def test_coloured_noise_colours_differ():
    """Pink and brown put more of their power at low frequencies than white does."""
    def low_fraction(kind):
        noise = coloured_noise(kind, 32000, RATE, np.random.default_rng(4))
        freqs, power = signal.welch(noise, RATE, nperseg=1024)
        return power[freqs < 500].sum() / power.sum()

    white, pink, brown = low_fraction("white"), low_fraction("pink"), low_fraction("brown")
    assert white < pink < brown


def test_coloured_noise_is_reproducible():
    a = coloured_noise("babble_like", 8000, RATE, np.random.default_rng(5))
    b = coloured_noise("babble_like", 8000, RATE, np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)


def test_unknown_noise_type():
    with pytest.raises(ValueError) as error:
        coloured_noise("purple", 100, RATE, np.random.default_rng(0))
    assert "purple" in str(error.value) and "pink" in str(error.value)


@pytest.mark.parametrize("rt60", [0.15, 0.4, 0.9])
@pytest.mark.parametrize("drr", [0.0, 3.0, 10.0])
def test_exponential_rir_direct_path_first(rt60, drr):
    rir = exponential_rir(RATE, rt60, np.random.default_rng(6), direct_to_reverberant_db=drr)
    assert rir.dtype == np.float32
    assert len(rir) == int(rt60 * RATE * 1.2)
    assert np.argmax(np.abs(rir)) == 0
    assert rir[0] == 1.0
    tail_energy = np.sum(rir[1:].astype(np.float64) ** 2)
    assert 10 * np.log10(1.0 / tail_energy) == pytest.approx(drr, abs=0.01)
    # the tail decays: the last fifth holds far less energy than the first fifth
    fifth = len(rir) // 5
    assert np.sum(rir[-fifth:] ** 2) < 0.01 * np.sum(rir[1:fifth] ** 2)


@pytest.mark.parametrize("rt60, pre_delay_s", [(0.03, 0.0), (0.1, 0.2)])
def test_exponential_rir_short_rt60_or_long_pre_delay(rt60, pre_delay_s):
    rir = exponential_rir(RATE, rt60, np.random.default_rng(0), pre_delay_s=pre_delay_s)
    assert np.argmax(np.abs(rir)) == 0


def test_reverberate_keeps_length_and_alignment():
    rng = np.random.default_rng(7)
    speech = np.zeros(RATE, dtype=np.float32)
    speech[rng.choice(np.arange(100, RATE - 100), size=20, replace=False)] = rng.choice([-1.0, 1.0], 20)
    rir = exponential_rir(RATE, 0.5, rng)
    wet = reverberate(speech, rir)
    assert wet.shape == speech.shape and wet.dtype == np.float32
    lags = signal.correlation_lags(len(wet), len(speech), mode="full")
    xcorr = signal.correlate(wet, speech, mode="full")
    assert lags[np.argmax(np.abs(xcorr))] == 0
    # the direct path passes every impulse through unchanged (plus only the tail of the earlier ones)
    assert np.abs(wet - speech)[speech != 0].max() < 0.5


def test_reverberate_with_a_unit_impulse_is_identity():
    speech = np.random.default_rng(8).standard_normal(4000).astype(np.float32)
    np.testing.assert_allclose(reverberate(speech, np.array([1.0, 0.0, 0.0], dtype=np.float32)), speech,
                               atol=1e-5)


@pytest.mark.parametrize("rate", [8000, 16000, 44100])
@pytest.mark.parametrize("seed", range(5))
def test_random_eq_is_stable(rate, seed):
    sos = random_eq(rate, np.random.default_rng(seed))
    assert sos.ndim == 2 and sos.shape[1] == 6
    assert np.allclose(sos[:, 3], 1.0)  # normalised sections
    for section in sos:
        poles = np.roots(section[3:])
        assert np.all(np.abs(poles) < 1.0), section
    noise = np.random.default_rng(seed).standard_normal(rate).astype(np.float32)
    out = apply_eq(noise, sos)
    assert out.shape == noise.shape and out.dtype == np.float32
    assert np.isfinite(out).all()
    assert np.abs(out).max() < 50 * np.abs(noise).max()
    # the impulse response dies out
    impulse = np.zeros(rate)
    impulse[0] = 1.0
    response = signal.sosfilt(sos, impulse)
    assert np.abs(response[-rate // 10:]).max() < 1e-6


def test_random_eq_reproducible_and_band_limited():
    a = random_eq(RATE, np.random.default_rng(9), num_bands=4, max_gain_db=6.0)
    b = random_eq(RATE, np.random.default_rng(9), num_bands=4, max_gain_db=6.0)
    np.testing.assert_array_equal(a, b)
    assert len(a) == 1 + 2 + 4  # highpass (1 section), lowpass (2 sections), 4 peaking filters
    freqs, response = signal.sosfreqz(a, worN=4096, fs=RATE)
    gain_db = 20 * np.log10(np.abs(response) + 1e-12)
    assert gain_db[freqs < 20].max() < -10  # the highpass cuts DC
    assert gain_db[freqs > 7900].max() < -10  # the lowpass cuts near Nyquist
