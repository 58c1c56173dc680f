"""On-the-fly waveform augmentation of training chunks, and SpecAugment of batches.

The trainer cuts chunks of precomputed, normalised features.  A chunk chosen
for augmentation (probability ``augment.prob``) is instead computed again from
its waveform: the samples under its frames are read from the training data
dir's ``wav.scp`` (preloaded like the features), augmented with one kind of
:class:`~spk.experiment.AugmentConfig` (noise, music, babble, reverberation,
reverberation + noise), turned into features with
:func:`spk.features.compute_features` and normalised.

Alignment
    Frame ``i`` covers samples ``[i * shift, i * shift + window)`` (Kaldi's
    snip-edges framing), so frames ``[s, s + n)`` are computed from samples
    ``[s * shift, (s + n - 1) * shift + window)`` and give exactly ``n`` frames,
    equal to the stored rows of a clean chunk.  With deltas, ``delta_order *
    delta_window`` frames of context on each side are computed too and cut off
    again, so deltas match the stored ones.  Energy VAD drops frames, which
    breaks the frame-to-sample map: on-the-fly augmentation refuses ``vad: true``.

Sources and babble
    The source sets are read by :class:`spk.augment.sources.SourceSet` and
    babble follows :mod:`spk.augment.babble` (talkers each at their own SNR,
    never the chunk's own speaker, by the training dir's ``utt2spk``), as in
    offline augmentation (``spk augment data``).

CMVN of an augmented chunk
    ``utterance`` CMVN uses the statistics of the augmented chunk itself, not of
    the clean utterance: at test time the model sees features normalised by the
    mean of the (noisy) test utterance, and the chunk's own mean is the nearest
    thing to the mean of a noisy utterance; the clean mean would leave the
    noise's offset in the features, which never happens at test time.
    ``global`` CMVN uses the training set's statistics, as for clean chunks.

Determinism
    Each chunk's random choices come from a generator seeded with ``(seed,
    epoch, batch index, position in the batch)`` and SpecAugment's from ``(seed,
    epoch, batch index)``, so a batch is the same whenever and in whichever
    process it is made: a resumed run and a DDP run see the batches an
    uninterrupted single-process run sees.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from spk.audio import AudioError, AudioReader
from spk.augment.babble import babble_track
from spk.augment.errors import AugmentError
from spk.augment.ops import add_noise, reverberate, spec_augment
from spk.augment.sources import SourceSet
from spk.data import read_segments, read_utt2spk, read_wav_scp
from spk.experiment import AugmentConfig
from spk.features import FeatureConfig, compute_features, normalise

logger = logging.getLogger(__name__)

# Salts that keep the augmentation's random streams apart from the sampler's ([seed, epoch], [seed, epoch, 1]).
_CHUNK_STREAM = 0x617567  # "aug"
_SPEC_STREAM = 0x737065  # "spe"
RIR_KEEP = 512  # impulse responses kept in memory


class WaveformStore:
    """Utterance waveforms of a data dir at the feature sample rate, preloaded or read on demand.

    Preloaded audio is kept as int16 when the samples are exactly 16-bit values
    (16-bit PCM files, not resampled), else as float32, so memory is halved
    without changing a sample.
    """

    def __init__(self, data_dir: Path, utts: list[str], sample_rate: int, *, preload: bool = True):
        data_dir = Path(data_dir)
        if not (data_dir / "wav.scp").is_file():
            raise AugmentError(f"{data_dir}/wav.scp is missing: on-the-fly augmentation reads the training "
                                    f"audio; give a training data dir with wav.scp, or drop `augment` from the config")
        segments = read_segments(data_dir / "segments") if (data_dir / "segments").is_file() else None
        self._reader = AudioReader(read_wav_scp(data_dir / "wav.scp"), segments, target_rate=sample_rate)
        missing = sorted(set(utts) - set(self._reader.utt_ids))
        if missing:
            raise AugmentError(f"{data_dir}: {len(missing)} training utterances have features but no audio in "
                                    f"wav.scp{'/segments' if segments else ''} (e.g. {missing[0]!r}); on-the-fly "
                                    f"augmentation needs the audio of every utterance")
        self._cache: dict[str, np.ndarray] | None = None
        self._last: tuple[str, np.ndarray] | None = None
        if preload:
            self._cache = {utt: _compact(self._read(utt))
                           for utt in tqdm(utts, desc="loading training audio", unit="utt", leave=False)}
            megabytes = sum(w.nbytes for w in self._cache.values()) / 2**20
            logger.info("loaded the audio of %d training utterances (%.0f MiB) for augmentation", len(utts), megabytes)

    def _read(self, utt: str) -> np.ndarray:
        try:
            return self._reader.read(utt)
        except AudioError as err:
            raise AugmentError(f"training audio for on-the-fly augmentation: {err}") from None

    def _stored(self, utt: str) -> np.ndarray:
        if self._cache is not None:
            return self._cache[utt]
        if self._last is None or self._last[0] != utt:  # a chunk asks for the length, then the samples
            self._last = (utt, self._read(utt))
        return self._last[1]

    def __getitem__(self, utt: str) -> np.ndarray:
        """Float32 samples of one utterance."""
        return self.stretch(utt, 0, None)

    def stretch(self, utt: str, begin: int, end: int | None) -> np.ndarray:
        """Float32 samples ``[begin, end)`` of one utterance."""
        wave = self._stored(utt)[begin:end]
        return wave.astype(np.float32) / np.float32(32768.0) if wave.dtype == np.int16 else wave

    def num_samples(self, utt: str) -> int:
        """Length of one utterance in samples."""
        return len(self._stored(utt))


def _compact(wave: np.ndarray) -> np.ndarray:
    """``wave`` as int16 when that is exact (16-bit audio), else unchanged."""
    scaled = wave * np.float32(32768.0)
    fits = scaled.min(initial=0) >= -32768 and scaled.max(initial=0) <= 32767
    if fits and np.array_equal(np.round(scaled), scaled):
        return scaled.astype(np.int16)
    return wave


class ChunkFeaturizer:
    """Raw features of frames ``[start, start + length)`` of an utterance, computed from its audio.

    The frames equal the stored rows of the same chunk (see *Alignment* above);
    on-the-fly augmentation and on-the-fly features (:mod:`spk.train.audio_source`)
    both cut chunks this way.
    """

    def __init__(self, feature_config: FeatureConfig, waves: WaveformStore):
        if feature_config.vad:
            raise AugmentError(
                "features computed from audio chunks need features without energy VAD (vad: false): VAD drops "
                "frames, so chunk frames no longer map to samples")
        self.features = feature_config
        self._compute_config = dataclasses.replace(feature_config, dither=0.0)  # dither is added per chunk
        self.waves = waves
        self.shift, self.window = feature_config.shift_samples, feature_config.window_samples
        self.context = feature_config.delta_order * feature_config.delta_window

    def sample_range(self, first_frame: int, num_frames: int) -> tuple[int, int]:
        """Samples ``[begin, end)`` under frames ``[first_frame, first_frame + num_frames)``."""
        return first_frame * self.shift, (first_frame + num_frames - 1) * self.shift + self.window

    def chunk_features(self, utt: str, start: int, length: int, transform=None,
                       rng: np.random.Generator | None = None) -> np.ndarray:
        """Raw (un-normalised) features of frames ``[start, start + length)`` of ``utt``, recomputed from its audio.

        ``transform`` (samples -> samples of the same length) is applied to the
        audio under the frames (plus delta context) first; without it the result
        equals the stored feature rows. With ``rng`` and a dithering feature
        config, dither is drawn from ``rng``.
        """
        total_frames = self.features.frames_in(self.waves.num_samples(utt))
        if start < 0 or start + length > total_frames:
            raise AugmentError(
                f"utterance {utt!r}: frames [{start}, {start + length}) are outside its audio's {total_frames} "
                f"frames; the features must be computed from the same wav.scp (rerun stage 1)")
        first = max(0, start - self.context)
        last = min(total_frames, start + length + self.context)
        begin, end = self.sample_range(first, last - first)
        stretch = self.waves.stretch(utt, begin, end)
        if transform is not None:
            stretch = transform(stretch)
        if self.features.dither > 0 and rng is not None:
            stretch = stretch + np.float32(self.features.dither / 32768.0) * rng.standard_normal(
                len(stretch)).astype(np.float32)
        feats = compute_features(stretch, self._compute_config)
        if len(feats) != last - first:
            raise AugmentError(f"utterance {utt!r}: {end - begin} samples gave {len(feats)} frames, "
                               f"expected {last - first}; the frame options do not match the audio")
        return feats[start - first:start - first + length]

    def check_lengths(self, utts: list[str], num_frames) -> None:
        """Fail early when the audio does not give the stored number of frames of each utterance."""
        for utt in utts:
            expected = int(num_frames(utt))
            got = self.features.frames_in(self.waves.num_samples(utt))
            if got != expected:
                raise AugmentError(
                    f"utterance {utt!r}: its audio in wav.scp gives {got} frames but feats.scp has {expected}; "
                    f"on-the-fly augmentation needs features computed from this wav.scp with the feature config "
                    f"of training (rerun stage 1)")


class ChunkAugmenter:
    """Replaces a random share of a batch's chunks by features of augmented audio, then applies SpecAugment.

    Called by the sampler with each batch, its chunks' ``(utterance, first
    frame)`` and the batch's position ``(epoch, batch index)``; see the module
    docstring for alignment, CMVN and determinism.
    """

    def __init__(self, config: AugmentConfig, feature_config: FeatureConfig, waves: WaveformStore | None,
                 sources: dict[str, SourceSet], *, seed: int, global_stats: np.ndarray | None = None,
                 utt2spk: Mapping[str, str] | None = None):
        if feature_config.vad and config.prob > 0:
            raise AugmentError(
                "augment: on-the-fly waveform augmentation needs features without energy VAD (vad: false): VAD "
                "drops frames, so chunk frames no longer map to samples. Use features without VAD, or "
                "augment offline (augmented copies of the data dir)")
        self.config = config
        self.features = feature_config
        self.featurizer = ChunkFeaturizer(feature_config, waves) if waves is not None else None
        self.sources = sources
        self.seed = seed
        self.global_stats = global_stats
        self.utt2spk = dict(utt2spk or {})  # babble leaves out the chunk's own speaker
        kinds = [(name, weight) for name, weight in config.kinds() if weight > 0]
        self.kinds = [name for name, _ in kinds]
        weights = np.array([weight for _, weight in kinds], dtype=np.float64)
        self.kind_probs = weights / weights.sum() if len(weights) else weights

    @classmethod
    def build(cls, config: AugmentConfig, feature_config: FeatureConfig, train_dir: Path, utts: list[str], *,
              seed: int, preload: bool = True, global_stats: np.ndarray | None = None) -> "ChunkAugmenter":
        """Load the training audio and open the configured source sets."""
        rate = feature_config.sample_rate
        sources = {}
        for name in ("noise", "music", "babble"):
            part = getattr(config, name)
            if part is not None and (part.weight > 0 or (name == "noise" and config.reverb_noise)):
                sources[name] = SourceSet(part.data, f"augment.{name}.data", rate=rate)
        if config.reverb is not None and (config.reverb.weight > 0 or config.reverb_noise):
            sources["reverb"] = SourceSet(config.reverb.data, "augment.reverb.data", rate=rate, channel=0,
                                          keep=RIR_KEEP)
        waves = WaveformStore(train_dir, utts, rate, preload=preload) if config.prob > 0 else None
        for name, source in sources.items():
            logger.info("augmentation source %s: %d recordings", name, len(source))
        utt2spk = read_utt2spk(Path(train_dir) / "utt2spk") if (Path(train_dir) / "utt2spk").is_file() else None
        return cls(config, feature_config, waves, sources, seed=seed, global_stats=global_stats, utt2spk=utt2spk)

    # --- the batch -------------------------------------------------------------------------------

    def __call__(self, batch, chunks: list[tuple[str, int]], epoch: int, batch_index: int):
        """``batch`` (a :class:`spk.train.dataset.Batch`) with its chosen chunks augmented and SpecAugment
        applied: a new batch."""
        length = int(batch.feats.shape[1])
        feats = batch.feats
        if self.config.prob > 0:
            rows = feats.numpy().copy()
            for item, (utt, start) in enumerate(chunks):
                rng = np.random.default_rng([self.seed, epoch, batch_index, item, _CHUNK_STREAM])
                if rng.random() < self.config.prob:
                    rows[item] = self.augmented_chunk(utt, start, length, rng)
            feats = torch.from_numpy(rows)
        spec = self.config.spec_augment
        if spec is not None and spec.prob > 0:
            seed = np.random.SeedSequence([self.seed, epoch, batch_index, _SPEC_STREAM]).generate_state(1, np.uint64)
            generator = torch.Generator().manual_seed(int(seed[0]))
            feats = spec_augment(feats, batch.lengths, time_masks=spec.time_masks, max_time_width=spec.max_time_width,
                                 freq_masks=spec.freq_masks, max_freq_width=spec.max_freq_width,
                                 generator=generator, prob=spec.prob)
        return dataclasses.replace(batch, feats=feats)

    # --- one chunk -------------------------------------------------------------------------------

    def augmented_chunk(self, utt: str, start: int, length: int, rng: np.random.Generator) -> np.ndarray:
        """Normalised features of frames ``[start, start + length)`` of ``utt``, from audio augmented by one kind."""
        kind = self.kinds[int(rng.choice(len(self.kinds), p=self.kind_probs))]
        feats = self.featurizer.chunk_features(utt, start, length, lambda wave: self._augment(wave, kind, rng, utt),
                                               rng=rng)
        return normalise(feats, self.features, global_stats=self.global_stats)

    def _augment(self, wave: np.ndarray, kind: str, rng: np.random.Generator, utt: str) -> np.ndarray:
        if kind in ("reverb", "reverb_noise"):
            rirs = self.sources["reverb"]
            wave = reverberate(wave, rirs.whole(rirs.pick(rng)))
            if kind == "reverb":
                return wave
            kind = "noise"
        part = getattr(self.config, kind)
        source = self.sources[kind]
        if kind == "babble":
            track, snr, _ = babble_track(source, len(wave), rng, count=part.speakers, snr_range=part.snr,
                                         speaker=self.utt2spk.get(utt))
            return add_noise(wave, track, snr)
        snr = float(rng.uniform(*part.snr))
        return add_noise(wave, source.stretch(len(wave), rng), snr)
