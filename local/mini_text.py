"""Sentences for the mini corpus: a small English grammar, so every utterance says something new.

Sentences are drawn from templates filled with everyday words; a generator never
returns the same sentence twice, so no two utterances in the corpus share a text.
"""

from __future__ import annotations

import numpy as np

_NOUNS = (
    "river garden teacher window market doctor village mountain kitchen letter "
    "painter bridge forest engine island morning student farmer harbour castle "
    "basket bottle candle carpet cottage friend doorway meadow orchard pocket "
    "rabbit saddle shadow signal station summer ticket tower valley wagon "
    "winter journey captain neighbour library picture blanket lantern mirror "
    "question answer pilot sailor baker hammer pencil shelter stranger visitor"
).split()
_ADJECTIVES = (
    "quiet bright narrow heavy gentle ancient golden broken silver tired "
    "careful distant empty famous friendly hidden honest lonely lucky modern "
    "patient plain proud rapid rough simple sleepy steady strange sudden "
    "tiny warm wild yellow young wooden curious cheerful clever dusty"
).split()
_VERBS_PAST = (
    "carried found opened painted watched followed visited covered pushed "
    "repaired noticed described admired ordered collected cleaned finished "
    "borrowed delivered discovered measured mentioned protected reached "
    "remembered reported signed studied touched wanted"
).split()
_PLACES = (
    "near the station|behind the old mill|across the valley|under the bridge|"
    "beside the river|at the edge of town|inside the small shop|along the coast|"
    "on the top floor|in the northern hills|after the long storm|before the evening train"
).split("|")
_TIMES = (
    "yesterday|last winter|every morning|on Sunday|at noon|early in spring|"
    "late at night|twice a week|in nineteen seventy|after dinner|before sunrise|this afternoon"
).split("|")
_NAMES = (
    "Anna Peter Maria Thomas Laura Daniel Sophie Martin Helen George Clara Oscar "
    "Julia Victor Emma Hugo Alice Frank Nora Simon"
).split()

_TEMPLATES = (
    "The {adj} {noun} {verb} the {adj2} {noun2} {place}.",
    "{name} {verb} a {adj} {noun} {time}.",
    "{time_cap}, the {noun} {verb} {count} {adj} {noun2}s {place}.",
    "Did the {adj} {noun} really see the {noun2} {place}?",
    "{name} said that the {noun} was {adj} {time}.",
    "We {verb} the {noun} and the {adj} {noun2} {time}.",
    "Nobody {verb} the {adj} {noun} {place}, not even {name}.",
    "The {noun} and the {noun2} waited {place} until {name} arrived.",
)
_COUNTS = "two three four five six seven eight nine ten twelve".split()


class SentenceGenerator:
    """Draws distinct English sentences from the grammar with a seeded generator."""

    def __init__(self, rng: np.random.Generator):
        self._rng = rng
        self._used: set[str] = set()

    def _pick(self, words) -> str:
        return words[self._rng.integers(len(words))]

    def next(self) -> str:
        """A sentence not returned before."""
        for _ in range(1000):
            time = self._pick(_TIMES)
            sentence = self._pick(_TEMPLATES).format(
                adj=self._pick(_ADJECTIVES), adj2=self._pick(_ADJECTIVES),
                noun=self._pick(_NOUNS), noun2=self._pick(_NOUNS),
                verb=self._pick(_VERBS_PAST), place=self._pick(_PLACES),
                time=time, time_cap=time[0].upper() + time[1:],
                name=self._pick(_NAMES), count=self._pick(_COUNTS),
            )
            if sentence not in self._used:
                self._used.add(sentence)
                return sentence
        raise RuntimeError("the sentence grammar ran out of new sentences")
