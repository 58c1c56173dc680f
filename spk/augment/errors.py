"""The error of augmentation: bad options, sources or training audio, named with the fix."""

from __future__ import annotations

from spk.data import DataDirUsageError

__all__ = ["AugmentError"]


class AugmentError(DataDirUsageError):
    """Bad options or sources for augmentation (offline or on the fly); the message names the option,
    config key or file, and what to do."""
