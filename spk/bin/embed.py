"""``spk embed`` (stage 4), ``spk eval-id`` and ``spk baseline`` (stage 5)."""

from __future__ import annotations

from pathlib import Path

import click

from spk.bin.job_options import job_options
from spk.data import DataDirError, validate_data_dir
from spk.jobs import JobError


@click.command("embed")
@click.option("--exp-dir", required=True, type=click.Path(exists=True, file_okay=False), help="Trained exp/<tag>.")
@click.option("--data-dir", "data_dirs", required=True, multiple=True, type=click.Path(exists=True, file_okay=False),
              help="Data dir to embed; repeat for several, each with its own --out-dir (one model load).")
@click.option("--out-dir", "out_dirs", required=True, multiple=True, type=click.Path(file_okay=False),
              help="Where xvector.{ark,scp} and spk_xvector.{ark,scp} go (one per --data-dir, in order).")
@click.option("--device", default="cpu", show_default=True)
@click.option("--chunk-seconds", type=float, default=None,
              help="Embed each utterance as chunks of this many seconds and average them (the mean of the "
                   "length-normalised chunk embeddings); shorter utterances are embedded whole "
                   "[default: whole utterances].")
@click.option("--chunk-overlap", type=float, default=None,
              help="Seconds by which neighbouring chunks overlap (with --chunk-seconds) [default: 0].")
@job_options("Parallel jobs over split<NJ>, each with cores/nj torch threads here (one job: $SPK_NUM_THREADS, "
             "else $OMP_NUM_THREADS, else the cores this process may use); use a GPU job command for --device cuda.")
def embed(exp_dir, data_dirs, out_dirs, device, chunk_seconds, chunk_overlap, nj, cmd, log_dir):
    """Extract an embedding per utterance and per speaker of each --data-dir with the model of EXP_DIR."""
    from spk.embed import extract_embeddings
    from spk.threads import configure_torch_threads

    if chunk_overlap is not None and chunk_seconds is None:
        raise click.UsageError("--chunk-overlap needs --chunk-seconds (the chunk length)")
    if len(data_dirs) != len(out_dirs):
        raise click.UsageError(f"give one --out-dir per --data-dir ({len(data_dirs)} data dirs, "
                               f"{len(out_dirs)} out dirs)")
    try:
        configure_torch_threads(0, purpose="embedding")  # this process's; parallel jobs set their own
        for data_dir in data_dirs:  # every set checked before any is embedded
            validate_data_dir(data_dir, need_feats=True)
        for data_dir, out_dir in zip(data_dirs, out_dirs):
            extract_embeddings(Path(exp_dir), Path(data_dir), Path(out_dir), device=device,
                               chunk_seconds=chunk_seconds, chunk_overlap=chunk_overlap or 0.0, nj=nj, cmd=cmd,
                               log_dir=Path(log_dir) if log_dir else None)
    except (DataDirError, FileNotFoundError, ValueError, JobError) as error:
        raise click.ClickException(str(error)) from None


@click.command("eval-id")
@click.option("--exp-dir", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--embeddings", required=True, type=click.Path(exists=True, dir_okay=False),
              help="xvector.scp of the held-out utterances.")
@click.option("--data-dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="Data dir of the held-out utterances (for their speakers).")
@click.option("--results-out", required=True, type=click.Path(dir_okay=False))
@click.option("--speaker-embeddings", type=click.Path(exists=True, dir_okay=False),
              help="spk_xvector.scp of the training set, for models without a classification head.")
def eval_id(exp_dir, embeddings, data_dir, results_out, speaker_embeddings):
    """Closed-set identification over the training speakers: top-1, top-5 and a confusion matrix."""
    from spk.identify import evaluate_identification

    try:
        evaluate_identification(Path(exp_dir), Path(embeddings), Path(data_dir), Path(results_out),
                                speaker_embeddings_scp=Path(speaker_embeddings) if speaker_embeddings else None)
    except (DataDirError, FileNotFoundError, ValueError) as error:
        raise click.ClickException(str(error)) from None


@click.command("baseline")
@click.option("--data-dir", "data_dirs", required=True, multiple=True, type=click.Path(exists=True, file_okay=False),
              help="Data dir; repeat for several, each with its own --out-dir.")
@click.option("--out-dir", "out_dirs", required=True, multiple=True, type=click.Path(file_okay=False),
              help="Where the vectors go (one per --data-dir, in order).")
def baseline(data_dirs, out_dirs):
    """No-training baseline vectors (utterance mean of normalised MFCCs) for each --data-dir."""
    from spk.baseline import write_baseline_embeddings

    if len(data_dirs) != len(out_dirs):
        raise click.UsageError(f"give one --out-dir per --data-dir ({len(data_dirs)} data dirs, "
                               f"{len(out_dirs)} out dirs)")
    try:
        for data_dir in data_dirs:
            validate_data_dir(data_dir)
        for data_dir, out_dir in zip(data_dirs, out_dirs):
            write_baseline_embeddings(Path(data_dir), Path(out_dir))
    except (DataDirError, ValueError) as error:
        raise click.ClickException(str(error)) from None
