"""Built-in augmentation sources (spk.augment.builtin, spk.augment.rooms): noises, music, RIRs, the sources folder."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from spk.augment import builtin as sources
from spk.augment import rooms
from spk.augment import reverberate, rir_peak
from spk.cli import main
from spk.data import DataDir, DataDirError, DataDirUsageError, validate_data_dir

RATE = 16000
SMALL = {"rooms_per_size": 2, "rirs_per_room": 2, "noises_per_kind": 1, "music_pieces": 2}


def schroeder_t20(rir: np.ndarray) -> float:
    """Reverberation time from the -5 to -25 dB span of the backward-integrated energy decay, times 3."""
    energy = np.cumsum((rir.astype(np.float64) ** 2)[::-1])[::-1]
    decay = 10 * np.log10(energy / energy[0] + 1e-30)
    return (np.argmax(decay <= -25) - np.argmax(decay <= -5)) / RATE * 3


def window_energy(rir: np.ndarray, centre: float, half: int = 8) -> float:
    start = int(round(centre)) - half
    return float(np.sum(rir[start:start + 2 * half + 1].astype(np.float64) ** 2))


def test_image_source_rir_direct_path_and_first_reflection():
    size, source, mic, absorption = (6.0, 8.0, 3.0), (2.0, 3.0, 1.0), (4.0, 3.0, 1.0), 0.36
    rir = rooms.image_source_rir(size, source, mic, absorption, np.random.default_rng(0))
    direct = rooms.direct_index(source, mic)
    assert direct == round(2.0 / rooms.SPEED_OF_SOUND * RATE)
    assert rir_peak(rir) == direct and rir[direct] == pytest.approx(1.0, abs=1e-6)
    assert np.all(np.abs(rir[: direct - 1]) < 0.02)  # nothing before the sound arrives (only high-pass ringing)
    # The floor reflection: image source at z = -1, path sqrt(2^2 + 2^2), one bounce (amplitude sqrt(1 - a)).
    floor = math.sqrt(8.0)
    arrival = direct + (floor - 2.0) / rooms.SPEED_OF_SOUND * RATE
    expected = math.sqrt(1 - absorption) * 2.0 / floor
    assert math.sqrt(window_energy(rir, arrival)) == pytest.approx(expected, rel=0.15)
    between = rir[direct + 3: int(arrival) - 9]  # no other arrival before it (the next is a wall at 6 m)
    assert np.max(np.abs(between)) < 0.05


@pytest.mark.parametrize("size, absorption", [((6.0, 8.0, 3.0), 0.3), ((40.0, 35.0, 4.0), 0.2),
                                              ((20.0, 15.0, 4.0), 0.6)])
def test_image_source_rir_decays_at_the_eyring_rt60(size, absorption):
    rir = rooms.image_source_rir(size, (2.0, 3.0, 1.2), (size[0] - 1.5, size[1] - 2.0, 1.6), absorption,
                                   np.random.default_rng(1), max_seconds=3.0)
    rt60 = rooms.eyring_rt60(size, absorption)
    assert schroeder_t20(rir) == pytest.approx(rt60, rel=0.3)
    # The late part decays by 60 dB per RT60: fit a line to the log energy of 10 ms frames after the early part.
    direct = rooms.direct_index((2.0, 3.0, 1.2), (size[0] - 1.5, size[1] - 2.0, 1.6))
    frames = rir[direct + int(0.1 * RATE): direct + int(0.9 * rt60 * RATE)].astype(np.float64)
    frames = frames[: len(frames) // 160 * 160].reshape(-1, 160)
    slope = np.polyfit(np.arange(len(frames)) * 0.01, 10 * np.log10(np.mean(frames**2, axis=1)), 1)[0]
    assert -60 / slope == pytest.approx(rt60, rel=0.15)
    assert len(rir) == pytest.approx((1.2 * rt60 + math.dist((2, 3, 1.2), (size[0] - 1.5, size[1] - 2, 1.6))
                                      / rooms.SPEED_OF_SOUND) * RATE, abs=20)


def test_image_source_rir_rejects_bad_absorption():
    with pytest.raises(ValueError, match="absorption"):
        rooms.image_source_rir((5, 5, 3), (1, 1, 1), (3, 3, 1), 1.0, np.random.default_rng(0))


def test_simulated_rirs_peak_at_the_direct_path_and_keep_speech_aligned():
    rirs = sources.room_impulse_responses(3, rooms_per_size=3, rirs_per_room=3)
    assert len(rirs) == 27 and all(name.split("-")[0] in rooms.ROOM_SIZES for name in rirs)
    t = np.arange(RATE) / RATE
    speech = (np.random.default_rng(0).standard_normal(RATE) * (np.sin(2 * np.pi * 3 * t) > 0)).astype(np.float32)
    for rir, rt60 in rirs.values():
        assert 0.03 < rt60 < 2.5 and rir.dtype == np.float32 and np.max(np.abs(rir)) == pytest.approx(1.0)
        first = int(np.argmax(np.abs(rir) > 0.5))
        assert rir_peak(rir) == first  # the largest sample is the first strong one: the direct path
        wet = reverberate(speech, rir)
        lag = np.argmax(np.correlate(wet[:4000], speech[:4000], "full")) - 3999
        assert abs(lag) <= 1


def test_noise_and_music_are_deterministic_distinct_and_in_range():
    noise, again, other = (sources.noise_recordings(seed, per_kind=1) for seed in (0, 0, 1))
    assert list(noise) == [f"noise-{kind.replace('_', '')}-01" for kind in sources.NOISE_KINDS]
    for name, wave in noise.items():
        assert np.array_equal(wave, again[name]) and not np.array_equal(wave, other[name][: len(wave)])
        assert 4.0 <= len(wave) / RATE <= 10.0 and wave.dtype == np.float32
        assert np.all(np.isfinite(wave)) and np.max(np.abs(wave)) <= 0.95 + 1e-6 and np.std(wave) > 0.01
    music = sources.music_recordings(0, count=3)
    assert list(music) == ["music-01", "music-02", "music-03"]
    assert np.array_equal(music["music-02"], sources.music_recordings(0, count=2)["music-02"])
    for wave in music.values():
        assert 8.0 <= len(wave) / RATE <= 15.0 and np.max(np.abs(wave)) <= 0.95 + 1e-6
    # Distinct kinds are distinct sounds: spectra differ.
    spectra = {name: np.abs(np.fft.rfft(wave[: 4 * RATE])) for name, wave in noise.items()}
    names = list(spectra)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            corr = np.corrcoef(np.log(spectra[a] + 1e-6), np.log(spectra[b] + 1e-6))[0, 1]
            assert corr < 0.999, (a, b)


def test_make_sources_writes_valid_data_dirs_and_reuses_them(tmp_path):
    out = tmp_path / "aug_sources"
    made = sources.make_sources(out, seed=0, **SMALL)
    assert not made.reused and set(made.summaries) == {"noise", "music", "rirs"}
    for name, count in (("noise", len(sources.NOISE_KINDS)), ("music", 2), ("rirs", 3 * 2 * 2)):
        data = DataDir(out / name)
        assert validate_data_dir(out / name).num_utterances == count
        assert data.utt2spk() == {utt: utt for utt in data.utt2spk()}
        for utt, path in data.wav_scp().items():
            info = sf.info(path)
            assert Path(path).is_absolute() and Path(path).parent == (out / name / "wav").absolute()
            assert info.samplerate == RATE and data.utt2dur()[utt] == pytest.approx(info.frames / RATE, abs=1e-6)
    assert (out / "rirs" / "utt2rt60").is_file()
    assert oct(out.stat().st_mode & 0o777) != oct(0o700)  # not the staging folder's private mode

    stamp = (out / "noise" / "wav.scp").stat().st_mtime_ns
    assert sources.make_sources(out, seed=0, **SMALL).reused
    assert (out / "noise" / "wav.scp").stat().st_mtime_ns == stamp
    first = sf.read(DataDir(out / "noise").wav_scp()["noise-pink-01"])[0]
    assert not sources.make_sources(out, seed=1, **SMALL).reused  # other options: replaced
    assert not np.array_equal(first, sf.read(DataDir(out / "noise").wav_scp()["noise-pink-01"])[0][: len(first)])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["aug_sources"]  # no staging left behind


def write_speech_dir(path: Path, speakers: int = 3, per_speaker: int = 2) -> Path:
    path.mkdir(parents=True)
    rng = np.random.default_rng(0)
    lines, spk_lines = [], []
    for s in range(speakers):
        for u in range(per_speaker):
            utt = f"spk{s}-u{u}"
            wav = path / f"{utt}.wav"
            sf.write(wav, (0.1 * rng.standard_normal(RATE)).astype(np.float32), RATE)
            lines.append(f"{utt} {wav}")
            spk_lines.append(f"{utt} spk{s}")
    (path / "wav.scp").write_text("\n".join(lines) + "\n")
    (path / "utt2spk").write_text("\n".join(spk_lines) + "\n")
    return path


def test_speech_set_for_babble_is_a_random_subset(tmp_path):
    src = write_speech_dir(tmp_path / "train")
    out = tmp_path / "src"
    made = sources.make_sources(out, seed=0, speech_from=src, num_speech=4, **SMALL)
    speech = DataDir(out / "speech")
    assert made.summaries["speech"].num_utterances == 4
    original = DataDir(src).wav_scp()
    assert all(original[utt] == path for utt, path in speech.wav_scp().items())  # points at the original audio
    assert sources.make_speech_set(src, tmp_path / "again", num=4, seed=0).num_utterances == 4
    assert DataDir(tmp_path / "again").utt_ids() == speech.utt_ids()


def test_bad_speech_dir_fails_before_anything_is_written(tmp_path):
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "wav.scp").write_text("a /nowhere.wav\n")
    with pytest.raises(DataDirError, match="utt2spk"):
        sources.make_sources(tmp_path / "out", speech_from=tmp_path / "broken", **SMALL)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken"]


def test_cli_sources_default_sizes_are_as_documented(tmp_path):
    result = CliRunner().invoke(main, ["augment", "sources", "--out", str(tmp_path / "s"), "--seed", "2"])
    assert result.exit_code == 0, result.output
    for name, count in (("noise", 18), ("music", 8), ("rirs", 300)):
        assert f"{name}: {count} utterances" in result.output
    minutes = {name: sum(DataDir(tmp_path / "s" / name).utt2dur().values()) / 60 for name in ("noise", "music", "rirs")}
    assert 1.5 < minutes["noise"] < 3 and 1 < minutes["music"] < 2 and 1.5 < minutes["rirs"] < 3.5
    result = CliRunner().invoke(main, ["augment", "sources", "--out", str(tmp_path / "t"), "--speech-from",
                                       str(tmp_path / "missing")])
    assert result.exit_code == 1 and "missing" in result.output and not (tmp_path / "t").exists()


def test_an_existing_folder_it_did_not_write_is_never_replaced(tmp_path):
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "keep.txt").write_text("mine")
    with pytest.raises(DataDirUsageError, match="not written by `spk augment sources`"):
        sources.make_sources(tmp_path / "exp", **SMALL)
    assert (tmp_path / "exp" / "keep.txt").read_text() == "mine" and len(list(tmp_path.iterdir())) == 1
