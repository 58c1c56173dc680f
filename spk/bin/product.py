"""``spk enroll``, ``spk verify``, ``spk identify`` and ``spk speakers``: a trained model as a product.

Exit status of every command: 0 success (``verify``: ACCEPT), 1 ``verify``: REJECT,
2 usage error (bad or missing options), 3 an input, model or database error
(unreadable, silent or too short audio, audio that is not speech; unknown speaker; missing or damaged
database; wrong model directory), 4 an internal error (a bug: never 1, which a
script would read as a rejection). Errors go to stderr as one message, without a
traceback (an internal error's traceback follows its message); with ``--json``
stdout also gets ``{"error": ..., "exit_code": ...}``.
"""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

import click

from spk.speaker_db import SpeakerDB, SpeakerDBError, check_speaker_name

EXIT_REJECT = 1
EXIT_USAGE = 2
EXIT_ERROR = 3
EXIT_INTERNAL = 4

_EXIT_HELP = ("Exit status: 0 success, 1 rejected claim (verify), 2 usage error, "
              "3 input, model or database error, 4 internal error (a bug).")


class _Command(click.Command):
    """A click command that also reports usage errors as JSON when ``--json`` is among its arguments."""

    def parse_args(self, ctx, args):
        wants_json = "--json" in args
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as error:
            if wants_json:
                _echo_json({"error": error.format_message(), "exit_code": EXIT_USAGE})
            raise

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except click.UsageError as error:  # raised by the command's own checks of its options
            if ctx.params.get("as_json"):
                _echo_json({"error": error.format_message(), "exit_code": EXIT_USAGE})
            raise
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as error:  # a bug: its own exit status, never 1 (REJECT), with the traceback
            import traceback

            message = (f"internal error ({type(error).__name__}: {error}); this is a bug in spk, please report it "
                       "with the traceback below")
            if ctx.params.get("as_json"):
                _echo_json({"error": message, "exit_code": EXIT_INTERNAL})
            click.echo(f"Error: {message}", err=True)
            click.echo("".join(traceback.format_exception(error)).rstrip(), err=True)
            sys.exit(EXIT_INTERNAL)


def _echo_json(record: dict) -> None:
    click.echo(json.dumps(record, sort_keys=True))


def _fail(message: str, as_json: bool, code: int = EXIT_ERROR):
    """Report an error (stderr, and stdout as JSON with ``--json``) and exit with ``code``."""
    if as_json:
        _echo_json({"error": message, "exit_code": code})
    click.echo(f"Error: {message}", err=True)
    sys.exit(code)


def _errors():
    """The exceptions that mean bad input, model or database (exit status 3)."""
    api = sys.modules.get("spk.api")  # not imported yet: none of its errors can have been raised
    return (SpeakerDBError, OSError) + ((api.SpkError,) if api is not None else ())


DEVICE = re.compile(r"(cpu|auto|mps|cuda(:\d+)?)")


def _check_device(_ctx, _param, value: str) -> str:
    """A usage error (exit 2) for a device that is none, before anything is loaded."""
    if not DEVICE.fullmatch(value):
        raise click.BadParameter(f"{value!r} is not a device; use cpu, cuda, cuda:N or auto")
    return value


def _check_finite(_ctx, _param, value: float | None) -> float | None:
    """A usage error for a threshold that is not a number (nan) or infinite: no score compares with it."""
    if value is not None and not math.isfinite(value):
        raise click.BadParameter(f"must be a finite number, not {value}")
    return value


def _check_name(_ctx, _param, value: str) -> str:
    """A usage error for a speaker name that cannot be one (empty, too long, control characters),
    before the model is loaded."""
    try:
        return check_speaker_name(value)
    except SpeakerDBError as error:
        raise click.BadParameter(str(error)) from None


def _model_options(function):
    function = click.option("--device", default="cpu", show_default=True, callback=_check_device,
                            help="Where the model runs: cpu, cuda, cuda:N or auto.")(function)
    function = click.option("--model", "model_path", required=True, metavar="DIR|NAME",
                            help="A trained experiment dir (exp/<tag>), a model package dir, or a pretrained "
                                 "model's name (resemblyzer-ge2e: imported into $SPK_CACHE, default "
                                 "~/.cache/spk, on first use).")(function)
    return function


def _threshold_options(function):
    """``--threshold`` and ``--operating-point``: the decision rule of ``verify`` and ``similarity``."""
    function = click.option("--operating-point", default=None, metavar="POINT",
                            help="Calibrated threshold to use: eer, far=<rate> (e.g. far=0.01) or bayes=<target "
                                 "prior> [default: eer, when the model has a calibration].")(function)
    function = click.option("--threshold", type=float, default=None, callback=_check_finite,
                            help="Accept when the cosine score is at least this [default: from the "
                                 "calibration].")(function)
    return function


def _embed_options(function):
    function = click.option("--vad", is_flag=True,
                            help="Drop non-speech frames (energy VAD) before the model.")(function)
    function = click.option("--hop", type=click.FloatRange(min=0, min_open=True), default=None, metavar="SECONDS",
                            help="Hop between windows (with --window) [default: half the window].")(function)
    function = click.option("--window", type=click.FloatRange(min=0, min_open=True), default=None,
                            metavar="SECONDS",
                            help="Embed sliding windows of this length and average them (long recordings); "
                                 "e.g. --window 3 --hop 1.5 [default: the whole recording at once, or the "
                                 "model's own windows when it has them (embed_windows: an imported GE2E "
                                 "model's 1.6 s partials)].")(function)
    return function


def _speech_check_option(function):
    return click.option("--no-speech-check", "no_speech_check", is_flag=True,
                        help="Do not refuse audio in which the speech detector (Silero VAD) finds too little "
                             "speech (noise, music, tones, silence).")(function)


def _json_option(function):
    return click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")(function)


def _embedding_kwargs(window: float | None, hop: float | None, vad: bool) -> dict:
    if hop is not None and window is None:
        raise click.UsageError("--hop needs --window (the window length)")
    options = {"vad": vad}
    if window is not None:
        options.update(windowed=True, window_s=window, hop_s=hop if hop is not None else window / 2)
    return options


def _load_model(model_path: str, device: str, speech_check: bool = True):
    from spk.api import SpeakerModel

    return SpeakerModel.load(model_path, device=device, speech_check=speech_check)


def _check_threshold_options(threshold: float | None, operating_point: str | None) -> None:
    """Usage errors (exit 2) for --threshold with --operating-point, or an operating point that is none."""
    if threshold is not None and operating_point is not None:
        raise click.UsageError("give --threshold or --operating-point, not both")
    if operating_point is not None:
        from spk.api import SpkError, parse_operating_point

        try:
            parse_operating_point(operating_point)
        except SpkError as error:
            raise click.BadParameter(str(error), param_hint="'--operating-point'") from None


@click.command("enroll", cls=_Command, epilog=_EXIT_HELP)
@_model_options
@click.option("--db", "db_path", required=True, metavar="FILE",
              help="Speaker database (SQLite); made when it does not exist.")
@click.option("--speaker", required=True, callback=_check_name,
              help="Name of the speaker to enroll (new, or add utterances).")
@_embed_options
@_speech_check_option
@_json_option
@click.argument("audio", nargs=-1, required=True)
def enroll(model_path, device, db_path, speaker, window, hop, vad, no_speech_check, as_json, audio):
    """Enroll SPEAKER from one or more AUDIO files: their embeddings are added to the speaker database.

    Enrolling a known speaker again adds the utterances; the speaker's model (the mean
    of all its utterances' unit-length embeddings) is recomputed. Either every file is
    added or, when one cannot be used, none.
    """
    options = _embedding_kwargs(window, hop, vad)
    try:
        if Path(db_path).is_file() and Path(db_path).stat().st_size > 0:
            SpeakerDB.open(db_path).close()  # a damaged file fails now, before the model is loaded
        model = _load_model(model_path, device, not no_speech_check)
        total = model.enroll(db_path, speaker, list(audio), **options)
    except _errors() as error:
        _fail(str(error), as_json)
    if as_json:
        _echo_json({"speaker": speaker, "added": len(audio), "utterances": total, "db": db_path})
    else:
        click.echo(f"enrolled {speaker}: {len(audio)} utterance(s) added, {total} in all ({db_path})")


@click.command("verify", cls=_Command, epilog=_EXIT_HELP)
@_model_options
@click.option("--db", "db_path", required=True, metavar="FILE", help="Speaker database made by 'spk enroll'.")
@click.option("--claim", required=True, callback=_check_name, help="The claimed speaker (enrolled in --db).")
@_threshold_options
@_embed_options
@click.option("--stream", is_flag=True,
              help="Read AUDIO in real-time-sized chunks (a file, or '-' for standard input: WAV, FLAC or Ogg, or "
                   "with --raw raw 16 kHz 16-bit mono PCM) and print a running score after each; the final "
                   "decision is the same as without --stream.")
@click.option("--chunk-seconds", type=click.FloatRange(min=0, min_open=True), default=0.25, show_default=True,
              help="Chunk length for --stream.")
@click.option("--raw", is_flag=True,
              help="With --stream -: standard input is raw 16 kHz 16-bit little-endian mono PCM, no header "
                   "(without it, a stream that is not WAV, FLAC or Ogg is refused).")
@_speech_check_option
@_json_option
@click.argument("audio")
def verify(model_path, device, db_path, claim, threshold, operating_point, window, hop, vad, stream, chunk_seconds,
           raw, no_speech_check, as_json, audio):
    """Is AUDIO the claimed speaker? Prints ACCEPT or REJECT with the score, the threshold and the LLR.

    The score is the cosine between AUDIO's embedding and the claimed speaker's model
    (centred first when the model has a centre vector). The LLR (natural log) needs the
    model's calibration (calibration.json, stage 5 with --calib-set); so do operating
    points. Exit status 0 means ACCEPT and 1 REJECT.

    With --stream the running score is printed as the audio arrives (with --json, one
    JSON line per chunk, {"seconds": ..., "score": ...}, then the decision's object).
    """
    _check_threshold_options(threshold, operating_point)
    if stream and (window is not None or vad):
        raise click.UsageError("--stream embeds the whole stream as it arrives; it takes no --window or --vad")
    if raw and not (stream and audio == "-"):
        raise click.UsageError("--raw describes standard input read with --stream: give --stream and AUDIO '-'")
    options = _embedding_kwargs(window, hop, vad)
    try:
        with SpeakerDB.open(db_path) as db:
            db.speaker_model(claim)  # an unknown speaker fails now, before the model is loaded
            model = _load_model(model_path, device, not no_speech_check)
            if stream:
                result = _verify_stream(model, db, claim, threshold, operating_point, audio, chunk_seconds, raw,
                                        as_json)
            else:
                result = model.verify(audio, db, claim, threshold=threshold,
                                      operating_point=operating_point or "eer", **options)
    except _errors() as error:
        _fail(str(error), as_json)
    if as_json:
        _echo_json({**result.to_dict(), "audio": audio})
    else:
        relation = ">=" if result.accept else "<"
        point = f" ({result.operating_point})" if result.operating_point else ""
        llr = "n/a (no calibration)" if result.llr is None else f"{result.llr:.3f}"
        click.echo(f"{'ACCEPT' if result.accept else 'REJECT'} {claim}: score {result.score:.4f} {relation} "
                   f"threshold {result.threshold:.4f}{point}, LLR {llr}")
    sys.exit(0 if result.accept else EXIT_REJECT)


def _verify_stream(model, db, claim, threshold, operating_point, audio, chunk_seconds, raw, as_json):
    """Print the running score of each chunk; return the final VerifyResult."""
    from spk.audio import AudioError
    from spk.streaming import read_chunks

    try:
        for update in model.verify_stream(read_chunks(audio, chunk_seconds, raw=raw), db, claim, threshold=threshold,
                                          operating_point=operating_point or "eer"):
            if not isinstance(update, tuple):
                return update
            seconds, score = update
            if as_json:
                _echo_json({"seconds": round(seconds, 4), "score": score})
            else:
                click.echo(f"{seconds:7.2f} s  score {score:.4f}")
    except AudioError as error:
        raise OSError(f"cannot read audio {audio}: {error}") from None
    raise AssertionError("verify_stream ended without a decision")


@click.command("identify", cls=_Command, epilog=_EXIT_HELP)
@_model_options
@click.option("--db", "db_path", default=None, metavar="FILE",
              help="Identify among the speakers of this database [default: the model's training speakers, "
                   "through its classifier head].")
@click.option("--top-k", default=5, show_default=True, type=click.IntRange(min=1), help="Speakers to list.")
@click.option("--unknown-threshold", type=float, default=None, callback=_check_finite,
              help="With --db: answer 'unknown' when the best cosine score is below this (open set).")
@_embed_options
@_speech_check_option
@_json_option
@click.argument("audio")
def identify(model_path, device, db_path, top_k, unknown_threshold, window, hop, vad, no_speech_check, as_json,
             audio):
    """Who is speaking in AUDIO? The most probable speakers with their probabilities.

    Without --db: the training speakers, by the classifier head's softmax (models
    trained with an embedding loss have no head and need --db). With --db: the
    enrolled speakers ranked by cosine score; probabilities are a softmax over the
    calibrated LLRs (equal priors) or, without calibration, over 30 x cosine.
    """
    options = _embedding_kwargs(window, hop, vad)
    try:
        if db_path is None:
            result = _load_model(model_path, device, not no_speech_check).identify(
                audio, top_k=top_k, unknown_threshold=unknown_threshold, **options)
        else:
            with SpeakerDB.open(db_path) as db:
                db.speaker_models()  # an empty database fails now, before the model is loaded
                model = _load_model(model_path, device, not no_speech_check)
                result = model.identify(audio, top_k=top_k, db=db, unknown_threshold=unknown_threshold, **options)
    except _errors() as error:
        _fail(str(error), as_json)
    if as_json:
        _echo_json({**result.to_dict(), "audio": audio})
        return
    click.echo(f"speaker: {result.speaker}" + (" (best score below --unknown-threshold)" if result.unknown else ""))
    for rank, candidate in enumerate(result.candidates, 1):
        extra = "" if candidate.score is None else f"  score {candidate.score:.4f}"
        if candidate.llr is not None:
            extra += f"  LLR {candidate.llr:.3f}"
        click.echo(f"{rank:>3}. {candidate.speaker:<20} p={candidate.probability:.4f}{extra}")


@click.group("speakers")
def speakers():
    """List or remove the speakers of a speaker database."""


@speakers.command("list", cls=_Command, epilog=_EXIT_HELP)
@click.option("--db", "db_path", required=True, metavar="FILE", help="Speaker database made by 'spk enroll'.")
@_json_option
def list_speakers(db_path, as_json):
    """List the enrolled speakers with their numbers of utterances."""
    try:
        with SpeakerDB.open(db_path) as db:
            infos, model = db.speakers(), db.model
    except (SpeakerDBError, OSError) as error:
        _fail(str(error), as_json)
    if as_json:
        _echo_json({"db": db_path, "model_id": model.model_id, "embedding_dim": model.embedding_dim,
                    "speakers": [info.to_dict() for info in infos]})
        return
    if not infos:
        click.echo(f"{db_path}: no speakers enrolled")
        return
    click.echo(f"{'speaker':<24} {'utterances':>10} {'speech s':>9}  updated")
    for info in infos:
        click.echo(f"{info.name:<24} {info.num_utterances:>10} {info.duration:>9.1f}  {info.updated or info.created}")


@speakers.command("remove", cls=_Command, epilog=_EXIT_HELP)
@click.option("--db", "db_path", required=True, metavar="FILE", help="Speaker database made by 'spk enroll'.")
@_json_option
@click.argument("speaker")
def remove_speaker(db_path, as_json, speaker):
    """Remove SPEAKER, its utterances and its model from the database."""
    try:
        with SpeakerDB.open(db_path) as db:
            count = db.remove(speaker)
    except (SpeakerDBError, OSError) as error:
        _fail(str(error), as_json)
    if as_json:
        _echo_json({"removed": speaker, "utterances": count, "db": db_path})
    else:
        click.echo(f"removed {speaker} ({count} utterance(s)) from {db_path}")
