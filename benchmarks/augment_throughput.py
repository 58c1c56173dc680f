"""Benchmark: training throughput with on-the-fly augmentation against the same training without it.

Both sides are the real training loop (``spk.train.trainer._train_epoch``: chunk
sampling and cutting in the background thread, the progress bar, gradient
clipping, the scheduler) over the first ``--batches`` batches of an epoch, with
the same model and batches; "augmented" adds waveform augmentation of a share
``--prob`` of the chunks (noise, music, babble, reverberation, reverberation +
noise, equal weights) and SpecAugment.  Target: augmented >= 0.7x clean.  The
two alternate in one process, so machine load affects both alike.

Noise, music and RIR sets are generated in a temporary folder by
:func:`spk.augment.builtin.make_sources` (what ``spk augment sources`` writes),
with babble talkers from ``--speech-from``, unless ``--sources DIR`` names such a
folder already made (data dirs ``noise``, ``music``, ``speech``, ``rirs``).

    python benchmarks/augment_throughput.py --data-dir recipes/mini/data/train_egs/train \\
        --speech-from recipes/mini/data/test --batches 10 --rounds 5
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

import numpy as np
import torch

from spk.augment.builtin import make_sources
from spk.data import read_utt2spk
from spk.features import FeatureConfig
from spk.losses import LOSSES
from spk.models import build_embedder
from spk.train import distributed
from spk.experiment import ExperimentConfig
from spk.feature_store import FeatureStore
from spk.train.trainer import Precision, StopRequest, _train_epoch, _TrainState, make_augmenter, make_sampler
from trainer_throughput import FirstBatches  # the sibling script (this folder is on sys.path)

def augment_options(sources: Path, prob: float) -> dict:
    return {"prob": prob,
            "noise": {"data": str(sources / "noise"), "snr": [0, 15]},
            "music": {"data": str(sources / "music"), "snr": [5, 15]},
            "babble": {"data": str(sources / "speech"), "snr": [13, 20], "speakers": [3, 7]},
            "reverb": {"data": str(sources / "rirs")},
            "reverb_noise": {},
            "spec_augment": {"prob": 0.5, "time_masks": 1, "max_time_width": 10, "freq_masks": 1,
                             "max_freq_width": 8}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True, type=Path, help="training data dir with feats.scp and wav.scp")
    parser.add_argument("--config", default="conf/lstm_softmax.yaml")
    parser.add_argument("--feature-config", default="conf/fbank.yaml")
    parser.add_argument("--sources", type=Path, help="folder with data dirs noise, music, speech, rirs")
    parser.add_argument("--speech-from", type=Path,
                        help="data dir of babble talkers when --sources is not given [default: --data-dir]")
    parser.add_argument("--prob", type=float, default=0.6, help="share of chunks augmented")
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads [default: torch's choice]")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as scratch:
        sources = args.sources
        if sources is None:
            sources = Path(scratch) / "sources"
            make_sources(sources, seed=1, speech_from=args.speech_from or args.data_dir, num_speech=100)
        config = ExperimentConfig.from_yaml(args.config)
        augmented_config = ExperimentConfig.from_dict({**config.to_dict(),
                                                       "augment": augment_options(sources, args.prob)})
        features = FeatureConfig.from_yaml(args.feature_config)
        utt2spk = read_utt2spk(args.data_dir / "utt2spk")
        speakers = sorted(set(utt2spk.values()))
        labels = {u: speakers.index(s) for u, s in utt2spk.items()}
        store = FeatureStore(str(args.data_dir / "feats.scp"), features, cmvn_scp=str(args.data_dir / "cmvn.scp"),
                             preload=config.preload)
        loss_fn = LOSSES.build(config.loss, config.loss_conf)
        loss_input = getattr(loss_fn, "input", "logits")
        clean_sampler = make_sampler(config, store, labels, loss_input)
        augmented_sampler = make_sampler(augmented_config, store, labels, loss_input)
        augmented_sampler.augmenter = make_augmenter(augmented_config.augmentation(), features, args.data_dir,
                                                     store, augmented_sampler, augmented_config)
        model = build_embedder(config.to_dict(), features.dim, len(speakers) if loss_input == "logits" else None)
        optimizer = torch.optim.Adam(list(model.parameters()) + list(loss_fn.parameters()), lr=1e-3)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
        state = _TrainState(model, loss_fn, optimizer, scheduler, "benchmark", speakers,
                            Precision("fp32", torch.device("cpu")))
        context = distributed.Context()
        train_step = distributed.TrainStep(model, loss_fn)

        def timed(sampler, epoch: int) -> float:
            with StopRequest() as stop:
                record = _train_epoch(state, train_step, FirstBatches(sampler, args.batches), epoch, 0, config,
                                      context, stop, Path(scratch) / "interrupted.pt")
            return record["frames_per_s"]

        timed(clean_sampler, 99)  # warm-up (first batches are slower)
        timed(augmented_sampler, 99)
        ratios = []
        for epoch in range(1, args.rounds + 1):
            clean = timed(clean_sampler, epoch)
            augmented = timed(augmented_sampler, epoch)
            ratios.append(augmented / clean)
            print(f"round {epoch}: clean {clean:,.0f} frames/s, augmented {augmented:,.0f} frames/s, "
                  f"ratio {augmented / clean:.3f}", flush=True)
    print(f"augmented / clean training throughput: median {np.median(ratios):.3f}, mean {np.mean(ratios):.3f} "
          f"(target >= 0.7), prob {args.prob}, "
          f"{torch.get_num_threads()} torch threads, {args.batches} batches of {config.batch_size}, "
          f"config {args.config}")


if __name__ == "__main__":
    main()
