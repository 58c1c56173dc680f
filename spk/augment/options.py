"""The options of ``spk augment``: which kinds, SNR and talker ranges, speed factors (parsed, checked)."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable

from spk.augment.errors import AugmentError

__all__ = ["DEFAULT_BABBLE_TALKERS", "DEFAULT_SNRS", "KINDS", "parse_factors", "parse_kinds", "parse_range",
           "speed_prefix"]

KINDS = ("reverb", "noise", "music", "babble")
DEFAULT_SNRS = {"noise": (0.0, 15.0), "music": (5.0, 15.0), "babble": (13.0, 20.0)}
DEFAULT_BABBLE_TALKERS = (3, 7)


def parse_kinds(text: str | Iterable[str]) -> tuple[str, ...]:
    """``"reverb,noise"`` (commas or spaces) -> ``("reverb", "noise")``; AugmentError naming unknown kinds."""
    words = re.split(r"[,\s]+", text) if isinstance(text, str) else list(text)
    kinds = tuple(dict.fromkeys(word for word in words if word))
    unknown = [kind for kind in kinds if kind not in KINDS]
    if unknown or not kinds:
        raise AugmentError(f"--kinds {','.join(kinds) or repr(text)}: "
                           f"{'unknown ' + ', '.join(map(repr, unknown)) if unknown else 'nothing given'}; "
                           f"choose from {','.join(KINDS)}")
    return kinds


def parse_range(text: str, option: str, *, integer: bool = False, minimum: float | None = None) -> tuple:
    """``"0:15"`` -> ``(0.0, 15.0)``; a single number is a fixed value. AugmentError naming ``option`` when bad."""
    parts = str(text).split(":")
    try:
        if len(parts) not in (1, 2):
            raise ValueError
        values = tuple((int if integer else float)(part) for part in parts)
    except ValueError:
        kind = "whole numbers" if integer else "numbers"
        raise AugmentError(f"{option} {text!r}: give LOW:HIGH or one value ({kind}, e.g. "
                           f"{'3:7' if integer else '0:15'})") from None
    low, high = values[0], values[-1]
    if not all(math.isfinite(value) for value in (low, high)):
        raise AugmentError(f"{option} {text!r}: the values must be finite")
    if low > high:
        raise AugmentError(f"{option} {text!r}: LOW {low} is above HIGH {high}; write it as {high}:{low}")
    if minimum is not None and low < minimum:
        raise AugmentError(f"{option} {text!r}: must be at least {minimum}")
    return low, high


def parse_factors(text: str | Iterable[float]) -> tuple[float, ...]:
    """``"0.9,1.0,1.1"`` -> ``(0.9, 1.0, 1.1)``; AugmentError for a non-positive, repeated or bad factor."""
    words = [w for w in re.split(r"[,\s]+", text) if w] if isinstance(text, str) else list(text)
    try:
        factors = tuple(float(word) for word in words)
    except ValueError:
        raise AugmentError(f"--factors {text!r}: give numbers separated by commas, e.g. 0.9,1.0,1.1") from None
    if not factors:
        raise AugmentError("--factors: give at least one factor, e.g. 0.9,1.0,1.1")
    bad = [f for f in factors if not (math.isfinite(f) and 0.1 <= f <= 10.0)]
    if bad:
        raise AugmentError(f"--factors {text!r}: {bad[0]} is not a speed factor (between 0.1 and 10)")
    prefixes = [speed_prefix(f) for f in factors]
    if len(set(prefixes)) != len(prefixes):
        raise AugmentError(f"--factors {text!r}: a factor is repeated")
    return factors


def speed_prefix(factor: float) -> str:
    """``0.9`` -> ``"sp0.9"`` (``""`` for 1.0: the original ids)."""
    return "" if factor == 1.0 else f"sp{factor:g}"
