"""A trained model and everything that comes with it, from an experiment dir or a model package.

:func:`load_trained` is the one way a trained model becomes an object. Stage 4,
identification, the Python API, streaming, packaging and export all load through
it, and this module is the only one that spells the artefact file names:

experiment dir (``exp/<tag>``, written by ``spk train`` and stage 5)::

    config.yaml          the resolved experiment config; its ``features:`` say how
                         input features are computed and normalised
    models/final.pt      {"model": state_dict, ...} of the finished embedder
    speakers.txt         the training speakers, in label order
    global_cmvn.npy      the training set's summed CMVN stats (``cmvn: global``)
    center.npy           the mean embedding subtracted before scoring (optional)
    calibration.json     score -> LLR calibration and thresholds (optional)

model package (``spk export``): the same files, with ``model.pt`` for the weights
and ``spk_package.json``, a manifest holding the sha256 of every file, which is
checked before anything is built.

Weights are read with ``torch.load(weights_only=True)``: a file that holds
anything but tensors and plain values (a pickle that could run code) is refused
with :class:`TrainedModelError`; nothing in it is executed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from spk.calibration import Calibration, load_calibration
from spk.experiment import ConfigError, ExperimentConfig
from spk.features import FeatureConfig

if TYPE_CHECKING:  # torch is imported when a model is loaded, so the file names cost no torch import
    import torch

    from spk.models.embedder import SpeakerEmbedder

logger = logging.getLogger(__name__)

CONFIG = "config.yaml"
FINAL_WEIGHTS = "models/final.pt"
PACKAGE_WEIGHTS = "model.pt"
SPEAKERS = "speakers.txt"
GLOBAL_CMVN = "global_cmvn.npy"
CENTER = "center.npy"
CALIBRATION = "calibration.json"
SYSTEM_CALIBRATION = "calibration_{system}.json"  # of score-normalised systems (stage 5)
MANIFEST = "spk_package.json"
PACKAGE_FORMAT = "spk-package"
PACKAGE_FORMAT_VERSION = 1
PACKAGE_REQUIRED = (CONFIG, PACKAGE_WEIGHTS, SPEAKERS)
# the parts of an experiment config that decide what the embedder computes (beside its weights)
ARCHITECTURE_KEYS = ("encoder", "encoder_conf", "pooling", "pooling_conf", "segment_layers", "embedding_dim")


class TrainedModelError(ValueError):
    """A trained model cannot be loaded: the message names the file and what to do."""


class PackageError(TrainedModelError):
    """A model package cannot be written or read; the message names the file and the fix."""


@dataclass
class TrainedModel:
    """A trained embedder with what it needs to embed and score the way it was trained.

    ``embedder`` is in eval mode on its device. ``center`` is the vector subtracted
    from embeddings before scoring: the one the calibration was fitted with when it
    records one, else ``center.npy``, else None. ``manifest`` is set for packages.
    """

    embedder: SpeakerEmbedder
    config: ExperimentConfig
    feature_config: FeatureConfig
    speakers: list[str]
    source: Path
    global_cmvn: np.ndarray | None = None
    center: np.ndarray | None = None
    calibration: Calibration | None = None
    manifest: dict[str, Any] | None = None

    @property
    def is_package(self) -> bool:
        return self.manifest is not None

    @property
    def device(self) -> "torch.device":
        return next(self.embedder.parameters()).device

    @property
    def embedding_dim(self) -> int:
        return int(self.embedder.embedding_dim)

    def architecture(self) -> dict[str, Any]:
        """The config keys that decide what the embedder computes (those of the last training phase)."""
        trained = self.config.phases()[-1].to_dict()
        architecture = {key: trained.get(key) for key in ARCHITECTURE_KEYS}
        if trained.get("embedding_activation", "none") != "none":  # absent by default: identities stay as they were
            architecture["embedding_activation"] = trained["embedding_activation"]
        return architecture


# --------------------------------------------------------------------------- #
# loading
# --------------------------------------------------------------------------- #

def load_trained(path: str | os.PathLike, device: str = "cpu", *,
                 global_cmvn_optional: bool = False) -> TrainedModel:
    """The trained model of an experiment dir (``exp/<tag>``), a model package dir or a pretrained model's name.

    A name such as ``resemblyzer-ge2e`` that is not an existing path loads its package
    from the cache, imported on first use (:func:`spk.pretrained.resolve_model`).

    A package is recognised by its manifest and checked (every file's sha256)
    before anything is read. Raises :class:`TrainedModelError` (or
    :class:`PackageError`) naming the file and the fix. An experiment trained with
    ``cmvn: global`` needs its ``global_cmvn.npy``, unless ``global_cmvn_optional``
    (for ``spk export --train-data``, which supplies the statistics itself).
    """
    from spk.pretrained import PRETRAINED, PretrainedError, resolve_model

    try:
        path, checked_manifest = resolve_model(path)  # a pretrained model's name: its cached package
    except PretrainedError as error:
        raise TrainedModelError(str(error)) from None
    if not path.exists():
        raise TrainedModelError(f"model {path} does not exist; give a trained experiment dir (exp/<tag>), "
                                f"a model package dir or a pretrained model's name ({', '.join(sorted(PRETRAINED))})")
    if not path.is_dir():
        raise TrainedModelError(f"model {path} is not a directory; give a trained experiment dir (exp/<tag>) "
                                "or a model package dir")
    if (path / MANIFEST).is_file():
        return _load_package(path, device, checked_manifest)
    if (path / CONFIG).is_file():
        return _load_experiment(path, device, global_cmvn_optional)
    raise TrainedModelError(f"{path} is not a model: it has neither {CONFIG} (a trained experiment dir, "
                            f"exp/<tag>) nor {MANIFEST} (a model package)")


def _load_experiment(exp_dir: Path, device: str, global_cmvn_optional: bool) -> TrainedModel:
    for name, fix in ((FINAL_WEIGHTS, "train the model first (stage 3)"),
                      (SPEAKERS, "it is written by training (stage 3); retrain or restore it")):
        if not (exp_dir / name).is_file():
            raise TrainedModelError(f"{exp_dir} is not a trained experiment: {exp_dir / name} is missing; {fix}")
    config = read_experiment_config(exp_dir)
    feature_config = _feature_config(config, exp_dir / CONFIG)
    speakers = _read_speakers(exp_dir / SPEAKERS)
    state = load_weights(exp_dir / FINAL_WEIGHTS)
    try:
        embedder = build_trained_embedder(config, len(speakers), _model_state(state, exp_dir / FINAL_WEIGHTS))
    except (KeyError, RuntimeError, ValueError) as error:
        raise TrainedModelError(f"{exp_dir / FINAL_WEIGHTS} does not fit {exp_dir / CONFIG} ({error}); "
                                "retrain (stage 3), or restore the matching files") from None
    global_cmvn = None
    if feature_config.cmvn == "global" and not (global_cmvn_optional and not (exp_dir / GLOBAL_CMVN).is_file()):
        if not (exp_dir / GLOBAL_CMVN).is_file():
            raise TrainedModelError(f"{exp_dir} was trained with global CMVN but {exp_dir / GLOBAL_CMVN} is "
                                    "missing; training writes it (retrain, or restore the file)")
        global_cmvn = _load_array(exp_dir / GLOBAL_CMVN, (2, feature_config.dim + 1))
    calibration = _load_calibration(exp_dir / CALIBRATION) if (exp_dir / CALIBRATION).is_file() else None
    stored_center = _load_array(exp_dir / CENTER) if (exp_dir / CENTER).is_file() else None
    return _assemble(embedder, config, feature_config, speakers, exp_dir, device, global_cmvn,
                     _choose_center(stored_center, exp_dir / CENTER, calibration), calibration, None)


def _load_package(path: Path, device: str, manifest: dict[str, Any] | None = None) -> TrainedModel:
    """A package; ``manifest``: its manifest when its checksums were verified just before (not again)."""
    manifest = manifest if manifest is not None else verify_package(path)
    files = manifest["files"]
    config = read_experiment_config(path)
    feature_config = _feature_config(config, path / CONFIG)
    speakers = _read_speakers(path / SPEAKERS)
    state = load_weights(path / PACKAGE_WEIGHTS)
    try:
        embedder = build_trained_embedder(config, len(speakers), _model_state(state, path / PACKAGE_WEIGHTS),
                                          has_head=bool(manifest.get("has_head")))
    except (KeyError, RuntimeError, ValueError) as error:
        raise PackageError(f"package {path}: {PACKAGE_WEIGHTS} does not fit {CONFIG} ({error}); "
                           "re-export the package") from None
    global_cmvn = _load_array(path / GLOBAL_CMVN, (2, feature_config.dim + 1)) if GLOBAL_CMVN in files else None
    if feature_config.cmvn == "global" and global_cmvn is None:
        raise PackageError(f"package {path}: the features use cmvn: global but {GLOBAL_CMVN} is missing; "
                           "re-export with --train-data")
    calibration = _load_calibration(path / CALIBRATION) if CALIBRATION in files else None
    center = _load_array(path / CENTER) if CENTER in files else None
    return _assemble(embedder, config, feature_config, speakers, path, device, global_cmvn, center, calibration,
                     manifest)


def _assemble(embedder, config, feature_config, speakers, source, device, global_cmvn, center, calibration,
              manifest) -> TrainedModel:
    if center is not None:
        center = np.asarray(center, dtype=np.float32).ravel()
        if center.size != embedder.embedding_dim:
            raise TrainedModelError(f"{source}: the centre vector has {center.size} values but the embeddings "
                                    f"{embedder.embedding_dim}; restore {CENTER} or refit the calibration")
    embedder.to(resolve_device(device))
    return TrainedModel(embedder, config, feature_config, speakers, source,
                        None if global_cmvn is None else np.asarray(global_cmvn, dtype=np.float64),
                        center, calibration, manifest)


def read_experiment_config(model_dir: str | os.PathLike) -> ExperimentConfig:
    """The resolved experiment config (``config.yaml``) of an experiment or package dir."""
    path = Path(model_dir) / CONFIG
    if not path.is_file():
        raise TrainedModelError(f"{path} does not exist: {model_dir} is not a trained experiment "
                                "(run stage 3) or a model package")
    try:
        return ExperimentConfig.from_yaml(path)
    except (ConfigError, OSError) as error:
        raise TrainedModelError(f"cannot read {path}: {error}") from None


def read_feature_config(model_dir: str | os.PathLike) -> FeatureConfig:
    """The feature config a model was trained with (from its ``config.yaml``), without loading the model."""
    return _feature_config(read_experiment_config(model_dir), Path(model_dir) / CONFIG)


def _feature_config(config: ExperimentConfig, config_path: Path) -> FeatureConfig:
    if not config.features:
        raise TrainedModelError(f"{config_path} has no 'features:' section; it was not written by 'spk train' "
                                "(stage 3). Retrain, or add the feature config the model was trained on")
    try:
        return FeatureConfig.from_dict(config.features, source=f"{config_path} features")
    except ValueError as error:
        raise TrainedModelError(str(error)) from None


def _read_speakers(path: Path) -> list[str]:
    try:
        return path.read_text().split()
    except (OSError, UnicodeDecodeError) as error:
        raise TrainedModelError(f"cannot read the training speakers {path}: {error}") from None


def load_weights(path: str | os.PathLike) -> dict[str, Any]:
    """A checkpoint or weights file, read without executing anything it holds.

    Only tensors and plain Python values (dicts, lists, tuples, strings, numbers)
    are accepted; anything else (a pickled object, which could run code when
    loaded) is refused with an error naming the file.
    """
    import torch

    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
        what = f"it refers to {found.group(1)}" if found else "it holds objects other than tensors and plain values"
        raise TrainedModelError(
            f"refusing to load {path}: {what}, which could run code when loaded. Nothing in it was run; use "
            "weights written by spk, or retrain") from None
    except (OSError, EOFError, RuntimeError, ValueError) as error:
        raise TrainedModelError(f"cannot read {path}: {error}; restore the file or retrain") from None
    if not isinstance(state, dict):
        raise TrainedModelError(f"{path} does not hold a checkpoint (a mapping); restore the file or retrain")
    return state


def _model_state(state: dict[str, Any], path: Path) -> dict[str, torch.Tensor]:
    weights = state.get("model")
    if not isinstance(weights, dict):
        raise TrainedModelError(f"{path} has no model weights ('model'); restore the file or retrain")
    return weights


def _load_array(path: Path, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """A numeric ``.npy`` array (never a pickled object), checked for ``shape`` when given."""
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise TrainedModelError(f"cannot read {path}: {error}; restore the file") from None
    if not np.issubdtype(array.dtype, np.number) or not np.all(np.isfinite(array)):
        raise TrainedModelError(f"{path} does not hold finite numbers; restore the file")
    if shape is not None and array.shape != shape:
        raise TrainedModelError(f"{path} has shape {array.shape}, expected {shape}; restore the file")
    return array


def _load_calibration(path: Path) -> Calibration:
    try:
        return load_calibration(path)
    except (OSError, ValueError, TypeError) as error:
        raise TrainedModelError(str(error)) from None


def _choose_center(stored: np.ndarray | None, stored_path: Path, calibration: Calibration | None
                   ) -> np.ndarray | None:
    """The calibration's centre (its thresholds hold only with it), else the stored one."""
    recorded = (calibration.scoring or {}).get("center") if calibration is not None else None
    if recorded is None:
        return stored
    recorded = np.asarray(recorded, dtype=np.float32).ravel()
    if stored is not None and (stored.size != recorded.size
                               or not np.allclose(stored.astype(np.float32).ravel(), recorded, atol=1e-6)):
        logger.warning("%s differs from the centre the calibration was fitted with; using the calibration's, "
                       "so that its thresholds hold", stored_path)
    return recorded


def resolve_device(name: str) -> torch.device:
    """``cpu``, ``cuda`` / ``cuda:N`` (an error when torch sees no GPU) or ``auto`` (cuda when present)."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(name).startswith("cuda") and not torch.cuda.is_available():
        raise TrainedModelError(f"--device {name} was asked for but torch sees no CUDA device; use --device cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise TrainedModelError(f"--device {name!r} is not a device; use cpu, cuda, cuda:N or auto") from None


def build_trained_embedder(config: ExperimentConfig, num_speakers: int, state_dict: dict, *,
                           has_head: bool | None = None) -> SpeakerEmbedder:
    """The embedder as the last training phase left it, with ``state_dict`` loaded, in eval mode on the CPU.

    The last phase decides the architecture (e.g. no head after triplet fine-tuning);
    ``has_head`` defaults to what its loss needs.
    """
    from spk.losses import LOSSES
    from spk.models import build_embedder

    trained = config.phases()[-1]
    if has_head is None:
        has_head = getattr(LOSSES.get(trained.loss), "input", "logits") == "logits"
    feature_dim = FeatureConfig.from_dict(config.features).dim
    model = build_embedder(trained.to_dict(), feature_dim, num_speakers if has_head else None)
    model.load_state_dict(state_dict)
    return model.eval()


def final_weights_path(exp_dir: str | os.PathLike) -> Path:
    """``exp_dir/models/final.pt``; an error saying to train first when it is missing."""
    final = Path(exp_dir) / FINAL_WEIGHTS
    if not final.is_file():
        raise TrainedModelError(f"{final} does not exist: train the model first (stage 3)")
    return final


# --------------------------------------------------------------------------- #
# package manifests
# --------------------------------------------------------------------------- #

def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """The manifest of the package at ``path``, checked for format and version."""
    import spk

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
    if not isinstance(manifest, dict) or manifest.get("format") != PACKAGE_FORMAT:
        raise PackageError(f"{manifest_path} is not an spk package manifest; re-export the package")
    version = manifest.get("format_version")
    if version != PACKAGE_FORMAT_VERSION:
        raise PackageError(f"{manifest_path} has package format version {version!r}; this spk "
                           f"({spk.__version__}) reads version {PACKAGE_FORMAT_VERSION}. Use a matching spk or "
                           "re-export")
    if not isinstance(manifest.get("files"), dict):
        raise PackageError(f"{manifest_path} lists no files; re-export the package")
    return manifest


def verify_package(path: str | os.PathLike) -> dict[str, Any]:
    """Check every file of the manifest exists with its sha256; returns the manifest."""
    path = Path(path)
    manifest = read_manifest(path)
    for name in PACKAGE_REQUIRED:
        if name not in manifest["files"]:
            raise PackageError(f"package {path}: the manifest does not list {name}; re-export the package")
    for name, entry in sorted(manifest["files"].items()):
        if Path(name).name != name:
            raise PackageError(f"package {path}: the manifest names {name!r}, which is not a file in the package")
        file = path / name
        if not file.is_file():
            raise PackageError(f"package {path}: {name} is missing (it is listed in {MANIFEST}); "
                               "re-export the package")
        if not isinstance(entry, dict) or sha256_file(file) != entry.get("sha256"):
            raise PackageError(f"package {path}: {name} was modified (its sha256 does not match {MANIFEST}); "
                               "re-export the package or restore the file")
    return manifest
