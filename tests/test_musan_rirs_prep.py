"""MUSAN and RIRS_NOISES preparation (local/musan.py, local/rirs_noises.py) on fixture corpora in the real layouts.

The fixtures have the mess real copies have: stray non-audio files, empty and
unreadable wav files, list lines naming missing files, malformed lines, multi-channel
RIRs. Every data dir must validate; a failed preparation must leave nothing behind.
Downloads run against a real HTTP server on 127.0.0.1 (tests/fileserver.py).
"""

from __future__ import annotations

import hashlib
import io
import logging
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from local import musan, rirs_noises
from local.corpus import CorpusError
from local.download import extract_zip
from local.download import ChecksumError, DownloadError, completion_flag
from spk.augment.offline import augment_data_dir
from spk.cli import main as spk_main
from spk.data import DataDir, read_kv, validate_data_dir

pytest_plugins = ("tests.fileserver",)  # the `server` fixture

RATE = 16000
FAST = {"progress": False, "retry_wait": 0.0, "timeout": 10.0}


def write_wav(path: Path, seconds: float, seed: int, channels: int = 1) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    wave = 0.1 * rng.standard_normal((int(seconds * RATE), channels))
    sf.write(path, wave, RATE, subtype="PCM_16")
    return path


def write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def warnings_of(caplog) -> str:
    return "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)


def make_musan(root: Path) -> Path:
    """``root/musan`` with two sources per part, ANNOTATIONS/LICENSE/README, a stray file, an empty and a bad wav."""
    base = root / "musan"
    write_text(base / "README", "MUSAN\n")
    for part, layout in {"noise": {"free-sound": 2, "sound-bible": 1},
                         "music": {"fma": 2, "rfm": 1},
                         "speech": {"librivox": 2, "us-gov": 1}}.items():
        write_text(base / part / "LICENSE", "licences\n")
        for source, count in layout.items():
            for index in range(count):
                write_wav(base / part / source / f"{part}-{source}-{index:04d}.wav", 1.0 + 0.5 * index, index)
    write_text(base / "music" / "fma" / "ANNOTATIONS", "music-fma-0000 Pop Y Someone\nmusic-fma-0001 Rock N Band\n")
    write_text(base / "music" / "rfm" / "ANNOTATIONS", "music-rfm-0000 N classical Composer\n")
    write_text(base / "noise" / "free-sound" / "ANNOTATIONS", "noise-free-sound-0000 background\n")
    write_text(base / "noise" / "free-sound" / "notes.txt", "not audio\n")
    (base / "noise" / "free-sound" / "noise-free-sound-0009.wav").write_bytes(b"")
    write_text(base / "speech" / "us-gov" / "speech-us-gov-0005.wav", "this is not a wav file\n")
    return root


def make_rirs(root: Path) -> Path:
    """``root/RIRS_NOISES`` with Kaldi's lists, a 2-channel real RIR, a missing and a malformed entry,
    an unlisted wav."""
    base = root / "RIRS_NOISES"
    write_text(base / "README", "RIRS_NOISES\n")
    for size, rooms in (("smallroom", 2), ("mediumroom", 1), ("largeroom", 1)):
        lines = []
        for room in range(1, rooms + 1):
            for index in range(1, 3):
                name = f"Room{room:03d}-{index:05d}"
                write_wav(base / "simulated_rirs" / size / f"Room{room:03d}" / f"{name}.wav", 0.3, room * 10 + index)
                lines.append(f"--rir-id {size}-{name} --room-id {size}-Room{room:03d} "
                             f"RIRS_NOISES/simulated_rirs/{size}/Room{room:03d}/{name}.wav")
        write_text(base / "simulated_rirs" / size / "rir_list", "\n".join(lines) + "\n")
    write_wav(base / "simulated_rirs" / "smallroom" / "Room009" / "Room009-00001.wav", 0.3, 99)  # in no list
    real = base / "real_rirs_isotropic_noises"
    write_wav(real / "air_type1_air_binaural_lecture_0_1_1.wav", 0.5, 1)
    write_wav(real / "RVB2014_type1_rir_largeroom1_near_angla.wav", 0.5, 2, channels=2)
    write_wav(real / "RVB2014_type1_noise_largeroom1_1.wav", 2.0, 3, channels=2)
    write_text(real / "rir_list",
               "--rir-id air_type1_air_binaural_lecture_0_1_1 --room-id air_type1_air_binaural_lecture "
               "RIRS_NOISES/real_rirs_isotropic_noises/air_type1_air_binaural_lecture_0_1_1.wav\n"
               "--rir-id RVB2014_type1_rir_largeroom1_near_angla --room-id RVB2014_type1_rir_largeroom1 "
               "RIRS_NOISES/real_rirs_isotropic_noises/RVB2014_type1_rir_largeroom1_near_angla.wav\n"
               "--rir-id RWCP_gone --room-id RWCP RIRS_NOISES/real_rirs_isotropic_noises/RWCP_gone.wav\n")
    write_text(real / "noise_list",
               "--noise-id RVB2014_type1_noise_largeroom1_1 --noise-type isotropic --bg-fg-type background "
               "--room-linkage RVB2014_type1_rir_largeroom1 "
               "RIRS_NOISES/real_rirs_isotropic_noises/RVB2014_type1_noise_largeroom1_1.wav\n")
    point = base / "pointsource_noises"
    for index in (1, 2, 3):
        write_wav(point / f"noise{index}.wav", 1.0, 40 + index)
    (point / "noise4.wav").write_bytes(b"")
    write_text(point / "noise_list",
               "".join(f"--noise-id noise{i} --noise-type point-source --bg-fg-type foreground "
                       f"RIRS_NOISES/pointsource_noises/noise{i}.wav\n" for i in (1, 2, 4))
               + "--noise-id broken --noise-type\n")
    return root


def test_musan_writes_three_valid_dirs_and_names_what_it_skips(tmp_path, caplog):
    corpus = make_musan(tmp_path / "corpus")
    summaries = musan.prepare(corpus, tmp_path / "data", progress=False)
    assert set(summaries) == {"musan_noise", "musan_music", "musan_speech"}
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["musan_music", "musan_noise", "musan_speech"]
    expected = {"musan_noise": ["noise-free-sound-0000", "noise-free-sound-0001", "noise-sound-bible-0000"],
                "musan_music": ["music-fma-0000", "music-fma-0001", "music-rfm-0000"],
                "musan_speech": ["speech-librivox-0000", "speech-librivox-0001", "speech-us-gov-0000"]}
    for name, utts in expected.items():
        validate_data_dir(tmp_path / "data" / name, need_durations=True)
        data = DataDir(tmp_path / "data" / name)
        assert data.utt2spk() == {utt: utt for utt in utts}
        assert data.utt2dur()[utts[1]] == pytest.approx(1.5)
        assert all(Path(p).is_file() for p in data.wav_scp().values())
    warned = warnings_of(caplog)
    for stray in ("notes.txt", "noise-free-sound-0009.wav", "speech-us-gov-0005.wav"):
        assert stray in warned
    assert "empty" in warned and "ANNOTATIONS" not in warned and "LICENSE" not in warned


def test_musan_without_vocals_and_corpus_dir_as_the_musan_folder(tmp_path):
    corpus = make_musan(tmp_path / "corpus")
    musan.prepare(corpus / "musan", tmp_path / "data", parts=("music",), music_vocals=False, progress=False)
    assert DataDir(tmp_path / "data" / "musan_music").utt_ids() == ["music-fma-0001", "music-rfm-0000"]
    assert musan.read_vocals(corpus / "musan" / "music" / "rfm" / "ANNOTATIONS") == {"music-rfm-0000": False}


@pytest.mark.parametrize("damage, match", [
    ("no speech part", "speech is missing"),
    ("no usable noise", "no readable .wav"),
    ("no musan", "MUSAN is not in"),
    ("bad part", "choose from"),
])
def test_musan_problems_leave_nothing_written(tmp_path, damage, match):
    corpus = make_musan(tmp_path / "corpus")
    parts = musan.PARTS
    if damage == "no speech part":
        for path in sorted((corpus / "musan" / "speech").rglob("*"), reverse=True):
            path.rmdir() if path.is_dir() else path.unlink()
        (corpus / "musan" / "speech").rmdir()
    elif damage == "no usable noise":
        for path in (corpus / "musan" / "noise").rglob("*.wav"):
            path.write_bytes(b"")
    elif damage == "no musan":
        corpus = tmp_path / "elsewhere"
        corpus.mkdir()
    else:
        parts = ("noise", "sfx")
    with pytest.raises(CorpusError, match=match):
        musan.prepare(corpus, tmp_path / "data", parts=parts, progress=False)
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").iterdir())


def test_rirs_noises_writes_six_valid_dirs_from_the_lists(tmp_path, caplog):
    corpus = make_rirs(tmp_path / "corpus")
    summaries = rirs_noises.prepare(corpus, tmp_path / "data", progress=False)
    assert set(summaries) == set(rirs_noises.SETS)
    counts = {name: summary.num_utterances for name, summary in summaries.items()}
    assert counts == {"rirs_smallroom": 4, "rirs_mediumroom": 2, "rirs_largeroom": 2, "rirs_real": 2,
                      "noises_isotropic": 1, "noises_pointsource": 2}
    for name in rirs_noises.SETS:
        validate_data_dir(tmp_path / "data" / name, need_durations=True)
    small = DataDir(tmp_path / "data" / "rirs_smallroom")
    assert small.utt_ids()[0] == "smallroom-Room001-00001"
    assert small.wav_scp()["smallroom-Room002-00002"].endswith("simulated_rirs/smallroom/Room002/Room002-00002.wav")
    assert read_kv(tmp_path / "data" / "noises_pointsource" / "utt2dur") == {"noise1": "1", "noise2": "1"}
    warned = warnings_of(caplog)
    assert "RWCP_gone.wav" in warned and "file not found" in warned
    assert "noise4.wav" in warned and "empty" in warned
    assert "noise_list:4" in warned and "--noise-type has no value" in warned
    assert "1 wav files" in warned and "Room009-00001.wav" in warned


def test_rirs_noises_problems_leave_nothing_written(tmp_path):
    corpus = make_rirs(tmp_path / "corpus")
    (corpus / "RIRS_NOISES" / "simulated_rirs" / "largeroom" / "rir_list").unlink()
    with pytest.raises(CorpusError, match="largeroom/rir_list is missing"):
        rirs_noises.prepare(corpus, tmp_path / "data", progress=False)
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").iterdir())
    summaries = rirs_noises.prepare(corpus / "RIRS_NOISES", tmp_path / "data", sets=("rirs_mediumroom",),
                                    progress=False)
    assert list(summaries) == ["rirs_mediumroom"]
    with pytest.raises(CorpusError, match="choose from"):
        rirs_noises.prepare(corpus, tmp_path / "data", sets=("rirs_tiny",), progress=False)


def test_parse_list_line():
    assert rirs_noises.parse_list_line("--rir-id a --room-id r RIRS_NOISES/x.wav") == ({"rir-id": "a", "room-id": "r"},
                                                                                       "RIRS_NOISES/x.wav")
    for bad in ("--rir-id a", "--rir-id a one.wav two.wav", "--rir-id"):
        with pytest.raises(ValueError):
            rirs_noises.parse_list_line(bad)


def test_prepared_sets_feed_augmentation(tmp_path):
    """MUSAN noise and real (multi-channel) RIRs as the sources of `spk augment data`."""
    make_musan(tmp_path / "corpus")
    make_rirs(tmp_path / "corpus")
    musan.prepare(tmp_path / "corpus", tmp_path / "data", parts=("noise", "speech"), progress=False)
    rirs_noises.prepare(tmp_path / "corpus", tmp_path / "data", sets=("rirs_real",), progress=False)
    src = tmp_path / "data" / "train"
    write_wav(src / "a.wav", 1.0, 7)
    write_text(src / "wav.scp", f"spk1-a {src / 'a.wav'}\n")
    write_text(src / "utt2spk", "spk1-a spk1\n")
    summary = augment_data_dir(src, tmp_path / "data" / "train_aug", kinds=["reverb", "noise", "babble"],
                               source_overrides={"reverb": [tmp_path / "data" / "rirs_real"],
                                                 "noise": [tmp_path / "data" / "musan_noise"],
                                                 "babble": [tmp_path / "data" / "musan_speech"]},
                               babble_talkers=(1, 2))
    assert summary.num_utterances == 3


def tar_gz(folder: Path, name: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(folder / name, arcname=name)
    return buffer.getvalue()


def zipped(folder: Path, name: str, extra: dict[str, bytes] | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted((folder / name).rglob("*")):
            archive.write(path, path.relative_to(folder).as_posix())
        for member, data in (extra or {}).items():
            archive.writestr(member, data)
    return buffer.getvalue()


def test_musan_download_is_checksummed_extracted_once_and_prepared(server, tmp_path):
    payload = tar_gz(make_musan(tmp_path / "made"), "musan")
    server.files["/resources/17/musan.tar.gz"] = payload
    md5 = hashlib.md5(payload).hexdigest()
    corpus = tmp_path / "corpus"
    base = (f"{server.url}/resources/17",)
    with pytest.raises(ChecksumError, match="md5"):
        musan.download_musan(corpus, base_urls=base, md5="0" * 32, **FAST)
    assert not (corpus / "musan").exists()
    musan.download_musan(corpus, base_urls=base, md5=md5, **FAST)
    assert completion_flag("musan.tar.gz", corpus).is_file() and (corpus / "downloads" / "musan.tar.gz").is_file()
    requests = len(server.requests)
    musan.download_musan(corpus, base_urls=base, md5=md5, **FAST)
    assert len(server.requests) == requests  # extracted before: nothing fetched
    assert musan.prepare(corpus, tmp_path / "data", progress=False)["musan_noise"].num_utterances == 3
    assert musan.archive().md5 == "0c472d4fc0c5141eca47ad1ffeb2a7df"
    assert musan.archive().urls[0] == "https://www.openslr.org/resources/17/musan.tar.gz"


def test_rirs_noises_download_resumes_checks_and_unzips(server, tmp_path):
    payload = zipped(make_rirs(tmp_path / "made"), "RIRS_NOISES")
    server.files["/resources/28/rirs_noises.zip"] = payload
    md5 = hashlib.md5(payload).hexdigest()
    corpus = tmp_path / "corpus"
    base = (f"{server.url}/resources/28",)
    server.cut_after = len(payload) // 3
    with pytest.raises(DownloadError, match="run again to resume"):
        rirs_noises.download_rirs_noises(corpus, base_urls=base, md5=md5, retries=0, **FAST)
    assert not (corpus / "RIRS_NOISES").exists()
    rirs_noises.download_rirs_noises(corpus, base_urls=base, md5=md5, retries=0, **FAST)
    assert server.requests[-1][1] == f"bytes={len(payload) // 3}-"
    assert completion_flag("rirs_noises.zip", corpus).is_file()
    assert rirs_noises.prepare(corpus, tmp_path / "data", progress=False)["rirs_smallroom"].num_utterances == 4
    assert rirs_noises.archive().md5 == "e6f48e257286e05de56413b4779d8ffb"


def test_unsafe_zip_is_refused_before_anything_is_extracted(tmp_path):
    made = make_rirs(tmp_path / "made")
    archive = tmp_path / "rirs_noises.zip"
    archive.write_bytes(zipped(made, "RIRS_NOISES", {"../escape.txt": b"x"}))
    with pytest.raises(DownloadError, match="outside the target folder"):
        extract_zip(archive, tmp_path / "out", progress=False)
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path / "out" / "RIRS_NOISES").exists()
    archive.write_bytes(b"PK not really a zip")
    with pytest.raises(DownloadError, match="delete it and download it again"):
        extract_zip(archive, tmp_path / "out2", progress=False)


def test_cli_entries(tmp_path):
    make_musan(tmp_path / "corpus")
    make_rirs(tmp_path / "corpus")
    with pytest.raises(SystemExit) as done:
        spk_main(["prepare", "musan", "--corpus-dir", str(tmp_path / "corpus"), "--data-dir", str(tmp_path / "data"),
                  "--parts", "noise,music", "--no-music-vocals"])
    assert done.value.code == 0
    assert DataDir(tmp_path / "data" / "musan_music").utt_ids() == ["music-fma-0001", "music-rfm-0000"]
    with pytest.raises(SystemExit) as done:
        spk_main(["prepare", "rirs_noises", "--corpus-dir", str(tmp_path / "corpus"), "--data-dir",
                  str(tmp_path / "data"), "--sets", "rirs_smallroom noises_pointsource"])
    assert done.value.code == 0 and (tmp_path / "data" / "noises_pointsource" / "wav.scp").is_file()
    with pytest.raises(SystemExit) as failed:
        spk_main(["prepare", "rirs_noises", "--corpus-dir", str(tmp_path / "nowhere"), "--data-dir",
                  str(tmp_path / "data")])
    assert failed.value.code == 1
