"""Training data loading: where chunks come from, whether they are preloaded, and who cuts the batches.

- **Source**: :func:`chunk_source` gives the :class:`~spk.feature_store.FeatureStore`
  of the training dir's ``feats.scp``, or with ``on_the_fly_features`` an
  :class:`~spk.train.audio_source.AudioFeatureSource` that computes each chunk's
  features from its audio. Lengths come from ``utt2num_frames``, so planning an
  epoch reads no features.
- **Preload**: ``preload: auto`` holds the dumped features in memory when their
  size (frames from ``utt2num_frames`` x dimension x 4 bytes) is under
  :data:`PRELOAD_MEMORY_SHARE` of the memory available to the process, and reads
  them from the arks otherwise; the log says which and why.
- **Batches**: :func:`epoch_batches` yields one epoch's batches in order. With
  ``num_workers: 0`` a thread of the trainer cuts them (:class:`~spk.train.prefetch.Prefetcher`);
  with N > 0, N loader processes (a torch ``DataLoader`` over :class:`EpochBatches`)
  each cut whole batches. A batch is a pure function of the epoch plan and its
  index (:meth:`~spk.train.dataset.ChunkSampler.batch_at`), so the batches, a
  resumed run and the trained weights are the same for any number of workers.
  Workers ignore SIGINT/SIGTERM (the trainer saves a checkpoint and stops them)
  and use one torch thread each.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from spk.data import DataDir
from spk.feature_store import ChunkSource, FeatureStore, TrainingDataError
from spk.features import FeatureConfig
from spk.train.dataset import Batch, ChunkSampler, EpochPlan
from spk.train.prefetch import Prefetcher

logger = logging.getLogger(__name__)

PRELOAD_MEMORY_SHARE = 0.5  # preload: auto holds the features in memory when they take at most this share
PREFETCH_BATCHES = 2  # batches made ahead of the training step, per worker (or by the thread)


def available_memory_bytes() -> int:
    """Memory this process can still use: MemAvailable, capped by a cgroup memory limit when one is set."""
    available = None
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    if available is None:
        available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            limit = Path(limit_file).read_text().strip()
            usage = int(Path(usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit.isdigit() and int(limit) < 2**60:
            available = min(available, max(0, int(limit) - usage))
        break
    return available


def decide_preload(preload: bool | str, num_frames: dict[str, int], dim: int, *,
                   available: int | None = None) -> bool:
    """``preload`` as asked, or for ``auto`` whether the features fit in :data:`PRELOAD_MEMORY_SHARE` of memory."""
    size = sum(num_frames.values()) * dim * 4
    if preload != "auto":
        logger.info("training features: %s (preload: %s in the config; %.2f GiB)",
                    "preloaded" if preload else "read from the arks for each batch", str(preload).lower(),
                    size / 2**30)
        return bool(preload)
    available = available_memory_bytes() if available is None else available
    fits = size <= PRELOAD_MEMORY_SHARE * available
    logger.info("training features: %s (preload: auto; %.2f GiB of features, %.2f GiB of memory available, "
                "preloaded up to %d%% of it)", "preloaded" if fits else "read from the arks for each batch",
                size / 2**30, available / 2**30, round(PRELOAD_MEMORY_SHARE * 100))
    return fits


def chunk_source(train_dir: Path, feature_config: FeatureConfig, *, preload: bool | str, on_the_fly: bool,
                 seed: int = 0) -> tuple[ChunkSource, np.ndarray | None]:
    """The training chunks' source and the global CMVN statistics (None unless ``cmvn: global``)."""
    data = DataDir(train_dir)
    cmvn_scp = data.file("cmvn.scp")
    if on_the_fly:
        from spk.train.audio_source import AudioFeatureSource  # audio and augmentation modules: only here

        global_stats = None
        if feature_config.cmvn == "global" and data.has("feats.scp") and data.has("cmvn.scp"):
            global_stats = FeatureStore(str(data.file("feats.scp")), feature_config, cmvn_scp=str(cmvn_scp),
                                        preload=False).global_stats
        source = AudioFeatureSource(train_dir, feature_config, seed=seed, global_stats=global_stats)
        logger.info("training features: computed from the audio of each chunk (on_the_fly_features: true)")
        return source, global_stats
    num_frames = data.utt2num_frames() if data.has("utt2num_frames") else None
    if num_frames is not None:
        keep = decide_preload(preload, num_frames, feature_config.dim)
    else:
        keep = preload is not False
        logger.info("training features: %s (%s has no utt2num_frames to size them by)",
                    "preloaded" if keep else "read from the arks for each batch", train_dir)
    store = FeatureStore(str(data.file("feats.scp")), feature_config,
                         cmvn_scp=str(cmvn_scp) if cmvn_scp.exists() else None, preload=keep, num_frames=num_frames)
    return store, store.global_stats


class EpochBatches(Dataset):
    """This process's batches of one epoch from ``start_batch`` on, as a map-style dataset for a DataLoader."""

    def __init__(self, sampler: ChunkSampler, epoch: int, start_batch: int):
        self.sampler = sampler
        self.plan: EpochPlan = sampler.plan(epoch)
        self.start_batch = start_batch

    def __len__(self) -> int:
        return self.sampler.num_local_batches() - self.start_batch

    def __getitem__(self, index: int) -> Batch | TrainingDataError:
        try:
            return self.sampler.batch_at(self.plan, self.start_batch + index)
        except TrainingDataError as error:  # handed over as an item: the trainer raises it with its own message
            return error


def _raise_failures(item: Batch | TrainingDataError) -> Batch:
    if isinstance(item, TrainingDataError):
        raise item
    return item


def _init_worker(_worker_id: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the trainer handles stop requests
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    torch.set_num_threads(1)


@contextlib.contextmanager
def epoch_batches(sampler: ChunkSampler, epoch: int, start_batch: int, *, num_workers: int = 0,
                  pin_memory: bool = False) -> Iterator[Iterator[Batch]]:
    """This process's batches of ``epoch`` from ``start_batch``, made ahead by a thread or by worker processes."""
    if num_workers == 0:
        batches = sampler.batches(epoch, start_batch)
        if pin_memory:
            batches = (batch.pin_memory() for batch in batches)
        with Prefetcher(batches, depth=PREFETCH_BATCHES, name="batches") as prefetched:
            yield prefetched
        return
    loader = DataLoader(EpochBatches(sampler, epoch, start_batch), batch_size=None, shuffle=False,
                        num_workers=num_workers, pin_memory=pin_memory, worker_init_fn=_init_worker,
                        prefetch_factor=PREFETCH_BATCHES, multiprocessing_context="fork")
    # The workers are forked when the iterator starts. Frozen objects are left alone by the children's
    # garbage collector, which would otherwise write to (and so copy) every page holding the corpus index.
    gc.freeze()
    try:
        iterator = iter(loader)
    finally:
        gc.unfreeze()
    try:
        yield (_raise_failures(item) for item in iterator)
    finally:
        iterator._shutdown_workers()  # stop the workers now, also when the epoch stops early
