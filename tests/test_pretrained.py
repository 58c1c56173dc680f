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
    for path in files:
        feats = waveform_features(read_audio_file(path), model.feature_config)
        ours = embed_features(model.model, feats, chunking=partials_chunking())
        theirs = encoder.embed_utterance(resemblyzer.preprocess_wav(path))
        assert np.dot(ours, theirs) / np.linalg.norm(ours) >= 0.999, path
