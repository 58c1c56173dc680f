"""spk: speaker recognition with recurrent neural networks, as a Kaldi-style recipe toolkit.

The product API is importable from the package itself; it is loaded on first use,
so ``import spk`` (and ``spk --help``) stays light::

    from spk import SpeakerModel, SpeakerDB
"""

__version__ = "0.1.0"

# public name -> module that defines it (imported on first access)
_LAZY = {
    "SpeakerModel": "spk.api",
    "SpkError": "spk.api",
    "SpkInputError": "spk.api",
    "SpeakerDB": "spk.speaker_db",
    "SpeakerDBError": "spk.speaker_db",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'spk' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_LAZY])
