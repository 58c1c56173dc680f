"""The experiment configuration: which model, loss and optimiser, and how to train.

An experiment YAML in ``conf/`` names parts and their options::

    encoder: lstm
    encoder_conf: {hidden_size: 256, num_layers: 2}
    pooling: mean
    embedding_dim: 128
    loss: softmax
    epochs: 12

Two-phase training (e.g. softmax pre-training, then triplet fine-tuning) names the
second phase's training options under ``finetune``; it starts from the first
phase's weights (the classifier head is dropped when the new loss needs none)::

    loss: softmax
    epochs: 8
    finetune: {loss: triplet, loss_conf: {margin: 0.2}, epochs: 4, optimizer_conf: {lr: 0.0002}}

Fine-tuning from any trained model: ``init_from`` names a model package dir, an
experiment dir (``exp/<tag>``) or a pretrained name (``resemblyzer-ge2e``); training
starts from its weights, tensor by tensor where name and shape match (a head for
another number of speakers, or none, is initialised afresh; a head is taken over only
when the source was trained on the same speakers).  The architecture keys (encoder,
pooling, segment layers, embedding size and activation, ``embed_windows``) and the
feature config must equal the source's: each one that differs is an error naming
both values, raised before any training work.  ``freeze_layers: N`` keeps the
encoder's input layer and its first N RNN layers as the source has them;
``init_lr_scale`` multiplies the learning rate of every other initialised tensor
(the fresh ones, such as a new head, train at the full rate)::

    init_from: resemblyzer-ge2e
    freeze_layers: 1
    init_lr_scale: 0.1

Both apply to every phase that starts from weights (the ``finetune`` phase starts
from the first phase's; set them under ``finetune`` to change them there).  A resumed
run continues from its checkpoint and does not read the weights of ``init_from`` again.

On-the-fly data augmentation (noise, music, babble, reverberation, SpecAugment)
is configured under ``augment``; see :class:`AugmentConfig`::

    augment:
      prob: 0.6
      noise: {data: data/musan_noise, snr: [0, 15]}
      reverb: {data: data/rirs}
      spec_augment: {prob: 0.5}

Unknown keys, values of the wrong type (``epochs: 12.5``, ``preload: "no"``) and keys
set twice are errors that name the file and the key, raised when the config is read
(see :mod:`spk.configs`).  Stage 3 resolves the config (defaults filled in, the
feature config and training speakers added) and saves it as
``exp/<tag>/config.yaml``; later stages read only that file.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from spk.configs import check_types, dataclass_from_dict, is_number, is_whole_number, load_yaml, read_yaml_mapping


class ConfigError(ValueError):
    """An experiment config has an unknown key or an invalid value."""


SPEAKER_BALANCE = ("none", "class_weights", "oversample")
# Keys a fine-tuning phase cannot change: the network's shape, and what is shared by both phases.
PHASE_FIXED_KEYS = {"encoder", "encoder_conf", "pooling", "pooling_conf", "segment_layers", "embedding_dim",
                    "embedding_activation",
                    "features", "finetune", "preload", "init_from", "on_the_fly_features", "num_workers"}
# Keys left out of the resolved config while at their default, so that the configs (and the checkpoints'
# identities) of experiments written before they existed stay what they were.
OMITTED_AT_DEFAULT = {"init_from": "", "freeze_layers": 0, "init_lr_scale": 1.0, "num_workers": 0,
                      "on_the_fly_features": False, "precision": "fp32"}
# How the training data is loaded, not what is trained on: a run may resume with other values.
LOADER_KEYS = ("preload", "num_workers")
PRECISIONS = ("fp32", "bf16", "fp16")


# the options of the parts a config names; their names are checked when the part is built
PART_OPTION_KEYS = ("encoder_conf", "pooling_conf", "head_conf", "loss_conf", "optimizer_conf", "scheduler_conf")


def _check_part_options(key: str, options: dict[str, Any]) -> None:
    """Refuse a number that YAML read as text: PyYAML reads ``1e-3`` (no dot) as the string "1e-3"."""
    for name, value in options.items():
        if isinstance(value, str):
            try:
                float(value)
            except ValueError:
                continue
            raise ConfigError(f"{key}.{name}: {value!r} is a string, not a number (YAML reads exponents "
                              f"without a dot, such as 1e-3, as text); write it as {float(value)!r}")


EMBED_WINDOW_KEYS = ("frames", "step", "pad", "min_coverage")


def _check_embed_windows(windows: dict[str, Any]) -> None:
    """``embed_windows`` is empty, or whole ``frames`` and ``step`` with optional ``pad`` and ``min_coverage``."""
    if not windows:
        return
    unknown = sorted(set(windows) - set(EMBED_WINDOW_KEYS))
    if unknown:
        raise ConfigError(f"embed_windows: unknown key(s) {', '.join(map(str, unknown))}; "
                          f"known: {', '.join(EMBED_WINDOW_KEYS)}")
    for name in ("frames", "step"):
        if not is_whole_number(windows.get(name)) or windows[name] < 1:
            raise ConfigError(f"embed_windows.{name}: a positive whole number of frames is needed, "
                              f"got {windows.get(name)!r}")
    if windows["step"] > windows["frames"]:
        raise ConfigError(f"embed_windows.step ({windows['step']}) cannot exceed frames ({windows['frames']})")
    if not isinstance(windows.get("pad", False), bool):
        raise ConfigError(f"embed_windows.pad: true or false, got {windows['pad']!r}")
    coverage = windows.get("min_coverage", 0.0)
    if not is_number(coverage) or not 0 <= coverage <= 1:
        raise ConfigError(f"embed_windows.min_coverage: a number from 0 to 1, got {coverage!r}")


@dataclass
class ExperimentConfig:
    """Model and training options of one experiment; see the module docstring."""

    encoder: str = "lstm"
    encoder_conf: dict[str, Any] = field(default_factory=lambda: {"hidden_size": 256, "num_layers": 2})
    pooling: str = "mean"
    pooling_conf: dict[str, Any] = field(default_factory=dict)
    segment_layers: list[int] = field(default_factory=list)  # x-vector style hidden layers after pooling
    embedding_dim: int = 128
    embedding_activation: str = "none"  # none | relu (after the embedding layer, as GE2E's encoder)
    head: str = "linear"
    head_conf: dict[str, Any] = field(default_factory=dict)
    loss: str = "softmax"
    loss_conf: dict[str, Any] = field(default_factory=dict)
    optimizer: str = "adam"
    optimizer_conf: dict[str, Any] = field(default_factory=lambda: {"lr": 0.001})
    scheduler: str = "cosine"  # none | exponential | cosine
    scheduler_conf: dict[str, Any] = field(default_factory=dict)
    warmup_epochs: float = 0.0
    epochs: int = 12
    batch_size: int = 64
    speakers_per_batch: int = 16  # P of P x K batches (embedding losses: triplet, contrastive, ge2e)
    utts_per_speaker: int = 4  # K of P x K batches
    chunk_frames: tuple[int, int] = (200, 300)
    chunks_per_second: float = 0.0  # 0: about one chunk per chunk-length of speech, per epoch
    grad_clip: float = 5.0
    seed: int = 0
    average_last: int = 1  # final model = average of the last N epoch checkpoints
    early_stopping_patience: int = 0  # stop after N epochs without a better validation EER (0 = never)
    speaker_balance: str = "none"  # none | class_weights | oversample: against speakers with little speech
    # data loading (see spk.train.loader): hold the training features in memory (auto: when they fit in
    # PRELOAD_MEMORY_SHARE of the available memory), loader worker processes (0: a thread of the trainer),
    # and features computed from the audio of each chunk instead of read from feats.scp
    preload: bool | str = "auto"
    num_workers: int = 0
    on_the_fly_features: bool = False
    precision: str = "fp32"  # fp32 | bf16 | fp16: autocast for the forward pass (fp16 with a gradient scaler)
    finetune: dict[str, Any] = field(default_factory=dict)  # second training phase: overrides, see above
    features: dict[str, Any] = field(default_factory=dict)  # filled in by stage 3
    augment: dict[str, Any] = field(default_factory=dict)  # on-the-fly augmentation, see AugmentConfig
    # how the product (spk.api) embeds a recording by default: {} the whole of it; or windows
    # {frames, step, pad, min_coverage} as spk.inference.Chunking (an imported GE2E model: 1.6 s partials)
    embed_windows: dict[str, Any] = field(default_factory=dict)
    # fine-tuning (see the module docstring): the weights to start from, the leading encoder layers
    # kept fixed, and the learning-rate factor of the other initialised tensors
    init_from: str = ""  # a package dir, an experiment dir or a pretrained name; "" starts from scratch
    freeze_layers: int = 0  # the input layer and the first N RNN layers of the encoder stay as initialised
    init_lr_scale: float = 1.0  # learning rate of initialised, not frozen tensors = lr * this

    def __post_init__(self) -> None:
        self.chunk_frames = tuple(int(v) for v in self.chunk_frames)  # type: ignore[assignment]
        if len(self.chunk_frames) != 2 or not 0 < self.chunk_frames[0] <= self.chunk_frames[1]:
            raise ConfigError(f"chunk_frames: expected [min, max] with 0 < min <= max, got {self.chunk_frames}")
        for name in ("epochs", "batch_size", "embedding_dim", "speakers_per_batch", "utts_per_speaker",
                     "average_last"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name}: must be positive, got {getattr(self, name)}")
        if self.embedding_activation not in ("none", "relu"):
            raise ConfigError(f"embedding_activation: unknown {self.embedding_activation!r}; choose none or relu")
        if self.speaker_balance not in SPEAKER_BALANCE:
            raise ConfigError(f"speaker_balance: unknown {self.speaker_balance!r}; "
                              f"choose one of {', '.join(SPEAKER_BALANCE)}")
        for name in PART_OPTION_KEYS:
            _check_part_options(name, getattr(self, name))
        _check_embed_windows(self.embed_windows)
        if isinstance(self.preload, str) and self.preload != "auto":
            raise ConfigError(f"preload: true, false or auto, got {self.preload!r}")
        if self.num_workers < 0:
            raise ConfigError(f"num_workers: a whole number >= 0 of loader processes, got {self.num_workers}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision: unknown {self.precision!r}; choose one of {', '.join(PRECISIONS)}")
        if self.freeze_layers < 0:
            raise ConfigError(f"freeze_layers: a whole number >= 0 of encoder RNN layers, got {self.freeze_layers}")
        if not self.init_lr_scale > 0:
            raise ConfigError(f"init_lr_scale: a number above 0 (1 trains initialised tensors at the full rate), "
                              f"got {self.init_lr_scale}")
        self.augmentation()  # check the augmentation options now
        if self.finetune:
            self.phases()  # check the second phase's keys now, not after the first phase trained

    def augmentation(self) -> "AugmentConfig | None":
        """The typed ``augment`` options, or None when the config asks for no augmentation."""
        if not self.augment:
            return None
        return AugmentConfig.from_dict(self.augment)

    def phases(self) -> list["ExperimentConfig"]:
        """The training phases: this config alone, or its first phase and the ``finetune`` phase."""
        if not self.finetune:
            return [self]
        if not isinstance(self.finetune, dict):
            raise ConfigError(f"finetune: expected a mapping of training options, got {self.finetune!r}")
        unknown = sorted(set(self.finetune) - {f.name for f in fields(self)})
        if unknown:
            raise ConfigError(f"finetune: unknown key(s) {', '.join(unknown)}")
        fixed = sorted(set(self.finetune) & PHASE_FIXED_KEYS)
        if fixed:
            raise ConfigError(f"finetune: {', '.join(fixed)} cannot change between phases (the model "
                              f"architecture is shared); allowed: training options such as loss, "
                              f"loss_conf, head, optimizer_conf, epochs")
        check_types(type(self), self.finetune, ConfigError, prefix="finetune.")
        first = replace(self, finetune={})
        try:
            second = replace(first, **self.finetune)
        except (ConfigError, TypeError) as err:
            raise ConfigError(f"finetune: {err}") from None
        return [first, second]

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "experiment config") -> "ExperimentConfig":
        """Build from a mapping; unknown keys are an error naming them and ``source``."""
        return dataclass_from_dict(cls, values, source, ConfigError)

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> "ExperimentConfig":
        """Read an experiment YAML file, then apply ``KEY=VALUE`` overrides (see :func:`apply_overrides`)."""
        values = apply_overrides(read_yaml_mapping(path, ConfigError), overrides)
        source = str(path) + (f" with {' '.join(overrides)}" if overrides else "")
        return cls.from_dict(values, source=source)

    def to_dict(self) -> dict[str, Any]:
        """Plain mapping for YAML."""
        values = asdict(self)
        values["chunk_frames"] = list(self.chunk_frames)
        for key, default in OMITTED_AT_DEFAULT.items():
            if values[key] == default:
                del values[key]
        return values

    def identity(self) -> dict[str, Any]:
        """:meth:`to_dict` without the :data:`LOADER_KEYS`: what a checkpoint must match to be resumed."""
        return {key: value for key, value in self.to_dict().items() if key not in LOADER_KEYS}

    def save(self, path: str | Path) -> None:
        """Write as YAML (atomically)."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))
        tmp.replace(path)


ADDITIVE_KINDS = ("noise", "music", "babble")
AUGMENT_KINDS = (*ADDITIVE_KINDS, "reverb", "reverb_noise")


@dataclass(frozen=True)
class AdditiveSource:
    """Noise, music or babble: recordings of the data dir ``data`` added at an SNR drawn from ``snr`` (dB).

    Babble is ``speakers`` ([low, high]) talkers of a speech set, each at its own
    SNR drawn from ``snr``, never the chunk's own speaker (:mod:`spk.augment.babble`);
    noise and music add one recording. ``weight`` is the kind's
    share among the augmentation kinds.
    """

    data: str
    snr: tuple[float, float]
    weight: float = 1.0
    speakers: tuple[int, int] | None = None


@dataclass(frozen=True)
class ReverbSource:
    """Reverberation with the room impulse responses of the data dir ``data`` (wav.scp of RIR files)."""

    data: str
    weight: float = 1.0


@dataclass(frozen=True)
class SpecAugmentConfig:
    """SpecAugment of the batch: each chunk masked with probability ``prob`` (see :func:`spk.augment.spec_augment`)."""

    prob: float = 0.5
    time_masks: int = 1
    max_time_width: int = 10
    freq_masks: int = 1
    max_freq_width: int = 8


@dataclass(frozen=True)
class AugmentConfig:
    """On-the-fly augmentation of training chunks, the way WeSpeaker does it.

    A chunk is augmented with probability ``prob``; an augmented chunk gets one
    kind, drawn in proportion to the kinds' ``weight`` (default 1 each) among
    those configured:

    - ``noise``, ``music``: ``{data: DIR, snr: [low, high], weight: 1}``: one
      recording of DIR added at an SNR drawn uniformly from the range;
    - ``babble``: ``{data: DIR, snr: [low, high], speakers: [3, 7]}``: 3 to 7 talkers of
      a speech set (e.g. MUSAN speech), each at its own SNR, never the chunk's speaker;
    - ``reverb``: ``{data: DIR, weight: 1}``: convolution with a room impulse response of DIR;
    - ``reverb_noise``: ``{weight: 1}``: reverberation, then ``noise`` (needs both configured).

    DIR is a Kaldi data dir with ``wav.scp`` (optionally ``segments`` and
    ``utt2dur``); a relative path is relative to the working directory of
    ``spk train`` (the recipe folder). ``spec_augment`` (``{prob, time_masks,
    max_time_width, freq_masks, max_freq_width}``) then masks the features of
    each chunk of a batch with its own probability.
    """

    prob: float = 0.6
    noise: AdditiveSource | None = None
    music: AdditiveSource | None = None
    babble: AdditiveSource | None = None
    reverb: ReverbSource | None = None
    reverb_noise: float | None = None  # weight of reverberation + noise
    spec_augment: SpecAugmentConfig | None = None

    @classmethod
    def from_dict(cls, values: Any, key: str = "augment") -> "AugmentConfig":
        """Build from the ``augment`` mapping; every error names the key (e.g. ``augment.noise.snr: ...``)."""
        values = _options(values, key, ("prob", *AUGMENT_KINDS, "spec_augment"))
        parts: dict[str, Any] = {}
        for kind in ADDITIVE_KINDS:
            if values.get(kind) is not None:
                parts[kind] = _additive(values[kind], f"{key}.{kind}", babble=kind == "babble")
        if values.get("reverb") is not None:
            options = _options(values["reverb"], f"{key}.reverb", ("data", "weight"), required=("data",))
            parts["reverb"] = ReverbSource(data=_data_dir(options["data"], f"{key}.reverb.data"),
                                           weight=_number(options.get("weight", 1.0), f"{key}.reverb.weight", 0.0))
        if values.get("reverb_noise") is not None:
            options = _options(values["reverb_noise"], f"{key}.reverb_noise", ("weight",))
            parts["reverb_noise"] = _number(options.get("weight", 1.0), f"{key}.reverb_noise.weight", 0.0)
        if values.get("spec_augment") is not None:
            options = _options(values["spec_augment"], f"{key}.spec_augment",
                               tuple(f.name for f in fields(SpecAugmentConfig)))
            prob = _number(options.pop("prob", SpecAugmentConfig.prob), f"{key}.spec_augment.prob", 0.0, 1.0)
            counts = {name: _count(value, f"{key}.spec_augment.{name}") for name, value in options.items()}
            parts["spec_augment"] = SpecAugmentConfig(prob=prob, **counts)
        has_kinds = any(kind in parts for kind in AUGMENT_KINDS)
        default_prob = cls.prob if has_kinds else 0.0  # e.g. SpecAugment alone
        config = cls(prob=_number(values.get("prob", default_prob), f"{key}.prob", 0.0, 1.0), **parts)
        if config.reverb_noise is not None and (config.reverb is None or config.noise is None):
            raise ConfigError(f"{key}.reverb_noise: needs both reverb (the RIRs) and noise (the noise "
                              f"recordings and SNRs) configured")
        if config.prob > 0 and not any(weight > 0 for _, weight in config.kinds()):
            raise ConfigError(f"{key}: prob is {config.prob} but no augmentation kind with a weight above 0 is "
                              f"configured; add one of {', '.join(AUGMENT_KINDS)}, or set prob: 0")
        return config

    def kinds(self) -> list[tuple[str, float]]:
        """The configured waveform augmentation kinds with their weights, in a fixed order."""
        sources = {"noise": self.noise, "music": self.music, "babble": self.babble, "reverb": self.reverb}
        kinds = [(name, source.weight) for name, source in sources.items() if source is not None]
        if self.reverb_noise is not None:
            kinds.append(("reverb_noise", self.reverb_noise))
        return kinds


def _options(value: Any, key: str, known: tuple[str, ...], required: tuple[str, ...] = ()) -> dict[str, Any]:
    """``value`` as a mapping of known options; unknown or missing keys are errors naming ``key``."""
    if not isinstance(value, dict):
        raise ConfigError(f"{key}: expected a mapping of options, got {value!r}")
    unknown = sorted(set(value) - set(known))
    if unknown:
        raise ConfigError(f"{key}: unknown key(s) {', '.join(map(str, unknown))}; known keys: {', '.join(known)}")
    missing = [name for name in required if name not in value]
    if missing:
        raise ConfigError(f"{key}: missing {', '.join(missing)}")
    return dict(value)


def _additive(value: Any, key: str, *, babble: bool) -> AdditiveSource:
    known = ("data", "snr", "weight", "speakers") if babble else ("data", "snr", "weight")
    options = _options(value, key, known, required=("data", "snr"))
    return AdditiveSource(
        data=_data_dir(options["data"], f"{key}.data"),
        snr=_range(options["snr"], f"{key}.snr", float),
        weight=_number(options.get("weight", 1.0), f"{key}.weight", 0.0),
        speakers=_range(options.get("speakers", [3, 7]), f"{key}.speakers", int, minimum=1) if babble else None)


def _range(value: Any, key: str, kind: type, *, minimum: float | None = None) -> tuple:
    """``[low, high]`` with ``low <= high`` (and ``low >= minimum``) as a tuple of ``kind``."""
    if not isinstance(value, (list, tuple)) or len(value) != 2 or not all(is_number(v) for v in value):
        raise ConfigError(f"{key}: expected [low, high], got {value!r}")
    if kind is int and not all(is_whole_number(v) for v in value):
        raise ConfigError(f"{key}: expected whole numbers, got {list(value)}")
    low, high = (kind(v) for v in value)
    if low > high or (minimum is not None and low < minimum):
        bound = f" and low >= {minimum}" if minimum is not None else ""
        raise ConfigError(f"{key}: expected [low, high] with low <= high{bound}, got {list(value)}")
    return low, high


def _number(value: Any, key: str, low: float, high: float | None = None) -> float:
    if not is_number(value) or value < low or (high is not None and value > high):
        bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise ConfigError(f"{key}: expected a number {bound}, got {value!r}")
    return float(value)


def _count(value: Any, key: str) -> int:
    if not is_whole_number(value) or value < 0:
        raise ConfigError(f"{key}: expected a whole number >= 0, got {value!r}")
    return value


def _data_dir(value: Any, key: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{key}: expected the path of a data dir with wav.scp, got {value!r}")
    return value


def apply_overrides(values: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """``values`` with each ``KEY=VALUE`` of ``overrides`` set (a copy; the input is not changed).

    VALUE is read as YAML (``epochs=30``, ``chunk_frames=[150,250]``, ``encoder=gru``);
    dotted keys reach into nested options (``loss_conf.margin=0.3``, ``finetune.epochs=6``).
    Unknown keys and values of the wrong type are reported when the config is built.
    """
    values = copy.deepcopy(values)
    for override in overrides:
        key, sep, text = override.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {override!r}: expected KEY=VALUE, e.g. epochs=30 or loss_conf.margin=0.3")
        try:
            value = load_yaml(text)
        except yaml.YAMLError as error:
            raise ConfigError(f"override {override!r}: the value is not valid YAML ({error})") from None
        *parents, last = key.split(".")
        target = values
        for parent in parents:
            if not isinstance(target.setdefault(parent, {}), dict):
                raise ConfigError(f"override {override!r}: {parent} is not a mapping of options")
            target = target[parent]
        target[last] = value
    return values
