"""``spk egs`` (stage 2) and ``spk train`` (stage 3)."""

from __future__ import annotations

from pathlib import Path

import click

from spk.data import DataDirError, DataDirUsageError, validate_data_dir
from spk.features import FeatureConfig, FeatureConfigError
from spk.models.registry import RegistryError
from spk.experiment import ConfigError, ExperimentConfig


@click.command("egs")
@click.argument("src", type=click.Path(exists=True, file_okay=False))
@click.argument("dst", type=click.Path(file_okay=False))
@click.option("--min-frames", default=200, show_default=True, help="Drop utterances shorter than this.")
@click.option("--min-utts", default=2, show_default=True, help="Drop speakers with fewer usable utterances.")
@click.option("--valid-per-spk", default=1, show_default=True, help="Utterances per speaker held out for validation.")
@click.option("--valid-speakers", default=0, show_default=True,
              help="Speakers held out of training, with a trial list, for the validation EER.")
@click.option("--seed", default=0, show_default=True)
def egs(src, dst, min_frames, min_utts, valid_per_spk, valid_speakers, seed):
    """Training examples: write DST/train and DST/valid from the data dir SRC (with features, or with
    only utt2num_frames for training with on-the-fly features)."""
    from spk.train.egs import prepare_training_dirs

    try:
        validate_data_dir(src)  # the lengths are what egs needs: prepare_training_dirs asks for utt2num_frames
        prepare_training_dirs(Path(src), Path(dst), min_frames=min_frames, min_utts_per_speaker=min_utts,
                              valid_per_speaker=valid_per_spk, valid_speakers=valid_speakers, seed=seed)
    except (DataDirError, DataDirUsageError) as error:
        raise click.ClickException(str(error)) from None


@click.command("train")
@click.option("--config", "config_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Experiment config YAML (e.g. conf/lstm_softmax.yaml).")
@click.option("--feature-config", type=click.Path(exists=True, dir_okay=False),
              help="Feature config the training features were made with [default: 80-dim fbank].")
@click.option("--train-dir", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--valid-dir", type=click.Path(exists=True, file_okay=False),
              help="Held-out utterances of training speakers (validation loss and accuracy).")
@click.option("--valid-trials-dir", type=click.Path(exists=True, file_okay=False),
              help="Unseen speakers with a trials file (validation EER, best model, early stopping).")
@click.option("--exp-dir", required=True, type=click.Path(file_okay=False), help="exp/<tag>")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or auto.")
@click.option("--resume/--no-resume", default=True, show_default=True,
              help="Continue from the latest checkpoint of the same config, or start afresh.")
@click.option("--threads", default=0, type=click.IntRange(min=0),
              help="torch intra-op CPU threads [default: 0, i.e. $SPK_NUM_THREADS, else $OMP_NUM_THREADS, else "
                   "the cores this process may use (CPU affinity capped by the cgroup CPU quota)].")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config option (YAML value; dotted keys for nested ones, e.g. "
                   "loss_conf.margin=0.3). Repeatable; saved in the resolved config.yaml.")
def train(config_path, feature_config, train_dir, valid_dir, valid_trials_dir, exp_dir, device, resume, threads,
          overrides):
    """Train a speaker embedder into EXP_DIR (config.yaml, models/, train_log.jsonl, plots/)."""
    try:  # both configs are read and checked before anything else is loaded or done
        config = ExperimentConfig.from_yaml(config_path, overrides)
        features = FeatureConfig.from_yaml(feature_config) if feature_config else FeatureConfig()
    except (ConfigError, FeatureConfigError) as error:
        raise click.ClickException(str(error)) from None

    from spk.threads import configure_torch_threads  # its ThreadConfigError is a ValueError
    from spk.feature_store import TrainingDataError
    from spk.train.trainer import TrainingInterrupted
    from spk.train.trainer import train as run_training

    try:
        configure_torch_threads(threads, purpose="training")
        validate_data_dir(train_dir, need_feats=not config.on_the_fly_features)  # on the fly: audio, no feats.scp
        for extra in (valid_dir, valid_trials_dir):
            if extra:
                validate_data_dir(extra, need_feats=True)
        run_training(Path(exp_dir), config, features, Path(train_dir), Path(valid_dir) if valid_dir else None,
                     valid_trials_dir=Path(valid_trials_dir) if valid_trials_dir else None,
                     device=device, resume=resume)
    except TrainingInterrupted as stopped:
        click.echo(f"Stopped: {stopped}", err=True)
        raise SystemExit(128 + stopped.signal_number) from None
    except (ConfigError, FeatureConfigError, RegistryError, DataDirError, RuntimeError, ValueError,
            TrainingDataError) as error:
        raise click.ClickException(str(error)) from None
