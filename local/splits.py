"""Deterministic splits: which speakers are held out, and which of a speaker's utterances train.

Every random choice is seeded by ``seed`` and, where it concerns one speaker,
by the speaker id too, so a speaker's split does not change when other speakers
are added or removed.
"""

from __future__ import annotations

import zlib
from collections import defaultdict
from collections.abc import Sequence
from typing import TypeVar

import numpy as np

from local.corpus import Utterance

__all__ = ["draw", "rng_for", "split_by_count", "split_by_seconds"]

T = TypeVar("T")


def rng_for(seed: int, key: str = "") -> np.random.Generator:
    """A generator seeded by ``seed`` and a string (e.g. a speaker id)."""
    return np.random.default_rng([seed, zlib.crc32(key.encode("utf-8"))])


def draw(items: Sequence[str], count: int, seed: int, key: str = "") -> list[str]:
    """``count`` of ``items`` drawn without replacement (the same for the same sorted items and seed), sorted."""
    pool = sorted(items)
    if count > len(pool):
        raise ValueError(f"cannot draw {count} of {len(pool)}")
    chosen = rng_for(seed, key).choice(len(pool), size=count, replace=False)
    return sorted(pool[i] for i in chosen)


def _shuffled(items: Sequence[T], seed: int, key: str) -> list[T]:
    order = rng_for(seed, key).permutation(len(items))
    return [items[i] for i in order]


def split_by_seconds(utterances: Sequence[Utterance], train_seconds: float,
                     seed: int) -> tuple[list[Utterance], list[Utterance]] | None:
    """One speaker's utterances into (training, held out): training takes the first ``train_seconds``.

    Recordings are taken in a seeded order, the segments of one recording in time
    order, until the training part reaches ``train_seconds``; everything after is
    held out (SincNet's identification protocol: a fixed amount of training
    speech per speaker, the rest for testing). Returns None when the speaker has
    too little speech for both parts. Durations must be known.
    """
    if not utterances:
        return None
    recordings: dict[str, list[Utterance]] = defaultdict(list)
    for utt in utterances:
        if utt.duration is None:
            raise ValueError(f"{utt.utt}: the duration is unknown; split by count instead")
        recordings[utt.recording].append(utt)
    speaker = utterances[0].speaker
    ordered = [utt for rec in _shuffled(sorted(recordings), seed, speaker)
               for utt in sorted(recordings[rec], key=lambda u: u.start)]
    total = 0.0
    for index, utt in enumerate(ordered):
        total += utt.duration
        if total >= train_seconds - 1e-6:
            train, held = ordered[:index + 1], ordered[index + 1:]
            return (train, held) if held else None
    return None


def split_by_count(utterances: Sequence[Utterance], seed: int, *, num_train: int | None = None,
                   num_held_out: int | None = None) -> tuple[list[Utterance], list[Utterance]] | None:
    """One speaker's utterances into (training, held out) by count, in a seeded order.

    ``num_train`` fixes the training part (TIMIT: 5 sentences) and holds out up to
    ``num_held_out`` of the rest (all the rest when None); without ``num_train``,
    ``num_held_out`` are held out and the rest trains. Returns None when the
    speaker cannot give at least one utterance to each part.
    """
    if num_train is None and num_held_out is None:
        raise ValueError("give num_train, num_held_out or both")
    if not utterances:
        return None
    ordered = _shuffled(sorted(utterances, key=lambda u: u.utt), seed, utterances[0].speaker)
    if num_train is not None:
        train, rest = ordered[:num_train], ordered[num_train:]
        held = rest if num_held_out is None else rest[:num_held_out]
        ok = len(train) == num_train
    else:
        held, train = ordered[:num_held_out], ordered[num_held_out:]
        ok = len(held) == num_held_out
    return (train, held) if ok and train and held else None
