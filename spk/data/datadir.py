"""A data dir as an object: its path, and a method to read each file."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from spk.data.errors import DataDirError, Problem
from spk.data import io
from spk.data.formats import FORMATS, Segment, Trial
from spk.data.validate import DataDirSummary, validate_data_dir

__all__ = ["DataDir"]


@dataclass(frozen=True, init=False)
class DataDir:
    """A Kaldi data dir at ``path``. Each method reads its file afresh (strictly: see :mod:`spk.data.io`).

    >>> data = DataDir("data/train")            # doctest: +SKIP
    >>> data.validate(need_feats=True)          # doctest: +SKIP
    >>> reader = AudioReader(data.wav_scp(), data.segments())  # doctest: +SKIP
    """

    path: Path

    def __init__(self, path: str | os.PathLike) -> None:
        object.__setattr__(self, "path", Path(path))

    def file(self, name: str) -> Path:
        """The path of file ``name`` in this dir (whether or not it exists)."""
        return self.path / name

    def has(self, name: str) -> bool:
        """Whether file ``name`` exists in this dir."""
        return self.file(name).is_file()

    def validate(self, *, need_feats: bool = False, need_cmvn: bool = False,
                 need_durations: bool = False) -> DataDirSummary:
        """:func:`~spk.data.validate.validate_data_dir` on this dir."""
        return validate_data_dir(self.path, need_feats=need_feats, need_cmvn=need_cmvn,
                                 need_durations=need_durations)

    def wav_scp(self) -> dict[str, str]:
        """Recording id -> path, or command ending in ``|``."""
        return io.read_wav_scp(self._existing("wav.scp"))

    def segments(self) -> dict[str, Segment] | None:
        """Utterance id -> :class:`Segment`; ``None`` when the dir has no ``segments`` (recordings are utterances)."""
        return io.read_segments(self.file("segments")) if self.has("segments") else None

    def utt2spk(self) -> dict[str, str]:
        """Utterance id -> speaker id."""
        return io.read_utt2spk(self._existing("utt2spk"))

    def spk2utt(self) -> dict[str, list[str]]:
        """Speaker id -> utterance ids, from ``spk2utt`` or, when it is missing, derived from ``utt2spk``."""
        if self.has("spk2utt"):
            return io.read_spk2utt(self.file("spk2utt"))
        return io.utt2spk_to_spk2utt(self.utt2spk())

    def utt2dur(self) -> dict[str, float]:
        """Utterance id -> duration in seconds."""
        return io.read_utt2dur(self._existing("utt2dur"))

    def reco2dur(self) -> dict[str, float]:
        """Recording id -> duration in seconds."""
        return io.read_reco2dur(self._existing("reco2dur"))

    def utt2num_frames(self) -> dict[str, int]:
        """Utterance id -> number of feature frames."""
        return io.read_utt2num_frames(self._existing("utt2num_frames"))

    def feats_scp(self) -> dict[str, str]:
        """Utterance id -> feature matrix rxspecifier (``<ark>:<offset>``)."""
        return io.read_scp(self._existing("feats.scp"))

    def cmvn_scp(self) -> dict[str, str]:
        """Utterance (or, in Kaldi's layout, speaker) id -> CMVN statistics rxspecifier."""
        return io.read_scp(self._existing("cmvn.scp"))

    def trials(self) -> list[Trial]:
        """The trial list, in file order."""
        return io.read_trials(self._existing("trials"))

    def utt_ids(self) -> list[str]:
        """Utterance ids of ``utt2spk``, in C order."""
        return io.c_sorted(self.utt2spk())

    def speaker_ids(self) -> list[str]:
        """Speaker ids of ``utt2spk``, in C order."""
        return io.c_sorted(set(self.utt2spk().values()))

    def _existing(self, name: str) -> Path:
        """The path of ``name``, or a :class:`DataDirError` saying that it is missing and what it holds."""
        if not self.has(name):
            raise DataDirError(f"data dir '{self.path}'", [Problem(
                name, None, "missing", f"create it: one `{FORMATS[name].layout}` per line")])
        return self.file(name)

    def __str__(self) -> str:
        return str(self.path)
