"""Starting training from another model's weights: ``init_from``, ``freeze_layers`` and ``init_lr_scale``.

:func:`load_init_source` reads the model that ``init_from`` names (a package dir, an
experiment dir, or a pretrained name, through :func:`spk.model_dir.load_trained`, so
with ``weights_only`` loading) and refuses one whose architecture or feature config
differs from the training config's, naming every differing key with both values.
:func:`prepare_model` then loads the tensors whose name and shape match, freezes the
leading encoder layers, and :func:`optimizer_groups` gives the optimiser's parameter
groups (initialised tensors at ``lr * init_lr_scale``, fresh ones at the full rate).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from spk.experiment import ConfigError, ExperimentConfig
from spk.features import FeatureConfig
from spk.model_dir import ARCHITECTURE_KEYS, load_trained, load_weights

logger = logging.getLogger(__name__)

# what must equal the source's, beside ARCHITECTURE_KEYS: what the embedding layer does, and how the
# product embeds a recording
EXTRA_ARCHITECTURE_KEYS = ("embedding_activation", "embed_windows")


class InitFromError(ValueError):
    """``init_from`` names a model that cannot be used to start this training."""


@dataclass
class InitSource:
    """Weights to start a training phase from.

    ``speakers`` are the source's training speakers: its classification head is
    taken over only when the new training set has the same speakers (None: always,
    as for a finetune phase, which trains on the first phase's speakers).
    """

    description: str
    weights: dict[str, torch.Tensor]
    speakers: list[str] | None = None

    @classmethod
    def from_weights_file(cls, path: Path) -> "InitSource":
        """The weights of a finished phase (``models/final.pt``)."""
        return cls(str(path), load_weights(path)["model"])


def check_init_options(config: ExperimentConfig) -> None:
    """``freeze_layers`` and ``init_lr_scale`` of the first phase need ``init_from`` (weights to act on)."""
    if not config.init_from and (config.freeze_layers or config.init_lr_scale != 1):
        where = (" (set them under finetune to apply them to the second phase, which starts from the first "
                 "one's weights)") if config.finetune else ""
        raise ConfigError(f"freeze_layers and init_lr_scale act on the weights training starts from, but the "
                          f"config has no init_from{where}; add init_from: <package dir | experiment dir | "
                          f"pretrained name>, or remove them")


def architecture_of(config: ExperimentConfig) -> dict[str, Any]:
    """The keys that must equal the source's, with this config's values (of its last phase)."""
    trained = config.phases()[-1]
    return {key: getattr(trained, key) for key in (*ARCHITECTURE_KEYS, *EXTRA_ARCHITECTURE_KEYS)}


def differences(ours: dict[str, Any], theirs: dict[str, Any], prefix: str = "") -> list[str]:
    """``key: <ours> here, <theirs> in the source`` for every key whose values differ."""
    found = []
    for key in sorted(set(ours) | set(theirs)):
        if _plain(ours.get(key)) != _plain(theirs.get(key)):
            found.append(f"{prefix}{key}: {ours.get(key)!r} here, {theirs.get(key)!r} in the source")
    return found


def _plain(value: Any) -> str:
    """A comparable form: tuples and lists alike, numbers as YAML reads them (1 == 1.0)."""
    def normalise(item):
        if isinstance(item, (list, tuple)):
            return [normalise(v) for v in item]
        if isinstance(item, dict):
            return {str(k): normalise(v) for k, v in item.items()}
        if isinstance(item, (int, float)) and not isinstance(item, bool):
            return float(item)
        return item
    return json.dumps(normalise(value), sort_keys=True)


def load_init_source(config: ExperimentConfig, feature_config: FeatureConfig) -> InitSource:
    """The model ``config.init_from`` names, checked against ``config`` and ``feature_config``.

    Raises :class:`InitFromError` naming each architecture key (``encoder_conf``,
    ``embedding_activation``, ...) and each feature key (``features.num_mel_bins``, ...)
    that differs, with both values, or saying why the model cannot be read.
    """
    name = config.init_from
    try:
        source = load_trained(name)
    except ValueError as error:  # TrainedModelError, PackageError
        raise InitFromError(f"init_from: {error}") from None
    theirs = {key: getattr(source.config.phases()[-1], key) for key in (*ARCHITECTURE_KEYS, "embedding_activation")}
    theirs["embed_windows"] = source.config.embed_windows
    problems = differences(architecture_of(config), theirs)
    problems += differences(feature_config.to_dict(), source.feature_config.to_dict(), prefix="features.")
    if problems:
        raise InitFromError(f"init_from: {name} ({source.source}) does not fit this config; make these equal to "
                            f"the source's (or train from scratch without init_from):\n  " + "\n  ".join(problems))
    weights = {key: value.detach().clone() for key, value in source.embedder.state_dict().items()}
    return InitSource(f"{name} ({source.source})", weights, list(source.speakers))


@dataclass
class InitPlan:
    """Which of the model's tensors came from the source, and which of them are frozen."""

    initialised: set[str]
    frozen: set[str]


def matching_names(model: torch.nn.Module, source: InitSource, speakers: list[str]) -> set[str]:
    """The model's tensors that the source gives, by name and shape (its head only for the same speakers)."""
    own = model.state_dict()
    same_speakers = source.speakers is None or source.speakers == speakers
    return {key for key, value in source.weights.items()
            if key in own and own[key].shape == value.shape and (same_speakers or not key.startswith("head."))}


def frozen_names(model: torch.nn.Module, freeze_layers: int) -> set[str]:
    """The parameters of the encoder's input layer and of its first ``freeze_layers`` RNN layers."""
    if not freeze_layers:
        return set()
    encoder = getattr(model, "encoder", None)
    rnn = getattr(encoder, "rnn", None)
    if rnn is None or not hasattr(rnn, "num_layers"):
        raise ConfigError(f"freeze_layers: {freeze_layers} needs a recurrent encoder (lstm, gru)")
    if freeze_layers > rnn.num_layers:
        raise ConfigError(f"freeze_layers: {freeze_layers}, but the encoder has only {rnn.num_layers} RNN layers")
    names = set()
    for name, _ in model.named_parameters():
        if name.startswith("encoder.input_layer."):
            names.add(name)
        elif name.startswith("encoder.rnn."):
            layer = name.rsplit("_l", 1)[1].split("_")[0]  # weight_ih_l2_reverse -> 2
            if int(layer) < freeze_layers:
                names.add(name)
    return names


def prepare_model(model: torch.nn.Module, source: InitSource | None, config: ExperimentConfig,
                  speakers: list[str], *, load: bool) -> InitPlan:
    """Load the matching tensors of ``source`` into ``model`` (when ``load``; a resumed run
    has them in its checkpoint) and freeze the leading encoder layers; returns what was done.

    The frozen tensors must all come from the source, so frozen layers are never random ones.
    """
    if source is None:
        return InitPlan(set(), set())
    initialised = matching_names(model, source, speakers)
    frozen = frozen_names(model, config.freeze_layers)
    missing = sorted(frozen - initialised)
    if missing:
        raise ConfigError(f"freeze_layers: {config.freeze_layers} would freeze {', '.join(missing)}, which "
                          f"{source.description} does not provide (name or shape differs)")
    if load:
        model.load_state_dict({key: source.weights[key] for key in initialised}, strict=False)
        fresh = sorted(set(model.state_dict()) - initialised)
        logger.info("initialised from %s (%d tensors)%s", source.description, len(initialised),
                    f"; freshly initialised: {', '.join(fresh)}" if fresh else "")
    for name, parameter in model.named_parameters():
        if name in frozen:
            parameter.requires_grad_(False)
    if frozen:
        logger.info("frozen: the encoder's input layer (if any) and its first %d RNN layers (%d tensors)",
                    config.freeze_layers, len(frozen))
    return InitPlan(initialised, frozen)


def optimizer_groups(model: torch.nn.Module, loss_fn: torch.nn.Module, plan: InitPlan,
                     init_lr_scale: float) -> list[dict[str, Any]]:
    """The optimiser's parameter groups: the trainable tensors, those initialised from the source in a
    second group at ``lr * init_lr_scale`` (key ``lr_scale``; the caller sets the rate) when it differs
    from 1. With no frozen tensors and a scale of 1, one group as a plain training has."""
    trainable = [(name, p) for name, p in model.named_parameters() if name not in plan.frozen]
    if init_lr_scale == 1 or not plan.initialised:
        return [{"params": [p for _, p in trainable] + list(loss_fn.parameters())}]
    fresh = [p for name, p in trainable if name not in plan.initialised] + list(loss_fn.parameters())
    initialised = [p for name, p in trainable if name in plan.initialised]
    groups = [{"params": fresh}] if fresh else []
    if initialised:
        groups.append({"params": initialised, "lr_scale": init_lr_scale})
    return groups
