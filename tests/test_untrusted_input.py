"""Model files and audio names from others stay data: a pickle payload in a checkpoint is refused before
it can run, and an audio argument that looks like a shell command is read as a file name."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from spk.api import ModelLoadError, SpeakerModel
from spk.package import write_package
from spk.model_dir import MANIFEST, TrainedModelError, load_trained, load_weights, sha256_file
from tests.test_cli_product import assert_clean_error, spk


class CreatesAFile:
    """Unpickling this object would create ``path``: what a malicious checkpoint could do."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def plant_payload(weights: Path, marker: Path) -> None:
    """Rewrite ``weights`` with its real content plus an object whose unpickling creates ``marker``."""
    state = torch.load(weights, map_location="cpu", weights_only=True)
    torch.save({**state, "extra": CreatesAFile(marker)}, weights)


def test_a_checkpoint_payload_is_refused_and_never_runs(product, model, tmp_path):
    exp = tmp_path / "exp"
    shutil.copytree(product.exp, exp)
    marker = tmp_path / "pwned"
    plant_payload(exp / "models/final.pt", marker)
    with pytest.raises(TrainedModelError, match=r"refusing to load .*final\.pt.*could run code"):
        load_trained(exp)
    with pytest.raises(ModelLoadError, match="refusing to load"):
        SpeakerModel.load(exp)
    with pytest.raises(TrainedModelError, match="refusing to load"):
        load_weights(exp / "models/final.pt")
    db = tmp_path / "voices.db"
    model.enroll(db, "alice", product.utts_of("spk009")[1:3])
    result = spk("verify", "--model", exp, "--db", db, "--claim", "alice", product.utts_of("spk009")[0])
    assert_clean_error(result, 3, "refusing to load")
    result = spk("export", "--model", exp, "--out", tmp_path / "pkg", "--no-onnx")
    assert_clean_error(result, 3, "refusing to load")
    assert not marker.exists() and not (tmp_path / "pkg").exists()


def test_a_package_payload_is_refused_even_with_matching_checksums(product, tmp_path):
    package = write_package(product.exp, tmp_path / "pkg", onnx=False)
    marker = tmp_path / "pwned"
    plant_payload(package / "model.pt", marker)
    manifest = json.loads((package / MANIFEST).read_text())
    manifest["files"]["model.pt"]["sha256"] = sha256_file(package / "model.pt")  # the attacker re-signs it
    (package / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(TrainedModelError, match=r"refusing to load .*model\.pt"):
        load_trained(package)
    assert not marker.exists()


def test_an_audio_argument_is_never_run_as_a_command(product, model, tmp_path):
    db = tmp_path / "voices.db"
    wav = product.utts_of("spk009")[0]
    model.enroll(db, "alice", product.utts_of("spk009")[1:3])
    command = f"touch {tmp_path / 'ran'}; cat {wav} |"
    result = spk("verify", "--model", product.exp, "--db", db, "--claim", "alice", command, cwd=tmp_path)
    assert_clean_error(result, 3, "does not exist")
    assert not (tmp_path / "ran").exists()

    # a real file whose name reads like a command is read as that file
    named = tmp_path / "real; touch ran2 |"
    shutil.copyfile(wav, named)
    result = spk("verify", "--model", product.exp, "--db", db, "--claim", "alice", "--json", named.name,
                 cwd=tmp_path)
    assert result.returncode in (0, 1), result.stderr
    assert json.loads(result.stdout)["score"] == pytest.approx(model.verify(wav, db, "alice").score, abs=1e-6)
    assert not (tmp_path / "ran2").exists()
    with pytest.raises(Exception, match="does not exist"):
        model.embed(command)
    assert not (tmp_path / "ran").exists()
