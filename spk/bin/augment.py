"""``spk augment``: augmentation sources and offline augmented data dirs (see :mod:`spk.augment`)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from spk.bin.job_options import job_options

_DIR = click.Path(file_okay=False, path_type=Path)


@contextmanager
def _reported_as_click_errors() -> Iterator[None]:
    """Turn the errors a user can fix (options, data dirs, audio) into a clean ``Error: ...`` and exit status 1."""
    from spk.audio import AudioError
    from spk.data import DataDirError, DataDirUsageError
    from spk.jobs import JobError

    try:
        yield
    except (DataDirError, DataDirUsageError, AudioError, JobError) as error:
        raise click.ClickException(str(error)) from error


def _paths(value: str | None) -> list[Path]:
    return [Path(word) for word in re.split(r"[,\s]+", value or "") if word]


@click.group("augment")
def augment() -> None:
    """Make noise/music/RIR sources and augmented or speed-perturbed copies of data dirs (Kaldi v2 style)."""


@augment.command("sources", short_help="Generate built-in noise, music and RIR data dirs.")
@click.option("--out", type=_DIR, required=True, help="Folder for noise/, music/, rirs/ (and speech/).")
@click.option("--seed", default=0, show_default=True, help="Seed of every generated recording.")
@click.option("--speech-from", type=_DIR, default=None,
              help="Data dir to draw babble talkers from (written as OUT/speech, a subset pointing at its audio).")
@click.option("--num-speech", default=300, show_default=True, type=click.IntRange(min=1),
              help="Recordings of --speech-from to keep for babble.")
@click.option("--force", is_flag=True, help="Make them again even if OUT was made with these options.")
def sources(out: Path, seed: int, speech_from: Path | None, num_speech: int, force: bool) -> None:
    """Write OUT/noise (18 recordings, 9 kinds), OUT/music (8 pieces) and OUT/rirs (300 RIRs, 60 simulated rooms).

    For machines without MUSAN and RIRS_NOISES; a few seconds of CPU, about 16 MB.
    Use another --seed for the sources of a test condition than for training's.
    """
    from spk.augment.builtin import make_sources

    with _reported_as_click_errors():
        made = make_sources(out, seed=seed, speech_from=speech_from, num_speech=num_speech, force=force)
    for summary in made.summaries.values():
        click.echo(str(summary))


@augment.command("data", short_help="Write reverb/noise/music/babble copies of a data dir.")
@click.option("--src", type=_DIR, required=True, help="Data dir to augment (only read).")
@click.option("--out", type=_DIR, required=True, help="Where the augmented data dir goes.")
@click.option("--kinds", default="reverb,noise,music,babble", show_default=True,
              help="Kinds of copies, separated by commas: reverb, noise, music, babble.")
@click.option("--sources", type=_DIR, default=None,
              help="Folder made by `spk augment sources` (rirs/, noise/, music/, speech/).")
@click.option("--rirs", default=None, help="RIR data dirs (commas), instead of SOURCES/rirs (e.g. rirs_smallroom).")
@click.option("--noise", default=None, help="Noise data dirs (commas), instead of SOURCES/noise (e.g. musan_noise).")
@click.option("--music", default=None, help="Music data dirs (commas), instead of SOURCES/music.")
@click.option("--babble", default=None, help="Speech data dirs for babble (commas), instead of SOURCES/speech.")
@click.option("--snr-noise", default="0:15", show_default=True, help="SNR range in dB (LOW:HIGH) of noise.")
@click.option("--snr-music", default="5:15", show_default=True, help="SNR range in dB of music.")
@click.option("--snr-babble", default="13:20", show_default=True, help="SNR range in dB of each babble talker.")
@click.option("--babble-talkers", default="3:7", show_default=True, help="How many talkers make a babble.")
@click.option("--seed", default=0, show_default=True, help="Seed of every random choice.")
@click.option("--num", type=click.IntRange(min=1), default=None,
              help="Make only N copies, drawn at random from all utterance x kind pairs.")
@click.option("--chain", is_flag=True, help="One copy per utterance with every kind applied (reverb first).")
@click.option("--keep-ids", is_flag=True,
              help="Like --chain, keeping the utterance ids (and trials): a noisy test condition.")
@job_options("Parallel jobs, each making a share of the copies.")
@click.option("--force", is_flag=True, help="Redo even if OUT was made with these options from these dirs.")
def data(src, out, kinds, sources, rirs, noise, music, babble, snr_noise, snr_music, snr_babble, babble_talkers,
         seed, num, chain, keep_ids, nj, cmd, log_dir, force) -> None:
    """Write augmented copies of SRC to OUT: ids <utt>-<kind>, the same speakers, 16 kHz wav under OUT/wav/.

    \b
    Training (Kaldi v2): spk augment data --src data/train --out data/train_aug --sources data/aug_sources
    Noisy test set:      spk augment data --src data/test --out data/test_noisy --kinds reverb,noise \\
                           --sources data/aug_sources_test --snr-noise 0:10 --keep-ids --seed 1
    """
    from spk.augment.offline import augment_data_dir
    from spk.augment.options import parse_kinds, parse_range

    with _reported_as_click_errors():
        snrs = {"noise": parse_range(snr_noise, "--snr-noise"), "music": parse_range(snr_music, "--snr-music"),
                "babble": parse_range(snr_babble, "--snr-babble")}
        talkers = parse_range(babble_talkers, "--babble-talkers", integer=True, minimum=1)
        overrides = {"reverb": _paths(rirs), "noise": _paths(noise), "music": _paths(music),
                     "babble": _paths(babble)}
        summary = augment_data_dir(src, out, kinds=parse_kinds(kinds), sources=sources, source_overrides=overrides,
                                   snrs=snrs, babble_talkers=talkers, seed=seed, num=num, chain=chain,
                                   keep_ids=keep_ids, nj=nj, force=force, cmd=cmd,
                                   log_dir=log_dir and Path(log_dir))
    click.echo(str(summary))


@augment.command("speed", short_help="Write speed-perturbed copies of a data dir as new speakers.")
@click.option("--src", type=_DIR, required=True, help="Data dir to perturb (only read).")
@click.option("--out", type=_DIR, required=True, help="Where the perturbed data dir goes.")
@click.option("--factors", default="0.9,1.0,1.1", show_default=True,
              help="Speed factors, separated by commas; 1.0 keeps the original ids.")
@job_options("Parallel jobs, each making a share of the copies.")
@click.option("--force", is_flag=True, help="Redo even if OUT was made with these factors from this dir.")
def speed(src: Path, out: Path, factors: str, nj: int, cmd: str, log_dir: str | None, force: bool) -> None:
    """Write to OUT a copy of SRC per factor: speaker sp<f>-<spk>, utterance sp<f>-<utt>, 1/f as long."""
    from spk.augment.offline import speed_perturb_data_dir
    from spk.augment.options import parse_factors

    with _reported_as_click_errors():
        summary = speed_perturb_data_dir(src, out, factors=parse_factors(factors), nj=nj, force=force,
                                         cmd=cmd, log_dir=log_dir and Path(log_dir))
    click.echo(str(summary))


@augment.command("combine", short_help="Combine clean and augmented data dirs (optionally a subset of the latter).")
@click.option("--out", type=_DIR, required=True, help="Where the combined data dir goes.")
@click.option("--clean", type=_DIR, multiple=True, help="Data dir kept whole (repeat for several).")
@click.option("--aug", type=_DIR, multiple=True, help="Augmented data dir (repeat for several).")
@click.option("--num-aug", type=click.IntRange(min=1), default=None,
              help="Keep N of the augmented utterances, drawn at random (Kaldi v2: combine, then subset).")
@click.option("--seed", default=0, show_default=True, help="Seed of the random subset.")
@click.option("--force", is_flag=True, help="Redo even if OUT was combined from these dirs.")
def combine(out: Path, clean: tuple[Path, ...], aug: tuple[Path, ...], num_aug: int | None, seed: int,
            force: bool) -> None:
    """Write to OUT every utterance of the --clean dirs and of the --aug dirs (or --num-aug of the latter)."""
    from spk.data import combine_data_dirs

    with _reported_as_click_errors():
        summary = combine_data_dirs(out, clean=clean, aug=aug, num_aug=num_aug, seed=seed, force=force)
    click.echo(str(summary))
