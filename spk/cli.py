"""The ``spk`` command line: a click group whose sub-commands live in ``spk/bin``.

Each module in ``spk/bin`` defines click commands that parse options and call the
library.  Modules are imported only when their command runs, so ``spk --help``
and light commands start fast.
"""

import importlib

import click

from spk import __version__
from spk.log import setup_logging

# command name -> (module under spk.bin, attribute holding the click command or group)
_COMMANDS = {
    "prepare": ("prepare", "prepare"),
    "data": ("data", "data"),
    "features": ("features", "features"),
    "augment": ("augment", "augment"),
    "egs": ("train", "egs"),
    "train": ("train", "train"),
    "train-launch": ("train_launch", "train_launch"),  # hidden: no summary, not in --help
    "embed": ("embed", "embed"),
    "score": ("score", "score"),
    "calibrate": ("calibrate", "calibrate"),
    "evaluate": ("evaluate", "evaluate"),
    "eval-id": ("embed", "eval_id"),
    "baseline": ("embed", "baseline"),
    "report": ("report", "report"),
    "compare": ("report", "compare"),
    "enroll": ("product", "enroll"),
    "verify": ("product", "verify"),
    "identify": ("product", "identify"),
    "speakers": ("product", "speakers"),
    "serve": ("serve", "serve"),
    "keys": ("serve", "keys"),
    "audit": ("serve", "audit"),
    "similarity": ("one_file", "similarity"),
    "embed-audio": ("one_file", "embed_audio"),
    "export": ("export", "export"),
    "pretrained": ("pretrained", "pretrained"),
}

_SUMMARIES = {
    "prepare": "Write the data dirs of a corpus (stage 0): mini, librispeech, voxceleb, ...",
    "data": "Validate, fix, subset and split Kaldi data dirs.",
    "features": "Compute fbank/MFCC features and CMVN stats (stage 1).",
    "augment": "Noise/music/RIR sources; augmented and speed-perturbed data dirs.",
    "egs": "Prepare training examples: filter and validation split (stage 2).",
    "train": "Train a speaker embedder (stage 3).",
    "embed": "Extract utterance and speaker embeddings (stage 4).",
    "score": "Score verification trials (stage 5).",
    "calibrate": "Calibrate scores to log-likelihood ratios on a dev trial list.",
    "evaluate": "Stage 5 in one command: score, calibrate and evaluate identification.",
    "eval-id": "Evaluate closed-set identification (stage 5).",
    "baseline": "No-training MFCC-mean baseline vectors.",
    "report": "Write RESULTS.md and plots for an experiment (stage 6).",
    "compare": "Compare experiments side by side.",
    "enroll": "Enroll a speaker from audio files into a speaker database.",
    "verify": "Accept or reject a claimed speaker for an audio file (exit 0/1).",
    "identify": "Name the most probable speakers of an audio file.",
    "speakers": "List or remove the speakers of a speaker database.",
    "serve": "Serve enroll/verify/identify over HTTP (API keys, limits, audit, web page).",
    "keys": "Create, list and revoke the API keys of 'spk serve'.",
    "audit": "Show the audit trail of a speaker database.",
    "similarity": "Score two audio files: same speaker or not (exit 0/1).",
    "embed-audio": "Write the embeddings of audio files (.npy, or Kaldi ark/scp).",
    "export": "Package a trained model (TorchScript, ONNX, calibration) for deployment.",
    "pretrained": "Import a pretrained encoder (resemblyzer-ge2e) as a model package.",
}


class LazyGroup(click.Group):
    """A group that imports a sub-command's module only when that command is used."""

    def list_commands(self, ctx):
        return list(_COMMANDS)

    def get_command(self, ctx, name):
        if name not in _COMMANDS:
            return None
        module, attr = _COMMANDS[name]
        return getattr(importlib.import_module(f"spk.bin.{module}"), attr)

    def format_commands(self, ctx, formatter):
        with formatter.section("Commands"):
            formatter.write_dl([(name, _SUMMARIES[name]) for name in _COMMANDS if name in _SUMMARIES])


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--verbose", "-v", is_flag=True, help="Log debug messages too.")
@click.version_option(version=__version__, package_name="spk")
def main(verbose: bool) -> None:
    """spk: speaker verification and identification with RNN embedders."""
    setup_logging(verbose)
