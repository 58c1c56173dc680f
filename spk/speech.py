"""Is there speech in this audio? A speech-presence check with Silero VAD, for the product's input path.

The energy VAD of the feature pipeline (:mod:`spk.features`) keeps any loud frame,
so noise, music or a tone pass it and get embedded as if they were a voice (white
noise was accepted as an enrolled speaker). This module asks a neural voice
activity detector instead: Silero VAD (MIT licence), the ONNX model that the
``silero-vad`` wheel ships (``silero_vad/data/silero_vad.onnx``), run with
onnxruntime. Only the ONNX graph is loaded: never the wheel's TorchScript file,
whose loading would run code from a model file.

The model reads 16 kHz audio in steps of 512 samples (32 ms), each with the 64
samples before it as context, and carries a recurrent state from step to step; it
gives one speech probability per step. The audio is run after 0.19 s of silence,
so that the state has settled when the first word starts. A frame is speech when
its probability is at least :data:`SPEECH_PROBABILITY`, and a recording passes the
check when it has at least :func:`required_speech_seconds` of speech frames (0.5 s,
or a quarter of a recording shorter than 2 s: spoken digits). The figures behind
the rule are in ``benchmarks/speech_presence.py``.

The ONNX session is made once per process, on first use, under a lock; onnxruntime
runs one session from several threads, and the recurrent state lives in each call,
so the functions here can be called from a server's worker threads.

Long audio is cut into segments of :data:`SEGMENT_S` seconds that run side by side
as one batch (each from a fresh state), so an hour costs seconds, not minutes.
:func:`speech_seconds` stops as soon as it has found the speech it was asked for:
a recording that starts with speech costs a few milliseconds.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

SAMPLE_RATE = 16000
FRAME = 512  # samples per step at 16 kHz (32 ms)
CONTEXT = 64  # samples of the previous step prepended to each step
FRAME_S = FRAME / SAMPLE_RATE
SPEECH_PROBABILITY = 0.5  # a frame with at least this speech probability is speech
MIN_SPEECH_S = 0.5  # a recording needs this much speech ...
MIN_SPEECH_FRACTION = 0.25  # ... or, when shorter than MIN_SPEECH_S / this (2 s), this fraction of its length
# Silence run before the audio: the model's state starts from zeros and misses the first frames of a clip that
# starts right on a word (a third of FSDD's tightly cut digits lost most of their speech without it)
LEAD_FRAMES = 6  # 0.192 s
SEGMENT_S = 30.0  # long audio runs as a batch of segments of this length, each from a fresh state
_DISTRIBUTION, _RESOURCE = "silero-vad", "silero_vad/data/silero_vad.onnx"
_INSTALL = "pip install silero-vad onnxruntime"

_session = None
_session_lock = threading.Lock()


class SpeechModelError(RuntimeError):
    """The speech detector cannot be loaded (a package or its model file is missing)."""


@dataclass(frozen=True)
class SpeechPresence:
    """What the check found: ``speech_s`` seconds of speech (a lower bound when it stopped early) in
    ``duration_s`` seconds of audio, against ``required_s``."""

    speech_s: float
    duration_s: float
    required_s: float

    @property
    def enough(self) -> bool:
        """Whether the audio holds enough speech."""
        return self.speech_s >= self.required_s


def model_path() -> str:
    """The path of the Silero VAD ONNX model inside the installed ``silero-vad`` distribution (found from its
    metadata, without importing the package, whose import loads torch)."""
    from importlib import metadata

    try:
        path = metadata.distribution(_DISTRIBUTION).locate_file(_RESOURCE)
    except metadata.PackageNotFoundError:
        raise SpeechModelError(f"the speech-presence check needs the silero-vad package, which is not installed: "
                               f"run '{_INSTALL}'") from None
    if not path.is_file():
        raise SpeechModelError(f"the silero-vad package has no {_RESOURCE} (a version without the ONNX model?): "
                               f"run '{_INSTALL} --upgrade'")
    return str(path)


def _get_session():
    """The process's one onnxruntime session of the model, made on first use."""
    global _session
    if _session is None:
        with _session_lock:
            if _session is None:
                try:
                    import onnxruntime
                except ImportError:
                    raise SpeechModelError("the speech-presence check needs onnxruntime, which is not installed: "
                                           f"run '{_INSTALL}'") from None
                options = onnxruntime.SessionOptions()
                # one thread per call: the model is tiny, and a server runs several calls at once
                options.intra_op_num_threads = 1
                options.inter_op_num_threads = 1
                options.log_severity_level = 3
                path = model_path()
                session = onnxruntime.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])
                inputs = {node.name for node in session.get_inputs()}
                if not {"input", "state", "sr"} <= inputs:
                    raise SpeechModelError(f"{path} takes inputs {', '.join(sorted(inputs))}, not input, state and "
                                           "sr (a silero-vad older than 5.1?): run "
                                           "'pip install --upgrade silero-vad'")
                _session = session
    return _session


def _to_16k(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    samples = np.asarray(samples, dtype=np.float32)
    if samples.ndim != 1:
        raise ValueError(f"speech detection takes mono samples, not an array of shape {samples.shape}")
    if sample_rate != SAMPLE_RATE:
        import soxr

        samples = soxr.resample(samples, sample_rate, SAMPLE_RATE, quality="HQ").astype(np.float32)
    return samples


def _layout(num_samples: int) -> tuple[int, int]:
    """(segments, steps per segment) that cover ``num_samples`` samples."""
    steps_per_segment = int(SEGMENT_S * SAMPLE_RATE) // FRAME
    num_steps = max(1, -(-num_samples // FRAME))
    num_segments = -(-num_steps // steps_per_segment)
    return num_segments, min(num_steps, steps_per_segment)


def _step_inputs(samples: np.ndarray, num_segments: int, steps: int, step: int) -> np.ndarray:
    """The model input of step ``step`` of every segment: (segments, CONTEXT + FRAME) samples of the audio
    after LEAD_FRAMES frames of silence, the context zero at a segment's first step (a fresh stream) and the
    samples zero past the end. Sliced, not gathered: this runs once per 32 ms step."""
    lead = LEAD_FRAMES * FRAME
    inputs = np.zeros((num_segments, CONTEXT + FRAME), dtype=np.float32)
    for segment in range(num_segments):
        segment_start = segment * steps * FRAME
        first = segment_start + step * FRAME - CONTEXT  # where inputs[segment, 0] lies, lead silence included
        low, high = max(first, segment_start, lead), min(first + CONTEXT + FRAME, lead + len(samples))
        if high > low:
            inputs[segment, low - first:high - first] = samples[low - lead:high - lead]
    return inputs


def _run(samples: np.ndarray, stop_after_frames: int | None) -> np.ndarray:
    """Speech probabilities of the audio's frames, from a run over segments in lockstep; NaN for the steps
    not run after an early stop (once ``stop_after_frames`` speech frames were found)."""
    session = _get_session()
    num_frames = LEAD_FRAMES + -(-len(samples) // FRAME)
    num_segments, steps = _layout(num_frames * FRAME)
    probabilities = np.full((num_segments, steps), np.nan, dtype=np.float32)
    state = np.zeros((2, num_segments, 128), dtype=np.float32)
    rate = np.array(SAMPLE_RATE, dtype=np.int64)
    found = 0
    for step in range(steps):
        inputs = _step_inputs(samples, num_segments, steps, step)
        output, state = session.run(None, {"input": inputs, "state": state, "sr": rate})
        probabilities[:, step] = output[:, 0]
        if stop_after_frames is not None:
            speech = output[:, 0] >= SPEECH_PROBABILITY
            if step < LEAD_FRAMES:
                speech[0] = False  # the lead silence is not the audio's
            found += int(np.count_nonzero(speech))
            if found >= stop_after_frames:
                break
    return probabilities.reshape(-1)[LEAD_FRAMES:num_frames]


def speech_probabilities(samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """The speech probability of every 32 ms frame (512 samples at 16 kHz) of mono float samples.

    Samples at another ``sample_rate`` are resampled to 16 kHz first (soxr, as spk reads
    audio). The last frame is zero-padded. Raises :class:`SpeechModelError` when
    silero-vad or onnxruntime is not installed.
    """
    return _run(_to_16k(samples, sample_rate), None)


def required_speech_seconds(duration_s: float) -> float:
    """How much speech a recording of ``duration_s`` seconds must hold: :data:`MIN_SPEECH_S`, or
    :data:`MIN_SPEECH_FRACTION` of a recording shorter than ``MIN_SPEECH_S / MIN_SPEECH_FRACTION``
    (2 s); at least one frame."""
    return max(FRAME_S, min(MIN_SPEECH_S, MIN_SPEECH_FRACTION * duration_s))


def speech_presence(samples: np.ndarray, sample_rate: int = SAMPLE_RATE,
                    required_s: float | None = None) -> SpeechPresence:
    """Seconds of speech in mono float ``samples``, counted until ``required_s`` (default:
    :func:`required_speech_seconds` of the duration) is reached: ``speech_s`` is then a lower
    bound, and a recording with speech near its start costs a few milliseconds."""
    samples = _to_16k(samples, sample_rate)
    duration = len(samples) / SAMPLE_RATE
    required = required_speech_seconds(duration) if required_s is None else float(required_s)
    needed_frames = max(1, int(np.ceil(required / FRAME_S - 1e-9)))
    probabilities = _run(samples, needed_frames)
    speech_frames = int(np.count_nonzero(probabilities >= SPEECH_PROBABILITY))  # NaN compares False
    return SpeechPresence(speech_frames * FRAME_S, duration, required)


def speech_seconds(samples: np.ndarray, sample_rate: int = SAMPLE_RATE, stop_at_s: float | None = None) -> float:
    """Seconds of speech (frames with probability >= :data:`SPEECH_PROBABILITY`) in mono float samples;
    with ``stop_at_s``, counting stops once that much is found."""
    samples = _to_16k(samples, sample_rate)
    if stop_at_s is None:
        probabilities = _run(samples, None)
        return float(np.count_nonzero(probabilities >= SPEECH_PROBABILITY) * FRAME_S)
    return speech_presence(samples, SAMPLE_RATE, stop_at_s).speech_s


class SpeechStream:
    """The speech-presence check of audio that arrives in pieces (``spk verify --stream``), in bounded memory.

    :meth:`accept` takes 16 kHz mono float pieces of any size; the model runs frame by
    frame as they come, from the same lead silence as :func:`speech_presence` (so a
    recording under :data:`SEGMENT_S` gets the same figures), and stops running once
    :data:`MIN_SPEECH_S` of speech is found, which is enough for any length.
    :meth:`finish` gives the :class:`SpeechPresence` of everything accepted.
    """

    def __init__(self) -> None:
        _get_session()  # a missing package fails here, before any audio
        self._state = np.zeros((2, 1, 128), dtype=np.float32)
        self._context = np.zeros(CONTEXT, dtype=np.float32)
        self._pending = np.zeros(0, dtype=np.float32)
        self._num_samples = 0
        self._speech_frames = 0
        self._started = False
        self._enough = False

    def accept(self, samples: np.ndarray) -> None:
        """Add the next piece of audio (16 kHz mono float samples)."""
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        self._num_samples += len(samples)
        if self._enough:
            return
        if not self._started:
            self._started = True
            for _ in range(LEAD_FRAMES):
                self._step(np.zeros(FRAME, dtype=np.float32))
        self._pending = np.concatenate([self._pending, samples])
        usable = len(self._pending) // FRAME * FRAME
        for start in range(0, usable, FRAME):
            if self._step(self._pending[start:start + FRAME]) >= SPEECH_PROBABILITY:
                self._speech_frames += 1
                if self._speech_frames * FRAME_S >= MIN_SPEECH_S:
                    self._enough = True
                    break
        self._pending = np.zeros(0, dtype=np.float32) if self._enough else self._pending[usable:].copy()

    def _step(self, frame: np.ndarray) -> float:
        inputs = np.concatenate([self._context, frame])[None, :]
        output, self._state = _get_session().run(None, {"input": inputs, "state": self._state,
                                                        "sr": np.array(SAMPLE_RATE, dtype=np.int64)})
        self._context = frame[-CONTEXT:].copy()
        return float(output[0, 0])

    def finish(self) -> SpeechPresence:
        """What the check found in all the audio accepted (the last part frame zero-padded)."""
        if not self._enough and len(self._pending):
            frame = np.zeros(FRAME, dtype=np.float32)
            frame[:len(self._pending)] = self._pending
            self._pending = np.zeros(0, dtype=np.float32)
            if self._step(frame) >= SPEECH_PROBABILITY:
                self._speech_frames += 1
        duration = self._num_samples / SAMPLE_RATE
        return SpeechPresence(self._speech_frames * FRAME_S, duration, required_speech_seconds(duration))
