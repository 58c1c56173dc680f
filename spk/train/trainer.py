"""The trainer: epochs over random chunks, a checkpoint per epoch, resume, logs and curves.

Files under ``exp/<tag>/``::

    config.yaml            resolved experiment config (read by every later stage)
    speakers.txt           training speakers, in label order
    models/epoch_NNN.pt    checkpoint after each epoch: model, optimiser, scheduler, RNG states
                           (under torchrun those of every rank: ``rng_per_rank``)
    models/final.pt        weights of the finished model
    train_log.jsonl        one JSON record per epoch
    plots/training_curves.png
"""

from __future__ import annotations

import json
import logging
import math
import random
import shutil
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from spk.data import read_utt2spk
from spk.experiment import ExperimentConfig
from spk.feature_store import FeatureStore, TrainingDataError, pad_batch
from spk.features import FeatureConfig
from spk.losses import LOSSES
from spk.models import build_embedder
from spk.train import distributed
from spk.train.dataset import ChunkSampler, SpeakerBalancedSampler
from spk.train.init_from import InitSource, check_init_options, load_init_source, optimizer_groups, prepare_model
from spk.train.loader import chunk_source, epoch_batches
from spk.model_dir import (CONFIG, FINAL_WEIGHTS, GLOBAL_CMVN, SPEAKERS, TrainedModelError, load_weights,
                         resolve_device)

logger = logging.getLogger(__name__)

OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD,
              "rmsprop": torch.optim.RMSprop}


def _make_scheduler(optimizer, config: ExperimentConfig, steps_per_epoch: int):
    total = config.epochs * steps_per_epoch
    warmup = int(config.warmup_epochs * steps_per_epoch)

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if config.scheduler == "cosine":
            final = float(config.scheduler_conf.get("final_factor", 0.05))
            progress = (step - warmup) / max(1, total - warmup)
            return final + (1 - final) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        if config.scheduler == "exponential":
            return float(config.scheduler_conf.get("gamma", 0.8)) ** (step // steps_per_epoch)
        if config.scheduler == "none":
            return 1.0
        raise ValueError(f"scheduler: unknown {config.scheduler!r}; choose none, exponential or cosine")

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _rng_state() -> dict[str, Any]:
    """The RNG states as tensors and plain values, so that a checkpoint loads with ``weights_only=True``."""
    kind, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "position": int(position),
                      "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)},
            "python": random.getstate()}


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    numpy_state = state["numpy"]
    np.random.set_state((numpy_state["kind"], numpy_state["keys"].numpy().astype(np.uint32),
                         numpy_state["position"], numpy_state["has_gauss"], numpy_state["cached_gaussian"]))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))


def _restore_rng(saved: dict[str, Any], context: distributed.Context, checkpoint: Path) -> None:
    """Set this process's RNG states from a checkpoint: its own rank's when the checkpoint has them.

    ``rng_per_rank`` (written by runs of several processes) holds one state per rank; ``rng`` is rank 0's
    (the only one in single-process and older checkpoints).  A rank the checkpoint has no state for takes
    rank 0's, as every rank starts from the same seed in a fresh run: the resumed run is then
    deterministic, though not the continuation of a run of this world size.
    """
    states = saved.get("rng_per_rank") or [saved["rng"]]
    _set_rng_state(states[context.rank] if context.rank < len(states) else states[0])
    if len(states) == context.world_size or not context.is_main:
        return
    first, last = sorted((len(states), context.world_size))
    ranks = f"rank {first}" if last - first == 1 else f"ranks {first}-{last - 1}"
    if len(states) < context.world_size:
        logger.warning("%s holds the RNG states of %d process(es) and this run has %d: %s continue(s) from "
                       "rank 0's state", checkpoint, len(states), context.world_size, ranks)
    else:
        logger.warning("%s holds the RNG states of %d processes and this run has %d: those of %s are not used",
                       checkpoint, len(states), context.world_size, ranks)
    if "batch" in saved:  # a position in batches per process: only exact for the same number of processes
        logger.warning("%s stopped inside epoch %d after %d batches per process%s; this run of %d processes "
                       "continues from its own batch %d, so some batches of this epoch may be repeated or "
                       "skipped", checkpoint, saved["epoch"], saved["batch"],
                       f" of {len(states)} processes" if "rng_per_rank" in saved else "", context.world_size,
                       saved["batch"])


def latest_checkpoint(models_dir: Path) -> Path | None:
    """The checkpoint to resume from: ``interrupted.pt`` if a stopped run left one, else the highest epoch."""
    interrupted = models_dir / "interrupted.pt"
    if interrupted.exists():
        return interrupted
    checkpoints = sorted(models_dir.glob("epoch_*.pt"), key=lambda p: int(p.stem.split("_")[1]))
    return checkpoints[-1] if checkpoints else None


class StopRequest:
    """Turns SIGINT and SIGTERM into a flag the training loop checks after each batch.

    The loop then saves ``models/interrupted.pt`` (including the position in the
    epoch) and exits, so the same command resumes exactly where the run stopped.
    """

    def __init__(self):
        self.signal_number: int | None = None
        self._previous = {}

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for number in (signal.SIGINT, signal.SIGTERM):
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def _handle(self, number, _frame) -> None:
        self.signal_number = number
        logger.warning("got %s: stopping after this batch and saving a checkpoint", signal.Signals(number).name)

    def __exit__(self, *exc) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)


class TrainingInterrupted(Exception):
    """Training stopped on a signal after saving ``models/interrupted.pt``."""

    def __init__(self, signal_number: int, checkpoint: Path):
        super().__init__(f"training stopped by {signal.Signals(signal_number).name}; "
                         f"run the same command again to resume from {checkpoint}")
        self.signal_number = signal_number


def make_sampler(config: ExperimentConfig, store: FeatureStore, utt2label: dict[str, int], loss_input: str):
    """Random chunks for classification losses; P x K speaker-balanced batches for embedding losses
    (balanced already, so ``speaker_balance: oversample`` changes nothing there)."""
    if loss_input == "embeddings":
        return SpeakerBalancedSampler(store, utt2label, speakers_per_batch=config.speakers_per_batch,
                                      utts_per_speaker=config.utts_per_speaker, chunk_frames=config.chunk_frames,
                                      chunks_per_second=config.chunks_per_second, seed=config.seed)
    return ChunkSampler(store, utt2label, batch_size=config.batch_size, chunk_frames=config.chunk_frames,
                        chunks_per_second=config.chunks_per_second, seed=config.seed,
                        oversample=config.speaker_balance == "oversample")


def make_augmenter(augmentation, feature_config: FeatureConfig, train_dir: Path, store, sampler,
                   config: ExperimentConfig):
    """The on-the-fly augmenter of ``augmentation`` for the sampler's utterances, checked against the features."""
    from spk.augment.online import ChunkAugmenter

    preloaded = isinstance(store, FeatureStore) and store.preloaded  # the audio is held in memory if the features are
    augmenter = ChunkAugmenter.build(augmentation, feature_config, train_dir, sampler.utts, seed=config.seed,
                                     preload=preloaded, global_stats=getattr(store, "global_stats", None))
    if preloaded and augmenter.featurizer is not None:
        augmenter.featurizer.check_lengths(sampler.utts, store.num_frames)
    kinds = ", ".join(f"{name} {weight:g}" for name, weight in augmentation.kinds()) or "none"
    logger.info("on-the-fly augmentation: probability %g, kinds (weights) %s; SpecAugment %s", augmentation.prob,
                kinds, f"probability {augmentation.spec_augment.prob:g}" if augmentation.spec_augment else "off")
    return augmenter


def train(exp_dir: Path, config: ExperimentConfig, feature_config: FeatureConfig, train_dir: Path,
          valid_dir: Path | None = None, *, valid_trials_dir: Path | None = None, device: str = "cpu",
          resume: bool = True) -> Path:
    """Train an embedder on ``train_dir`` (a data dir with feats.scp) into ``exp_dir``.

    With ``resume`` a run continues from the latest checkpoint of an identical
    config (an epoch checkpoint, or the mid-epoch one a SIGINT/SIGTERM left);
    otherwise (or when the config changed) it starts afresh.  A two-phase config
    (``finetune``) trains its first phase in ``exp_dir/pretrain`` and the second,
    from the first one's weights, in ``exp_dir``.  With ``init_from`` the first
    phase starts from that model's weights (see :mod:`spk.train.init_from`); the
    model is read and checked against the config before anything else is done.
    Under ``torchrun`` every process calls this; rank 0 writes the files.  Raises :class:`TrainingInterrupted`
    after saving a checkpoint when stopped by a signal.  Returns ``models/final.pt``.
    """
    exp_dir = Path(exp_dir)
    config.features = feature_config.to_dict()
    phases = config.phases()
    check_init_options(config)
    init_source = load_init_source(config, feature_config) if config.init_from else None
    context = distributed.setup(resolve_device(device))
    all_ranks_agree = False  # every rank leaves the same way: safe to wait for the others
    try:
        init_weights = None
        for number, phase in enumerate(phases, start=1):
            last = number == len(phases)
            # A phase's checkpoints belong to its own config and those of the phases before it,
            # so changing only the fine-tuning options keeps a finished pre-training phase.
            identity = json.dumps([p.identity() for p in phases[:number]], sort_keys=True) \
                if len(phases) > 1 else json.dumps(config.identity(), sort_keys=True)
            start = init_source if init_weights is None else InitSource.from_weights_file(init_weights)
            run = _Phase(exp_dir=exp_dir if last else exp_dir / "pretrain", config=phase,
                         saved_config=config if last else phase, identity=identity, init_source=start)
            if len(phases) > 1:
                logger.info("training phase %d of %d (%s loss) in %s", number, len(phases), phase.loss, run.exp_dir)
            init_weights = _train_phase(run, feature_config, Path(train_dir), valid_dir, valid_trials_dir,
                                        context, resume)
        all_ranks_agree = True
    except TrainingInterrupted:
        all_ranks_agree = True  # every rank saw the stop request (any_true) and raised it
        raise
    finally:
        distributed.cleanup(context, wait=all_ranks_agree)
    return init_weights


@dataclass
class _Phase:
    """One training phase: where it writes, its config, and what identifies its checkpoints."""

    exp_dir: Path
    config: ExperimentConfig
    saved_config: ExperimentConfig  # written as config.yaml (the whole two-phase config in the last phase)
    identity: str  # checkpoints of another identity are not resumed
    init_source: InitSource | None  # init_from's model, or the previous phase's final one


def _train_phase(run: _Phase, feature_config: FeatureConfig, train_dir: Path, valid_dir: Path | None,
                 valid_trials_dir: Path | None, context: distributed.Context, resume: bool) -> Path:
    exp_dir, config, models_dir = run.exp_dir, run.config, (run.exp_dir / FINAL_WEIGHTS).parent
    torch_device = context.device
    torch.manual_seed(config.seed)

    utt2spk = read_utt2spk(train_dir / "utt2spk")
    speakers = sorted(set(utt2spk.values()))
    speaker_index = {s: i for i, s in enumerate(speakers)}

    checkpoint = latest_checkpoint(models_dir) if resume else None
    if checkpoint is not None:
        try:
            saved = load_weights(checkpoint)
        except TrainedModelError as error:
            raise TrainedModelError(f"{error}. To train afresh instead, remove {models_dir} or pass "
                                    "--no-resume") from None
        if saved.get("config_text") != run.identity or saved.get("speakers") != speakers:
            logger.info("config or training speakers changed since %s; training from scratch", checkpoint)
            checkpoint = None
    distributed.barrier(context)  # every process has decided before rank 0 cleans up
    if context.is_main:
        if checkpoint is None and models_dir.exists():
            shutil.rmtree(models_dir)
            (exp_dir / "train_log.jsonl").unlink(missing_ok=True)
        models_dir.mkdir(parents=True, exist_ok=True)
        run.saved_config.save(exp_dir / CONFIG)
        (exp_dir / SPEAKERS).write_text("".join(s + "\n" for s in speakers))

    store, global_stats = chunk_source(train_dir, feature_config, preload=config.preload,
                                       on_the_fly=config.on_the_fly_features, seed=config.seed)
    feature_dim = store.chunk_at(0, 0, 1).shape[1]
    if feature_dim != feature_config.dim:
        raise ValueError(f"{train_dir}/feats.scp has {feature_dim}-dim features but the feature config "
                         f"gives {feature_config.dim}; pass the feature config the features were made with")
    if global_stats is not None and context.is_main:
        np.save(exp_dir / GLOBAL_CMVN, global_stats)

    loss_fn = LOSSES.build(config.loss, config.loss_conf).to(torch_device)
    loss_input = getattr(loss_fn, "input", "logits")
    utt2label = {u: speaker_index[s] for u, s in utt2spk.items()}
    sampler = make_sampler(config, store, utt2label, loss_input)
    if config.speaker_balance == "class_weights":
        set_class_weights(loss_fn, config, sampler, len(speakers))
    augmentation = config.augmentation()
    if augmentation is not None:
        sampler.augmenter = make_augmenter(augmentation, feature_config, train_dir, store, sampler, config)
    sampler.shard(context.rank, context.world_size)
    steps_per_epoch = sampler.num_local_batches()
    if steps_per_epoch == 0:
        raise ValueError(f"{train_dir}: too little data for one batch of {sampler.batch_size} chunks")

    num_classes = len(speakers) if loss_input == "logits" else None
    model = build_embedder(config.to_dict(), feature_config.dim, num_classes).to(torch_device)
    if config.optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer: unknown {config.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
    # a resumed run gets the initialised weights from its checkpoint, not from the source again
    plan = prepare_model(model, run.init_source, config, speakers, load=checkpoint is None)
    optimizer = OPTIMIZERS[config.optimizer](optimizer_groups(model, loss_fn, plan, config.init_lr_scale),
                                             **config.optimizer_conf)
    for group in optimizer.param_groups:  # initialised tensors at init_lr_scale times the rate
        group["lr"] *= group.get("lr_scale", 1.0)
    scheduler = _make_scheduler(optimizer, config, steps_per_epoch)
    precision = Precision(config.precision, torch_device)

    position = (1, 0)  # (epoch, batch) to start from
    if checkpoint is not None:
        model.load_state_dict(saved["model"])
        loss_fn.load_state_dict(saved["loss"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        if "grad_scaler" in saved:
            precision.scaler.load_state_dict(saved["grad_scaler"])
        _restore_rng(saved, context, checkpoint)
        position = (saved["epoch"], saved["batch"]) if "batch" in saved else (saved["epoch"] + 1, 0)
        logger.info("resuming from %s at epoch %d, batch %d", checkpoint, *position)

    validates = context.is_main  # validation runs on rank 0 only
    valid = _load_valid(valid_dir, feature_config, global_stats, speaker_index) \
        if valid_dir and loss_input == "logits" and validates else None
    trials = _load_valid_trials(valid_trials_dir, feature_config, global_stats) \
        if valid_trials_dir and validates else None
    train_step = distributed.wrap(distributed.TrainStep(model, loss_fn), context)
    num_params = sum(p.numel() for p in model.parameters())
    logger.info("training %s: %d speakers, %d utterances, %d batches/epoch, %.2fM parameters, device %s, "
                "%s, %s", exp_dir.name, len(speakers), len(sampler.utts), steps_per_epoch, num_params / 1e6,
                torch_device, config.precision,
                f"{config.num_workers} loader processes" if config.num_workers else "batches made by a thread")

    last_epoch = position[0] - 1
    last_plot = time.monotonic()
    with StopRequest() as stop:
        for epoch in range(position[0], config.epochs + 1):
            start_batch = position[1] if epoch == position[0] else 0
            state = _TrainState(model, loss_fn, optimizer, scheduler, run.identity, speakers, precision)
            record = _train_epoch(state, train_step, sampler, epoch, start_batch, config, context, stop,
                                  models_dir / "interrupted.pt")
            last_epoch = epoch
            stop_early = False
            if context.is_main:
                if valid is not None:
                    record.update(_validate(model, loss_fn, valid, torch_device))
                if trials is not None:
                    record["valid_eer"] = _validation_eer(model, trials, torch_device)
                record["lr"] = scheduler.get_last_lr()[0]
                logger.info("epoch %d: %s", epoch, ", ".join(f"{k} {v:.4g}" for k, v in record.items()
                                                             if isinstance(v, float)))
                with open(exp_dir / "train_log.jsonl", "a") as log:
                    log.write(json.dumps({"epoch": epoch, **record}) + "\n")
            rng_states = distributed.gather_to_main(context, _rng_state())  # every rank, after validation
            if context.is_main:
                state.save(models_dir / f"epoch_{epoch:03d}.pt", epoch, rng_states=rng_states)
                (models_dir / "interrupted.pt").unlink(missing_ok=True)
                stop_early = trials is not None and _track_best(exp_dir, models_dir, epoch,
                                                                config.early_stopping_patience)
                if epoch == config.epochs or stop_early or time.monotonic() - last_plot >= PLOT_EVERY_SECONDS:
                    _plot_curves(exp_dir)
                    last_plot = time.monotonic()
            if distributed.broadcast_flag(context, stop_early):
                logger.info("early stopping after epoch %d: no better validation EER for %d epochs",
                            epoch, config.early_stopping_patience)
                break
    del train_step  # DDP's reducer must go before its process group

    final = exp_dir / FINAL_WEIGHTS
    if context.is_main:
        weights = average_checkpoints(models_dir, last_epoch, config.average_last)
        torch.save({"model": weights, "epoch": last_epoch, "averaged": config.average_last},
                   final.with_suffix(".tmp"))
        final.with_suffix(".tmp").replace(final)
        logger.info("wrote %s", final)
    if context.enabled:  # replicas that stayed in step end with the same weights
        logger.info("rank %d final weight checksum %.6f", context.rank,
                    sum(float(p.detach().double().sum()) for p in model.parameters()))
    distributed.barrier(context)  # final.pt is written before any process reads it (next phase)
    return final


def set_class_weights(loss_fn, config: ExperimentConfig, sampler, num_speakers: int) -> None:
    """Weight each speaker's cross-entropy term by the inverse of its share of the epoch's chunks.

    Normalised so the average weight over an epoch's chunks is 1 (the loss keeps its scale).
    """
    if not hasattr(loss_fn, "class_weights"):
        raise ValueError(f"speaker_balance: class_weights needs a classification loss (softmax), not "
                         f"{config.loss!r}; embedding losses draw balanced P x K batches already")
    chunks = np.bincount(sampler.labels, weights=sampler.chunks_per_utt, minlength=num_speakers)
    weights = np.where(chunks > 0, chunks.sum() / (num_speakers * np.maximum(chunks, 1)), 0.0)
    loss_fn.class_weights = torch.tensor(weights, dtype=torch.float32, device=loss_fn.class_weights.device)


def _track_best(exp_dir: Path, models_dir: Path, epoch: int, patience: int) -> bool:
    """Keep ``models/best.pt`` at the epoch with the lowest validation EER so far; True to stop early.

    Decided from ``train_log.jsonl``, so a resumed run decides exactly as an uninterrupted one.
    """
    records = [json.loads(line) for line in open(exp_dir / "train_log.jsonl")]
    eers = {r["epoch"]: r["valid_eer"] for r in records if "valid_eer" in r and r["epoch"] <= epoch}
    best_epoch = min(eers, key=lambda e: (eers[e], e))
    if best_epoch == epoch:
        shutil.copyfile(models_dir / f"epoch_{epoch:03d}.pt", models_dir / "best.tmp")
        (models_dir / "best.tmp").replace(models_dir / "best.pt")
    return patience > 0 and epoch - best_epoch >= patience


def average_checkpoints(models_dir: Path, last_epoch: int, count: int) -> dict[str, torch.Tensor]:
    """Model weights averaged over the epoch checkpoints ``last_epoch - count + 1 .. last_epoch``.

    Batch-norm counters are taken from the last checkpoint; other tensors are averaged.
    """
    epochs = range(max(1, last_epoch - count + 1), last_epoch + 1)
    states = [load_weights(models_dir / f"epoch_{e:03d}.pt")["model"]
              for e in epochs]
    averaged = {}
    for key, value in states[-1].items():
        if value.is_floating_point():
            averaged[key] = sum(state[key] for state in states) / len(states)
        else:
            averaged[key] = value
    return averaged


class _TrainState:
    """What a checkpoint holds, with the method that writes one."""

    def __init__(self, model, loss_fn, optimizer, scheduler, config_text, speakers, precision: "Precision"):
        self.model, self.loss_fn, self.optimizer, self.scheduler = model, loss_fn, optimizer, scheduler
        self.config_text, self.speakers, self.precision = config_text, speakers, precision

    def save(self, path: Path, epoch: int, batch: int | None = None,
             rng_states: list[dict[str, Any]] | None = None) -> None:
        """Write a checkpoint; ``batch`` marks a mid-epoch one (resume at that batch of ``epoch``).

        ``rng_states`` are every rank's RNG states (:func:`distributed.gather_to_main`), else this
        process's are taken.  ``rng`` holds rank 0's, as single-process checkpoints always did, and
        runs of several processes add the list ``rng_per_rank``.
        """
        rng_states = rng_states or [_rng_state()]
        state = {"model": self.model.state_dict(), "loss": self.loss_fn.state_dict(),
                 "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                 "epoch": epoch, "rng": rng_states[0], "config_text": self.config_text,
                 "speakers": self.speakers}
        if len(rng_states) > 1:
            state["rng_per_rank"] = rng_states
        if batch is not None:
            state["batch"] = batch
        if self.precision.scaler.is_enabled():
            state["grad_scaler"] = self.precision.scaler.state_dict()
        tmp = path.with_suffix(".tmp")
        torch.save(state, tmp)
        tmp.replace(path)  # a checkpoint is either complete or absent


def _train_epoch(state: _TrainState, train_step, sampler, epoch, start_batch, config, context,
                 stop: StopRequest, interrupted_path: Path) -> dict[str, float]:
    """Train on this process's batches of ``epoch`` from ``start_batch``; the next batches are
    prepared meanwhile, by a thread or by ``config.num_workers`` loader processes (:mod:`spk.train.loader`)."""
    state.model.train()
    with epoch_batches(sampler, epoch, start_batch, num_workers=config.num_workers,
                       pin_memory=context.device.type == "cuda") as batches:
        return _run_batches(state, train_step, sampler, batches, epoch, start_batch, config, context, stop,
                            interrupted_path)


def _run_batches(state: _TrainState, train_step, sampler, batches, epoch, start_batch, config, context,
                 stop: StopRequest, interrupted_path: Path) -> dict[str, float]:
    model, loss_fn, optimizer, scheduler = state.model, state.loss_fn, state.optimizer, state.scheduler
    device = context.device
    classifies = getattr(loss_fn, "input", "logits") == "logits"
    total_loss = correct = seen = 0.0
    frames = 0
    start = time.time()
    progress = tqdm(batches, total=sampler.num_local_batches(), initial=start_batch,
                    desc=f"epoch {epoch}/{config.epochs}", unit="batch", leave=False, disable=not context.is_main)
    precision = state.precision
    batch_number = start_batch
    batch_iterator = iter(progress)
    while True:
        try:
            batch = next(batch_iterator)
        except StopIteration:
            break
        except TrainingDataError as error:
            # Only this process may have failed, so nothing collective here: the checkpoint (rank 0's)
            # holds rank 0's RNG state alone, and a resume gives it to every rank.
            if context.is_main:
                state.save(interrupted_path, epoch, batch_number)
            progress.close()
            raise TrainingDataError(f"{error}. A checkpoint of the {batch_number} batches before it is in "
                                    f"{interrupted_path}: the rerun resumes there") from None
        if model.head is not None and hasattr(model.head, "set_epoch"):
            model.head.set_epoch(epoch - 1 + batch_number / sampler.num_local_batches())
        feats = batch.feats.to(device, non_blocking=True)
        lengths = batch.lengths.to(device, non_blocking=True)
        labels = batch.labels.to(device, non_blocking=True)
        with precision.autocast():
            loss, logits = train_step(feats, lengths, labels)
        if logits is not None:
            correct += (logits.argmax(dim=1) == labels).sum().item()
        optimizer.zero_grad(set_to_none=True)
        precision.scaler.scale(loss).backward()
        if config.grad_clip > 0:
            precision.scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        precision.scaler.step(optimizer)
        precision.scaler.update()
        scheduler.step()
        total_loss += loss.item() * len(labels)
        seen += len(labels)
        frames += int(lengths.sum())
        progress.set_postfix(loss=f"{total_loss / seen:.3f}", **({"acc": f"{correct / seen:.3f}"} if classifies else {}))
        batch_number += 1
        # Every rank runs the same number of batches and asks here after each one, so every rank
        # leaves together after the same batch and reaches the gather below.
        if distributed.any_true(context, stop.signal_number is not None):
            rng_states = distributed.gather_to_main(context, _rng_state())
            if context.is_main:
                state.save(interrupted_path, epoch, batch_number, rng_states=rng_states)
            progress.close()
            raise TrainingInterrupted(stop.signal_number or signal.SIGTERM, interrupted_path)
    elapsed = time.time() - start
    record = {"train_loss": total_loss / max(1, seen), "frames_per_s": frames / elapsed, "epoch_s": elapsed}
    if classifies:
        record["train_acc"] = correct / max(1, seen)
    return record


class Precision:
    """The forward pass's number format: autocast to bf16 or fp16 (with a gradient scaler), or plain fp32."""

    def __init__(self, name: str, device: torch.device):
        self.name = name
        self.device_type = device.type
        self.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(name)
        if self.dtype is not None and not self._rnn_supports(device, self.dtype):
            logger.warning("precision: %s: recurrent layers cannot run in %s on %s with this torch build "
                           "(oneDNN / cuDNN); training in fp32", name, name, device)
            self.name, self.dtype = "fp32", None
        # fp16 gradients underflow without loss scaling; bf16 has fp32's range and needs none
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.name == "fp16")

    @staticmethod
    def _rnn_supports(device: torch.device, dtype: torch.dtype) -> bool:
        probe = torch.nn.LSTM(2, 2, batch_first=True).to(device)
        try:
            with torch.autocast(device.type, dtype=dtype):
                probe(torch.zeros(1, 2, 2, device=device))[0].sum().backward()
        except RuntimeError:
            return False
        return True

    def autocast(self):
        """The context to run the forward pass and the loss in."""
        return torch.autocast(self.device_type, dtype=self.dtype, enabled=self.dtype is not None)


def _load_valid(valid_dir: Path, feature_config, global_stats, speaker_index):
    utt2spk = read_utt2spk(valid_dir / "utt2spk")
    cmvn = valid_dir / "cmvn.scp"
    store = FeatureStore(str(valid_dir / "feats.scp"), feature_config,
                         cmvn_scp=str(cmvn) if cmvn.exists() else None, global_stats=global_stats)
    utts = [u for u in store.keys if utt2spk.get(u) in speaker_index]
    return store, utts, [speaker_index[utt2spk[u]] for u in utts]


def _load_valid_trials(trials_dir: Path, feature_config, global_stats):
    from spk.data import read_trials
    from spk.scoring import trial_columns

    cmvn = trials_dir / "cmvn.scp"
    store = FeatureStore(str(trials_dir / "feats.scp"), feature_config,
                         cmvn_scp=str(cmvn) if cmvn.exists() else None, global_stats=global_stats)
    return store, trial_columns(read_trials(trials_dir / "trials"))


@torch.no_grad()
def _validation_eer(model, trials, device) -> float:
    """EER (percent) of cosine scoring of the validation trials with the current model."""
    from spk.inference import embed_store
    from spk.metrics import compute_eer
    from spk.scoring import score_trials

    store, (enroll, test, labels) = trials
    model.eval()
    embeddings = embed_store(model, store, store.keys, device=str(device))
    model.train()
    scores = score_trials((enroll, test), (store.keys, embeddings), (store.keys, embeddings))
    return 100.0 * compute_eer(scores, labels)[0]


@torch.no_grad()
def _validate(model, loss_fn, valid, device) -> dict[str, float]:
    store, utts, labels = valid
    model.eval()
    total_loss = correct = 0.0
    for start in range(0, len(utts), 64):
        feats, lengths = pad_batch([store[u] for u in utts[start:start + 64]])
        target = torch.tensor(labels[start:start + 64], device=device)
        logits = model.classify(model.embed(feats.to(device), lengths.to(device)))
        total_loss += loss_fn(logits, target).item() * len(target)
        correct += (logits.argmax(dim=1) == target).sum().item()
    return {"valid_loss": total_loss / max(1, len(utts)), "valid_acc": correct / max(1, len(utts))}


# The training curves are drawn after the last epoch, and after others when this long has passed since
# they were last drawn: drawing takes about a second, which short epochs should not pay each time.
PLOT_EVERY_SECONDS = 60


def _plot_curves(exp_dir: Path) -> None:
    try:
        from spk.report import plot_training_curves
    except ImportError:  # report module not available: curves are optional
        return
    records = [json.loads(line) for line in open(exp_dir / "train_log.jsonl")]
    (exp_dir / "plots").mkdir(exist_ok=True)
    plot_training_curves(exp_dir / "plots" / "training_curves.png", records)
