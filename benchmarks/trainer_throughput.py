"""Benchmark: the trainer's frames/s against a bare forward+backward of the same model on the same batches.

"Trainer" is the real training loop (``spk.train.trainer._train_epoch``: chunk
sampling and cutting, the progress bar, gradient clipping, the scheduler), run
for the first ``--batches`` batches of an epoch; "bare" is forward, backward and
the optimiser step alone on the same batches, cut beforehand.  The data pipeline
may cost at most 15%: trainer >= 0.85x bare.  Both run in one process,
alternating, so machine load affects both alike.

    python benchmarks/trainer_throughput.py --data-dir recipes/mini/data/train_egs/train \\
        --config conf/lstm_softmax.yaml --batches 30
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from spk.data import read_utt2spk
from spk.features import FeatureConfig
from spk.losses import LOSSES
from spk.models import build_embedder
from spk.experiment import ExperimentConfig
from spk.feature_store import FeatureStore
from spk.train import distributed
from spk.train.trainer import Precision, StopRequest, _train_epoch, _TrainState, make_sampler


class FirstBatches:
    """The first ``count`` batches of each epoch of a sampler (so an epoch of the real trainer loop is short)."""

    def __init__(self, sampler, count: int):
        self.sampler, self.count = sampler, count

    def num_local_batches(self) -> int:
        return min(self.count, self.sampler.num_local_batches())

    def batches(self, epoch: int, start_batch: int = 0):
        for number, batch in enumerate(self.sampler.batches(epoch, start_batch), start=start_batch):
            if number >= self.count:
                return
            yield batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True, type=Path, help="training data dir with feats.scp")
    parser.add_argument("--config", default="conf/lstm_softmax.yaml")
    parser.add_argument("--feature-config", default="conf/fbank.yaml")
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    config = ExperimentConfig.from_yaml(args.config)
    features = FeatureConfig.from_yaml(args.feature_config)
    utt2spk = read_utt2spk(args.data_dir / "utt2spk")
    speakers = sorted(set(utt2spk.values()))
    store = FeatureStore(str(args.data_dir / "feats.scp"), features, cmvn_scp=str(args.data_dir / "cmvn.scp"),
                         preload=config.preload is not False)
    loss_fn = LOSSES.build(config.loss, config.loss_conf)
    classifies = getattr(loss_fn, "input", "logits") == "logits"
    sampler = make_sampler(config, store, {u: speakers.index(s) for u, s in utt2spk.items()},
                           getattr(loss_fn, "input", "logits"))
    model = build_embedder(config.to_dict(), features.dim, len(speakers) if classifies else None)
    optimizer = torch.optim.Adam(list(model.parameters()) + list(loss_fn.parameters()), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    state = _TrainState(model, loss_fn, optimizer, scheduler, "benchmark", speakers, Precision("fp32", torch.device("cpu")))
    context = distributed.Context()
    train_step = distributed.TrainStep(model, loss_fn)

    def bare_step(batch) -> int:
        embeddings = model.embed(batch.feats, batch.lengths)
        loss = loss_fn(model.classify(embeddings, batch.labels), batch.labels) if classifies \
            else loss_fn(embeddings, batch.labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return int(batch.lengths.sum())

    def timed_trainer(epoch: int) -> float:
        """One (shortened) epoch of the real training loop: sampling, cutting, tqdm, clipping, scheduler."""
        with StopRequest() as stop, tempfile.TemporaryDirectory() as scratch:
            record = _train_epoch(state, train_step, FirstBatches(sampler, args.batches), epoch, 0, config,
                                  context, stop, Path(scratch) / "interrupted.pt")
        return record["frames_per_s"]

    def timed_bare(batches) -> float:
        frames, start = 0, time.perf_counter()
        for batch in batches:
            frames += bare_step(batch)
        return frames / (time.perf_counter() - start)

    model.train()
    timed_bare([next(sampler.batches(99))] * 2)  # warm-up
    ratios = []
    for epoch in range(1, args.rounds + 1):
        prepared = [b for _, b in zip(range(args.batches), sampler.batches(epoch))]
        bare = timed_bare(prepared)
        trainer = timed_trainer(epoch)
        ratios.append(trainer / bare)
        print(f"round {epoch}: bare forward+backward {bare:,.0f} frames/s, trainer {trainer:,.0f} frames/s, "
              f"ratio {trainer / bare:.3f}")
    print(f"trainer / bare throughput: {sum(ratios) / len(ratios):.3f} (target >= 0.85), "
          f"{torch.get_num_threads()} threads, config {args.config}")


if __name__ == "__main__":
    main()
