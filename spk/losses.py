"""Training losses, by name.

A loss takes the model's outputs for a batch and the speaker labels and returns
a scalar tensor: ``loss_fn(outputs, labels)``.  Its class attribute ``input``
says which outputs it wants:

- ``"logits"``: classification losses (``softmax``) on the head's logits (B, C);
- ``"embeddings"``: metric-learning losses (``triplet``, ``contrastive``,
  ``ge2e``) on the embeddings (B, D) of a speaker-balanced batch of P speakers
  x K utterances; labels (B,) are integer speaker ids in any order.

Options are constructor keyword arguments (``LOSSES.build(name, conf)`` rejects
unknown ones).  Embedding losses never return NaN for a batch without anything
to learn from: they return a zero that is still connected to the graph.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from spk.models.registry import Registry

LOSSES = Registry("loss")


@LOSSES.register("softmax")
class SoftmaxCrossEntropy(nn.Module):
    """Cross-entropy over the training speakers (softmax pre-training; the head is dropped for embeddings)."""

    needs_head = True
    input = "logits"

    def __init__(self, label_smoothing: float = 0.0):
        super().__init__()
        self.label_smoothing = label_smoothing
        # Per-speaker weights against imbalanced data (set by the trainer; empty = unweighted).
        self.register_buffer("class_weights", torch.empty(0), persistent=False)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        weight = self.class_weights if self.class_weights.numel() else None
        return F.cross_entropy(logits, labels, weight=weight, label_smoothing=self.label_smoothing)


# ---------------------------------------------------------------- helpers

def _check_batch(embeddings: torch.Tensor, labels: torch.Tensor) -> None:
    if embeddings.dim() != 2:
        raise ValueError(f"embeddings must be (batch, dim), got shape {tuple(embeddings.shape)}")
    if labels.dim() != 1 or labels.shape[0] != embeddings.shape[0]:
        raise ValueError(f"labels must be ({embeddings.shape[0]},), got shape {tuple(labels.shape)}")
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"labels must be integer speaker ids, got {labels.dtype}")


def _zero(embeddings: torch.Tensor) -> torch.Tensor:
    """A zero loss that keeps the graph (backward gives zero gradients, not an error or NaN)."""
    return embeddings.sum() * 0.0


def _squared_euclidean(x: torch.Tensor) -> torch.Tensor:
    """(B, B) matrix of ||x_i - x_j||^2 (Gram form, clamped at 0, exact zeros on the diagonal)."""
    sq = (x * x).sum(dim=1)
    d2 = (sq[:, None] + sq[None, :] - 2.0 * (x @ x.t())).clamp_min(0.0)
    eye = torch.eye(x.shape[0], dtype=torch.bool, device=x.device)
    return d2.masked_fill(eye, 0.0)


def _pair_masks(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, B) boolean masks: ``positive[i, j]`` same speaker and i != j; ``negative[i, j]`` other speaker."""
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(labels.shape[0], dtype=torch.bool, device=labels.device)
    return same & ~eye, ~same


# ---------------------------------------------------------------- triplet

@LOSSES.register("triplet")
class TripletLoss(nn.Module):
    """Triplet loss with online mining over a P x K batch.

    For an anchor a, a positive p (same speaker, p != a) and a negative n
    (another speaker)::

        L(a, p, n) = max(0, d(a, p) - d(a, n) + alpha)

    with ``alpha = margin`` and ``d`` either

    - ``squared_euclidean`` (default): d = ||f(a) - f(p)||^2, the mission's
      formula.  With ``normalize=True`` (default) the embeddings are first
      L2-normalised, so d = 2 - 2 cos lies in [0, 4] and the margin has a fixed
      meaning whatever the scale of the network output (without normalisation
      the network can satisfy any margin by simply scaling its embeddings up);
    - ``cosine``: d = 1 - cos(f(a), f(p)) in [0, 2] (always scale-free, so
      ``normalize`` has no effect).  The default margin stays 0.2; on unit
      vectors this is half as strict as 0.2 in squared Euclidean distance
      (which equals 2 (1 - cos)); set e.g. ``margin: 0.1`` for the same geometry.

    Mining (which triplets of the batch make the loss):

    - ``batch_all`` (default): every valid triplet; the loss is the mean over
      those with a positive loss only (Hermans et al. 2017, "In defense of the
      triplet loss"), so easy triplets do not dilute the gradient (it builds a
      B x B x B tensor: fine for the usual B <= 256);
    - ``batch_hard``: per anchor, its hardest positive (largest d(a, p)) and
      hardest negative (smallest d(a, n)); mean over anchors;
    - ``semi_hard``: per anchor-positive pair, the hardest negative that is still
      farther than the positive but inside the margin,
      d(a, p) < d(a, n) < d(a, p) + alpha (FaceNet, Schroff et al. 2015); when
      there is none, the hardest negative; mean over anchor-positive pairs.

    Anchors with no positive or no negative in the batch are skipped; a batch
    with no valid triplet gives 0 (with a graph, not NaN).

    After each call, ``last_active_fraction`` (float) is the fraction of the
    triplets considered (all valid ones for ``batch_all``, the mined ones
    otherwise) that have a positive loss, for logging.  ``last_triplets`` is a
    (T, 3) tensor of the mined (anchor, positive, negative) indices for
    ``batch_hard`` and ``semi_hard`` (None for ``batch_all``).
    """

    needs_head = False
    input = "embeddings"
    DISTANCES = ("squared_euclidean", "cosine")
    MININGS = ("batch_all", "batch_hard", "semi_hard")

    def __init__(self, margin: float = 0.2, distance: str = "squared_euclidean", normalize: bool = True,
                 mining: str = "batch_all"):
        super().__init__()
        if distance not in self.DISTANCES:
            raise ValueError(f"triplet: distance {distance!r} unknown; choose one of {', '.join(self.DISTANCES)}")
        if mining not in self.MININGS:
            raise ValueError(f"triplet: mining {mining!r} unknown; choose one of {', '.join(self.MININGS)}")
        if margin < 0:
            raise ValueError(f"triplet: margin must be >= 0, got {margin}")
        self.margin = float(margin)
        self.distance = distance
        self.normalize = bool(normalize)
        self.mining = mining
        self.last_active_fraction = 0.0
        self.last_triplets: torch.Tensor | None = None

    def distances(self, embeddings: torch.Tensor) -> torch.Tensor:
        """(B, B) matrix of the distances d used by the loss."""
        if self.distance == "cosine":
            unit = F.normalize(embeddings, dim=1)
            d = 1.0 - unit @ unit.t()
            eye = torch.eye(embeddings.shape[0], dtype=torch.bool, device=embeddings.device)
            return d.masked_fill(eye, 0.0)
        x = F.normalize(embeddings, dim=1) if self.normalize else embeddings
        return _squared_euclidean(x)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        _check_batch(embeddings, labels)
        d = self.distances(embeddings)
        positive, negative = _pair_masks(labels)
        self.last_triplets = None
        if self.mining == "batch_all":
            return self._batch_all(embeddings, d, positive, negative)
        if self.mining == "batch_hard":
            return self._batch_hard(embeddings, d, positive, negative)
        return self._semi_hard(embeddings, d, positive, negative)

    def _batch_all(self, embeddings, d, positive, negative) -> torch.Tensor:
        # losses[a, p, n] = d(a, p) - d(a, n) + margin over valid (a, p, n)
        valid = positive[:, :, None] & negative[:, None, :]
        losses = (d[:, :, None] - d[:, None, :] + self.margin).clamp_min(0.0)
        active = valid & (losses > 0)
        num_valid, num_active = int(valid.sum()), int(active.sum())
        self.last_active_fraction = num_active / num_valid if num_valid else 0.0
        if num_active == 0:
            return _zero(embeddings)
        return losses[active].sum() / num_active

    def _finish(self, embeddings, d_ap, d_an, triplets) -> torch.Tensor:
        self.last_triplets = triplets
        if d_ap.numel() == 0:
            self.last_active_fraction = 0.0
            return _zero(embeddings)
        losses = (d_ap - d_an + self.margin).clamp_min(0.0)
        self.last_active_fraction = float((losses > 0).float().mean())
        return losses.mean()

    def _batch_hard(self, embeddings, d, positive, negative) -> torch.Tensor:
        inf = torch.finfo(d.dtype).max
        hardest_p = d.detach().masked_fill(~positive, -inf).argmax(dim=1)
        hardest_n = d.detach().masked_fill(~negative, inf).argmin(dim=1)
        anchors = torch.nonzero(positive.any(dim=1) & negative.any(dim=1)).squeeze(1)
        p, n = hardest_p[anchors], hardest_n[anchors]
        return self._finish(embeddings, d[anchors, p], d[anchors, n], torch.stack([anchors, p, n], dim=1))

    def _semi_hard(self, embeddings, d, positive, negative) -> torch.Tensor:
        inf = torch.finfo(d.dtype).max
        dd = d.detach()
        d_ap = dd[:, :, None]                   # [a, p, 1]
        d_an = dd[:, None, :]                   # [a, 1, n]
        semi = negative[:, None, :] & (d_an > d_ap) & (d_an < d_ap + self.margin)  # [a, p, n]
        semi_n = torch.where(semi, d_an, inf).argmin(dim=2)                      # [a, p]
        hardest_n = dd.masked_fill(~negative, inf).argmin(dim=1)                 # [a]
        chosen = torch.where(semi.any(dim=2), semi_n, hardest_n[:, None])        # [a, p]
        pairs = torch.nonzero(positive & negative.any(dim=1, keepdim=True))
        a, p = pairs[:, 0], pairs[:, 1]
        n = chosen[a, p]
        return self._finish(embeddings, d[a, p], d[a, n], torch.stack([a, p, n], dim=1))


# ---------------------------------------------------------------- contrastive

@LOSSES.register("contrastive")
class ContrastiveLoss(nn.Module):
    """Contrastive loss on pairs (Hadsell, Chopra & LeCun 2006), balanced same/different.

    For a pair (i, j) with Euclidean distance d = ||f(i) - f(j)|| and y = 1 when
    both are the same speaker::

        L(i, j) = y d^2 + (1 - y) max(0, m - d)^2

    exactly the mission's formula, without the 1/2 factor some papers put in
    front (it only rescales the loss and the learning rate).

    ``normalize=True`` (default) L2-normalises the embeddings first, so d lies in
    [0, 2]; the default margin ``m = 1.0`` then pushes different speakers apart
    until d >= 1, i.e. cos <= 0.5 (60 degrees), since d^2 = 2 - 2 cos.

    Pairs from a P x K batch: all positive (same-speaker) pairs i < j and an equal
    number of negative pairs (fewer if the batch has fewer), chosen by
    ``negatives``:

    - ``hardest`` (default): the negative pairs with the smallest distance, i.e.
      the largest loss; a P x K batch has about P times more negative than
      positive pairs, and most negatives are already beyond the margin, so
      random ones mostly contribute zeros;
    - ``random``: uniformly at random, from a ``torch.Generator`` seeded with
      ``seed`` (deterministic run to run; the draws advance batch to batch; the
      generator state is not part of ``state_dict``, so a resumed run draws anew).

    The loss is the mean over the chosen pairs (positives and negatives
    together).  A batch without any positive pair (or without any pair) gives 0;
    one without negatives averages its positive pairs alone.  After each call
    ``last_num_positive`` / ``last_num_negative`` hold the pair counts.
    """

    needs_head = False
    input = "embeddings"
    NEGATIVES = ("hardest", "random")

    def __init__(self, margin: float = 1.0, normalize: bool = True, negatives: str = "hardest", seed: int = 0):
        super().__init__()
        if negatives not in self.NEGATIVES:
            raise ValueError(f"contrastive: negatives {negatives!r} unknown; "
                             f"choose one of {', '.join(self.NEGATIVES)}")
        if margin < 0:
            raise ValueError(f"contrastive: margin must be >= 0, got {margin}")
        self.margin = float(margin)
        self.normalize = bool(normalize)
        self.negatives = negatives
        self.seed = int(seed)
        self.generator = torch.Generator().manual_seed(self.seed)
        self.last_num_positive = 0
        self.last_num_negative = 0

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        _check_batch(embeddings, labels)
        x = F.normalize(embeddings, dim=1) if self.normalize else embeddings
        d2 = _squared_euclidean(x)
        upper = torch.ones_like(d2, dtype=torch.bool).triu(diagonal=1)
        same = labels[:, None] == labels[None, :]
        pos_i, pos_j = torch.nonzero(upper & same, as_tuple=True)
        neg_i, neg_j = torch.nonzero(upper & ~same, as_tuple=True)
        num_neg = min(len(pos_i), len(neg_i))
        if num_neg < len(neg_i):
            if self.negatives == "hardest":
                keep = torch.topk(d2[neg_i, neg_j].detach(), num_neg, largest=False).indices
            else:
                keep = torch.randperm(len(neg_i), generator=self.generator)[:num_neg].to(neg_i.device)
            neg_i, neg_j = neg_i[keep], neg_j[keep]
        self.last_num_positive, self.last_num_negative = len(pos_i), len(neg_i)
        count = len(pos_i) + len(neg_i)
        if len(pos_i) == 0 or count == 0:
            self.last_num_negative = 0
            return _zero(embeddings)
        positive_terms = d2[pos_i, pos_j]
        # sqrt of a clamped value: no infinite gradient for coinciding embeddings
        d_neg = d2[neg_i, neg_j].clamp_min(1e-12).sqrt()
        negative_terms = (self.margin - d_neg).clamp_min(0.0).pow(2)
        return (positive_terms.sum() + negative_terms.sum()) / count


# ---------------------------------------------------------------- GE2E

@LOSSES.register("ge2e")
class GE2ELoss(nn.Module):
    """Generalised end-to-end loss (Wan, Wang, Papir & Lopez Moreno, ICASSP 2018).

    The batch holds N speakers x M utterances (every speaker the same M >= 2,
    N >= 2; grouped by label, in any order).  With e_ji the L2-normalised
    embedding of utterance i of speaker j, centroids

        c_k = mean_m e_km                      (other speakers)
        c_j^(-i) = sum_{m != i} e_jm / (M - 1)  (own speaker, leaving e_ji out)

    and the similarity matrix ``S_ji,k = w cos(e_ji, c_k) + b`` (c_j^(-i) for
    k = j), w = max(w, 1e-6) kept positive as in the paper, with learnable
    w (init ``init_w`` = 10) and b (init ``init_b`` = -5); they are parameters of
    the loss module, so the optimiser must include ``loss_fn.parameters()`` and
    checkpoints its ``state_dict()``.  Per utterance:

    - ``variant="softmax"`` (default): L = -S_ji,j + log sum_k exp(S_ji,k)
    - ``variant="contrast"``:           L = 1 - sigma(S_ji,j) + max_{k != j} sigma(S_ji,k)

    The loss is the mean over all N M utterances (the paper sums; the mean
    keeps the scale independent of the batch size).  Raises ValueError when the
    batch does not have the same number M >= 2 of utterances for N >= 2 speakers.
    """

    needs_head = False
    input = "embeddings"
    VARIANTS = ("softmax", "contrast")

    def __init__(self, variant: str = "softmax", init_w: float = 10.0, init_b: float = -5.0):
        super().__init__()
        if variant not in self.VARIANTS:
            raise ValueError(f"ge2e: variant {variant!r} unknown; choose one of {', '.join(self.VARIANTS)}")
        self.variant = variant
        self.w = nn.Parameter(torch.tensor(float(init_w)))
        self.b = nn.Parameter(torch.tensor(float(init_b)))

    def similarity(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The (N, M, N) matrix S[j, i, k] with speakers in sorted-label order."""
        _check_batch(embeddings, labels)
        speakers, inverse, counts = torch.unique(labels, return_inverse=True, return_counts=True)
        counts_list = counts.tolist()
        if len(counts_list) < 2:
            raise ValueError(f"ge2e needs at least 2 speakers in a batch, got {len(counts_list)}")
        if len(set(counts_list)) != 1 or counts_list[0] < 2:
            found = dict(zip(speakers.tolist(), counts_list))
            raise ValueError("ge2e needs the same number (>= 2) of utterances for every speaker in a batch "
                             f"(P speakers x K utterances); got utterances per label {found}")
        num_spk, num_utt = len(counts_list), counts_list[0]
        order = torch.argsort(inverse, stable=True)
        e = F.normalize(embeddings[order], dim=1).view(num_spk, num_utt, -1)   # [j, i, :]
        sums = e.sum(dim=1)                                                     # [j, :]
        centroids = F.normalize(sums / num_utt, dim=1)                         # [k, :]
        own_centroids = (sums[:, None, :] - e) / (num_utt - 1)                 # [j, i, :]
        cos = torch.einsum("jid,kd->jik", e, centroids)
        cos_own = F.cosine_similarity(e, own_centroids, dim=2, eps=1e-8)       # [j, i]
        own = torch.eye(num_spk, dtype=torch.bool, device=e.device)[:, None, :]
        cos = torch.where(own, cos_own[:, :, None], cos)
        return self.w.clamp_min(1e-6) * cos + self.b

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        s = self.similarity(embeddings, labels)
        num_spk = s.shape[0]
        own = torch.eye(num_spk, dtype=torch.bool, device=s.device)[:, None, :].expand_as(s)
        s_own = s[own].view(num_spk, -1)                                        # [j, i]
        if self.variant == "softmax":
            losses = torch.logsumexp(s, dim=2) - s_own
        else:
            sig = torch.sigmoid(s)
            hardest_other = sig.masked_fill(own, float("-inf")).amax(dim=2)
            losses = 1.0 - torch.sigmoid(s_own) + hardest_other
        return losses.mean()
