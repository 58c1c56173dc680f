"""The recipe stages on a real one-node Slurm (``--cmd slurm`` from ``cmd.sh``): 1, 2 and 4 of the tiny
mini recipe, and stage 3 as one Slurm job.

The recipe folder here holds the tiny recipe's data dirs (their own files, no features) and
its trained model; its ``cmd.sh`` sends every parallel step to Slurm. Outputs must equal
those of the local backend byte for byte, and a job that fails must fail its stage with
its log, then be the only job submitted again by the rerun.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import yaml

from spk.augment.offline import speed_perturb_data_dir
from spk.data import read_kv, subset_data_dir
from spk.features import FeatureConfig
from spk.make_features import make_features
from tests.test_trainer import corpus, speaker_styles, write_feature_dir

ROOT = Path(__file__).resolve().parents[1]
SOURCE_FILES = ("wav.scp", "utt2spk", "spk2utt", "trials", "spk2gender", "utt2uniq")


def _copy_data_dir(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True)
    for name in SOURCE_FILES:
        if (src / name).is_file():
            shutil.copyfile(src / name, dst / name)


@pytest.fixture(scope="module")
def slurm_recipe(slurm, product, tmp_path_factory) -> Path:
    """A recipe folder whose cmd.sh runs every parallel step on Slurm: the tiny recipe's test set, two of
    its training speakers and its trained model."""
    folder = tmp_path_factory.mktemp("slurm_recipe")
    for name in ("path.sh", "steps", "conf", "local"):
        os.symlink(ROOT / "recipes/mini" / name, folder / name)
    (folder / "cmd.sh").write_text('cpu_cmd="slurm"\ngpu_cmd="slurm"\n')
    _copy_data_dir(product.recipe / "data/test", folder / "data/test")
    _copy_data_dir(product.recipe / "data/train", folder / "all_train")  # two of its speakers train here
    subset_data_dir(folder / "all_train", folder / "data/train", speakers=product.speakers("train")[:2])
    shutil.copytree(product.exp, folder / "exp/tiny", ignore=shutil.ignore_patterns(
        "embeddings", "scores", "results", "plots", "epoch_*.pt", "calibration*"))
    shutil.copyfile(product.recipe / "tiny.yaml", folder / "tiny.yaml")
    return folder


def stages(folder: Path, *args: str) -> subprocess.CompletedProcess:
    """steps/stages.sh of the tiny recipe's sets, 2 jobs per parallel step, in ``folder``."""
    return subprocess.run(
        ["steps/stages.sh", "--train-set", "train", "--test-sets", "test", "--ident-sets", "", "--calib-set", "",
         "--config", "tiny.yaml", "--nj", "2", "--min-frames", "100", "--threads", "1", "--baseline", "false",
         *args], cwd=folder, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL,
        env={**os.environ, "OMP_NUM_THREADS": "1", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"})


def assert_same_features(one: Path, other: Path) -> None:
    """The features of every utterance of data dir ``one`` equal those of ``other`` (which may have more)."""
    mine, theirs = kaldiio.load_scp(str(one / "feats.scp")), kaldiio.load_scp(str(other / "feats.scp"))
    assert sorted(mine) == sorted(read_kv(one / "utt2spk"))
    for utt in mine:
        np.testing.assert_array_equal(mine[utt], theirs[utt], err_msg=utt)


def test_stages_1_2_and_4_on_slurm_equal_local(slurm_recipe, product, tmp_path):
    first = stages(slurm_recipe, "--stage", "1", "--stop-stage", "2", "--speed-perturb", "true")
    assert first.returncode == 0, first.stderr[-3000:]
    assert "Slurm job array" in first.stderr and "--array=1,2" in first.stderr
    logs = slurm_recipe / "exp/make_features/log"
    assert {p.name for p in logs.glob("make_fbank_train.*.log")} == {"make_fbank_train.1.log", "make_fbank_train.2.log"}
    assert "# ended (code 0)" in (logs / "make_fbank_train.2.log").read_text()
    assert (slurm_recipe / "exp/augment/log/speed_train_sp.1.log").is_file()
    for name in ("train", "test"):  # the tiny recipe computed these with the local backend
        assert_same_features(slurm_recipe / "data" / name, product.recipe / "data" / name)

    # stage 2's speed-perturbed copies and their features, made again here with the local backend
    # for one speaker (each copy depends only on its own utterance)
    one_speaker = tmp_path / "train_one"
    subset_data_dir(slurm_recipe / "data/train", one_speaker, speakers=[product.speakers("train")[0]])
    local_sp = tmp_path / "train_one_sp"
    speed_perturb_data_dir(one_speaker, local_sp, nj=2, cmd="local")
    make_features(local_sp, FeatureConfig.from_yaml(ROOT / "conf/fbank.yaml"), tmp_path / "fbank", nj=1)
    slurm_wavs = read_kv(slurm_recipe / "data/train_sp/wav.scp")
    slurm_feats = kaldiio.load_scp(str(slurm_recipe / "data/train_sp/feats.scp"))
    for utt, matrix in kaldiio.load_scp(str(local_sp / "feats.scp")).items():
        assert Path(read_kv(local_sp / "wav.scp")[utt]).read_bytes() == Path(slurm_wavs[utt]).read_bytes(), utt
        np.testing.assert_array_equal(slurm_feats[utt], matrix, err_msg=utt)

    fourth = stages(slurm_recipe, "--stage", "4", "--stop-stage", "4")
    assert fourth.returncode == 0, fourth.stderr[-3000:]
    assert "Slurm job array" in fourth.stderr
    ark = "embeddings/test/xvector.ark"
    assert (slurm_recipe / "exp/tiny" / ark).read_bytes() == (product.exp / ark).read_bytes()


def test_a_failed_slurm_job_fails_the_stage_and_only_it_is_resubmitted(slurm_recipe, tmp_path):
    """An unreadable wav in the second split of a set; the rerun after fixing it resubmits job 2 alone."""
    bad = slurm_recipe / "data/test_bad"
    _copy_data_dir(slurm_recipe / "data/test", bad)
    wav_scp = read_kv(bad / "wav.scp")
    second_half = sorted(wav_scp)[(len(wav_scp) + 1) // 2:]  # split2/2: the second run of sorted utterances
    copies = {}
    for utt in second_half:
        copies[utt] = tmp_path / f"{utt}.wav"
        shutil.copyfile(wav_scp[utt], copies[utt])
        copies[utt].write_bytes(b"RIFF but not audio")
        wav_scp[utt] = str(copies[utt])
    (bad / "wav.scp").write_text("".join(f"{utt} {path}\n" for utt, path in sorted(wav_scp.items())))

    failed = stages(slurm_recipe, "--stage", "1", "--stop-stage", "1", "--test-sets", "test_bad")
    assert failed.returncode != 0
    log = "exp/make_features/log/make_fbank_test_bad.2.log"  # relative to the recipe folder, as given
    assert f"job 2: see {log}; its last lines:" in failed.stderr and "job 1:" not in failed.stderr
    assert "no features for" in (slurm_recipe / log).read_text()

    original = read_kv(slurm_recipe / "data/test/wav.scp")
    for utt, copy in copies.items():
        shutil.copyfile(original[utt], copy)
    rerun = stages(slurm_recipe, "--stage", "1", "--stop-stage", "1", "--test-sets", "test_bad")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "1 of 2 jobs already done; running job(s) 2" in rerun.stderr and "--array=2 " in rerun.stderr
    assert_same_features(bad, slurm_recipe / "data/test")


def test_stage_3_trains_as_one_slurm_job(slurm, tmp_path):
    """srun starts spk train-launch --slurm on the job's node, which runs torchrun with c10d there."""
    for name in ("path.sh", "steps", "conf", "local"):
        os.symlink(ROOT / "recipes/mini" / name, tmp_path / name)
    (tmp_path / "cmd.sh").write_text('cpu_cmd="slurm"\n')
    write_feature_dir(tmp_path / "data/train_egs/train", corpus(3, 4, seed=5), speaker_styles(3), seed=5)
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump({"encoder_conf": {"hidden_size": 8, "num_layers": 1},
                                                         "embedding_dim": 8, "epochs": 1, "batch_size": 4,
                                                         "chunk_frames": [20, 40]}))
    (tmp_path / "features.yaml").write_text(yaml.safe_dump({"kind": "fbank", "num_mel_bins": 20}))
    result = stages(tmp_path, "--stage", "3", "--stop-stage", "3", "--feature-config", "features.yaml")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "sbatch --wait --job-name spk-train-tiny --nodes 1 --ntasks-per-node 1" in result.stderr
    train_log = (tmp_path / "exp/tiny/log/train.log").read_text()
    assert "wrote exp/tiny/models/final.pt" in train_log
    assert "--rdzv-backend" not in result.stderr  # the endpoint comes from the Slurm job, inside it


def test_a_refused_submission_is_a_clear_error(slurm, tmp_path):
    from click.testing import CliRunner

    from spk.cli import main
    from tests.test_features import chirp_int16, make_data_dir

    data = make_data_dir(tmp_path, {f"spk{i}-utt{i}": chirp_int16(0.2, seed=i) for i in range(2)})
    result = CliRunner().invoke(main, ["features", "--feat-dir", str(tmp_path / "fbank"), "--nj", "2",
                                       "--cmd", "slurm --partition=no_such_partition", str(data)])
    assert result.exit_code == 1 and "sbatch refused the job array" in result.output, result.output
    assert "no_such_partition" in result.output or "partition" in result.output.lower()
    assert not (data / "feats.scp").exists()
