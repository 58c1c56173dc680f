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

Unknown keys are errors.  Stage 3 resolves the config (defaults filled in, the
feature config and training speakers added) and saves it as
``exp/<tag>/config.yaml``; later stages read only that file.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from spk.configs import dataclass_from_dict, read_yaml_mapping


class ConfigError(ValueError):
    """An experiment config has an unknown key or an invalid value."""


SPEAKER_BALANCE = ("none", "class_weights", "oversample")
# Keys a fine-tuning phase cannot change: the network's shape, and what is shared by both phases.
PHASE_FIXED_KEYS = {"encoder", "encoder_conf", "pooling", "pooling_conf", "segment_layers", "embedding_dim",
                    "features", "finetune", "preload"}


@dataclass
class ExperimentConfig:
    """Model and training options of one experiment; see the module docstring."""

    encoder: str = "lstm"
    encoder_conf: dict[str, Any] = field(default_factory=lambda: {"hidden_size": 256, "num_layers": 2})
    pooling: str = "mean"
    pooling_conf: dict[str, Any] = field(default_factory=dict)
    segment_layers: list[int] = field(default_factory=list)  # x-vector style hidden layers after pooling
    embedding_dim: int = 128
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
    preload: bool = True  # hold all training features in memory
    finetune: dict[str, Any] = field(default_factory=dict)  # second training phase: overrides, see above
    features: dict[str, Any] = field(default_factory=dict)  # filled in by stage 3

    def __post_init__(self) -> None:
        self.chunk_frames = tuple(int(v) for v in self.chunk_frames)  # type: ignore[assignment]
        if len(self.chunk_frames) != 2 or not 0 < self.chunk_frames[0] <= self.chunk_frames[1]:
            raise ConfigError(f"chunk_frames: expected [min, max] with 0 < min <= max, got {self.chunk_frames}")
        for name in ("epochs", "batch_size", "embedding_dim", "speakers_per_batch", "utts_per_speaker",
                     "average_last"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name}: must be positive, got {getattr(self, name)}")
        if self.speaker_balance not in SPEAKER_BALANCE:
            raise ConfigError(f"speaker_balance: unknown {self.speaker_balance!r}; "
                              f"choose one of {', '.join(SPEAKER_BALANCE)}")
        if self.finetune:
            self.phases()  # check the second phase's keys now, not after the first phase trained

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
        return values

    def save(self, path: str | Path) -> None:
        """Write as YAML (atomically)."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))
        tmp.replace(path)


def apply_overrides(values: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """``values`` with each ``KEY=VALUE`` of ``overrides`` set (a copy; the input is not changed).

    VALUE is read as YAML (``epochs=30``, ``chunk_frames=[150,250]``, ``encoder=gru``);
    dotted keys reach into nested options (``loss_conf.margin=0.3``, ``finetune.epochs=6``).
    Unknown keys are reported when the config is built.
    """
    values = copy.deepcopy(values)
    for override in overrides:
        key, sep, text = override.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {override!r}: expected KEY=VALUE, e.g. epochs=30 or loss_conf.margin=0.3")
        try:
            value = yaml.safe_load(text)
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
