"""``spk prepare <corpus>``: every corpus preparation as one command group, and what its commands share.

Each corpus module (``local/<corpus>.py``) defines a click ``command``; the
group imports a module only when its command runs, so ``spk prepare --help``
stays fast. The recipes call these commands from their ``local/data.sh``
(stage 0). An option that a recipe's ``run.sh`` sets is required here: its
default is declared once, in that ``run.sh``.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import click

from local.corpus import CorpusError
from local.download import DownloadError
from spk.data import DataDirError, DataDirUsageError
from spk.bin.job_options import check_job_command
from spk.jobs import JobError

__all__ = ["COMMAND_SETTINGS", "CORPORA", "prep_errors", "prep_options", "prepare", "required_switch", "words"]

COMMAND_SETTINGS = {"help_option_names": ["-h", "--help"]}

# corpus (a module of local/ that defines `command`) -> one line for `spk prepare --help`
CORPORA = {
    "mini": "Synthesise the mini corpus with eSpeak NG (no download) and write its data dirs.",
    "librispeech": "LibriSpeech (openslr.org/12, optional download): trials, identification by seconds.",
    "voxceleb": "VoxCeleb1/2: the distributed trial lists, or VoxCeleb1's identification split.",
    "timit": "TIMIT (LDC93S1): identification on the 462 training speakers, trials on the test ones.",
    "commonvoice": "Common Voice: speakers from client_id, one or more languages.",
    "musan": "MUSAN noise, music and speech (optional download), for augmentation.",
    "rirs_noises": "RIRS_NOISES room impulse responses and noises (optional download), for augmentation.",
}


class CorpusGroup(click.Group):
    """The corpora of :data:`CORPORA`, each module imported only when its command is used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(CORPORA)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        return importlib.import_module(f"local.{name}").command if name in CORPORA else None

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Corpora"):
            formatter.write_dl(list(CORPORA.items()))


@click.group(cls=CorpusGroup, context_settings=COMMAND_SETTINGS)
def prepare() -> None:
    """Write the Kaldi data dirs of a corpus (stage 0 of its recipe).

    `spk prepare CORPUS --help` lists the options of one corpus.
    """


def words(_ctx: click.Context | None, _param: click.Parameter | None, value: str | None) -> tuple[str, ...]:
    """A click callback: ``"a,b c"`` -> ``("a", "b", "c")`` (lists are easy to pass through run.sh as one word)."""
    return tuple(word for word in re.split(r"[,\s]+", value or "") if word)


def _given(ctx: click.Context, param: click.Parameter, value: bool | None) -> bool:
    if value is None:  # click does not enforce `required` on a --x/--no-x switch
        raise click.MissingParameter(ctx=ctx, param=param)
    return value


def required_switch(name: str, help_text: str) -> Callable:
    """A ``--<name>/--no-<name>`` option that must be given (a recipe's run.sh declares its default)."""
    return click.option(f"--{name}/--no-{name}", default=None, callback=_given, help=help_text + "  [required]")


@contextmanager
def prep_errors() -> Iterator[None]:
    """Turn the errors a user can fix into a one-message exit."""
    try:
        yield
    except (CorpusError, DownloadError, DataDirError, DataDirUsageError, JobError) as error:
        raise click.ClickException(str(error)) from None


def prep_options(*, corpus_help: str | None = None, max_targets_per_speaker: int | None = None,
                 seed: bool = True, jobs: bool = False) -> Callable:
    """The options the preparation commands share: ``--corpus-dir`` (when ``corpus_help`` says what it
    holds), ``--data-dir``, ``--max-targets-per-speaker`` (with this default) for those that make trials,
    ``--seed`` (required: the recipes set it) for those that draw speakers and trials, and with ``jobs``
    ``--nj`` and ``--cmd`` (passed as ``nj``, ``cmd``) for those that read the audio files' headers."""
    options = [click.option("--data-dir", type=click.Path(file_okay=False), required=True,
                            help="Where the data dirs go.")]
    if corpus_help is not None:
        options.insert(0, click.option("--corpus-dir", type=click.Path(file_okay=False), required=True,
                                       help=corpus_help))
    if max_targets_per_speaker is not None:
        options.append(click.option("--max-targets-per-speaker", default=max_targets_per_speaker, show_default=True,
                                    help="At most this many target trials per test speaker (0: no limit)."))
    if seed:
        options.append(click.option("--seed", type=int, required=True, help="Seed of every random choice."))
    if jobs:
        options.append(click.option("--nj", default=1, show_default=True, type=click.IntRange(min=1),
                                    help="Parallel jobs reading the audio files' headers (for their durations)."))
        options.append(click.option("--cmd", default="local", show_default=True, callback=check_job_command,
                                    envvar="SPK_CMD",
                                    help="Where those jobs run: 'local' (processes here) or 'slurm [sbatch "
                                         "options]'; their work folder and logs are in DATA_DIR/.durations-* "
                                         "(removed when all ended well) [env: SPK_CMD]."))

    def decorate(command: Callable) -> Callable:
        for option in reversed(options):
            command = option(command)
        return command

    return decorate
