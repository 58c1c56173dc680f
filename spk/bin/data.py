"""``spk data``: validate, fix, subset and split Kaldi data dirs (see :mod:`spk.data`)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from spk.data import (
    DataDirError,
    DataDirUsageError,
    fix_data_dir,
    read_id_list,
    split_data_dir,
    subset_data_dir,
    validate_data_dir,
)

_DATA_DIR = click.Path(exists=True, file_okay=False, path_type=Path)
_LIST_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


@contextmanager
def _reported_as_click_errors() -> Iterator[None]:
    """Turn the data package's user-facing errors into a clean ``Error: ...`` and exit status 1."""
    try:
        yield
    except (DataDirError, DataDirUsageError) as error:
        raise click.ClickException(str(error)) from error


@click.group("data")
def data() -> None:
    """Check and reshape Kaldi data dirs (wav.scp, utt2spk, spk2utt, segments, feats.scp, ...)."""


@data.command("validate", short_help="Check a data dir; list every problem.")
@click.argument("data_dir", type=_DATA_DIR)
@click.option("--need-feats", is_flag=True, help="Every utterance must have features in feats.scp.")
@click.option("--need-cmvn", is_flag=True, help="Every utterance must have CMVN statistics in cmvn.scp.")
@click.option("--need-durations", is_flag=True, help="Every utterance must have a duration in utt2dur.")
def validate(data_dir: Path, need_feats: bool, need_cmvn: bool, need_durations: bool) -> None:
    """Check DATA_DIR; print its summary, or every problem (to stderr) and exit 1."""
    try:
        summary = validate_data_dir(data_dir, need_feats=need_feats, need_cmvn=need_cmvn,
                                    need_durations=need_durations)
    except DataDirError as error:
        click.echo(str(error), err=True)
        raise click.exceptions.Exit(1) from error
    click.echo(str(summary))


@data.command("fix", short_help="Keep the consistent part of a data dir, backing up the rest.")
@click.argument("data_dir", type=_DATA_DIR)
def fix(data_dir: Path) -> None:
    """Keep the consistent part of DATA_DIR, sorted; originals and dropped lines go to DATA_DIR/.backup/.

    Exits 1 if problems remain that need a person (e.g. speaker ids that are not
    prefixes of utterance ids); they are listed on stderr.
    """
    with _reported_as_click_errors():
        click.echo(str(fix_data_dir(data_dir)))
    try:
        validate_data_dir(data_dir)
    except DataDirError as error:
        click.echo(f"fixed what could be fixed; what is left needs a person:\n{error}", err=True)
        raise click.exceptions.Exit(1) from error


@data.command("subset", short_help="Copy part of a data dir.")
@click.argument("src", type=_DATA_DIR)
@click.argument("dst", type=click.Path(path_type=Path))
@click.option("--utt-list", type=_LIST_FILE, help="Keep the utterances listed (first field of each line).")
@click.option("--spk-list", type=_LIST_FILE, help="Keep the utterances of the speakers listed (first field).")
@click.option("--first", type=click.IntRange(min=1), metavar="N", help="Keep the first N utterances (after the lists).")
def subset(src: Path, dst: Path, utt_list: Path | None, spk_list: Path | None, first: int | None) -> None:
    """Copy part of SRC to DST, every file filtered consistently."""
    if utt_list is None and spk_list is None and first is None:
        raise click.UsageError("choose what to keep: --utt-list, --spk-list and/or --first")
    with _reported_as_click_errors():
        summary = subset_data_dir(
            src, dst,
            utts=read_id_list(utt_list) if utt_list else None,
            speakers=read_id_list(spk_list) if spk_list else None,
            first=first,
        )
    click.echo(str(summary))


@data.command("split", short_help="Split a data dir into N parts for parallel jobs.")
@click.argument("data_dir", type=_DATA_DIR)
@click.argument("num_parts", metavar="N", type=click.IntRange(min=1))
@click.option("--per-spk", is_flag=True, help="Keep each speaker's utterances in one part.")
def split(data_dir: Path, num_parts: int, per_spk: bool) -> None:
    """Split DATA_DIR into N balanced parts DATA_DIR/splitN/{1..N}; print their paths."""
    with _reported_as_click_errors():
        parts = split_data_dir(data_dir, num_parts, by_speaker=per_spk)
    for part in parts:
        click.echo(str(part))
