"""Offline augmentation of a data dir, Kaldi-v2 style: augmented and speed-perturbed copies as new data dirs.

:func:`augment_data_dir` writes, for each utterance of a source dir and each kind
of ``reverb``, ``noise``, ``music`` and ``babble``, an augmented copy as a 16 kHz
wav file ``<out>/wav/<spk>/<utt>-<kind>.wav``, utterance id ``<utt>-<kind>`` and
the same speaker (Kaldi's suffix style: the speaker id stays a prefix). Each copy
draws its own source recordings, offsets and SNRs from a generator seeded by
``(seed, output id)``, so results do not depend on ``nj`` or on which copies
``num`` keeps.

- ``reverb``: one RIR of the RIR sets (channel 0, as Kaldi reads RIRs),
  applied by :func:`spk.augment.ops.reverberate` (aligned to the direct path);
- ``noise``: unit-power crops of random noise recordings, one after another until
  the utterance is covered, added at an SNR drawn from ``snr["noise"]``;
- ``music``: a random crop of one music recording (repeated when shorter) at an
  SNR from ``snr["music"]``;
- ``babble``: 3-7 (``babble_talkers``) talkers, each at its own SNR from
  ``snr["babble"]``, never the utterance's own speaker: the recipe of
  :mod:`spk.augment.babble`, which on-the-fly augmentation uses too.

Source sets are read by :class:`spk.augment.sources.SourceSet` (the reader of
on-the-fly augmentation too). SNRs are mean powers over the whole utterance
(:func:`spk.augment.ops.add_noise`).
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
WeSpeaker do. (:func:`spk.data.combine_data_dirs` then merges clean and augmented
dirs, Kaldi v2's combine-then-subset.)

Every writer stages its output beside ``out``, validates it and only then moves it
into place (:mod:`spk.data.derived`); the source dirs are only read. An output made
earlier with the same options from unchanged sources is kept unless ``force``.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import shutil
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from spk.audio import AudioReader
from spk.augment.babble import babble_track
from spk.augment.errors import AugmentError
from spk.augment.options import DEFAULT_BABBLE_TALKERS, DEFAULT_SNRS, KINDS, parse_factors, parse_kinds, parse_range, \
    speed_prefix
from spk.augment.sources import SourceSet, source_dirs
from spk.data import (
    DataDir,
    DataDirSummary,
    c_sorted,
    read_kv,
    read_trials,
    utt2spk_to_spk2utt,
    validate_data_dir,
    write_kv,
    write_spk2utt,
    write_trials,
    write_utt2dur,
    write_utt2spk,
    write_wav_scp,
)
from spk.data.combine import INFO_NAME
from spk.data.derived import check_new_place, check_replaceable, fingerprint, read_info, stage_and_move
from spk.jobs import ParallelStep, inputs_key, job_share, parse_job_command, run_step

__all__ = ["augment_data_dir", "speed_perturb_data_dir"]

logger = logging.getLogger(__name__)

RATE = 16000
ADDITIVE = ("noise", "music", "babble")
PEAK = 0.99
RIR_KEEP = 512  # impulse responses kept in memory by each process


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
    sources: dict[str, SourceSet]
    snrs: dict[str, tuple[float, float]]
    babble_talkers: tuple[int, int]
    seed: int
    staging: str


def _job_rng(seed: int, utt: str) -> np.random.Generator:
    """A generator of its own for each output utterance: reproducible whatever else is made, whatever ``nj``."""
    digest = hashlib.sha256(utt.encode("utf-8")).digest()
    return np.random.default_rng([seed, int.from_bytes(digest[:16], "little")])


def _noise_track(sources: SourceSet, n: int, rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
    """``n`` samples of unit-power noise crops, one after another; and ``id@start`` of each."""
    pieces, used, filled = [], [], 0
    while filled < n:
        rec_id, wave, offset = sources.draw((n - filled) / RATE, rng)
        pieces.append(wave[: n - filled])
        used.append(f"{rec_id}@{offset:.2f}")
        filled += len(pieces[-1])
    return np.concatenate(pieces), used


def _augment(wave: np.ndarray, job: _Job, settings: _Settings,
             rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
    """Apply ``job.kinds`` to ``wave`` (reverberation first); returns the result and its description."""
    from spk.augment.ops import add_noise, reverberate

    notes = []
    if "reverb" in job.kinds:
        rirs = settings.sources["reverb"]
        rec_id = rirs.pick(rng)
        wave = reverberate(wave, rirs.whole(rec_id))
        notes.append(f"rir={rec_id}")
    for kind in (k for k in ADDITIVE if k in job.kinds):
        sources = settings.sources[kind]
        if kind == "babble":
            track, snr, described = babble_track(sources, len(wave), rng, count=settings.babble_talkers,
                                                 snr_range=settings.snrs["babble"],
                                                 speaker=settings.src_utt2spk[job.source_utt])
            notes += described
        else:
            snr = float(rng.uniform(*settings.snrs[kind]))
            if kind == "noise":
                track, used = _noise_track(sources, len(wave), rng)
            else:
                rec_id, track, offset = sources.draw(len(wave) / RATE, rng)
                used = [f"{rec_id}@{offset:.2f}"]
            notes += [f"{kind}={','.join(used)}", f"{kind}_snr={snr:.2f}"]
        wave = add_noise(wave, track, snr)
    return wave, notes


def _run_job(job: _Job, reader: AudioReader, settings: _Settings) -> tuple[str, float, str]:
    """Make and write one output utterance; returns (id, duration in s, description)."""
    from spk.augment.ops import speed_perturb

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


# --- the copies as parallel jobs (spk.jobs) ----------------------------------------------------------


def _run_all(jobs: list[_Job], src: Path, out: Path, options: dict, dirs: dict[str, list[Path]], snrs: dict,
             babble_talkers: tuple[int, int], seed: int, nj: int, cmd: str | None,
             log_dir: Path | None, force: bool) -> tuple[Path, list[tuple[str, float, str]]]:
    """Make every copy of ``jobs`` in ``nj`` jobs (:mod:`spk.jobs`); return the work folder and the results.

    The jobs write into a work folder beside ``out`` named after ``options``: a rerun with
    the same options runs only the jobs that did not finish. Results are in plan order.
    """
    nj = max(1, min(nj, len(jobs)))
    work = out.parent.absolute() / f".{out.name}.jobs-{inputs_key(options, nj)}"
    if force:
        shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    plan = "".join(f"{job.utt}\t{job.speaker}\t{job.source_utt}\t{','.join(job.kinds)}\t{job.factor!r}\n"
                   for job in jobs)
    if not (work / "plan.tsv").is_file() or (work / "plan.tsv").read_text() != plan:
        (work / "plan.tsv").write_text(plan)
    step = ParallelStep(
        name=f"{'speed' if options['command'] == 'speed' else 'augment'}_{out.name}", task="augment", num_jobs=nj,
        work_dir=work, log_dir=Path(log_dir) if log_dir else work / "log",
        args={"src": str(src.absolute()), "work": str(work), "plan_sha256": hashlib.sha256(plan.encode()).hexdigest(),
              "sources": {kind: [str(p.absolute()) for p in paths] for kind, paths in dirs.items()},
              "snrs": {kind: list(r) for kind, r in snrs.items()}, "babble_talkers": list(babble_talkers),
              "seed": seed})
    run_step(step, parse_job_command(cmd))
    results = []
    for job in range(1, nj + 1):
        with open(work / f"results.{job}.tsv") as handle:
            results += [(utt, float(seconds), note) for utt, seconds, note in
                        (line.rstrip("\n").split("\t") for line in handle)]
    return work, results


def augment_job(args: dict, job: int, num_jobs: int) -> None:
    """Job ``job`` of an augmentation or speed step (task ``augment``): its share of the plan's copies.

    Writes the wavs into the work folder and ``results.<job>.tsv`` (id, seconds, what was done).
    """
    from tqdm import tqdm

    work = Path(args["work"])
    with open(work / "plan.tsv") as handle:
        plan = [line.rstrip("\n").split("\t") for line in handle]
    mine = [_Job(utt, speaker, source, tuple(k for k in kinds.split(",") if k), float(factor))
            for utt, speaker, source, kinds, factor in plan[job_share(len(plan), job, num_jobs)]]
    loaded = _load_sources(args["sources"])
    settings = _settings_for(Path(args["src"]), loaded, {k: tuple(v) for k, v in args["snrs"].items()},
                             tuple(args["babble_talkers"]), args["seed"], work)
    reader = AudioReader(settings.src_wav_scp, settings.src_segments)
    results = [_run_job(one, reader, settings)
               for one in tqdm(mine, desc=f"copies of job {job}", unit="utt", disable=not sys.stderr.isatty())]
    tmp = work / f"results.{job}.tmp"
    tmp.write_text("".join(f"{utt}\t{seconds!r}\t{note}\n" for utt, seconds, note in results))
    tmp.replace(work / f"results.{job}.tsv")
    logger.info("job %d: %d copies written", job, len(results))


def _load_sources(dirs: Mapping[str, Sequence[str | os.PathLike]]) -> dict[str, SourceSet]:
    """The source sets of each kind (impulse responses: the first channel; noises: the channel mean)."""
    return {kind: SourceSet(paths, f"{kind} sources", rate=RATE, channel=0 if kind == "reverb" else "mean",
                            keep=RIR_KEEP if kind == "reverb" else 0) for kind, paths in dirs.items()}


def _move_copies(work: Path, staging: Path) -> None:
    """The jobs' wavs into the folder being built (a rename: the same file system)."""
    if (work / "wav").is_dir():
        (work / "wav").rename(staging / "wav")


# --- writing a data dir of copies ------------------------------------------------------------------


def _settings_for(src: Path, sources: dict[str, SourceSet], snrs, talkers, seed, staging: Path) -> _Settings:
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


def _check_replaceable(out: Path) -> None:
    """An existing ``out`` is replaced only when this module made it (or it is empty): never someone's folder."""
    check_replaceable(out, INFO_NAME, "spk augment", AugmentError)


def _stage_and_move(out: Path, options: dict, build, work: Path) -> DataDirSummary:
    """Run ``build(staging)`` in a fresh folder beside ``out``, then put it at ``out`` (replacing any old one);
    the jobs' work folders beside ``out`` are removed then."""
    stage_and_move(out, options, build, INFO_NAME)
    for old in out.parent.glob(f".{out.name}.jobs-*"):
        shutil.rmtree(old, ignore_errors=True)
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
                     force: bool = False, cmd: str | None = None, log_dir: Path | None = None) -> DataDirSummary:
    """Write augmented copies of data dir ``src`` to ``out`` (see the module docstring); return its summary.

    ``sources`` is a folder made by ``spk augment sources`` (``rirs/``, ``noise/``,
    ``music/``, ``speech/``); ``source_overrides`` maps a kind to data dirs to use
    instead. ``snrs`` maps ``noise``/``music``/``babble`` to (low, high) dB,
    defaulting to :data:`spk.augment.options.DEFAULT_SNRS`. ``num`` keeps that many copies, drawn at
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
    check_new_place(src, out, AugmentError, [p for paths in dirs.values() for p in paths])
    _check_replaceable(out)
    summary = validate_data_dir(src)
    chain = chain or keep_ids
    options = {"command": "data", "src": str(src.absolute()), "src_files": fingerprint(src), "kinds": list(kinds),
               "sources": {k: [str(p.absolute()) for p in v] for k, v in dirs.items()},
               "source_files": {k: [fingerprint(p) for p in v] for k, v in dirs.items()},
               "snrs": {k: list(v) for k, v in snrs.items() if k in kinds}, "babble_talkers": list(babble_talkers),
               "seed": seed, "num": num, "chain": chain, "keep_ids": keep_ids}
    if not force and read_info(out, INFO_NAME) == options:
        logger.info("%s: already made from %s with these options; keeping it (force to redo)", out, src)
        return validate_data_dir(out)
    _load_sources(dirs)  # bad sources fail here, before any job starts

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

    work, results = _run_all(jobs, src, out, options, dirs, {k: v for k, v in snrs.items() if k in kinds},
                             babble_talkers, seed, nj, cmd, log_dir, force)

    def build(staging: Path) -> None:
        _move_copies(work, staging)
        _write_copies(staging, out, jobs, results, src=src, uniq=not keep_ids, copy_trials=keep_ids,
                      speaker_map={spk: spk for spk in set(utt2spk.values())})

    return _stage_and_move(out, options, build, work)


def speed_perturb_data_dir(src: str | os.PathLike, out: str | os.PathLike, *,
                           factors: Sequence[float] = (0.9, 1.0, 1.1), nj: int = 1,
                           force: bool = False, cmd: str | None = None,
                           log_dir: Path | None = None) -> DataDirSummary:
    """Write speed-perturbed copies of ``src`` to ``out``: factor ``f`` gives speaker ``sp<f>-<spk>`` and
    utterance ``sp<f>-<utt>``, lasting ``1/f`` as long; factor 1.0 copies the audio under the original ids."""
    src, out = Path(src), Path(out)
    factors = parse_factors(factors)
    _check_nj(nj)
    check_new_place(src, out, AugmentError)
    _check_replaceable(out)
    summary = validate_data_dir(src)
    options = {"command": "speed", "src": str(src.absolute()), "src_files": fingerprint(src),
               "factors": list(factors)}
    if not force and read_info(out, INFO_NAME) == options:
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

    work, results = _run_all(jobs, src, out, options, {}, {}, DEFAULT_BABBLE_TALKERS, 0, nj, cmd, log_dir, force)

    def build(staging: Path) -> None:
        _move_copies(work, staging)
        _write_copies(staging, out, jobs, results, src=src, uniq=True, copy_trials=False, speaker_map=speaker_map)

    return _stage_and_move(out, options, build, work)

