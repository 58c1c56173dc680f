"""Source sets: the recordings augmentation adds or convolves, read the same way offline and on the fly.

A source set is one or more folders holding a ``wav.scp``: the data dirs that
``spk augment sources``, ``spk prepare musan`` and ``spk prepare rirs_noises``
write, or any Kaldi data dir. Each of its utterances (its ``segments``, else its
``wav.scp`` entries) is a *recording*: a noise, a piece of music, a talker or a
room impulse response. ``utt2dur`` gives the lengths (missing ones are read from
the audio); ``utt2spk``, when present, gives each recording's speaker (so that
babble can leave out the target's own speaker), and the folder is then validated
as a data dir. Without it every recording is its own speaker.

Recordings are read on demand, at the set's sample rate and by range where the
audio is a file, so that large sets such as MUSAN take no memory; piped entries
are decoded once and kept, and a set may keep its most recent whole recordings
(impulse responses, read again and again).

:func:`source_dirs` says which folders a ``spk augment data`` run reads for each kind.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spk.audio import AudioError, is_pipe, read_audio, read_segment
from spk.augment.errors import AugmentError
from spk.data import DataDir, c_sorted, utterance_durations, validate_data_dir

__all__ = ["SOURCE_DIRS", "Recording", "SourceSet", "source_dirs"]

logger = logging.getLogger(__name__)

# The data dir of each kind under a --sources folder (as `spk augment sources` writes it).
SOURCE_DIRS = {"reverb": "rirs", "noise": "noise", "music": "music", "babble": "speech"}
SILENT_POWER = 1e-10
DRAWS = 10  # tries to find a crop that is not silent


def source_dirs(kinds: Sequence[str], sources: str | os.PathLike | None = None,
                overrides: Mapping[str, Sequence[str | os.PathLike]] | None = None) -> dict[str, list[Path]]:
    """The source data dirs of each kind: ``overrides[kind]``, else ``<sources>/<SOURCE_DIRS[kind]>``.

    Raises AugmentError saying what to give when a kind has none.
    """
    overrides = overrides or {}
    found = {}
    for kind in kinds:
        if overrides.get(kind):
            found[kind] = [Path(p) for p in overrides[kind]]
            continue
        option = "--rirs" if kind == "reverb" else f"--{kind}"
        if sources is None:
            raise AugmentError(f"--kinds {kind}: no {kind} source; give --sources DIR (made by `spk augment "
                               f"sources`) or {option} DATA_DIR")
        path = Path(sources) / SOURCE_DIRS[kind]
        if not path.is_dir():
            raise AugmentError(f"--kinds {kind}: {path} is missing (--sources {sources}); make it with `spk augment "
                               f"sources --out {sources}`{' --speech-from DIR' if kind == 'babble' else ''}, "
                               f"or give {option} DATA_DIR")
        found[kind] = [path]
    return found


@dataclass(frozen=True)
class Recording:
    """One recording of a set: its wav.scp entry, the cut of it (seconds; ``end`` None: to its end), its length
    and its speaker."""

    source: str
    start: float
    end: float | None
    duration: float
    speaker: str


class SourceSet:
    """The recordings of one or more source folders, read on demand at ``rate`` (see the module docstring).

    ``name`` names the set in every error (a config key such as
    ``augment.noise.data``, or ``noise sources``); ``channel`` is how
    multi-channel audio becomes mono (``"mean"``, or an index: RIRs use channel
    0, as Kaldi does); ``keep`` is how many whole recordings to keep in memory.
    Raises :class:`AugmentError` (or :class:`spk.data.DataDirError` for an
    invalid data dir) for a missing folder, clashing ids or no usable recording.
    """

    def __init__(self, dirs: str | os.PathLike | Sequence[str | os.PathLike], name: str, rate: int = 16000, *,
                 channel: str | int = "mean", keep: int = 0):
        paths = [Path(dirs)] if isinstance(dirs, (str, os.PathLike)) else [Path(d) for d in dirs]
        self.name, self.rate, self.channel, self.keep = name, rate, channel, keep
        self.dirs = [str(path) for path in paths]
        self.recordings: dict[str, Recording] = {}
        owner: dict[str, Path] = {}
        for path in paths:
            for rec_id, recording in self._read_folder(path).items():
                if rec_id in owner:
                    raise AugmentError(f"{name}: recording id {rec_id!r} is in both {owner[rec_id]} and {path}; "
                                       "give only one of them")
                owner[rec_id] = path
                if recording.duration > 0:
                    self.recordings[rec_id] = recording
        if not self.recordings:
            raise AugmentError(f"{name}: no recording with a duration above 0 in {', '.join(self.dirs)}")
        self.ids = list(self.recordings)
        self._decoded: dict[str, np.ndarray] = {}  # piped wav.scp entry -> all its samples
        self._kept: OrderedDict[str, np.ndarray] = OrderedDict()

    def _read_folder(self, path: Path) -> dict[str, Recording]:
        if not (path / "wav.scp").is_file():
            raise AugmentError(
                f"{self.name}: {path} is not a data dir with wav.scp (looked for {path.resolve() / 'wav.scp'}; "
                "relative paths are relative to the working directory). Prepare it first (`spk augment sources`, "
                "`spk prepare musan` or `spk prepare rirs_noises`), or give another folder")
        data = DataDir(path)
        if data.has("utt2spk"):
            logger.info("%s: %s", self.name, validate_data_dir(path))
        wav_scp, segments = data.wav_scp(), data.segments()
        speakers = data.utt2spk() if data.has("utt2spk") else {}
        ids = c_sorted(segments if segments is not None else wav_scp)
        if not ids:
            raise AugmentError(f"{self.name}: {path}/wav.scp lists no recordings")
        try:
            durations = utterance_durations(path)
        except AudioError as error:
            raise AugmentError(f"{self.name}: {error}") from None
        found = {}
        for utt in ids:
            rec, start, end = (utt, 0.0, None) if segments is None else segments[utt]
            if rec not in wav_scp:
                raise AugmentError(f"{self.name}: {path}/segments names recording {rec!r}, which is not in wav.scp")
            found[utt] = Recording(wav_scp[rec], float(start), None if end is None or end == -1 else float(end),
                                   float(durations[utt]), speakers.get(utt, utt))
        return found

    def __len__(self) -> int:
        return len(self.ids)

    # --- reading ---------------------------------------------------------------------------------

    def pick(self, rng: np.random.Generator) -> str:
        """The id of a random recording (all equally likely)."""
        return self.ids[int(rng.integers(len(self.ids)))]

    def whole(self, rec_id: str) -> np.ndarray:
        """All samples of one recording (kept when the set keeps recordings)."""
        if rec_id in self._kept:
            self._kept.move_to_end(rec_id)
            return self._kept[rec_id]
        wave = self._read(rec_id, 0.0, None)
        if self.keep > 0:
            self._kept[rec_id] = wave
            if len(self._kept) > self.keep:
                self._kept.popitem(last=False)
        return wave

    def crop(self, rec_id: str, seconds: float, rng: np.random.Generator) -> tuple[np.ndarray, float]:
        """A random ``seconds``-long piece of a recording (all of it when not longer) and where it starts."""
        duration = self.recordings[rec_id].duration
        if duration <= seconds:
            return self.whole(rec_id), 0.0
        offset = float(rng.uniform(0.0, duration - seconds))
        return self._read(rec_id, offset, offset + seconds), offset

    def stretch(self, num_samples: int, rng: np.random.Generator) -> np.ndarray:
        """``num_samples`` samples of a random recording from a random offset, tiled when it is shorter."""
        rec_id = self.pick(rng)
        wave, _ = self.crop(rec_id, num_samples / self.rate, rng)
        if len(wave) == 0:
            raise AugmentError(f"{self.name}: recording {rec_id!r} has no samples where its duration says "
                               f"{self.recordings[rec_id].duration:.3f} s; fix utt2dur or drop the recording")
        return np.resize(wave, num_samples)  # tiles a short (or a rounding-short) stretch

    def draw(self, seconds: float, rng: np.random.Generator, *, exclude_speaker: str | None = None,
             used: set[str] | frozenset[str] = frozenset()) -> tuple[str, np.ndarray, float]:
        """A non-silent crop of a random recording, scaled to unit power: (id, samples, offset).

        Recordings of ``exclude_speaker`` are never drawn (unless they are all
        there is) and ids in ``used`` only when nothing else is left. A silent
        crop is drawn again, up to 10 times, then AugmentError.
        """
        ids = [i for i in self.ids if self.recordings[i].speaker != exclude_speaker and i not in used]
        if not ids:
            ids = [i for i in self.ids if self.recordings[i].speaker != exclude_speaker] or self.ids
        for _ in range(DRAWS):
            rec_id = ids[int(rng.integers(len(ids)))]
            wave, offset = self.crop(rec_id, seconds, rng)
            power = float(np.mean(np.asarray(wave, dtype=np.float64) ** 2)) if len(wave) else 0.0
            if power >= SILENT_POWER:
                return rec_id, (wave / np.sqrt(power)).astype(np.float32), offset
        raise AugmentError(f"{self.name} {', '.join(self.dirs)}: {DRAWS} random crops in a row were silent; "
                           "check the recordings (or drop the silent ones)")

    def _read(self, rec_id: str, begin: float, end: float | None) -> np.ndarray:
        """Seconds ``[begin, end)`` of a recording (``end`` None: to its end)."""
        rec = self.recordings[rec_id]
        stop = rec.end if end is None else rec.start + end
        try:
            if not is_pipe(rec.source):
                return read_segment(rec.source, rec.start + begin, stop, target_rate=self.rate,
                                    channel=self.channel, utt_id=rec_id)
            if rec.source not in self._decoded:
                self._decoded[rec.source] = read_audio(rec.source, target_rate=self.rate, channel=self.channel,
                                                       utt_id=rec_id)
        except AudioError as error:
            raise AugmentError(f"{self.name}: {error}") from None
        first = int(round((rec.start + begin) * self.rate))
        return self._decoded[rec.source][first:None if stop is None else int(round(stop * self.rate))]
