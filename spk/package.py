"""A trained model as one self-contained, checksummed directory: the unit a product ships.

Layout (``spk export --model exp/<tag> --out DIR``)::

    spk_package.json   manifest: format version, spk version, creation time, source
                       experiment (``source_exp``; for imported weights, ``source``:
                       distribution, version, file, sha256, licence; see
                       :mod:`spk.pretrained`), sizes (embedding/feature dims, speakers, head),
                       the exported graphs, and the sha256 of every other file
    config.yaml        the resolved experiment config (its ``features:`` say how to
                       compute and normalise the input features)
    model.pt           {"model": state_dict} of the embedder (with its head, if any)
    speakers.txt       the training speakers, in label order
    calibration.json   score -> LLR calibration, when the experiment has one
    global_cmvn.npy    the training set's summed Kaldi CMVN stats, with ``cmvn: global``
    center.npy         the mean embedding subtracted before scoring, when known
    embedder.ts        TorchScript: (feats [B,T,D], lengths [B]) -> embeddings [B,E]
    embedder.onnx      the same graph in ONNX (unless exported with --no-onnx)

:func:`spk.model_dir.load_trained` loads a package as it loads an experiment dir,
after checking every checksum, so a modified or missing file is an error that
names it. The file names and the manifest format are those of :mod:`spk.model_dir`.
"""

from __future__ import annotations

import datetime
import importlib.util
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

import spk
from spk.calibration import Calibration, load_calibration, save_calibration
from spk.data import swap_into_place
from spk.export import ONNX_OPSET, export_onnx, export_torchscript, verify_exports
from spk.experiment import ExperimentConfig
from spk.features import FeatureConfig
from spk.model_dir import (CALIBRATION, CENTER, CONFIG, GLOBAL_CMVN, MANIFEST, PACKAGE_FORMAT, PACKAGE_FORMAT_VERSION,
                         PACKAGE_WEIGHTS, SPEAKERS, PackageError, TrainedModelError, load_trained, sha256_file)

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- #
# writing
# --------------------------------------------------------------------------- #

def write_package(exp_dir: str | os.PathLike, out_dir: str | os.PathLike, *, force: bool = False,
                  onnx: bool = True, train_data: str | os.PathLike | None = None,
                  center_scp: str | os.PathLike | None = None) -> Path:
    """Write the package of the trained experiment ``exp_dir`` to ``out_dir``; returns ``out_dir``.

    ``train_data`` (a data dir with ``cmvn.scp``) supplies the global CMVN stats
    when the features use ``cmvn: global`` and the experiment has no
    ``global_cmvn.npy``. ``center_scp`` (embeddings, e.g. the training set's
    ``xvector.scp``) gives ``center.npy`` as their mean; otherwise it comes from
    ``exp_dir/center.npy`` or from the centering recorded in ``calibration.json``.
    The package is built in a staging directory beside ``out_dir`` and renamed
    into place only when complete; an existing package is replaced only with
    ``force`` (and never a directory that is not a package).
    """
    exp_dir, out_dir = Path(exp_dir), Path(out_dir)
    _check_destination(out_dir, force)
    try:
        trained = load_trained(exp_dir, global_cmvn_optional=True)
    except TrainedModelError as error:
        raise PackageError(str(error)) from None
    if trained.is_package:
        raise PackageError(f"--model {exp_dir} is already a model package; export from its experiment dir")
    model, feature_config, speakers = trained.embedder, trained.feature_config, trained.speakers

    def fill(staging: Path) -> dict[str, Any]:
        shutil.copyfile(exp_dir / CONFIG, staging / CONFIG)
        shutil.copyfile(exp_dir / SPEAKERS, staging / SPEAKERS)
        torch.save({"model": model.state_dict()}, staging / PACKAGE_WEIGHTS)
        calibration = _copy_calibration(exp_dir, staging)
        _write_global_cmvn(exp_dir, staging, feature_config, train_data)
        _write_center(exp_dir, staging, calibration, center_scp, model.embedding_dim)
        exports = _write_exports(model, staging, onnx)
        return _manifest({"source_exp": str(exp_dir.resolve())}, staging, model, feature_config, speakers, exports)

    manifest = _build_package(out_dir, fill)
    logger.info("wrote package %s from %s: %s", out_dir, exp_dir, ", ".join(sorted(manifest["files"])))
    return out_dir


def write_embedder_package(out_dir: str | os.PathLike, model, config: ExperimentConfig, speakers: list[str], *,
                           origin: dict[str, Any], force: bool = False, onnx: bool = True,
                           calibration: Calibration | None = None) -> Path:
    """Write a package for an embedder that comes from no experiment dir (imported weights); returns ``out_dir``.

    ``config`` is saved as ``config.yaml`` (its ``features:`` must be set),
    ``speakers`` as ``speakers.txt`` (empty for a model without a head), and
    ``origin`` goes into the manifest as it is (where the weights came from, their
    licence). ``calibration``, when given, is saved as ``calibration.json`` (so the
    manifest's checksums cover it). Exports, checks and the staging are those of
    :func:`write_package`.
    """
    out_dir = Path(out_dir)
    _check_destination(out_dir, force)
    feature_config = FeatureConfig.from_dict(config.features, source="the package's features")

    def fill(staging: Path) -> dict[str, Any]:
        config.save(staging / CONFIG)
        (staging / SPEAKERS).write_text("".join(f"{speaker}\n" for speaker in speakers))
        torch.save({"model": model.state_dict()}, staging / PACKAGE_WEIGHTS)
        if calibration is not None:
            save_calibration(staging / CALIBRATION, calibration)
        exports = _write_exports(model, staging, onnx)
        return _manifest(origin, staging, model, feature_config, speakers, exports)

    manifest = _build_package(out_dir, fill)
    logger.info("wrote package %s: %s", out_dir, ", ".join(sorted(manifest["files"])))
    return out_dir


def _build_package(out_dir: Path, fill) -> dict[str, Any]:
    """Fill a staging directory beside ``out_dir`` (``fill(staging)`` returns the manifest), write the
    manifest, and swap it into place; the staging directory is removed on any failure."""
    staging = out_dir.parent / f".{out_dir.name}.staging-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    try:
        manifest = fill(staging)
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        swap_into_place(staging, out_dir)  # an old package is removed only after the swap
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest


def _check_destination(out_dir: Path, force: bool) -> None:
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise PackageError(f"--out {out_dir} exists and is not a directory; choose another path")
    if not force:
        raise PackageError(f"--out {out_dir} already exists; pass --force to replace it, or choose another path")
    if any(out_dir.iterdir()) and not (out_dir / MANIFEST).is_file():
        raise PackageError(f"--out {out_dir} is a non-empty directory that is not an spk package "
                           f"(no {MANIFEST}); --force only replaces packages. Choose another path")


def _copy_calibration(exp_dir: Path, staging: Path) -> Calibration | None:
    source = exp_dir / CALIBRATION
    if not source.exists():
        return None
    calibration = load_calibration(source)  # a broken file is an error now, not in the product
    shutil.copyfile(source, staging / CALIBRATION)
    return calibration


def _write_global_cmvn(exp_dir: Path, staging: Path, feature_config: FeatureConfig,
                       train_data: str | os.PathLike | None) -> None:
    if feature_config.cmvn != "global":
        if train_data is not None:
            logger.warning("--train-data ignored: the features use cmvn: %s, not global", feature_config.cmvn)
        return
    if (exp_dir / GLOBAL_CMVN).exists():
        stats, source = np.load(exp_dir / GLOBAL_CMVN), exp_dir / GLOBAL_CMVN
    elif train_data is not None:
        cmvn_scp = Path(train_data) / "cmvn.scp"
        if not cmvn_scp.is_file():
            raise PackageError(f"--train-data {train_data} has no cmvn.scp; compute its features and CMVN "
                               "stats first (stage 1: spk features)")
        from spk.make_features import global_cmvn_stats
        stats, source = global_cmvn_stats(Path(train_data)), cmvn_scp
    else:
        raise PackageError(f"the features use cmvn: global but {exp_dir} has no global_cmvn.npy; pass "
                           "--train-data with the training data dir (its cmvn.scp gives the statistics)")
    stats = np.asarray(stats, dtype=np.float64)
    if stats.shape != (2, feature_config.dim + 1):
        raise PackageError(f"global CMVN stats from {source} have shape {stats.shape}, expected "
                           f"(2, {feature_config.dim + 1}) for {feature_config.dim}-dim features")
    np.save(staging / GLOBAL_CMVN, stats)


def _write_center(exp_dir: Path, staging: Path, calibration: Calibration | None,
                  center_scp: str | os.PathLike | None, embedding_dim: int) -> None:
    center, source = None, None
    if center_scp is not None:
        from spk.scoring import load_embeddings, mean_embedding
        center, source = mean_embedding(load_embeddings(center_scp)), str(center_scp)
    elif (exp_dir / CENTER).exists():
        center, source = np.load(exp_dir / CENTER, allow_pickle=False), str(exp_dir / CENTER)
    calibrated_center = (calibration.scoring or {}).get("center") if calibration is not None else None
    if calibrated_center is not None:
        calibrated_center = np.asarray(calibrated_center, dtype=np.float32)
        if center is None:
            center, source = calibrated_center, str(exp_dir / CALIBRATION)
        elif center.shape != calibrated_center.shape or not np.allclose(center, calibrated_center, atol=1e-5):
            raise PackageError(f"the centering mean from {source} differs from the one {exp_dir / CALIBRATION} "
                               "was fitted with; the calibration is only valid with its own mean. Drop "
                               "--center-scp (or refit the calibration with it)")
    if center is None:
        return
    center = np.asarray(center, dtype=np.float32).ravel()
    if center.size != embedding_dim:
        raise PackageError(f"the centering mean from {source} has dimension {center.size}, "
                           f"but the model's embeddings have {embedding_dim}")
    np.save(staging / CENTER, center)


def _write_exports(model, staging: Path, onnx: bool) -> dict[str, Any]:
    exports: dict[str, Any] = {}
    ts_path = export_torchscript(model, staging / "embedder.ts")
    onnx_path = export_onnx(model, staging / "embedder.onnx") if onnx else None
    verify_onnx = onnx_path
    if onnx_path is not None and importlib.util.find_spec("onnxruntime") is None:
        logger.warning("onnxruntime is not installed: %s is written but not checked against the model "
                       "(pip install 'spk[export]')", onnx_path)
        verify_onnx = None
    diffs = verify_exports(model, ts_path, verify_onnx)
    exports["torchscript"] = {"file": ts_path.name, "max_abs_diff": diffs["torchscript"]}
    if onnx_path is not None:
        exports["onnx"] = {"file": onnx_path.name, "opset": ONNX_OPSET, "max_abs_diff": diffs.get("onnx")}
    logger.info("exported the embedder: %s", ", ".join(
        f"{name} (max abs diff {info['max_abs_diff']:.1e})" if info["max_abs_diff"] is not None
        else f"{name} (unchecked)" for name, info in exports.items()))
    return exports


def _manifest(origin: dict[str, Any], staging: Path, model, feature_config: FeatureConfig, speakers: list[str],
              exports: dict[str, Any]) -> dict[str, Any]:
    files = {path.name: {"sha256": sha256_file(path), "bytes": path.stat().st_size}
             for path in sorted(staging.iterdir()) if path.is_file()}
    return {
        "format": PACKAGE_FORMAT,
        "format_version": PACKAGE_FORMAT_VERSION,
        "spk_version": spk.__version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        **origin,
        "embedding_dim": int(model.embedding_dim),
        "feature_dim": int(feature_config.dim),
        "cmvn": feature_config.cmvn,
        "has_head": model.head is not None,
        "num_speakers": len(speakers),
        "bidirectional": bool(model.encoder.rnn.bidirectional),
        "exports": exports,
        "export_inputs": "feats float32 [batch, frames, feature_dim] normalised as config.yaml's features say; "
                         "lengths int64 [batch], 1 <= lengths <= frames; padded batches are supported",
        "files": files,
    }
