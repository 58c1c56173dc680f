"""Acoustic features: log-mel fbank or MFCC, deltas, energy VAD and CMVN, with kaldi-native-fbank.

Features are computed Kaldi's way (25 ms Povey windows every 10 ms, pre-emphasis,
waveform scaled to the 16-bit integer range) and written raw, without
normalisation, to ``feats.ark/scp``; per-utterance CMVN statistics go to
``cmvn.ark/scp`` in Kaldi's 2 x (D+1) layout.  Normalisation is applied when
features are read (:func:`normalise`), per utterance or with global statistics,
as Kaldi's ``apply-cmvn`` does, so one feature dump serves every CMVN choice.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import kaldi_native_fbank as knf
import numpy as np

from spk.configs import dataclass_from_dict, read_yaml_mapping

logger = logging.getLogger(__name__)

FEATURE_KINDS = ("fbank", "mfcc", "mel_power")
SILENCE_TRIMS = ("none", "webrtcvad")
CMVN_MODES = ("none", "utterance", "global")


class FeatureConfigError(ValueError):
    """A feature configuration names an unknown option or an invalid value."""


@dataclass(frozen=True)
class FeatureConfig:
    """How to turn a waveform into a feature matrix, and how to normalise it.

    ``kind`` is ``fbank`` (log-mel filterbank, ``num_mel_bins`` outputs),
    ``mfcc`` (``num_ceps`` cepstra from ``num_mel_bins`` mel bins) or ``mel_power``
    (a mel power spectrogram, no log, as librosa computes it for GE2E encoders such as
    Resemblyzer's: see :mod:`spk.mel_power`; not for streaming).
    Before any kind, ``loudness_dbfs`` (a number) raises quieter audio to that RMS
    level in dBFS and ``silence_trim: webrtcvad`` cuts long pauses with WebRTC's VAD
    (both whole-utterance steps of the waveform, :mod:`spk.mel_power`).
    ``delta_order`` 1 adds deltas, 2 deltas and delta-deltas.  ``vad`` drops
    non-speech frames by Kaldi's energy VAD.  ``cmvn`` is ``utterance``
    (statistics of the utterance itself), ``global`` (of the training set) or
    ``none``; ``norm_vars`` also divides by the standard deviation.
    """

    kind: str = "fbank"
    sample_rate: int = 16000
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0
    num_mel_bins: int = 80
    num_ceps: int = 40
    low_freq: float = 20.0
    high_freq: float = 0.0  # <= 0: offset from the Nyquist frequency, as in Kaldi
    dither: float = 0.0
    delta_order: int = 0
    delta_window: int = 2
    vad: bool = False
    vad_energy_threshold: float = 5.5
    vad_energy_mean_scale: float = 0.5
    vad_frames_context: int = 2
    vad_proportion_threshold: float = 0.6
    cmvn: str = "utterance"
    norm_vars: bool = False
    loudness_dbfs: float | None = None
    silence_trim: str = "none"

    def __post_init__(self) -> None:
        if self.kind not in FEATURE_KINDS:
            raise FeatureConfigError(f"kind: {self.kind!r} is not one of {', '.join(FEATURE_KINDS)}")
        if self.cmvn not in CMVN_MODES:
            raise FeatureConfigError(f"cmvn: {self.cmvn!r} is not one of {', '.join(CMVN_MODES)}")
        if self.silence_trim not in SILENCE_TRIMS:
            raise FeatureConfigError(f"silence_trim: {self.silence_trim!r} is not one of {', '.join(SILENCE_TRIMS)}")
        if self.delta_order not in (0, 1, 2):
            raise FeatureConfigError(f"delta_order: {self.delta_order} must be 0, 1 or 2")
        if self.kind == "mfcc" and self.num_ceps > self.num_mel_bins:
            raise FeatureConfigError(
                f"num_ceps ({self.num_ceps}) cannot exceed num_mel_bins ({self.num_mel_bins})")

    @property
    def base_dim(self) -> int:
        """Dimension of the static features, before deltas."""
        return self.num_ceps if self.kind == "mfcc" else self.num_mel_bins

    @property
    def dim(self) -> int:
        """Dimension of the features as stored (with deltas)."""
        return self.base_dim * (self.delta_order + 1)

    @property
    def window_samples(self) -> int:
        """Samples in one frame's window."""
        return int(self.sample_rate * self.frame_length_ms / 1000)

    @property
    def shift_samples(self) -> int:
        """Samples between the starts of two frames."""
        return int(self.sample_rate * self.frame_shift_ms / 1000)

    def frames_in(self, num_samples: int) -> int:
        """Frames that ``num_samples`` samples give (Kaldi's snip-edges framing), before any VAD."""
        window = self.window_samples
        return 0 if num_samples < window else 1 + (num_samples - window) // self.shift_samples

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "feature config") -> "FeatureConfig":
        """Build from a mapping; unknown keys and values of the wrong type are errors naming ``source``."""
        return dataclass_from_dict(cls, values, source, FeatureConfigError)

    @classmethod
    def from_yaml(cls, path: str | Path) -> "FeatureConfig":
        """Read a YAML feature config such as ``conf/fbank.yaml`` (checked as :meth:`from_dict`; no key twice)."""
        return cls.from_dict(read_yaml_mapping(path, FeatureConfigError), source=str(path))

    def to_dict(self) -> dict[str, Any]:
        """Plain mapping, as saved into an experiment's config."""
        return asdict(self)


def _frame_options(config: FeatureConfig) -> knf.FrameExtractionOptions:
    frame = knf.FrameExtractionOptions()
    frame.samp_freq = float(config.sample_rate)
    frame.frame_length_ms = config.frame_length_ms
    frame.frame_shift_ms = config.frame_shift_ms
    frame.dither = config.dither
    return frame


def online_extractor(config: FeatureConfig):
    """A kaldi-native-fbank online fbank or MFCC extractor with the static-feature options of ``config``.

    :func:`compute_static` runs one over a whole waveform; :mod:`spk.streaming`
    feeds one chunk by chunk, which gives the same frames. ``mel_power`` and the
    whole-utterance waveform steps have none: an error says so.
    """
    if config.kind == "mel_power" or config.loudness_dbfs is not None or config.silence_trim != "none":
        raise FeatureConfigError("features with kind: mel_power, loudness_dbfs or silence_trim are computed from "
                                 "the whole utterance and cannot be streamed; score whole files instead")
    if config.kind == "fbank":
        options = knf.FbankOptions()
    else:
        options = knf.MfccOptions()
        options.num_ceps = config.num_ceps
    options.frame_opts = _frame_options(config)
    options.mel_opts.num_bins = config.num_mel_bins
    options.mel_opts.low_freq = config.low_freq
    options.mel_opts.high_freq = config.high_freq
    return knf.OnlineFbank(options) if config.kind == "fbank" else knf.OnlineMfcc(options)


def compute_static(waveform: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """Fbank, MFCC or mel-power frames of a float waveform in [-1, 1] at ``config.sample_rate``: (T, base_dim)."""
    if config.kind == "mel_power":
        return mel_power_frames(waveform, config)
    extractor = online_extractor(config)
    frames = np.zeros((config.frames_in(len(waveform)), config.base_dim), dtype=np.float32)
    done = 0
    # Blocks of STATIC_BLOCK_SAMPLES, their frames taken out (and popped) as they are ready: memory stays
    # a few MB for hours of audio (one call over two hours took 5 GB). Kaldi works on samples in the
    # 16-bit range; a list reaches the extension about 15 % faster than an array (kaldi-native-fbank 1.23).
    for start in range(0, len(waveform), STATIC_BLOCK_SAMPLES):
        block = np.asarray(waveform[start:start + STATIC_BLOCK_SAMPLES], dtype=np.float32) * 32768.0
        extractor.accept_waveform(float(config.sample_rate), block.tolist())
        done = _take_frames(extractor, frames, done)
    extractor.input_finished()
    done = _take_frames(extractor, frames, done)
    return frames[:done]


STATIC_BLOCK_SAMPLES = 16000 * 30


def _take_frames(extractor, frames: np.ndarray, done: int) -> int:
    """Copy the extractor's newly ready frames into ``frames`` from row ``done``, drop them from the extractor."""
    ready = extractor.num_frames_ready
    if ready > done:
        frames[done:ready] = [extractor.get_frame(i) for i in range(done, ready)]
        extractor.pop(ready)
    return max(done, ready)


def mel_power_frames(waveform: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """The ``mel_power`` frames of ``config`` (FFT and window as long as a frame; see :mod:`spk.mel_power`)."""
    from spk.mel_power import mel_power_spectrogram

    high = config.high_freq if config.high_freq > 0 else config.sample_rate / 2 + config.high_freq
    return mel_power_spectrogram(waveform, config.sample_rate, int(config.sample_rate * config.frame_length_ms / 1000),
                                 int(config.sample_rate * config.frame_shift_ms / 1000), config.num_mel_bins,
                                 config.low_freq, high)


def prepare_waveform(waveform: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """The waveform after the config's whole-utterance steps (``loudness_dbfs``, then ``silence_trim``)."""
    from spk.mel_power import normalise_loudness, trim_long_silences

    if config.loudness_dbfs is not None:
        waveform = normalise_loudness(waveform, config.loudness_dbfs)
    if config.silence_trim == "webrtcvad":
        waveform = trim_long_silences(waveform, config.sample_rate)
    return waveform


def frame_log_energy(waveform: np.ndarray, config: FeatureConfig, block_frames: int = 8192) -> np.ndarray:
    """Log energy of each frame (Kaldi's raw energy, before windowing, snip-edges framing).

    Frames are formed ``block_frames`` at a time, so an hour of audio needs a few MB, not GBs.
    """
    waveform = np.asarray(waveform)
    length, shift = config.window_samples, config.shift_samples
    num_frames = config.frames_in(len(waveform))
    if num_frames == 0:
        return np.zeros(0, dtype=np.float32)
    log_energy = np.empty(num_frames, dtype=np.float32)
    for first in range(0, num_frames, block_frames):
        count = min(block_frames, num_frames - first)
        start = first * shift
        samples = np.asarray(waveform[start:start + (count - 1) * shift + length], dtype=np.float64) * 32768.0
        frames = samples[(np.arange(count) * shift)[:, None] + np.arange(length)[None, :]]
        frames = frames - frames.mean(axis=1, keepdims=True)  # remove_dc_offset, as Kaldi
        energy = np.sum(frames**2, axis=1)
        log_energy[first:first + count] = np.log(np.maximum(energy, np.finfo(np.float32).eps))
    return log_energy


def vad_threshold(log_energy: np.ndarray, config: FeatureConfig) -> float:
    """The energy-VAD threshold of ``config`` for these frames (Kaldi's ``compute-vad``)."""
    return config.vad_energy_threshold + config.vad_energy_mean_scale * float(np.mean(log_energy))


def energy_vad(log_energy: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """Kaldi's ``compute-vad``: a frame is speech when enough frames around it are loud enough.

    The threshold is ``vad_energy_threshold + vad_energy_mean_scale * mean(log_energy)``;
    a frame is voiced when at least ``vad_proportion_threshold`` of the frames within
    ``vad_frames_context`` of it exceed the threshold.
    """
    if len(log_energy) == 0:
        return np.zeros(0, dtype=bool)
    loud = (log_energy > vad_threshold(log_energy, config)).astype(np.float64)
    context = config.vad_frames_context
    window = np.ones(2 * context + 1)
    loud_count = np.convolve(loud, window, mode="same")
    frame_count = np.convolve(np.ones_like(loud), window, mode="same")
    return loud_count >= config.vad_proportion_threshold * frame_count


def compute_features(waveform: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """The stored features of one utterance: waveform steps, static features, then deltas, then VAD (T', dim)."""
    waveform = prepare_waveform(waveform, config)
    feats = compute_static(waveform, config)
    if len(feats) == 0:
        return np.zeros((0, config.dim), dtype=np.float32)
    if config.delta_order > 0:
        options = knf.DeltaOptions()
        options.order = config.delta_order
        options.window = config.delta_window
        feats = knf.compute_deltas(options, feats)
    if config.vad:
        if config.kind == "mel_power":  # its frames are centred: frame t's window is centred on sample t * shift
            half = int(config.sample_rate * config.frame_length_ms / 1000) // 2
            waveform = np.pad(np.asarray(waveform, dtype=np.float32), half)
        voiced = energy_vad(frame_log_energy(waveform, config)[: len(feats)], config)
        feats = feats[voiced]
    return np.ascontiguousarray(feats, dtype=np.float32)


def cmvn_stats(feats: np.ndarray) -> np.ndarray:
    """Kaldi CMVN statistics of a feature matrix: 2 x (D+1), sums, sums of squares, frame count."""
    return knf.compute_cmvn_stats(np.ascontiguousarray(feats, dtype=np.float32))


def normalise(feats: np.ndarray, config: FeatureConfig, *, utterance_stats: np.ndarray | None = None,
              global_stats: np.ndarray | None = None) -> np.ndarray:
    """Apply the CMVN of ``config`` to ``feats`` (Kaldi's ``apply-cmvn``).

    ``utterance`` mode uses ``utterance_stats`` (computed from ``feats`` if not
    given); ``global`` mode needs ``global_stats`` (the sum of the training set's
    per-utterance statistics, see :func:`accumulate_stats`).
    """
    if config.cmvn == "none" or len(feats) == 0:
        return feats
    if config.cmvn == "utterance":
        stats = utterance_stats if utterance_stats is not None else cmvn_stats(feats)
    else:
        if global_stats is None:
            raise ValueError("global CMVN needs the training set's statistics (global_stats)")
        stats = global_stats
    options = knf.CmvnOptions()
    options.norm_vars = config.norm_vars
    return knf.apply_cmvn(np.asarray(stats, dtype=np.float64), options,
                          np.ascontiguousarray(feats, dtype=np.float32))


def accumulate_stats(stats_iter) -> np.ndarray:
    """Sum per-utterance CMVN statistics into global statistics."""
    total = None
    for stats in stats_iter:
        total = np.array(stats, dtype=np.float64) if total is None else total + stats
    if total is None:
        raise ValueError("no statistics to accumulate: the set is empty")
    return total
