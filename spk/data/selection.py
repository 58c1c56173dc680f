"""Which lines of every data-dir file belong to a chosen set of utterances.

Choosing utterances decides everything else: their speakers, and the recordings
they are cut from. :func:`select` works these out and :func:`kept_lines` picks
the matching lines of every file, so that fix, subset and split all keep a data
dir consistent the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from spk.data.formats import RECORDING, SPEAKER, UTTERANCE, Segment, key_kind
from spk.data.io import Entry, ScannedFile, c_sorted, paused_gc, utt2spk_to_spk2utt

__all__ = ["Selection", "kept_lines", "kept_trial_lines", "lines_by_part", "select"]


@dataclass(frozen=True)
class Selection:
    """A set of utterances and the speakers and recordings they need."""

    utterances: frozenset[str]
    speakers: frozenset[str]
    recordings: frozenset[str]

    def ids(self, kind: str) -> frozenset[str]:
        """The ids of ``kind`` (``UTTERANCE``, ``SPEAKER`` or ``RECORDING``)."""
        return {UTTERANCE: self.utterances, SPEAKER: self.speakers, RECORDING: self.recordings}[kind]


def select(utt2spk: Mapping[str, str], segments: Mapping[str, Segment] | None,
           utterances: Iterable[str]) -> Selection:
    """The selection of ``utterances`` (all in ``utt2spk``, and in ``segments`` when given)."""
    utterances = frozenset(utterances)
    speakers = frozenset(utt2spk[utt] for utt in utterances)
    if segments is None:
        recordings = utterances  # without segments, every recording is an utterance
    else:
        recordings = frozenset(segments[utt].recording for utt in utterances)
    return Selection(utterances, speakers, recordings)


def kept_lines(tables: Mapping[str, Mapping[str, Entry]], selection: Selection,
               utt2spk: Mapping[str, str]) -> dict[str, list[str]]:
    """The lines of every keyed file that belong to ``selection``, sorted by key in C order.

    ``tables`` maps file names to ``{key: entry}``; ``utt2spk`` is the whole data
    dir's (it tells a per-speaker ``cmvn.scp`` from a per-utterance one).
    ``spk2utt`` is regenerated from ``utt2spk`` rather than filtered; ``trials``
    is left out (see :func:`kept_trial_lines`).
    """
    return lines_by_part(tables, [selection], utt2spk)[0]


def lines_by_part(tables: Mapping[str, Mapping[str, Entry]], selections: Sequence[Selection],
                  utt2spk: Mapping[str, str]) -> list[dict[str, list[str]]]:
    """:func:`kept_lines` for several selections at once, reading every table once.

    A speaker or recording shared by several selections has its line in each of them.
    """
    speakers = set(utt2spk.values())
    parts: list[dict[str, list[str]]] = [{} for _ in selections]
    with paused_gc():
        owners = {kind: _owners(selections, kind) for kind in (UTTERANCE, SPEAKER, RECORDING)}
        for name, table in tables.items():
            if name in ("spk2utt", "trials"):
                continue
            owner = owners[key_kind(name, table, utt2spk, speakers)]
            for part in parts:
                part[name] = []
            for key in c_sorted(table):
                for index in owner.get(key, ()):
                    parts[index][name].append(table[key].text)
        for part, selection in zip(parts, selections):
            spk2utt = utt2spk_to_spk2utt({utt: utt2spk[utt] for utt in selection.utterances})
            part["spk2utt"] = [f"{spk} {' '.join(utts)}" for spk, utts in spk2utt.items()]
    return parts


def _owners(selections: Sequence[Selection], kind: str) -> dict[str, tuple[int, ...]]:
    """For every id of ``kind``, the indices of the selections that have it."""
    owner: dict[str, tuple[int, ...]] = {}
    for index, selection in enumerate(selections):
        ids = selection.ids(kind)
        shared = {key: owner[key] for key in ids & owner.keys()}  # few: speakers or recordings cut by a split
        owner.update(dict.fromkeys(ids, (index,)))
        for key, earlier in shared.items():
            owner[key] = (*earlier, index)
    return owner


def kept_trial_lines(trials: ScannedFile, selection: Selection) -> list[str]:
    """Trial lines whose enroll and test ids both are utterances or speakers of ``selection``, in file order."""
    known = selection.utterances | selection.speakers
    return [entry.text for entry in trials.entries if entry.key in known and entry.value[0] in known]
