"""Closed-set identification: which training speaker is speaking, with probabilities.

The trained classification head maps an utterance embedding to a softmax over
the training speakers (the mission's identification objective).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from spk.data import DataDir
from spk.inference import COSINE_SCALE, head_posteriors, score_posteriors, unit_length
from spk.metrics import confusion_matrix, identification_metrics
from spk.results import write_identification_results
from spk.scoring import load_embeddings
from spk.model_dir import load_trained

logger = logging.getLogger(__name__)


def evaluate_identification(exp_dir: Path, embeddings_scp: Path, data_dir: Path, results_json: Path,
                            *, speaker_embeddings_scp: Path | None = None, name: str | None = None) -> dict:
    """Top-1/top-5 accuracy, per-speaker accuracy and the confusion matrix of held-out utterances.

    A model with a classification head gives posteriors through it.  A model
    trained with an embedding loss (triplet, contrastive, GE2E) has none; then the
    training speakers' mean embeddings (``speaker_embeddings_scp``, the
    ``spk_xvector.scp`` of the training set) are scored by cosine, and a softmax
    over the scores stands for the posteriors (only the ranking matters for
    accuracy).  Every utterance of ``data_dir`` must belong to a training speaker
    (closed set); others are an error naming them.
    """
    trained = load_trained(exp_dir)
    model, speakers = trained.embedder, trained.speakers
    ids, matrix = load_embeddings(embeddings_scp)
    utt2spk = DataDir(data_dir).utt2spk()
    index = {s: i for i, s in enumerate(speakers)}
    unknown = sorted({utt2spk[u] for u in ids if utt2spk.get(u) not in index and u in utt2spk})
    if unknown:
        raise ValueError(f"{data_dir}/utt2spk: speakers not seen in training (closed set): "
                         f"{', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''}")
    keep = [i for i, u in enumerate(ids) if u in utt2spk]
    truth = np.array([index[utt2spk[ids[i]]] for i in keep])
    if model.head is not None:
        posteriors, backend = head_posteriors(model, matrix[keep]), "softmax_head"
    else:
        if speaker_embeddings_scp is None:
            raise ValueError(f"{exp_dir} has no classification head (embedding loss): give the training "
                             "speakers' embeddings (spk_xvector.scp of the training set)")
        posteriors = cosine_posteriors(matrix[keep], speaker_embeddings_scp, speakers)
        backend = "cosine_to_speaker_means"
    confusion = confusion_matrix(truth, posteriors.argmax(axis=1), len(speakers))
    results = write_identification_results(
        results_json, identification_metrics(posteriors, truth), confusion, speakers, embeddings=embeddings_scp,
        backend=backend, speaker_embeddings=speaker_embeddings_scp if model.head is None else None, name=name)
    logger.info("identification %s: %d test utterances, %d speakers, top-1 %.2f%%, top-5 %.2f%%",
                Path(results_json).stem, results["num_test"], results["num_speakers"], results["top1"], results["top5"])
    return results


def cosine_posteriors(embeddings: np.ndarray, speaker_embeddings_scp: Path, speakers: list[str],
                      scale: float = COSINE_SCALE) -> np.ndarray:
    """Softmax over ``scale`` x cosine similarity to each training speaker's mean embedding."""
    speaker_ids, speaker_matrix = load_embeddings(speaker_embeddings_scp)
    position = {s: i for i, s in enumerate(speaker_ids)}
    missing = [s for s in speakers if s not in position]
    if missing:
        raise ValueError(f"{speaker_embeddings_scp} lacks training speakers: {', '.join(missing[:5])}")
    means = unit_length(speaker_matrix[[position[s] for s in speakers]])
    return score_posteriors(unit_length(embeddings) @ means.T, scale)
