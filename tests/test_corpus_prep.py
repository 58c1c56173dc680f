"""Data preparation of the real corpora (local/librispeech.py, timit.py, voxceleb.py, commonvoice.py).

Each corpus is built here in its exact layout (FLAC for LibriSpeech, NIST SPHERE for
TIMIT, wav and m4a for VoxCeleb, mp3 for Common Voice) with tiny synthetic audio,
and with the mess real copies have: mixed-case paths, missing, empty and non-audio
files, stray files, a speaker with one utterance. Every data dir produced must
validate, and a failed preparation must leave nothing half-written.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import os
import pkgutil
import re
import shutil
import subprocess
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from local import commonvoice, librispeech, timit, voxceleb
from local.corpus import CorpusError, Utterance, segment_times
from local.download import DownloadError, completion_flag
from local.splits import split_by_count, split_by_seconds
from local.trials import make_trials
from spk.audio import AudioReader
from spk.cli import main as spk_main
from spk.data import DataDir, read_segments, read_trials, validate_data_dir

pytest_plugins = ("tests.fileserver",)  # the `server` fixture

RATE = 16000
SHARED_LIBRISPEECH = Path(__file__).resolve().parents[2] / "shared" / "data"


def tone(seconds: float, seed: int) -> np.ndarray:
    """A voiced-ish test signal: a sine at a seed-dependent pitch plus a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    return (0.3 * np.sin(2 * np.pi * (100 + 10 * seed) * t) + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


def write_audio(path: Path, seconds: float, seed: int, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, tone(seconds, seed), RATE, **kwargs)
    return path


def write_text(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def warnings_of(caplog) -> str:
    return "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)


def valid_sets(data_root: Path, names: set[str]) -> dict[str, DataDir]:
    """Every data dir under ``data_root`` (exactly ``names``) validates; nothing else is left there."""
    assert {p.name for p in data_root.iterdir()} == names
    for name in names:
        validate_data_dir(data_root / name)
    return {name: DataDir(data_root / name) for name in names}


def check_trials(data: DataDir) -> list:
    """Balanced, known ids, targets of one speaker and without shared audio."""
    trials = data.trials()
    utt2spk, segments = data.utt2spk(), data.segments()
    targets = [t for t in trials if t.target]
    assert targets and len(targets) == len(trials) - len(targets)
    assert len({(t.enroll, t.test) for t in trials}) == len(trials)
    for t in trials:
        assert (utt2spk[t.enroll] == utt2spk[t.test]) == t.target
        if t.target and segments is not None:
            a, b = segments[t.enroll], segments[t.test]
            assert a.recording != b.recording or a.end <= b.start or b.end <= a.start
    return trials


# =========================================================================== shared pieces


def test_segment_times():
    assert segment_times(7.0, 3.0, 2.0) == [(0, 3), (3, 7.0)]          # 1 s remainder joins
    assert segment_times(8.5, 3.0, 2.0) == [(0, 3), (3, 6), (6, 8.5)]  # 2.5 s remainder stands
    assert segment_times(2.5, 3.0, 2.0) == [(0, 2.5)]
    assert segment_times(1.5, 3.0, 2.0) == []
    with pytest.raises(ValueError):
        segment_times(5.0, 2.0, 3.0)


def utterance(utt: str, start: float = 0.0, end: float | None = None, duration: float = 10.0) -> Utterance:
    speaker, recording = utt.split("-")[0], "-".join(utt.split("-")[:2])
    return Utterance(utt=utt, speaker=speaker, recording=recording, source=f"/x/{recording}.flac",
                     session=recording, start=start, end=end, recording_duration=duration)


def test_trials_never_pair_overlapping_segments():
    utts = [utterance("a-r1-0", 0, 3), utterance("a-r1-1", 2, 5), utterance("a-r1-2", 5, 8),
            utterance("b-r2-0", 0, 3), utterance("b-r2-1", 3, 6), utterance("c-r3-0", 0, 3)]
    trials = make_trials(utts, seed=0)
    targets = {(t.enroll, t.test) for t in trials if t.target}
    assert targets == {("a-r1-0", "a-r1-2"), ("a-r1-1", "a-r1-2"), ("b-r2-0", "b-r2-1")}
    assert sum(not t.target for t in trials) == 3
    assert trials == make_trials(list(reversed(utts)), seed=0)  # deterministic, order-free
    capped = make_trials(utts, seed=0, max_targets_per_speaker=1)
    assert sum(t.target for t in capped) == 2


def test_splits_are_per_speaker_and_deterministic():
    utts = [utterance(f"s-r{i}", duration=2.0) for i in range(6)]
    train, held = split_by_seconds(utts, 4.0, seed=3)
    assert len(train) == 2 and len(held) == 4 and split_by_seconds(utts, 4.0, seed=3) == (train, held)
    assert split_by_seconds(utts, 12.0, seed=3) is None  # nothing left to hold out
    train, held = split_by_count(utts, 1, num_train=5, num_held_out=3)
    assert (len(train), len(held)) == (5, 1)
    train, held = split_by_count(utts, 1, num_held_out=2)
    assert (len(train), len(held)) == (4, 2)
    assert split_by_count(utts[:1], 1, num_held_out=1) is None


# =========================================================================== LibriSpeech

SPEAKERS_TXT = """\
; Some pipe(|) separated metadata
;ID  |SEX| SUBSET           |MINUTES| NAME
101  | F | train-clean-100  | 25.00 | Reader One
102  | M | train-clean-100  | 25.00 | |CBW|Simon
103  | F | train-clean-100  | 25.00 | Reader Three
104  | M | train-clean-100  | 25.00 | Reader Four
105  | F | train-clean-100  | 25.00 | Reader Five
106  | M | train-clean-100  | 25.00 | Reader Six
107  | F | train-clean-100  | 25.00 | Reader Seven
108  | M | train-clean-100  | 25.00 | Reader Eight
201  | F | test-clean       |  8.00 | Tester One
202  | M | test-clean       |  8.00 | Tester Two
203  | F | test-clean       |  8.00 | Tester Three
this line is broken
"""
LIBRI_DURATIONS = {"train-clean-100": {"101": [9.0], "102": [5.0, 4.0], "103": [8.0], "104": [8.0], "105": [8.0],
                                       "106": [8.0], "107": [1.5], "108": [0.5]},
                   "test-clean": {"201": [3.0, 3.0], "202": [3.0, 3.0], "203": [3.0, 3.0]}}


def build_librispeech(root: Path, *, messy: bool = True) -> Path:
    write_text(root / "LibriSpeech" / "SPEAKERS.TXT", SPEAKERS_TXT)
    for subset, speakers in LIBRI_DURATIONS.items():
        for speaker, durations in speakers.items():
            chapter = root / "LibriSpeech" / subset / speaker / f"{5000 + int(speaker)}"
            for index, seconds in enumerate(durations):
                write_audio(chapter / f"{speaker}-{chapter.name}-{index:04d}.flac", seconds, int(speaker) + index)
            write_text(chapter / f"{speaker}-{chapter.name}.trans.txt", "transcripts are ignored\n")
    if messy:
        train = root / "LibriSpeech" / "train-clean-100"
        write_text(train / "101" / "5101" / "101-5101-0007.flac", b"")                 # empty
        write_text(train / "102" / "5102" / "notes.txt", "stray\n")                    # stray
        write_text(train / "103" / "5103" / "103-5103-0009.flac", "not audio at all")  # not audio
        write_text(train / "104" / "5104" / "999-5104-0001.flac", "misplaced")         # wrong speaker
        write_text(train / "README.md", "stray at the speaker level\n")
    return root


@pytest.fixture(scope="module")
def libri_corpus(tmp_path_factory) -> Path:
    return build_librispeech(tmp_path_factory.mktemp("librispeech"))


LIBRI_OPTIONS = dict(subsets=("train-clean-100", "test-clean"), segment_length=2.0, min_segment_length=1.0,
                     num_test_speakers=4, train_seconds_per_speaker=4.0, seed=0, progress=False)


def test_librispeech_sets(libri_corpus, tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        summaries = librispeech.prepare(libri_corpus, tmp_path / "data", **LIBRI_OPTIONS)
    sets = valid_sets(tmp_path / "data", {"train", "ident_test", "test"})
    assert set(summaries) == set(sets)
    train, ident, test = (set(sets[name].speaker_ids()) for name in ("train", "ident_test", "test"))
    assert {"201", "202", "203", "107"} <= test and len(test) == 5 and "108" not in train | test
    assert train == ident and len(train) == 5 and not train & test
    for name, data in sets.items():
        segments = data.segments()
        assert all(utt.startswith(spk + "-") for utt, spk in data.utt2spk().items())
        assert all(seg.recording == "-".join(utt.split("-")[:3]) for utt, seg in segments.items())
        genders = dict(line.split() for line in data.file("spk2gender").read_text().splitlines())
        assert genders == {spk: "m" if int(spk) % 2 == 0 else "f" for spk in data.speaker_ids()}
    train_segments, ident_segments = sets["train"].segments(), sets["ident_test"].segments()
    for speaker, utts in sets["train"].spk2utt().items():
        assert sum(train_segments[u].end - train_segments[u].start for u in utts) == pytest.approx(4.0)
    for utt, seg in ident_segments.items():  # held-out audio never overlaps training audio
        for other in train_segments.values():
            assert other.recording != seg.recording or other.end <= seg.start or seg.end <= other.start
    check_trials(sets["test"])
    warned = warnings_of(caplog)
    for name in ("101-5101-0007.flac", "notes.txt", "103-5103-0009.flac", "999-5104-0001.flac", "README.md",
                 "108-5108-0000.flac", "SPEAKERS.TXT:14"):
        assert name in warned, name
    assert "empty (0 bytes)" in warned and "not audio" in warned and "join the test speakers" in warned
    assert "trans.txt" not in warned


def test_librispeech_is_deterministic_and_seeded(libri_corpus, tmp_path):
    librispeech.prepare(libri_corpus, tmp_path / "a", **LIBRI_OPTIONS)
    librispeech.prepare(libri_corpus, tmp_path / "b", **LIBRI_OPTIONS)
    for name in ("train", "ident_test", "test"):
        for file in ("wav.scp", "segments", "utt2spk", "trials"):
            if (tmp_path / "a" / name / file).exists():
                assert (tmp_path / "a" / name / file).read_bytes() == (tmp_path / "b" / name / file).read_bytes()
    drawn = set()
    for seed in range(6):
        librispeech.prepare(libri_corpus, tmp_path / f"s{seed}", **{**LIBRI_OPTIONS, "seed": seed})
        drawn |= set(DataDir(tmp_path / f"s{seed}" / "test").speaker_ids()) - {"201", "202", "203", "107"}
    assert len(drawn) > 1  # the seed picks which training-subset speaker is held out


def test_librispeech_whole_files_without_identification(libri_corpus, tmp_path):
    librispeech.prepare(libri_corpus, tmp_path / "data", **{**LIBRI_OPTIONS, "segment_length": 0,
                                                            "train_seconds_per_speaker": 0})
    sets = valid_sets(tmp_path / "data", {"train", "test"})
    assert not sets["train"].has("segments") and sets["train"].has("reco2dur")
    assert "102-5102-0001" in sets["train"].utt2spk() or "102-5102-0001" in sets["test"].utt2spk()


def test_librispeech_errors(libri_corpus, tmp_path):
    with pytest.raises(CorpusError, match="--download"):
        librispeech.prepare(libri_corpus, tmp_path / "d", **{**LIBRI_OPTIONS, "subsets": ("dev-clean",)})
    with pytest.raises(CorpusError, match="--min-segment-length 3"):
        librispeech.prepare(libri_corpus, tmp_path / "d", **{**LIBRI_OPTIONS, "min_segment_length": 3.0})
    with pytest.raises(CorpusError, match="--num-test-speakers 40"):
        librispeech.prepare(libri_corpus, tmp_path / "d", **{**LIBRI_OPTIONS, "num_test_speakers": 40})
    assert not (tmp_path / "d").exists() or not list((tmp_path / "d").iterdir())


def test_nothing_half_written_and_unchanged_sets_kept(libri_corpus, tmp_path, monkeypatch):
    data = tmp_path / "data"
    librispeech.prepare(libri_corpus, data, **LIBRI_OPTIONS)
    before = {p: p.read_bytes() for p in data.rglob("*") if p.is_file()}
    write_text(data / "train" / "feats.scp", "made by stage 1\n")

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("local.datadirs.write_trials", broken)
    with pytest.raises(OSError, match="disk full"):
        librispeech.prepare(libri_corpus, data, **{**LIBRI_OPTIONS, "seed": 5})
    monkeypatch.undo()
    after = {p: p.read_bytes() for p in data.rglob("*") if p.is_file() and p.name != "feats.scp"}
    assert after == before and not list(data.glob(".staging-*"))

    librispeech.prepare(libri_corpus, data, **LIBRI_OPTIONS)  # same result: the dirs stay, features too
    assert (data / "train" / "feats.scp").exists()
    librispeech.prepare(libri_corpus, data, **{**LIBRI_OPTIONS, "train_seconds_per_speaker": 2.0})
    assert not (data / "train" / "feats.scp").exists()  # changed: replaced whole, stale features gone
    valid_sets(data, {"train", "ident_test", "test"})


def test_librispeech_command_line(libri_corpus, tmp_path, capsys):
    args = ["--corpus-dir", str(libri_corpus), "--subsets", "train-clean-100, test-clean", "--data-dir",
            str(tmp_path / "data"), "--segment-length", "2", "--min-segment-length", "1",
            "--num-test-speakers", "4", "--train-seconds-per-speaker", "4", "--seed", "0", "--no-download"]
    for required in ("--seed", "--no-download"):  # the recipes' run.sh declare them: no default here
        position = args.index(required)
        with pytest.raises(SystemExit) as missing:
            spk_main(["prepare", "librispeech", *args[:position], *args[position + 1 + (required == "--seed"):]])
        assert missing.value.code == 2 and f"Missing option '{required.replace('no-', '')}" in capsys.readouterr().err
    with pytest.raises(SystemExit) as done:
        spk_main(["prepare", "librispeech", *args])
    assert done.value.code == 0
    valid_sets(tmp_path / "data", {"train", "ident_test", "test"})
    with pytest.raises(SystemExit) as failed:
        spk_main(["prepare", "librispeech", *args, "--subsets", "test-other"])
    assert failed.value.code == 1 and "test-other" in capsys.readouterr().err


def test_librispeech_download_stage(libri_corpus, tmp_path, server):
    for subset in ("train-clean-100", "test-clean"):
        archive = tmp_path / f"{subset}.tar.gz"
        with tarfile.open(archive, "w:gz") as tar:
            tar.add(libri_corpus / "LibriSpeech" / subset, arcname=f"LibriSpeech/{subset}")
            tar.add(libri_corpus / "LibriSpeech" / "SPEAKERS.TXT", arcname="LibriSpeech/SPEAKERS.TXT")
        server.files[f"/12/{subset}.tar.gz"] = archive.read_bytes()
    md5 = {name[4:-7]: hashlib.md5(data).hexdigest() for name, data in server.files.items()}
    corpus = tmp_path / "corpus"
    options = dict(base_urls=(f"{server.url}/12",), md5=md5, progress=False, retry_wait=0)
    librispeech.download_subsets(("train-clean-100", "test-clean"), corpus, **options)
    assert completion_flag("test-clean.tar.gz", corpus).is_file()
    assert (corpus / "downloads" / "test-clean.tar.gz").is_file()
    librispeech.download_subsets(("train-clean-100", "test-clean"), corpus, **options)
    assert len(server.requests) == 2  # the second call fetched nothing
    librispeech.prepare(corpus, tmp_path / "data", **LIBRI_OPTIONS)
    valid_sets(tmp_path / "data", {"train", "ident_test", "test"})
    with pytest.raises(CorpusError, match="no download"):
        librispeech.download_subsets(("train-clean-5",), corpus, **options)
    with pytest.raises(DownloadError, match="md5"):
        librispeech.download_subsets(("test-clean",), tmp_path / "other", **{**options, "md5": {"test-clean": "0" * 32}})
    assert not (tmp_path / "other" / "LibriSpeech").exists()
    assert list((tmp_path / "other" / "downloads").iterdir()) == []


@pytest.mark.skipif(not (SHARED_LIBRISPEECH / "LibriSpeech" / "train-clean-100").is_dir(),
                    reason="the shared LibriSpeech excerpt is not here")
def test_librispeech_shared_excerpt(tmp_path):
    summaries = librispeech.prepare(SHARED_LIBRISPEECH, tmp_path / "data", subsets=("train-clean-100",),
                                    segment_length=3.0, min_segment_length=2.0, train_seconds_per_speaker=9.0,
                                    num_test_speakers=50, seed=0, progress=False)
    sets = valid_sets(tmp_path / "data", {"train", "ident_test", "test"})
    train, test = set(sets["train"].speaker_ids()), set(sets["test"].speaker_ids())
    assert len(test) >= 50 and not train & test and set(sets["ident_test"].speaker_ids()) == train
    assert len(train) + len(test) <= 251 and summaries["train"].num_utterances == 3 * len(train)
    assert len(check_trials(sets["test"])) > 500


# =========================================================================== TIMIT

SENTENCES = ("SA1", "SA2", "SI1027", "SI1657", "SI648", "SX127", "SX217", "SX307", "SX37", "SX397")


def build_timit(root: Path) -> Path:
    def speaker(folder: Path, sentences=SENTENCES, lower=False, seed=0):
        for index, sentence in enumerate(sentences):
            name = f"{sentence}.WAV".lower() if lower else f"{sentence}.WAV"
            write_audio(folder / name, 0.25, seed + index, format="NIST", subtype="PCM_16")
            write_text(folder / (name[:-4] + (".phn" if lower else ".PHN")), "0 100 h#\n")

    base = root / "TIMIT"
    speaker(base / "TRAIN" / "DR1" / "FCJF0", seed=1)
    speaker(base / "TRAIN" / "dr2" / "mabc0", lower=True, seed=2)
    speaker(base / "TRAIN" / "DR1" / "MDEF0", sentences=("SI5",), seed=3)  # a speaker with one sentence
    speaker(base / "test" / "DR1" / "FGHI0", seed=4)
    speaker(base / "test" / "dr3" / "mjkl0", lower=True, seed=5)
    write_text(base / "TRAIN" / "DR1" / "FCJF0" / "SX99.WAV", "not a sphere file")
    write_text(base / "TRAIN" / "DR1" / "FCJF0" / "SX98.WAV", b"")
    write_audio(base / "TRAIN" / "DR1" / "FCJF0" / "si1027.wav", 0.25, 9, format="NIST", subtype="PCM_16")
    write_text(base / "TRAIN" / "DR1" / ".DS_Store", b"\0\0")
    write_text(base / "test" / "dr3" / "mjkl0" / "notes.txt", "stray")
    return root


@pytest.fixture(scope="module")
def timit_corpus(tmp_path_factory) -> Path:
    return build_timit(tmp_path_factory.mktemp("timit"))


def test_timit_sets(timit_corpus, tmp_path, caplog):
    assert (timit_corpus / "TIMIT/test/DR1/FGHI0/SI648.WAV").read_bytes().startswith(b"NIST_1A")
    with caplog.at_level(logging.WARNING):
        timit.prepare(timit_corpus, tmp_path / "data", include_sa=False, seed=0, progress=False)
    sets = valid_sets(tmp_path / "data", {"train", "ident_test", "test"})
    assert Counter(sets["train"].utt2spk().values()) == {"FCJF0": 5, "MABC0": 5}
    assert Counter(sets["ident_test"].utt2spk().values()) == {"FCJF0": 3, "MABC0": 3}
    assert Counter(sets["test"].utt2spk().values()) == {"FGHI0": 8, "MJKL0": 8}
    all_utts = [u for data in sets.values() for u in data.utt2spk()]
    assert not any("-SA" in u for u in all_utts) and all(u == u.upper() for u in all_utts)
    assert not set(sets["train"].utt2spk()) & set(sets["ident_test"].utt2spk())
    assert sets["test"].file("spk2gender").read_text() == "FGHI0 f\nMJKL0 m\n"
    trials = check_trials(sets["test"])
    assert sum(t.target for t in trials) == 2 * 28
    warned = warnings_of(caplog)
    for name in ("SX99.WAV", "SX98.WAV", ".DS_Store", "notes.txt", "si1027.wav", "MDEF0 (1)"):
        assert name in warned, name
    assert ".PHN" not in warned and ".phn" not in warned
    reader = AudioReader(sets["test"].wav_scp())
    assert len(reader.read("FGHI0-SI648")) == int(0.25 * RATE)


def test_timit_with_sa_and_missing_corpus(timit_corpus, tmp_path):
    timit.prepare(timit_corpus / "TIMIT", tmp_path / "data", include_sa=True, seed=0, progress=False)
    assert Counter(DataDir(tmp_path / "data" / "test").utt2spk().values()) == {"FGHI0": 10, "MJKL0": 10}
    with pytest.raises(CorpusError, match="LDC93S1"):
        timit.prepare(tmp_path / "nowhere", tmp_path / "data2", include_sa=False, seed=0, progress=False)
    assert not (tmp_path / "data2").exists()


# =========================================================================== VoxCeleb

VOX1_FILES = {"id10270": {"vidA": 2, "vidB": 1}, "id10271": {"vidC": 2}, "id10001": {"vidD": 2},
              "id10002": {"vidE": 1, "vidF": 1}}
VERI_TEST2 = """\
1 id10270/vidA/00001.wav id10270/vidB/00001.wav
0 id10270/vidA/00001.wav id10271/vidC/00001.wav
1 id10271/vidC/00001.wav id10271/vidC/00002.wav
0 id10270/vidA/00002.wav id10271/vidC/00003.wav
0 id10270/vidB/00001.wav id10271/vidC/00002.wav
"""
LIST_TEST_ALL2 = """\
1 id10001/vidD/00001.wav id10001/vidD/00002.wav
0 id10001/vidD/00001.wav id10002/vidE/00001.wav
1 id10002/vidE/00001.wav id10002/vidF/00001.wav
0 id10270/vidA/00001.wav id10002/vidF/00001.wav
"""
IDEN_SPLIT = """\
1 id10001/vidD/00001.wav
3 id10001/vidD/00002.wav
1 id10002/vidE/00001.wav
2 id10002/vidF/00001.wav
3 id10002/vidF/00001.wav
1 id10270/vidA/00001.wav
3 id10270/vidB/00001.wav
2 id10271/vidC/00002.wav
"""
HAVE_FFMPEG = shutil.which("ffmpeg") is not None


def build_voxceleb(root: Path) -> tuple[Path, Path]:
    vox1, vox2 = root / "vox1", root / "vox2"
    for number, (speaker, videos) in enumerate(VOX1_FILES.items()):
        for video, count in videos.items():
            for index in range(1, count + 1):
                write_audio(vox1 / "wav" / speaker / video / f"{index:05d}.wav", 0.3, number + index)
    write_text(vox1 / "wav" / "id10002" / "vidF" / "00002.wav", b"")     # empty
    write_text(vox1 / "wav" / "id10001" / "README.txt", "stray")          # a file where videos are
    write_text(vox1 / "wav" / "id10001" / "vidD" / "notes.txt", "stray")
    write_text(vox1 / "meta" / "veri_test2.txt", VERI_TEST2)
    write_text(vox1 / "meta" / "list_test_all2.txt", LIST_TEST_ALL2)
    write_text(vox1 / "meta" / "iden_split.txt", IDEN_SPLIT)
    for speaker in ("id00012", "id00013"):
        for index in (1, 2):
            m4a = vox2 / "dev" / "aac" / speaker / "vidX" / f"{index:05d}.m4a"
            if HAVE_FFMPEG:
                wav = write_audio(m4a.with_suffix(".wav"), 0.3, index)
                subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(wav), str(m4a)], check=True)
                wav.unlink()
            else:
                write_text(m4a, b"\0\0\0\x20ftypM4A not decodable without ffmpeg")
    return vox1, vox2


@pytest.fixture(scope="module")
def vox_corpus(tmp_path_factory) -> tuple[Path, Path]:
    return build_voxceleb(tmp_path_factory.mktemp("voxceleb"))


def test_voxceleb_trials_and_training(vox_corpus, tmp_path, caplog):
    vox1, vox2 = vox_corpus
    with caplog.at_level(logging.WARNING):
        voxceleb.prepare(tmp_path / "data", vox1_dir=vox1, vox2_dir=vox2, trial_lists=("vox1_o",),
                         train_on=("vox1_dev", "vox2_dev"), iden=False, progress=False)
    sets = valid_sets(tmp_path / "data", {"vox1_o", "train"})
    trials = sets["vox1_o"].trials()
    assert [(t.enroll, t.test, t.target) for t in trials][:2] == [
        ("id10270-vidA-00001", "id10270-vidB-00001", True), ("id10270-vidA-00001", "id10271-vidC-00001", False)]
    assert len(trials) == 4  # the line without audio is dropped
    assert sets["train"].speaker_ids() == ["id00012", "id00013", "id10001", "id10002"]
    wav_scp = sets["train"].wav_scp()
    m4a = vox2.absolute() / "dev/aac/id00012/vidX/00001.m4a"
    assert wav_scp["id00012-vidX-00001"] == f"ffmpeg -nostdin -loglevel error -i {m4a} -f wav -ac 1 -ar 16000 - |"
    assert wav_scp["id10001-vidD-00001"] == str(vox1.absolute() / "wav/id10001/vidD/00001.wav")
    warned = warnings_of(caplog)
    for text in ("veri_test2.txt:4", "id10271/vidC/00003.wav", "vidF/00002.wav", "README.txt", "notes.txt"):
        assert text in warned, text


def test_voxceleb_e_h_keep_vox1_speakers_out_of_training(vox_corpus, tmp_path, caplog):
    vox1, vox2 = vox_corpus
    with caplog.at_level(logging.WARNING):
        voxceleb.prepare(tmp_path / "data", vox1_dir=vox1, vox2_dir=vox2, trial_lists=("vox1_o", "vox1_e"),
                         train_on=("vox1_dev", "vox2_dev"), iden=False, progress=False)
    sets = valid_sets(tmp_path / "data", {"vox1_o", "vox1_e", "train"})
    assert sets["train"].speaker_ids() == ["id00012", "id00013"]
    assert "removed from training" in warnings_of(caplog)
    assert len(sets["vox1_e"].trials()) == 4
    voxceleb.prepare(tmp_path / "kept", vox1_dir=vox1, vox2_dir=vox2, trial_lists=("vox1_e",),
                     train_on=("vox1_dev",), iden=False, keep_test_speakers=True, progress=False)
    assert DataDir(tmp_path / "kept" / "train").speaker_ids() == ["id10001", "id10002"]
    with pytest.raises(CorpusError, match="no training utterance"):
        voxceleb.prepare(tmp_path / "none", vox1_dir=vox1, trial_lists=("vox1_e",), train_on=("vox1_dev",),
                         iden=False, progress=False)


def test_voxceleb_identification_split(vox_corpus, tmp_path):
    vox1, _ = vox_corpus
    voxceleb.prepare(tmp_path / "data", vox1_dir=vox1, trial_lists=(), train_on=(), iden=True, progress=False)
    sets = valid_sets(tmp_path / "data", {"iden_train", "iden_dev", "iden_test"})
    assert sorted(sets["iden_test"].utt2spk()) == ["id10001-vidD-00002", "id10002-vidF-00001",
                                                   "id10270-vidB-00001"]


def test_voxceleb_errors(vox_corpus, tmp_path):
    vox1, _ = vox_corpus
    broken = tmp_path / "meta"
    write_text(broken / "veri_test2.txt", VERI_TEST2.replace("0 id10270/vidA/00001.wav id10271",
                                                             "2 id10270/vidA/00001.wav id10271"))
    vox1_o = dict(trial_lists=("vox1_o",), train_on=(), iden=False, progress=False)
    with pytest.raises(CorpusError, match=r"veri_test2.txt:2: expected"):
        voxceleb.prepare(tmp_path / "data", vox1_dir=vox1, meta_dir=broken, **vox1_o)
    with pytest.raises(CorpusError, match="given out on request"):
        voxceleb.prepare(tmp_path / "data", vox1_dir=tmp_path / "nothing", **vox1_o)
    with pytest.raises(CorpusError, match="list_test_hard2.txt is missing"):
        voxceleb.prepare(tmp_path / "data", vox1_dir=vox1, **{**vox1_o, "trial_lists": ("vox1_h",)})
    with pytest.raises(CorpusError, match="--trial-lists vox1_x"):
        voxceleb.prepare(tmp_path / "data", vox1_dir=vox1, **{**vox1_o, "trial_lists": ("vox1_x",)})
    assert not (tmp_path / "data").exists()


def test_voxceleb_download_of_the_lists(tmp_path, server):
    server.files["/meta/veri_test2.txt"] = VERI_TEST2.encode()
    server.files["/meta/iden_split.txt"] = IDEN_SPLIT.encode()
    options = dict(base_urls=(f"{server.url}/meta",), md5={"veri_test2.txt": hashlib.md5(VERI_TEST2.encode())
                                                           .hexdigest()}, progress=False, retry_wait=0)
    with pytest.raises(DownloadError, match="8 lines downloaded, 9 expected"):
        voxceleb.download_meta(("vox1_o",), tmp_path, iden=True, lines={"iden_split.txt": 9}, **options)
    assert not (tmp_path / "iden_split.txt").exists() and not (tmp_path / "iden_split.txt.part").exists()
    voxceleb.download_meta(("vox1_o",), tmp_path, iden=True, lines={"iden_split.txt": 8}, **options)
    assert (tmp_path / "veri_test2.txt").read_text() == VERI_TEST2
    assert (tmp_path / "iden_split.txt").read_text() == IDEN_SPLIT


@pytest.mark.skipif(not HAVE_FFMPEG, reason="ffmpeg is not installed: m4a cannot be made or decoded")
def test_voxceleb2_m4a_decodes_through_the_pipe(vox_corpus, tmp_path):
    vox1, vox2 = vox_corpus
    voxceleb.prepare(tmp_path / "data", vox2_dir=vox2, trial_lists=(), train_on=("vox2_dev",), iden=False,
                     progress=False)
    data = DataDir(tmp_path / "data" / "train")
    audio = AudioReader(data.wav_scp()).read("id00013-vidX-00002")
    assert abs(len(audio) - 0.3 * RATE) < 0.05 * RATE


# =========================================================================== Common Voice

TSV_HEADER = "client_id\tpath\tsentence\tup_votes\tdown_votes\tage\tgender\taccents\tvariant\tlocale\tsegment\n"


def client(letter: str) -> str:
    return hashlib.sha512(letter.encode()).hexdigest()


def build_commonvoice(root: Path) -> Path:
    def row(who: str, clip: str, lang: str) -> str:
        return f"{client(who)}\t{clip}\tA sentence \"quoted\".\t2\t0\t\t\t\t\t{lang}\t\n"

    for lang, speakers in (("en", {"A": 5, "B": 5, "C": 5, "D": 5, "E": 5, "G": 1}), ("de", {"H": 4, "A": 2})):
        lines = [TSV_HEADER]
        number = 0
        for who, count in speakers.items():
            for _ in range(count):
                number += 1
                clip = f"common_voice_{lang}_{number}.mp3"
                write_audio(root / lang / "clips" / clip, 0.3, number, format="MP3")
                lines.append(row(who, clip, lang))
        if lang == "en":
            lines.append(row("B", "common_voice_en_404.mp3", lang))                    # clip missing
            write_text(root / "en" / "clips" / "common_voice_en_500.mp3", b"")          # empty clip
            lines.append(row("C", "common_voice_en_500.mp3", lang))
            lines.append(f"{client('D')}\tcommon_voice_en_1.mp3\n")                     # too few fields
            lines.append(row("E", "common_voice_en_2.mp3", lang))                       # listed twice
            write_text(root / "en" / "clips" / "stray.txt", "not listed")
        write_text(root / lang / "validated.tsv", "".join(lines))
    return root


@pytest.fixture(scope="module")
def cv_corpus(tmp_path_factory) -> Path:
    return build_commonvoice(tmp_path_factory.mktemp("commonvoice"))


CV_OPTIONS = dict(languages=("en",), min_utts_per_speaker=5, max_utts_per_speaker=None, num_test_speakers=2,
                  ident_utts_per_speaker=1, seed=0)


def test_commonvoice_sets(cv_corpus, tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        commonvoice.prepare(cv_corpus, tmp_path / "data", **{**CV_OPTIONS, "languages": ("en", "de"),
                                                             "min_utts_per_speaker": 3})
    sets = valid_sets(tmp_path / "data", {"train", "ident_test", "test"})
    mapping = {}
    for data in sets.values():
        mapping.update(line.split() for line in data.file("spk2client_id").read_text().splitlines())
    assert set(mapping.values()) == {client(who) for who in "ABCDEH"}  # G has one clip: left out
    assert all(len(spk) == 12 and spk == commonvoice.speaker_id(cid) for spk, cid in mapping.items())
    test, train = set(sets["test"].speaker_ids()), set(sets["train"].speaker_ids())
    assert len(test) == 2 and not test & train and set(sets["ident_test"].speaker_ids()) == train
    assert all(count == 1 for count in Counter(sets["ident_test"].utt2spk().values()).values())
    speaker_a = commonvoice.speaker_id(client("A"))
    langs = dict(line.split() for data in sets.values() for line in data.file("utt2lang").read_text().splitlines())
    assert Counter(lang for utt, lang in langs.items() if utt.startswith(speaker_a)) == {"en": 5, "de": 2}
    check_trials(sets["test"])
    warned = warnings_of(caplog)
    for text in ("common_voice_en_404.mp3", "common_voice_en_500.mp3", "validated.tsv:30", "validated.tsv:31",
                 "listed again"):
        assert text in warned, text
    utt = sets["train"].utt_ids()[0]
    assert len(AudioReader(sets["train"].wav_scp()).read(utt)) > 0.25 * RATE  # mp3 read as wav.scp says


def test_commonvoice_errors(cv_corpus, tmp_path):
    with pytest.raises(CorpusError, match="commonvoice.mozilla.org"):
        commonvoice.prepare(cv_corpus, tmp_path / "data", **{**CV_OPTIONS, "languages": ("fr",)})
    with pytest.raises(CorpusError, match="--num-test-speakers 9"):
        commonvoice.prepare(cv_corpus, tmp_path / "data", **{**CV_OPTIONS, "num_test_speakers": 9})
    write_text(tmp_path / "bad" / "en" / "validated.tsv", "who\twhat\n")
    with pytest.raises(CorpusError, match="validated.tsv:1: the header has no client_id"):
        commonvoice.prepare(tmp_path / "bad", tmp_path / "data", **CV_OPTIONS)
    assert not (tmp_path / "data").exists()


def test_segments_of_one_recording_share_its_wav_scp_line(libri_corpus, tmp_path):
    librispeech.prepare(libri_corpus, tmp_path / "data", **LIBRI_OPTIONS)
    segments = read_segments(tmp_path / "data" / "ident_test" / "segments")
    reader = AudioReader(DataDir(tmp_path / "data" / "ident_test").wav_scp(), segments)
    utt = next(iter(segments))
    assert len(reader.read(utt)) == pytest.approx((segments[utt].end - segments[utt].start) * RATE, abs=2)
    assert read_trials(tmp_path / "data" / "test" / "trials")


# =========================================================================== `spk prepare` and the recipes' stage 0

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def test_spk_prepare_lists_every_corpus_module():
    """`spk prepare --help` names every module of local/ that defines a preparation command, and each loads."""
    from click.testing import CliRunner

    import local
    from local.cli import CORPORA

    modules = {m.name for m in pkgutil.iter_modules(local.__path__)
               if hasattr(importlib.import_module(f"local.{m.name}"), "command")}
    assert modules == set(CORPORA)
    listing = CliRunner().invoke(spk_main, ["prepare", "--help"], prog_name="spk")
    assert listing.exit_code == 0
    for corpus in CORPORA:
        assert f"  {corpus} " in listing.output
        usage = CliRunner().invoke(spk_main, ["prepare", corpus, "--help"], prog_name="spk")
        assert usage.exit_code == 0 and f"spk prepare {corpus} [OPTIONS]" in usage.output


def shell_words(script: Path, variable: str) -> list[str]:
    """The words of ``variable="..."`` in a shell script."""
    match = re.search(rf'^{variable}="([^"]*)"$', script.read_text(), re.MULTILINE)
    assert match, f"{script} sets no {variable}"
    return match.group(1).split()


@pytest.mark.parametrize("recipe", sorted(p.parent.name for p in RECIPES.glob("*/run.sh")))
def test_recipe_data_script_takes_the_options_of_run_sh(recipe):
    """run.sh declares the options (and their defaults); stage 0 hands them all to local/data.sh."""
    data_sh = RECIPES / recipe / "local" / "data.sh"
    assert data_sh.stat().st_mode & 0o111, f"{data_sh} is not executable"
    assert shell_words(RECIPES / recipe / "run.sh", "recipe_option_names") == \
        shell_words(data_sh, "data_option_names")


def test_timit_recipe_stage_0_runs_its_data_script(timit_corpus, tmp_path):
    """./run.sh -> steps/stages.sh -> local/data.sh -> spk prepare timit, with the options given to run.sh."""
    (tmp_path / "run.sh").write_text((RECIPES / "timit" / "run.sh").read_text())
    (tmp_path / "run.sh").chmod(0o755)
    for name in ("path.sh", "steps", "conf", "local"):
        os.symlink(RECIPES / "timit" / name, tmp_path / name)
    done = subprocess.run(["./run.sh", "--stage", "0", "--stop-stage", "0", "--corpus-dir", str(timit_corpus),
                           "--include-sa", "true"], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr[-4000:]
    assert f"+ local/data.sh --corpus-dir {timit_corpus} --include-sa true --seed 0" in done.stderr
    valid_sets(tmp_path / "data", {"train", "ident_test", "test"})
    assert Counter(DataDir(tmp_path / "data" / "test").utt2spk().values()) == {"FGHI0": 10, "MJKL0": 10}
    alone = subprocess.run(["local/data.sh", "--corpus-dir", str(timit_corpus), "--seed", "0"], cwd=tmp_path,
                           capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert alone.returncode == 1 and "option --include-sa is missing" in alone.stderr
