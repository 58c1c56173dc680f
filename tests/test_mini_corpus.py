"""The synthetic ``mini`` corpus (local/mini.py, local/mini_text.py, local/espeak.py) and the
MFCC-mean baseline (spk/baseline.py), on a corpus of 7 speakers synthesised once per module."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from local.mini import MiniConfig, generate_corpus, plan_corpus, prepare_data_dirs
from local.mini_text import SentenceGenerator
from spk.data import DataDir, read_trials, validate_data_dir

TINY = MiniConfig(num_train_speakers=4, num_test_speakers=3, train_sessions=2, train_utts_per_session=2,
                  ident_utts=1, test_sessions=2, test_utts_per_session=2, num_dev_speakers=2,
                  seed=4)  # a seed that gives breathy voices, whose eSpeak noise must be seeded too
NUM_UTTS = 4 * (2 * 2 + 1) + 3 * (2 * 2) + 2 * (2 * 2)


def read_tsv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("mini") / "corpus"
    assert generate_corpus(out, TINY, nj=2) == out
    return out


@pytest.fixture(scope="module")
def data(corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("mini_data")
    counts = prepare_data_dirs(corpus, out, seed=0)
    assert counts == {"train": 4 * 2 * 2, "ident_test": 4 * 1, "test": 3 * 2 * 2, "dev": 2 * 2 * 2}
    return out


# --------------------------------------------------------------------------- planning


def test_sentences_never_repeat():
    generator = SentenceGenerator(np.random.default_rng(0))
    sentences = [generator.next() for _ in range(2000)]
    assert len(set(sentences)) == 2000
    assert all(s[0].isupper() and s[-1] in ".?" for s in sentences)


def test_sentences_are_deterministic():
    a = SentenceGenerator(np.random.default_rng(5))
    b = SentenceGenerator(np.random.default_rng(5))
    c = SentenceGenerator(np.random.default_rng(6))
    first = [a.next() for _ in range(50)]
    assert first == [b.next() for _ in range(50)]
    assert first != [c.next() for _ in range(50)]


def test_plan_is_deterministic_and_voices_differ():
    plan = plan_corpus(TINY)
    assert plan == plan_corpus(TINY)
    assert plan != plan_corpus(MiniConfig(**{**TINY.__dict__, "seed": 1}))
    assert [job.voice.speaker for job in plan] == [f"spk{i:03d}" for i in range(1, 10)]
    assert [job.voice.role for job in plan] == ["train"] * 4 + ["test"] * 3 + ["dev"] * 2
    assert len({job.voice.variant_text() for job in plan}) == 9
    assert len({(job.voice.pitch_low, job.voice.vtl_factor, job.voice.formant_freq) for job in plan}) == 9

    for job in plan:
        sessions = [s.session for s in job.sessions]
        if job.voice.role == "train":
            assert sessions == ["s1", "s2", "s3"]
            assert Counter(session for _, session, _ in job.utterances) == {"s1": 2, "s2": 2, "s3": 1}
        else:
            assert sessions == ["s1", "s2"]
            assert len(job.utterances) == 4
        assert len({(s.noise, s.snr_db, s.rt60, s.seed) for s in job.sessions}) == len(job.sessions)
    texts = [text for job in plan for _, _, text in job.utterances]
    assert len(texts) == NUM_UTTS == len(set(texts))


def test_dev_speakers_leave_train_and_test_speakers_unchanged():
    """Dev speakers are planned last, so a corpus with more or fewer of them has the same
    train and test speakers, sessions and sentences (results stay comparable)."""
    without_dev = plan_corpus(MiniConfig(**{**TINY.__dict__, "num_dev_speakers": 0}))
    assert plan_corpus(TINY)[:len(without_dev)] == without_dev


def test_voice_variant_text():
    voice = plan_corpus(TINY)[0].voice
    text = voice.variant_text()
    assert text.startswith("language variant\nname spk001\n")
    assert f"pitch {voice.pitch_low} {voice.pitch_high}" in text
    assert text.count("\nformant ") == len(voice.formant_freq)


# --------------------------------------------------------------------------- the generated corpus


def test_corpus_layout(corpus):
    for name in ("README.txt", "speakers.tsv", "sessions.tsv", "text.tsv", "config.tsv"):
        assert (corpus / name).is_file(), name
    assert "speakers.tsv" in (corpus / "README.txt").read_text()
    speakers = read_tsv(corpus / "speakers.tsv")
    assert list(speakers[0]) == ["speaker", "gender", "accent", "role", "pitch_low", "pitch_high",
                                 "vtl_factor", "words_per_minute"]
    assert [row["role"] for row in speakers] == ["train"] * 4 + ["test"] * 3 + ["dev"] * 2
    sessions = read_tsv(corpus / "sessions.tsv")
    assert len(sessions) == 4 * 3 + 3 * 2 + 2 * 2
    assert list(sessions[0]) == ["speaker", "session", "noise", "snr_db", "rt60", "drr_db", "gain_db"]
    text = read_tsv(corpus / "text.tsv")
    assert len(text) == NUM_UTTS
    assert len({row["sentence"] for row in text}) == NUM_UTTS
    wavs = sorted((corpus / "wav").rglob("*.wav"))
    assert len(wavs) == NUM_UTTS
    assert sorted(w.stem for w in wavs) == sorted(row["utterance"] for row in text)
    for wav in wavs:
        speaker, session, _ = wav.stem.split("-")
        assert wav.relative_to(corpus) == Path("wav", speaker, session, wav.name)
        info = sf.info(str(wav))
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        audio, _ = sf.read(str(wav), dtype="float32")
        assert 0.5 < len(audio) / 16000 < 20
        assert np.sqrt(np.mean(audio**2)) > 1e-3 and np.abs(audio).max() <= 1.0
    assert not list(corpus.parent.glob(f".{corpus.name}.*"))  # the staging folder is gone


@pytest.fixture(scope="module")
def serial_corpus(tmp_path_factory) -> Path:
    """The same corpus again, synthesised by one worker process."""
    return generate_corpus(tmp_path_factory.mktemp("mini_serial") / "corpus", TINY, nj=1)


def corpus_files(root: Path) -> list[Path]:
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())


def test_corpus_is_deterministic(corpus, serial_corpus, tmp_path):
    assert any(any(job.voice.breath) for job in plan_corpus(TINY))
    again = generate_corpus(tmp_path / "again", TINY, nj=1)
    assert corpus_files(again) == corpus_files(serial_corpus) == corpus_files(corpus)
    for name in corpus_files(serial_corpus):
        assert (serial_corpus / name).read_bytes() == (again / name).read_bytes(), name
        if name.suffix != ".wav":  # the plan and the metadata do not depend on nj
            assert (serial_corpus / name).read_bytes() == (corpus / name).read_bytes(), name


def test_corpus_does_not_depend_on_nj(corpus, serial_corpus):
    for name in corpus_files(serial_corpus):
        assert (serial_corpus / name).read_bytes() == (corpus / name).read_bytes(), name


def test_generate_again_skips(corpus):
    wav = next((corpus / "wav").rglob("*.wav"))
    before = wav.stat().st_mtime_ns
    assert generate_corpus(corpus, TINY, nj=2) == corpus
    assert wav.stat().st_mtime_ns == before


def test_other_config_on_existing_dir_refused(corpus, tmp_path):
    with pytest.raises(FileExistsError, match="not a complete mini corpus"):
        generate_corpus(corpus, MiniConfig(**{**TINY.__dict__, "seed": 3}), nj=1)
    (tmp_path / "half").mkdir()
    with pytest.raises(FileExistsError, match="remove it"):
        generate_corpus(tmp_path / "half", TINY, nj=1)


# --------------------------------------------------------------------------- data dirs and trials


def test_data_dirs_validate(data):
    for name, utts, speakers in (("train", 16, 4), ("ident_test", 4, 4), ("test", 12, 3), ("dev", 8, 2)):
        summary = validate_data_dir(data / name)
        assert (summary.num_utterances, summary.num_speakers) == (utts, speakers), name
        for path in DataDir(data / name).wav_scp().values():
            assert Path(path).is_absolute() and Path(path).is_file()


def test_data_dir_speaker_split(data):
    train = DataDir(data / "train").utt2spk()
    ident = DataDir(data / "ident_test").utt2spk()
    test = DataDir(data / "test").utt2spk()
    dev = DataDir(data / "dev").utt2spk()
    assert not set(test.values()) & set(train.values())
    assert not set(dev.values()) & (set(train.values()) | set(test.values()))
    assert set(ident.values()) <= set(train.values())
    assert not set(ident) & set(train)
    assert {u.split("-")[1] for u in ident} == {"s3"}  # the held-out session
    assert {u.split("-")[1] for u in train} == {"s1", "s2"}


@pytest.mark.parametrize("name, num_targets", [("test", 3 * 2 * 2), ("dev", 2 * 2 * 2)])
def test_trials(data, name, num_targets):
    trials = read_trials(data / name / "trials")
    test = DataDir(data / name).utt2spk()
    targets = [t for t in trials if t.target]
    assert len(targets) == len(trials) - len(targets) > 0
    assert len({(t.enroll, t.test) for t in trials}) == len(trials)
    for t in trials:
        assert t.enroll in test and t.test in test
        if t.target:
            assert test[t.enroll] == test[t.test]
            assert t.enroll.split("-")[1] != t.test.split("-")[1]  # different sessions
        else:
            assert test[t.enroll] != test[t.test]
    # every same-speaker cross-session pair is a target trial: speakers x 2 x 2
    assert len(targets) == num_targets


# --------------------------------------------------------------------------- baseline


def test_mfcc_mean_baseline(data):
    from spk.baseline import mfcc_mean_embeddings

    vectors = mfcc_mean_embeddings(data / "ident_test")
    assert sorted(vectors) == sorted(DataDir(data / "ident_test").utt2spk())
    for vector in vectors.values():
        assert vector.shape == (40,) and vector.dtype == np.float32 and np.isfinite(vector).all()
    # utterances differ (per-utterance normalisation would make every vector zero)
    assert len({v.tobytes() for v in vectors.values()}) == len(vectors)
