"""``spk export``: a trained experiment as a self-contained model package (TorchScript + ONNX)."""

from __future__ import annotations

from pathlib import Path

import click

from spk.bin.product import EXIT_ERROR, _Command, _fail


@click.command("export", cls=_Command,
               epilog="Exit status: 0 written, 2 usage error, 3 an error of the model, the output path or the "
                      "export, 4 internal error (a bug).")
@click.option("--model", "exp_dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="Trained experiment dir, exp/<tag> (with config.yaml, models/final.pt, speakers.txt).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Package directory to write (must not exist, unless --force).")
@click.option("--force", is_flag=True, help="Replace an existing package at --out.")
@click.option("--no-onnx", is_flag=True, help="Skip the ONNX graph (TorchScript only).")
@click.option("--train-data", default=None, type=click.Path(exists=True, file_okay=False),
              help="Training data dir whose cmvn.scp gives the global CMVN stats; needed only for "
                   "'cmvn: global' features when the experiment has no global_cmvn.npy.")
@click.option("--center-scp", default=None, type=click.Path(exists=True, dir_okay=False),
              help="Embeddings (e.g. exp/<tag>/embeddings/train/xvector.scp) whose mean is stored as "
                   "center.npy, the vector subtracted before scoring [default: exp/<tag>/center.npy, "
                   "or the centering calibration.json was fitted with, if any].")
def export(exp_dir, out_dir, force, no_onnx, train_data, center_scp):
    """Write EXP_DIR's model as a package: config, weights, speakers, calibration, CMVN, TorchScript, ONNX.

    Every exported graph is checked against the PyTorch model on random inputs of
    several lengths before the package is written; the manifest spk_package.json
    holds the sha256 of every file.
    """
    from spk.export import ExportError
    from spk.package import PackageError, write_package

    try:
        write_package(Path(exp_dir), Path(out_dir), force=force, onnx=not no_onnx, train_data=train_data,
                      center_scp=center_scp)
    except (PackageError, ExportError, FileNotFoundError, ValueError) as error:
        _fail(str(error), as_json=False, code=EXIT_ERROR)
