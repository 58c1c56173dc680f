"""The data directory: Kaldi's contract between stages (read, write, validate, fix, subset, split).

A data dir holds ``wav.scp``, ``utt2spk`` and ``spk2utt`` and, as stages add
them, ``segments``, ``utt2dur``, ``utt2num_frames``, ``feats.scp``, ``cmvn.scp``
and ``trials``; see ``docs/architecture.md``. Every file is sorted as ``LC_ALL=C sort``
sorts, keys are unique, and the speaker id is a prefix of the utterance id.

Modules, one job each:

- :mod:`spk.data.formats`: how each file's lines look (:data:`FORMATS`, :class:`Segment`, :class:`Trial`);
- :mod:`spk.data.io`: read and write the files (strict readers, atomic sorted writers);
- :mod:`spk.data.datadir`: :class:`DataDir`, a path with a method per file;
- :mod:`spk.data.validate`: :func:`validate_data_dir`, :func:`validate_trials`;
- :mod:`spk.data.fix`: :func:`fix_data_dir`;
- :mod:`spk.data.selection`: which lines belong to a set of utterances (used by fix, subset, split);
- :mod:`spk.data.subset`: :func:`subset_data_dir`, :func:`split_data_dir`;
- :mod:`spk.data.staging`: :func:`staged_folder`, :func:`swap_into_place` (build a folder beside its
  destination, then swap it in; used by every writer of a whole folder);
- :mod:`spk.data.derived`: folders a command derives from data dirs (replaced only when it made them);
- :mod:`spk.data.durations`: :func:`utterance_durations` (utt2dur, else from the audio);
- :mod:`spk.data.combine`: :func:`combine_data_dirs` (clean + augmented dirs, Kaldi v2's combine).
"""

from spk.data.combine import combine_data_dirs
from spk.data.datadir import DataDir
from spk.data.errors import DataDirError, DataDirUsageError, DataFormatError, Problem
from spk.data.fix import FixSummary, fix_data_dir
from spk.data.formats import FORMATS, Segment, Trial
from spk.data.io import (
    atomic_write_text,
    c_sorted,
    read_id_list,
    read_kv,
    read_reco2dur,
    read_scp,
    read_segments,
    read_spk2utt,
    read_trials,
    read_utt2dur,
    read_utt2num_frames,
    read_utt2spk,
    read_wav_scp,
    spk2utt_to_utt2spk,
    utt2spk_to_spk2utt,
    write_kv,
    write_reco2dur,
    write_scp,
    write_segments,
    write_spk2utt,
    write_trials,
    write_utt2dur,
    write_utt2num_frames,
    write_utt2spk,
    write_wav_scp,
)
from spk.data.durations import utterance_durations
from spk.data.staging import staged_folder, swap_into_place
from spk.data.subset import split_data_dir, subset_data_dir
from spk.data.validate import DataDirSummary, validate_data_dir, validate_trials

__all__ = [
    "FORMATS",
    "DataDir",
    "DataDirError",
    "DataDirSummary",
    "DataDirUsageError",
    "DataFormatError",
    "FixSummary",
    "Problem",
    "Segment",
    "Trial",
    "atomic_write_text",
    "c_sorted",
    "combine_data_dirs",
    "fix_data_dir",
    "read_id_list",
    "read_kv",
    "read_reco2dur",
    "read_scp",
    "read_segments",
    "read_spk2utt",
    "read_trials",
    "read_utt2dur",
    "read_utt2num_frames",
    "read_utt2spk",
    "read_wav_scp",
    "split_data_dir",
    "spk2utt_to_utt2spk",
    "staged_folder",
    "subset_data_dir",
    "swap_into_place",
    "utt2spk_to_spk2utt",
    "utterance_durations",
    "validate_data_dir",
    "validate_trials",
    "write_kv",
    "write_reco2dur",
    "write_scp",
    "write_segments",
    "write_spk2utt",
    "write_trials",
    "write_utt2dur",
    "write_utt2num_frames",
    "write_utt2spk",
    "write_wav_scp",
]
