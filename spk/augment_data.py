"""Offline augmentation of a data dir, Kaldi-v2 style: augmented and speed-perturbed copies as new data dirs.

:func:`augment_data_dir` writes, for each utterance of a source dir and each kind
of ``reverb``, ``noise``, ``music`` and ``babble``, an augmented copy as a 16 kHz
wav file ``<out>/wav/<spk>/<utt>-<kind>.wav``, utterance id ``<utt>-<kind>`` and
the same speaker (Kaldi's suffix style: the speaker id stays a prefix). Each copy
draws its own source recordings, offsets and SNRs from a generator seeded by
``(seed, output id)``, so results do not depend on ``nj`` or on which copies
``num`` keeps.

- ``reverb``: one RIR of the RIR sets (channel 0, as Kaldi reads RIRs),
  applied by :func:`spk.augment.reverberate` (aligned to the direct path);
- ``noise``: unit-power crops of random noise recordings, one after another until
  the utterance is covered, added at an SNR drawn from ``snr["noise"]``;
- ``music``: a random crop of one music recording (repeated when shorter) at an
  SNR from ``snr["music"]``;
- ``babble``: 3-7 (``babble_talkers``) crops of speech recordings, each at its own
  SNR from ``snr["babble"]`` as in Kaldi (so the babble as a whole is louder:
  about ``10 log10(talkers)`` dB below the drawn SNRs). A talker who is the
  utterance's own speaker (same speaker id in the babble set) is never drawn.

SNRs are mean powers over the whole utterance (:func:`spk.augment.add_noise`).
With ``chain`` every copy gets all the kinds at once (reverberation first, then
noise, music, babble, each additive kind at its SNR against the signal it is added
to), id ``<utt>-<kind>-<kind>...``; with ``keep_ids`` it does too, keeping the
source's utterance ids, so a trial list of the source applies to the copy (it is
copied along). That makes a noisy *test* condition::

    spk augment sources --out data/aug_sources_test --seed 1        # other recordings than training's seed 0
    spk augment data --src data/test --out data/test_noisy --kinds reverb,noise \\
        --sources data/aug_sources_test --snr-noise 0:10 --keep-ids --seed 1

A copy that would clip is scaled down as a whole (SNRs are unchanged). Every copy
is described in ``utt2aug`` (source recordings with start times, SNRs, any
gain); ``utt2uniq`` maps copies to their source utterance, so that a validation
split can keep all copies of an utterance on one side.

:func:`speed_perturb_data_dir` writes speed-perturbed copies as *new* speakers
(``sp0.9-<spk>``, ``sp0.9-<utt>``; factor 1.0 keeps the original ids), as Kaldi and
WeSpeaker do. :func:`combine_data_dirs` merges clean and augmented dirs and can
keep a random subset of the augmented copies (Kaldi v2: combine, then subset).

Every writer stages its output beside ``out``, validates it and only then moves it
into place; the source dirs are only read. An output made earlier with the same
options from unchanged sources is kept unless ``force``.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import os
import re
import shutil
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path

import numpy as np
import soundfile as sf

from spk.audio import AudioReader, is_pipe, read_audio, read_segment
from spk.data import (
    DataDir,
    DataDirSummary,
    DataDirUsageError,
    c_sorted,
    read_kv,
    read_trials,
    subset_data_dir,
    utt2spk_to_spk2utt,
    validate_data_dir,
    write_kv,
    write_segments,
    write_spk2utt,
    write_trials,
    write_utt2dur,
    write_utt2spk,
    write_wav_scp,
)
from spk.data.formats import Segment
from spk.data.subset import source_fingerprint
from spk.staging import check_replaceable, read_info, stage_and_move

__all__ = [
    "AugmentError",
    "DEFAULT_BABBLE_TALKERS",
    "DEFAULT_SNRS",
    "KINDS",
    "SOURCE_DIRS",
    "augment_data_dir",
    "combine_data_dirs",
    "parse_factors",
    "parse_kinds",
    "parse_range",
    "source_dirs",
    "speed_perturb_data_dir",
    "speed_prefix",
]

logger = logging.getLogger(__name__)

RATE = 16000
KINDS = ("reverb", "noise", "music", "babble")
ADDITIVE = ("noise", "music", "babble")
DEFAULT_SNRS = {"noise": (0.0, 15.0), "music": (5.0, 15.0), "babble": (13.0, 20.0)}
DEFAULT_BABBLE_TALKERS = (3, 7)
# The data dir of each kind under a --sources folder (as `spk augment sources` writes it).
SOURCE_DIRS = {"reverb": "rirs", "noise": "noise", "music": "music", "babble": "speech"}
PEAK = 0.99
INFO_NAME = ".augment.json"
SILENT_POWER = 1e-10
DRAWS = 10  # tries to find a source crop that is not silent
RIR_CACHE = 512


class AugmentError(DataDirUsageError):
    """Bad options or sources for augmentation; the message names the option or file and the fix."""


# --- options -------------------------------------------------------------------------------------


def parse_kinds(text: str | Iterable[str]) -> tuple[str, ...]:
    """``"reverb,noise"`` (commas or spaces) -> ``("reverb", "noise")``; AugmentError naming unknown kinds."""
    words = re.split(r"[,\s]+", text) if isinstance(text, str) else list(text)
    kinds = tuple(dict.fromkeys(word for word in words if word))
    unknown = [kind for kind in kinds if kind not in KINDS]
    if unknown or not kinds:
        raise AugmentError(f"--kinds {','.join(kinds) or repr(text)}: "
                           f"{'unknown ' + ', '.join(map(repr, unknown)) if unknown else 'nothing given'}; "
                           f"choose from {','.join(KINDS)}")
    return kinds


def parse_range(text: str, option: str, *, integer: bool = False, minimum: float | None = None) -> tuple:
    """``"0:15"`` -> ``(0.0, 15.0)``; a single number is a fixed value. AugmentError naming ``option`` when bad."""
    parts = str(text).split(":")
    try:
        if len(parts) not in (1, 2):
            raise ValueError
        values = tuple((int if integer else float)(part) for part in parts)
    except ValueError:
        kind = "whole numbers" if integer else "numbers"
        raise AugmentError(f"{option} {text!r}: give LOW:HIGH or one value ({kind}, e.g. "
                           f"{'3:7' if integer else '0:15'})") from None
    low, high = values[0], values[-1]
    if not all(math.isfinite(value) for value in (low, high)):
        raise AugmentError(f"{option} {text!r}: the values must be finite")
    if low > high:
        raise AugmentError(f"{option} {text!r}: LOW {low} is above HIGH {high}; write it as {high}:{low}")
    if minimum is not None and low < minimum:
        raise AugmentError(f"{option} {text!r}: must be at least {minimum}")
    return low, high


def parse_factors(text: str | Iterable[float]) -> tuple[float, ...]:
    """``"0.9,1.0,1.1"`` -> ``(0.9, 1.0, 1.1)``; AugmentError for a non-positive, repeated or bad factor."""
    words = [w for w in re.split(r"[,\s]+", text) if w] if isinstance(text, str) else list(text)
    try:
        factors = tuple(float(word) for word in words)
    except ValueError:
        raise AugmentError(f"--factors {text!r}: give numbers separated by commas, e.g. 0.9,1.0,1.1") from None
    if not factors:
        raise AugmentError("--factors: give at least one factor, e.g. 0.9,1.0,1.1")
    bad = [f for f in factors if not (math.isfinite(f) and 0.1 <= f <= 10.0)]
    if bad:
        raise AugmentError(f"--factors {text!r}: {bad[0]} is not a speed factor (between 0.1 and 10)")
    prefixes = [speed_prefix(f) for f in factors]
    if len(set(prefixes)) != len(prefixes):
        raise AugmentError(f"--factors {text!r}: a factor is repeated")
    return factors


def speed_prefix(factor: float) -> str:
    """``0.9`` -> ``"sp0.9"`` (``""`` for 1.0: the original ids)."""
    return "" if factor == 1.0 else f"sp{factor:g}"


def source_dirs(kinds: Sequence[str], sources: str | os.PathLike | None = None,
                overrides: Mapping[str, Sequence[str | os.PathLike]] | None = None) -> dict[str, list[Path]]:
    """The source data dirs of each kind: ``overrides[kind]``, else ``<sources>/<SOURCE_DIRS[kind]>``.

    Raises AugmentError saying what to give when a kind has none.
    """
    overrides = overrides or {}
    found = {}
    for kind in kinds:
        if overrides.get(kind):
            found[kind] = [Path(p) for p in overrides[kind]]
            continue
        option = "--rirs" if kind == "reverb" else f"--{kind}"
        if sources is None:
            raise AugmentError(f"--kinds {kind}: no {kind} source; give --sources DIR (made by `spk augment "
                               f"sources`) or {option} DATA_DIR")
        path = Path(sources) / SOURCE_DIRS[kind]
        if not path.is_dir():
            raise AugmentError(f"--kinds {kind}: {path} is missing (--sources {sources}); make it with `spk augment "
                               f"sources --out {sources}`{' --speech-from DIR' if kind == 'babble' else ''}, "
                               f"or give {option} DATA_DIR")
        found[kind] = [path]
    return found


# --- source recordings -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Recording:
    """One recording of a source set: where its audio is, the cut of it, its length and speaker."""

    source: str
    start: float
    duration: float
    speaker: str


@dataclass
class _SourceSet:
    """The recordings of one kind (from one or more data dirs), by id in C order."""

    kind: str
    dirs: list[str]
    recordings: dict[str, _Recording] = field(default_factory=dict)

    @cached_property
    def ids(self) -> list[str]:
        """The recording ids (read after loading: the list is kept, since every copy draws from it)."""
        return list(self.recordings)


def _load_source_set(kind: str, dirs: Sequence[Path]) -> _SourceSet:
    """Read and check the data dirs of one kind; AugmentError for a missing, invalid or empty one."""
    found = _SourceSet(kind, [str(d) for d in dirs])
    owner: dict[str, Path] = {}
    for path in dirs:
        if not path.is_dir():
            raise AugmentError(f"{kind} source {path} is not a directory; give a data dir (wav.scp, utt2spk, ...)")
        summary = validate_data_dir(path)
        data = DataDir(path)
        wav_scp, segments, utt2spk = data.wav_scp(), data.segments(), data.utt2spk()
        utt2dur = _durations(data)
        for utt in c_sorted(utt2spk):
            if utt in owner:
                raise AugmentError(f"{kind} sources: recording id {utt!r} is in both {owner[utt]} and {path}; "
                                   "give only one of them")
            owner[utt] = path
            rec, start = (utt, 0.0) if segments is None else (segments[utt].recording, segments[utt].start)
            found.recordings[utt] = _Recording(wav_scp[rec], start, float(utt2dur[utt]), utt2spk[utt])
        logger.info("%s source: %s", kind, summary)
    usable = {utt: rec for utt, rec in found.recordings.items() if rec.duration > 0}
    if not usable:
        raise AugmentError(f"{kind} sources {', '.join(map(str, dirs))}: no recording with a duration above 0")
    found.recordings = usable
    return found


def _durations(data: DataDir) -> dict[str, float]:
    """Utterance -> seconds: from utt2dur, else from the segments, file headers, or (pipes) decoding."""
    utt2spk = data.utt2spk()
    utt2dur = data.utt2dur() if data.has("utt2dur") else {}
    missing = [utt for utt in utt2spk if utt not in utt2dur]
    if not missing:
        return utt2dur
    logger.info("%s: %d utterances have no utt2dur entry; reading their lengths", data.path, len(missing))
    wav_scp, segments = data.wav_scp(), data.segments()
    reader = AudioReader(wav_scp, segments, target_rate=None)
    for utt in missing:
        if segments is not None and segments[utt].end != -1:
            utt2dur[utt] = segments[utt].end - segments[utt].start
        elif segments is None and not is_pipe(wav_scp[utt]):
            try:
                info = sf.info(wav_scp[utt])
            except (RuntimeError, TypeError) as error:
                raise AugmentError(f"{data.path}: cannot read utterance {utt!r} ({wav_scp[utt]}): {error}") from None
            utt2dur[utt] = info.frames / info.samplerate
        else:
            utt2dur[utt] = reader.duration(utt)
    return utt2dur


# --- one augmented copy ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Job:
    """One output utterance: its id and speaker, its source utterance, and what to do to it."""

    utt: str
    speaker: str
    source_utt: str
    kinds: tuple[str, ...] = ()
    factor: float = 1.0


@dataclass(frozen=True)
class _Settings:
    """Everything a worker needs (picklable): sources, SNR ranges, where to write."""

    src_wav_scp: dict[str, str]
    src_segments: dict[str, tuple[str, float, float]] | None
    src_utt2spk: dict[str, str]
    sources: dict[str, _SourceSet]
    snrs: dict[str, tuple[float, float]]
    babble_talkers: tuple[int, int]
    seed: int
    staging: str


def _job_rng(seed: int, utt: str) -> np.random.Generator:
    """A generator of its own for each output utterance: reproducible whatever else is made, whatever ``nj``."""
    digest = hashlib.sha256(utt.encode("utf-8")).digest()
    return np.random.default_rng([seed, int.from_bytes(digest[:16], "little")])


def _unit_power(wave: np.ndarray) -> np.ndarray | None:
    power = float(np.mean(np.asarray(wave, dtype=np.float64) ** 2)) if len(wave) else 0.0
    return None if power < SILENT_POWER else (wave / np.sqrt(power)).astype(np.float32)


def _crop(rec_id: str, rec: _Recording, seconds: float, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """A random ``seconds``-long piece of a recording (all of it when shorter) and where it starts."""
    offset = float(rng.uniform(0.0, rec.duration - seconds)) if rec.duration > seconds else 0.0
    end = rec.start + offset + min(seconds, rec.duration)
    wave = read_segment(rec.source, rec.start + offset, end, utt_id=rec_id)
    return wave, offset


def _draw_crop(sources: _SourceSet, seconds: float, rng: np.random.Generator,
               exclude_speaker: str | None = None, used: set[str] | None = None) -> tuple[str, np.ndarray, float]:
    """A non-silent crop of a random recording (unit power), avoiding a speaker and ids already used when possible."""
    ids = [i for i in sources.ids if sources.recordings[i].speaker != exclude_speaker and i not in (used or ())]
    if not ids:
        ids = [i for i in sources.ids if sources.recordings[i].speaker != exclude_speaker] or sources.ids
    for _ in range(DRAWS):
        rec_id = ids[int(rng.integers(len(ids)))]
        wave, offset = _crop(rec_id, sources.recordings[rec_id], seconds, rng)
        unit = _unit_power(wave)
        if unit is not None:
            return rec_id, unit, offset
    raise AugmentError(f"{sources.kind} sources {', '.join(sources.dirs)}: {DRAWS} random crops in a row were "
                       "silent; check the recordings (or drop the silent ones)")


@lru_cache(maxsize=RIR_CACHE)
def _read_rir(source: str, start: float, duration: float, rec_id: str) -> np.ndarray:
    if start == 0.0:
        return read_audio(source, channel=0, utt_id=rec_id)
    return read_segment(source, start, start + duration, channel=0, utt_id=rec_id)


def _noise_track(sources: _SourceSet, n: int, rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
    """``n`` samples of unit-power noise crops, one after another; and ``id@start`` of each."""
    pieces, used, filled = [], [], 0
    while filled < n:
        rec_id, wave, offset = _draw_crop(sources, (n - filled) / RATE, rng)
        pieces.append(wave[: n - filled])
        used.append(f"{rec_id}@{offset:.2f}")
        filled += len(pieces[-1])
    return np.concatenate(pieces), used


def _babble_track(sources: _SourceSet, n: int, speaker: str, talkers: tuple[int, int],
                  snr_range: tuple[float, float], rng: np.random.Generator) -> tuple[np.ndarray, float, list[str]]:
    """A sum of talkers, each at its own SNR; returns the track, the SNR of the whole, and a description."""
    count = int(rng.integers(talkers[0], talkers[1] + 1))
    track = np.zeros(n, dtype=np.float64)
    used: set[str] = set()
    described, snrs = [], []
    for _ in range(count):
        rec_id, wave, offset = _draw_crop(sources, n / RATE, rng, exclude_speaker=speaker, used=used)
        snr = float(rng.uniform(*snr_range))
        used.add(rec_id)
        track += np.resize(wave, n) * 10 ** (-snr / 20)  # unit-power talker at `snr` below unit-power speech
        described.append(f"{rec_id}@{offset:.2f}")
        snrs.append(f"{snr:.2f}")
    power = float(np.mean(track**2))
    total = -10 * math.log10(power) if power > 0 else 100.0
    return track.astype(np.float32), total, [f"babble={','.join(described)}", f"babble_snrs={','.join(snrs)}"]


def _augment(wave: np.ndarray, job: _Job, settings: _Settings,
             rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
    """Apply ``job.kinds`` to ``wave`` (reverberation first); returns the result and its description."""
    from spk.augment import add_noise, reverberate

    notes = []
    if "reverb" in job.kinds:
        rirs = settings.sources["reverb"]
        rec_id = rirs.ids[int(rng.integers(len(rirs.ids)))]
        rec = rirs.recordings[rec_id]
        wave = reverberate(wave, _read_rir(rec.source, rec.start, rec.duration, rec_id))
        notes.append(f"rir={rec_id}")
    for kind in (k for k in ADDITIVE if k in job.kinds):
        sources = settings.sources[kind]
        if kind == "babble":
            track, snr, described = _babble_track(sources, len(wave), settings.src_utt2spk[job.source_utt],
                                                  settings.babble_talkers, settings.snrs["babble"], rng)
            notes += described
        else:
            snr = float(rng.uniform(*settings.snrs[kind]))
            if kind == "noise":
                track, used = _noise_track(sources, len(wave), rng)
            else:
                rec_id, track, offset = _draw_crop(sources, len(wave) / RATE, rng)
                used = [f"{rec_id}@{offset:.2f}"]
            notes += [f"{kind}={','.join(used)}", f"{kind}_snr={snr:.2f}"]
        wave = add_noise(wave, track, snr)
    return wave, notes


def _run_job(job: _Job, reader: AudioReader, settings: _Settings) -> tuple[str, float, str]:
    """Make and write one output utterance; returns (id, duration in s, description)."""
    from spk.augment import speed_perturb

    rng = _job_rng(settings.seed, job.utt)
    wave = reader.read(job.source_utt)
    if job.factor != 1.0:
        wave = speed_perturb(wave, job.factor, RATE)
        notes = [f"speed={job.factor:g}"]
    else:
        wave, notes = _augment(wave, job, settings, rng)
    peak = float(np.max(np.abs(wave))) if len(wave) else 0.0
    if peak > PEAK:
        wave = wave * (PEAK / peak)
        notes.append(f"gain={PEAK / peak:.6f}")
    path = Path(settings.staging) / _wav_path(job)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Through memory: libsndfile syncs every file it closes to disk, which would triple the time taken here;
    # the data dir is moved into place only when every file is written.
    buffer = io.BytesIO()
    sf.write(buffer, wave, RATE, format="WAV", subtype="PCM_16")
    path.write_bytes(buffer.getvalue())
    return job.utt, len(wave) / RATE, " ".join(notes or ["copy"])


def _wav_path(job: _Job) -> str:
    return f"wav/{job.speaker}/{job.utt}.wav"


_WORKER: dict = {}


def _init_worker(settings: _Settings) -> None:
    _WORKER["settings"] = settings
    _WORKER["reader"] = AudioReader(settings.src_wav_scp, settings.src_segments)


def _run_chunk(jobs: list[_Job]) -> list[tuple[str, float, str]]:
    return [_run_job(job, _WORKER["reader"], _WORKER["settings"]) for job in jobs]


def _run_all(jobs: list[_Job], settings: _Settings, nj: int, desc: str) -> list[tuple[str, float, str]]:
    """Run ``jobs`` in ``nj`` processes (in this one for 1), with a progress bar; results in job order."""
    from tqdm import tqdm

    chunk = max(1, min(64, len(jobs) // (nj * 8) or 1))
    chunks = [jobs[i:i + chunk] for i in range(0, len(jobs), chunk)]
    results = []
    with tqdm(total=len(jobs), desc=desc, unit="utt", disable=None) as bar:
        if nj == 1:
            _init_worker(settings)
            try:
                for part in chunks:
                    results += _run_chunk(part)
                    bar.update(len(part))
            finally:
                _WORKER.clear()
            return results
        with ProcessPoolExecutor(max_workers=nj, initializer=_init_worker, initargs=(settings,)) as pool:
            for part, done in zip(chunks, pool.map(_run_chunk, chunks)):
                results += done
                bar.update(len(part))
    return results


# --- writing a data dir of copies ------------------------------------------------------------------


def _check_paths(src: Path, out: Path, others: Iterable[Path] = (), option: str = "--src") -> None:
    """``out`` must be a new place: not ``src`` or a source, not inside one, not holding one."""
    if not src.is_dir():
        raise AugmentError(f"{option} {src}: no such data dir")
    target = out.absolute().resolve()
    for path in [src, *others]:
        path = path.absolute().resolve()
        if target == path or path.is_relative_to(target) or target.is_relative_to(path):
            raise AugmentError(f"--out {out} overlaps {path}, which is only read; write the copies somewhere else")


def _fingerprint(path: Path) -> dict[str, list[int]]:
    # every file a writer may read: utt2uniq, spk2gender and trials are carried into the copies
    return source_fingerprint(path, include_trials=True)


def _check_replaceable(out: Path) -> None:
    """An existing ``out`` is replaced only when this module made it (or it is empty): never someone's folder."""
    check_replaceable(out, INFO_NAME, "spk augment", AugmentError)


def _up_to_date(out: Path, options: dict) -> bool:
    return read_info(out, INFO_NAME) == options


def _settings_for(src: Path, sources: dict[str, _SourceSet], snrs, talkers, seed, staging: Path) -> _Settings:
    data = DataDir(src)
    segments = data.segments()
    return _Settings(
        src_wav_scp=data.wav_scp(),
        src_segments=None if segments is None else {u: (s.recording, s.start, s.end) for u, s in segments.items()},
        src_utt2spk=data.utt2spk(), sources=sources, snrs=dict(snrs), babble_talkers=tuple(talkers), seed=seed,
        staging=str(staging))


def _write_copies(staging: Path, out: Path, jobs: list[_Job], results: list[tuple[str, float, str]], *,
                  src: Path, uniq: bool, copy_trials: bool, speaker_map: Mapping[str, str]) -> DataDirSummary:
    """The data-dir files over the written wavs; validated."""
    final = out.absolute()
    write_wav_scp(staging / "wav.scp", {job.utt: str(final / _wav_path(job)) for job in jobs})
    utt2spk = {job.utt: job.speaker for job in jobs}
    write_utt2spk(staging / "utt2spk", utt2spk)
    write_spk2utt(staging / "spk2utt", utt2spk_to_spk2utt(utt2spk))
    write_utt2dur(staging / "utt2dur", {utt: duration for utt, duration, _ in results})
    write_kv(staging / "utt2aug", {utt: note for utt, _, note in results})
    if uniq:
        original = read_kv(src / "utt2uniq") if (src / "utt2uniq").is_file() else {}
        write_kv(staging / "utt2uniq", {job.utt: original.get(job.source_utt, job.source_utt) for job in jobs})
    if (src / "spk2gender").is_file():
        genders = read_kv(src / "spk2gender")
        present = set(utt2spk.values())
        mapped = {new: genders[old] for new, old in speaker_map.items() if old in genders and new in present}
        if mapped:
            write_kv(staging / "spk2gender", mapped)
    if copy_trials and (src / "trials").is_file():
        _copy_trials(src / "trials", staging / "trials", set(utt2spk) | set(utt2spk.values()), set(utt2spk))
    return validate_data_dir(staging)


def _copy_trials(src: Path, dst: Path, enroll_ids: set[str], test_ids: set[str]) -> None:
    """Copy the trial lines whose ids are all in the copy (all of them unless ``num`` left utterances out)."""
    trials = read_trials(src)
    kept = [trial for trial in trials if trial.enroll in enroll_ids and trial.test in test_ids]
    if len(kept) == len(trials):
        shutil.copyfile(src, dst)
        return
    logger.info("trials: %d of %d lines have both ids among the copies", len(kept), len(trials))
    if kept:
        write_trials(dst, kept)


def _stage_and_move(out: Path, options: dict, build) -> DataDirSummary:
    """Run ``build(staging)`` in a fresh folder beside ``out``, then put it at ``out`` (replacing any old one)."""
    stage_and_move(out, options, build, INFO_NAME)
    summary = validate_data_dir(out)
    logger.info("wrote %s", summary)
    return summary


def _check_nj(nj: int) -> None:
    if nj < 1:
        raise AugmentError(f"--nj {nj}: give at least 1")


def augment_data_dir(src: str | os.PathLike, out: str | os.PathLike, *, kinds: Sequence[str] = KINDS,
                     sources: str | os.PathLike | None = None,
                     source_overrides: Mapping[str, Sequence[str | os.PathLike]] | None = None,
                     snrs: Mapping[str, tuple[float, float]] | None = None,
                     babble_talkers: tuple[int, int] = DEFAULT_BABBLE_TALKERS, seed: int = 0,
                     num: int | None = None, chain: bool = False, keep_ids: bool = False, nj: int = 1,
                     force: bool = False) -> DataDirSummary:
    """Write augmented copies of data dir ``src`` to ``out`` (see the module docstring); return its summary.

    ``sources`` is a folder made by ``spk augment sources`` (``rirs/``, ``noise/``,
    ``music/``, ``speech/``); ``source_overrides`` maps a kind to data dirs to use
    instead. ``snrs`` maps ``noise``/``music``/``babble`` to (low, high) dB,
    defaulting to :data:`DEFAULT_SNRS`. ``num`` keeps that many copies, drawn at
    random (only those are made). Raises :class:`AugmentError` (nothing written)
    for bad options or sources, :class:`spk.data.DataDirError` for an invalid dir.
    """
    src, out = Path(src), Path(out)
    kinds = parse_kinds(kinds)
    snrs = {**DEFAULT_SNRS, **(snrs or {})}
    for kind, (low, high) in snrs.items():
        parse_range(f"{low}:{high}", f"--snr-{kind}")
    parse_range(f"{babble_talkers[0]}:{babble_talkers[1]}", "--babble-talkers", integer=True, minimum=1)
    _check_nj(nj)
    if num is not None and num < 1:
        raise AugmentError(f"--num {num}: give at least 1")
    dirs = source_dirs(kinds, sources, source_overrides)
    _check_paths(src, out, [p for paths in dirs.values() for p in paths])
    _check_replaceable(out)
    summary = validate_data_dir(src)
    chain = chain or keep_ids
    options = {"command": "data", "src": str(src.absolute()), "src_files": _fingerprint(src), "kinds": list(kinds),
               "sources": {k: [str(p.absolute()) for p in v] for k, v in dirs.items()},
               "source_files": {k: [_fingerprint(p) for p in v] for k, v in dirs.items()},
               "snrs": {k: list(v) for k, v in snrs.items() if k in kinds}, "babble_talkers": list(babble_talkers),
               "seed": seed, "num": num, "chain": chain, "keep_ids": keep_ids}
    if not force and _up_to_date(out, options):
        logger.info("%s: already made from %s with these options; keeping it (force to redo)", out, src)
        return validate_data_dir(out)
    loaded = {kind: _load_source_set(kind, paths) for kind, paths in dirs.items()}

    utt2spk = DataDir(src).utt2spk()
    # A chain is named in the order it is applied (KINDS order), whatever the order of --kinds.
    plans = [tuple(kind for kind in KINDS if kind in kinds)] if chain else [(kind,) for kind in kinds]
    jobs = [_Job(utt if keep_ids else f"{utt}-{'-'.join(plan)}", utt2spk[utt], utt, plan)
            for utt in c_sorted(utt2spk) for plan in plans]
    if num is not None and num < len(jobs):
        chosen = np.random.default_rng([seed, 1]).choice(len(jobs), size=num, replace=False)
        jobs = [jobs[i] for i in sorted(chosen)]
    jobs.sort(key=lambda job: job.utt)
    logger.info("%s: %d utterances of %d speakers -> %d copies (%s) in %s", src, summary.num_utterances,
                summary.num_speakers, len(jobs), " + ".join(kinds) if chain else ", ".join(kinds), out)

    def build(staging: Path) -> None:
        settings = _settings_for(src, loaded, snrs, babble_talkers, seed, staging)
        results = _run_all(jobs, settings, nj, f"augmenting {src.name}")
        _write_copies(staging, out, jobs, results, src=src, uniq=not keep_ids, copy_trials=keep_ids,
                      speaker_map={spk: spk for spk in set(utt2spk.values())})

    return _stage_and_move(out, options, build)


def speed_perturb_data_dir(src: str | os.PathLike, out: str | os.PathLike, *,
                           factors: Sequence[float] = (0.9, 1.0, 1.1), nj: int = 1,
                           force: bool = False) -> DataDirSummary:
    """Write speed-perturbed copies of ``src`` to ``out``: factor ``f`` gives speaker ``sp<f>-<spk>`` and
    utterance ``sp<f>-<utt>``, lasting ``1/f`` as long; factor 1.0 copies the audio under the original ids."""
    src, out = Path(src), Path(out)
    factors = parse_factors(factors)
    _check_nj(nj)
    _check_paths(src, out)
    _check_replaceable(out)
    summary = validate_data_dir(src)
    options = {"command": "speed", "src": str(src.absolute()), "src_files": _fingerprint(src),
               "factors": list(factors)}
    if not force and _up_to_date(out, options):
        logger.info("%s: already made from %s with these factors; keeping it (force to redo)", out, src)
        return validate_data_dir(out)
    utt2spk = DataDir(src).utt2spk()
    jobs, speaker_map = [], {}
    for factor in factors:
        prefix = speed_prefix(factor)
        for utt in c_sorted(utt2spk):
            speaker = f"{prefix}-{utt2spk[utt]}" if prefix else utt2spk[utt]
            speaker_map[speaker] = utt2spk[utt]
            jobs.append(_Job(f"{prefix}-{utt}" if prefix else utt, speaker, utt, factor=factor))
    jobs.sort(key=lambda job: job.utt)
    logger.info("%s: %d utterances of %d speakers x speed %s -> %s", src, summary.num_utterances,
                summary.num_speakers, ",".join(f"{f:g}" for f in factors), out)

    def build(staging: Path) -> None:
        settings = _settings_for(src, {}, {}, DEFAULT_BABBLE_TALKERS, 0, staging)
        results = _run_all(jobs, settings, nj, f"speed-perturbing {src.name}")
        _write_copies(staging, out, jobs, results, src=src, uniq=True, copy_trials=False, speaker_map=speaker_map)

    return _stage_and_move(out, options, build)


# --- combining --------------------------------------------------------------------------------------


FEATURE_FILES = ("feats.scp", "cmvn.scp", "utt2num_frames")  # what `spk features` adds to a data dir


@dataclass
class _Combined:
    """The union of several data dirs' files, with where each key came from."""

    wav_scp: dict[str, str] = field(default_factory=dict)
    segments: dict[str, Segment] = field(default_factory=dict)
    utt2spk: dict[str, str] = field(default_factory=dict)
    utt2dur: dict[str, float] = field(default_factory=dict)
    utt2uniq: dict[str, str] = field(default_factory=dict)
    spk2gender: dict[str, str] = field(default_factory=dict)
    owner: dict[str, Path] = field(default_factory=dict)
    any_segments: bool = False
    features: dict[str, dict[str, str]] = field(default_factory=lambda: {name: {} for name in FEATURE_FILES})
    feature_configs: set[str | None] = field(default_factory=set)  # feats.conf texts; None: a dir without features

    def add(self, path: Path) -> list[str]:
        """Add data dir ``path``; returns its utterance ids. AugmentError on clashing ids."""
        data = DataDir(path)
        validate_data_dir(path)
        utt2spk = data.utt2spk()
        for utt in utt2spk:
            if utt in self.owner:
                raise AugmentError(f"utterance {utt!r} is in both {self.owner[utt]} and {path}; combine dirs "
                                   "with distinct ids (e.g. augmented copies and the clean dir)")
            self.owner[utt] = path
        for rec, value in data.wav_scp().items():
            if self.wav_scp.setdefault(rec, value) != value:
                raise AugmentError(f"recording {rec!r} of {path} is also in an earlier dir with another "
                                   f"source ({self.wav_scp[rec]!r} vs {value!r})")
        segments = data.segments()
        if segments is not None:
            self.any_segments = True
            self.segments.update(segments)
        else:
            self.segments.update({utt: Segment(utt, 0.0, -1.0) for utt in utt2spk})
        self.utt2spk.update(utt2spk)
        self.utt2dur.update(_durations(data))
        uniq = read_kv(path / "utt2uniq") if data.has("utt2uniq") else {}
        self.utt2uniq.update({utt: uniq.get(utt, utt) for utt in utt2spk})
        if all((path / name).is_file() for name in (*FEATURE_FILES, "feats.conf")):
            self.feature_configs.add((path / "feats.conf").read_text())
            for name in FEATURE_FILES:
                self.features[name].update(read_kv(path / name))
        else:
            self.feature_configs.add(None)
        if data.has("spk2gender"):
            for spk, gender in read_kv(path / "spk2gender").items():
                if self.spk2gender.setdefault(spk, gender) != gender:
                    raise AugmentError(f"speaker {spk!r} has gender {gender!r} in {path} but "
                                       f"{self.spk2gender[spk]!r} in an earlier dir")
        return c_sorted(utt2spk)

    def write(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        write_wav_scp(path / "wav.scp", self.wav_scp)
        if self.any_segments:
            write_segments(path / "segments", self.segments)
        write_utt2spk(path / "utt2spk", self.utt2spk)
        write_spk2utt(path / "spk2utt", utt2spk_to_spk2utt(self.utt2spk))
        write_utt2dur(path / "utt2dur", self.utt2dur)
        if any(utt != orig for utt, orig in self.utt2uniq.items()):
            write_kv(path / "utt2uniq", self.utt2uniq)
        if self.spk2gender:
            speakers = set(self.utt2spk.values())
            write_kv(path / "spk2gender", {s: g for s, g in self.spk2gender.items() if s in speakers})

    def write_features(self, path: Path, utts: Sequence[str]) -> bool:
        """The inputs' features of ``utts`` into ``path`` (after everything else, so that ``spk features``
        finds them up to date); False, writing nothing, unless every input had them, made alike."""
        if len(self.feature_configs) != 1 or None in self.feature_configs:
            return False
        if any(utt not in self.features[name] for name in FEATURE_FILES for utt in utts):
            return False  # an utterance whose extraction failed: stage 1's rerun fills it in
        (path / "feats.conf").write_text(next(iter(self.feature_configs)))
        for name in FEATURE_FILES:
            write_kv(path / name, {utt: self.features[name][utt] for utt in utts})
        return True


def combine_data_dirs(out: str | os.PathLike, *, clean: Sequence[str | os.PathLike] = (),
                      aug: Sequence[str | os.PathLike] = (), num_aug: int | None = None, seed: int = 0,
                      force: bool = False) -> DataDirSummary:
    """Write to ``out`` every utterance of the ``clean`` dirs plus the ``aug`` dirs' (``num_aug`` of them, drawn
    at random, when given): Kaldi v2's combine-then-subset. Ids must be distinct across the dirs.

    When every input has features made with one feature config, the output gets
    theirs (``feats.scp``, ``cmvn.scp``, ``utt2num_frames``, ``feats.conf``), so the
    clean data's features are not extracted a second time."""
    out = Path(out)
    clean, aug = [Path(p) for p in clean], [Path(p) for p in aug]
    if not clean and not aug:
        raise AugmentError("nothing to combine: give --clean and/or --aug data dirs")
    if num_aug is not None and (num_aug < 1 or not aug):
        raise AugmentError(f"--num-aug {num_aug}: give at least 1, and --aug dirs to draw from")
    for option, paths in (("--clean", clean), ("--aug", aug)):
        for path in paths:
            _check_paths(path, out, option=option)
    _check_replaceable(out)
    options = {"command": "combine", "clean": [str(p.absolute()) for p in clean],
               "aug": [str(p.absolute()) for p in aug], "files": [_fingerprint(p) for p in clean + aug],
               "num_aug": num_aug, "seed": seed}
    if not force and _up_to_date(out, options):
        logger.info("%s: already combined from these dirs; keeping it (force to redo)", out)
        return validate_data_dir(out)
    combined = _Combined()
    kept = [utt for path in clean for utt in combined.add(path)]
    augmented = [utt for path in aug for utt in combined.add(path)]
    if num_aug is not None and num_aug < len(augmented):
        chosen = np.random.default_rng([seed, 2]).choice(len(augmented), size=num_aug, replace=False)
        augmented = [augmented[i] for i in sorted(chosen)]
    logger.info("%s: %d clean + %d augmented utterances", out, len(kept), len(augmented))

    def build(staging: Path) -> None:
        full = staging / ".all"
        combined.write(full)
        if num_aug is None:
            for item in full.iterdir():
                item.rename(staging / item.name)
        else:
            subset_data_dir(full, staging, utts=kept + augmented)
        shutil.rmtree(full, ignore_errors=True)
        if combined.write_features(staging, kept + augmented):
            logger.info("%s: features merged from the combined dirs (no extraction needed)", out)
        validate_data_dir(staging)

    return _stage_and_move(out, options, build)
