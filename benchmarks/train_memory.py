"""Benchmark: peak memory and batches/s of real `spk train` runs on training sets of growing size.

For each training-set size (``--hours``, default 10 and 100) and data mode it
runs the venv's ``spk train`` for one epoch of the same number of batches
(``chunks_per_second`` is chosen per set so that both sets give ``--batches``
batches; each utterance gives at least one chunk, so the largest set bounds how
few batches can be asked for) and reports:

- peak memory of the process tree (the trainer and its loader worker
  processes), sampled every 0.2 s from /proc: the summed RSS (what the issue
  asks about; forked workers' shared pages count once per process), the summed
  PSS (shared pages split between the processes that map them), and the
  trainer's own kernel-kept peak (VmHWM). ``getrusage(RUSAGE_CHILDREN)`` would
  give only the largest single process, not the sum;
- batches/s and frames/s of the epoch, from the trainer's ``train_log.jsonl``
  (the epoch's own time: reading and preloading the data come before it), and
  the wall time of the whole command.

Modes: ``preloaded`` (preload=true), ``streamed`` and ``streamed-2w``
(preload=false with 0 and 2 loader processes), ``on-the-fly`` (features computed
from the audio by 2 loader processes). The data are generated (see
benchmarks/scale_data.py): ``min(--hours)`` hours of distinct feature matrices
listed repeatedly for the larger sets, and at most an hour of synthetic audio in
ten recordings cut by ``segments``. The model is a small LSTM so the data path
shows. One JSON line per run, then one per mode with the memory growth from the
smallest to the largest set.

    .venv/bin/python benchmarks/train_memory.py --hours 10 100 --work /tmp/spk_train_memory
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale_data import training_sets  # noqa: E402

from spk.data import read_utt2num_frames  # noqa: E402

MODES = {  # mode -> (kind of training set, config overrides)
    "preloaded": ("features", {"preload": True, "num_workers": 0}),
    "streamed": ("features", {"preload": False, "num_workers": 0}),
    "streamed-2w": ("features", {"preload": False, "num_workers": 2}),
    "on-the-fly": ("audio", {"on_the_fly_features": True, "num_workers": 2}),
}
SMALL_MODEL = {
    "encoder": "lstm",
    "encoder_conf": {"hidden_size": 32, "num_layers": 1},
    "pooling": "mean",
    "embedding_dim": 32,
    "loss": "softmax",
    "epochs": 1,
    "chunk_frames": [200, 300],
    "scheduler": "none",
}
SAMPLE_S = 0.2
MIB = 2**20


# --------------------------------------------------------------------------- memory of a process tree


def _proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process in bytes ({} once it has gone)."""
    values = {}
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    name, amount, _unit = line.split()
                    values[name[:-1]] = int(amount) * 1024
    except OSError:
        pass
    return values


def _proc_pss(pid: int) -> int | None:
    """Proportional set size of a process in bytes (None where smaps_rollup cannot be read)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as handle:
            for line in handle:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _descendants(root: int) -> list[int]:
    """``root`` and every process below it, from the parent ids in /proc/<pid>/stat."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                stat = handle.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])  # the command name may hold spaces and parentheses
        parents.setdefault(ppid, []).append(int(entry))
    tree, pending = [], [root]
    while pending:
        pid = pending.pop()
        tree.append(pid)
        pending.extend(parents.get(pid, []))
    return tree


class TreeMemory:
    """Samples the memory of a process and its descendants every :data:`SAMPLE_S` seconds, in a thread."""

    method = (f"/proc sampled every {SAMPLE_S:g} s: peak of the summed VmRSS (and of the summed Pss of "
              f"smaps_rollup) of the trainer and its loader processes; trainer_hwm is the trainer's VmHWM")

    def __init__(self, pid: int):
        self.pid = pid
        self.peak_rss = self.peak_pss = self.trainer_hwm = 0
        self.max_processes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "TreeMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def sample(self) -> None:
        """One sample of the tree (also called once more right before the trainer is reaped)."""
        tree = _descendants(self.pid)
        rss = pss = 0
        for pid in tree:
            status = _proc_status(pid)
            rss += status.get("VmRSS", 0)
            pss += _proc_pss(pid) or status.get("VmRSS", 0)
            if pid == self.pid:
                self.trainer_hwm = max(self.trainer_hwm, status.get("VmHWM", 0))
        self.peak_rss, self.peak_pss = max(self.peak_rss, rss), max(self.peak_pss, pss)
        self.max_processes = max(self.max_processes, len(tree))

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(SAMPLE_S)


# --------------------------------------------------------------------------- one training run


def chunks_per_second_for(num_frames: dict[str, int], batches: int, batch_size: int) -> float:
    """The smallest ``chunks_per_second`` giving ``batches`` batches per epoch (as spk.train.dataset counts them)."""
    import numpy as np

    lengths = np.array(list(num_frames.values()), dtype=np.float64) * 0.01

    def count(rate: float) -> int:
        return int(np.maximum(1, np.round(lengths * rate)).sum()) // batch_size

    least = len(lengths) // batch_size
    if batches < least:
        raise SystemExit(f"--batches {batches}: a set of {len(lengths)} utterances gives at least {least} batches "
                         f"of {batch_size} (one chunk per utterance); ask for --batches {least} or more, or a "
                         f"larger --batch-size")
    low, high = 1e-9, 1.0
    while count(high) < batches:
        high *= 2
    for _ in range(60):
        middle = (low + high) / 2
        low, high = (middle, high) if count(middle) < batches else (low, middle)
    return high


def spk_command() -> list[str]:
    """The venv's ``spk`` next to this Python, else ``python -m spk``."""
    script = Path(sys.executable).parent / "spk"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "spk"]


def run_training(config: Path, feature_config: Path, data_dir: Path, exp_dir: Path, overrides: dict,
                 threads: int) -> dict:
    """Train one epoch with ``overrides``; memory, speed and the log's batches/epoch."""
    command = [*spk_command(), "train", "--config", str(config), "--feature-config", str(feature_config),
               "--train-dir", str(data_dir),
               "--exp-dir", str(exp_dir), "--no-resume", "--threads", str(threads)]
    for key, value in overrides.items():
        command += ["--set", f"{key}={json.dumps(value)}"]
    log_path = exp_dir.parent / f"{exp_dir.name}.log"
    exp_dir.parent.mkdir(parents=True, exist_ok=True)
    start = time.time()
    with open(log_path, "w") as log:
        trainer = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        with TreeMemory(trainer.pid) as memory:
            while trainer.poll() is None:
                time.sleep(SAMPLE_S)
    wall = time.time() - start
    text = log_path.read_text()
    if trainer.returncode != 0:
        raise SystemExit(f"spk train failed (exit {trainer.returncode}); its log {log_path} ends:\n{text[-3000:]}\n"
                         f"command: {' '.join(command)}")
    epoch = json.loads((exp_dir / "train_log.jsonl").read_text().splitlines()[0])
    batches = int(re.search(r"(\d+) batches/epoch", text).group(1))
    return {"batches": batches, "batches_per_s": batches / epoch["epoch_s"], "frames_per_s": epoch["frames_per_s"],
            "epoch_s": epoch["epoch_s"], "wall_s": wall, "peak_rss_mib": memory.peak_rss / MIB,
            "peak_pss_mib": memory.peak_pss / MIB, "trainer_hwm_mib": memory.trainer_hwm / MIB,
            "processes": memory.max_processes}


# --------------------------------------------------------------------------- main


def model_config(name: str, batch_size: int, work: Path) -> Path:
    """The experiment YAML: the small LSTM, or a given config file, for one epoch of ``batch_size`` chunks."""
    values = dict(SMALL_MODEL) if name == "small" else yaml.safe_load(Path(name).read_text())
    values.update(epochs=1, batch_size=batch_size)
    values.pop("finetune", None)
    path = work / f"model_{Path(name).stem}.yaml"
    path.write_text(yaml.safe_dump(values, sort_keys=False))
    return path


def fbank_config(dim: int, work: Path) -> Path:
    """conf/fbank.yaml with ``dim`` mel bins: the generated matrices' dimension, and what on-the-fly computes."""
    values = yaml.safe_load((Path(__file__).resolve().parent.parent / "conf" / "fbank.yaml").read_text())
    values["num_mel_bins"] = dim
    path = work / f"fbank_{dim}.yaml"
    path.write_text(yaml.safe_dump(values, sort_keys=False))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hours", type=float, nargs="+", default=[10.0, 100.0], help="training-set sizes")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument("--batches", type=int, default=0,
                        help="batches per run [default: the fewest the largest set allows]")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--work", type=Path, help="where the sets and runs go; generated sets there are reused "
                                                  "[default: a temporary dir, removed afterwards]")
    parser.add_argument("--dim", type=int, default=80, help="feature dimension of the generated matrices")
    parser.add_argument("--model", default="small", help="'small' (LSTM 1x32) or an experiment YAML")
    parser.add_argument("--threads", type=int, default=0, help="spk train --threads (0: its own choice)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="spk_train_memory_") as scratch:
        work = args.work or Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        measure(args, work.resolve())


def measure(args: argparse.Namespace, work: Path) -> None:
    """Generate (or reuse) the sets, run every mode on every size, print the table and the JSON lines."""
    kinds = {MODES[mode][0] for mode in args.modes}
    started = time.time()
    sets = training_sets(work, sorted(args.hours), args.dim, audio="audio" in kinds, features="features" in kinds)
    print(f"training sets ready in {time.time() - started:.0f} s under {work}", flush=True)
    lengths = {key: read_utt2num_frames(path / "utt2num_frames") for key, path in sets.items()}
    batches = args.batches or max(len(frames) // args.batch_size for frames in lengths.values())
    rates = {key: chunks_per_second_for(frames, batches, args.batch_size) for key, frames in lengths.items()}
    config = model_config(args.model, args.batch_size, work)
    feature_config = fbank_config(args.dim, work)
    results = []
    for mode in args.modes:
        kind, overrides = MODES[mode]
        for hours in sorted(args.hours):
            data_dir = sets[(kind, hours)]
            run = run_training(config, feature_config, data_dir, work / "runs" / f"{mode}_{hours:g}h",
                               {**overrides, "chunks_per_second": rates[(kind, hours)]}, args.threads)
            record = {"benchmark": "train_memory", "mode": mode, "hours": hours,
                      "utterances": len(lengths[(kind, hours)]), "batch_size": args.batch_size,
                      **{k: round(v, 3) if isinstance(v, float) else v for k, v in run.items()},
                      "memory_method": TreeMemory.method}
            results.append(record)
            print(json.dumps(record), flush=True)
            expected = 1 + overrides.get("num_workers", 0)
            if run["processes"] < expected:
                print(f"warning: {mode} {hours:g} h: the samples saw {run['processes']} of its {expected} processes "
                      f"(an epoch too short for {SAMPLE_S:g}-s samples): its memory misses the loader processes; "
                      f"ask for more --batches", file=sys.stderr, flush=True)
    print_table(results, sorted(args.hours))


def print_table(results: list[dict], hours: list[float]) -> None:
    """The runs as a table, then per mode the memory growth from the smallest to the largest set (JSON lines)."""
    print(f"\n{'mode':<12} {'hours':>6} {'utts':>7} {'batches':>7} {'peak RSS MiB':>12} {'peak PSS MiB':>12} "
          f"{'trainer HWM':>11} {'procs':>5} {'batches/s':>9} {'epoch s':>8} {'wall s':>7}")
    for r in results:
        print(f"{r['mode']:<12} {r['hours']:>6g} {r['utterances']:>7} {r['batches']:>7} {r['peak_rss_mib']:>12.0f} "
              f"{r['peak_pss_mib']:>12.0f} {r['trainer_hwm_mib']:>11.0f} {r['processes']:>5} {r['batches_per_s']:>9.2f} "
              f"{r['epoch_s']:>8.1f} {r['wall_s']:>7.1f}")
    print(f"memory: {TreeMemory.method}")
    if len(hours) < 2:
        return
    for mode in dict.fromkeys(r["mode"] for r in results):
        small = next(r for r in results if r["mode"] == mode and r["hours"] == hours[0])
        large = next(r for r in results if r["mode"] == mode and r["hours"] == hours[-1])
        print(json.dumps({"benchmark": "train_memory_growth", "mode": mode, "from_hours": hours[0],
                          "to_hours": hours[-1],
                          "rss_growth_percent": round(100 * (large["peak_rss_mib"] / small["peak_rss_mib"] - 1), 1),
                          "pss_growth_percent": round(100 * (large["peak_pss_mib"] / small["peak_pss_mib"] - 1), 1),
                          "speed_ratio": round(large["batches_per_s"] / small["batches_per_s"], 3)}))


if __name__ == "__main__":
    main()
