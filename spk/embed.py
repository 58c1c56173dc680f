"""Embeddings for a data dir: one per utterance (``xvector``) and one per speaker (``spk_xvector``).

An utterance is embedded whole (the default) or, for long recordings, as
fixed-length overlapping chunks cut from its feature matrix (:class:`Chunking`);
its embedding is then the mean of its chunks' length-normalised embeddings.

Utterances (or chunks) are sorted by length and batched up to a frame budget,
so padding stays small; the encoders pack sequences, so padding never changes
a result. ``nj`` jobs embed parts of the utterances in parallel processes.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import kaldiio
import numpy as np
import torch
from tqdm import tqdm

from spk.data import DataDir
from spk.features import FeatureConfig
from spk.feature_store import FeatureStore, pad_batch
from spk.train.trainer import load_trained_model, trained_model_path

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Chunking:
    """Fixed-length chunks: ``frames`` frames long, starts ``step`` frames apart (overlap ``frames - step``)."""

    frames: int
    step: int

    def __post_init__(self) -> None:
        if self.frames < 1:
            raise ValueError(f"a chunk must be at least 1 frame long, not {self.frames}")
        if not 1 <= self.step <= self.frames:
            raise ValueError(f"the chunk step must be between 1 and the chunk length {self.frames} frames, "
                             f"not {self.step}")

    @classmethod
    def from_seconds(cls, chunk_seconds: float, overlap_seconds: float, frame_shift_ms: float) -> Chunking:
        """Chunks of ``chunk_seconds`` overlapping by ``overlap_seconds``, in frames of ``frame_shift_ms``."""
        if chunk_seconds <= 0:
            raise ValueError(f"--chunk-seconds must be positive, not {chunk_seconds:g}")
        if overlap_seconds < 0:
            raise ValueError(f"--chunk-overlap must be 0 or more seconds, not {overlap_seconds:g}")
        if overlap_seconds >= chunk_seconds:
            raise ValueError(f"--chunk-overlap ({overlap_seconds:g} s) must be smaller than "
                             f"--chunk-seconds ({chunk_seconds:g} s)")
        frames = round(chunk_seconds * 1000 / frame_shift_ms)
        step = frames - round(overlap_seconds * 1000 / frame_shift_ms)
        if frames < 1 or step < 1:
            raise ValueError(
                f"--chunk-seconds {chunk_seconds:g} with --chunk-overlap {overlap_seconds:g} gives chunks of "
                f"{frames} frames starting {step} frames apart at a {frame_shift_ms:g} ms frame shift; "
                "make the chunk longer or the overlap shorter")
        return cls(frames, step)

    def bounds(self, num_frames: int) -> list[tuple[int, int]]:
        """``(start, end)`` frames of the chunks of an utterance of ``num_frames`` frames.

        Chunks start every ``step`` frames; the last one ends at the last frame
        (so it may overlap its neighbour more than the others do) and no frame
        is left out. An utterance no longer than one chunk is one chunk, whole.
        """
        if num_frames <= self.frames:
            return [(0, num_frames)]
        starts = list(range(0, num_frames - self.frames, self.step)) + [num_frames - self.frames]
        return [(start, start + self.frames) for start in starts]


def feature_store_for(exp_dir: Path, data_dir: Path, *, preload: bool = False) -> FeatureStore:
    """The features of ``data_dir``, normalised as the experiment ``exp_dir`` was trained."""
    model_config_features = _experiment_features(exp_dir)
    global_stats_path = Path(exp_dir) / "global_cmvn.npy"
    global_stats = np.load(global_stats_path) if global_stats_path.exists() else None
    data = DataDir(data_dir)
    cmvn = data.file("cmvn.scp")
    return FeatureStore(str(data.file("feats.scp")), model_config_features,
                        cmvn_scp=str(cmvn) if cmvn.exists() else None,
                        global_stats=global_stats, preload=preload)


def _experiment_features(exp_dir: Path) -> FeatureConfig:
    from spk.experiment import ExperimentConfig

    return FeatureConfig.from_dict(ExperimentConfig.from_yaml(Path(exp_dir) / "config.yaml").features)


def length_batches(lengths: np.ndarray, max_frames_per_batch: int) -> Iterator[list[int]]:
    """Indices of ``lengths`` in batches, longest first, each padded to at most ``max_frames_per_batch``.

    A single item longer than the budget is a batch of its own.
    """
    order = np.argsort(-np.asarray(lengths), kind="stable")
    batch: list[int] = []
    for index in order:
        # sorted longest first, so the first item of a batch sets its padded length
        if batch and (len(batch) + 1) * lengths[batch[0]] > max_frames_per_batch:
            yield batch
            batch = []
        batch.append(int(index))
    if batch:
        yield batch


@torch.no_grad()
def embed_pieces(model, store: FeatureStore, keys: list[str], pieces: list[tuple[int, int, int]], *,
                 device: str = "cpu", max_frames_per_batch: int = 60000, show_progress: bool = True,
                 unit: str = "utt") -> np.ndarray:
    """Embeddings of feature-matrix pieces ``(key index, start frame, end frame)``, one row per piece."""
    lengths = np.array([end - start for _, start, end in pieces], dtype=np.int64)
    out = np.zeros((len(pieces), model.embedding_dim), dtype=np.float32)
    with tqdm(total=len(pieces), desc="embeddings", unit=unit, leave=False, disable=not show_progress) as progress:
        for batch in length_batches(lengths, max_frames_per_batch):
            feats, batch_lengths = pad_batch(_piece_features(store, keys, [pieces[i] for i in batch]))
            out[batch] = model.embed(feats.to(device), batch_lengths.to(device)).cpu().numpy()
            progress.update(len(batch))
    return out


def _piece_features(store: FeatureStore, keys: list[str], pieces: list[tuple[int, int, int]]) -> list[np.ndarray]:
    """The feature rows of each piece; pieces of one utterance share one read of its matrix."""
    matrices: dict[int, np.ndarray] = {}
    rows = []
    for key_index, start, end in pieces:
        if key_index not in matrices:
            matrices[key_index] = store[keys[key_index]]
        rows.append(matrices[key_index][start:end])
    return rows


def average_chunks(chunk_embeddings: np.ndarray, owners: np.ndarray, num_utterances: int) -> np.ndarray:
    """Per utterance, the mean of its chunks' length-normalised embeddings (``owners[i]``: chunk i's row)."""
    unit = chunk_embeddings / (np.linalg.norm(chunk_embeddings, axis=1, keepdims=True) + 1e-12)
    sums = np.zeros((num_utterances, chunk_embeddings.shape[1]), dtype=np.float64)
    np.add.at(sums, owners, unit)
    counts = np.bincount(owners, minlength=num_utterances)
    if np.any(counts == 0):
        raise ValueError(f"{int(np.sum(counts == 0))} utterance(s) have no chunk")
    return (sums / counts[:, None]).astype(np.float32)


def embed_store(model, store: FeatureStore, keys: list[str], *, device: str = "cpu",
                max_frames_per_batch: int = 60000, chunking: Chunking | None = None,
                show_progress: bool = True) -> np.ndarray:
    """Embeddings of ``keys`` (rows in the order of ``keys``), batched by length.

    Whole utterances by default. With ``chunking`` each utterance is cut into
    the chunks of :meth:`Chunking.bounds`; the chunks of all utterances are
    batched together, and an utterance's embedding is the mean of its chunks'
    length-normalised embeddings (so an utterance of one chunk gets its own
    embedding scaled to unit length).
    """
    lengths = [store.num_frames(key) for key in keys]
    if chunking is None:
        pieces = [(i, 0, length) for i, length in enumerate(lengths)]
        return embed_pieces(model, store, keys, pieces, device=device, max_frames_per_batch=max_frames_per_batch,
                            show_progress=show_progress)
    pieces = [(i, start, end) for i, length in enumerate(lengths) for start, end in chunking.bounds(length)]
    chunks = embed_pieces(model, store, keys, pieces, device=device, max_frames_per_batch=max_frames_per_batch,
                          show_progress=show_progress, unit="chunk")
    return average_chunks(chunks, np.array([owner for owner, _, _ in pieces], dtype=np.int64), len(keys))


@dataclass(frozen=True)
class _EmbedJob:
    """One worker's share of an extraction: everything it needs, picklable."""

    exp_dir: Path
    data_dir: Path
    keys: list[str]
    device: str
    chunking: Chunking | None
    threads: int
    show_progress: bool


def _run_job(job: _EmbedJob) -> np.ndarray:
    """Embeddings of one job's utterances (rows in the order of ``job.keys``), in a worker process."""
    torch.set_num_threads(job.threads)
    model, _, _ = load_trained_model(job.exp_dir, job.device)
    store = feature_store_for(job.exp_dir, job.data_dir)
    return embed_store(model, store, job.keys, device=job.device, chunking=job.chunking,
                       show_progress=job.show_progress)


def available_cores() -> int:
    """CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def embed_in_jobs(exp_dir: Path, data_dir: Path, keys: list[str], *, nj: int, device: str = "cpu",
                  chunking: Chunking | None = None) -> np.ndarray:
    """Embeddings of ``keys`` (rows in their order) by ``nj`` worker processes, each over every nj-th key.

    Each worker uses ``max(1, cores // nj)`` torch threads; the first shows progress. Workers are spawned,
    not forked: a forked child of a process that has run multi-threaded torch
    (OpenMP) code hangs in its first multi-threaded operation.
    """
    threads = max(1, available_cores() // nj)
    jobs = [_EmbedJob(Path(exp_dir), Path(data_dir), keys[j::nj], device, chunking, threads, j == 0)
            for j in range(nj)]
    logger.info("%s: %d jobs with %d torch thread(s) each", data_dir, nj, threads)
    # an executor, not a Pool: a worker that dies (e.g. out of memory) fails the run instead of hanging it
    with ProcessPoolExecutor(nj, mp_context=multiprocessing.get_context("spawn")) as executor:
        parts = list(executor.map(_run_job, jobs))
    out = np.zeros((len(keys), parts[0].shape[1]), dtype=np.float32)
    for j, part in enumerate(parts):
        out[j::nj] = part
    return out


def extract_embeddings(exp_dir: Path, data_dir: Path, out_dir: Path, *, device: str = "cpu",
                       chunk_seconds: float | None = None, chunk_overlap: float = 0.0,
                       nj: int = 1) -> dict[str, int]:
    """Write ``xvector.{ark,scp}`` (per utterance) and ``spk_xvector.{ark,scp}`` (per speaker) to ``out_dir``.

    Utterances are embedded whole, or with ``chunk_seconds`` as chunks of that
    length overlapping by ``chunk_overlap`` seconds (frames at the experiment's
    frame shift), averaged per utterance as :func:`embed_store` describes.
    ``nj`` parallel processes give the same embeddings as one. A speaker's
    embedding is the mean of its utterances' length-normalised embeddings, the
    enrollment model when a speaker is enrolled from several utterances.
    """
    exp_dir, data_dir, out_dir = Path(exp_dir), Path(data_dir), Path(out_dir)
    if nj < 1:
        raise ValueError(f"--nj must be at least 1, not {nj}")
    trained_model_path(exp_dir)  # fail early, before reading the experiment's config
    chunking = None
    if chunk_seconds is not None:
        chunking = Chunking.from_seconds(chunk_seconds, chunk_overlap, _experiment_features(exp_dir).frame_shift_ms)
    started = time.monotonic()
    store = feature_store_for(exp_dir, data_dir)
    keys = store.keys
    nj = min(nj, len(keys))
    mode = f"{chunk_seconds:g} s chunks overlapping by {chunk_overlap:g} s" if chunking else "whole utterances"
    logger.info("%s: embedding %d utterances (%s) with %s", data_dir, len(keys), mode, exp_dir)
    if nj > 1:
        embeddings = embed_in_jobs(exp_dir, data_dir, keys, nj=nj, device=device, chunking=chunking)
    else:
        model, _, _ = load_trained_model(exp_dir, device)
        embeddings = embed_store(model, store, keys, device=device, chunking=chunking)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_embeddings(out_dir / "xvector", dict(zip(keys, embeddings)))
    utt2spk = DataDir(data_dir).utt2spk()
    speakers = speaker_means(dict(zip(keys, embeddings)), utt2spk)
    write_embeddings(out_dir / "spk_xvector", speakers)
    logger.info("%s: %d utterance and %d speaker embeddings in %s (%.1f s)", data_dir, len(keys), len(speakers),
                out_dir, time.monotonic() - started)
    return {"utterances": len(keys), "speakers": len(speakers)}


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
