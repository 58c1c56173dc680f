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

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from tqdm import tqdm

from spk.audio import AudioError, AudioReader, is_pipe, read_segment
from spk.augment import add_noise, reverberate, spec_augment
from spk.data import read_segments, read_utt2dur, read_wav_scp
from spk.features import FeatureConfig, compute_features, normalise
from spk.experiment import AugmentConfig
from spk.train.dataset import Batch

logger = logging.getLogger(__name__)

# Salts that keep the augmentation's random streams apart from the sampler's ([seed, epoch], [seed, epoch, 1]).
_CHUNK_STREAM = 0x617567  # "aug"
_SPEC_STREAM = 0x737065  # "spe"


class AugmentSetupError(ValueError):
    """An augmentation source or the training data cannot serve on-the-fly augmentation."""


class WaveformStore:
    """Utterance waveforms of a data dir at the feature sample rate, preloaded or read on demand.

    Preloaded audio is kept as int16 when the samples are exactly 16-bit values
    (16-bit PCM files, not resampled), else as float32, so memory is halved
    without changing a sample.
    """

    def __init__(self, data_dir: Path, utts: list[str], sample_rate: int, *, preload: bool = True):
        data_dir = Path(data_dir)
        if not (data_dir / "wav.scp").is_file():
            raise AugmentSetupError(f"{data_dir}/wav.scp is missing: on-the-fly augmentation reads the training "
                                    f"audio; give a training data dir with wav.scp, or drop `augment` from the config")
        segments = read_segments(data_dir / "segments") if (data_dir / "segments").is_file() else None
        self._reader = AudioReader(read_wav_scp(data_dir / "wav.scp"), segments, target_rate=sample_rate)
        missing = sorted(set(utts) - set(self._reader.utt_ids))
        if missing:
            raise AugmentSetupError(f"{data_dir}: {len(missing)} training utterances have features but no audio in "
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
            raise AugmentSetupError(f"training audio for on-the-fly augmentation: {err}") from None

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


class SourceSet:
    """Recordings of an augmentation data dir (noise, music, speech or RIRs) read on demand.

    Durations come from ``utt2dur`` when present (else from the files'
    headers, or by decoding); a random stretch of a recording is read by range,
    so large sets such as MUSAN need no memory.  Piped entries are decoded once and kept.
    """

    def __init__(self, data_dir: str | Path, key: str, sample_rate: int, *, channel: str | int = "mean"):
        path = Path(data_dir)
        if not (path / "wav.scp").is_file():
            raise AugmentSetupError(
                f"{key}: {data_dir} is not a data dir with wav.scp (looked for {path.resolve() / 'wav.scp'}; "
                f"relative paths are relative to the working directory). Prepare it first (e.g. "
                f"`python -m local.musan` / `python -m local.rirs_noises`), or remove {key} from the config")
        self.key, self.rate, self.channel = key, sample_rate, channel
        self._wav_scp = read_wav_scp(path / "wav.scp")
        self._segments = read_segments(path / "segments") if (path / "segments").is_file() else None
        self._reader = AudioReader(self._wav_scp, self._segments, target_rate=sample_rate, channel=channel)
        self.ids = self._reader.utt_ids
        if not self.ids:
            raise AugmentSetupError(f"{key}: {path}/wav.scp lists no recordings")
        self._durations = self._read_durations(path)
        self._decoded: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.ids)

    def _read_durations(self, path: Path) -> np.ndarray:
        if (path / "utt2dur").is_file():
            utt2dur = read_utt2dur(path / "utt2dur")
            missing = [i for i in self.ids if i not in utt2dur]
            if missing:
                raise AugmentSetupError(f"{self.key}: {path}/utt2dur has no duration for {missing[0]!r} "
                                        f"({len(missing)} missing); remove utt2dur or fix it")
            return np.array([utt2dur[i] for i in self.ids], dtype=np.float64)
        logger.info("%s: %s has no utt2dur; reading the durations of %d recordings", self.key, path, len(self.ids))
        return np.array([self._duration(i) for i in self.ids], dtype=np.float64)

    def _duration(self, utt: str) -> float:
        source = self._wav_scp.get(utt)
        if self._segments is None and source is not None and not is_pipe(source):
            try:
                return sf.info(source).duration
            except RuntimeError as err:
                raise AugmentSetupError(f"{self.key}: cannot read {source!r} ({err})") from None
        return len(self._whole(utt)) / self.rate

    def _whole(self, utt: str) -> np.ndarray:
        """All samples of one recording (piped ones decoded once and kept)."""
        if utt in self._decoded:
            return self._decoded[utt]
        try:
            wave = self._reader.read(utt)
        except AudioError as err:
            raise AugmentSetupError(f"{self.key}: {err}") from None
        rec = self._segments[utt][0] if self._segments is not None else utt
        if is_pipe(self._wav_scp[rec]):
            self._decoded[utt] = wave
        return wave

    def recording(self, rng: np.random.Generator) -> np.ndarray:
        """A whole random recording (e.g. an impulse response)."""
        return self._whole(self.ids[int(rng.integers(len(self.ids)))])

    def stretch(self, num_samples: int, rng: np.random.Generator) -> np.ndarray:
        """``num_samples`` samples of a random recording from a random offset, tiled when it is shorter."""
        index = int(rng.integers(len(self.ids)))
        utt, duration = self.ids[index], float(self._durations[index])
        length_s = num_samples / self.rate
        if duration <= length_s:
            wave = self._whole(utt)
        else:
            offset = float(rng.uniform(0.0, duration - length_s))
            wave = self._read_range(utt, offset, offset + length_s)
        if len(wave) == 0:
            raise AugmentSetupError(f"{self.key}: recording {utt!r} has no samples where its duration says "
                                    f"{duration:.3f} s; fix utt2dur or drop the recording")
        return np.resize(wave, num_samples)  # tiles a short (or a rounding-short) stretch

    def _read_range(self, utt: str, start: float, end: float) -> np.ndarray:
        try:
            return self._read_range_of(utt, start, end)
        except AudioError as err:
            raise AugmentSetupError(f"{self.key}: {err}") from None

    def _read_range_of(self, utt: str, start: float, end: float) -> np.ndarray:
        source = self._wav_scp.get(utt) if self._segments is None else None
        if source is not None and not is_pipe(source):
            return read_segment(source, start, end, target_rate=self.rate, channel=self.channel, utt_id=utt)
        if self._segments is not None:
            rec, seg_start, _ = self._segments[utt]
            if not is_pipe(self._wav_scp[rec]):
                return read_segment(self._wav_scp[rec], seg_start + start, seg_start + end,
                                    target_rate=self.rate, channel=self.channel, utt_id=utt)
        whole = self._whole(utt)
        first = int(round(start * self.rate))
        return whole[first:first + int(round((end - start) * self.rate))]


class ChunkAugmenter:
    """Replaces a random share of a batch's chunks by features of augmented audio, then applies SpecAugment.

    Called by the sampler with each batch, its chunks' ``(utterance, first
    frame)`` and the batch's position ``(epoch, batch index)``; see the module
    docstring for alignment, CMVN and determinism.
    """

    def __init__(self, config: AugmentConfig, feature_config: FeatureConfig, waves: WaveformStore | None,
                 sources: dict[str, SourceSet], *, seed: int, global_stats: np.ndarray | None = None):
        if feature_config.vad and config.prob > 0:
            raise AugmentSetupError(
                "augment: on-the-fly waveform augmentation needs features without energy VAD (vad: false): VAD "
                "drops frames, so chunk frames no longer map to samples. Use features without VAD, or "
                "augment offline (augmented copies of the data dir)")
        self.config = config
        self.features = feature_config
        self._compute_config = replace(feature_config, dither=0.0)  # dither is added here, from the chunk's rng
        self.waves = waves
        self.sources = sources
        self.seed = seed
        self.global_stats = global_stats
        self.shift = int(feature_config.sample_rate * feature_config.frame_shift_ms / 1000)
        self.window = int(feature_config.sample_rate * feature_config.frame_length_ms / 1000)
        self.context = feature_config.delta_order * feature_config.delta_window
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
                sources[name] = SourceSet(part.data, f"augment.{name}.data", rate)
        if config.reverb is not None and (config.reverb.weight > 0 or config.reverb_noise):
            sources["reverb"] = SourceSet(config.reverb.data, "augment.reverb.data", rate, channel=0)
        waves = WaveformStore(train_dir, utts, rate, preload=preload) if config.prob > 0 else None
        for name, source in sources.items():
            logger.info("augmentation source %s: %d recordings", name, len(source))
        return cls(config, feature_config, waves, sources, seed=seed, global_stats=global_stats)

    # --- the batch -------------------------------------------------------------------------------

    def __call__(self, batch: Batch, chunks: list[tuple[str, int]], epoch: int, batch_index: int) -> Batch:
        """``batch`` with its chosen chunks augmented and SpecAugment applied (a new Batch)."""
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
        return Batch(feats=feats, lengths=batch.lengths, labels=batch.labels)

    # --- one chunk -------------------------------------------------------------------------------

    def augmented_chunk(self, utt: str, start: int, length: int, rng: np.random.Generator) -> np.ndarray:
        """Normalised features of frames ``[start, start + length)`` of ``utt``, from audio augmented by one kind."""
        kind = self.kinds[int(rng.choice(len(self.kinds), p=self.kind_probs))]
        feats = self.chunk_features(utt, start, length, lambda wave: self._augment(wave, kind, rng), rng=rng)
        return normalise(feats, self.features, global_stats=self.global_stats)

    def sample_range(self, first_frame: int, num_frames: int) -> tuple[int, int]:
        """Samples ``[begin, end)`` under frames ``[first_frame, first_frame + num_frames)``."""
        return first_frame * self.shift, (first_frame + num_frames - 1) * self.shift + self.window

    def chunk_features(self, utt: str, start: int, length: int, transform=None,
                       rng: np.random.Generator | None = None) -> np.ndarray:
        """Raw (un-normalised) features of frames ``[start, start + length)`` of ``utt``, recomputed from its audio.

        ``transform`` (samples -> samples of the same length) is applied to the
        audio under the frames (plus delta context) first; without it the result
        equals the stored feature rows.
        """
        total_frames = self._frames_in(self.waves.num_samples(utt))
        if start < 0 or start + length > total_frames:
            raise AugmentSetupError(
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
            raise AugmentSetupError(f"utterance {utt!r}: {end - begin} samples gave {len(feats)} frames, "
                                    f"expected {last - first}; the frame options do not match the audio")
        return feats[start - first:start - first + length]

    def _frames_in(self, num_samples: int) -> int:
        return 0 if num_samples < self.window else 1 + (num_samples - self.window) // self.shift

    def check_lengths(self, utts: list[str], num_frames) -> None:
        """Fail early when the training audio does not give the stored number of frames of each utterance."""
        if self.waves is None:
            return
        for utt in utts:
            expected = int(num_frames(utt))
            got = self._frames_in(self.waves.num_samples(utt))
            if got != expected:
                raise AugmentSetupError(
                    f"utterance {utt!r}: its audio in wav.scp gives {got} frames but feats.scp has {expected}; "
                    f"on-the-fly augmentation needs features computed from this wav.scp with the feature config "
                    f"of training (rerun stage 1)")

    def _augment(self, wave: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
        if kind in ("reverb", "reverb_noise"):
            wave = reverberate(wave, self.sources["reverb"].recording(rng))
            if kind == "reverb":
                return wave
            kind = "noise"
        part = getattr(self.config, kind)
        snr = float(rng.uniform(*part.snr))
        source = self.sources[kind]
        if kind == "babble":
            talkers = int(rng.integers(part.speakers[0], part.speakers[1] + 1))
            noise = np.zeros(len(wave), dtype=np.float64)
            for _ in range(talkers):
                talker = source.stretch(len(wave), rng).astype(np.float64)
                noise += talker / (np.sqrt(np.mean(talker**2)) + 1e-9)
        else:
            noise = source.stretch(len(wave), rng)
        return add_noise(wave, noise.astype(np.float32), snr)
