"""Verification trial lists made from a set of held-out speakers: balanced, deterministic.

Target trials pair two utterances of one speaker that share no audio (segments
of one recording may pair when they do not overlap); non-target trials pair
utterances of two speakers, drawn at random without repeats, as many as there
are target trials.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence

import numpy as np

from local.corpus import Utterance, by_speaker
from local.splits import rng_for
from spk.data import Trial

__all__ = ["make_trials"]

logger = logging.getLogger("local.trials")

# Up to this many candidate non-target pairs are listed and drawn from; more are sampled pair by pair.
ENUMERATE_LIMIT = 200_000


def make_trials(utterances: Sequence[Utterance], seed: int, *, max_targets_per_speaker: int | None = None,
                cross_session: bool = False, nontarget_rng: np.random.Generator | None = None) -> list[Trial]:
    """A balanced trial list over ``utterances`` (enroll id < test id in each pair).

    Every same-speaker pair without shared audio is a target trial (with
    ``cross_session``, only pairs from two different sessions), at most
    ``max_targets_per_speaker`` per speaker (a seeded draw when there are more);
    as many non-target pairs are drawn with ``seed``, or with ``nontarget_rng``
    when given. Logs the counts, and how many target trials are same-session
    (easier than cross-session ones).
    """
    utts = sorted(utterances, key=lambda u: u.utt)
    targets: list[Trial] = []
    same_session = 0
    for speaker, group in by_speaker(utts).items():
        pairs = [(a, b) for a, b in itertools.combinations(group, 2)
                 if not a.overlaps(b) and not (cross_session and a.session == b.session)]
        if max_targets_per_speaker is not None and len(pairs) > max_targets_per_speaker:
            chosen = rng_for(seed, speaker).choice(len(pairs), size=max_targets_per_speaker, replace=False)
            pairs = [pairs[i] for i in sorted(chosen)]
        targets += [Trial(a.utt, b.utt, True) for a, b in pairs]
        same_session += sum(a.session == b.session for a, b in pairs)
    nontargets = _nontarget_pairs(utts, len(targets), nontarget_rng or rng_for(seed, "nontarget"))
    logger.info("%d trials: %d target (%d of them same-session) and %d non-target, over %d speakers",
                len(targets) + len(nontargets), len(targets), same_session, len(nontargets),
                len({u.speaker for u in utts}))
    return targets + nontargets


def _nontarget_pairs(utts: list[Utterance], count: int, rng: np.random.Generator) -> list[Trial]:
    """``count`` distinct different-speaker pairs (fewer when there are not that many), drawn with ``rng``."""
    speakers = np.array([u.speaker for u in utts])
    _, sizes = np.unique(speakers, return_counts=True)
    possible = (len(utts) ** 2 - int((sizes.astype(np.int64) ** 2).sum())) // 2
    count = min(count, possible)
    if count == 0:
        return []
    if possible <= max(ENUMERATE_LIMIT, 2 * count):
        candidates = [(i, j) for i in range(len(utts)) for j in range(i + 1, len(utts))
                      if speakers[i] != speakers[j]]
        chosen = [candidates[k] for k in sorted(rng.choice(len(candidates), size=count, replace=False))]
    else:  # rare pairs among many: draw pairs and keep new different-speaker ones
        seen: set[tuple[int, int]] = set()
        chosen = []
        while len(chosen) < count:
            for i, j in rng.integers(0, len(utts), size=(2 * (count - len(chosen)) + 16, 2)):
                pair = (int(min(i, j)), int(max(i, j)))
                if speakers[pair[0]] != speakers[pair[1]] and pair not in seen:
                    seen.add(pair)
                    chosen.append(pair)
                    if len(chosen) == count:
                        break
    return [Trial(utts[i].utt, utts[j].utt, False) for i, j in chosen]
