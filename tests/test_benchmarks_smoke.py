"""benchmarks/train_memory.py and its data generator (benchmarks/scale_data.py), without the `spk train` runs.

The full benchmark starts `spk train` (seconds of start-up per run), so the suite
checks the parts it relies on: the generated sets are valid data dirs whose copies
point at the same ark offsets and whose utt2num_frames are what the feature code
computes from the audio; the chunk rate gives the asked number of batches as the
real sampler counts them; the process-tree sampler sees a forked child's memory.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import kaldiio
import pytest

from spk.audio import AudioReader
from spk.data import read_segments, read_utt2num_frames, read_utt2spk, read_wav_scp, validate_data_dir
from spk.feature_store import FeatureStore
from spk.features import FeatureConfig, compute_features
from spk.train.dataset import ChunkSampler

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import scale_data  # noqa: E402
import train_memory  # noqa: E402

DIM = 20
HOURS = [0.02, 0.05]


@pytest.fixture(scope="module")
def sets(tmp_path_factory) -> dict:
    return scale_data.training_sets(tmp_path_factory.mktemp("scale"), HOURS, DIM, audio=True, features=True)


def test_feature_sets_repeat_the_material_at_the_same_offsets(sets):
    small, large = sets[("features", 0.02)], sets[("features", 0.05)]
    for path, hours in ((small, 0.02), (large, 0.05)):
        validate_data_dir(path, need_feats=True, need_cmvn=True)
        frames = read_utt2num_frames(path / "utt2num_frames")
        assert hours * 360_000 <= sum(frames.values()) < hours * 360_000 + 1001
    feats = {line.split()[0]: line.split()[1] for line in (large / "feats.scp").read_text().splitlines()}
    copies = [utt for utt in feats if utt.startswith("c001-")]
    assert copies and feats[copies[0]] == feats["c000-" + copies[0][5:]]  # the same ark offset
    assert read_utt2spk(large / "utt2spk")[copies[0]].startswith("c001-spk")  # copies are new speakers
    matrix = kaldiio.load_mat(feats[copies[0]])
    assert matrix.shape == (read_utt2num_frames(large / "utt2num_frames")[copies[0]], DIM)
    assert (small / "ready.json").is_file() and scale_data.feature_set(small.parent, 0.02) == small  # reused


def test_audio_sets_count_frames_as_the_feature_code(sets):
    path = sets[("audio", 0.05)]
    validate_data_dir(path)
    frames = read_utt2num_frames(path / "utt2num_frames")
    reader = AudioReader(read_wav_scp(path / "wav.scp"), read_segments(path / "segments"), target_rate=16000)
    config = FeatureConfig(kind="fbank", num_mel_bins=80)
    for utt in sorted(frames)[:3] + sorted(frames)[-2:]:
        assert len(compute_features(reader.read(utt), config)) == frames[utt]
    assert sorted(set(read_segments(path / "segments")[u].recording for u in frames)) == \
        sorted(read_wav_scp(path / "wav.scp"))


@pytest.mark.parametrize("batches", [6, 13, 40])
def test_chunk_rate_gives_the_asked_batches(sets, batches):
    path = sets[("features", 0.05)]
    frames = read_utt2num_frames(path / "utt2num_frames")
    rate = train_memory.chunks_per_second_for(frames, batches, batch_size=4)
    store = FeatureStore(str(path / "feats.scp"), FeatureConfig(kind="fbank", num_mel_bins=DIM), preload=False,
                         num_frames=frames)
    labels = {utt: 0 for utt in frames}
    sampler = ChunkSampler(store, labels, batch_size=4, chunk_frames=(200, 300), chunks_per_second=rate)
    assert sampler.num_batches() == batches
    with pytest.raises(SystemExit, match="at least"):
        train_memory.chunks_per_second_for(frames, 1, batch_size=4)


def test_tree_memory_sums_the_trainer_and_its_children():
    child = ("import os, time\nblock = b'x' * (60 * 2**20)\n"
             "if os.fork() == 0:\n    more = b'y' * (60 * 2**20); time.sleep(1.0); os._exit(0)\n"
             "time.sleep(1.0); os.wait()\n")
    process = subprocess.Popen([sys.executable, "-c", child])
    with train_memory.TreeMemory(process.pid) as memory:
        process.wait()
    assert memory.max_processes == 2
    assert memory.peak_rss > 120 * 2**20 and memory.trainer_hwm > 60 * 2**20
