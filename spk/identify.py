"""Closed-set identification: which training speaker is speaking, with probabilities.

The trained classification head maps an utterance embedding to a softmax over
the training speakers (the mission's identification objective).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from spk.data import DataDir
from spk.metrics import confusion_matrix, identification_metrics, per_class_accuracy
from spk.report import write_confusion_csv, write_results_json
from spk.scoring import load_embeddings
from spk.train.trainer import load_trained_model

logger = logging.getLogger(__name__)


@torch.no_grad()
def speaker_posteriors(model, embeddings: np.ndarray) -> np.ndarray:
    """Softmax over the training speakers for each embedding row."""
    model.eval()
    logits = model.classify(torch.from_numpy(np.asarray(embeddings, dtype=np.float32)))
    return torch.softmax(logits, dim=1).numpy()


def evaluate_identification(exp_dir: Path, embeddings_scp: Path, data_dir: Path, results_json: Path,
                            *, name: str | None = None) -> dict:
    """Top-1/top-5 accuracy, per-speaker accuracy and the confusion matrix of held-out utterances.

    Every utterance of ``data_dir`` must belong to a training speaker of the
    experiment (closed set); others are an error naming them.
    """
    model, _, speakers = load_trained_model(exp_dir)
    ids, matrix = load_embeddings(embeddings_scp)
    utt2spk = DataDir(data_dir).utt2spk()
    index = {s: i for i, s in enumerate(speakers)}
    unknown = sorted({utt2spk[u] for u in ids if utt2spk.get(u) not in index and u in utt2spk})
    if unknown:
        raise ValueError(f"{data_dir}/utt2spk: speakers not seen in training (closed set): "
                         f"{', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''}")
    keep = [i for i, u in enumerate(ids) if u in utt2spk]
    truth = np.array([index[utt2spk[ids[i]]] for i in keep])
    posteriors = speaker_posteriors(model, matrix[keep])
    results = identification_metrics(posteriors, truth)
    confusion = confusion_matrix(truth, posteriors.argmax(axis=1), len(speakers))
    results_json = Path(results_json)
    confusion_csv = results_json.with_name(results_json.stem + "_confusion.csv")
    write_confusion_csv(confusion_csv, confusion, speakers)
    per_speaker = per_class_accuracy(confusion)
    results.update({"kind": "identification", "confusion": str(confusion_csv),
                    "embeddings": str(embeddings_scp), "backend": "softmax_head",
                    "worst_speakers": {speakers[i]: round(float(per_speaker[i]) * 100, 2)
                                       for i in np.argsort(per_speaker)[:5] if not np.isnan(per_speaker[i])}})
    if name:
        results["name"] = name
    write_results_json(results_json, results)
    logger.info("identification %s: %d test utterances, %d speakers, top-1 %.2f%%, top-5 %.2f%%",
                results_json.stem, results["num_test"], results["num_speakers"], results["top1"], results["top5"])
    return results
