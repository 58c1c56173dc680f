"""Losses against small hand-computed cases (expected numbers are written out, not taken from the code)."""

import math

import numpy as np
import pytest
import torch

from spk.losses import LOSSES, ContrastiveLoss, GE2ELoss, TripletLoss
from spk.models.registry import RegistryError

# Four unit vectors in 2-D, two speakers: A = {a1, a2}, B = {b1, b2}.
#   a1 = (1, 0), a2 = (0.6, 0.8), b1 = (0, 1), b2 = (-0.6, 0.8)
# cosines: a1.a2 = 0.6, b1.b2 = 0.8, a1.b1 = 0, a1.b2 = -0.6, a2.b1 = 0.8, a2.b2 = -0.36 + 0.64 = 0.28
# squared Euclidean on unit vectors = 2 - 2 cos:
#   a1a2 0.8, b1b2 0.4, a1b1 2.0, a1b2 3.2, a2b1 0.4, a2b2 1.44
UNIT = [[1.0, 0.0], [0.6, 0.8], [0.0, 1.0], [-0.6, 0.8]]
UNIT_LABELS = [0, 0, 1, 1]


def tensor(rows, grad=False):
    return torch.tensor(rows, dtype=torch.float32, requires_grad=grad)


def labels(values):
    return torch.tensor(values, dtype=torch.int64)


def pk_batch(num_speakers=4, per_speaker=3, dim=8, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(num_speakers * per_speaker, dim, generator=generator, requires_grad=True)
    y = torch.arange(num_speakers).repeat_interleave(per_speaker)
    return x, y


# ------------------------------------------------------------------ registry / interface

def test_registry_names_and_inputs():
    assert {"softmax", "triplet", "contrastive", "ge2e"} <= set(LOSSES.names())
    assert LOSSES.build("softmax").input == "logits"
    for name in ("triplet", "contrastive", "ge2e"):
        assert LOSSES.build(name).input == "embeddings"


def test_registry_rejects_unknown_option():
    with pytest.raises(RegistryError, match="bogus"):
        LOSSES.build("triplet", {"bogus": 1})
    with pytest.raises(RegistryError, match="margin"):  # the message lists the real options
        LOSSES.build("contrastive", {"alpha": 0.3})


def test_bad_option_values_rejected():
    with pytest.raises(ValueError, match="mining"):
        TripletLoss(mining="hardest")
    with pytest.raises(ValueError, match="distance"):
        TripletLoss(distance="manhattan")
    with pytest.raises(ValueError, match="negatives"):
        ContrastiveLoss(negatives="all")
    with pytest.raises(ValueError, match="variant"):
        GE2ELoss(variant="sigmoid")


def test_softmax_unchanged():
    logits = tensor([[2.0, 0.0], [0.0, 1.0]])
    expected = (-math.log(math.exp(2) / (math.exp(2) + 1)) - math.log(math.e / (1 + math.e))) / 2
    assert LOSSES.build("softmax")(logits, labels([0, 1])).item() == pytest.approx(expected, rel=1e-6)


# ------------------------------------------------------------------ triplet

def test_triplet_batch_all_hand_computed_plain_coordinates():
    # x0 = (0,0), x1 = (1,0) speaker 0; x2 = (0,1), x3 = (3,0) speaker 1; no normalisation, margin 1.
    # squared distances: d01 = 1, d02 = 1, d03 = 9, d12 = 2, d13 = 4, d23 = 10
    # triplets (a, p, n): d(a,p) - d(a,n) + 1
    #   (0,1,2) 1-1+1 = 1    (0,1,3) 1-9+1 = -7
    #   (1,0,2) 1-2+1 = 0    (1,0,3) 1-4+1 = -2    <- exactly 0: not active
    #   (2,3,0) 10-1+1 = 10  (2,3,1) 10-2+1 = 9
    #   (3,2,0) 10-9+1 = 2   (3,2,1) 10-4+1 = 7
    # active (> 0): 1, 10, 9, 2, 7 -> mean 29 / 5 = 5.8 over 5 of 8 valid triplets
    loss = TripletLoss(margin=1.0, normalize=False, mining="batch_all")
    value = loss(tensor([[0, 0], [1, 0], [0, 1], [3, 0]]), labels([0, 0, 1, 1]))
    assert value.item() == pytest.approx(29 / 5)
    assert loss.last_active_fraction == pytest.approx(5 / 8)


def test_triplet_batch_hard_hand_computed_plain_coordinates():
    # same points; K = 2 so the hardest positive is the only one; hardest negative = nearest:
    #   a=0: d_ap 1,  d_an min(1, 9) = 1 (n=2) -> 1
    #   a=1: d_ap 1,  d_an min(2, 4) = 2 (n=2) -> 0
    #   a=2: d_ap 10, d_an min(1, 2) = 1 (n=0) -> 10
    #   a=3: d_ap 10, d_an min(9, 4) = 4 (n=1) -> 7
    # mean over the 4 anchors = 18 / 4 = 4.5
    loss = TripletLoss(margin=1.0, normalize=False, mining="batch_hard")
    value = loss(tensor([[0, 0], [1, 0], [0, 1], [3, 0]]), labels([0, 0, 1, 1]))
    assert value.item() == pytest.approx(4.5)
    assert loss.last_triplets.tolist() == [[0, 1, 2], [1, 0, 2], [2, 3, 0], [3, 2, 1]]
    assert loss.last_active_fraction == pytest.approx(3 / 4)


def test_triplet_defaults_normalise_squared_euclidean_margin_02():
    # non-unit inputs that normalise to UNIT; squared distances from the table at the top, margin 0.2:
    #   (a1,a2,b1) 0.8-2.0+0.2 < 0   (a1,a2,b2) 0.8-3.2+0.2 < 0
    #   (a2,a1,b1) 0.8-0.4+0.2 = 0.6 (a2,a1,b2) 0.8-1.44+0.2 = -0.44
    #   (b1,b2,a1) 0.4-2.0+0.2 < 0   (b1,b2,a2) 0.4-0.4+0.2 = 0.2
    #   (b2,b1,a1) 0.4-3.2+0.2 < 0   (b2,b1,a2) 0.4-1.44+0.2 = -0.84
    # batch_all: (0.6 + 0.2) / 2 = 0.4, 2 of 8 active
    scaled = [[3.0, 0.0], [0.3, 0.4], [0.0, 5.0], [-1.2, 1.6]]
    loss = LOSSES.build("triplet")
    assert (loss.margin, loss.distance, loss.normalize, loss.mining) == (0.2, "squared_euclidean", True, "batch_all")
    value = loss(tensor(scaled), labels(UNIT_LABELS))
    assert value.item() == pytest.approx(0.4, abs=1e-6)
    assert loss.last_active_fraction == pytest.approx(0.25)


def test_triplet_cosine_distance():
    # d = 1 - cos: a1a2 0.4, b1b2 0.2, a1b1 1.0, a1b2 1.6, a2b1 0.2, a2b2 0.72; margin 0.2
    #   (a2,a1,b1) 0.4-0.2+0.2 = 0.4   (b1,b2,a2) 0.2-0.2+0.2 = 0.2   all others < 0
    # batch_all: (0.4 + 0.2) / 2 = 0.3
    loss = TripletLoss(distance="cosine")
    value = loss(tensor(UNIT) * 2.0, labels(UNIT_LABELS))
    assert value.item() == pytest.approx(0.3, abs=1e-6)
    assert loss.last_active_fraction == pytest.approx(0.25)


# Points on a line (y = 0), margin 1, squared distances, no normalisation.
# speaker 0: x=0 (index 0), x=1 (1); speaker 1: x=0.6 (2), x=1.2 (3), x=1.3 (4), x=1.9 (5)
LINE = [[0.0, 0.0], [1.0, 0.0], [0.6, 0.0], [1.2, 0.0], [1.3, 0.0], [1.9, 0.0]]
LINE_LABELS = [0, 0, 1, 1, 1, 1]


def test_triplet_semi_hard_picks_the_nearest_negative_beyond_the_positive():
    # anchor 0, positive 1: d_ap = 1; negatives d = 0.36 (hard), 1.44, 1.69 (semi-hard: in (1, 2)), 3.61 (easy)
    #   -> semi-hard pick: index 3 (d = 1.44), loss 1 - 1.44 + 1 = 0.56
    # anchor 1, positive 0: d_ap = 1; negatives d = 0.16, 0.04, 0.09, 0.81 -> none in (1, 2)
    #   -> fallback to the hardest negative: index 3 (d = 0.04), loss 1 - 0.04 + 1 = 1.96
    loss = TripletLoss(margin=1.0, normalize=False, mining="semi_hard")
    loss(tensor(LINE), labels(LINE_LABELS))
    picks = {(a, p): n for a, p, n in loss.last_triplets.tolist()}
    assert len(picks) == 2 + 4 * 3  # every anchor-positive pair
    assert picks[(0, 1)] == 3
    assert picks[(1, 0)] == 3


def test_triplet_batch_hard_picks_hardest_positive_and_negative():
    # anchor (x): positives d -> hardest (largest); negatives d -> hardest (smallest); loss d_ap - d_an + 1
    #   0 (0):   1: 1                              -> 1;  2: 0.36, 3: 1.44, 4: 1.69, 5: 3.61 -> 2;  1 - 0.36 + 1 = 1.64
    #   1 (1):   0: 1                              -> 0;  2: 0.16, 3: 0.04, 4: 0.09, 5: 0.81 -> 3;  1 - 0.04 + 1 = 1.96
    #   2 (0.6): 3: 0.36, 4: 0.49, 5: 1.69          -> 5;  0: 0.36, 1: 0.16 -> 1;  1.69 - 0.16 + 1 = 2.53
    #   3 (1.2): 2: 0.36, 4: 0.01, 5: 0.49          -> 5;  0: 1.44, 1: 0.04 -> 1;  0.49 - 0.04 + 1 = 1.45
    #   4 (1.3): 2: 0.49, 3: 0.01, 5: 0.36          -> 2;  0: 1.69, 1: 0.09 -> 1;  0.49 - 0.09 + 1 = 1.40
    #   5 (1.9): 2: 1.69, 3: 0.49, 4: 0.36          -> 2;  0: 3.61, 1: 0.81 -> 1;  1.69 - 0.81 + 1 = 1.88
    loss = TripletLoss(margin=1.0, normalize=False, mining="batch_hard")
    value = loss(tensor(LINE), labels(LINE_LABELS))
    assert loss.last_triplets.tolist() == [[0, 1, 2], [1, 0, 3], [2, 5, 1], [3, 5, 1], [4, 2, 1], [5, 2, 1]]
    expected = (1.64 + 1.96 + 2.53 + 1.45 + 1.40 + 1.88) / 6
    assert value.item() == pytest.approx(expected, rel=1e-5)


def _semi_hard_reference(points, labels_, margin):
    """Plain-python FaceNet semi-hard rule (mean over anchor-positive pairs)."""
    n_pts = len(points)
    d = [[sum((points[i][k] - points[j][k]) ** 2 for k in range(len(points[0]))) for j in range(n_pts)]
         for i in range(n_pts)]
    losses = []
    for a in range(n_pts):
        negs = [n for n in range(n_pts) if labels_[n] != labels_[a]]
        if not negs:
            continue
        for p in range(n_pts):
            if p == a or labels_[p] != labels_[a]:
                continue
            semi = [n for n in negs if d[a][p] < d[a][n] < d[a][p] + margin]
            n = min(semi, key=lambda k: d[a][k]) if semi else min(negs, key=lambda k: d[a][k])
            losses.append(max(0.0, d[a][p] - d[a][n] + margin))
    return sum(losses) / len(losses)


def test_triplet_semi_hard_value_matches_plain_rule():
    loss = TripletLoss(margin=1.0, normalize=False, mining="semi_hard")
    value = loss(tensor(LINE), labels(LINE_LABELS))
    assert value.item() == pytest.approx(_semi_hard_reference(LINE, LINE_LABELS, 1.0), rel=1e-5)
    rng = np.random.default_rng(3)
    points = rng.normal(size=(12, 3)).round(3).tolist()
    lab = [0, 1, 2, 3] * 3  # interleaved on purpose: labels need not be sorted
    value = TripletLoss(margin=0.5, normalize=False, mining="semi_hard")(tensor(points), labels(lab))
    assert value.item() == pytest.approx(_semi_hard_reference(points, lab, 0.5), rel=1e-4)


def test_triplet_batch_all_averages_only_positive_loss_triplets():
    # speaker 0 at (0,0), (0.1,0); speaker 1 at (10,0), (10.1,0): every triplet is easy except none -> add a
    # close impostor: speaker 1 also at (0.05, 0). Active triplets must be averaged alone.
    pts = [[0.0, 0.0], [0.1, 0.0], [10.0, 0.0], [10.1, 0.0], [0.05, 0.0]]
    lab = [0, 0, 1, 1, 1]
    d = [[(pts[i][0] - pts[j][0]) ** 2 for j in range(5)] for i in range(5)]
    valid, active = [], []
    for a in range(5):
        for p in range(5):
            for n in range(5):
                if p != a and lab[p] == lab[a] and lab[n] != lab[a]:
                    value = d[a][p] - d[a][n] + 0.2
                    valid.append(value)
                    if value > 0:
                        active.append(value)
    assert 0 < len(active) < len(valid)
    loss = TripletLoss(margin=0.2, normalize=False, mining="batch_all")
    out = loss(tensor(pts), labels(lab))
    assert out.item() == pytest.approx(sum(active) / len(active), rel=1e-4)
    assert out.item() > sum(max(v, 0) for v in valid) / len(valid)  # not diluted by the easy ones
    assert loss.last_active_fraction == pytest.approx(len(active) / len(valid))


@pytest.mark.parametrize("mining", ["batch_all", "batch_hard", "semi_hard"])
@pytest.mark.parametrize("case", ["one_speaker", "all_distinct"])
def test_triplet_no_valid_triplet_gives_zero_not_nan(mining, case):
    x = tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], grad=True)
    y = labels([0, 0, 0] if case == "one_speaker" else [0, 1, 2])
    loss = TripletLoss(mining=mining)
    value = loss(x, y)
    assert value.item() == 0.0
    value.backward()
    assert torch.isfinite(x.grad).all() and (x.grad == 0).all()
    assert loss.last_active_fraction == 0.0


def test_triplet_all_easy_gives_zero():
    x = tensor([[1.0, 0.0], [1.0, 0.01], [-1.0, 0.0], [-1.0, 0.01]], grad=True)
    value = TripletLoss()(x, labels([0, 0, 1, 1]))
    assert value.item() == 0.0
    value.backward()
    assert torch.isfinite(x.grad).all()


# ------------------------------------------------------------------ contrastive

def test_contrastive_hand_computed_hardest_negatives():
    # UNIT points (normalisation is a no-op). Squared distances from the table at the top:
    #   positives: a1a2 0.8, b1b2 0.4                        -> 2 positive pairs
    #   negatives: a2b1 0.4, a2b2 1.44, a1b1 2.0, a1b2 3.2   -> keep the 2 hardest: a2b1, a2b2
    #   d(a2,b1) = sqrt(0.4) = 0.632456, d(a2,b2) = 1.2
    # margin 1.0: (1 - 0.632456)^2 = 0.135089, (1 - 1.2) -> 0
    #   loss = (0.8 + 0.4 + 0.135089 + 0) / 4
    loss = LOSSES.build("contrastive")
    assert (loss.margin, loss.normalize, loss.negatives) == (1.0, True, "hardest")
    value = loss(tensor(UNIT), labels(UNIT_LABELS))
    assert value.item() == pytest.approx((1.2 + (1 - math.sqrt(0.4)) ** 2) / 4, rel=1e-5)
    assert (loss.last_num_positive, loss.last_num_negative) == (2, 2)
    # margin 1.5: (1.5 - 0.632456)^2 = 0.752633, (1.5 - 1.2)^2 = 0.09 -> second negative counts too
    value = ContrastiveLoss(margin=1.5)(tensor(UNIT), labels(UNIT_LABELS))
    assert value.item() == pytest.approx((1.2 + (1.5 - math.sqrt(0.4)) ** 2 + 0.3 ** 2) / 4, rel=1e-5)


def test_contrastive_no_half_factor_and_unnormalised():
    # one pair per kind: (0,0)-(3,4) same speaker d^2 = 25; (0,0)-(1,0) other speaker d = 1, margin 2 -> (2-1)^2 = 1
    # labels [0, 0, 1]: positives {(0,1)}; negatives {(0,2) d=1, (1,2) d^2 = 4+16 = 20} -> hardest (0,2)
    loss = ContrastiveLoss(margin=2.0, normalize=False)
    value = loss(tensor([[0.0, 0.0], [3.0, 4.0], [1.0, 0.0]]), labels([0, 0, 1]))
    assert value.item() == pytest.approx((25 + 1) / 2)


def test_contrastive_balanced_pair_counts():
    # P = 3 speakers x K = 2: 3 positive pairs, 3 * 2 * 2 = 12 negative pairs -> 3 negatives used
    x, y = pk_batch(num_speakers=3, per_speaker=2)
    loss = ContrastiveLoss()
    loss(x, y)
    assert (loss.last_num_positive, loss.last_num_negative) == (3, 3)
    # P = 4 x K = 3: 4 * 3 = 12 positive pairs, C(12, 2) - 12 = 54 negative pairs -> 12 negatives used
    x, y = pk_batch(num_speakers=4, per_speaker=3)
    loss(x, y)
    assert (loss.last_num_positive, loss.last_num_negative) == (12, 12)


def test_contrastive_random_negatives_deterministic_and_no_harder_than_hardest():
    x, y = pk_batch(num_speakers=4, per_speaker=3, seed=1)
    first = [ContrastiveLoss(negatives="random", seed=7, margin=1.5)(x, y).item() for _ in range(2)]
    again = ContrastiveLoss(negatives="random", seed=7, margin=1.5)
    assert first[0] == first[1] == again(x, y).item()
    # the hardest negatives have the largest hinge terms, so their loss bounds any random choice
    hardest = ContrastiveLoss(margin=1.5)(x, y).item()
    assert again(x, y).item() <= hardest + 1e-6
    assert (again.last_num_positive, again.last_num_negative) == (12, 12)


def test_contrastive_no_positive_pair_gives_zero():
    x = tensor([[1.0, 0.0], [0.0, 1.0]], grad=True)
    value = ContrastiveLoss()(x, labels([0, 1]))
    assert value.item() == 0.0
    value.backward()
    assert torch.isfinite(x.grad).all()


# ------------------------------------------------------------------ GE2E

def _ge2e(variant):
    loss = GE2ELoss(variant=variant)
    with torch.no_grad():
        loss.w.fill_(1.0)
        loss.b.fill_(0.0)
    return loss


def _ge2e_reference(points, lab, variant, w=1.0, b=0.0):
    """Step by step with numpy: normalise, centroids (own one leaves the utterance out), S = w cos + b."""
    e = np.asarray(points, dtype=float)
    e = e / np.linalg.norm(e, axis=1, keepdims=True)
    speakers = sorted(set(lab))
    members = {s: [i for i, l in enumerate(lab) if l == s] for s in speakers}
    losses = []
    for i, own in enumerate(lab):
        row = {}
        for s in speakers:
            others = [m for m in members[s] if m != i]
            c = e[others].mean(axis=0)
            row[s] = w * float(e[i] @ c / np.linalg.norm(c)) + b
        if variant == "softmax":
            losses.append(-row[own] + math.log(sum(math.exp(v) for v in row.values())))
        else:
            sig = {s: 1 / (1 + math.exp(-v)) for s, v in row.items()}
            losses.append(1 - sig[own] + max(v for s, v in sig.items() if s != own))
    return sum(losses) / len(losses)


def test_ge2e_softmax_hand_computed_2x2():
    # A = {a1=(1,0), a2=(0.6,0.8)}, B = {b1=(0,1), b2=(-0.6,0.8)}; w = 1, b = 0.
    # own (leave-one-out) centroid with K = 2 is the other utterance:
    #   a1: cos(a1, a2) = 0.6;  a2: 0.6;  b1: cos(b1, b2) = 0.8;  b2: 0.8
    # other-speaker centroids: cA = (0.8, 0.4), cB = (-0.3, 0.9), |cA| = sqrt(0.8), |cB| = sqrt(0.9)
    #   a1.cB = -0.3 -> cos -0.3/sqrt(0.9);  a2.cB = -0.18 + 0.72 = 0.54 -> 0.54/sqrt(0.9)
    #   b1.cA = 0.4 -> 0.4/sqrt(0.8);        b2.cA = -0.48 + 0.32 = -0.16 -> -0.16/sqrt(0.8)
    # softmax loss per utterance: -S_own + log(exp(S_own) + exp(S_other)) = log(1 + exp(S_other - S_own))
    rows = [(0.6, -0.3 / math.sqrt(0.9)), (0.6, 0.54 / math.sqrt(0.9)),
            (0.8, 0.4 / math.sqrt(0.8)), (0.8, -0.16 / math.sqrt(0.8))]
    expected = sum(math.log(1 + math.exp(other - own)) for own, other in rows) / 4
    # labels out of order, and scaled inputs (GE2E normalises): grouping must follow the labels
    points = [[0.0, 2.0], [1.0, 0.0], [-0.3, 0.4], [0.6, 0.8]]  # b1, a1, b2, a2
    value = _ge2e("softmax")(tensor(points), labels([7, 3, 7, 3]))
    assert value.item() == pytest.approx(expected, rel=1e-5)
    assert expected == pytest.approx(_ge2e_reference(UNIT, UNIT_LABELS, "softmax"))


def test_ge2e_contrast_hand_computed_2x2():
    # same similarities; contrast: 1 - sigmoid(S_own) + max over other speakers sigmoid(S_other)
    sigmoid = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    rows = [(0.6, -0.3 / math.sqrt(0.9)), (0.6, 0.54 / math.sqrt(0.9)),
            (0.8, 0.4 / math.sqrt(0.8)), (0.8, -0.16 / math.sqrt(0.8))]
    expected = sum(1 - sigmoid(own) + sigmoid(other) for own, other in rows) / 4
    value = _ge2e("contrast")(tensor(UNIT), labels(UNIT_LABELS))
    assert value.item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("variant", ["softmax", "contrast"])
def test_ge2e_3x3_matches_numpy_steps(variant):
    rng = np.random.default_rng(5)
    points = rng.normal(size=(9, 4)).tolist()
    lab = [2, 0, 1, 1, 2, 0, 0, 1, 2]
    loss = GE2ELoss(variant=variant)  # defaults w = 10, b = -5
    assert (loss.w.item(), loss.b.item()) == (10.0, -5.0)
    value = loss(tensor(points), labels(lab))
    assert value.item() == pytest.approx(_ge2e_reference(points, lab, variant, w=10.0, b=-5.0), rel=1e-4)


def test_ge2e_w_kept_positive():
    loss = GE2ELoss()
    with torch.no_grad():
        loss.w.fill_(-3.0)
        loss.b.fill_(0.0)
    s = loss.similarity(tensor(UNIT), labels(UNIT_LABELS))
    assert s.abs().max().item() < 1e-5  # w -> 1e-6, so S = 1e-6 cos


@pytest.mark.parametrize("bad", [[0, 0, 0, 1, 1], [0, 1, 2, 3], [0, 0, 0, 0]])
def test_ge2e_rejects_unbalanced_or_single_utterance_batches(bad):
    x = torch.randn(len(bad), 3)
    with pytest.raises(ValueError, match="ge2e"):
        GE2ELoss()(x, labels(bad))


# ------------------------------------------------------------------ gradients

@pytest.mark.parametrize("name, conf", [
    ("triplet", {"mining": "batch_all"}), ("triplet", {"mining": "batch_hard"}),
    ("triplet", {"mining": "semi_hard"}), ("triplet", {"distance": "cosine", "margin": 0.5}),
    ("triplet", {"normalize": False, "mining": "batch_hard"}),
    ("contrastive", {}), ("contrastive", {"negatives": "random", "margin": 2.0}),
    ("ge2e", {}), ("ge2e", {"variant": "contrast"}),
])
def test_gradients_flow_and_are_finite(name, conf):
    x, y = pk_batch(num_speakers=4, per_speaker=3, dim=8)
    with torch.no_grad():
        x[1] = x[0]  # coinciding embeddings of one speaker
        x[3] = x[0]  # and of another speaker (distance 0 to a negative)
    loss_fn = LOSSES.build(name, conf)
    value = loss_fn(x, y)
    assert value.dim() == 0 and torch.isfinite(value)
    value.backward()
    assert torch.isfinite(x.grad).all()
    assert x.grad.abs().sum() > 0
    for parameter in loss_fn.parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all()


def test_losses_reject_bad_shapes():
    with pytest.raises(ValueError, match="labels"):
        TripletLoss()(torch.randn(4, 3), labels([0, 0, 1]))
    with pytest.raises(ValueError, match="embeddings"):
        ContrastiveLoss()(torch.randn(4), labels([0, 0, 1, 1]))
