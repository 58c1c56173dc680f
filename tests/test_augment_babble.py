"""The one babble recipe (spk.augment.babble) over the one source-set reader (spk.augment.sources)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf

from spk.augment import AugmentError, add_noise
from spk.augment.babble import babble_track
from spk.augment.sources import SourceSet
from spk.data import utt2spk_to_spk2utt, write_spk2utt, write_utt2spk, write_wav_scp

RATE = 16000
TALKERS = {"A-1": ("A", 300.0), "A-2": ("A", 500.0), "B-1": ("B", 700.0), "C-1": ("C", 1100.0)}


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    """A babble set of four 0.5 s tones: two recordings of speaker A, one each of B and C."""
    root = tmp_path_factory.mktemp("babble")
    (root / "wav").mkdir()
    t = np.arange(RATE // 2) / RATE
    wav_scp = {}
    for rec, (_, freq) in TALKERS.items():
        buffer = io.BytesIO()  # through memory: libsndfile syncs each file it closes, slow on a busy disk
        sf.write(buffer, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), RATE, format="WAV", subtype="FLOAT")
        (root / "wav" / f"{rec}.wav").write_bytes(buffer.getvalue())
        wav_scp[rec] = str(root / "wav" / f"{rec}.wav")
    write_wav_scp(root / "wav.scp", wav_scp)
    utt2spk = {rec: speaker for rec, (speaker, _) in TALKERS.items()}
    write_utt2spk(root / "utt2spk", utt2spk)
    write_spk2utt(root / "spk2utt", utt2spk_to_spk2utt(utt2spk))
    return root


def drawn(notes: list[str]) -> list[str]:
    return [item.split("@")[0] for item in notes[0].removeprefix("babble=").split(",")]


def test_the_target_speaker_is_never_a_talker_and_talkers_are_distinct(speech):
    talkers = SourceSet(speech, "speech sources")
    assert talkers.recordings["A-2"].speaker == "A" and talkers.recordings["B-1"].duration == pytest.approx(0.5)
    for seed in range(20):
        _, _, notes = babble_track(talkers, 4000, np.random.default_rng(seed), count=(2, 2), snr_range=(10, 20),
                                   speaker="A")
        ids = drawn(notes)
        assert sorted(ids) == ["B-1", "C-1"], ids


def test_each_talker_lands_at_its_own_snr(speech):
    talkers = SourceSet(speech, "speech sources")
    speech_wave = (0.05 * np.random.default_rng(0).standard_normal(RATE)).astype(np.float32)
    track, total, notes = babble_track(talkers, RATE, np.random.default_rng(1), count=(2, 2), snr_range=(5, 15),
                                       speaker="A")
    snrs = [float(v) for v in notes[1].removeprefix("babble_snrs=").split(",")]
    babble = add_noise(speech_wave, track, total) - speech_wave
    # the two talkers are tones of different frequencies: their powers add
    expected = 10 * np.log10(sum(10 ** (-snr / 10) for snr in snrs))
    measured = 10 * np.log10(np.mean(babble.astype(np.float64) ** 2) / np.mean(speech_wave.astype(np.float64) ** 2))
    assert measured == pytest.approx(expected, abs=0.1)
    assert total == pytest.approx(-expected, abs=0.1)


def test_a_folder_with_only_wav_scp_is_a_set_of_own_speakers(speech, tmp_path):
    (tmp_path / "wav.scp").write_text((speech / "wav.scp").read_text())
    talkers = SourceSet(tmp_path, "augment.babble.data")
    assert {rec: r.speaker for rec, r in talkers.recordings.items()} == {rec: rec for rec in TALKERS}
    with pytest.raises(AugmentError, match=r"augment\.noise\.data: .*missing is not a data dir with wav\.scp"):
        SourceSet(tmp_path / "missing", "augment.noise.data")
