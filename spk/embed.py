"""Embeddings for a data dir: one per utterance (``xvector``) and one per speaker (``spk_xvector``).

Utterances are sorted by length and batched up to a frame budget, so padding
stays small; the encoders pack sequences, so padding never changes a result.
"""

from __future__ import annotations

import logging
from pathlib import Path

import kaldiio
import numpy as np
import torch
from tqdm import tqdm

from spk.data import DataDir
from spk.features import FeatureConfig
from spk.train.dataset import FeatureStore, pad_batch
from spk.train.trainer import load_trained_model

logger = logging.getLogger(__name__)


def feature_store_for(exp_dir: Path, data_dir: Path, *, preload: bool = False) -> FeatureStore:
    """The features of ``data_dir``, normalised as the experiment ``exp_dir`` was trained."""
    model_config_features = _experiment_features(exp_dir)
    global_stats_path = Path(exp_dir) / "global_cmvn.npy"
    global_stats = np.load(global_stats_path) if global_stats_path.exists() else None
    data = DataDir(data_dir)
    cmvn = data.file("cmvn.scp")
    return FeatureStore(str(data.file("feats.scp")), model_config_features,
                        cmvn_scp=str(cmvn) if cmvn.exists() else None,
                        global_stats=global_stats, preload=preload)


def _experiment_features(exp_dir: Path) -> FeatureConfig:
    from spk.train.config import ExperimentConfig

    return FeatureConfig.from_dict(ExperimentConfig.from_yaml(Path(exp_dir) / "config.yaml").features)


@torch.no_grad()
def embed_store(model, store: FeatureStore, keys: list[str], *, device: str = "cpu",
                max_frames_per_batch: int = 60000) -> np.ndarray:
    """Embeddings of ``keys`` (rows in the order of ``keys``), batched by length."""
    lengths = np.array([store.num_frames(k) for k in keys])
    order = np.argsort(-lengths, kind="stable")
    out = np.zeros((len(keys), model.embedding_dim), dtype=np.float32)
    batch: list[int] = []
    progress = tqdm(total=len(keys), desc="embeddings", unit="utt", leave=False)

    def flush() -> None:
        feats, batch_lengths = pad_batch([store[keys[i]] for i in batch])
        out[batch] = model.embed(feats.to(device), batch_lengths.to(device)).cpu().numpy()
        progress.update(len(batch))
        batch.clear()

    for index in order:
        # sorted longest first, so the first item of a batch sets its padded length
        if batch and (len(batch) + 1) * lengths[batch[0]] > max_frames_per_batch:
            flush()
        batch.append(int(index))
    if batch:
        flush()
    progress.close()
    return out


def extract_embeddings(exp_dir: Path, data_dir: Path, out_dir: Path, *, device: str = "cpu") -> dict[str, int]:
    """Write ``xvector.{ark,scp}`` (per utterance) and ``spk_xvector.{ark,scp}`` (per speaker) to ``out_dir``.

    A speaker's embedding is the mean of its utterances' length-normalised
    embeddings, the enrollment model when a speaker is enrolled from several
    utterances.
    """
    exp_dir, data_dir, out_dir = Path(exp_dir), Path(data_dir), Path(out_dir)
    model, _, _ = load_trained_model(exp_dir, device)
    store = feature_store_for(exp_dir, data_dir)
    keys = store.keys
    embeddings = embed_store(model, store, keys, device=device)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_embeddings(out_dir / "xvector", dict(zip(keys, embeddings)))
    utt2spk = DataDir(data_dir).utt2spk()
    speakers = speaker_means(dict(zip(keys, embeddings)), utt2spk)
    write_embeddings(out_dir / "spk_xvector", speakers)
    logger.info("%s: %d utterance and %d speaker embeddings in %s", data_dir, len(keys), len(speakers), out_dir)
    return {"utterances": len(keys), "speakers": len(speakers)}


def speaker_means(embeddings: dict[str, np.ndarray], utt2spk: dict[str, str]) -> dict[str, np.ndarray]:
    """Mean of the length-normalised embeddings of each speaker's utterances."""
    groups: dict[str, list[np.ndarray]] = {}
    for utt, vector in embeddings.items():
        if utt in utt2spk:
            groups.setdefault(utt2spk[utt], []).append(vector / (np.linalg.norm(vector) + 1e-12))
    return {spk: np.mean(vectors, axis=0).astype(np.float32) for spk, vectors in groups.items()}


def write_embeddings(prefix: Path, embeddings: dict[str, np.ndarray]) -> None:
    """Write ``<prefix>.ark`` and ``<prefix>.scp`` (keys sorted), replacing both only when complete."""
    prefix = Path(prefix)
    tmp = prefix.with_name(prefix.name + ".tmp")
    with kaldiio.WriteHelper(f"ark,scp:{tmp}.ark,{tmp}.scp") as writer:
        for key in sorted(embeddings):
            writer(key, np.asarray(embeddings[key], dtype=np.float32))
    Path(f"{tmp}.ark").replace(f"{prefix}.ark")
    scp_text = Path(f"{tmp}.scp").read_text().replace(f"{tmp}.ark", f"{prefix}.ark")
    Path(f"{prefix}.scp").write_text(scp_text)
    Path(f"{tmp}.scp").unlink()
