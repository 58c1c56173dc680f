"""Data-parallel training with torchrun: 2 CPU processes (gloo) through the same entry point, on one
"node" (--standalone) and on two (two launchers, c10d rendezvous on 127.0.0.1), stopped and resumed."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from spk.train.distributed import Context, torchrun_command
from spk.train.trainer import _restore_rng, _rng_state
from tests.test_trainer import corpus, speaker_styles, write_feature_dir

ROOT = Path(__file__).resolve().parents[1]


# A classification loss trains in the two-node test below (one run fewer here).
@pytest.mark.parametrize("loss", ["triplet"])
def test_torchrun_two_processes(tmp_path, loss):
    write_feature_dir(tmp_path / "train", corpus(6, 6, seed=7), speaker_styles(6), seed=7)
    config = {"encoder_conf": {"hidden_size": 8, "num_layers": 1}, "embedding_dim": 8, "epochs": 2,
              "batch_size": 8, "chunk_frames": [40, 60], "loss": loss,
              "speakers_per_batch": 3, "utts_per_speaker": 2}
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(config))
    (tmp_path / "features.yaml").write_text(yaml.safe_dump({"kind": "fbank", "num_mel_bins": 20}))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        torchrun_command(["--config", str(tmp_path / "tiny.yaml"), "--feature-config", str(tmp_path / "features.yaml"),
                          "--train-dir", str(tmp_path / "train"), "--exp-dir", str(tmp_path / "exp"),
                          "--threads", "1"], nproc_per_node=2),  # torchrun --standalone
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "rank 1 of 2" in result.stderr and "rank 0 of 2" in result.stderr
    checksums = dict(re.findall(r"rank (\d) final weight checksum (\S+)", result.stderr))
    assert set(checksums) == {"0", "1"} and checksums["0"] == checksums["1"]  # gradients were averaged
    records = [json.loads(line) for line in (tmp_path / "exp/train_log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]  # written once, by rank 0
    final = torch.load(tmp_path / "exp/models/final.pt", weights_only=True)["model"]
    assert all(torch.isfinite(v).all() for v in final.values() if v.is_floating_point())


# Two "nodes" on this machine: two torchrun launchers meeting through c10d rendezvous on 127.0.0.1, one
# training process each.  The LSTM's dropout (between its two layers) draws from each process's torch
# RNG, whose states differ between the ranks (their batches differ in length): a resume that gave every
# rank the same state would end with other weights than the uninterrupted run.
TWO_NODE_CONFIG = {"encoder_conf": {"hidden_size": 8, "num_layers": 2, "dropout": 0.5}, "embedding_dim": 8,
                   "epochs": 2, "batch_size": 4, "chunk_frames": [20, 40], "loss": "softmax"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_two_nodes(root: Path, exp: str, run: str) -> tuple[list[subprocess.Popen], list[Path]]:
    """Start the two launchers of one 2-node run (their output, with their worker's, in ``<exp>.<run>.<n>.log``)."""
    command = torchrun_command(
        ["--config", str(root / "tiny.yaml"), "--feature-config", str(root / "features.yaml"),
         "--train-dir", str(root / "train"), "--exp-dir", str(root / exp), "--threads", "1"],
        nnodes=2, nproc_per_node=1, rdzv_endpoint=f"127.0.0.1:{free_port()}", rdzv_id=f"{exp}-{run}")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    logs = [root / f"{exp}.{run}.{node}.log" for node in range(2)]
    launchers = []
    for log_path in logs:
        with open(log_path, "w") as log:  # a file, not a pipe: a full pipe would block the trainer
            launchers.append(subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                              stdin=subprocess.DEVNULL))
    return launchers, logs


def wait_all(launchers: list[subprocess.Popen], timeout: float = 240) -> list[int]:
    try:
        return [launcher.wait(timeout=timeout) for launcher in launchers]
    finally:
        for launcher in launchers:
            if launcher.poll() is None:
                launcher.kill()
                launcher.wait()


def run_two_nodes(root: Path, exp: str, run: str) -> str:
    launchers, logs = start_two_nodes(root, exp, run)
    codes = wait_all(launchers)
    output = "".join(log.read_text() for log in logs)
    assert codes == [0, 0], output[-4000:]
    return output


def test_two_nodes_resume_exactly(tmp_path):
    write_feature_dir(tmp_path / "train", corpus(6, 6, seed=7), speaker_styles(6), seed=7)
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(TWO_NODE_CONFIG))
    (tmp_path / "features.yaml").write_text(yaml.safe_dump({"kind": "fbank", "num_mel_bins": 20}))

    output = run_two_nodes(tmp_path, "whole", "only")
    assert "rank 0 of 2" in output and "rank 1 of 2" in output
    checksums = dict(re.findall(r"rank (\d) final weight checksum (\S+)", output))
    assert set(checksums) == {"0", "1"} and checksums["0"] == checksums["1"]  # both ranks end alike
    records = [json.loads(line) for line in (tmp_path / "whole/train_log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2] and all("train_acc" in r for r in records)  # by rank 0 only
    whole = torch.load(tmp_path / "whole/models/final.pt", weights_only=True)["model"]
    assert all(torch.isfinite(v).all() for v in whole.values() if v.is_floating_point())

    # Stopped by SIGTERM to both launchers (torchrun passes it on to its worker) during epoch 2
    launchers, logs = start_two_nodes(tmp_path, "stopped", "first")
    checkpoint = tmp_path / "stopped/models/epoch_001.pt"
    deadline = time.time() + 240
    while not checkpoint.exists() and all(p.poll() is None for p in launchers) and time.time() < deadline:
        time.sleep(0.01)
    for launcher in launchers:
        launcher.send_signal(signal.SIGTERM)
    codes = wait_all(launchers)
    output = "".join(log.read_text() for log in logs)
    assert all(code != 0 for code in codes), output[-4000:]
    assert "run the same command again to resume" in output, output[-4000:]
    saved = torch.load(tmp_path / "stopped/models/interrupted.pt", weights_only=True)
    assert saved["epoch"] == 2 and saved["batch"] >= 1, (saved["epoch"], saved["batch"])
    states = saved["rng_per_rank"]
    assert len(states) == 2 and not torch.equal(states[0]["torch"], states[1]["torch"])
    assert torch.equal(saved["rng"]["torch"], states[0]["torch"])

    output = run_two_nodes(tmp_path, "stopped", "resumed")
    assert "resuming from" in output and "RNG states of" not in output
    final = torch.load(tmp_path / "stopped/models/final.pt", weights_only=True)["model"]
    assert final.keys() == whole.keys()
    for key in final:
        assert torch.equal(final[key], whole[key]), key


def _states(*seeds: int) -> list[dict]:
    states = []
    for seed in seeds:
        torch.manual_seed(seed)
        states.append(_rng_state())
    return states


@pytest.mark.parametrize("saved_ranks, world_size", [(2, 3), (3, 2), (1, 2), (2, 2), (1, 1), (2, 1)])
def test_resume_rng_with_another_world_size(saved_ranks, world_size, caplog):
    """Each rank takes its own saved state; a rank without one takes rank 0's (old and single-process
    checkpoints have only ``rng``), and rank 0 says so in the log."""
    states = _states(*range(10, 10 + saved_ranks))
    saved = {"rng": states[0], "epoch": 1, **({"rng_per_rank": states} if saved_ranks > 1 else {})}
    for rank in range(world_size):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="spk.train.trainer"):
            _restore_rng(saved, Context(rank=rank, world_size=world_size), Path("epoch_001.pt"))
        expected = states[rank] if rank < saved_ranks else states[0]
        assert torch.equal(torch.get_rng_state(), expected["torch"])
        said = " ".join(r.getMessage() for r in caplog.records)
        if rank == 0 and saved_ranks != world_size:
            assert f"RNG states of {saved_ranks} process" in said and f"this run has {world_size}" in said
        else:
            assert said == ""


def test_launcher_commands():
    """The torchrun command lines of ``spk train-launch`` (stage 3): one node, c10d, inside Slurm."""
    from click.testing import CliRunner

    from spk.cli import main

    python = [sys.executable, "-m", "torch.distributed.run"]
    assert torchrun_command(["--config", "c.yaml"], nproc_per_node=4) == \
        python + ["--standalone", "--nnodes", "1", "--nproc-per-node", "4", "-m", "spk", "train", "--config", "c.yaml"]
    assert torchrun_command([], nnodes=2, rdzv_endpoint="10.0.0.1:29400", rdzv_id="j7", node_rank=1) == \
        python + ["--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d", "--rdzv-endpoint",
                  "10.0.0.1:29400", "--rdzv-id", "j7", "--node-rank", "1", "-m", "spk", "train"]
    for wrong in ({"nnodes": 2}, {"nnodes": 2, "rdzv_endpoint": "node01"}, {"nproc_per_node": 0}):
        with pytest.raises(ValueError, match="nnodes|rdzv-endpoint|nproc-per-node"):
            torchrun_command([], **wrong)

    runner = CliRunner()
    slurm = {"SLURM_JOB_ID": "4321", "SLURM_JOB_NODELIST": "gpu[07-09],cpu1", "SLURM_JOB_NUM_NODES": "4"}
    result = runner.invoke(main, ["train-launch", "--slurm", "--nproc-per-node", "2", "--print", "--",
                                  "--config", "c.yaml", "--exp-dir", "exp/x"], env=slurm)
    assert result.exit_code == 0, result.output
    assert result.output.split()[3:] == ["--nnodes", "4", "--nproc-per-node", "2", "--rdzv-backend", "c10d",
                                         "--rdzv-endpoint", "gpu07:29721", "--rdzv-id", "4321", "-m", "spk",
                                         "train", "--config", "c.yaml", "--exp-dir", "exp/x"]
    result = runner.invoke(main, ["train-launch", "--slurm", "--print"], env={k: "" for k in slurm})
    assert result.exit_code != 0 and "inside a Slurm job" in result.output
    assert "train-launch" not in runner.invoke(main, ["--help"]).output  # hidden
