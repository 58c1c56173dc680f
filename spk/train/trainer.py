"""The trainer: epochs over random chunks, a checkpoint per epoch, resume, logs and curves.

Files under ``exp/<tag>/``::

    config.yaml            resolved experiment config (read by every later stage)
    speakers.txt           training speakers, in label order
    models/epoch_NNN.pt    checkpoint after each epoch: model, optimiser, scheduler, RNG states
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
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from spk.data import read_utt2spk
from spk.features import FeatureConfig
from spk.losses import LOSSES
from spk.models import build_embedder
from spk.models.embedder import SpeakerEmbedder
from spk.train.config import ExperimentConfig
from spk.train.dataset import ChunkSampler, FeatureStore, pad_batch

logger = logging.getLogger(__name__)

OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD,
              "rmsprop": torch.optim.RMSprop}


def resolve_device(name: str) -> torch.device:
    """``cpu``, ``cuda`` (error if absent) or ``auto`` (cuda when present)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for but torch sees no CUDA device; use --device cpu")
    return torch.device(name)


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
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def latest_checkpoint(models_dir: Path) -> Path | None:
    """The checkpoint of the highest epoch in ``models_dir``, if any."""
    checkpoints = sorted(models_dir.glob("epoch_*.pt"), key=lambda p: int(p.stem.split("_")[1]))
    return checkpoints[-1] if checkpoints else None


def train(exp_dir: Path, config: ExperimentConfig, feature_config: FeatureConfig, train_dir: Path,
          valid_dir: Path | None = None, *, device: str = "cpu", resume: bool = True) -> Path:
    """Train an embedder on ``train_dir`` (a data dir with feats.scp) into ``exp_dir``.

    With ``resume`` a run continues from the latest epoch checkpoint of an
    identical config; otherwise (or when the config changed) it starts afresh.
    Returns the path of ``models/final.pt``.
    """
    exp_dir = Path(exp_dir)
    models_dir = exp_dir / "models"
    config.features = feature_config.to_dict()
    torch_device = resolve_device(device)
    torch.manual_seed(config.seed)

    utt2spk = read_utt2spk(train_dir / "utt2spk")
    speakers = sorted(set(utt2spk.values()))
    speaker_index = {s: i for i, s in enumerate(speakers)}
    config_text = json.dumps(config.to_dict(), sort_keys=True)

    previous = exp_dir / "config.yaml"
    checkpoint = latest_checkpoint(models_dir) if resume else None
    if checkpoint is not None:
        saved = torch.load(checkpoint, map_location="cpu", weights_only=False)
        if saved.get("config_text") != config_text or saved.get("speakers") != speakers:
            logger.info("config or training speakers changed since %s; training from scratch", checkpoint)
            checkpoint = None
    if checkpoint is None and models_dir.exists():
        shutil.rmtree(models_dir)
        (exp_dir / "train_log.jsonl").unlink(missing_ok=True)
    models_dir.mkdir(parents=True, exist_ok=True)
    config.save(previous)
    (exp_dir / "speakers.txt").write_text("".join(s + "\n" for s in speakers))

    store = FeatureStore(str(train_dir / "feats.scp"), feature_config,
                         cmvn_scp=str(train_dir / "cmvn.scp") if (train_dir / "cmvn.scp").exists() else None,
                         preload=config.preload)
    if store.global_stats is not None:
        np.save(exp_dir / "global_cmvn.npy", store.global_stats)
    sampler = ChunkSampler(store, {u: speaker_index[s] for u, s in utt2spk.items()},
                           batch_size=config.batch_size, chunk_frames=config.chunk_frames,
                           chunks_per_second=config.chunks_per_second, seed=config.seed)
    steps_per_epoch = sampler.num_batches()
    if steps_per_epoch == 0:
        raise ValueError(f"{train_dir}: too little data for one batch of {config.batch_size} chunks")

    model = build_embedder(config.to_dict(), feature_config.dim, len(speakers)).to(torch_device)
    loss_fn = LOSSES.build(config.loss, config.loss_conf).to(torch_device)
    if config.optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer: unknown {config.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
    optimizer = OPTIMIZERS[config.optimizer](
        list(model.parameters()) + list(loss_fn.parameters()), **config.optimizer_conf)
    scheduler = _make_scheduler(optimizer, config, steps_per_epoch)

    first_epoch = 1
    if checkpoint is not None:
        model.load_state_dict(saved["model"])
        loss_fn.load_state_dict(saved["loss"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        _set_rng_state(saved["rng"])
        first_epoch = saved["epoch"] + 1
        logger.info("resuming from %s (epoch %d done)", checkpoint, saved["epoch"])

    valid = _load_valid(valid_dir, feature_config, store.global_stats, speaker_index) if valid_dir else None
    num_params = sum(p.numel() for p in model.parameters())
    logger.info("training %s: %d speakers, %d utterances, %d batches/epoch, %.2fM parameters, device %s",
                exp_dir.name, len(speakers), len(sampler.utts), steps_per_epoch, num_params / 1e6, torch_device)

    for epoch in range(first_epoch, config.epochs + 1):
        record = _train_epoch(model, loss_fn, optimizer, scheduler, sampler, epoch, config, torch_device)
        if valid is not None:
            record.update(_validate(model, loss_fn, valid, torch_device))
        record["lr"] = scheduler.get_last_lr()[0]
        logger.info("epoch %d: %s", epoch, ", ".join(f"{k} {v:.4g}" for k, v in record.items()
                                                     if isinstance(v, float)))
        with open(exp_dir / "train_log.jsonl", "a") as log:
            log.write(json.dumps({"epoch": epoch, **record}) + "\n")
        _save_checkpoint(models_dir / f"epoch_{epoch:03d}.pt", model, loss_fn, optimizer, scheduler,
                         epoch, config_text, speakers)
        _plot_curves(exp_dir)

    final = models_dir / "final.pt"
    torch.save({"model": model.state_dict(), "epoch": config.epochs}, final.with_suffix(".tmp"))
    final.with_suffix(".tmp").replace(final)
    logger.info("wrote %s", final)
    return final


def _train_epoch(model, loss_fn, optimizer, scheduler, sampler, epoch, config, device) -> dict[str, float]:
    model.train()
    total_loss = correct = seen = 0.0
    frames = 0
    start = time.time()
    progress = tqdm(sampler.batches(epoch), total=sampler.num_batches(), desc=f"epoch {epoch}/{config.epochs}",
                    unit="batch", leave=False)
    for batch in progress:
        feats, lengths, labels = batch.feats.to(device), batch.lengths.to(device), batch.labels.to(device)
        logits = model.classify(model.embed(feats, lengths))
        loss = loss_fn(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        scheduler.step()
        total_loss += loss.item() * len(labels)
        correct += (logits.argmax(dim=1) == labels).sum().item()
        seen += len(labels)
        frames += int(lengths.sum())
        progress.set_postfix(loss=f"{total_loss / seen:.3f}", acc=f"{correct / seen:.3f}")
    elapsed = time.time() - start
    return {"train_loss": total_loss / seen, "train_acc": correct / seen, "frames_per_s": frames / elapsed,
            "epoch_s": elapsed}


def _load_valid(valid_dir: Path, feature_config, global_stats, speaker_index):
    utt2spk = read_utt2spk(valid_dir / "utt2spk")
    cmvn = valid_dir / "cmvn.scp"
    store = FeatureStore(str(valid_dir / "feats.scp"), feature_config,
                         cmvn_scp=str(cmvn) if cmvn.exists() else None, global_stats=global_stats)
    utts = [u for u in store.keys if utt2spk.get(u) in speaker_index]
    return store, utts, [speaker_index[utt2spk[u]] for u in utts]


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


def _save_checkpoint(path: Path, model, loss_fn, optimizer, scheduler, epoch, config_text, speakers) -> None:
    state = {"model": model.state_dict(), "loss": loss_fn.state_dict(), "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict(), "epoch": epoch, "rng": _rng_state(),
             "config_text": config_text, "speakers": speakers}
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)  # a checkpoint is either complete or absent


def _plot_curves(exp_dir: Path) -> None:
    try:
        from spk.report import plot_training_curves
    except ImportError:  # report module not available: curves are optional
        return
    records = [json.loads(line) for line in open(exp_dir / "train_log.jsonl")]
    (exp_dir / "plots").mkdir(exist_ok=True)
    plot_training_curves(exp_dir / "plots" / "training_curves.png", records)


def load_trained_model(exp_dir: Path, device: str = "cpu") -> tuple[SpeakerEmbedder, ExperimentConfig, list[str]]:
    """The finished model of an experiment, with its config and training speakers, in eval mode."""
    exp_dir = Path(exp_dir)
    final = exp_dir / "models" / "final.pt"
    if not final.exists():
        raise FileNotFoundError(f"{final} does not exist: train the model first (stage 3)")
    config = ExperimentConfig.from_yaml(exp_dir / "config.yaml")
    speakers = (exp_dir / "speakers.txt").read_text().split()
    feature_config = FeatureConfig.from_dict(config.features)
    model = build_embedder(config.to_dict(), feature_config.dim, len(speakers))
    model.load_state_dict(torch.load(final, map_location="cpu", weights_only=False)["model"])
    model.to(resolve_device(device)).eval()
    return model, config, speakers
