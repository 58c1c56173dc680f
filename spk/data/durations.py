"""How long each utterance of a data dir is: from ``utt2dur``, else worked out from the audio."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from spk.data.io import read_segments, read_utt2dur, read_wav_scp

__all__ = ["utterance_durations"]

logger = logging.getLogger(__name__)


def utterance_durations(data_dir: str | os.PathLike) -> dict[str, float]:
    """Utterance -> seconds, for every utterance of ``data_dir`` (those of ``segments``, else of ``wav.scp``).

    ``utt2dur`` gives those it lists; the others come from their segment's end,
    the file's header, or (pipes, segments to the end) decoding. Works on a
    folder holding only ``wav.scp`` too. Raises :class:`spk.audio.AudioError`
    naming the utterance when its audio cannot be read.
    """
    import soundfile as sf  # numpy and audio libraries load only when durations are needed (spk.data stays light)

    from spk.audio import AudioError, AudioReader, is_pipe

    path = Path(data_dir)
    wav_scp = read_wav_scp(path / "wav.scp")
    segments = read_segments(path / "segments") if (path / "segments").is_file() else None
    utts = list(segments) if segments is not None else list(wav_scp)
    known = read_utt2dur(path / "utt2dur") if (path / "utt2dur").is_file() else {}
    durations = {utt: known[utt] for utt in utts if utt in known}
    missing = [utt for utt in utts if utt not in durations]
    if not missing:
        return durations
    logger.info("%s: %d utterances have no utt2dur entry; reading their lengths", path, len(missing))
    reader = AudioReader(wav_scp, segments, target_rate=None)
    for utt in missing:
        if segments is not None and segments[utt].end != -1:
            durations[utt] = segments[utt].end - segments[utt].start
        elif segments is None and not is_pipe(wav_scp[utt]):
            try:
                info = sf.info(wav_scp[utt])
            except (RuntimeError, TypeError) as error:
                raise AudioError(f"{path}: cannot read utterance {utt!r} ({wav_scp[utt]}): {error}") from None
            durations[utt] = info.frames / info.samplerate
        else:
            durations[utt] = reader.duration(utt)
    return durations
