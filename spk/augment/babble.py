"""Babble: several other talkers behind the speech. One recipe, for offline and on-the-fly augmentation.

The recipe is Kaldi's (``steps/data/augment_data_dir.py`` as the v2 x-vector
recipes run it: 3-7 MUSAN speech recordings, each at its own SNR of 13-20 dB):

- the number of talkers is drawn uniformly from ``count`` (low, high);
- each talker is a random crop of another recording of the speech set, never one
  of the target's own speaker (same speaker id in the set's ``utt2spk``), scaled
  to unit power (a silent crop is drawn again) and tiled to the length of the speech;
- each talker gets its own SNR, drawn uniformly from ``snr_range``, against the
  speech; the SNR of the babble as a whole is therefore lower than the drawn ones
  (by about ``10 log10(talkers)`` dB).

Why this recipe and not the other one the toolkit had (on the fly: unit-power
talkers summed, the sum scaled to one SNR):

- it is the practice of the recipes this toolkit follows, so an SNR range means
  the same here as in Kaldi's x-vector recipes (``--bg-snrs 20:17:15:13``, one
  per talker) and results can be compared;
- talkers at different levels are what a room of near and far voices sounds like:
  one or two may stand out above the others, as they do in real babble, where
  equally loud talkers blend into a steadier, more noise-like mixture;
- the target's own speaker is left out: when the babble set is drawn from the
  training data itself (``spk augment sources --speech-from data/train``), the
  same voice in the background would be a second copy of the label the model must
  learn, teaching it to treat its own speaker as interference.
"""

from __future__ import annotations

import math

import numpy as np

from spk.augment.sources import SourceSet

__all__ = ["babble_track"]


def babble_track(talkers: SourceSet, num_samples: int, rng: np.random.Generator, *, count: tuple[int, int],
                 snr_range: tuple[float, float], speaker: str | None) -> tuple[np.ndarray, float, list[str]]:
    """Babble of ``num_samples`` samples from the speech set ``talkers``, for speech of ``speaker``.

    Returns the track, its SNR as a whole against unit-power speech (add it with
    :func:`spk.augment.ops.add_noise` at that SNR, so that each talker lands at
    its own SNR against the speech), and a description (``babble=<id>@<start>,...``
    and ``babble_snrs=...``).
    """
    number = int(rng.integers(count[0], count[1] + 1))
    track = np.zeros(num_samples, dtype=np.float64)
    used: set[str] = set()
    described, snrs = [], []
    for _ in range(number):
        rec_id, wave, offset = talkers.draw(num_samples / talkers.rate, rng, exclude_speaker=speaker, used=used)
        snr = float(rng.uniform(*snr_range))
        used.add(rec_id)
        track += np.resize(wave, num_samples) * 10 ** (-snr / 20)  # unit-power talker `snr` below unit-power speech
        described.append(f"{rec_id}@{offset:.2f}")
        snrs.append(f"{snr:.2f}")
    power = float(np.mean(track**2))
    total = -10 * math.log10(power) if power > 0 else 100.0
    return track.astype(np.float32), total, [f"babble={','.join(described)}", f"babble_snrs={','.join(snrs)}"]
