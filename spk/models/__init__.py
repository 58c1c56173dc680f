"""Speaker embedders: recurrent encoders, pooling, segment layers and classification heads.

Parts are registered by name in :mod:`spk.models.registry` registries, so a YAML
config picks them (``encoder: lstm``, ``pooling: mean``).
"""

from spk.models.embedder import SpeakerEmbedder, build_embedder
from spk.models.encoders import ENCODERS
from spk.models.heads import HEADS
from spk.models.pooling import POOLING

__all__ = ["ENCODERS", "HEADS", "POOLING", "SpeakerEmbedder", "build_embedder"]
