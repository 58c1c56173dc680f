"""Parallel steps as job arrays (spk/jobs): the local backend with real job processes, done markers, reruns."""

from __future__ import annotations

import logging

import kaldiio
import numpy as np
import pytest

from spk.data import read_kv
from spk.features import FeatureConfig
from spk.jobs import JobCommandError, JobsFailed, ParallelStep, parse_job_command, run_step
from spk.jobs.tasks import UnknownTask
from spk.make_features import FeatureExtractionError, make_features
from tests.test_features import chirp_int16, make_data_dir

CONFIG = FeatureConfig(num_mel_bins=23)


def test_job_commands():
    assert parse_job_command(None).is_local() and parse_job_command("local").text == "local"
    slurm = parse_job_command("slurm --partition=gpu --gpus=1 --mem 16G")
    assert slurm.backend == "slurm" and slurm.options == ("--partition=gpu", "--gpus=1", "--mem", "16G")
    with pytest.raises(JobCommandError, match="starts with a backend"):
        parse_job_command("run.pl")
    with pytest.raises(JobCommandError, match="takes no options"):
        parse_job_command("local --mem 4G")


def test_a_spec_names_only_registered_tasks(tmp_path):
    with pytest.raises(UnknownTask, match="os.system"):
        ParallelStep("x", "os.system", {}, 1, tmp_path, tmp_path)


@pytest.fixture
def nine_utts(tmp_path):
    return make_data_dir(tmp_path, {f"spk{i % 3}-utt{i}": chirp_int16(0.3, seed=i) for i in range(9)})


def test_a_failed_job_fails_the_step_and_the_rerun_runs_only_it(tmp_path, nine_utts, caplog):
    """Three job processes; the audio of job 2's part is broken, then fixed."""
    wavs = read_kv(nine_utts / "wav.scp")
    second_part = sorted(read_kv(nine_utts / "utt2spk"))[3:6]  # split3/2: contiguous sorted utterances
    saved = {utt: open(wavs[utt], "rb").read() for utt in second_part}
    for utt in second_part:
        open(wavs[utt], "wb").write(b"not audio")
    with pytest.raises(FeatureExtractionError) as error:
        make_features(nine_utts, CONFIG, tmp_path / "fbank", nj=3, log_dir=tmp_path / "log")
    message = str(error.value)
    assert "6 of 9" in message and f"job 2: see {tmp_path / 'log' / 'make_fbank_set.2.log'}" in message
    assert "its last lines:" in message and "no features for" in message
    assert "job 1" not in message and "job 3" not in message
    log = (tmp_path / "log" / "make_fbank_set.2.log").read_text()
    assert "no features for" in log and "# ended (code 0)" in log  # a job process, with Kaldi's log footer
    assert not (nine_utts / "feats.scp").exists()

    for utt, data in saved.items():
        open(wavs[utt], "wb").write(data)
    with caplog.at_level(logging.INFO, logger="spk"):
        assert make_features(nine_utts, CONFIG, tmp_path / "fbank", nj=3, log_dir=tmp_path / "log")["done"] == 9
    assert "2 of 3 jobs already done; running job(s) 2" in caplog.text

    serial = make_data_dir(tmp_path / "serial", {f"spk{i % 3}-utt{i}": chirp_int16(0.3, seed=i) for i in range(9)})
    make_features(serial, CONFIG, tmp_path / "fbank_serial")
    together = kaldiio.load_scp(str(nine_utts / "feats.scp"))
    for utt, matrix in kaldiio.load_scp(str(serial / "feats.scp")).items():
        np.testing.assert_array_equal(together[utt], matrix)  # the same values whatever the number of jobs


def test_a_crashing_job_reports_its_log_and_last_lines(tmp_path):
    step = ParallelStep("make_fbank_gone", "features",
                        {"parts": [str(tmp_path / "no_such_dir")] * 2, "config": CONFIG.to_dict(),
                         "prefix": str(tmp_path / "raw"), "compress": False, "lengths_only": False},
                        num_jobs=2, work_dir=tmp_path, log_dir=tmp_path / "log")
    with pytest.raises(JobsFailed) as error:
        run_step(step, parse_job_command("local"))
    message = str(error.value)
    assert "2 of 2 job(s) failed" in message and str(tmp_path / "log" / "make_fbank_gone.1.log") in message
    assert "FileNotFoundError" in message and "# ended (code 1)" in message
    assert not step.is_done(1) and not step.is_done(2)


def test_changed_arguments_make_every_job_stale(tmp_path, nine_utts, caplog):
    make_features(nine_utts, CONFIG, tmp_path / "fbank", nj=2)
    with caplog.at_level(logging.INFO, logger="spk"):
        make_features(nine_utts, FeatureConfig(num_mel_bins=24), tmp_path / "fbank", nj=2)
    assert "already done" not in caplog.text
    assert len(next(iter(kaldiio.load_scp(str(nine_utts / "feats.scp")).values()))[0]) == 24
    archives = {path.name.split(".")[1] for path in (tmp_path / "fbank").glob("raw_fbank_set.*.ark")}
    assert len(archives) == 1  # the first run's archives went once nothing pointed to them
