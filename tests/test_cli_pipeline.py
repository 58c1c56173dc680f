"""The ``spk`` stages 2-5 on the command line: error messages and exit codes, and a tiny happy path
(egs -> train -> embed -> eval-id -> score) on synthetic features, through click's runner, plus one
real process of the installed console script."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import yaml
from click.testing import CliRunner, Result

from spk.cli import main
from spk.data import utt2spk_to_spk2utt, write_spk2utt, write_utt2num_frames, write_utt2spk, write_wav_scp
from spk.features import cmvn_stats

DIM = 12
TINY_CONFIG = """\
encoder: lstm
encoder_conf: {hidden_size: 8, num_layers: 1}
embedding_dim: 6
epochs: 1
batch_size: 4
chunk_frames: [30, 50]
"""


@pytest.fixture(autouse=True)
def restore_logging():
    """``spk`` sets up its loggers on every run (handler on the runner's stderr, no propagation);
    put them back so later tests' logging and caplog are unaffected."""
    saved = {name: (logging.getLogger(name).handlers[:], logging.getLogger(name).level,
                    logging.getLogger(name).propagate) for name in ("spk", "local")}
    yield
    for name, (handlers, level, propagate) in saved.items():
        logger = logging.getLogger(name)
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate = propagate



def run(*args) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def feature_dir(path: Path, num_speakers: int = 3, utts: int = 4, seed: int = 0) -> Path:
    """A data dir with random DIM-dim features (speakers differ in per-dimension scale), no audio."""
    rng = np.random.default_rng(seed)
    path.mkdir(parents=True)
    feats, utt2spk = {}, {}
    for s in range(num_speakers):
        scale = np.random.default_rng(100 + s).uniform(0.2, 4.0, size=DIM)
        for u in range(utts):
            utt = f"spk{s}-u{seed}{u}"
            feats[utt] = (rng.normal(size=(int(rng.integers(60, 120)), DIM)) * scale).astype(np.float32)
            utt2spk[utt] = f"spk{s}"
    with kaldiio.WriteHelper(f"ark,scp:{path}/feats.ark,{path}/feats.scp") as writer:
        for utt in sorted(feats):
            writer(utt, feats[utt])
    with kaldiio.WriteHelper(f"ark,scp:{path}/cmvn.ark,{path}/cmvn.scp") as writer:
        for utt in sorted(feats):
            writer(utt, cmvn_stats(feats[utt]))
    write_wav_scp(path / "wav.scp", {utt: f"/nonexistent/{utt}.wav" for utt in feats})
    write_utt2spk(path / "utt2spk", utt2spk)
    write_spk2utt(path / "spk2utt", utt2spk_to_spk2utt(utt2spk))
    write_utt2num_frames(path / "utt2num_frames", {utt: len(m) for utt, m in feats.items()})
    return path


@pytest.fixture(scope="module")
def feature_config(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("conf") / "fbank12.yaml"
    path.write_text(f"kind: fbank\nnum_mel_bins: {DIM}\n")
    return path


# --------------------------------------------------------------------------- the console script


def test_console_script_help():
    script = Path(sys.executable).parent / "spk"
    assert script.is_file(), "the spk console script is not installed in this environment"
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    for command in ("data", "features", "egs", "train", "embed", "score", "eval-id", "baseline",
                    "report", "compare"):
        assert f"  {command} " in result.stdout, command


def test_unknown_command():
    result = run("trian")
    assert result.exit_code == 2
    assert "No such command 'trian'" in result.output


# --------------------------------------------------------------------------- errors


def test_train_unknown_config_key(tmp_path, feature_config):
    config = tmp_path / "bad.yaml"
    config.write_text(TINY_CONFIG + "hiden_size: 3\n")
    (tmp_path / "train").mkdir()
    result = run("train", "--config", config, "--feature-config", feature_config,
                 "--train-dir", tmp_path / "train", "--exp-dir", tmp_path / "exp")
    assert result.exit_code == 1
    assert f"Error: {config}: unknown key(s) hiden_size" in result.stderr
    assert "Traceback" not in result.output
    assert not (tmp_path / "exp").exists()


def test_train_unknown_encoder_lists_known_ones(tmp_path, feature_config):
    config = tmp_path / "bad.yaml"
    config.write_text(TINY_CONFIG.replace("encoder: lstm", "encoder: transformer"))
    train_dir = feature_dir(tmp_path / "train")
    result = run("train", "--config", config, "--feature-config", feature_config,
                 "--train-dir", train_dir, "--exp-dir", tmp_path / "exp", "--threads", "1")
    assert result.exit_code == 1
    assert "unknown encoder 'transformer'; choose one of:" in result.stderr
    assert "gru" in result.stderr and "lstm" in result.stderr
    assert "Traceback" not in result.output


def test_train_set_overrides_the_config(tmp_path, feature_config):
    config = tmp_path / "c.yaml"
    config.write_text(TINY_CONFIG)
    train_dir = feature_dir(tmp_path / "train")
    result = run("train", "--config", config, "--feature-config", feature_config, "--train-dir", train_dir,
                 "--exp-dir", tmp_path / "exp", "--threads", "1", "--set", "epochs=1", "--set", "seed=7")
    assert result.exit_code == 0, result.output
    saved = yaml.safe_load((tmp_path / "exp/config.yaml").read_text())
    assert saved["epochs"] == 1 and saved["seed"] == 7
    assert len((tmp_path / "exp/train_log.jsonl").read_text().splitlines()) == 1
    bad = run("train", "--config", config, "--feature-config", feature_config, "--train-dir", train_dir,
              "--exp-dir", tmp_path / "exp2", "--set", "epoks=1")
    assert bad.exit_code == 1 and f"{config} with epoks=1: unknown key(s) epoks" in bad.stderr


def test_train_needs_features(tmp_path, feature_config):
    config = tmp_path / "c.yaml"
    config.write_text(TINY_CONFIG)
    train_dir = feature_dir(tmp_path / "train")
    (train_dir / "feats.scp").unlink()
    result = run("train", "--config", config, "--feature-config", feature_config,
                 "--train-dir", train_dir, "--exp-dir", tmp_path / "exp")
    assert result.exit_code == 1
    assert "feats.scp: missing" in result.stderr


def test_features_on_unsorted_wav_scp(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "wav.scp").write_text("a-2 /c/a-2.wav\na-1 /c/a-1.wav\n")
    (data / "utt2spk").write_text("a-1 a\na-2 a\n")
    result = run("features", data, "--feat-dir", tmp_path / "fbank")
    assert result.exit_code == 1
    assert "wav.scp:2: not sorted: 'a-1' comes after 'a-2'" in result.stderr
    assert "Fix:" in result.stderr
    assert not (data / "feats.scp").exists()


def test_embed_without_trained_model(tmp_path):
    data = feature_dir(tmp_path / "data")
    exp = tmp_path / "exp"
    (exp / "models").mkdir(parents=True)
    result = run("embed", "--exp-dir", exp, "--data-dir", data, "--out-dir", tmp_path / "emb")
    assert result.exit_code == 1
    assert f"{exp}/models/final.pt does not exist: train the model first" in result.stderr
    assert not (tmp_path / "emb").exists()


def test_score_bad_label(tmp_path):
    scp = tmp_path / "e.scp"
    scp.write_text("")
    trials = tmp_path / "trials"
    trials.write_text("a b target\na c nontarget\na d maybe\n")
    result = run("score", "--trials", trials, "--enroll-scp", scp, "--test-scp", scp,
                 "--scores-out", tmp_path / "scores", "--results-out", tmp_path / "r.json")
    assert result.exit_code == 1
    assert f"{trials}:3: label 'maybe' is neither 'target' nor 'nontarget'" in result.stderr
    assert not (tmp_path / "r.json").exists()


# --------------------------------------------------------------------------- the happy path


def test_stages_2_to_5(tmp_path, feature_config):
    source = feature_dir(tmp_path / "data" / "train", utts=5)
    held_out = feature_dir(tmp_path / "data" / "held_out", utts=2, seed=1)

    result = run("egs", source, tmp_path / "egs", "--min-frames", "40", "--valid-per-spk", "1")
    assert result.exit_code == 0, result.output
    assert len((tmp_path / "egs/valid/utt2spk").read_text().splitlines()) == 3

    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_CONFIG)
    exp = tmp_path / "exp" / "tiny"
    result = run("train", "--config", config, "--feature-config", feature_config, "--train-dir",
                 tmp_path / "egs/train", "--valid-dir", tmp_path / "egs/valid", "--exp-dir", exp,
                 "--threads", "1")
    assert result.exit_code == 0, result.output
    assert (exp / "models/final.pt").is_file()
    assert "valid_acc" in json.loads((exp / "train_log.jsonl").read_text().splitlines()[-1])

    emb = exp / "embeddings" / "held_out"
    result = run("embed", "--exp-dir", exp, "--data-dir", held_out, "--out-dir", emb)
    assert result.exit_code == 0, result.output
    assert len((emb / "xvector.scp").read_text().splitlines()) == 6
    assert len((emb / "spk_xvector.scp").read_text().splitlines()) == 3

    result = run("eval-id", "--exp-dir", exp, "--embeddings", emb / "xvector.scp", "--data-dir", held_out,
                 "--results-out", exp / "results" / "ident.json")
    assert result.exit_code == 0, result.output
    ident = json.loads((exp / "results/ident.json").read_text())
    assert ident["kind"] == "identification" and ident["num_test"] == 6 and ident["num_speakers"] == 3
    assert Path(ident["confusion"]).is_file()

    utts = sorted(line.split()[0] for line in (held_out / "utt2spk").read_text().splitlines())
    trials = tmp_path / "trials"
    trials.write_text("".join(f"{a} {b} {'target' if a[:4] == b[:4] else 'nontarget'}\n"
                              for i, a in enumerate(utts) for b in utts[i + 1:]))
    result = run("score", "--trials", trials, "--enroll-scp", emb / "xvector.scp", "--test-scp",
                 emb / "xvector.scp", "--scores-out", exp / "scores/held_out.txt",
                 "--results-out", exp / "results/held_out.json")
    assert result.exit_code == 0, result.output
    verification = json.loads((exp / "results/held_out.json").read_text())
    for key in ("kind", "trials", "num_target", "num_nontarget", "eer", "min_dcf_0.01", "min_dcf_0.001",
                "roc_auc", "backend", "threshold_eer"):
        assert key in verification, key
    assert (verification["num_target"], verification["num_nontarget"]) == (3, 12)
    assert len((exp / "scores/held_out.txt").read_text().splitlines()) == 15


# --------------------------------------------------------------------------- stage 5 in one command


@pytest.fixture
def scored_experiment(tmp_path, monkeypatch):
    """A recipe folder after stage 4, with random embeddings: exp/tiny/embeddings/{train,dev,test},
    the baseline's test embeddings, and data/{dev,test}/trials (3 utterances of 4 speakers each)."""
    from tests.test_scoring import write_embeddings

    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    for owner, name in (("tiny", "train"), ("tiny", "dev"), ("tiny", "test"), ("baseline_mfcc_mean", "test")):
        folder = Path("exp", owner, "embeddings", name)
        folder.mkdir(parents=True)
        centres = rng.normal(size=(4, 8))
        utts = {f"{name}{s}-u{u}": centres[s] + 0.5 * rng.normal(size=8) for s in range(4) for u in range(3)}
        write_embeddings(folder / "xvector", utts)
        write_embeddings(folder / "spk_xvector", {f"{name}{s}": centres[s] for s in range(4)})
        if owner == "tiny" and name != "train":
            Path("data", name).mkdir(parents=True)
            Path("data", name, "trials").write_text("".join(
                f"{a} {b} {'target' if a[:len(name) + 1] == b[:len(name) + 1] else 'nontarget'}\n"
                for a in utts for b in utts if a < b))
    return Path("exp/tiny")


def test_evaluate_plans_and_runs_stage_5(scored_experiment):
    """Systems, the calibration loop, the baseline and the file names of stage 5, from one command."""
    result = run("evaluate", "--exp-dir", "exp/tiny", "--test-sets", "test", "--calib-set", "dev",
                 "--center", "true", "--score-norm", "asnorm", "--top-n", "2",
                 "--baseline-dir", "exp/baseline_mfcc_mean")
    assert result.exit_code == 0, result.output
    written = sorted(str(p) for p in Path("exp").rglob("*") if p.is_file() and "embeddings" not in p.parts)
    assert written == ["exp/baseline_mfcc_mean/results/test_cosine.json", "exp/baseline_mfcc_mean/scores/test_cosine",
                       "exp/tiny/calibration.json", "exp/tiny/calibration/dev_cosine.json",
                       "exp/tiny/calibration/dev_cosine.scores", "exp/tiny/calibration/dev_cosine_asnorm.json",
                       "exp/tiny/calibration/dev_cosine_asnorm.scores", "exp/tiny/calibration_cosine_asnorm.json",
                       "exp/tiny/results/test_cosine.json", "exp/tiny/results/test_cosine_asnorm.json",
                       "exp/tiny/scores/test_cosine", "exp/tiny/scores/test_cosine_asnorm"]
    plain = json.loads(Path("exp/tiny/calibration.json").read_text())
    normalised = json.loads(Path("exp/tiny/calibration_cosine_asnorm.json").read_text())
    assert (plain["scoring"]["score_norm"], normalised["scoring"]["score_norm"]) == ("none", "asnorm")
    assert plain["scoring"]["center"] is not None and plain["dev_trials"] == "data/dev/trials"
    results = json.loads(Path("exp/tiny/results/test_cosine_asnorm.json").read_text())
    assert results["scoring"] == {"backend": "cosine", "center_scp": "exp/tiny/embeddings/train/xvector.scp",
                                  "length_norm": False, "score_norm": "asnorm",
                                  "cohort_scp": "exp/tiny/embeddings/train/spk_xvector.scp", "top_n": 2,
                                  "calibration": "exp/tiny/calibration_cosine_asnorm.json"}
    baseline = json.loads(Path("exp/baseline_mfcc_mean/results/test_cosine.json").read_text())
    assert baseline["center_scp"] is None and "calibration" not in baseline
    # the same scores as 'spk score' with the options stage 5 used to spell out
    again = run("score", "--trials", "data/test/trials", "--enroll-scp", "exp/tiny/embeddings/test/xvector.scp",
                "--test-scp", "exp/tiny/embeddings/test/xvector.scp", "--center-scp",
                "exp/tiny/embeddings/train/xvector.scp", "--score-norm", "asnorm", "--cohort-scp",
                "exp/tiny/embeddings/train/spk_xvector.scp", "--top-n", "2", "--calibration",
                "exp/tiny/calibration_cosine_asnorm.json", "--scores-out", "again", "--results-out", "again.json")
    assert again.exit_code == 0, again.output
    assert Path("again").read_text() == Path("exp/tiny/scores/test_cosine_asnorm").read_text()


def test_evaluate_checks_every_input_first(scored_experiment):
    result = run("evaluate", "--exp-dir", "exp/tiny", "--test-sets", "test nosuch", "--calib-set", "dev",
                 "--score-norm", "znorm", "--baseline-dir", "exp/baseline_mfcc_mean")
    assert result.exit_code == 1
    assert ("stage 5 cannot start; missing: data/nosuch/trials, exp/tiny/embeddings/nosuch/xvector.scp, "
            "exp/baseline_mfcc_mean/embeddings/nosuch/xvector.scp") in result.stderr
    assert not Path("exp/tiny/calibration").exists() and not Path("exp/tiny/results").exists()
