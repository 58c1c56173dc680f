"""``spk pretrained``: list pretrained speaker encoders and import them as spk model packages."""

from __future__ import annotations

from pathlib import Path

import click


@click.group("pretrained")
def pretrained():
    """Pretrained speaker encoders from installed Python packages, as spk model packages."""


@pretrained.command("list")
def list_models():
    """Name each known pretrained model, whether its weights are installed, and what it is."""
    from spk.pretrained import PRETRAINED, PretrainedError, locate_weights

    for name, spec in sorted(PRETRAINED.items()):
        try:
            path, version = locate_weights(spec)
            where = f"installed: {spec.distribution} {version}"
        except PretrainedError:
            where = f"not installed ({spec.install})"
        click.echo(f"{name}\t{spec.license}\t{where}\n    {spec.description}")


@pretrained.command("import")
@click.argument("name")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Package directory to write (must not exist, unless --force).")
@click.option("--force", is_flag=True, help="Replace an existing package at --out.")
@click.option("--onnx/--no-onnx", default=None,
              help="Write the ONNX graph too [default: when the onnx package is installed].")
@click.option("--silence-trim", type=click.Choice(["webrtcvad", "none"]), default=None,
              help="Front end's silence trimming [default: the model's own; webrtcvad for resemblyzer-ge2e, "
                   "which needs the webrtcvad module].")
@click.option("--calibration", "calibration", type=click.Path(dir_okay=False, exists=True), default=None,
              help="Calibration file to ship: one benchmarks/pretrained_calibration.py writes, or a calibration.json "
                   "of 'spk calibrate' on your own trials scored with this model [default: the one spk "
                   "keeps for the model, fitted on held-out LibriSpeech speakers, when it fits the weights and "
                   "front end].")
@click.option("--no-calibration", is_flag=True, help="Ship no calibration (spk verify then needs --threshold).")
def import_model(name, out_dir, force, onnx, silence_trim, calibration, no_calibration):
    """Write the pretrained model NAME (e.g. resemblyzer-ge2e) as a model package at --out.

    The weights are read from the installed distribution that ships them (never
    downloaded, never copied into spk); the manifest records their origin, version,
    sha256 and licence, and the calibration shipped as calibration.json (what it was
    fitted on, its held-out error rates). Use the package with --model in spk
    enroll/verify/identify, or pass the name itself: --model resemblyzer-ge2e imports
    it into $SPK_CACHE (default ~/.cache/spk) on first use.
    """
    from spk.export import ExportError
    from spk.package import PackageError
    from spk.pretrained import PretrainedError, import_pretrained

    try:
        if calibration is not None and no_calibration:
            raise click.UsageError("give --calibration or --no-calibration, not both")
        path = import_pretrained(name, Path(out_dir), force=force, onnx=onnx, silence_trim=silence_trim,
                                 calibration=False if no_calibration else calibration)
    except (PretrainedError, PackageError, ExportError, ValueError) as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"wrote {path}")
