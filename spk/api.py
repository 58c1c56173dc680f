"""The Python API of a trained model: load it once, then embed, score, verify, identify and enroll.

    from spk.api import SpeakerModel
    from spk.speaker_db import SpeakerDB

    model = SpeakerModel.load("recipes/mini/exp/lstm_softmax")
    with model.open_db("voices.db", create=True) as db:
        model.enroll(db, "alice", ["alice1.wav", "alice2.wav"])
        result = model.verify("sample.wav", db, "alice")      # result.accept, .score, .threshold, .llr
        ranking = model.identify("sample.wav", db=db)           # result.speaker, result.candidates

A model is an experiment dir (``exp/<tag>``) or a model package dir, loaded by
:func:`spk.model_dir.load_trained`.

Embeddings are made exactly as stage 4 (``spk embed``) makes them, by the one
inference chain (:mod:`spk.inference`): the audio file is read as float32 mono
at the model's rate (``spk.audio``; a path is always a file, never a shell
command), features are computed with the experiment's feature config and
normalised as training normalised them, and the embedder runs on the whole
utterance, or on sliding windows whose length-normalised embeddings are averaged
(as ``spk embed --chunk-seconds`` does). :meth:`SpeakerModel.embed` returns the
result scaled to unit length.

Scores are cosine similarities, after subtracting the model's centre vector when
it has one (the mean the calibration's dev scores were centred on, or
``center.npy``). A calibration maps scores to log-likelihood ratios and holds
decision thresholds (``spk.calibration``).
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import asdict, dataclass, field
from hashlib import sha256
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence, Union

import numpy as np
from tqdm import tqdm

from spk.audio import AudioError, read_audio_file
from spk.calibration import Calibration
from spk.features import FeatureConfigError, frame_log_energy, vad_threshold
from spk.inference import (COSINE_SCALE, Chunking, embed_features, head_posteriors, score_posteriors, unit_length,
                           waveform_features)
from spk.scoring import centred_cosine
from spk.speaker_db import Enrollment, ModelIdentity, SpeakerDB, check_speaker_name
from spk.model_dir import CONFIG, MANIFEST, TrainedModel, TrainedModelError, load_trained

logger = logging.getLogger(__name__)

__all__ = ["COSINE_SCALE", "CalibrationError", "IdentifyResult", "ModelLoadError", "SpeakerModel", "SpkError",
           "SpkInputError", "VerifyResult"]

MIN_AUDIO_S = 0.5  # shorter audio is refused
MIN_SPEECH_S = 0.5  # less speech than this after VAD is refused

Audio = Union[str, os.PathLike, np.ndarray]


class SpkError(ValueError):
    """A problem with what the user gave: audio, model, calibration or options; the message says what to do."""


class SpkInputError(SpkError):
    """Audio that cannot be used: unreadable, too short, silent, or with too little speech."""


class ModelLoadError(SpkError):
    """The model directory is missing, incomplete or unreadable."""


class CalibrationError(SpkError):
    """The model has no (usable) calibration for LLRs or operating-point thresholds."""


@dataclass(frozen=True)
class VerifyResult:
    """The decision on one claim: accept when ``score >= threshold``."""

    speaker: str | None
    accept: bool
    score: float
    threshold: float
    operating_point: str | None  # None when the threshold was given explicitly
    llr: float | None  # calibrated log-likelihood ratio; None without calibration

    def to_dict(self) -> dict[str, Any]:
        """Plain mapping (for JSON), with ``decision`` ``accept``/``reject``."""
        return {"decision": "accept" if self.accept else "reject", **asdict(self)}


@dataclass(frozen=True)
class Candidate:
    """One speaker in an identification ranking."""

    speaker: str
    probability: float
    score: float | None = None  # cosine to the enrolled speaker model (speaker-database identification)
    llr: float | None = None  # its calibrated LLR, when the model has a calibration


@dataclass(frozen=True)
class IdentifyResult:
    """The best ``top_k`` speakers, most probable first; ``speaker`` is the answer (``"unknown"`` when refused)."""

    speaker: str
    unknown: bool
    backend: str  # "classifier_head" (training speakers) or "speaker_db" (enrolled speakers)
    candidates: list[Candidate] = field(default_factory=list)
    unknown_threshold: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain mapping, for JSON."""
        return asdict(self)


class SpeakerModel:
    """A trained speaker embedder with its feature pipeline, scoring and optional calibration.

    Build it with :meth:`load`, once, and call it for every request: nothing is
    reloaded per call, and torch settings (threads) are left to the caller.

    ``speech_check`` (on by default; an attribute too) refuses audio in which Silero
    VAD finds too little speech (:mod:`spk.speech`): noise, music, tones or silence,
    which the embedder would otherwise turn into a voiceprint like any other.
    """

    def __init__(self, trained: TrainedModel, *, speech_check: bool = True):
        self.trained = trained
        self.speech_check = speech_check
        self.model = trained.embedder
        self.feature_config = trained.feature_config
        self.speakers = list(trained.speakers)
        self.source = str(trained.source)
        self.global_cmvn = trained.global_cmvn
        self.device = trained.device
        calibration = trained.calibration
        self._calibration_problem = _calibration_problem(calibration, trained.source) if calibration else None
        self.calibration: Calibration | None = None if self._calibration_problem else calibration
        # the calibration's centre, when it records one, is the one its thresholds hold with
        self.center = trained.center
        # the model's own windows (config embed_windows, e.g. GE2E's partials), else the whole recording
        windows = trained.config.embed_windows
        self.default_chunking: Chunking | None = Chunking(**windows) if windows else None
        self._identity: ModelIdentity | None = None

    # --- loading ----------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | os.PathLike, device: str = "cpu", *, speech_check: bool = True) -> SpeakerModel:
        """Load an experiment dir (``exp/<tag>``) or a model package dir (with ``spk_package.json``).

        ``speech_check=False`` turns off the speech-presence check of every input.
        Raises :class:`ModelLoadError` naming the path and what is missing or wrong.
        """
        path = Path(path)
        try:
            return cls(load_trained(path, device), speech_check=speech_check)
        except TrainedModelError as error:
            if (path / MANIFEST).is_file():
                raise ModelLoadError(f"cannot load the model package {path}: {error}") from None
            if (path / CONFIG).is_file():
                raise ModelLoadError(f"cannot load the model of {path}: {error}") from None
            raise ModelLoadError(str(error)) from None

    # --- properties ---------------------------------------------------------------------

    @property
    def embedding_dim(self) -> int:
        """Size of the embeddings."""
        return int(self.model.embedding_dim)

    @property
    def has_head(self) -> bool:
        """Whether the model has a classifier head over its training speakers."""
        return getattr(self.model, "head", None) is not None

    @property
    def identity(self) -> ModelIdentity:
        """What makes this model's embeddings: a SHA-256 over its architecture, its embedder weights
        (the classifier head left out), its feature config and its global CMVN statistics.

        An experiment and a package exported from it have the same identity, so a
        speaker database made with one can be used with the other.
        """
        if self._identity is None:
            digest = sha256()
            digest.update(json.dumps(self.trained.architecture(), sort_keys=True, default=str).encode())
            digest.update(json.dumps(self.feature_config.to_dict(), sort_keys=True).encode())
            if self.trained.config.embed_windows:  # only when set: other models' identities stay as they were
                digest.update(json.dumps(self.trained.config.embed_windows, sort_keys=True).encode())
            for name, tensor in sorted(self.model.state_dict().items()):
                if name.startswith("head."):
                    continue
                values = tensor.detach().cpu().contiguous()
                digest.update(f"{name}:{values.dtype}:{tuple(values.shape)}".encode())
                digest.update(values.numpy().tobytes())
            if self.global_cmvn is not None:
                digest.update(np.ascontiguousarray(self.global_cmvn, dtype="<f8").tobytes())
            self._identity = ModelIdentity(digest.hexdigest(), self.embedding_dim, self.source)
        return self._identity

    def open_db(self, path: str | os.PathLike, *, create: bool = False) -> SpeakerDB:
        """Open a speaker database made with this model (``create``: make it when missing)."""
        return SpeakerDB.open(path, create=create, model=self.identity)

    # --- embedding ----------------------------------------------------------------------

    def embed(self, audio: Audio, *, sample_rate: int | None = None, windowed: bool = False,
              window_s: float = 3.0, hop_s: float = 1.5, vad: bool = False) -> np.ndarray:
        """The L2-normalised embedding (float32) of an audio file or waveform.

        ``audio`` is the path of an audio file (any format soundfile reads; never run as a
        command, whatever its name), or a
        float waveform in [-1, 1] at ``sample_rate`` (default: the model's rate, 16 kHz),
        shape ``(samples,)`` or ``(samples, channels)`` (channels are averaged).
        ``windowed`` embeds windows of ``window_s`` seconds every ``hop_s`` seconds and
        averages their length-normalised embeddings (audio no longer than one window
        is one window); otherwise the whole recording is embedded at once, or, for a
        model whose config has ``embed_windows`` (an imported GE2E encoder: 1.6 s
        partial utterances), its own windows. ``vad`` drops non-speech frames by
        energy VAD first.
        Raises :class:`SpkInputError` for unreadable audio, audio under 0.5 s, silence,
        too little speech by the speech-presence check (when ``speech_check`` is on), or
        under 0.5 s of speech after VAD.
        """
        vector, _ = self._embed(audio, sample_rate, windowed, window_s, hop_s, vad)
        return unit_length(vector)

    def _embed(self, audio: Audio, sample_rate: int | None, windowed: bool, window_s: float, hop_s: float,
               vad: bool) -> tuple[np.ndarray, float]:
        """(embedding before unit scaling, audio duration in seconds): what stage 4 stores."""
        waveform, name = self._waveform(audio, sample_rate)
        feats = self._features(waveform, name, vad)
        chunking = _windows(window_s, hop_s, self.feature_config.frame_shift_ms) if windowed else self.default_chunking
        vector = embed_features(self.model, feats, chunking=chunking, device=self.device)
        return vector, len(waveform) / self.feature_config.sample_rate

    def _waveform(self, audio: Audio, sample_rate: int | None) -> tuple[np.ndarray, str]:
        """Float32 mono samples at the model's rate, checked long enough, and a name for messages."""
        rate = self.feature_config.sample_rate
        if isinstance(audio, np.ndarray):
            name = "the waveform"
            samples = _check_waveform(audio)
            if sample_rate is not None and sample_rate != rate:
                import soxr

                samples = soxr.resample(samples, sample_rate, rate, quality="HQ").astype(np.float32)
        elif isinstance(audio, (str, os.PathLike)):
            name = os.fspath(audio)
            if sample_rate is not None:
                raise SpkError("sample_rate is only for waveforms; audio files carry their own rate")
            if not os.path.isfile(name):
                problem = "is not a file" if os.path.exists(name) else "does not exist"
                raise SpkInputError(f"audio file {name} {problem}; check the path")
            try:
                samples = read_audio_file(name, target_rate=rate)
            except AudioError as error:
                raise SpkInputError(f"cannot read audio {name}: {error}") from None
        else:
            raise SpkError(f"audio must be a file path or a numpy waveform, not {type(audio).__name__}")
        if not np.all(np.isfinite(samples)):
            raise SpkInputError(f"{name} holds samples that are not numbers (NaN or infinite): the audio is "
                                "damaged; record or export it again")
        duration = len(samples) / rate
        if duration < MIN_AUDIO_S:
            raise SpkInputError(f"{name} is too short: {duration:.2f} s of audio, and at least {MIN_AUDIO_S:g} s "
                                "is needed (a few seconds of speech work best)")
        if not self._has_loud_frame(samples):
            raise SpkInputError(f"{name} is silence only: no frame is louder than the energy-VAD threshold; "
                                "check the recording (microphone, gain, channel)")
        if self.speech_check:
            from spk.speech import speech_presence

            _check_speech(_speech_model(lambda: speech_presence(samples, rate)), name)
        return samples, name

    def _has_loud_frame(self, samples: np.ndarray) -> bool:
        """Whether any frame's log energy exceeds the energy-VAD threshold of the feature config."""
        log_energy = frame_log_energy(samples, self.feature_config)
        return bool(np.any(log_energy > vad_threshold(log_energy, self.feature_config)))

    def _features(self, waveform: np.ndarray, name: str, vad: bool) -> np.ndarray:
        """Normalised features, as the training feature store gives them (VAD first when asked)."""
        feats = waveform_features(waveform, self.feature_config, self.global_cmvn, vad=vad)
        if self.feature_config.vad or vad:
            speech_s = len(feats) * self.feature_config.frame_shift_ms / 1000
            if speech_s < MIN_SPEECH_S:
                raise SpkInputError(f"{name} has too little speech: {speech_s:.2f} s after voice activity "
                                    f"detection, and at least {MIN_SPEECH_S:g} s is needed")
        if len(feats) == 0:
            raise SpkInputError(f"{name} gives no feature frames; it is too short")
        return feats

    # --- scoring ------------------------------------------------------------------------

    def score(self, emb_a: np.ndarray, emb_b: np.ndarray) -> float:
        """Cosine similarity of two embeddings (after subtracting the model's centre vector, if any)."""
        return float(self._scores(np.asarray(emb_a)[None, :], np.asarray(emb_b))[0])

    def _scores(self, references: np.ndarray, test: np.ndarray) -> np.ndarray:
        """Cosine of each row of ``references`` with ``test`` (both centred first)."""
        references = np.asarray(references, dtype=np.float64)
        test = np.asarray(test, dtype=np.float64).ravel()
        if references.shape[1] != test.size or test.size != self.embedding_dim:
            raise SpkError(f"embeddings of size {references.shape[1]} and {test.size} given; this model's have "
                           f"{self.embedding_dim} values")
        return centred_cosine(references, test, self.center)

    def llr(self, score: float) -> float:
        """The calibrated natural-log likelihood ratio of a score (needs a calibration)."""
        return float(self._require_calibration().transform(score))

    def operating_points(self) -> list[str]:
        """The operating points the calibration has thresholds for (``eer``, ``far=...``, ``bayes=...``)."""
        return sorted(_operating_point_name(key) for key in self._require_calibration().thresholds)

    def threshold(self, operating_point: str = "eer") -> float:
        """The score threshold of an operating point: ``"eer"``, ``"far=0.01"`` or ``"bayes=0.01"``."""
        key = parse_operating_point(operating_point)
        thresholds = self._require_calibration().thresholds
        if key not in thresholds:
            raise CalibrationError(f"the calibration of {self.source} has no threshold for operating point "
                                   f"{operating_point!r}; it has: {', '.join(self.operating_points())} "
                                   "(record other false-accept rates with 'spk calibrate --far RATE')")
        return float(thresholds[key]["score"])

    def _require_calibration(self) -> Calibration:
        if self.calibration is None:
            if self._calibration_problem:
                raise CalibrationError(self._calibration_problem)
            raise CalibrationError(
                f"{self.source} has no score calibration (calibration.json), so it has no LLRs or operating-point "
                "thresholds: fit one on a dev trial list (run stage 5 with --calib-set <dev set>, after stages 1 "
                "and 4 for that set; or 'spk calibrate'), or pass an explicit threshold (--threshold)")
        return self.calibration

    # --- verification, identification, enrollment -----------------------------------------

    def verify(self, audio: Audio, speaker_db_or_embedding, claim: str | None = None, threshold: float | None = None,
               operating_point: str = "eer", **embed_options) -> VerifyResult:
        """Accept or reject the claim that ``audio`` is speaker ``claim``.

        ``speaker_db_or_embedding`` is a :class:`SpeakerDB` (or its path), which must
        hold ``claim``, or a reference embedding (``claim`` only names it). The
        threshold is ``threshold`` when given, else that of ``operating_point`` from
        the calibration. ``embed_options`` go to :meth:`embed`.
        """
        reference = self._reference(speaker_db_or_embedding, claim)
        point = None
        if threshold is None:
            threshold, point = self.threshold(operating_point), operating_point
        score = self.score(reference, self.embed(audio, **embed_options))
        llr = self.llr(score) if self.calibration is not None else None
        return VerifyResult(claim, bool(score >= threshold), score, float(threshold), point, llr)

    def verify_stream(self, chunks: Iterable[np.ndarray], speaker_db_or_embedding, claim: str | None = None,
                      threshold: float | None = None, operating_point: str = "eer"
                      ) -> Iterator[tuple[float, float] | VerifyResult]:
        """Verify audio as it arrives: yield ``(seconds so far, running score)`` after each chunk,
        then the :class:`VerifyResult` of the whole input.

        ``chunks`` are 16 kHz float32 pieces of any size (e.g. :func:`spk.streaming.read_chunks`
        of a file or of standard input). Forward-only RNNs carry their state from chunk to
        chunk (:class:`spk.streaming.StreamingEmbedder`); the final score equals what
        :meth:`verify` gives for the same audio. Input under 0.5 s is refused at the end.
        """
        from spk.streaming import StreamingEmbedder

        reference = self._reference(speaker_db_or_embedding, claim)
        point = None
        if threshold is None:
            threshold, point = self.threshold(operating_point), operating_point
        if self.default_chunking is not None:
            raise SpkError(f"{self.source} embeds recordings in its own windows (embed_windows), which are not "
                           "streamed; verify the whole file instead (without --stream)")
        try:
            stream = StreamingEmbedder.for_model(self.trained)
        except FeatureConfigError as error:
            raise SpkError(f"{self.source}: {error}") from None
        speech = None
        if self.speech_check:
            from spk.speech import SpeechStream

            speech = _speech_model(SpeechStream)
        for chunk in chunks:
            chunk = np.asarray(chunk, dtype=np.float32)
            stream.accept_waveform(chunk)
            if speech is not None:
                speech.accept(chunk)
            if stream.num_frames:
                yield stream.seconds, self.score(reference, stream.embedding())
        if stream.seconds < MIN_AUDIO_S:
            raise SpkInputError(f"the streamed audio is too short: {stream.seconds:.2f} s, and at least "
                                f"{MIN_AUDIO_S:g} s is needed")
        if speech is not None:
            _check_speech(speech.finish(), "the streamed audio")
        score = self.score(reference, stream.finish())
        llr = self.llr(score) if self.calibration is not None else None
        yield VerifyResult(claim, bool(score >= threshold), score, float(threshold), point, llr)

    def _reference(self, source, claim: str | None) -> np.ndarray:
        if isinstance(source, np.ndarray):
            return source
        if isinstance(source, SpeakerDB):
            if claim is None:
                raise SpkError("verification against a speaker database needs the claimed speaker")
            source.check_model(self.identity)
            return source.speaker_model(claim)
        if isinstance(source, (str, os.PathLike)):
            with self.open_db(source) as db:
                return self._reference(db, claim)
        raise SpkError(f"verify needs a speaker database or an embedding, not {type(source).__name__}")

    def identify(self, audio: Audio, top_k: int = 5, db=None, unknown_threshold: float | None = None,
                 **embed_options) -> IdentifyResult:
        """Who is speaking: the ``top_k`` most probable speakers.

        Without ``db``: closed set over the training speakers, with the classifier
        head's softmax posteriors (a model without a head needs ``db``). With ``db``
        (a :class:`SpeakerDB` or its path): the enrolled speakers, ranked by cosine to
        their models; the probabilities are a softmax over their calibrated LLRs
        (posteriors under equal priors, when calibrated) or else over
        ``COSINE_SCALE`` x cosine. Open set: when the best cosine is below
        ``unknown_threshold``, the answer is ``"unknown"``.
        """
        if top_k < 1:
            raise SpkError(f"top_k must be at least 1, not {top_k}")
        if db is None:
            return self._identify_closed_set(audio, top_k, unknown_threshold, embed_options)
        if isinstance(db, (str, os.PathLike)):
            with self.open_db(db) as opened:
                return self.identify(audio, top_k, opened, unknown_threshold, **embed_options)
        db.check_model(self.identity)
        names, models = db.speaker_models()
        scores = self._scores(models, self.embed(audio, **embed_options))
        llrs = self.calibration.transform(scores) if self.calibration is not None else None
        probabilities = score_posteriors(llrs, 1.0) if llrs is not None else score_posteriors(scores)
        order = np.argsort(-scores, kind="stable")[:top_k]
        candidates = [Candidate(names[i], float(probabilities[i]), float(scores[i]),
                                None if llrs is None else float(llrs[i])) for i in order]
        unknown = unknown_threshold is not None and scores[order[0]] < unknown_threshold
        return IdentifyResult("unknown" if unknown else names[order[0]], bool(unknown), "speaker_db", candidates,
                              unknown_threshold)

    def _identify_closed_set(self, audio: Audio, top_k: int, unknown_threshold: float | None,
                             embed_options: dict) -> IdentifyResult:
        if not self.has_head:
            raise SpkError(f"{self.source} has no classifier head (it was trained with an embedding loss), so it "
                           "cannot name its training speakers by itself: enroll speakers and identify against "
                           "the speaker database (--db)")
        if unknown_threshold is not None:
            raise SpkError("an unknown-speaker threshold applies to enrolled speakers: give a speaker database "
                           "(--db) too")
        vector, _ = self._embed(audio, **_embed_args(embed_options))
        posteriors = head_posteriors(self.model, vector[None, :])[0]
        order = np.argsort(-posteriors, kind="stable")[:top_k]
        candidates = [Candidate(self.speakers[i], float(posteriors[i])) for i in order]
        return IdentifyResult(candidates[0].speaker, False, "classifier_head", candidates)

    def enroll(self, db, speaker: str, audios: Sequence[Audio], **embed_options) -> int:
        """Add the utterances ``audios`` to ``speaker`` in ``db`` (a :class:`SpeakerDB`, or a path: made when
        missing); returns the speaker's utterance count.

        Every utterance is embedded before anything is written, so one bad file
        leaves the database as it was.
        """
        check_speaker_name(speaker)
        items = self.enrollments(audios, speaker=speaker, **embed_options)
        if isinstance(db, (str, os.PathLike)):
            with self.open_db(db, create=True) as opened:
                return opened.add_enrollments(speaker, items)
        db.check_model(self.identity)
        return db.add_enrollments(speaker, items)

    def enrollments(self, audios: Sequence[Audio], *, speaker: str = "", sources: Sequence[str] | None = None,
                    **embed_options) -> list[Enrollment]:
        """The enrollment utterances of ``audios`` (embedded, checked), ready for
        :meth:`SpeakerDB.add_enrollments`; nothing is written.

        ``sources`` names them in the database (default: the file's absolute path, or
        ``<waveform>``); ``speaker`` only labels the progress bar.
        """
        if isinstance(audios, (str, os.PathLike, np.ndarray)):
            audios = [audios]
        if not audios:
            raise SpkError(f"no enrollment audio given for speaker {speaker!r}")
        if sources is not None and len(sources) != len(audios):
            raise SpkError(f"{len(sources)} source names given for {len(audios)} recordings")
        items = []
        for i, audio in enumerate(tqdm(audios, desc=f"enroll {speaker}", unit="utt", leave=False,
                                       disable=len(audios) < 5)):
            vector, duration = self._embed(audio, **_embed_args(embed_options))
            if sources is not None:
                source = sources[i]
            else:
                source = "<waveform>" if isinstance(audio, np.ndarray) else _source_name(audio)
            items.append(Enrollment(source, duration, unit_length(vector)))
        return items


# --- helpers --------------------------------------------------------------------------


def _embed_args(options: dict) -> dict:
    """Keyword options of :meth:`SpeakerModel.embed` as the positional tuple ``_embed`` takes."""
    unknown = set(options) - {"sample_rate", "windowed", "window_s", "hop_s", "vad"}
    if unknown:
        raise TypeError(f"unknown embedding option(s): {', '.join(sorted(unknown))}")
    return {"sample_rate": options.get("sample_rate"), "windowed": options.get("windowed", False),
            "window_s": options.get("window_s", 3.0), "hop_s": options.get("hop_s", 1.5),
            "vad": options.get("vad", False)}


def _source_name(audio) -> str:
    """How an enrollment's source is recorded: its absolute path."""
    return os.path.abspath(os.fspath(audio))


def _speech_model(make):
    """``make()``, with a missing silero-vad or onnxruntime reported as an :class:`SpkError`."""
    from spk.speech import SpeechModelError

    try:
        return make()
    except SpeechModelError as error:
        raise SpkError(f"{error}; or turn the speech-presence check off (--no-speech-check, or "
                       "SpeakerModel.load(..., speech_check=False))") from None


def _check_speech(presence, name: str) -> None:
    """Refuse audio in which the speech-presence check found too little speech."""
    if not presence.enough:
        raise SpkInputError(
            f"{name} holds too little speech: {presence.speech_s:.2f} s of speech in {presence.duration_s:.2f} s "
            f"of audio (Silero VAD), and at least {presence.required_s:.2f} s is needed; it sounds like noise, "
            "music or silence, not speech (check the recording; if it is speech, turn the check off with "
            "--no-speech-check or speech_check=False)")


def _check_waveform(audio: np.ndarray) -> np.ndarray:
    """A float waveform as float32 mono; other shapes and integer samples are errors (NaNs are refused by
    :meth:`SpeakerModel._waveform`, for files and waveforms alike)."""
    if not np.issubdtype(audio.dtype, np.floating):
        raise SpkInputError(f"the waveform has {audio.dtype} samples; give floats in [-1, 1] "
                            "(divide 16-bit integers by 32768)")
    if audio.ndim == 2:
        audio = audio.mean(axis=1)
    if audio.ndim != 1:
        raise SpkInputError(f"the waveform has shape {audio.shape}; give (samples,) or (samples, channels)")
    return np.clip(audio, -1.0, 1.0).astype(np.float32, copy=False)


def _windows(window_s: float, hop_s: float, frame_shift_ms: float) -> Chunking:
    """Sliding windows of ``window_s`` seconds every ``hop_s`` seconds, as stage 4's chunking."""
    if not window_s > 0:
        raise SpkError(f"the window length must be positive, not {window_s:g} s")
    if not 0 < hop_s <= window_s:
        raise SpkError(f"the window hop must be positive and at most the window length ({window_s:g} s), "
                       f"not {hop_s:g} s")
    try:
        return Chunking.from_seconds(window_s, window_s - hop_s, frame_shift_ms)
    except ValueError as error:
        raise SpkError(str(error)) from None


def parse_operating_point(operating_point: str) -> str:
    """The calibration's thresholds key (``eer``, ``far_0.01``, ...) of ``eer``, ``far=<rate>`` or ``bayes=<prior>``."""
    text = str(operating_point).strip().lower()
    if text == "eer":
        return "eer"
    match = re.fullmatch(r"(far|bayes)\s*[=_]\s*([0-9]*\.?[0-9]+(?:e-?[0-9]+)?)", text)
    if not match:
        raise SpkError(f"operating point {operating_point!r} is not 'eer', 'far=<false-accept rate>' "
                       "or 'bayes=<target prior>' (e.g. far=0.01)")
    return f"{match.group(1)}_{float(match.group(2)):g}"


def _operating_point_name(key: str) -> str:
    kind, _, value = key.partition("_")
    return f"{kind}={value}" if value else kind


def _calibration_problem(calibration: Calibration, where) -> str | None:
    """Why a calibration cannot be used for this API's cosine scores, or None when it can."""
    scoring = calibration.scoring or {}
    backend, norm = scoring.get("backend", "cosine"), scoring.get("score_norm", "none")
    if backend != "cosine" or norm not in (None, "none"):
        return (f"the calibration {where} was fitted on {backend} scores with score normalisation {norm}, "
                "but verification scores by plain cosine: refit it on cosine scores ('spk calibrate "
                "--backend cosine'), or pass an explicit threshold (--threshold)")
    return None
