"""Augmentation: everything that adds noise, music, babble or reverberation, offline or on the fly.

Modules, one job each:

- :mod:`spk.augment.ops`: the operations (:func:`add_noise`, :func:`reverberate`,
  :func:`speed_perturb`, :func:`spec_augment`); numpy in, numpy out, no sources;
- :mod:`spk.augment.sources`: :class:`~spk.augment.sources.SourceSet`, the one reader of
  noise, music, speech and RIR folders, and which folders a run reads;
- :mod:`spk.augment.babble`: the one babble recipe (Kaldi's: talkers each at their own SNR,
  never the target's own speaker);
- :mod:`spk.augment.options`: the options of ``spk augment`` (kinds, SNR ranges, speed factors);
- :mod:`spk.augment.offline`: augmented and speed-perturbed copies of a data dir (``spk augment
  data|speed``; ``spk augment combine`` is :func:`spk.data.combine_data_dirs`);
- :mod:`spk.augment.online`: on-the-fly augmentation of training chunks and SpecAugment of batches;
- :mod:`spk.augment.builtin`: built-in noise, music and RIR sets (``spk augment sources``);
- :mod:`spk.augment.rooms`: impulse responses of simulated shoebox rooms;
- :mod:`spk.augment.simulate`: coloured noise, simple RIRs and channel EQ (also the mini corpus's);
- :mod:`spk.augment.errors`: :class:`AugmentError`.

Importing the package loads only the operations; the other modules are imported where
they are used (on-the-fly augmentation loads torch).
"""

from spk.augment.errors import AugmentError
from spk.augment.ops import add_noise, reverberate, rir_peak, spec_augment, speed_perturb

__all__ = ["AugmentError", "add_noise", "reverberate", "rir_peak", "spec_augment", "speed_perturb"]
