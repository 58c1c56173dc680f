"""Benchmark: the trainer's frames/s against a bare forward+backward of the same model on the same batches.

The data pipeline (chunk sampling, cutting, stacking) may cost at most 15% of
training throughput: trainer >= 0.85x bare.  Both measurements run in one
process on identical batches, alternating, so machine load affects both alike.

    python benchmarks/trainer_throughput.py --data-dir recipes/mini/data/train_egs/train \\
        --config conf/lstm_softmax.yaml --batches 30
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from spk.data import read_utt2spk
from spk.features import FeatureConfig
from spk.losses import LOSSES
from spk.models import build_embedder
from spk.train.config import ExperimentConfig
from spk.train.dataset import FeatureStore
from spk.train.trainer import make_sampler


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
                         preload=config.preload)
    loss_fn = LOSSES.build(config.loss, config.loss_conf)
    classifies = getattr(loss_fn, "input", "logits") == "logits"
    sampler = make_sampler(config, store, {u: speakers.index(s) for u, s in utt2spk.items()},
                           getattr(loss_fn, "input", "logits"))
    model = build_embedder(config.to_dict(), features.dim, len(speakers) if classifies else None)
    optimizer = torch.optim.Adam(list(model.parameters()) + list(loss_fn.parameters()), lr=1e-3)

    def step(batch) -> int:
        embeddings = model.embed(batch.feats, batch.lengths)
        loss = loss_fn(model.classify(embeddings, batch.labels), batch.labels) if classifies \
            else loss_fn(embeddings, batch.labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return int(batch.lengths.sum())

    def timed_pipeline(epoch: int) -> float:
        frames, start = 0, time.perf_counter()
        for number, batch in enumerate(sampler.batches(epoch)):
            if number == args.batches:
                break
            frames += step(batch)
        return frames / (time.perf_counter() - start)

    def timed_bare(batches) -> float:
        frames, start = 0, time.perf_counter()
        for batch in batches:
            frames += step(batch)
        return frames / (time.perf_counter() - start)

    model.train()
    timed_bare([next(sampler.batches(99))] * 2)  # warm-up
    ratios = []
    for epoch in range(1, args.rounds + 1):
        prepared = [b for _, b in zip(range(args.batches), sampler.batches(epoch))]
        bare = timed_bare(prepared)
        pipeline = timed_pipeline(epoch)
        ratios.append(pipeline / bare)
        print(f"round {epoch}: bare {bare:,.0f} frames/s, trainer pipeline {pipeline:,.0f} frames/s, "
              f"ratio {pipeline / bare:.3f}")
    print(f"trainer / bare throughput: {sum(ratios) / len(ratios):.3f} (target >= 0.85), "
          f"{torch.get_num_threads()} threads, config {args.config}")


if __name__ == "__main__":
    main()
