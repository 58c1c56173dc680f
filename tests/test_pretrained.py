"""spk pretrained: locating, mapping and importing resemblyzer-ge2e, and its parity with Resemblyzer."""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from spk.cli import main
from spk.pretrained import RESEMBLYZER_GE2E, PretrainedError, get_spec, locate_weights, mapped_state

LIBRISPEECH = Path(__file__).resolve().parents[2] / "shared" / "data" / "LibriSpeech" / "train-clean-100"


def test_unknown_model_and_missing_distribution_are_clear_errors():
    with pytest.raises(PretrainedError, match="known: resemblyzer-ge2e"):
        get_spec("ecapa")
    with pytest.raises(PretrainedError, match="not installed: pip install"):
        locate_weights(replace(RESEMBLYZER_GE2E, distribution="spk-no-such-distribution"))
    result = CliRunner().invoke(main, ["pretrained", "import", "ecapa", "--out", "unused"])
    assert result.exit_code == 1 and "unknown pretrained model 'ecapa'" in result.output


def test_embed_windows_are_checked():
    from spk.experiment import ConfigError, ExperimentConfig

    assert ExperimentConfig(embed_windows={"frames": 160, "step": 77, "pad": True}).embed_windows["pad"]
    with pytest.raises(ConfigError, match="embed_windows.step"):
        ExperimentConfig(embed_windows={"frames": 160})
    with pytest.raises(ConfigError, match="unknown key.*hop"):
        ExperimentConfig(embed_windows={"frames": 160, "step": 80, "hop": 1})
    with pytest.raises(ConfigError, match="cannot exceed"):
        ExperimentConfig(embed_windows={"frames": 10, "step": 80})


def test_checkpoint_names_map_onto_spk_parameters():
    tensor = torch.zeros(1)
    checkpoint = {"model_state": {"lstm.weight_ih_l0": tensor, "linear.bias": tensor, "similarity_weight": tensor}}
    assert set(mapped_state(RESEMBLYZER_GE2E, checkpoint, Path("x.pt"))) == {"encoder.rnn.weight_ih_l0",
                                                                            "segment.bias"}
    with pytest.raises(PretrainedError, match="unexpected weight 'extra.w'"):
        mapped_state(RESEMBLYZER_GE2E, {"model_state": {"extra.w": tensor}}, Path("x.pt"))
    with pytest.raises(PretrainedError, match="no 'model_state'"):
        mapped_state(RESEMBLYZER_GE2E, {}, Path("x.pt"))


def test_imported_package_matches_resemblyzer(tmp_path):
    """The package written by 'spk pretrained import' embeds 3 real utterances as Resemblyzer does."""
    pytest.importorskip("webrtcvad")
    resemblyzer = pytest.importorskip("resemblyzer")
    files = sorted(LIBRISPEECH.rglob("*.flac"))[:3]
    if len(files) < 3:
        pytest.skip(f"the LibriSpeech excerpt is not at {LIBRISPEECH}")
    from spk.api import SpeakerModel
    from spk.audio import read_audio_file
    from spk.inference import embed_features, waveform_features
    from spk.pretrained import partials_chunking

    out = tmp_path / "ge2e"
    result = CliRunner().invoke(main, ["pretrained", "import", "resemblyzer-ge2e", "--out", str(out), "--no-onnx"])
    assert result.exit_code == 0, result.output
    source = json.loads((out / "spk_package.json").read_text())["source"]
    assert source["distribution"] == "Resemblyzer" and source["license"] == "Apache-2.0"
    assert len(source["sha256"]) == 64 and source["file"] == "resemblyzer/pretrained.pt"

    model = SpeakerModel.load(out)
    encoder = resemblyzer.VoiceEncoder("cpu", verbose=False)
    theirs_first = encoder.embed_utterance(resemblyzer.preprocess_wav(files[0]))
    for path in files:
        feats = waveform_features(read_audio_file(path), model.feature_config)
        ours = embed_features(model.model, feats, chunking=partials_chunking())
        theirs = encoder.embed_utterance(resemblyzer.preprocess_wav(path))
        assert np.dot(ours, theirs) / np.linalg.norm(ours) >= 0.999, path
    # the product embeds with the package's own windows (embed_windows), the same partials
    assert model.default_chunking == partials_chunking()
    assert np.dot(model.embed(files[0]), theirs_first) >= 0.999
    from spk.api import SpkError

    with pytest.raises(SpkError, match="not streamed"):
        next(model.verify_stream([np.zeros(1600, np.float32)], theirs_first, threshold=0.5))
