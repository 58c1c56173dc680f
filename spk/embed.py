"""Embeddings for a data dir (stage 4): one per utterance (``xvector``) and one per speaker (``spk_xvector``).

The stored features of the data dir are normalised as the model was trained
(:func:`feature_store_for`) and embedded by the inference chain
(:func:`spk.inference.embed_store`): whole utterances, or for long recordings
fixed-length overlapping chunks whose length-normalised embeddings are averaged.
``nj`` jobs embed parts of the data dir (``split<nj>``) through :mod:`spk.jobs`: processes here or a
Slurm job array.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import kaldiio
import numpy as np

from spk.data import DataDir
from spk.data.subset import source_fingerprint, split_data_dir
from spk.feature_store import FeatureStore
from spk.inference import Chunking, embed_store
from spk.model_dir import TrainedModel, final_weights_path, load_trained, read_feature_config
from spk.jobs import ParallelStep, parse_job_command, run_step
from spk.threads import available_cores as cores_of_this_process
from spk.threads import configure_torch_threads

logger = logging.getLogger(__name__)

# A parallel job costs a spawned process that imports torch and loads the model (2-3 s on a
# CPU): it pays off only with a lot of speech. On the mini recipe's training set (2 hours,
# 2-layer LSTM of 128 units, 2 cores) one process took 6.6 s and two 8.3 s.
SPEECH_SECONDS_PER_JOB = 2 * 3600


def feature_store_for(trained: TrainedModel, data_dir: Path, *, preload: bool = False) -> FeatureStore:
    """The stored features of ``data_dir``, normalised as ``trained`` was trained."""
    data = DataDir(data_dir)
    cmvn = data.file("cmvn.scp")
    return FeatureStore(str(data.file("feats.scp")), trained.feature_config,
                        cmvn_scp=str(cmvn) if cmvn.exists() else None,
                        global_stats=trained.global_cmvn, preload=preload)


def available_cores() -> int:
    """CPU cores this process may run on: its CPU affinity capped by the cgroup CPU quota (spk.threads)."""
    return cores_of_this_process().cores


def extract_embeddings(exp_dir: Path, data_dir: Path, out_dir: Path, *, device: str = "cpu",
                       chunk_seconds: float | None = None, chunk_overlap: float = 0.0,
                       nj: int = 1, cmd: str | None = None, log_dir: Path | None = None) -> dict[str, int]:
    """Write ``xvector.{ark,scp}`` (per utterance) and ``spk_xvector.{ark,scp}`` (per speaker) to ``out_dir``.

    Utterances are embedded whole, or with ``chunk_seconds`` as chunks of that
    length overlapping by ``chunk_overlap`` seconds (frames at the experiment's
    frame shift), averaged per utterance as :func:`embed_store` describes.
    ``nj`` jobs over ``split<nj>`` of the data dir, run through job command ``cmd``
    (:mod:`spk.jobs`; logs in ``log_dir``, default ``<out_dir>/log``), give the same
    embeddings as one. A speaker's embedding is the mean of its utterances'
    length-normalised embeddings, the enrollment model when a speaker is enrolled
    from several utterances.
    """
    exp_dir, data_dir, out_dir = Path(exp_dir), Path(data_dir), Path(out_dir)
    if nj < 1:
        raise ValueError(f"--nj must be at least 1, not {nj}")
    weights = final_weights_path(exp_dir)  # stage 4 before stage 3: say so, whatever else is missing
    frame_shift_ms = read_feature_config(exp_dir).frame_shift_ms  # the jobs load the model itself
    if chunk_seconds is not None:
        Chunking.from_seconds(chunk_seconds, chunk_overlap, frame_shift_ms)  # bad chunk options fail here
    started = time.monotonic()
    data = DataDir(data_dir)
    num_utterances = len(data.feats_scp())
    nj = jobs_worth_starting(data, nj, num_utterances, frame_shift_ms)
    mode = "whole utterances" if chunk_seconds is None else \
        f"{chunk_seconds:g} s chunks overlapping by {chunk_overlap:g} s"
    logger.info("%s: embedding %d utterances (%s) with %s", data_dir, num_utterances, mode, exp_dir)
    parts = [data_dir] if nj == 1 else split_data_dir(data_dir, nj)
    work_dir = out_dir / "jobs"
    weights_stat = weights.stat()
    step = ParallelStep(
        name=f"embed_{data_dir.name}", task="embed", num_jobs=nj, work_dir=work_dir,
        log_dir=Path(log_dir) if log_dir else out_dir / "log",
        args={"exp_dir": str(exp_dir.absolute()), "parts": [str(part.absolute()) for part in parts],
              "device": device, "chunk_seconds": chunk_seconds, "chunk_overlap": chunk_overlap,
              "out": str(work_dir.absolute() / "xvector"),
              # a retrained model makes every job run again
              "weights": [str(weights.absolute()), weights_stat.st_size, weights_stat.st_mtime_ns],
              "sources": source_fingerprint(data_dir)},
        output=str(work_dir.absolute() / "xvector.{job}.scp"))
    run_step(step, parse_job_command(cmd), threads_per_job=max(1, available_cores() // nj))
    embeddings: dict[str, np.ndarray] = {}
    for job in range(1, nj + 1):
        embeddings.update(kaldiio.load_scp(f"{step.args['out']}.{job}.scp"))
    out_dir.mkdir(parents=True, exist_ok=True)
    write_embeddings(out_dir / "xvector", embeddings)
    speakers = speaker_means(embeddings, data.utt2spk())
    write_embeddings(out_dir / "spk_xvector", speakers)
    logger.info("%s: %d utterance and %d speaker embeddings in %s (%.1f s)", data_dir, len(embeddings),
                len(speakers), out_dir, time.monotonic() - started)
    return {"utterances": len(embeddings), "speakers": len(speakers)}


def embed_job(args: dict, job: int, num_jobs: int) -> None:
    """Job ``job`` of an embedding step (task ``embed``): ``<out>.<job>.{ark,scp}`` for its part of the data dir."""
    configure_torch_threads(0, purpose=f"embedding job {job}")
    trained = load_trained(Path(args["exp_dir"]), args["device"])
    chunking = None
    if args["chunk_seconds"] is not None:
        chunking = Chunking.from_seconds(args["chunk_seconds"], args["chunk_overlap"],
                                         trained.feature_config.frame_shift_ms)
    store = feature_store_for(trained, Path(args["parts"][job - 1]))
    vectors = embed_store(trained.embedder, store, store.keys, device=args["device"], chunking=chunking,
                          show_progress=sys.stderr.isatty())
    write_embeddings(Path(f"{args['out']}.{job}"), dict(zip(store.keys, vectors)))


def jobs_worth_starting(data_dir: DataDir, nj: int, num_utterances: int, frame_shift_ms: float) -> int:
    """``nj``, or fewer where the data dir's speech (``utt2num_frames``) is too little to keep ``nj`` jobs busy.

    At most one job per utterance and per :data:`SPEECH_SECONDS_PER_JOB` of speech; the
    log says when fewer jobs than asked are started and why.
    """
    jobs = min(nj, num_utterances)
    if jobs > 1 and data_dir.has("utt2num_frames"):
        seconds = sum(data_dir.utt2num_frames().values()) * frame_shift_ms / 1000
        worth = max(1, int(seconds // SPEECH_SECONDS_PER_JOB))
        if worth < jobs:
            logger.info("%s: %d job(s), not %d: %.2f h of speech is embedded faster without more processes",
                        data_dir.path, worth, jobs, seconds / 3600)
            jobs = worth
    return jobs


def speaker_means(embeddings: dict[str, np.ndarray], utt2spk: dict[str, str]) -> dict[str, np.ndarray]:
    """Mean of the length-normalised embeddings of each speaker's utterances."""
    groups: dict[str, list[np.ndarray]] = {}
    for utt, vector in embeddings.items():
        if utt in utt2spk:
            groups.setdefault(utt2spk[utt], []).append(vector / (np.linalg.norm(vector) + 1e-12))
    return {spk: np.mean(vectors, axis=0).astype(np.float32) for spk, vectors in groups.items()}


def write_embeddings(prefix: Path, embeddings: dict[str, np.ndarray]) -> None:
    """Write ``<prefix>.ark`` and ``<prefix>.scp`` (keys sorted), replacing both only when complete."""
    prefix = Path(prefix)
    tmp = prefix.with_name(prefix.name + ".tmp")
    with kaldiio.WriteHelper(f"ark,scp:{tmp}.ark,{tmp}.scp") as writer:
        for key in sorted(embeddings):
            writer(key, np.asarray(embeddings[key], dtype=np.float32))
    Path(f"{tmp}.ark").replace(f"{prefix}.ark")
    scp_text = Path(f"{tmp}.scp").read_text().replace(f"{tmp}.ark", f"{prefix}.ark")
    Path(f"{prefix}.scp").write_text(scp_text)
    Path(f"{tmp}.scp").unlink()
