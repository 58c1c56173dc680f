"""``spk features``: fbank or MFCC features and CMVN statistics for data dirs (stage 1)."""

from __future__ import annotations

from pathlib import Path

import click

from spk.data import DataDirError, validate_data_dir
from spk.features import FeatureConfig, FeatureConfigError
from spk.bin.job_options import job_options
from spk.jobs import JobError
from spk.make_features import FeatureExtractionError, make_features


@click.command("features")
@click.argument("data_dirs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False),
              help="Feature config YAML (e.g. conf/fbank.yaml) [default: 80-dim fbank].")
@click.option("--feat-dir", required=True, type=click.Path(file_okay=False),
              help="Where the feature arks go (e.g. fbank/).")
@job_options("Parallel jobs, each over one part of split<NJ>.")
@click.option("--force", is_flag=True, help="Recompute even when the features are up to date.")
@click.option("--compress", is_flag=True,
              help="Store the features with Kaldi's 8-bit speech-feature compression (about a quarter of the "
                   "float32 size, a small loss of precision); up-to-date features are kept as they are "
                   "unless --force [default: float32].")
@click.option("--lengths-only", is_flag=True,
              help="Write only utt2num_frames and utt2dur (from the decoded audio), no features: for a training "
                   "set used with on_the_fly_features: true.")
def features(data_dirs, config_path, feat_dir, nj, cmd, log_dir, force, compress, lengths_only):
    """Compute features for each of DATA_DIRS into FEAT_DIR and write feats.scp, cmvn.scp,
    utt2num_frames and utt2dur into the data dir.  Up-to-date features are skipped."""
    try:
        config = FeatureConfig.from_yaml(config_path) if config_path else FeatureConfig()
        for data_dir in data_dirs:
            validate_data_dir(data_dir)
            make_features(Path(data_dir), config, Path(feat_dir), nj=nj, force=force, compress=compress,
                          lengths_only=lengths_only, cmd=cmd, log_dir=Path(log_dir) if log_dir else None)
    except (DataDirError, FeatureConfigError, FeatureExtractionError, JobError) as error:
        raise click.ClickException(str(error)) from None
