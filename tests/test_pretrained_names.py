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
    assert (cached / "spk_package.json").is_file()
    assert not [path for path in cached.parent.iterdir() if path.name.startswith(".")]  # no staging left

    (cached / "config.yaml").write_text((cached / "config.yaml").read_text() + "\n# edited\n")
    result = runner.invoke(main, ["similarity", "--model", "resemblyzer-ge2e", "--json", *map(str, files)])
    assert result.exit_code in (0, 1), result.output + str(result.exception)
    assert json.loads(result.stdout)["score"] == pytest.approx(first["score"], abs=1e-6)
    from spk.model_dir import verify_package

    verify_package(cached)  # imported again: the checksums hold
