"""--model accepts a pretrained model's name: its package is imported into the cache on first use."""

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from spk.cli import main

LIBRISPEECH = Path(__file__).resolve().parents[2] / "shared" / "data" / "LibriSpeech" / "train-clean-100"


def test_unknown_model_name_lists_the_pretrained_names(tmp_path, monkeypatch):
    monkeypatch.setenv("SPK_CACHE", str(tmp_path / "cache"))
    from spk.api import ModelLoadError, SpeakerModel

    with pytest.raises(ModelLoadError, match="does not exist.*resemblyzer-ge2e"):
        SpeakerModel.load(tmp_path / "no-such-model")
    assert not (tmp_path / "cache").exists()  # nothing imported for a name that is no pretrained model


def test_cache_folder_that_is_not_a_package_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv("SPK_CACHE", str(tmp_path))
    from spk.pretrained import PretrainedError, resolve_model

    (tmp_path / "pretrained" / "resemblyzer-ge2e").mkdir(parents=True)
    (tmp_path / "pretrained" / "resemblyzer-ge2e" / "mine.txt").write_text("not a package\n")
    with pytest.raises(PretrainedError, match="holds no spk package"):
        resolve_model("resemblyzer-ge2e")


def test_model_name_imports_on_first_use_and_reimports_a_damaged_cache(tmp_path, monkeypatch):
    pytest.importorskip("webrtcvad")
    pytest.importorskip("resemblyzer")
    files = sorted(LIBRISPEECH.rglob("*.flac"))[:2]
    if len(files) < 2:
        pytest.skip(f"the LibriSpeech excerpt is not at {LIBRISPEECH}")
    monkeypatch.setenv("SPK_CACHE", str(tmp_path))
    cached = tmp_path / "pretrained" / "resemblyzer-ge2e"
    runner = CliRunner()
    result = runner.invoke(main, ["similarity", "--model", "resemblyzer-ge2e", "--json", *map(str, files)])
    assert result.exit_code in (0, 1), result.output + str(result.exception)
    first = json.loads(result.stdout)
    assert first["decision"] in ("accept", "reject") and first["llr"] is not None  # the shipped calibration
    assert (cached / "calibration.json").is_file()
    manifest = json.loads((cached / "spk_package.json").read_text())
    assert manifest["calibration"]["fitted_on"]["speakers"] and "calibration.json" in manifest["files"]
    assert not [path for path in cached.parent.iterdir() if "staging" in path.name]  # no staging left

    (cached / "config.yaml").write_text((cached / "config.yaml").read_text() + "\n# edited\n")
    result = runner.invoke(main, ["similarity", "--model", "resemblyzer-ge2e", "--json", *map(str, files)])
    assert result.exit_code in (0, 1), result.output + str(result.exception)
    assert json.loads(result.stdout)["score"] == pytest.approx(first["score"], abs=1e-6)
    from spk.model_dir import verify_package

    verify_package(cached)  # imported again: the checksums hold


def test_shipped_calibration_is_for_the_default_import_and_disjoint_speakers():
    from spk.pretrained import RESEMBLYZER_GE2E, calibration_path

    from spk.features import FeatureConfig

    shipped = json.loads(calibration_path("resemblyzer-ge2e").read_text())
    default = FeatureConfig.from_dict(RESEMBLYZER_GE2E.features).to_dict()
    assert shipped["features"] == default  # what a default import's front end is
    fitted, held = set(shipped["fitted_on"]["speakers"]), set(shipped["held_out"]["speakers"])
    assert fitted and held and not fitted & held
    assert shipped["calibration"]["a"] > 0 and shipped["calibration"]["scoring"]["backend"] == "cosine"


def test_calibration_for_other_weights_or_front_end_is_not_shipped(tmp_path):
    from spk.pretrained import RESEMBLYZER_GE2E, calibration_path, shipped_calibration

    from spk.features import FeatureConfig

    shipped = json.loads(calibration_path("resemblyzer-ge2e").read_text())
    features = FeatureConfig.from_dict(RESEMBLYZER_GE2E.features).to_dict()
    calibration, record = shipped_calibration(RESEMBLYZER_GE2E, shipped["weights_sha256"], features)
    assert calibration.a == shipped["calibration"]["a"] and record["sha256"] and record["fitted_on"]
    assert shipped_calibration(RESEMBLYZER_GE2E, "0" * 64, features) is None
    assert shipped_calibration(RESEMBLYZER_GE2E, shipped["weights_sha256"], {**features, "silence_trim": "none"}) is None
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    from spk.pretrained import PretrainedError

    with pytest.raises(PretrainedError, match="broken.json of resemblyzer-ge2e cannot be read"):
        shipped_calibration(RESEMBLYZER_GE2E, shipped["weights_sha256"], features, broken)


def test_model_name_without_the_weights_says_what_to_install(tmp_path, monkeypatch):
    import importlib.metadata

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setenv("SPK_CACHE", str(tmp_path))
    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    wav = tmp_path / "a.wav"
    wav.write_bytes(b"")  # never read: the model fails first
    result = CliRunner().invoke(main, ["similarity", "--model", "resemblyzer-ge2e", str(wav), str(wav)])
    assert result.exit_code == 3, result.output
    assert "needs the Resemblyzer distribution" in result.stderr and "pip install" in result.stderr
    assert not (tmp_path / "pretrained" / "resemblyzer-ge2e").exists()  # nothing half-written left


def test_a_plain_calibration_file_given_is_shipped_as_it_is(tmp_path):
    from spk.calibration import calibrate, save_calibration
    from spk.pretrained import RESEMBLYZER_GE2E, shipped_calibration

    mine = calibrate([0.9, 0.8, 0.85, 0.3, 0.5, 0.4, 0.6], [1, 1, 1, 0, 0, 0, 0], dev_trials="my/trials")
    save_calibration(tmp_path / "calibration.json", mine)
    calibration, record = shipped_calibration(RESEMBLYZER_GE2E, "any", {}, tmp_path / "calibration.json")
    assert calibration.a == pytest.approx(mine.a) and record["fitted_on"] == {"description": "my/trials"}
    (tmp_path / "bad.json").write_text(json.dumps({"calibration": {"a": -1.0, "b": 0.0}}))
    from spk.pretrained import PretrainedError

    with pytest.raises(PretrainedError, match="a > 0"):
        shipped_calibration(RESEMBLYZER_GE2E, "any", {}, tmp_path / "bad.json")
