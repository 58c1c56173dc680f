"""Stage 4 (spk/embed.py, ``spk embed``): chunked embeddings, --nj jobs, the command line.

Tiny feature data dirs and the tiny trained model of test_trainer (its fixtures and helpers).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from spk import embed as embed_module
from spk.embed import extract_embeddings, feature_store_for
from spk.inference import Chunking, average_chunks, embed_store, length_batches
from spk.scoring import load_embeddings
from spk.model_dir import TrainedModelError, load_trained
from tests import test_trainer
from tests.test_trainer import corpus, write_feature_dir

# test_trainer's tiny model, trained once for this module too (pytest finds fixtures among module attributes)
styles, train_dir, trained = test_trainer.styles, test_trainer.train_dir, test_trainer.trained

# 10 ms frames: 0.5 s chunks are 50 frames, starting every 25 frames
CHUNK_SECONDS, CHUNK_OVERLAP = 0.5, 0.25


@pytest.fixture(scope="module")
def long_dir(tmp_path_factory, styles) -> Path:
    """Utterances from shorter than one chunk (30 frames) to many chunks long (about 400 frames)."""
    utterances = corpus(4, 3, seed=5, prefix="long", frames=(130, 400))
    utterances.update({"spk0-short": ("spk0", 30), "spk1-onechunk": ("spk1", 50), "spk2-tiny": ("spk2", 3)})
    path = tmp_path_factory.mktemp("data") / "long"
    write_feature_dir(path, utterances, styles, seed=5)
    return path


@pytest.fixture(scope="module")
def chunked(tmp_path_factory, trained, long_dir) -> Path:
    out = tmp_path_factory.mktemp("emb") / "chunked"
    extract_embeddings(trained, long_dir, out, chunk_seconds=CHUNK_SECONDS, chunk_overlap=CHUNK_OVERLAP)
    return out


def assert_same_embeddings(dir_a: Path, dir_b: Path) -> None:
    for name in ("xvector.scp", "spk_xvector.scp"):
        keys_a, matrix_a = load_embeddings(dir_a / name)
        keys_b, matrix_b = load_embeddings(dir_b / name)
        assert keys_a == keys_b, name
        assert np.max(np.abs(matrix_a - matrix_b)) <= 1e-5, name


# --------------------------------------------------------------------------- chunk boundaries


@pytest.mark.parametrize("num_frames, expected", [
    (10, [(0, 4), (2, 6), (4, 8), (6, 10)]),
    (9, [(0, 4), (2, 6), (4, 8), (5, 9)]),  # the last chunk is aligned to the end
    (5, [(0, 4), (1, 5)]),
    (4, [(0, 4)]),  # exactly one chunk
    (3, [(0, 3)]),  # shorter than a chunk: whole
    (1, [(0, 1)]),
])
def test_chunk_bounds(num_frames, expected):
    assert Chunking(frames=4, step=2).bounds(num_frames) == expected


def test_chunk_bounds_without_overlap():
    assert Chunking(frames=3, step=3).bounds(9) == [(0, 3), (3, 6), (6, 9)]
    assert Chunking(frames=3, step=3).bounds(10) == [(0, 3), (3, 6), (6, 9), (7, 10)]


@pytest.mark.parametrize("frames, step", [(50, 25), (300, 150), (7, 3), (5, 5), (6, 1)])
def test_chunks_cover_every_frame_with_the_overlap(frames, step):
    chunking = Chunking(frames, step)
    for num_frames in range(frames + 1, 4 * frames + 7):
        bounds = chunking.bounds(num_frames)
        assert all(end - start == frames for start, end in bounds)
        assert bounds[0][0] == 0 and bounds[-1][1] == num_frames
        starts = [start for start, _ in bounds]
        assert starts == sorted(set(starts))
        # neighbours overlap by at least the requested overlap, so no frame is left out
        assert all(b[0] - a[0] <= step for a, b in zip(bounds, bounds[1:]))
        assert all(b[0] - a[0] == step for a, b in zip(bounds[:-2], bounds[1:-1]))


def test_chunking_from_seconds():
    assert Chunking.from_seconds(3, 1.5, 10) == Chunking(300, 150)
    assert Chunking.from_seconds(2, 0, 10) == Chunking(200, 200)
    assert Chunking.from_seconds(1, 0.5, 20) == Chunking(50, 25)


@pytest.mark.parametrize("seconds, overlap, message", [
    (3, 3, r"--chunk-overlap \(3 s\) must be smaller than --chunk-seconds \(3 s\)"),
    (3, 4, "must be smaller than --chunk-seconds"),
    (0, 0, "--chunk-seconds must be positive"),
    (-1, 0, "--chunk-seconds must be positive"),
    (3, -0.5, "--chunk-overlap must be 0 or more"),
    (0.004, 0, "make the chunk longer"),  # 0 frames at 10 ms
    (1, 0.999, "make the chunk longer or the overlap shorter"),  # chunks 0 frames apart
])
def test_chunking_errors_name_the_option(seconds, overlap, message):
    with pytest.raises(ValueError, match=message):
        Chunking.from_seconds(seconds, overlap, 10)


@pytest.mark.parametrize("frames, step", [(0, 1), (4, 0), (4, 5)])
def test_bad_chunking(frames, step):
    with pytest.raises(ValueError, match="chunk"):
        Chunking(frames, step)


# --------------------------------------------------------------------------- batching and averaging


def test_length_batches_keep_padding_within_the_budget():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 300, 200)
    batches = list(length_batches(lengths, 1000))
    assert sorted(i for batch in batches for i in batch) == list(range(200))
    padded = [len(batch) * max(lengths[batch]) for batch in batches]
    assert all(p <= 1000 for p in padded)
    order = [lengths[i] for batch in batches for i in batch]
    assert order == sorted(order, reverse=True)  # longest first: little padding
    assert list(length_batches(np.array([5000, 10]), 1000)) == [[0], [1]]  # too long alone: a batch of its own


def test_average_chunks_is_the_mean_of_unit_vectors():
    rng = np.random.default_rng(1)
    chunks = rng.normal(size=(7, 5)).astype(np.float32)
    owners = np.array([0, 0, 0, 2, 1, 1, 2])
    got = average_chunks(chunks, owners, 3)
    for utt in range(3):
        rows = chunks[owners == utt]
        expected = np.mean([row / np.linalg.norm(row) for row in rows], axis=0)
        np.testing.assert_allclose(got[utt], expected, atol=1e-6)
    with pytest.raises(ValueError, match="no chunk"):
        average_chunks(chunks, owners, 4)


# --------------------------------------------------------------------------- extraction with the tiny model


def manual_chunk_average(model, features: np.ndarray, chunking: Chunking) -> np.ndarray:
    """The utterance embedding by a plain loop: each chunk embedded alone, unit length, averaged."""
    vectors = []
    with torch.no_grad():
        for start, end in chunking.bounds(len(features)):
            chunk = torch.from_numpy(features[start:end])[None]
            vector = model.embed(chunk, torch.tensor([end - start])).numpy()[0]
            vectors.append(vector / np.linalg.norm(vector))
    return np.mean(vectors, axis=0)


def test_chunked_embeddings_equal_a_loop_over_chunks(trained, long_dir, chunked):
    loaded = load_trained(trained)
    model, store = loaded.embedder, feature_store_for(loaded, long_dir)
    chunking = Chunking(50, 25)
    ids, matrix = load_embeddings(chunked / "xvector.scp")
    assert ids == store.keys
    assert sum(len(chunking.bounds(store.num_frames(u))) for u in ids) > 3 * len(ids)  # many chunks each
    for utt, row in zip(ids, matrix):
        np.testing.assert_allclose(row, manual_chunk_average(model, store[utt], chunking), atol=1e-5, err_msg=utt)


def test_short_utterances_are_embedded_whole(trained, long_dir, chunked):
    loaded = load_trained(trained)
    model, store = loaded.embedder, feature_store_for(loaded, long_dir)
    embeddings = dict(zip(*load_embeddings(chunked / "xvector.scp")))
    with torch.no_grad():
        for utt in ("spk0-short", "spk1-onechunk", "spk2-tiny"):
            feats = torch.from_numpy(store[utt])[None]
            whole = model.embed(feats, torch.tensor([feats.shape[1]])).numpy()[0]
            np.testing.assert_allclose(embeddings[utt], whole / np.linalg.norm(whole), atol=1e-5, err_msg=utt)


def test_chunk_average_differs_from_the_whole_utterance(trained, long_dir, chunked):
    loaded = load_trained(trained)
    model, store = loaded.embedder, feature_store_for(loaded, long_dir)
    whole = embed_store(model, store, store.keys)
    chunk_means = dict(zip(*load_embeddings(chunked / "xvector.scp")))
    long_utt = max(store.keys, key=store.num_frames)
    row = whole[store.keys.index(long_utt)]
    # so the loop test above tells chunking from whole-utterance embedding
    assert np.max(np.abs(chunk_means[long_utt] - row / np.linalg.norm(row))) > 1e-3


def test_speaker_embeddings_of_chunked_utterances(long_dir, chunked):
    from spk.data import DataDir

    ids, matrix = load_embeddings(chunked / "xvector.scp")
    speakers, means = load_embeddings(chunked / "spk_xvector.scp")
    utt2spk = DataDir(long_dir).utt2spk()
    for speaker, mean in zip(speakers, means):
        rows = [row / np.linalg.norm(row) for utt, row in zip(ids, matrix) if utt2spk[utt] == speaker]
        np.testing.assert_allclose(mean, np.mean(rows, axis=0), atol=1e-6)


@pytest.fixture
def jobs_for_any_speech(monkeypatch):
    """Start the asked --nj jobs even for the few seconds of speech of these tests."""
    monkeypatch.setattr(embed_module, "SPEECH_SECONDS_PER_JOB", 0.1)


def test_too_little_speech_is_embedded_in_one_process(tmp_path, trained, long_dir, caplog):
    with caplog.at_level(logging.INFO, logger="spk"):
        extract_embeddings(trained, long_dir, tmp_path / "out", nj=3)
    assert "1 job(s), not 3" in caplog.text
    assert "job(s) through" not in caplog.text


def test_parallel_jobs_give_the_same_embeddings(tmp_path, trained, long_dir, caplog, jobs_for_any_speech):
    extract_embeddings(trained, long_dir, tmp_path / "nj1")
    with caplog.at_level(logging.INFO, logger="spk"):
        extract_embeddings(trained, long_dir, tmp_path / "nj3", nj=3)
    assert "3 job(s) through" in caplog.text  # really ran job processes
    assert_same_embeddings(tmp_path / "nj1", tmp_path / "nj3")


def test_embed_without_final_model_in_jobs(tmp_path, trained, long_dir):
    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "config.yaml").write_text((trained / "config.yaml").read_text())
    with pytest.raises(TrainedModelError, match="train the model first"):
        extract_embeddings(exp, long_dir, tmp_path / "out", nj=2)


# --------------------------------------------------------------------------- the command line


def test_embed_command_with_chunks_and_jobs(tmp_path, trained, long_dir, chunked, jobs_for_any_speech):
    """Two sets in one command (the model loaded once), each in 2 jobs with their logs."""
    from spk.cli import main

    out, again = tmp_path / "cli", tmp_path / "again"
    result = CliRunner().invoke(main, ["embed", "--exp-dir", str(trained), "--data-dir", str(long_dir),
                                       "--out-dir", str(out), "--data-dir", str(long_dir), "--out-dir", str(again),
                                       "--chunk-seconds", str(CHUNK_SECONDS),
                                       "--chunk-overlap", str(CHUNK_OVERLAP), "--nj", "2"])
    assert result.exit_code == 0, result.output
    assert_same_embeddings(chunked, out)
    assert_same_embeddings(chunked, again)
    assert "# ended (code 0)" in (out / "log" / f"embed_{long_dir.name}.2.log").read_text()


@pytest.mark.parametrize("options, exit_code, message", [
    (["--chunk-overlap", "1"], 2, "--chunk-overlap needs --chunk-seconds"),
    (["--chunk-seconds", "1", "--chunk-overlap", "1.5"], 1, "must be smaller than --chunk-seconds"),
    (["--chunk-seconds", "0"], 1, "--chunk-seconds must be positive"),
    (["--nj", "0"], 2, "--nj"),
    (["--data-dir", "."], 2, "give one --out-dir per --data-dir (2 data dirs, 1 out dirs)"),
    (["--cmd", "qsub -q all"], 2, "starts with a backend"),
])
def test_embed_command_rejects_bad_options(tmp_path, trained, long_dir, options, exit_code, message):
    from spk.cli import main

    result = CliRunner().invoke(main, ["embed", "--exp-dir", str(trained), "--data-dir", str(long_dir),
                                       "--out-dir", str(tmp_path / "out"), *options])
    assert result.exit_code == exit_code, result.output
    assert message in result.output
    assert not (tmp_path / "out").exists()
