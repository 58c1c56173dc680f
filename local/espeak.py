"""A small ctypes binding to eSpeak NG, as shipped by the PyPI wheel ``espeakng-loader``.

eSpeak NG keeps one global engine per process, so a process initialises it once
(:func:`EspeakSynth`) and then synthesises utterance after utterance.  Speakers are
eSpeak *voice variants*: small text files with pitch, formant, breathiness and
roughness settings.  Variants are looked up under ``<data>/voices/!v/``; because the
wheel's data folder must not be written to, :func:`make_data_mirror` builds a private
mirror of it (symlinks) where our own variant files can live.
"""

from __future__ import annotations

import ctypes
import os
import threading
from pathlib import Path

import numpy as np

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_ESPEAK_CHARS_UTF8 = 1
_PARAM_RATE = 1  # words per minute
_PARAM_PITCH = 3  # 0-100, scales the voice's pitch base
_PARAM_RANGE = 4  # 0-100, scales the voice's pitch range

_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


class EspeakError(RuntimeError):
    """eSpeak NG could not be loaded or refused a voice or a text."""


def _wheel_paths() -> tuple[str, str]:
    try:
        import espeakng_loader
    except ImportError as err:  # pragma: no cover - it is a declared dependency
        raise EspeakError(
            "the mini corpus needs eSpeak NG: pip install espeakng-loader"
        ) from err
    return espeakng_loader.get_library_path(), espeakng_loader.get_data_path()


def make_data_mirror(mirror_dir: Path) -> Path:
    """Build ``mirror_dir`` as a symlink copy of the wheel's eSpeak data with a writable ``voices/!v``."""
    _, data_path = _wheel_paths()
    source = Path(data_path)
    mirror_dir.mkdir(parents=True, exist_ok=True)
    for entry in source.iterdir():
        if entry.name != "voices":
            _symlink(entry, mirror_dir / entry.name)
    voices = mirror_dir / "voices"
    voices.mkdir(exist_ok=True)
    for entry in (source / "voices").iterdir():
        if entry.name != "!v":
            _symlink(entry, voices / entry.name)
    (voices / "!v").mkdir(exist_ok=True)
    return mirror_dir


def _symlink(target: Path, link: Path) -> None:
    if not link.exists():
        os.symlink(target, link)


def variant_dir(mirror_dir: Path) -> Path:
    """The folder of a data mirror where voice-variant files go."""
    return mirror_dir / "voices" / "!v"


class EspeakSynth:
    """The process-wide eSpeak NG engine, returning float32 audio at :attr:`sample_rate`."""

    _lock = threading.Lock()

    def __init__(self, data_dir: Path | None = None):
        lib_path, data_path = _wheel_paths()
        self._lib = ctypes.CDLL(lib_path)
        path = str(data_dir if data_dir is not None else data_path).encode()
        rate = self._lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, path, 0)
        if rate <= 0:
            raise EspeakError(f"espeak_Initialize failed with data at {path.decode()}")
        self.sample_rate = int(rate)
        self._chunks: list[np.ndarray] = []
        self._callback = _CALLBACK(self._collect)  # keep a reference: C holds it
        self._lib.espeak_SetSynthCallback(self._callback)

    def _collect(self, wav, num_samples, _events) -> int:
        if num_samples > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(num_samples,)).copy())
        return 0

    def set_voice(self, name: str) -> None:
        """Select a voice such as ``en-us`` or ``en-us+spk0001`` (language + variant)."""
        if self._lib.espeak_SetVoiceByName(name.encode()) != 0:
            raise EspeakError(f"eSpeak NG does not know the voice {name!r}")

    def synthesize(self, text: str, *, words_per_minute: int, pitch: int = 50, pitch_range: int = 50,
                   seed: int | None = None) -> np.ndarray:
        """Speak ``text``; returns float32 samples in [-1, 1] at :attr:`sample_rate`.

        eSpeak NG draws the noise of breathy voices from its own random generator,
        seeded from the clock; ``seed`` reseeds it first (``espeak_ng_SetRandSeed``),
        so that the audio is the same on every run.
        """
        with self._lock:
            if seed is not None:
                self._lib.espeak_ng_SetRandSeed(ctypes.c_long(seed))
            self._lib.espeak_SetParameter(_PARAM_RATE, int(words_per_minute), 0)
            self._lib.espeak_SetParameter(_PARAM_PITCH, int(pitch), 0)
            self._lib.espeak_SetParameter(_PARAM_RANGE, int(pitch_range), 0)
            self._chunks = []
            data = text.encode("utf-8") + b"\0"
            status = self._lib.espeak_Synth(data, len(data), 0, 0, 0, _ESPEAK_CHARS_UTF8, None, None)
            self._lib.espeak_Synchronize()
            if status != 0:
                raise EspeakError(f"espeak_Synth failed (status {status}) on {text!r}")
            if not self._chunks:
                raise EspeakError(f"eSpeak NG produced no audio for {text!r}")
            return (np.concatenate(self._chunks).astype(np.float32) / 32768.0)
