"""What the ``python -m local.<corpus>`` commands share: list options, logging, readable errors."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import click

from local.corpus import CorpusError
from local.download import DownloadError
from spk.data import DataDirError, DataDirUsageError

__all__ = ["COMMAND_SETTINGS", "prep_errors", "prep_options", "words"]

COMMAND_SETTINGS = {"help_option_names": ["-h", "--help"]}


def words(_ctx: click.Context | None, _param: click.Parameter | None, value: str | None) -> tuple[str, ...]:
    """A click callback: ``"a,b c"`` -> ``("a", "b", "c")`` (lists are easy to pass through run.sh as one word)."""
    return tuple(word for word in re.split(r"[,\s]+", value or "") if word)


@contextmanager
def prep_errors() -> Iterator[None]:
    """Set up timestamped logging, and turn the errors a user can fix into a one-message exit."""
    from spk.log import setup_logging

    setup_logging()
    try:
        yield
    except (CorpusError, DownloadError, DataDirError, DataDirUsageError) as error:
        raise click.ClickException(str(error)) from None


def prep_options(*, corpus_help: str | None = None, max_targets_per_speaker: int | None = None,
                 seed: bool = True) -> Callable:
    """The options the preparation commands share: ``--corpus-dir`` (when ``corpus_help`` says what it
    holds), ``--data-dir``, and ``--max-targets-per-speaker`` (with this default) and ``--seed`` for
    those that draw speakers and trials."""
    options = [click.option("--data-dir", type=click.Path(file_okay=False), required=True,
                            help="Where the data dirs go.")]
    if corpus_help is not None:
        options.insert(0, click.option("--corpus-dir", type=click.Path(file_okay=False), required=True,
                                       help=corpus_help))
    if max_targets_per_speaker is not None:
        options.append(click.option("--max-targets-per-speaker", default=max_targets_per_speaker, show_default=True,
                                    help="At most this many target trials per test speaker (0: no limit)."))
    if seed:
        options.append(click.option("--seed", default=0, show_default=True, help="Seed of every random choice."))

    def decorate(command: Callable) -> Callable:
        for option in reversed(options):
            command = option(command)
        return command

    return decorate
