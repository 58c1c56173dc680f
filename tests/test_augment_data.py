"""Offline augmentation (spk/augment/offline.py, spk/data/combine.py: `spk augment data|speed|combine`) on real wav files and data dirs."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from spk.augment import AugmentError
from spk.augment.builtin import make_sources
from spk.augment.offline import augment_data_dir, speed_perturb_data_dir
from spk.augment.options import parse_factors, parse_kinds, parse_range
from spk.cli import main
from spk.data import DataDir, DataDirError, DataDirUsageError, combine_data_dirs, read_kv, validate_data_dir

RATE = 16000
SMALL = {"rooms_per_size": 2, "rirs_per_room": 2, "noises_per_kind": 1, "music_pieces": 2}
SPEAKERS = ("spkA", "spkB", "spkC")


def speech_like(seconds: float, seed: int) -> np.ndarray:
    """A harmonic signal with syllable-rate pauses: speech-shaped enough, and well below full scale."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    phase = 2 * np.pi * np.cumsum(110 + 15 * seed % 60 + 10 * np.sin(2 * np.pi * 0.7 * t)) / RATE
    voiced = sum(np.sin(k * phase) / k for k in range(1, 10))
    envelope = np.clip(np.sin(2 * np.pi * 3 * t + seed), 0, None)
    return (0.1 * voiced * envelope + 0.002 * rng.standard_normal(len(t))).astype(np.float32)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, Path]:
    """A 3-speaker data dir (with spk2gender and trials), built-in sources, and a babble set drawn from it."""
    root = tmp_path_factory.mktemp("augment")
    src = root / "data" / "train"
    (src / "audio").mkdir(parents=True)
    wav_scp, utt2spk = [], []
    for s, spk in enumerate(SPEAKERS):
        for u in range(3):
            utt = f"{spk}-u{u}"
            path = src / "audio" / f"{utt}.wav"
            sf.write(path, speech_like(0.8 + 0.2 * u, 10 * s + u), RATE, subtype="PCM_16")
            wav_scp.append(f"{utt} {path}")
            utt2spk.append(f"{utt} {spk}")
    (src / "wav.scp").write_text("\n".join(wav_scp) + "\n")
    (src / "utt2spk").write_text("\n".join(utt2spk) + "\n")
    (src / "spk2utt").write_text("".join(f"{spk} {' '.join(f'{spk}-u{u}' for u in range(3))}\n" for spk in SPEAKERS))
    (src / "spk2gender").write_text("spkA f\nspkB m\nspkC f\n")
    (src / "trials").write_text("spkA-u0 spkA-u1 target\nspkA-u0 spkB-u1 nontarget\n")
    validate_data_dir(src)
    sources = root / "aug_sources"
    make_sources(sources, seed=0, speech_from=src, **SMALL)
    test_sources = root / "aug_sources_test"
    make_sources(test_sources, seed=1, **SMALL)
    return {"root": root, "src": src, "sources": sources, "test_sources": test_sources}


def snapshot(path: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(path)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(path.rglob("*"))}


def read(path: str) -> np.ndarray:
    wave, rate = sf.read(path, dtype="float32")
    assert rate == RATE
    return wave


def notes(out: Path) -> dict[str, dict[str, str]]:
    """utt2aug as utt -> {field: value}."""
    return {utt: dict(word.split("=", 1) for word in line.split()) for utt, line in read_kv(out / "utt2aug").items()}


def test_every_kind_makes_a_valid_dir_with_suffixed_ids_and_the_same_speakers(corpus, tmp_path):
    before = snapshot(corpus["src"])
    out = tmp_path / "train_aug"
    summary = augment_data_dir(corpus["src"], out, sources=corpus["sources"], seed=0)
    assert snapshot(corpus["src"]) == before  # the source is only read
    assert summary.num_utterances == 9 * 4 and summary.num_speakers == 3
    data, clean = DataDir(out), DataDir(corpus["src"])
    utt2spk = data.utt2spk()
    assert sorted(utt2spk) == sorted(f"{utt}-{kind}" for utt in clean.utt2spk()
                                     for kind in ("reverb", "noise", "music", "babble"))
    assert all(spk == clean.utt2spk()[utt.rsplit("-", 1)[0]] for utt, spk in utt2spk.items())
    assert read_kv(out / "utt2uniq") == {utt: utt.rsplit("-", 1)[0] for utt in utt2spk}
    assert read_kv(out / "spk2gender") == read_kv(corpus["src"] / "spk2gender")
    assert not (out / "trials").exists()
    durations = data.utt2dur()
    for utt, path in data.wav_scp().items():
        assert Path(path).is_absolute() and Path(path).is_relative_to(out.absolute() / "wav")
        wave = read(path)
        original = read(clean.wav_scp()[utt.rsplit("-", 1)[0]])
        assert len(wave) == len(original) and durations[utt] == pytest.approx(len(wave) / RATE, abs=1e-6)
        assert not np.allclose(wave, original, atol=1e-3)
    described = notes(out)
    assert all(k.startswith("smallroom-") or k.startswith("mediumroom-") or k.startswith("largeroom-")
               for k in (n["rir"] for u, n in described.items() if u.endswith("-reverb")))
    assert all(n["noise"].startswith("noise-") for u, n in described.items() if u.endswith("-noise"))
    assert all(n["music"].startswith("music-") for u, n in described.items() if u.endswith("-music"))
    for utt, fields in described.items():
        if utt.endswith("-babble"):
            talkers = [item.split("@")[0] for item in fields["babble"].split(",")]
            assert 3 <= len(talkers) <= 7 and len(fields["babble_snrs"].split(",")) == len(talkers)
            assert not any(t.startswith(utt2spk[utt] + "-") for t in talkers)  # never the utterance's own speaker
            assert all(13 <= float(v) <= 20 for v in fields["babble_snrs"].split(","))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train_aug"]  # no staging left


@pytest.mark.parametrize("kind, snr", [("noise", "0:15"), ("music", "5:8")])
def test_written_audio_has_the_requested_snr(corpus, tmp_path, kind, snr):
    out = tmp_path / kind
    augment_data_dir(corpus["src"], out, kinds=[kind], sources=corpus["sources"], snrs={kind: parse_range(snr, "x")},
                     seed=3)
    clean, data = DataDir(corpus["src"]).wav_scp(), DataDir(out).wav_scp()
    low, high = parse_range(snr, "x")
    seen = []
    for utt, fields in notes(out).items():
        requested = float(fields[f"{kind}_snr"])
        assert low <= requested <= high and "gain" not in fields
        speech = read(clean[utt.rsplit("-", 1)[0]]).astype(np.float64)
        noise = read(data[utt]).astype(np.float64) - speech
        measured = 10 * np.log10(np.mean(speech**2) / np.mean(noise**2))
        assert measured == pytest.approx(requested, abs=0.5)
        seen.append(requested)
    assert len(set(seen)) == len(seen)  # drawn per copy


def test_results_are_deterministic_whatever_nj_and_num(corpus, tmp_path):
    one = tmp_path / "one"
    augment_data_dir(corpus["src"], one, sources=corpus["sources"], seed=5, nj=1)
    two = tmp_path / "two"
    augment_data_dir(corpus["src"], two, sources=corpus["sources"], seed=5, nj=2)
    some = tmp_path / "some"
    augment_data_dir(corpus["src"], some, sources=corpus["sources"], seed=5, num=7)
    other = tmp_path / "other"
    augment_data_dir(corpus["src"], other, kinds=["noise"], sources=corpus["sources"], seed=6)
    assert (one / "utt2aug").read_text() == (two / "utt2aug").read_text()
    picked = DataDir(some).utt_ids()
    assert len(picked) == 7 and set(picked) < set(DataDir(one).utt_ids())
    for utt in DataDir(one).utt_ids():
        first = read(DataDir(one).wav_scp()[utt])
        assert np.array_equal(first, read(DataDir(two).wav_scp()[utt]))
        if utt in picked:  # a copy does not depend on which others are made
            assert np.array_equal(first, read(DataDir(some).wav_scp()[utt]))
    assert notes(other)["spkA-u0-noise"] != notes(one)["spkA-u0-noise"]  # another seed, other draws


def test_keep_ids_makes_a_noisy_test_condition_with_the_same_ids_and_trials(corpus, tmp_path):
    out = tmp_path / "test_noisy"
    augment_data_dir(corpus["src"], out, kinds=["reverb", "noise"], sources=corpus["test_sources"],
                     snrs={"noise": (0.0, 10.0)}, keep_ids=True, seed=1)
    data, clean = DataDir(out), DataDir(corpus["src"])
    assert data.utt2spk() == clean.utt2spk()
    assert (out / "trials").read_text() == (corpus["src"] / "trials").read_text()
    assert not (out / "utt2uniq").exists()
    for utt, fields in notes(out).items():
        assert set(fields) == {"rir", "noise", "noise_snr"} and 0.0 <= float(fields["noise_snr"]) <= 10.0
        assert len(read(data.wav_scp()[utt])) == len(read(clean.wav_scp()[utt]))
    part = tmp_path / "part"
    augment_data_dir(corpus["src"], part, kinds=["noise"], sources=corpus["test_sources"], keep_ids=True, num=4)
    kept = set(DataDir(part).utt_ids()) | set(DataDir(part).speaker_ids())
    trials = (part / "trials").read_text().split("\n") if (part / "trials").exists() else []
    assert all(line.split()[0] in kept and line.split()[1] in kept for line in trials if line)
    chained = tmp_path / "chained"
    augment_data_dir(corpus["src"], chained, kinds=["noise", "reverb"], sources=corpus["sources"], chain=True)
    assert all(utt.endswith("-reverb-noise") for utt in DataDir(chained).utt_ids())


def test_speed_copies_are_new_speakers_with_durations_divided_by_the_factor(corpus, tmp_path):
    out = tmp_path / "train_sp"
    speed_perturb_data_dir(corpus["src"], out, factors=(0.9, 1.0, 1.1), nj=2)
    data, clean = DataDir(out), DataDir(corpus["src"])
    utt2spk, durations, clean_durations = data.utt2spk(), data.utt2dur(), {
        utt: len(read(path)) / RATE for utt, path in clean.wav_scp().items()}
    assert len(utt2spk) == 27 and len(set(utt2spk.values())) == 9
    for utt, spk in clean.utt2spk().items():
        assert utt2spk[utt] == spk and durations[utt] == pytest.approx(clean_durations[utt], abs=1e-6)
        for factor in (0.9, 1.1):
            new = f"sp{factor:g}-{utt}"
            assert utt2spk[new] == f"sp{factor:g}-{spk}"
            assert durations[new] == pytest.approx(clean_durations[utt] / factor, abs=2 / RATE)
            assert len(read(data.wav_scp()[new])) == round(durations[new] * RATE)
    assert read_kv(out / "utt2uniq")["sp0.9-spkA-u1"] == "spkA-u1"
    assert read_kv(out / "spk2gender")["sp1.1-spkB"] == "m"
    assert np.array_equal(read(data.wav_scp()["spkA-u0"]), read(clean.wav_scp()["spkA-u0"]))


def test_combine_keeps_clean_and_a_random_subset_of_the_augmented(corpus, tmp_path):
    aug = tmp_path / "aug"
    augment_data_dir(corpus["src"], aug, kinds=["noise", "music"], sources=corpus["sources"])
    out = tmp_path / "combined"
    summary = combine_data_dirs(out, clean=[corpus["src"]], aug=[aug], num_aug=5, seed=0)
    assert summary.num_utterances == 9 + 5 and summary.num_speakers == 3
    utts = DataDir(out).utt_ids()
    assert set(DataDir(corpus["src"]).utt_ids()) < set(utts)
    uniq = read_kv(out / "utt2uniq")
    assert all(uniq[u] == u for u in DataDir(corpus["src"]).utt_ids())
    assert all(uniq[u] == u.rsplit("-", 1)[0] for u in utts if u.endswith(("-noise", "-music")))
    assert DataDir(out).utt2dur()["spkA-u0"] == pytest.approx(0.8, abs=1e-3)
    whole = combine_data_dirs(tmp_path / "whole", clean=[corpus["src"]], aug=[aug])
    assert whole.num_utterances == 9 + 18
    with pytest.raises(DataDirUsageError, match="in both"):
        combine_data_dirs(tmp_path / "twice", clean=[corpus["src"]], aug=[corpus["src"]])
    assert not (tmp_path / "twice").exists()


def test_finished_output_is_kept_unless_forced(corpus, tmp_path):
    out = tmp_path / "aug"
    augment_data_dir(corpus["src"], out, kinds=["noise"], sources=corpus["sources"])
    stamp = (out / "wav.scp").stat().st_mtime_ns
    augment_data_dir(corpus["src"], out, kinds=["noise"], sources=corpus["sources"])
    assert (out / "wav.scp").stat().st_mtime_ns == stamp
    augment_data_dir(corpus["src"], out, kinds=["music"], sources=corpus["sources"])  # other options: replaced
    assert all(utt.endswith("-music") for utt in DataDir(out).utt_ids())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["aug"]


def empty_sources(root: Path) -> Path:
    """A sources folder whose noise data dir has no recordings."""
    (root / "noise").mkdir(parents=True)
    for name in ("wav.scp", "utt2spk"):
        (root / "noise" / name).write_text("")
    return root


@pytest.mark.parametrize("case, error, match", [
    ("missing src", AugmentError, "no such data dir"),
    ("bad kinds", AugmentError, "unknown 'echo'; choose from reverb,noise,music,babble"),
    ("reversed snr", AugmentError, "LOW 15.0 is above HIGH 0.0"),
    ("no sources", AugmentError, "noise source"),
    ("missing kind dir", AugmentError, "speech is missing"),
    ("empty sources", DataDirError, "no utterances"),
    ("out is src", AugmentError, "overlaps"),
])
def test_bad_input_is_a_clear_error_and_writes_nothing(corpus, tmp_path, case, error, match):
    out = tmp_path / "out"
    args = {"sources": corpus["test_sources"], "kinds": ["noise"]}
    src = corpus["src"]
    if case == "missing src":
        src = tmp_path / "nowhere"
    elif case == "bad kinds":
        args["kinds"] = ["noise", "echo"]
    elif case == "reversed snr":
        args["snrs"] = {"noise": (15.0, 0.0)}
    elif case == "no sources":
        args["sources"] = None
    elif case == "missing kind dir":
        args["kinds"] = ["babble"]  # the test sources were made without --speech-from
    elif case == "empty sources":
        args["sources"] = empty_sources(tmp_path / "empty")
    elif case == "out is src":
        out = corpus["src"] / "aug"
    before = snapshot(corpus["src"])
    with pytest.raises(error, match=match):
        augment_data_dir(src, out, **args)
    assert not out.exists() and snapshot(corpus["src"]) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_option_parsers():
    assert parse_kinds("reverb, noise,noise") == ("reverb", "noise")
    assert parse_range("0:15", "--snr-noise") == (0.0, 15.0) and parse_range("5", "--snr") == (5.0, 5.0)
    assert parse_range("-5:5", "--snr-noise") == (-5.0, 5.0)
    for bad in ("a:b", "1:2:3", "", "nan:1", "inf"):
        with pytest.raises(AugmentError, match="--snr-noise"):
            parse_range(bad, "--snr-noise")
    with pytest.raises(AugmentError, match="at least 1"):
        parse_range("0:3", "--babble-talkers", integer=True, minimum=1)
    assert parse_factors("0.9,1.0,1.1") == (0.9, 1.0, 1.1)
    for bad in ("0.9,0.90", "0", "x", ""):
        with pytest.raises(AugmentError, match="--factors"):
            parse_factors(bad)


def test_combine_merges_features_instead_of_extracting_them_again(corpus, tmp_path):
    import shutil

    from spk.features import FeatureConfig
    from spk.make_features import features_up_to_date, make_features

    config = FeatureConfig(kind="fbank", num_mel_bins=23)
    clean = tmp_path / "clean"
    shutil.copytree(corpus["src"], clean)  # the shared corpus stays without features
    aug = tmp_path / "aug"
    augment_data_dir(clean, aug, kinds=["noise"], sources=corpus["sources"])
    # without features on the augmented dir there is nothing to merge
    combine_data_dirs(tmp_path / "no_feats", clean=[clean], aug=[aug])
    assert not (tmp_path / "no_feats" / "feats.scp").exists()
    for path in (clean, aug):
        make_features(path, config, tmp_path / "feats")
    out = tmp_path / "combined"
    combine_data_dirs(out, clean=[clean], aug=[aug], num_aug=4, seed=0)
    assert features_up_to_date(out, config), "stage 2 would extract the features a second time"
    validate_data_dir(out, need_feats=True, need_cmvn=True)
    merged = read_kv(out / "feats.scp")
    assert set(merged) == set(DataDir(out).utt_ids())
    expected = {**read_kv(clean / "feats.scp"), **read_kv(aug / "feats.scp")}
    assert all(merged[utt] == expected[utt] for utt in merged)
    frames = read_kv(out / "utt2num_frames")
    expected_frames = {**read_kv(clean / "utt2num_frames"), **read_kv(aug / "utt2num_frames")}
    assert frames == {utt: expected_frames[utt] for utt in merged}


def test_cli_data_speed_combine(corpus, tmp_path):
    runner = CliRunner()
    aug, sp, combined = tmp_path / "aug", tmp_path / "sp", tmp_path / "combined"
    result = runner.invoke(main, ["augment", "data", "--src", str(corpus["src"]), "--out", str(aug), "--kinds",
                                  "reverb,babble", "--sources", str(corpus["sources"]), "--snr-babble", "15:18",
                                  "--babble-talkers", "2:3", "--num", "6"])
    assert result.exit_code == 0, result.output
    assert "6 utterances" in result.output
    assert all(2 <= len(n["babble"].split(",")) <= 3 for n in notes(aug).values() if "babble" in n)
    result = runner.invoke(main, ["augment", "speed", "--src", str(corpus["src"]), "--out", str(sp), "--factors",
                                  "0.9,1.1"])
    assert result.exit_code == 0 and "18 utterances, 6 speakers" in result.output
    result = runner.invoke(main, ["augment", "combine", "--out", str(combined), "--clean", str(corpus["src"]),
                                  "--aug", str(aug), "--aug", str(sp), "--num-aug", "10"])
    assert result.exit_code == 0 and "combined: 19 utterances" in result.output, result.output
    result = runner.invoke(main, ["augment", "data", "--src", str(corpus["src"]), "--out", str(tmp_path / "bad"),
                                  "--sources", str(corpus["sources"]), "--snr-music", "loud"])
    assert result.exit_code == 1 and "--snr-music 'loud'" in result.output and not (tmp_path / "bad").exists()
    result = runner.invoke(main, ["augment", "data", "--src", str(corpus["src"]), "--out", str(tmp_path / "bad"),
                                  "--kinds", "noise", "--noise", str(corpus["sources"] / "noise,") +
                                  os.fspath(corpus["test_sources"] / "noise")])
    assert result.exit_code == 1 and "in both" in result.output  # same recording ids in two noise dirs


def test_an_existing_folder_it_did_not_write_is_never_replaced(corpus, tmp_path):
    out = tmp_path / "exp"
    (out / "models").mkdir(parents=True)
    (out / "models" / "final.pt").write_bytes(b"weights")
    for make, error in ((lambda: augment_data_dir(corpus["src"], out, kinds=["noise"], sources=corpus["sources"]),
                         AugmentError),
                        (lambda: speed_perturb_data_dir(corpus["src"], out, factors=(1.1,)), AugmentError),
                        (lambda: combine_data_dirs(out, clean=[corpus["src"]]), DataDirUsageError)):
        with pytest.raises(error, match="not written by `spk augment`"):
            make()
    assert (out / "models" / "final.pt").read_bytes() == b"weights"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp"]
