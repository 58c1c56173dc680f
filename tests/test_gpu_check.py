"""benchmarks/gpu_check.py: run on the CPU (``--device cpu --quick``) as a real subprocess, so the GPU check
cannot rot between the rare sessions that have a GPU; and its loss comparison's verdicts."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from spk.train.trainer import Precision

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"


def load_script():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)  # dataclasses look their module up while the class is built
    spec.loader.exec_module(sys.modules[spec.name])
    return sys.modules[spec.name]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check") / "gpu_check.json"
    process = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--quick", "--out", str(out)],
                             capture_output=True, text=True, timeout=600, cwd=ROOT)
    return process, out


def test_quick_cpu_run_passes_and_prints_one_json_line(quick_run):
    process, out = quick_run
    assert process.returncode == 0, process.stderr[-4000:]
    lines = process.stdout.splitlines()
    assert len(lines) == 1, process.stdout[-2000:]
    record = json.loads(lines[0])
    assert json.loads(out.read_text()) == record
    assert record["device"] == "cpu" and record["device_name"].startswith("CPU")
    assert record["torch"] == torch.__version__ and record["quick"] is True
    assert record["passed"] is True and record["checks"] and all(record["checks"].values())
    assert 0 < record["wall_s"] < record["time_budget_s"]
    assert record["corpus"]["utterances"] == 48 and record["corpus"]["frames"] > 0


def test_quick_cpu_run_reports_training_figures_and_the_precision_that_ran(quick_run):
    record = json.loads(quick_run[0].stdout)
    training = record["training"]
    assert set(training) == {"fp32", "bf16"}
    fp32 = training["fp32"]
    assert fp32["precision"] == "fp32" and fp32["chunks_per_s"] > 0 and fp32["frames_per_s"] > 0
    assert fp32["peak_gpu_memory_mb"] is None and fp32["gpu_utilisation_percent"] is None  # no GPU to read
    assert len(fp32["epoch_losses"]) == record["sizes"]["epochs"] and all(map(math.isfinite, fp32["epoch_losses"]))
    assert fp32["loss_decreased"] is True
    bf16 = training["bf16"]
    # what the trainer's own Precision trains bf16 in on this CPU (fp32 where oneDNN cannot run bf16 LSTMs)
    ran = Precision("bf16", torch.device("cpu")).name
    assert bf16["precision_requested"] == "bf16" and bf16["precision"] == ran
    assert record["loss_check"]["bf16"]["precision"] == ran
    if ran == "fp32":
        assert bf16["same_run_as"] == "fp32"


def test_quick_cpu_run_matches_the_reference_losses_and_embeds(quick_run):
    record = json.loads(quick_run[0].stdout)
    check = record["loss_check"]
    assert len(check["reference_losses"]) == record["sizes"]["check_steps"]
    # on the CPU the device run (2 loader processes) must give the reference's (a thread) losses exactly
    assert check["fp32"]["losses"] == check["reference_losses"]
    assert check["fp32"]["max_rel_diff"] == 0.0 and check["fp32"]["pass"] is True
    embed = record["embed"]
    assert embed["utterances"] == 50 and embed["utterances_per_s"] > 0 and embed["finite"] is True
    assert embed["frames_min"] < embed["frames_max"] and 0 <= embed["eer_percent"] <= 100


def test_compare_losses_fails_outside_the_tolerance_and_on_nan():
    compare = load_script().compare_losses
    assert compare([10.0, 9.0], [10.05, 8.95], 0.01)["pass"] is True
    outside = compare([10.0, 9.0], [10.0, 9.2], 0.01)
    assert outside["pass"] is False and outside["max_abs_diff"] == pytest.approx(0.2)
    assert outside["max_rel_diff"] == pytest.approx(0.2 / 9.0)
    assert compare([10.0, 9.0], [10.0, float("nan")], 0.05)["pass"] is False
    assert compare([10.0, 9.0], [10.0], 0.05)["pass"] is False


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present: --device cuda is valid here")
def test_cuda_without_a_gpu_is_a_clear_usage_error():
    process = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert process.returncode == 2 and process.stdout == ""
    assert "sees no CUDA device" in process.stderr and "--device cpu --quick" in process.stderr
