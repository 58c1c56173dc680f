"""Pretrained speaker encoders from installed Python distributions, turned into ordinary spk model packages.

``spk pretrained import resemblyzer-ge2e --out DIR`` (:func:`import_pretrained`)
reads the GE2E speaker encoder that ships inside the ``Resemblyzer`` wheel
(``resemblyzer/pretrained.pt``, Apache-2.0) and writes a model package that
``spk verify/enroll/identify --model DIR`` and :class:`spk.api.SpeakerModel` load
like any other:

- the weights file is found through the installed distribution's metadata
  (``importlib.metadata``); ``resemblyzer`` itself is never imported, and the file
  is read with ``torch.load(weights_only=True)`` (tensors and plain values only);
- the network is expressed with spk's registry parts: ``encoder: lstm`` (3 layers
  of 256), ``pooling: last`` (the last layer's state at the last frame),
  ``embedding_dim: 256`` with ``embedding_activation: relu`` (the linear layer and
  ReLU); the L2 normalisation is what spk's cosine scoring does anyway;
- the front end is ``kind: mel_power`` (40 Slaney mel bands of the power
  spectrum, 25 ms Hann windows every 10 ms at 16 kHz, no log, no CMVN) with
  ``loudness_dbfs: -30`` (raised only) and ``silence_trim: webrtcvad``, which
  reproduce Resemblyzer's ``preprocess_wav`` (see :mod:`spk.mel_power`);
- the manifest records the source: distribution, version, file, its sha256, the
  licence, and the checkpoint entries left out (GE2E's similarity scale and bias,
  used only in training; the optimiser state).

Resemblyzer embeds an utterance as the normalised mean of 1.6 s "partial
utterances" (160 frames every 77, the last one zero-padded when it covers at
least 75 %); the package's ``embed_windows`` say so, and
:class:`spk.api.SpeakerModel` (so ``spk enroll/verify/identify``) embeds that way
unless told to use other windows. :func:`partials_chunking` gives the same
:class:`spk.inference.Chunking`.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spk.model_dir import TrainedModelError, load_weights, sha256_file

logger = logging.getLogger(__name__)


class PretrainedError(ValueError):
    """A pretrained model cannot be found or imported; the message says what to install or fix."""


@dataclass(frozen=True)
class PretrainedSpec:
    """Where a pretrained encoder's weights live, and how its checkpoint maps onto an spk model."""

    name: str
    distribution: str
    file: str
    license: str
    install: str
    description: str
    model: dict[str, Any]
    features: dict[str, Any]
    state_key: str  # the checkpoint entry holding the state dict
    rename: dict[str, str]  # checkpoint name prefix -> spk name prefix
    ignored: tuple[str, ...] = field(default_factory=tuple)  # checkpoint entries not used at inference


RESEMBLYZER_GE2E = PretrainedSpec(
    name="resemblyzer-ge2e",
    distribution="Resemblyzer",
    file="resemblyzer/pretrained.pt",
    license="Apache-2.0",
    install="pip install 'spk[pretrained]' (or: pip install --no-deps resemblyzer webrtcvad-wheels)",
    description="GE2E speaker encoder of Resemblyzer: 3-layer LSTM 256 over 40 mel power bands, "
                "last state -> linear 256 -> ReLU; trained by its authors on LibriSpeech and VoxCeleb 1/2",
    model={"encoder": "lstm", "encoder_conf": {"hidden_size": 256, "num_layers": 3}, "pooling": "last",
           "pooling_conf": {}, "segment_layers": [], "embedding_dim": 256, "embedding_activation": "relu",
           "loss": "ge2e", "head": "linear",
           # Resemblyzer's partial utterances: 1.6 s, 1.3 a second (one every 77 frames), the last one kept
           # (zero-padded) when the audio covers 75 % of it
           "embed_windows": {"frames": 160, "step": 77, "pad": True, "min_coverage": 0.75}},
    features={"kind": "mel_power", "sample_rate": 16000, "frame_length_ms": 25.0, "frame_shift_ms": 10.0,
              "num_mel_bins": 40, "low_freq": 0.0, "high_freq": 0.0, "dither": 0.0, "cmvn": "none",
              "loudness_dbfs": -30.0, "silence_trim": "webrtcvad"},
    state_key="model_state",
    rename={"lstm.": "encoder.rnn.", "linear.": "segment."},
    ignored=("similarity_weight", "similarity_bias"),
)

PRETRAINED = {spec.name: spec for spec in (RESEMBLYZER_GE2E,)}

# Environment variable naming the cache folder of imported pretrained packages.
CACHE_ENV = "SPK_CACHE"


def partials_chunking():
    """The :class:`spk.inference.Chunking` of Resemblyzer's ``embed_utterance`` (padded 1.6 s partials),
    which the package's ``embed_windows`` holds, so that :class:`spk.api.SpeakerModel` uses it by default."""
    from spk.inference import Chunking

    return Chunking(**RESEMBLYZER_GE2E.model["embed_windows"])


def get_spec(name: str) -> PretrainedSpec:
    """The pretrained model called ``name``; an error listing the known names otherwise."""
    if name not in PRETRAINED:
        raise PretrainedError(f"unknown pretrained model {name!r}; known: {', '.join(sorted(PRETRAINED))}")
    return PRETRAINED[name]


def locate_weights(spec: PretrainedSpec) -> tuple[Path, str]:
    """The weights file of ``spec`` in its installed distribution, and the distribution's version.

    Found through the distribution's metadata (its list of installed files), without
    importing the package.
    """
    try:
        dist = importlib.metadata.distribution(spec.distribution)
    except importlib.metadata.PackageNotFoundError:
        raise PretrainedError(f"{spec.name} needs the {spec.distribution} distribution, which is not installed: "
                              f"{spec.install}") from None
    listed = [path for path in (dist.files or []) if str(path).replace(os.sep, "/") == spec.file]
    if not listed:
        raise PretrainedError(f"the installed {spec.distribution} {dist.version} does not list {spec.file}; "
                              f"reinstall it ({spec.install})")
    path = Path(dist.locate_file(listed[0]))
    if not path.is_file():
        raise PretrainedError(f"{path} (of {spec.distribution} {dist.version}) is missing; reinstall it "
                              f"({spec.install})")
    return path, dist.version


def mapped_state(spec: PretrainedSpec, checkpoint: dict[str, Any], path: Path) -> dict[str, Any]:
    """The checkpoint's weights under spk's parameter names (``spec.rename``), without ``spec.ignored``."""
    state = checkpoint.get(spec.state_key)
    if not isinstance(state, dict):
        raise PretrainedError(f"{path} has no {spec.state_key!r} entry; it is not the {spec.name} checkpoint")
    mapped = {}
    for name, tensor in state.items():
        if name in spec.ignored:
            continue
        prefix = next((old for old in spec.rename if name.startswith(old)), None)
        if prefix is None:
            raise PretrainedError(f"{path}: unexpected weight {name!r}; this spk does not know how to map it")
        mapped[spec.rename[prefix] + name[len(prefix):]] = tensor
    return mapped


def build_pretrained(spec: PretrainedSpec, *, silence_trim: str | None = None):
    """``(embedder with the imported weights, ExperimentConfig, source record)`` of ``spec``.

    ``silence_trim`` overrides the front end's (``none`` to skip WebRTC VAD trimming).
    """
    from spk.experiment import ExperimentConfig
    from spk.features import FeatureConfig
    from spk.models import build_embedder

    path, version = locate_weights(spec)
    try:
        checkpoint = load_weights(path)
    except TrainedModelError as error:
        raise PretrainedError(str(error)) from None
    features = dict(spec.features)
    if silence_trim is not None:
        features["silence_trim"] = silence_trim
    feature_config = FeatureConfig.from_dict(features, source=f"{spec.name} features")
    config = ExperimentConfig(**spec.model, features=feature_config.to_dict())
    model = build_embedder(config.to_dict(), feature_config.dim, None)
    try:
        model.load_state_dict(mapped_state(spec, checkpoint, path))
    except RuntimeError as error:
        raise PretrainedError(f"{path} does not fit the {spec.name} architecture: {error}") from None
    source = {"pretrained": spec.name, "distribution": spec.distribution, "version": version, "file": spec.file,
              "sha256": sha256_file(path), "license": spec.license, "description": spec.description,
              "left_out": [*spec.ignored, *(key for key in checkpoint if key != spec.state_key)]}
    return model.eval(), config, source


def calibration_path(name: str) -> Path:
    """Where spk keeps the calibration it ships for the pretrained model ``name`` (it may not exist).

    The file is written by ``benchmarks/pretrained_calibration.py``: ``{"pretrained",
    "weights_sha256", "features", "fitted_on", "held_out", "calibration"}``, the last one
    a :class:`spk.calibration.Calibration` as ``calibration.json`` holds it.
    """
    return Path(__file__).resolve().parent / "pretrained_calibration" / f"{name}.json"


def shipped_calibration(spec: PretrainedSpec, weights_sha256: str, features: dict[str, Any],
                        path: str | os.PathLike | None = None):
    """``(Calibration, record)`` of the calibration file ``path`` (default :func:`calibration_path`) for ``spec``,
    or None when there is none or it was fitted for other weights or another front end (logged).

    ``record`` (what it was fitted on, its held-out error rates, the file's sha256) goes
    into the package's manifest. A ``path`` given may also be a plain ``calibration.json``
    (``spk calibrate`` on one's own trials, scored with this model), shipped as it is.
    """
    from spk.calibration import Calibration, load_calibration

    given = path is not None
    path = Path(path) if given else calibration_path(spec.name)
    if not path.is_file():
        return None
    try:
        shipped = json.loads(path.read_text())
        if given and isinstance(shipped, dict) and "calibration" not in shipped:
            # a plain calibration.json ('spk calibrate' on one's own trials, scored with this model): the
            # user vouches for the weights and front end it was fitted with
            calibration = load_calibration(path)
            return calibration, {"fitted_on": {"description": calibration.dev_trials}, "held_out": None,
                                 "file": path.name, "sha256": sha256_file(path)}
        calibration = Calibration(**shipped["calibration"])
        if not (isinstance(calibration.a, (int, float)) and math.isfinite(calibration.a) and calibration.a > 0
                and isinstance(calibration.b, (int, float)) and math.isfinite(calibration.b)):
            raise ValueError(f"slope a = {calibration.a!r} and offset b = {calibration.b!r} must be finite, a > 0")
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise PretrainedError(f"the calibration file {path} of {spec.name} cannot be read ({error}); "
                              "refit it with benchmarks/pretrained_calibration.py or 'spk calibrate'") from None
    if shipped.get("weights_sha256") != weights_sha256:
        logger.warning("%s was fitted for other %s weights (sha256 %s, installed %s): the package gets no "
                       "calibration", path, spec.name, shipped.get("weights_sha256"), weights_sha256)
        return None
    if shipped.get("features") != features:
        logger.warning("%s was fitted with another front end (%s): the package gets no calibration", path,
                       shipped.get("features"))
        return None
    record = {key: shipped.get(key) for key in ("fitted_on", "held_out")}
    record["file"], record["sha256"] = path.name, sha256_file(path)
    return calibration, record


def import_pretrained(name: str, out_dir: str | os.PathLike, *, force: bool = False, onnx: bool | None = None,
                      silence_trim: str | None = None, calibration: str | os.PathLike | bool | None = None) -> Path:
    """Write the spk model package of the pretrained model ``name`` to ``out_dir``; returns ``out_dir``.

    ``onnx`` None writes the ONNX graph when the ``onnx`` package is installed.
    With ``silence_trim: webrtcvad`` (the default) the ``webrtcvad`` module must be
    importable, as it is needed to use the package. ``calibration``: None ships the
    calibration spk keeps for the model (:func:`calibration_path`) when it was fitted on
    these weights and this front end, a path ships that file, False ships none; it
    becomes the package's ``calibration.json`` and its record the manifest's ``calibration``.
    """
    import importlib.util

    from spk.package import write_embedder_package

    spec = get_spec(name)
    model, config, source = build_pretrained(spec, silence_trim=silence_trim)
    if config.features.get("silence_trim") == "webrtcvad" and importlib.util.find_spec("webrtcvad") is None:
        raise PretrainedError("the package's front end trims silences with WebRTC's VAD, but the webrtcvad module "
                              "is not installed: pip install webrtcvad-wheels (or import with --silence-trim none)")
    if onnx is None:
        onnx = importlib.util.find_spec("onnx") is not None
    origin: dict[str, Any] = {"source": source}
    if calibration is None:  # which of spk's calibration files it was imported with (resolve_model's cache check)
        offered = calibration_path(spec.name)
        origin["spk_calibration_sha256"] = sha256_file(offered) if offered.is_file() else None
    shipped = None
    if calibration is not False:
        shipped = shipped_calibration(spec, source["sha256"], config.features,
                                      None if calibration in (None, True) else calibration)
        if shipped is None and calibration not in (None, True):
            raise PretrainedError(f"the calibration {calibration} does not fit these weights or this front end")
    if shipped is not None:
        origin["calibration"] = shipped[1]
    return write_embedder_package(out_dir, model, config, [], origin=origin, force=force, onnx=onnx,
                                  calibration=None if shipped is None else shipped[0])


def cache_dir() -> Path:
    """Where pretrained packages imported on first use live: ``$SPK_CACHE/pretrained``, else
    ``$XDG_CACHE_HOME/spk/pretrained``, else ``~/.cache/spk/pretrained``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser() / "pretrained"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "spk" / "pretrained"


def resolve_model(name_or_path: str | os.PathLike) -> tuple[Path, dict | None]:
    """The model directory that ``--model name_or_path`` means, and its manifest when already checked.

    An existing path, or a name that is no pretrained model, is returned as it is, with
    no manifest (the loader checks it, or reports a missing one). A pretrained model's
    name (``resemblyzer-ge2e``) gives its package in :func:`cache_dir`, imported there
    with :func:`import_pretrained` on first use, and the manifest of that package, whose
    checksums were just verified (so the loader need not hash its files again). The
    import is staged and renamed into place, so a half-written package is never used; a
    cached package whose checksums fail, or that was imported with another calibration
    than this spk ships, is imported again. Processes that want the same package at once
    import it once (a lock file beside it).
    """
    from spk.model_dir import PackageError, read_manifest

    path = Path(name_or_path)
    if path.exists() or str(name_or_path) not in PRETRAINED:
        return path, None
    name = str(name_or_path)
    target = cache_dir() / name
    manifest = _usable_cache(target, name, log=False)
    if manifest is not None:
        return target, manifest
    target.parent.mkdir(parents=True, exist_ok=True)
    with _cache_lock(target.parent / f".{name}.lock"):  # one import at a time; the others then use it
        manifest = _usable_cache(target, name, log=True)
        if manifest is not None:
            return target, manifest
        logger.info("importing the pretrained model %s into %s", name, target)
        try:
            import_pretrained(name, target, force=True)
        except (PackageError, RuntimeError) as error:  # RuntimeError: spk.export's checks of the exported graphs
            raise PretrainedError(f"cannot import {name} into {target}: {error}") from None
        return target, read_manifest(target)  # written just now, with checksums of what it wrote


def _usable_cache(target: Path, name: str, *, log: bool) -> dict | None:
    """The verified manifest of ``target`` when it holds an intact package of ``name`` imported with the
    calibration this spk ships, else None; an error when it is a folder that is no package (never overwritten)."""
    from spk.model_dir import MANIFEST, PackageError, verify_package

    if (target / MANIFEST).is_file():
        try:
            manifest = verify_package(target)
        except PackageError as error:
            if log:
                logger.warning("the cached %s package is damaged (%s); importing it again", name, error)
            return None
        shipped = calibration_path(name)
        if manifest.get("spk_calibration_sha256") == (sha256_file(shipped) if shipped.is_file() else None):
            return manifest
        if log:
            logger.warning("the cached %s package predates the calibration this spk ships; importing it again", name)
        return None
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise PretrainedError(f"the cache folder {target} exists but holds no spk package; remove it (or set "
                              f"{CACHE_ENV} to another folder) and retry")
    return None


@contextlib.contextmanager
def _cache_lock(path: Path):
    """An exclusive lock on ``path`` (POSIX ``flock``; no lock where ``fcntl`` is missing)."""
    try:
        import fcntl
    except ImportError:  # Windows: imports of one cache folder are not serialised
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
