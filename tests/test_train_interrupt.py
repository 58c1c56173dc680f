"""A training run stopped by SIGINT, SIGTERM or kill -9 and started again with the same
command ends with the same weights as an uninterrupted run (real `spk train` processes)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from tests.test_trainer import corpus, speaker_styles, write_feature_dir

CONFIG = {
    "encoder_conf": {"hidden_size": 8, "num_layers": 1},
    "embedding_dim": 8,
    "epochs": 3,
    "batch_size": 4,
    "chunk_frames": [20, 30],
    "optimizer_conf": {"lr": 0.01},
    "encoder": "lstm",
}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("interrupt")
    write_feature_dir(root / "train", corpus(6, 20, seed=3, frames=(100, 140)), speaker_styles(6), seed=3)
    (root / "tiny.yaml").write_text(yaml.safe_dump(CONFIG))
    (root / "features.yaml").write_text(yaml.safe_dump({"kind": "fbank", "num_mel_bins": 20}))
    return root


SPK = str(Path(sys.executable).with_name("spk"))  # the console script of this environment


def train_command(root: Path, exp: str, *extra: str) -> list[str]:
    return [SPK, "train", "--config", str(root / "tiny.yaml"), "--train-dir", str(root / "train"),
            "--feature-config", str(root / "features.yaml"),
            "--exp-dir", str(root / exp), "--threads", "1", *extra]


@pytest.fixture(scope="module")
def uninterrupted(setup) -> dict:
    subprocess.run(train_command(setup, "whole"), check=True, capture_output=True, timeout=300)
    return torch.load(setup / "whole/models/final.pt", weights_only=True)["model"]


def stop_after_first_epoch(root: Path, exp: str, signal_number: int, *extra: str) -> subprocess.CompletedProcess:
    """Start training, send ``signal_number`` as soon as the first epoch checkpoint exists."""
    log_path = root / f"{exp}.log"
    with open(log_path, "w") as log:  # a file, not a pipe: a full pipe would block the trainer
        process = subprocess.Popen(train_command(root, exp, *extra), stdout=log, stderr=log)
        checkpoint = root / exp / "models/epoch_001.pt"
        deadline = time.time() + 240
        while not checkpoint.exists() and process.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        process.send_signal(signal_number)
        process.wait(timeout=120)
    return subprocess.CompletedProcess(process.args, process.returncode, "", log_path.read_text())


# The SIGINT run cuts its batches in 2 loader processes streaming from the ark, in the stopped and in the
# resumed run: its weights must still equal those of the uninterrupted run, whose batches a thread cut
# from memory.
LOADER_WORKERS = ("--set", "num_workers=2", "--set", "preload=false")


@pytest.mark.parametrize("signal_number", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_resumed_run_matches_uninterrupted(setup, uninterrupted, signal_number):
    exp = f"stopped_{signal.Signals(signal_number).name}"
    extra = LOADER_WORKERS if signal_number == signal.SIGINT else ()
    stopped = stop_after_first_epoch(setup, exp, signal_number, *extra)
    assert stopped.returncode == -signal.SIGKILL if signal_number == signal.SIGKILL \
        else stopped.returncode == 128 + signal_number, stopped.stderr[-2000:]
    assert not (setup / exp / "models/final.pt").exists()
    if signal_number != signal.SIGKILL:
        assert (setup / exp / "models/interrupted.pt").exists()
        assert "run the same command again to resume" in stopped.stderr
        saved = torch.load(setup / exp / "models/interrupted.pt", weights_only=True)
        assert saved["epoch"] >= 2 and saved["batch"] >= 1  # stopped inside epoch 2
    if extra:
        assert "2 loader processes" in stopped.stderr
    resumed = subprocess.run(train_command(setup, exp, *extra), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from" in resumed.stderr
    final = torch.load(setup / exp / "models/final.pt", weights_only=True)["model"]
    assert final.keys() == uninterrupted.keys()
    for key in final:
        assert torch.equal(final[key], uninterrupted[key]), key
    assert not (setup / exp / "models/interrupted.pt").exists()

