"""Combining data dirs: Kaldi v2's combine (then subset) of clean and augmented data.

:func:`combine_data_dirs` writes the union of clean dirs and augmented dirs (or a
random subset of the augmented ones); ``spk augment combine`` calls it. Like the
other derived dirs it is staged beside ``out`` and swapped in, and kept when made
before with the same options from unchanged dirs (:mod:`spk.data.derived`).
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from spk.data.datadir import DataDir
from spk.data.derived import check_new_place, check_replaceable, fingerprint, read_info, stage_and_move
from spk.data.durations import utterance_durations
from spk.data.errors import DataDirUsageError
from spk.data.formats import Segment
from spk.data.io import (
    c_sorted,
    read_kv,
    utt2spk_to_spk2utt,
    write_kv,
    write_segments,
    write_spk2utt,
    write_utt2dur,
    write_utt2spk,
    write_wav_scp,
)
from spk.data.subset import subset_data_dir
from spk.data.validate import DataDirSummary, validate_data_dir

__all__ = ["INFO_NAME", "combine_data_dirs"]

logger = logging.getLogger(__name__)

INFO_NAME = ".augment.json"  # shared with `spk augment data|speed`: one of them may replace the other's output
FEATURE_FILES = ("feats.scp", "cmvn.scp", "utt2num_frames")  # what `spk features` adds to a data dir


@dataclass
class _Combined:
    """The union of several data dirs' files, with where each key came from."""

    wav_scp: dict[str, str] = field(default_factory=dict)
    segments: dict[str, Segment] = field(default_factory=dict)
    utt2spk: dict[str, str] = field(default_factory=dict)
    utt2dur: dict[str, float] = field(default_factory=dict)
    utt2uniq: dict[str, str] = field(default_factory=dict)
    spk2gender: dict[str, str] = field(default_factory=dict)
    owner: dict[str, Path] = field(default_factory=dict)
    any_segments: bool = False
    features: dict[str, dict[str, str]] = field(default_factory=lambda: {name: {} for name in FEATURE_FILES})
    feature_configs: set[str | None] = field(default_factory=set)  # feats.conf texts; None: a dir without features

    def add(self, path: Path) -> list[str]:
        """Add data dir ``path``; returns its utterance ids. DataDirUsageError on clashing ids."""
        data = DataDir(path)
        validate_data_dir(path)
        utt2spk = data.utt2spk()
        for utt in utt2spk:
            if utt in self.owner:
                raise DataDirUsageError(f"utterance {utt!r} is in both {self.owner[utt]} and {path}; combine dirs "
                                        "with distinct ids (e.g. augmented copies and the clean dir)")
            self.owner[utt] = path
        for rec, value in data.wav_scp().items():
            if self.wav_scp.setdefault(rec, value) != value:
                raise DataDirUsageError(f"recording {rec!r} of {path} is also in an earlier dir with another "
                                        f"source ({self.wav_scp[rec]!r} vs {value!r})")
        segments = data.segments()
        if segments is not None:
            self.any_segments = True
            self.segments.update(segments)
        else:
            self.segments.update({utt: Segment(utt, 0.0, -1.0) for utt in utt2spk})
        self.utt2spk.update(utt2spk)
        self.utt2dur.update(utterance_durations(path))
        uniq = read_kv(path / "utt2uniq") if data.has("utt2uniq") else {}
        self.utt2uniq.update({utt: uniq.get(utt, utt) for utt in utt2spk})
        if all((path / name).is_file() for name in (*FEATURE_FILES, "feats.conf")):
            self.feature_configs.add((path / "feats.conf").read_text())
            for name in FEATURE_FILES:
                self.features[name].update(read_kv(path / name))
        else:
            self.feature_configs.add(None)
        if data.has("spk2gender"):
            for spk, gender in read_kv(path / "spk2gender").items():
                if self.spk2gender.setdefault(spk, gender) != gender:
                    raise DataDirUsageError(f"speaker {spk!r} has gender {gender!r} in {path} but "
                                            f"{self.spk2gender[spk]!r} in an earlier dir")
        return c_sorted(utt2spk)

    def write(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        write_wav_scp(path / "wav.scp", self.wav_scp)
        if self.any_segments:
            write_segments(path / "segments", self.segments)
        write_utt2spk(path / "utt2spk", self.utt2spk)
        write_spk2utt(path / "spk2utt", utt2spk_to_spk2utt(self.utt2spk))
        write_utt2dur(path / "utt2dur", self.utt2dur)
        if any(utt != orig for utt, orig in self.utt2uniq.items()):
            write_kv(path / "utt2uniq", self.utt2uniq)
        if self.spk2gender:
            speakers = set(self.utt2spk.values())
            write_kv(path / "spk2gender", {s: g for s, g in self.spk2gender.items() if s in speakers})

    def write_features(self, path: Path, utts: Sequence[str]) -> bool:
        """The inputs' features of ``utts`` into ``path`` (after everything else, so that ``spk features``
        finds them up to date); False, writing nothing, unless every input had them, made alike."""
        if len(self.feature_configs) != 1 or None in self.feature_configs:
            return False
        if any(utt not in self.features[name] for name in FEATURE_FILES for utt in utts):
            return False  # an utterance whose extraction failed: stage 1's rerun fills it in
        (path / "feats.conf").write_text(next(iter(self.feature_configs)))
        for name in FEATURE_FILES:
            write_kv(path / name, {utt: self.features[name][utt] for utt in utts})
        return True


def combine_data_dirs(out: str | os.PathLike, *, clean: Sequence[str | os.PathLike] = (),
                      aug: Sequence[str | os.PathLike] = (), num_aug: int | None = None, seed: int = 0,
                      force: bool = False) -> DataDirSummary:
    """Write to ``out`` every utterance of the ``clean`` dirs plus the ``aug`` dirs' (``num_aug`` of them, drawn
    at random, when given): Kaldi v2's combine-then-subset. Ids must be distinct across the dirs.

    When every input has features made with one feature config, the output gets
    theirs (``feats.scp``, ``cmvn.scp``, ``utt2num_frames``, ``feats.conf``), so the
    clean data's features are not extracted a second time."""
    out = Path(out)
    clean, aug = [Path(p) for p in clean], [Path(p) for p in aug]
    if not clean and not aug:
        raise DataDirUsageError("nothing to combine: give --clean and/or --aug data dirs")
    if num_aug is not None and (num_aug < 1 or not aug):
        raise DataDirUsageError(f"--num-aug {num_aug}: give at least 1, and --aug dirs to draw from")
    for option, paths in (("--clean", clean), ("--aug", aug)):
        for path in paths:
            check_new_place(path, out, DataDirUsageError, option=option)
    check_replaceable(out, INFO_NAME, "spk augment", DataDirUsageError)
    options = {"command": "combine", "clean": [str(p.absolute()) for p in clean],
               "aug": [str(p.absolute()) for p in aug], "files": [fingerprint(p) for p in clean + aug],
               "num_aug": num_aug, "seed": seed}
    if not force and read_info(out, INFO_NAME) == options:
        logger.info("%s: already combined from these dirs; keeping it (force to redo)", out)
        return validate_data_dir(out)
    import numpy as np  # only here: spk.data stays free of numpy for the light commands

    combined = _Combined()
    kept = [utt for path in clean for utt in combined.add(path)]
    augmented = [utt for path in aug for utt in combined.add(path)]
    if num_aug is not None and num_aug < len(augmented):
        chosen = np.random.default_rng([seed, 2]).choice(len(augmented), size=num_aug, replace=False)
        augmented = [augmented[i] for i in sorted(chosen)]
    logger.info("%s: %d clean + %d augmented utterances", out, len(kept), len(augmented))

    def build(staging: Path) -> None:
        full = staging / ".all"
        combined.write(full)
        if num_aug is None:
            for item in full.iterdir():
                item.rename(staging / item.name)
        else:
            subset_data_dir(full, staging, utts=kept + augmented)
        shutil.rmtree(full, ignore_errors=True)
        if combined.write_features(staging, kept + augmented):
            logger.info("%s: features merged from the combined dirs (no extraction needed)", out)
        validate_data_dir(staging)

    stage_and_move(out, options, build, INFO_NAME)
    summary = validate_data_dir(out)
    logger.info("wrote %s", summary)
    return summary
