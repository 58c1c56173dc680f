"""A trained model as one self-contained, checksummed directory: the unit a product ships.

Layout (``spk export --model exp/<tag> --out DIR``)::

    spk_package.json   manifest: format version, spk version, creation time, source
                       experiment, sizes (embedding/feature dims, speakers, head),
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

:func:`load_package` checks every checksum before it builds anything, so a
modified or missing file is an error that names it.
"""

from __future__ import annotations

import datetime
import hashlib
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
from spk.calibration import Calibration, load_calibration
from spk.data import swap_into_place
from spk.export import ONNX_OPSET, export_onnx, export_torchscript, verify_exports
from spk.features import FeatureConfig
from spk.experiment import ExperimentConfig
from spk.train.trainer import build_trained_model, resolve_device

logger = logging.getLogger(__name__)

MANIFEST = "spk_package.json"
FORMAT_NAME = "spk-package"
FORMAT_VERSION = 1
REQUIRED_FILES = ("config.yaml", "model.pt", "speakers.txt")


class PackageError(RuntimeError):
    """A package cannot be written or read; the message names the file and the fix."""


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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
    from spk.train.trainer import load_trained_model  # the trainer's imports are heavy

    exp_dir, out_dir = Path(exp_dir), Path(out_dir)
    _check_destination(out_dir, force)
    model, config, speakers = load_trained_model(exp_dir)
    if not config.features:
        raise PackageError(f"{exp_dir}/config.yaml has no 'features:' section; it was not written by "
                           "'spk train' (stage 3). Retrain, or add the feature config the model was trained on")
    feature_config = FeatureConfig.from_dict(config.features, source=f"{exp_dir}/config.yaml features")

    staging = out_dir.parent / f".{out_dir.name}.staging-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    try:
        shutil.copyfile(exp_dir / "config.yaml", staging / "config.yaml")
        shutil.copyfile(exp_dir / "speakers.txt", staging / "speakers.txt")
        torch.save({"model": model.state_dict()}, staging / "model.pt")
        calibration = _copy_calibration(exp_dir, staging)
        _write_global_cmvn(exp_dir, staging, feature_config, train_data)
        _write_center(exp_dir, staging, calibration, center_scp, model.embedding_dim)
        exports = _write_exports(model, staging, onnx)
        manifest = _manifest(exp_dir, staging, model, feature_config, speakers, exports)
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        swap_into_place(staging, out_dir)  # an old package is removed only after the swap
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info("wrote package %s from %s: %s", out_dir, exp_dir, ", ".join(sorted(manifest["files"])))
    return out_dir


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
    source = exp_dir / "calibration.json"
    if not source.exists():
        return None
    calibration = load_calibration(source)  # a broken file is an error now, not in the product
    shutil.copyfile(source, staging / "calibration.json")
    return calibration


def _write_global_cmvn(exp_dir: Path, staging: Path, feature_config: FeatureConfig,
                       train_data: str | os.PathLike | None) -> None:
    if feature_config.cmvn != "global":
        if train_data is not None:
            logger.warning("--train-data ignored: the features use cmvn: %s, not global", feature_config.cmvn)
        return
    if (exp_dir / "global_cmvn.npy").exists():
        stats, source = np.load(exp_dir / "global_cmvn.npy"), exp_dir / "global_cmvn.npy"
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
    np.save(staging / "global_cmvn.npy", stats)


def _write_center(exp_dir: Path, staging: Path, calibration: Calibration | None,
                  center_scp: str | os.PathLike | None, embedding_dim: int) -> None:
    center, source = None, None
    if center_scp is not None:
        from spk.scoring import load_embeddings, mean_embedding
        center, source = mean_embedding(load_embeddings(center_scp)), str(center_scp)
    elif (exp_dir / "center.npy").exists():
        center, source = np.load(exp_dir / "center.npy"), str(exp_dir / "center.npy")
    calibrated_center = (calibration.scoring or {}).get("center") if calibration is not None else None
    if calibrated_center is not None:
        calibrated_center = np.asarray(calibrated_center, dtype=np.float32)
        if center is None:
            center, source = calibrated_center, f"{exp_dir}/calibration.json"
        elif center.shape != calibrated_center.shape or not np.allclose(center, calibrated_center, atol=1e-5):
            raise PackageError(f"the centering mean from {source} differs from the one {exp_dir}/calibration.json "
                               "was fitted with; the calibration is only valid with its own mean. Drop "
                               "--center-scp (or refit the calibration with it)")
    if center is None:
        return
    center = np.asarray(center, dtype=np.float32).ravel()
    if center.size != embedding_dim:
        raise PackageError(f"the centering mean from {source} has dimension {center.size}, "
                           f"but the model's embeddings have {embedding_dim}")
    np.save(staging / "center.npy", center)


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


def _manifest(exp_dir: Path, staging: Path, model, feature_config: FeatureConfig, speakers: list[str],
              exports: dict[str, Any]) -> dict[str, Any]:
    files = {path.name: {"sha256": sha256_file(path), "bytes": path.stat().st_size}
             for path in sorted(staging.iterdir()) if path.is_file()}
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "spk_version": spk.__version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "source_exp": str(exp_dir.resolve()),
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


# --------------------------------------------------------------------------- #
# reading
# --------------------------------------------------------------------------- #

def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """The manifest of the package at ``path``, checked for format and version."""
    path = Path(path)
    manifest_path = path / MANIFEST
    if not path.is_dir():
        raise PackageError(f"model package {path} is not a directory; make one with "
                           "'spk export --model exp/<tag> --out DIR'")
    if not manifest_path.is_file():
        raise PackageError(f"{path} is not an spk model package: {MANIFEST} is missing. Make one with "
                           "'spk export --model exp/<tag> --out DIR'")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise PackageError(f"{manifest_path} is not valid JSON ({error}); re-export the package") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise PackageError(f"{manifest_path} is not an spk package manifest; re-export the package")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise PackageError(f"{manifest_path} has package format version {version!r}; this spk "
                           f"({spk.__version__}) reads version {FORMAT_VERSION}. Use a matching spk or re-export")
    if not isinstance(manifest.get("files"), dict):
        raise PackageError(f"{manifest_path} lists no files; re-export the package")
    return manifest


def verify_package(path: str | os.PathLike) -> dict[str, Any]:
    """Check every file of the manifest exists with its sha256; returns the manifest."""
    path = Path(path)
    manifest = read_manifest(path)
    for name in REQUIRED_FILES:
        if name not in manifest["files"]:
            raise PackageError(f"package {path}: the manifest does not list {name}; re-export the package")
    for name, entry in sorted(manifest["files"].items()):
        if Path(name).name != name:
            raise PackageError(f"package {path}: the manifest names {name!r}, which is not a file in the package")
        file = path / name
        if not file.is_file():
            raise PackageError(f"package {path}: {name} is missing (it is listed in {MANIFEST}); "
                               "re-export the package")
        if sha256_file(file) != entry.get("sha256"):
            raise PackageError(f"package {path}: {name} was modified (its sha256 does not match {MANIFEST}); "
                               "re-export the package or restore the file")
    return manifest


def load_package(path: str | os.PathLike, device: str = "cpu") -> dict[str, Any]:
    """Load a package written by :func:`write_package`, after checking its checksums.

    Returns a dict: ``model`` (:class:`SpeakerEmbedder` in eval mode on ``device``),
    ``config`` (:class:`ExperimentConfig`), ``feature_config`` (:class:`FeatureConfig`),
    ``speakers`` (list), ``calibration`` (:class:`Calibration` or None),
    ``global_cmvn`` (2 x (D+1) stats or None), ``center`` (vector or None), and
    ``manifest`` and ``path``.
    """
    path = Path(path)
    manifest = verify_package(path)
    files = manifest["files"]
    config = ExperimentConfig.from_yaml(path / "config.yaml")
    feature_config = FeatureConfig.from_dict(config.features, source=f"{path}/config.yaml features")
    speakers = (path / "speakers.txt").read_text().split()
    state = torch.load(path / "model.pt", map_location="cpu", weights_only=True)
    try:
        model = build_trained_model(config, len(speakers), state["model"], has_head=bool(manifest.get("has_head")))
    except (KeyError, RuntimeError) as error:
        raise PackageError(f"package {path}: model.pt does not fit config.yaml ({error}); re-export the package") \
            from None
    model.to(resolve_device(device))
    global_cmvn = np.load(path / "global_cmvn.npy") if "global_cmvn.npy" in files else None
    if feature_config.cmvn == "global" and global_cmvn is None:
        raise PackageError(f"package {path}: the features use cmvn: global but global_cmvn.npy is missing; "
                           "re-export with --train-data")
    return {
        "model": model,
        "config": config,
        "feature_config": feature_config,
        "speakers": speakers,
        "calibration": load_calibration(path / "calibration.json") if "calibration.json" in files else None,
        "global_cmvn": global_cmvn,
        "center": np.load(path / "center.npy") if "center.npy" in files else None,
        "manifest": manifest,
        "path": path,
    }
