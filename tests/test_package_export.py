"""Model packages (spk/package.py), TorchScript/ONNX export (spk/export.py) and ``spk export``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from spk.calibration import Calibration, save_calibration
from spk.cli import main
from spk.export import ExportableEmbedder, export_onnx, export_torchscript, onnx_session, reverse_within_lengths
from spk.features import FeatureConfig, cmvn_stats, compute_features, normalise
from spk.models.embedder import build_embedder
from spk.package import write_package
from spk.streaming import StreamingEmbedder
from spk.experiment import ExperimentConfig
from spk.model_dir import MANIFEST, PackageError, load_trained, verify_package

ROOT = Path(__file__).resolve().parents[1]
MINI_EXP = ROOT / "recipes" / "mini" / "exp"
TOLERANCE = 1e-4
FBANK_DIM, MFCC_DIM = 80, 120  # the recipes' features: 80 fbank bins; 40 MFCCs with deltas and delta-deltas


def random_model(config: dict, input_dim: int, num_speakers: int | None = None, seed: int = 0):
    torch.manual_seed(seed)
    model = build_embedder(config, input_dim, num_speakers)
    for module in model.modules():  # non-trivial batch-norm statistics
        if isinstance(module, torch.nn.BatchNorm1d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return model.eval()


def padded(lengths, dim, seed=0):
    generator = torch.Generator().manual_seed(seed)
    feats = torch.randn(len(lengths), max(lengths), dim, generator=generator)
    for row, length in enumerate(lengths):
        feats[row, length:] = 1e3  # loud garbage in the padding: it must never be read
    return feats, torch.tensor(lengths, dtype=torch.int64)


# --------------------------------------------------------------------------- export equivalence


ARCHITECTURES = {
    "lstm-mean": ({"encoder": "lstm", "encoder_conf": {"hidden_size": 64, "num_layers": 2},
                   "pooling": "mean", "embedding_dim": 32}, FBANK_DIM),
    "gru-mean": ({"encoder": "gru", "encoder_conf": {"hidden_size": 64, "num_layers": 2},
                  "pooling": "mean", "embedding_dim": 32}, MFCC_DIM),
    "lstm-stats": ({"encoder": "lstm", "encoder_conf": {"hidden_size": 64, "num_layers": 2},
                    "pooling": "stats", "segment_layers": [48], "embedding_dim": 32}, FBANK_DIM),
    "blstm-attentive": ({"encoder": "lstm", "encoder_conf": {"hidden_size": 48, "num_layers": 2,
                                                             "bidirectional": True},
                         "pooling": "attentive_stats", "pooling_conf": {"attention_dim": 32},
                         "segment_layers": [64], "embedding_dim": 32}, FBANK_DIM),
    "lstmp-mean": ({"encoder": "lstm", "encoder_conf": {"hidden_size": 64, "num_layers": 2, "proj_size": 32},
                    "pooling": "mean", "embedding_dim": 32}, MFCC_DIM),
    "blstmp-last": ({"encoder": "lstm", "encoder_conf": {"hidden_size": 48, "num_layers": 2, "proj_size": 24,
                                                         "bidirectional": True, "input_layer": 64},
                     "pooling": "last", "embedding_dim": 32}, FBANK_DIM),
    "bgru-stats": ({"encoder": "gru", "encoder_conf": {"hidden_size": 48, "num_layers": 1, "bidirectional": True},
                    "pooling": "stats", "embedding_dim": 32}, MFCC_DIM),
}


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_torchscript_and_onnx_equal_pytorch(tmp_path, name):
    config, dim = ARCHITECTURES[name]
    model = random_model(config, dim)
    ts_path = export_torchscript(model, tmp_path / "m.ts")
    onnx_path = export_onnx(model, tmp_path / "m.onnx")
    scripted = torch.jit.load(str(ts_path))
    session = onnx_session(onnx_path)
    cases = [padded([length], dim, seed=length) for length in (50, 173, 400)]
    cases.append(padded([50, 400, 173, 1], dim, seed=1))  # a padded batch, down to a single frame
    with torch.no_grad():
        for feats, lengths in cases:
            expected = model.embed(feats, lengths).numpy()
            got_ts = scripted(feats, lengths).numpy()
            got_onnx = session.run(["embeddings"], {"feats": feats.numpy(), "lengths": lengths.numpy()})[0]
            assert got_ts.shape == got_onnx.shape == (len(lengths), 32)
            assert np.max(np.abs(got_ts - expected)) <= TOLERANCE, (name, lengths.tolist())
            assert np.max(np.abs(got_onnx - expected)) <= TOLERANCE, (name, lengths.tolist())


def test_reverse_within_lengths_keeps_padding_in_place():
    x = torch.arange(10, dtype=torch.float32).view(2, 5, 1)
    lengths = torch.tensor([3, 5])
    assert reverse_within_lengths(x, lengths)[..., 0].tolist() == [[2, 1, 0, 3, 4], [9, 8, 7, 6, 5]]
    assert torch.equal(reverse_within_lengths(reverse_within_lengths(x, lengths), lengths), x)


def test_exportable_embedder_shares_the_trained_weights():
    config, dim = ARCHITECTURES["lstm-mean"]
    model = random_model(config, dim, num_speakers=4)
    wrapper = ExportableEmbedder(model)
    assert wrapper.segment is model.segment and not hasattr(wrapper, "head")


# --------------------------------------------------------------------------- packages


def make_exp(path: Path, model_conf: dict, features: FeatureConfig, *, loss: str = "softmax",
             num_speakers: int = 5, seed: int = 0) -> Path:
    """A trained-looking experiment dir: config.yaml, models/final.pt, speakers.txt (random weights)."""
    config = ExperimentConfig.from_dict({**model_conf, "loss": loss, "features": features.to_dict()})
    (path / "models").mkdir(parents=True)
    config.save(path / "config.yaml")
    speakers = [f"spk{i:02d}" for i in range(num_speakers)]
    (path / "speakers.txt").write_text("".join(s + "\n" for s in speakers))
    model = random_model(config.to_dict(), features.dim, num_speakers if loss == "softmax" else None, seed)
    torch.save({"model": model.state_dict()}, path / "models" / "final.pt")
    return path


SMALL = {"encoder": "lstm", "encoder_conf": {"hidden_size": 32, "num_layers": 2}, "pooling": "stats",
         "segment_layers": [24], "embedding_dim": 16}
GLOBAL_FBANK = FeatureConfig(num_mel_bins=40, cmvn="global")


@pytest.fixture
def speech() -> np.ndarray:
    """1.5 s of a synthetic voiced sound, enough to compute features from."""
    t = np.arange(24000) / 16000
    rng = np.random.default_rng(0)
    return (0.3 * np.sin(2 * np.pi * 140 * t) * (1 + np.sin(2 * np.pi * 3 * t)) +
            0.01 * rng.standard_normal(len(t))).astype(np.float32)


@pytest.fixture
def global_exp(tmp_path, speech) -> Path:
    exp = make_exp(tmp_path / "exp" / "small", SMALL, GLOBAL_FBANK)
    np.save(exp / "global_cmvn.npy", cmvn_stats(compute_features(speech, GLOBAL_FBANK)) * 4)
    center = np.linspace(-0.1, 0.1, 16)
    save_calibration(exp / "calibration.json", Calibration(
        a=2.5, b=-1.0, scoring={"backend": "cosine", "score_norm": "none", "center": [float(v) for v in center]}))
    return exp


def test_write_and_load_trained(tmp_path, global_exp, speech):
    out = write_package(global_exp, tmp_path / "pkg")
    names = {p.name for p in out.iterdir()}
    assert names == {MANIFEST, "config.yaml", "model.pt", "speakers.txt", "calibration.json", "global_cmvn.npy",
                     "center.npy", "embedder.ts", "embedder.onnx"}
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["format_version"] == 1 and set(manifest["files"]) == names - {MANIFEST}
    assert (manifest["embedding_dim"], manifest["feature_dim"], manifest["num_speakers"]) == (16, 40, 5)
    assert manifest["has_head"] is True and manifest["exports"]["onnx"]["max_abs_diff"] <= TOLERANCE
    assert not list(tmp_path.glob(".pkg.*"))  # no staging directory left behind

    package = load_trained(out)
    assert package.is_package and package.manifest == manifest
    original, speakers = load_trained(global_exp).embedder, load_trained(global_exp).speakers
    assert package.speakers == speakers and package.feature_config == GLOBAL_FBANK
    assert package.calibration.a == 2.5
    assert np.allclose(package.center, np.linspace(-0.1, 0.1, 16))
    assert np.array_equal(package.global_cmvn, np.load(global_exp / "global_cmvn.npy"))
    feats, lengths = padded([120, 77], 40)
    with torch.no_grad():
        expected = original.embed(feats, lengths)
        assert torch.equal(package.embedder.embed(feats, lengths), expected)
        assert torch.equal(package.embedder.classify(expected), original.classify(expected))
        scripted = torch.jit.load(str(out / "embedder.ts"))
        assert torch.max(torch.abs(scripted(feats, lengths) - expected)) <= TOLERANCE

    # the packaged stream, with the packaged global CMVN, gives the offline embedding
    stream = StreamingEmbedder.for_model(package)
    assert stream.exact_incremental
    for start in range(0, len(speech), 3797):
        stream.accept_waveform(speech[start:start + 3797])
    offline = normalise(compute_features(speech, GLOBAL_FBANK), GLOBAL_FBANK, global_stats=package.global_cmvn)
    with torch.no_grad():
        reference = original.embed(torch.from_numpy(offline)[None], torch.tensor([len(offline)]))[0].numpy()
    assert np.max(np.abs(stream.finish() - reference)) <= TOLERANCE


def test_modified_or_missing_files_are_named(tmp_path, global_exp):
    out = write_package(global_exp, tmp_path / "pkg", onnx=False)
    assert "embedder.onnx" not in json.loads((out / MANIFEST).read_text())["files"]
    with open(out / "speakers.txt", "a") as handle:
        handle.write("intruder\n")
    with pytest.raises(PackageError, match=r"speakers\.txt was modified"):
        load_trained(out)
    out = write_package(global_exp, tmp_path / "pkg", force=True, onnx=False)
    (out / "global_cmvn.npy").unlink()
    with pytest.raises(PackageError, match=r"global_cmvn\.npy is missing"):
        load_trained(out)
    with pytest.raises(PackageError, match="not an spk model package"):
        verify_package(global_exp)


def test_refuses_to_overwrite_without_force(tmp_path, global_exp):
    out = write_package(global_exp, tmp_path / "pkg", onnx=False)
    (out / "stale.txt").write_text("from the old package")
    before = (out / MANIFEST).read_bytes()
    with pytest.raises(PackageError, match="--force"):
        write_package(global_exp, out, onnx=False)
    assert (out / MANIFEST).read_bytes() == before and (out / "stale.txt").exists()
    write_package(global_exp, out, force=True, onnx=False)
    assert not (out / "stale.txt").exists()
    load_trained(out)
    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(PackageError, match="not an spk package"):
        write_package(global_exp, other, force=True, onnx=False)
    assert (other / "keep.txt").read_text() == "mine"


def test_global_cmvn_needs_train_data(tmp_path, speech):
    exp = make_exp(tmp_path / "exp" / "nostats", SMALL, GLOBAL_FBANK, loss="triplet")
    with pytest.raises(PackageError, match="--train-data"):
        write_package(exp, tmp_path / "pkg", onnx=False)
    assert not (tmp_path / "pkg").exists() and not list(tmp_path.glob(".pkg.*"))
    train = tmp_path / "data" / "train"
    train.mkdir(parents=True)
    stats = {f"utt{i}": cmvn_stats(compute_features(speech[i * 4000:], GLOBAL_FBANK)) for i in range(3)}
    with kaldiio.WriteHelper(f"ark,scp:{train}/cmvn.ark,{train}/cmvn.scp") as writer:
        for key, value in stats.items():
            writer(key, value)
    out = write_package(exp, tmp_path / "pkg", onnx=False, train_data=train)
    package = load_trained(out)
    assert package.embedder.head is None and package.manifest["has_head"] is False
    assert np.allclose(package.global_cmvn, sum(stats.values()))
    assert package.calibration is None and package.center is None


def test_center_must_match_the_calibration(tmp_path, global_exp):
    scp = tmp_path / "emb.scp"
    with kaldiio.WriteHelper(f"ark,scp:{tmp_path}/emb.ark,{scp}") as writer:
        writer("a", np.ones(16, dtype=np.float32))
    with pytest.raises(PackageError, match="calibration.json was fitted with"):
        write_package(global_exp, tmp_path / "pkg", onnx=False, center_scp=scp)


@pytest.mark.skipif(not (MINI_EXP / "blstm_attn_aam_long" / "models" / "final.pt").exists(),
                    reason="the mini recipe's blstm_attn_aam_long model has not been trained")
def test_trained_bidirectional_model_packages_exactly(tmp_path):
    exp = MINI_EXP / "blstm_attn_aam_long"
    package = load_trained(write_package(exp, tmp_path / "pkg"))
    original = load_trained(exp).embedder
    feats, lengths = padded([300, 211], package.feature_config.dim)
    with torch.no_grad():
        expected = original.embed(feats, lengths)
        assert torch.equal(package.embedder.embed(feats, lengths), expected)
    session = onnx_session(tmp_path / "pkg" / "embedder.onnx")
    got = session.run(None, {"feats": feats.numpy(), "lengths": lengths.numpy()})[0]
    assert np.max(np.abs(got - expected.numpy())) <= TOLERANCE


def test_cli_export(tmp_path, global_exp):
    out = tmp_path / "pkg"
    done = subprocess.run([sys.executable, "-m", "spk", "export", "--model", str(global_exp), "--out", str(out),
                           "--no-onnx"], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "wrote package" in done.stderr and "embedder.ts" in done.stderr
    assert not (out / "embedder.onnx").exists()
    load_trained(out)

    runner = CliRunner()
    again = runner.invoke(main, ["export", "--model", str(global_exp), "--out", str(out)])
    assert again.exit_code == 3 and "--force" in again.output and again.exception.__class__ is SystemExit
    exp = make_exp(tmp_path / "exp" / "nostats", SMALL, GLOBAL_FBANK, loss="triplet")
    missing = runner.invoke(main, ["export", "--model", str(exp), "--out", str(tmp_path / "p2")])
    assert missing.exit_code == 3 and "--train-data" in missing.output
