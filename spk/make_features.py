"""Features for a whole data dir: ``feats.scp``, ``cmvn.scp``, ``utt2num_frames``, ``utt2dur``.

The data dir is split into ``nj`` parts (``split<nj>``), each part is computed by its own
job (:mod:`spk.jobs`: a process here or a Slurm array task) into
``<feat_dir>/raw_<kind>_<set>.<key>.<job>.{ark,scp}``, and the parts are merged
into the data dir only when enough utterances succeeded, so a failed run never
replaces good feature lists with partial ones. With ``compress`` the feature
matrices are stored with Kaldi's 8-bit "speech feature" compression (a quarter of
the float32 size; readers such as ``kaldiio.load_scp`` decompress them). With
``lengths_only`` only ``utt2num_frames`` and ``utt2dur`` are written, from the
decoded audio: what training with on-the-fly features needs, with no feature dump.
"""

from __future__ import annotations

import io
import logging
import os
import sys
from pathlib import Path

import kaldiio
import numpy as np
from kaldiio.compression_header import kSpeechFeature
from kaldiio.matio import read_kaldi, write_array
from tqdm import tqdm

from spk.audio import AudioError, AudioReader
from spk.data import io as dio
from spk.data.subset import source_fingerprint, split_data_dir
from spk.features import FeatureConfig, cmvn_stats, compute_features
from spk.jobs import ParallelStep, inputs_key, parse_job_command, run_step
from spk.jobs.step import describe_jobs

logger = logging.getLogger(__name__)


class FeatureExtractionError(RuntimeError):
    """Too many utterances of a data dir failed feature extraction."""


def features_up_to_date(data_dir: Path, config: FeatureConfig) -> bool:
    """True when feats.scp covers every utterance and was made with ``config`` after the inputs changed."""
    data_dir = Path(data_dir)
    feats, marker = data_dir / "feats.scp", data_dir / "feats.conf"
    if not (feats.exists() and marker.exists()) or marker.read_text() != _config_text(config):
        return False
    newest_input = max((data_dir / name).stat().st_mtime for name in ("wav.scp", "utt2spk", "segments")
                       if (data_dir / name).exists())
    if feats.stat().st_mtime < newest_input:
        return False
    return set(dio.read_kv(feats)) >= set(dio.read_kv(data_dir / "utt2spk"))


def make_features(data_dir: Path, config: FeatureConfig, feat_dir: Path, *, nj: int = 1,
                  force: bool = False, min_fraction: float = 0.95, compress: bool = False,
                  lengths_only: bool = False, cmd: str | None = None,
                  log_dir: Path | None = None) -> dict[str, int]:
    """Compute features for every utterance of ``data_dir``; returns counts of done and failed.

    ``compress`` stores the matrices with Kaldi's compression method 2 (8 bits per value,
    piecewise linear between per-column percentiles); the CMVN statistics are then those
    of the decompressed values, as Kaldi computes them from compressed features.
    Skips the work when :func:`features_up_to_date` (unless ``force``), compressed or not.
    The ``nj`` jobs (over ``split<nj>`` of the data dir) run through job command ``cmd``
    (``local`` when None, or ``slurm ...``: :mod:`spk.jobs`), logs in ``log_dir``
    (default ``<feat_dir>/log``); a rerun runs only the jobs not done.  Raises
    :class:`FeatureExtractionError` when fewer than ``min_fraction`` of the
    utterances could be read.
    """
    data_dir, feat_dir = Path(data_dir), Path(feat_dir).absolute()
    if lengths_only and config.vad:
        raise FeatureExtractionError(f"{data_dir}: lengths without features need a feature config without "
                                     f"energy VAD (VAD decides the number of frames from the features)")
    if not force and lengths_only and _lengths_up_to_date(data_dir, config):
        logger.info("%s: utterance lengths are up to date; skipping (use --force to recompute)", data_dir)
        return {"done": len(dio.read_kv(data_dir / "utt2num_frames")), "failed": 0, "skipped": 1}
    if not force and not lengths_only and features_up_to_date(data_dir, config):
        logger.info("%s: features are up to date; skipping (use --force to recompute)", data_dir)
        return {"done": len(dio.read_kv(data_dir / "feats.scp")), "failed": 0, "skipped": 1}
    utts = sorted(dio.read_kv(data_dir / "utt2spk"))
    if not utts:
        raise FeatureExtractionError(f"{data_dir}/utt2spk lists no utterances")
    nj = max(1, min(nj, len(utts)))
    feat_dir.mkdir(parents=True, exist_ok=True)
    parts = [data_dir] if nj == 1 else split_data_dir(data_dir, nj)
    # Archives are named after what they are made from: a run with other inputs writes new
    # ones, and those the current feats.scp points to stay intact until the new lists replace
    # it, so a failed run loses nothing; a rerun with the same inputs reuses the finished jobs.
    base = f"raw_{config.kind}_{data_dir.name}"
    key = inputs_key(source_fingerprint(data_dir), config.to_dict(), nj, compress, lengths_only)
    prefix = feat_dir / f"{base}.{key}"
    step = ParallelStep(
        name=f"{'lengths' if lengths_only else 'make_' + config.kind}_{data_dir.name}", task="features",
        args={"parts": [str(part.absolute()) for part in parts], "config": config.to_dict(),
              "prefix": str(prefix), "compress": compress, "lengths_only": lengths_only},
        num_jobs=nj, work_dir=feat_dir, log_dir=Path(log_dir) if log_dir else feat_dir / "log",
        output=f"{prefix}.{{job}}.frames")
    if force:
        step.forget()
    what = "lengths (utt2num_frames, utt2dur; no features)" if lengths_only else f"{config.kind} features"
    logger.info("%s: computing %s for %d utterances with %d job(s)%s", data_dir, what, len(utts),
                nj, ", stored compressed (Kaldi speech-feature 8-bit)" if compress else "")
    run_step(step, parse_job_command(cmd))
    prefixes = [f"{step.args['prefix']}.{job}" for job in range(1, nj + 1)]
    failures = {job: _read_failures(prefix) for job, prefix in enumerate(prefixes, start=1)}
    failed = [failure for job_failures in failures.values() for failure in job_failures]
    done = len(utts) - len(failed)
    for utt, message in failed[:10]:
        logger.warning("no features for %s: %s", utt, message)
    if done < min_fraction * len(utts):
        jobs_with_failures = [job for job, job_failures in failures.items() if job_failures]
        step.forget(jobs_with_failures)  # so that a rerun, after the audio is fixed, runs these jobs again
        raise FeatureExtractionError(
            f"{data_dir}: features for only {done} of {len(utts)} utterances "
            f"(fewer than {min_fraction:.0%}); first failure: {failed[0][1]}. "
            "Fix the audio or drop the utterances (spk data subset) and run again"
            + (": the job(s) with failures run again.\n" + describe_jobs(step, jobs_with_failures) if nj > 1 else ""))
    _merge_parts(data_dir, prefixes, config, lengths_only=lengths_only)
    _remove_old_archives(feat_dir, base, keep=[] if lengths_only else prefixes)
    logger.info("%s: %s for %d utterances (%d failed)%s", data_dir, "lengths" if lengths_only else "features", done,
                len(failed), "" if lengths_only else f" in {feat_dir}")
    return {"done": done, "failed": len(failed), "skipped": 0}


def features_job(args: dict, job: int, num_jobs: int) -> None:
    """Job ``job`` of a feature step (task ``features``): the features (or lengths) of its part of the data dir.

    Writes ``<prefix>.<job>.{ark,scp,cmvn.ark,cmvn.scp,frames}`` and ``<prefix>.<job>.failed``
    (the utterances that could not be read, with why); those are not errors of the job.
    """
    part = Path(args["parts"][job - 1])
    config = FeatureConfig.from_dict(args["config"])
    prefix = f"{args['prefix']}.{job}"
    segments = dio.read_segments(part / "segments") if (part / "segments").exists() else None
    utts = sorted(dio.read_kv(part / "utt2spk"))
    _, failed = _extract_part((utts, dio.read_kv(part / "wav.scp"), segments, config, prefix, sys.stderr.isatty(),
                               args["compress"], args["lengths_only"]))
    with open(f"{prefix}.failed", "w") as out:
        out.writelines(f"{utt}\t{message}\n" for utt, message in failed)
    for utt, message in failed:
        logger.warning("no features for %s: %s", utt, message)
    logger.info("%s: %d of %d utterances done", part, len(utts) - len(failed), len(utts))


def _read_failures(prefix: str) -> list[tuple[str, str]]:
    with open(f"{prefix}.failed") as handle:
        return [tuple(line.rstrip("\n").split("\t", 1)) for line in handle if line.strip()]


def _extract_part(job) -> tuple[str, list[tuple[str, str]]]:
    utts, wav_scp, segments, config, prefix, show_progress, compress, lengths_only = job
    reader = AudioReader(wav_scp, segments, target_rate=config.sample_rate)
    failed = []
    torch_threads_guard()
    if lengths_only:
        return _lengths_part(reader, utts, config, prefix, show_progress)
    with MatrixArkWriter(f"{prefix}.ark", f"{prefix}.scp", kSpeechFeature if compress else None) as feats_out, \
            kaldiio.WriteHelper(f"ark,scp:{prefix}.cmvn.ark,{prefix}.cmvn.scp") as cmvn_out, \
            open(f"{prefix}.frames", "w") as frames_out:
        for utt in tqdm(utts, desc="features", unit="utt", disable=not show_progress):
            try:
                waveform = reader.read(utt)
            except AudioError as err:
                failed.append((utt, str(err)))
                continue
            feats = compute_features(waveform, config)
            if len(feats) == 0:
                failed.append((utt, f"utterance {utt!r} is too short for one frame (or all silence under VAD)"))
                continue
            cmvn_out(utt, cmvn_stats(feats_out(utt, feats)))
            frames_out.write(f"{utt} {len(feats)} {len(waveform) / config.sample_rate:.3f}\n")
    return prefix, failed


def _lengths_part(reader: AudioReader, utts: list[str], config: FeatureConfig, prefix: str,
                  show_progress: bool) -> tuple[str, list[tuple[str, str]]]:
    """``<prefix>.frames``: frames (Kaldi snip-edges framing of the decoded audio) and seconds per utterance."""
    failed = []
    with open(f"{prefix}.frames", "w") as frames_out:
        for utt in tqdm(utts, desc="lengths", unit="utt", disable=not show_progress):
            try:
                samples = len(reader.read(utt))
            except AudioError as err:
                failed.append((utt, str(err)))
                continue
            frames = config.frames_in(samples)
            if frames == 0:
                failed.append((utt, f"utterance {utt!r} is too short for one frame"))
                continue
            frames_out.write(f"{utt} {frames} {samples / config.sample_rate:.3f}\n")
    return prefix, failed


class MatrixArkWriter:
    """A Kaldi ark of matrices and its scp, optionally compressed; each call returns the matrix as stored.

    The bytes are kaldiio's (``write_array``), as ``kaldiio.WriteHelper`` writes them; it is
    not used because it cannot hand back the stored (decompressed) values without a
    second compression.
    """

    def __init__(self, ark_path: str, scp_path: str, compression_method: int | None = None):
        self.ark_path, self.compression_method = ark_path, compression_method
        self._ark = open(ark_path, "wb")
        self._scp = open(scp_path, "w")

    def __call__(self, key: str, matrix: np.ndarray) -> np.ndarray:
        encoded = io.BytesIO()
        write_array(encoded, matrix, compression_method=self.compression_method)
        self._ark.write(f"{key} ".encode())
        self._scp.write(f"{key} {self.ark_path}:{self._ark.tell()}\n")
        self._ark.write(encoded.getbuffer())
        if self.compression_method is None:
            return matrix
        encoded.seek(0)
        return read_kaldi(encoded)

    def close(self) -> None:
        self._ark.close()
        self._scp.close()

    def __enter__(self) -> MatrixArkWriter:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def torch_threads_guard() -> None:
    """Keep BLAS in worker processes single-threaded: the parallelism is across jobs."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def _merge_parts(data_dir: Path, prefixes: list[str], config: FeatureConfig, *, lengths_only: bool = False) -> None:
    feats, cmvn, frames, durations = {}, {}, {}, {}
    for prefix in prefixes:
        if not lengths_only:
            feats.update(dio.read_kv(Path(prefix + ".scp")))
            cmvn.update(dio.read_kv(Path(prefix + ".cmvn.scp")))
        for line in open(prefix + ".frames"):
            utt, num_frames, seconds = line.split()
            frames[utt], durations[utt] = num_frames, seconds
        if lengths_only:
            Path(prefix + ".frames").unlink()
    if lengths_only:
        dio.write_kv(data_dir / "utt2num_frames", frames)
        dio.write_kv(data_dir / "utt2dur", durations)
        (data_dir / "lengths.conf").write_text(_lengths_text(config))
        return
    dio.write_kv(data_dir / "feats.scp", feats)
    dio.write_kv(data_dir / "cmvn.scp", cmvn)
    dio.write_kv(data_dir / "utt2num_frames", frames)
    dio.write_kv(data_dir / "utt2dur", durations)
    (data_dir / "feats.conf").write_text(_config_text(config))


def _lengths_text(config: FeatureConfig) -> str:
    return f"sample_rate: {config.sample_rate}\nframe_length_ms: {config.frame_length_ms}\n" \
           f"frame_shift_ms: {config.frame_shift_ms}\n"


def _lengths_up_to_date(data_dir: Path, config: FeatureConfig) -> bool:
    """True when utt2num_frames covers every utterance and was counted with ``config``'s framing after the inputs changed."""
    frames, marker = data_dir / "utt2num_frames", data_dir / "lengths.conf"
    if not (frames.exists() and marker.exists()) or marker.read_text() != _lengths_text(config):
        return False
    newest_input = max((data_dir / name).stat().st_mtime for name in ("wav.scp", "utt2spk", "segments")
                       if (data_dir / name).exists())
    return frames.stat().st_mtime >= newest_input and set(dio.read_kv(frames)) >= set(dio.read_kv(data_dir / "utt2spk"))


def _remove_old_archives(feat_dir: Path, name: str, keep: list[str]) -> None:
    """Delete archives of earlier runs for this set, now that no list points to them."""
    kept = {Path(p).name for p in keep}
    for path in feat_dir.glob(f"{name}.*"):
        if not any(path.name.startswith(k + ".") for k in kept):
            path.unlink()


def _config_text(config: FeatureConfig) -> str:
    return "".join(f"{k}: {v}\n" for k, v in sorted(config.to_dict().items()))


def global_cmvn_stats(data_dir: Path) -> np.ndarray:
    """Sum of the per-utterance CMVN statistics of a data dir (for global CMVN)."""
    cmvn = kaldiio.load_scp(str(Path(data_dir) / "cmvn.scp"))
    total = None
    for key in cmvn:
        total = cmvn[key].astype(np.float64) if total is None else total + cmvn[key]
    return total
