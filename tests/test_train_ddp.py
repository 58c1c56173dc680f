"""Data-parallel training with torchrun: 2 CPU processes (gloo) through the same entry point."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from tests.test_trainer import corpus, speaker_styles, write_feature_dir

ROOT = Path(__file__).resolve().parents[1]
TORCHRUN = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))


@pytest.mark.parametrize("loss", ["softmax", "triplet"])
def test_torchrun_two_processes(tmp_path, loss):
    write_feature_dir(tmp_path / "train", corpus(6, 6, seed=7), speaker_styles(6), seed=7)
    config = {"encoder_conf": {"hidden_size": 8, "num_layers": 1}, "embedding_dim": 8, "epochs": 2,
              "batch_size": 8, "chunk_frames": [40, 60], "loss": loss,
              "speakers_per_batch": 3, "utts_per_speaker": 2}
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(config))
    (tmp_path / "features.yaml").write_text(yaml.safe_dump({"kind": "fbank", "num_mel_bins": 20}))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [TORCHRUN, "--standalone", "--nproc_per_node", "2", "-m", "spk", "train",
         "--config", str(tmp_path / "tiny.yaml"), "--feature-config", str(tmp_path / "features.yaml"),
         "--train-dir", str(tmp_path / "train"), "--exp-dir", str(tmp_path / "exp"), "--threads", "1"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "rank 1 of 2" in result.stderr and "rank 0 of 2" in result.stderr
    checksums = dict(re.findall(r"rank (\d) final weight checksum (\S+)", result.stderr))
    assert set(checksums) == {"0", "1"} and checksums["0"] == checksums["1"]  # gradients were averaged
    records = [json.loads(line) for line in (tmp_path / "exp/train_log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]  # written once, by rank 0
    final = torch.load(tmp_path / "exp/models/final.pt", weights_only=True)["model"]
    assert all(torch.isfinite(v).all() for v in final.values() if v.is_floating_point())
