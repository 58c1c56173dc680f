"""``spk prepare <corpus>``: the corpus preparations of ``local/`` (stage 0 of the recipes) as one group.

The group and the corpus commands live in ``local/`` with the rest of the corpus
knowledge; this module only makes them a sub-command of ``spk``.
"""

from local.cli import prepare

__all__ = ["prepare"]
