"""``spk similarity`` and ``spk embed-audio``: a trained model on audio files, no speaker database.

Both load the model with :meth:`spk.api.SpeakerModel.load` and embed with
:meth:`spk.api.SpeakerModel.embed`, as ``spk enroll/verify/identify`` do, and report
errors the same way (:mod:`spk.bin.product`): exit status 2 for a usage error, 3 for
unusable audio or model, one message on stderr without a traceback and, with
``--json``, ``{"error": ..., "exit_code": ...}`` on stdout.
"""

from __future__ import annotations

import sys

import click

from spk.bin.product import (EXIT_REJECT, _check_threshold_options, _Command, _echo_json, _embed_options,
                             _embedding_kwargs, _errors, _fail, _json_option, _load_model, _model_options,
                             _speech_check_option,
                             _threshold_options)

_SIMILARITY_EXIT_HELP = ("Exit status: 0 ACCEPT (or no decision: an uncalibrated model without --threshold), "
                         "1 REJECT, 2 usage error, 3 input or model error.")
_EMBED_EXIT_HELP = "Exit status: 0 written, 2 usage error (including --out and keys), 3 input or model error."


@click.command("similarity", cls=_Command, epilog=_SIMILARITY_EXIT_HELP)
@_model_options
@_threshold_options
@_embed_options
@_speech_check_option
@_json_option
@click.argument("audio_a", metavar="A")
@click.argument("audio_b", metavar="B")
def similarity(model_path, device, threshold, operating_point, window, hop, vad, no_speech_check, as_json, audio_a,
               audio_b):
    """Are A and B the same speaker? Prints the score, the LLR and ACCEPT or REJECT.

    The score is the cosine between the embeddings of the two audio files (centred
    first when the model has a centre vector), as 'spk verify' scores a claim. The
    LLR (natural log) is printed when the model has a calibration (calibration.json);
    the decision uses --threshold, or the calibration's threshold for
    --operating-point (default eer). A model without calibration and no --threshold
    gives the score alone, with a note, and exit status 0.

    Like 'spk verify', the exit status is the decision (0 ACCEPT, 1 REJECT), so that
    'spk similarity A B --threshold 0.6 && ...' reads as "if same speaker"; read the
    score from the output (--json) when only the score matters.
    """
    _check_threshold_options(threshold, operating_point)
    options = _embedding_kwargs(window, hop, vad)
    try:
        model = _load_model(model_path, device, not no_speech_check)
        score = model.score(model.embed(audio_a, **options), model.embed(audio_b, **options))
        result = _decide(model, score, threshold, operating_point)
    except _errors() as error:
        _fail(str(error), as_json)
    result = {"a": audio_a, "b": audio_b, **result}
    if as_json:
        _echo_json(result)
    else:
        click.echo(_similarity_line(result))
    sys.exit(EXIT_REJECT if result["decision"] == "reject" else 0)


def _decide(model, score: float, threshold: float | None, operating_point: str | None) -> dict:
    """Score, LLR, threshold and decision; without a threshold or a calibration, no decision and a note."""
    from spk.api import CalibrationError

    llr = model.llr(score) if model.calibration is not None else None
    point, note = None, None
    if threshold is None:
        try:
            threshold, point = model.threshold(operating_point or "eer"), operating_point or "eer"
        except CalibrationError as error:
            if operating_point is not None:  # an operating point asked for and not there is an error
                raise
            note = f"no decision: {error}"
    decision = None if threshold is None else ("accept" if score >= threshold else "reject")
    return {"score": score, "llr": llr, "threshold": None if threshold is None else float(threshold),
            "operating_point": point, "accept": None if decision is None else decision == "accept",
            "decision": decision, "note": note}


def _similarity_line(result: dict) -> str:
    """The text output of one similarity."""
    llr = "n/a (no calibration)" if result["llr"] is None else f"{result['llr']:.3f}"
    if result["decision"] is None:
        return f"score {result['score']:.4f}, LLR {llr}\n{result['note']}"
    accept = result["accept"]
    point = f" ({result['operating_point']})" if result["operating_point"] else ""
    return (f"{'ACCEPT same speaker' if accept else 'REJECT different speakers'}: score {result['score']:.4f} "
            f"{'>=' if accept else '<'} threshold {result['threshold']:.4f}{point}, LLR {llr}")


@click.command("embed-audio", cls=_Command, epilog=_EMBED_EXIT_HELP)
@_model_options
@click.option("--out", "out_spec", required=True, metavar="OUT",
              help="X.npy (with X.files.txt listing the files), ark:X.ark or ark,scp:X.ark,X.scp "
                   "(ark,t:... for a text ark).")
@_embed_options
@_speech_check_option
@_json_option
@click.argument("audio", nargs=-1, required=True)
def embed_audio(model_path, device, out_spec, window, hop, vad, no_speech_check, as_json, audio):
    """Write the L2-normalised embedding of each AUDIO file.

    \b
    --out X.npy          an (N, E) float32 array, row i the i-th AUDIO file; the files,
                         as given, one per line in X.files.txt (and in --json's "files")
    --out ark:X.ark      a Kaldi table (kaldiio), keyed by file name without extension
    --out ark,scp:X.ark,X.scp   the same with its scp; entries in argument order

    Keys must be unique (two files 'a/x.wav' and 'b/x.wav' are a usage error; write
    .npy instead). Every file is embedded before anything is written: when one cannot
    be used, nothing is written and an old output is left as it was.
    """
    from spk.embedding_files import EmbeddingOutput, EmbeddingOutputError

    options = _embedding_kwargs(window, hop, vad)
    try:
        output = EmbeddingOutput.parse(out_spec)
        output.keys(audio)
    except EmbeddingOutputError as error:
        raise click.BadParameter(str(error), param_hint="'--out'") from None
    try:
        import numpy as np
        from tqdm import tqdm

        model = _load_model(model_path, device, not no_speech_check)
        rows = [model.embed(path, **options) for path in tqdm(audio, desc="embed-audio", unit="file", leave=False,
                                                              disable=None)]
        summary = output.write(list(audio), np.stack(rows))
    except _errors() as error:
        _fail(str(error), as_json)
    if as_json:
        _echo_json(summary)
        return
    where = " and ".join(summary["written"])
    click.echo(f"wrote {summary['num_embeddings']} embedding(s) of dimension {summary['embedding_dim']} "
               f"({summary['format']}): {where}")
