"""GPU check (issue 14 item 4): train and embed on a generated corpus on one device; one JSON line of figures.

What it does, on ``--device cuda`` (default) or ``--device cpu``:

1. **Corpus.** Generates 80-dim feature matrices written with kaldiio into a
   temporary data dir (``feats.scp``, ``cmvn.scp``, ``utt2num_frames``, ...): each
   speaker has its own per-dimension scale and offset, so training has something to
   learn (utterance mean normalisation removes the offset, the scale stays). No audio.
2. **Throughput.** Trains the LSTM config (3-layer LSTM of 512 cells, attentive
   statistics pooling, AAM-softmax) with :func:`spk.train.trainer.train` once with
   ``precision: fp32`` and once with ``precision: bf16``, features streamed from the
   arks (``preload: false``) by ``num_workers`` loader processes: chunks/s over the
   epochs after the first (the first pays cuDNN set-up), peak GPU memory
   (``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``) and GPU
   utilisation sampled every 0.5 s over the whole ``train`` call, set-up and
   checkpoints included (pynvml or ``nvidia-smi``; null when neither can be read).
   Each run must end with a lower epoch loss than it started with.
3. **Embedding.** Embeds 1,000 utterances of 1 to 15 s with
   :func:`spk.inference.embed_store` on the device (after a warm-up), timed between
   ``torch.cuda.synchronize`` calls: utterances/s, and the EER of all pairs as a
   sanity figure.
4. **First losses against the CPU.** The same model config trained with one batch per
   epoch (a data dir of exactly one batch), so ``train_log.jsonl`` holds each batch's
   loss: the first ``check_steps`` losses on the device, in fp32 and in bf16, against
   the same run on the CPU in fp32, from the same initial weights and batches.
   Tolerance, relative to the CPU loss, on every compared step:
   :data:`TOLERANCE` fp32 1 %: cuDNN runs fp32 RNNs with TF32 by default
   (``torch.backends.cudnn.allow_tf32``, a 10-bit mantissa, about 1e-3 relative per
   product), the AAM scale of 30 magnifies cosine errors, and each Adam step carries
   them into the weights; bf16 5 %: an 8-bit mantissa (about 4e-3 per rounding) in
   the same places. A broken device path (labels, masking, gradient scaling, NaN)
   would move the loss by far more.

Prints ONE JSON line on stdout (also written to ``--out``); logs go to stderr. Exit
status 1 when a check fails, 2 on bad usage (``--device cuda`` without a GPU). A run
that raises (say, a kernel missing for bf16) is logged with its traceback and recorded
as its error and a failed check; the other runs still report. The default sizes are
meant to finish in a few minutes on one H200 (estimated; not yet run on one);
``--quick`` shrinks everything
so the CPU run (the test suite's ``--device cpu --quick``) takes seconds. On a CPU
whose oneDNN cannot run bf16 recurrent layers the trainer trains the bf16 run in
fp32 (and says so): the JSON reports the precision that ran.

    bash tools/install.sh && .venv/bin/python benchmarks/gpu_check.py --out gpu_check.json
    .venv/bin/python benchmarks/gpu_check.py --device cpu --quick
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import kaldiio
import numpy as np
import torch

from spk.data import utt2spk_to_spk2utt, write_spk2utt, write_utt2num_frames, write_utt2spk, write_wav_scp
from spk.experiment import ExperimentConfig
from spk.feature_store import FeatureStore
from spk.features import FeatureConfig, cmvn_stats
from spk.inference import embed_store
from spk.log import setup_logging
from spk.metrics import compute_eer
from spk.model_dir import load_trained
from spk.train.loader import chunk_source
from spk.train.trainer import Precision, make_sampler, train

logger = logging.getLogger("spk.benchmarks.gpu_check")

PRECISIONS = ("fp32", "bf16")
TOLERANCE = {"fp32": 0.01, "bf16": 0.05}  # relative to the CPU fp32 loss; see the module docstring
TIME_BUDGET_S = 480  # the issue asks for under 8 minutes on one GPU machine
FEATURES = FeatureConfig(kind="fbank", num_mel_bins=80)


@dataclass(frozen=True)
class Sizes:
    """How big everything is: the corpus, the model, the runs."""

    speakers: int
    utts_per_speaker: int
    utt_frames: tuple[int, int]  # training utterance lengths, frames
    hidden_size: int
    num_layers: int
    embedding_dim: int
    batch_size: int
    chunk_frames: tuple[int, int]
    lr: float
    steps_per_epoch: int  # throughput runs (about: the sampler rounds chunks per utterance)
    epochs: int
    check_speakers: int  # the one-batch data dir of the loss check: 2 utterances of each
    check_steps: int  # losses compared with the CPU run
    check_chunk_frames: int
    embed_utts: int
    embed_frames: tuple[int, int]


FULL = Sizes(speakers=400, utts_per_speaker=12, utt_frames=(200, 600), hidden_size=512, num_layers=3,
             embedding_dim=256, batch_size=128, chunk_frames=(200, 300), lr=0.001, steps_per_epoch=100, epochs=3,
             check_speakers=16, check_steps=4, check_chunk_frames=200, embed_utts=1000, embed_frames=(100, 1500))
QUICK = Sizes(speakers=8, utts_per_speaker=6, utt_frames=(60, 120), hidden_size=32, num_layers=1,
              embedding_dim=16, batch_size=16, chunk_frames=(40, 60), lr=0.01, steps_per_epoch=3, epochs=2,
              check_speakers=4, check_steps=2, check_chunk_frames=40, embed_utts=50, embed_frames=(30, 200))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"),
                        help="where to train and embed (default cuda; the loss reference always runs on the CPU)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny corpus and model (seconds on a CPU): what the test suite runs")
    parser.add_argument("--out", type=Path, help="also write the JSON line to this file")
    parser.add_argument("--num-workers", type=int, default=None,
                        help="loader processes (default: 8, at most the cores less one; 2 with --quick)")
    parser.add_argument("--workdir", type=Path,
                        help="generate the corpus and train here, and keep it (default: a temporary dir, removed)")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device cuda: torch {torch.__version__} sees no CUDA device (built for CUDA "
                     f"{torch.version.cuda}); run on a GPU machine after `bash tools/install.sh`, "
                     f"or use --device cpu --quick")
    if args.num_workers is not None and args.num_workers < 0:
        parser.error(f"--num-workers: a whole number >= 0, got {args.num_workers}")
    return args


# --------------------------------------------------------------------------- #
# the generated corpus
# --------------------------------------------------------------------------- #

def speaker_styles(num_speakers: int, dim: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per speaker a per-dimension scale and offset (utterance CMVN removes the offset, keeps the scale)."""
    rng = np.random.default_rng(seed)
    return [(rng.uniform(0.2, 4.0, size=dim).astype(np.float32), rng.normal(0.0, 3.0, size=dim).astype(np.float32))
            for _ in range(num_speakers)]


def write_corpus(path: Path, lengths: dict[str, tuple[int, int]], styles, seed: int) -> dict[str, Any]:
    """A feature data dir of ``lengths`` (utt -> (speaker index, frames)): feats, cmvn, utt2num_frames, utt2spk,
    spk2utt and a wav.scp of paths that do not exist (nothing reads audio). Returns its size."""
    rng = np.random.default_rng(seed)
    path.mkdir(parents=True)
    utts = sorted(lengths)
    with kaldiio.WriteHelper(f"ark,scp:{path}/feats.ark,{path}/feats.scp") as feats, \
            kaldiio.WriteHelper(f"ark,scp:{path}/cmvn.ark,{path}/cmvn.scp") as cmvn:
        for utt in utts:
            speaker, frames = lengths[utt]
            scale, offset = styles[speaker]
            matrix = rng.standard_normal((frames, FEATURES.dim), dtype=np.float32) * scale + offset
            feats(utt, matrix)
            cmvn(utt, cmvn_stats(matrix))
    utt2spk = {utt: f"spk{lengths[utt][0]:04d}" for utt in utts}
    write_wav_scp(path / "wav.scp", {utt: f"/nonexistent/{utt}.wav" for utt in utts})
    write_utt2spk(path / "utt2spk", utt2spk)
    write_spk2utt(path / "spk2utt", utt2spk_to_spk2utt(utt2spk))
    write_utt2num_frames(path / "utt2num_frames", {utt: lengths[utt][1] for utt in utts})
    return {"utterances": len(utts), "speakers": len(set(utt2spk.values())),
            "frames": sum(frames for _, frames in lengths.values()),
            "ark_mb": round((path / "feats.ark").stat().st_size / 2**20, 1)}


def corpus_lengths(speakers: range, per_speaker: int, frames: tuple[int, int], rng,
                   prefix: str) -> dict[str, tuple[int, int]]:
    """utt -> (speaker index, frames) for ``per_speaker`` utterances of each speaker, lengths uniform in ``frames``."""
    return {f"spk{s:04d}-{prefix}{u:03d}": (s, int(rng.integers(frames[0], frames[1] + 1)))
            for s in speakers for u in range(per_speaker)}


# --------------------------------------------------------------------------- #
# measuring
# --------------------------------------------------------------------------- #

class UtilisationSampler:
    """GPU utilisation (%) read every ``interval`` seconds in a thread, by pynvml or ``nvidia-smi``.

    ``summary()`` is None when neither can be read (no driver tools, a CPU run).
    """

    def __init__(self, device: torch.device, interval: float = 0.5):
        self.interval = interval
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._read = self._reader(device) if device.type == "cuda" else None

    @staticmethod
    def _reader(device: torch.device):
        """A function returning the utilisation of ``device``, or None when it cannot be read."""
        index = device.index if device.index is not None else torch.cuda.current_device()
        uuid = getattr(torch.cuda.get_device_properties(index), "uuid", None)
        # nvidia-smi and NVML number GPUs physically: with CUDA_VISIBLE_DEVICES torch's index differs, the UUID
        # does not; the index is the fallback
        selectors = ([f"GPU-{uuid}"] if uuid is not None else []) + \
            ([str(index)] if "CUDA_VISIBLE_DEVICES" not in os.environ else [])
        try:
            import pynvml
        except ImportError:
            pynvml = None
        if pynvml is not None:
            for selector in selectors:
                try:
                    pynvml.nvmlInit()
                    handle = pynvml.nvmlDeviceGetHandleByIndex(int(selector)) if selector.isdigit() \
                        else pynvml.nvmlDeviceGetHandleByUUID(selector)
                    read = lambda handle=handle: float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)  # noqa: E731
                    read()
                    return read
                except Exception:  # noqa: BLE001 - no driver library, unknown UUID: the next way
                    continue
        smi = shutil.which("nvidia-smi")
        if smi is None:
            return None
        for selector in selectors:
            def read_smi(selector=selector) -> float:
                out = subprocess.run([smi, "-i", selector, "--query-gpu=utilization.gpu",
                                      "--format=csv,noheader,nounits"],
                                     capture_output=True, text=True, timeout=10, check=True).stdout
                return float(out.strip().splitlines()[0])

            try:
                read_smi()
            except (subprocess.SubprocessError, OSError, ValueError, IndexError):
                continue
            return read_smi
        return None

    def __enter__(self) -> "UtilisationSampler":
        if self._read is not None:
            self._thread = threading.Thread(target=self._run, name="gpu-utilisation", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.samples.append(self._read())
            except Exception:  # noqa: BLE001 - a failed read is a missing sample, not a failed check
                pass

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def summary(self) -> dict[str, float] | None:
        """Mean and maximum of the samples (percent), or None when none could be read."""
        if not self.samples:
            return None
        return {"mean": round(float(np.mean(self.samples)), 1), "max": float(np.max(self.samples)),
                "samples": len(self.samples)}


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so that a clock reading covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device: torch.device) -> float | None:
    """The most GPU memory tensors took since :func:`reset_peak_memory` (MiB); None on the CPU."""
    if device.type != "cuda":
        return None
    synchronize(device)
    return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)


def experiment(sizes: Sizes, precision: str, *, epochs: int, batch_size: int, chunk_frames: tuple[int, int],
               chunks_per_second: float, num_workers: int) -> ExperimentConfig:
    """The checked LSTM config: LSTM -> attentive statistics pooling -> embedding -> AAM-softmax head."""
    return ExperimentConfig.from_dict({
        "encoder": "lstm", "encoder_conf": {"hidden_size": sizes.hidden_size, "num_layers": sizes.num_layers},
        "pooling": "attentive_stats", "pooling_conf": {"attention_dim": 128},
        "embedding_dim": sizes.embedding_dim,
        "head": "aam_softmax", "head_conf": {"margin": 0.2, "scale": 30},  # no margin warm-up: a rising margin would raise the loss
        "loss": "softmax", "optimizer": "adam", "optimizer_conf": {"lr": sizes.lr}, "scheduler": "cosine",
        "epochs": epochs, "batch_size": batch_size, "chunk_frames": list(chunk_frames),
        "chunks_per_second": chunks_per_second, "seed": 7,
        "preload": False, "num_workers": num_workers, "precision": precision,
    }, source="benchmarks/gpu_check.py")


def epoch_records(exp_dir: Path) -> list[dict[str, Any]]:
    """The trainer's per-epoch records (``train_log.jsonl``)."""
    return [json.loads(line) for line in (exp_dir / "train_log.jsonl").read_text().splitlines()]


def ran_precision(name: str, device: torch.device) -> str:
    """The precision the trainer trains in for ``name`` (its own :class:`Precision`): bf16 and fp16 fall back
    to fp32 where the CPU cannot run them."""
    return Precision(name, device).name


def throughput_run(sizes: Sizes, precision: str, train_dir: Path, exp_dir: Path, device: torch.device,
                   num_workers: int, chunks_per_second: float, chunks_per_epoch: int) -> dict[str, Any]:
    """Train the throughput config; chunks/s, memory, utilisation and whether the loss fell."""
    config = experiment(sizes, precision, epochs=sizes.epochs, batch_size=sizes.batch_size,
                        chunk_frames=sizes.chunk_frames, chunks_per_second=chunks_per_second,
                        num_workers=num_workers)
    logger.info("throughput run, %s: %d epochs of %d chunks, %d loader processes, streamed from the arks",
                precision, config.epochs, chunks_per_epoch, num_workers)
    reset_peak_memory(device)
    synchronize(device)
    start = time.perf_counter()
    with UtilisationSampler(device) as utilisation:
        train(exp_dir, config, FEATURES, train_dir, device=str(device), resume=False)
    synchronize(device)
    wall = time.perf_counter() - start
    records = epoch_records(exp_dir)
    steady = records[1:] or records  # the first epoch pays cuDNN's set-up and the first worker start
    steady_s = sum(r["epoch_s"] for r in steady)
    losses = [r["train_loss"] for r in records]
    result = {
        "precision_requested": precision, "precision": ran_precision(precision, device),
        "epochs": len(records), "chunks_per_epoch": chunks_per_epoch, "batch_size": config.batch_size,
        "chunks_per_s": round(chunks_per_epoch * len(steady) / steady_s, 1),
        "frames_per_s": round(sum(r["frames_per_s"] * r["epoch_s"] for r in steady) / steady_s),
        "first_epoch_s": round(records[0]["epoch_s"], 2),
        "peak_gpu_memory_mb": peak_memory_mb(device),
        "gpu_utilisation_percent": utilisation.summary(),
        "epoch_losses": [round(v, 4) for v in losses],
        "loss_decreased": all(map(math.isfinite, losses)) and losses[-1] < losses[0],
        "wall_s": round(wall, 1),
    }
    logger.info("throughput run, %s (ran %s): %.1f chunks/s, peak GPU memory %s MiB, utilisation %s, losses %s",
                precision, result["precision"], result["chunks_per_s"], result["peak_gpu_memory_mb"],
                result["gpu_utilisation_percent"], result["epoch_losses"])
    return result


def loss_run(sizes: Sizes, precision: str, check_dir: Path, exp_dir: Path, device: torch.device,
             num_workers: int) -> list[float]:
    """The first ``check_steps`` batch losses: epochs of one batch each, so each epoch's loss is one batch's."""
    config = experiment(sizes, precision, epochs=sizes.check_steps, batch_size=2 * sizes.check_speakers,
                        chunk_frames=(sizes.check_chunk_frames,) * 2, chunks_per_second=1e-6,
                        num_workers=num_workers)
    train(exp_dir, config, FEATURES, check_dir, device=str(device), resume=False)
    losses = [r["train_loss"] for r in epoch_records(exp_dir)]
    logger.info("loss check, %s on %s: %s", precision, device, [round(v, 5) for v in losses])
    return losses


def compare_losses(reference: list[float], losses: list[float], tolerance: float) -> dict[str, Any]:
    """Largest absolute and relative differences of ``losses`` from ``reference``; pass when all are within
    ``tolerance`` (relative) and finite."""
    ref, got = np.array(reference, dtype=np.float64), np.array(losses, dtype=np.float64)
    if ref.shape != got.shape:
        return {"losses": losses, "max_abs_diff": None, "max_rel_diff": None, "tolerance_rel": tolerance,
                "pass": False, "problem": f"{len(losses)} losses against {len(reference)} on the CPU"}
    diff = np.abs(got - ref)
    rel = diff / np.maximum(np.abs(ref), 1e-12)
    finite = bool(np.isfinite(got).all())
    return {"losses": [round(float(v), 6) for v in got],
            "max_abs_diff": float(diff.max()) if finite else None,
            "max_rel_diff": float(rel.max()) if finite else None,
            "tolerance_rel": tolerance, "pass": finite and bool(rel.max() <= tolerance)}


def pair_eer(embeddings: np.ndarray, speakers: np.ndarray) -> float:
    """EER (percent) of cosine scores over all pairs of different utterances."""
    unit = embeddings / (np.linalg.norm(embeddings, axis=1, keepdims=True) + 1e-12)
    rows, cols = np.triu_indices(len(unit), k=1)
    scores = np.einsum("ij,ij->i", unit[rows], unit[cols])
    return 100.0 * compute_eer(scores, (speakers[rows] == speakers[cols]).astype(np.int8))[0]


def embed_run(model_dir: Path, embed_dir: Path, device: torch.device) -> dict[str, Any]:
    """Embed every utterance of ``embed_dir`` with the trained model on ``device``; utterances/s."""
    model = load_trained(model_dir, device=str(device))
    store = FeatureStore(str(embed_dir / "feats.scp"), FEATURES, cmvn_scp=str(embed_dir / "cmvn.scp"),
                         preload=True)  # timed: the model, not the ark reads
    keys = store.keys
    embed_store(model.embedder, store, keys[:16], device=device, show_progress=False)  # warm-up (cuDNN set-up)
    reset_peak_memory(device)
    synchronize(device)
    start = time.perf_counter()
    embeddings = embed_store(model.embedder, store, keys, device=device, show_progress=False)
    synchronize(device)
    seconds = time.perf_counter() - start
    lengths = [store.num_frames(key) for key in keys]
    speakers = np.array([key.split("-")[0] for key in keys])
    result = {"utterances": len(keys), "frames_min": min(lengths), "frames_max": max(lengths),
              "seconds": round(seconds, 3), "utterances_per_s": round(len(keys) / seconds, 1),
              "peak_gpu_memory_mb": peak_memory_mb(device),
              "finite": bool(np.isfinite(embeddings).all()),
              "eer_percent": round(pair_eer(embeddings, speakers), 2)}
    logger.info("embedding: %d utterances (%d-%d frames) in %.2f s: %.1f utterances/s, pair EER %.2f %%",
                len(keys), min(lengths), max(lengths), seconds, result["utterances_per_s"], result["eer_percent"])
    return result


# --------------------------------------------------------------------------- #
# the check
# --------------------------------------------------------------------------- #

def attempt(what: str, function, *args):
    """``function(*args)``, or ``{"error": ...}`` when it raises: one failed run must not hide the others' figures."""
    try:
        return function(*args)
    except Exception as error:  # noqa: BLE001 - reported in the JSON and as a failed check
        logger.exception("%s failed", what)
        return {"error": f"{type(error).__name__}: {error}"}


def device_description(device: torch.device) -> dict[str, Any]:
    info = {"device": str(device), "torch": torch.__version__, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
            "torch_threads": torch.get_num_threads(), "cpu_cores": len(os.sched_getaffinity(0))}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(device_name=props.name, gpu_memory_gb=round(props.total_memory / 2**30, 1),
                    cudnn_allow_tf32=torch.backends.cudnn.allow_tf32,
                    matmul_allow_tf32=torch.backends.cuda.matmul.allow_tf32)
    else:
        info["device_name"] = f"CPU ({info['cpu_cores']} cores)"
    return info


def run_check(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Everything but the printing: returns the JSON record."""
    started = time.perf_counter()
    sizes = QUICK if args.quick else FULL
    device = torch.device(args.device)
    if device.type == "cuda":
        device = torch.device("cuda", torch.cuda.current_device())
    num_workers = args.num_workers if args.num_workers is not None \
        else (2 if args.quick else max(1, min(8, len(os.sched_getaffinity(0)) - 1)))
    record: dict[str, Any] = {"check": "gpu_check", **device_description(device), "quick": args.quick,
                              "num_workers": num_workers, "preload": False, "sizes": asdict(sizes)}
    logger.info("device %s (%s), torch %s, CUDA %s, %d loader processes", device, record["device_name"],
                torch.__version__, torch.version.cuda, num_workers)

    rng = np.random.default_rng(0)
    styles = speaker_styles(sizes.speakers, FEATURES.dim, seed=1)
    train_dir, check_dir, embed_dir = workdir / "data" / "train", workdir / "data" / "check", workdir / "data" / "embed"
    record["corpus"] = write_corpus(
        train_dir, corpus_lengths(range(sizes.speakers), sizes.utts_per_speaker, sizes.utt_frames, rng, "u"),
        styles, seed=2)
    write_corpus(check_dir, corpus_lengths(range(sizes.check_speakers), 2, sizes.utt_frames, rng, "c"), styles, seed=3)
    embed_per_speaker = -(-sizes.embed_utts // sizes.speakers)
    embed_lengths = corpus_lengths(range(sizes.speakers), embed_per_speaker, sizes.embed_frames, rng, "e")
    embed_lengths = dict(sorted(embed_lengths.items())[:sizes.embed_utts])
    write_corpus(embed_dir, embed_lengths, styles, seed=4)
    logger.info("generated %s in %s (%.1f s)", record["corpus"], workdir, time.perf_counter() - started)

    # chunks per second of speech giving about steps_per_epoch batches; the sampler decides the exact count
    chunks_per_second = sizes.steps_per_epoch * sizes.batch_size / (record["corpus"]["frames"] * 0.01)
    probe = experiment(sizes, "fp32", epochs=1, batch_size=sizes.batch_size, chunk_frames=sizes.chunk_frames,
                       chunks_per_second=chunks_per_second, num_workers=0)
    store, _ = chunk_source(train_dir, FEATURES, preload=False, on_the_fly=False)
    utt2label = {key: 0 for key in store.keys}  # labels do not change the number of batches
    chunks_per_epoch = make_sampler(probe, store, utt2label, "logits").num_local_batches() * sizes.batch_size

    # what each asked precision trains in here; one that falls back to another (bf16 on a CPU whose oneDNN
    # cannot run it) would repeat that one's runs exactly, so it is reported as the same run instead
    ran = {precision: ran_precision(precision, device) for precision in PRECISIONS}
    runs = [precision for precision in PRECISIONS if ran[precision] == precision]
    checks: dict[str, bool] = {}

    record["training"] = {}
    for precision in runs:
        result = attempt(f"throughput run, {precision}", throughput_run, sizes, precision, train_dir,
                         workdir / "exp" / f"train_{precision}", device, num_workers, chunks_per_second,
                         chunks_per_epoch)
        record["training"][precision] = result
        checks[f"loss_decreased_{precision}"] = bool(result.get("loss_decreased"))

    trained = [workdir / "exp" / f"train_{p}" for p in runs if "error" not in record["training"][p]]
    record["embed"] = attempt("embedding", embed_run, trained[0], embed_dir, device) if trained \
        else {"error": "no training run finished, so there is no model to embed with"}
    checks["embeddings_finite"] = bool(record["embed"].get("finite"))

    record["loss_check"] = {"reference": "cpu fp32", "steps": sizes.check_steps,
                            "batch_size": 2 * sizes.check_speakers}
    reference = attempt("loss check, reference", loss_run, sizes, "fp32", check_dir,
                        workdir / "exp" / "reference_cpu_fp32", torch.device("cpu"), 0)
    record["loss_check"]["reference_losses"] = [round(v, 6) for v in reference] if isinstance(reference, list) \
        else reference
    for precision in runs:
        losses = attempt(f"loss check, {precision}", loss_run, sizes, precision, check_dir,
                         workdir / "exp" / f"check_{device.type}_{precision}", device, num_workers)
        if isinstance(reference, dict) or isinstance(losses, dict):  # a run failed: its error is the record
            comparison = {"pass": False, **(losses if isinstance(losses, dict) else {"losses": losses})}
        else:
            comparison = compare_losses(reference, losses, TOLERANCE[precision])
        record["loss_check"][precision] = {"precision": precision, **comparison}
        checks[f"first_losses_{precision}"] = comparison["pass"]

    for precision in set(PRECISIONS) - set(runs):
        logger.warning("%s trains in %s on %s: its figures are those of the %s run", precision, ran[precision],
                       device, ran[precision])
        record["loss_check"][precision] = {**record["loss_check"][ran[precision]], "same_run_as": ran[precision]}
        record["training"][precision] = {**record["training"][ran[precision]], "precision_requested": precision,
                                         "same_run_as": ran[precision]}
    record["checks"] = checks
    record["passed"] = all(checks.values())
    record["wall_s"] = round(time.perf_counter() - started, 1)
    record["time_budget_s"] = TIME_BUDGET_S
    return record


def main(argv: list[str] | None = None) -> int:
    """Run the check; print the JSON line; 0 when every check passed, 1 otherwise."""
    args = parse_args(argv)
    setup_logging()
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        if any(args.workdir.iterdir()):
            logger.error("--workdir %s is not empty; give a new or empty folder", args.workdir)
            return 2
        record = run_check(args, args.workdir)
    else:
        with tempfile.TemporaryDirectory(prefix="spk_gpu_check_") as scratch:
            record = run_check(args, Path(scratch))
    line = json.dumps(record, sort_keys=False)
    print(line, flush=True)
    if args.out is not None:
        args.out.write_text(line + "\n")
    failed = [name for name, ok in record["checks"].items() if not ok]
    if failed:
        logger.error("FAILED: %s", ", ".join(failed))
        return 1
    logger.info("all checks passed in %.1f s", record["wall_s"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
