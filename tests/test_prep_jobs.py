"""Corpus preparation with its audio headers read by parallel jobs (``spk prepare <corpus> --nj N``).

The jobs are real processes of the local backend (:mod:`spk.jobs`); what they find must be what
one process finds, file for file and message for message.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from local import timit
from local.corpus import audio_duration, audio_durations, durations_work_dir
from spk.cli import main as spk_main
from spk.jobs import JobsFailed
from tests.test_corpus_prep import build_timit, valid_sets, warnings_of, write_audio, write_text


@pytest.fixture(autouse=True)
def jobs_for_any_number_of_files(monkeypatch):
    """Start the asked jobs even for the few files of these tests (a job is worth it for 20,000)."""
    monkeypatch.setattr("local.corpus.FILES_PER_JOB", 1)


def test_few_files_are_read_here(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr("local.corpus.FILES_PER_JOB", 20_000)
    files = [write_audio(tmp_path / f"{n}.wav", 0.1, seed=n) for n in range(3)]
    with caplog.at_level(logging.INFO, logger="local"):
        assert audio_durations(files, nj=4) == [audio_duration(f) for f in files]  # no work_dir needed
    assert "3 file(s): 1 job(s), not 4" in caplog.text
    assert not list(tmp_path.glob(".durations-*"))


@pytest.fixture(scope="module")
def timit_corpus(tmp_path_factory) -> Path:
    return build_timit(tmp_path_factory.mktemp("timit"))


def tree(root: Path) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


def test_timit_with_two_jobs_equals_one_process(timit_corpus, tmp_path, caplog, capsys):
    with caplog.at_level(logging.WARNING):
        timit.prepare(timit_corpus, tmp_path / "one", include_sa=False, seed=0, progress=False)
    one_process = warnings_of(caplog)
    with pytest.raises(SystemExit) as done:
        spk_main(["prepare", "timit", "--corpus-dir", str(timit_corpus), "--data-dir", str(tmp_path / "two"),
                  "--no-include-sa", "--seed", "0", "--nj", "2", "--cmd", "local"])
    err = capsys.readouterr().err
    assert done.value.code == 0, err
    # the same files, byte for byte, and nothing else left (the jobs' work folders are gone)
    valid_sets(tmp_path / "two", {"train", "ident_test", "test"})
    assert tree(tmp_path / "two") == tree(tmp_path / "one")
    assert "durations: 2 job(s) through 'local'" in err
    # the same skips, in the same order (the command logs to stderr: "<date> <time> WARNING [<logger>] <message>")
    warned = [line.split("] ", 1)[1] for line in err.splitlines() if " WARNING [" in line]
    assert warned == one_process.splitlines() and "SX99.WAV" in one_process


def test_durations_by_jobs_equal_audio_duration(tmp_path):
    files = [write_audio(tmp_path / "a.wav", 0.5, 1), write_text(tmp_path / "empty.wav", b""),
             write_text(tmp_path / "text.flac", "not audio\tat all"), tmp_path / "missing.wav",
             write_audio(tmp_path / "b\tc é.flac", 0.25, 2, format="FLAC")]
    expected = [audio_duration(path) for path in files]
    assert expected[0] == (0.5, None) and all(problem for _, problem in expected[1:4])
    assert audio_durations(files, nj=3, work_dir=tmp_path / "work") == expected
    assert list((tmp_path / "work").iterdir()) == []
    assert audio_durations(files, progress=False) == expected
    with pytest.raises(ValueError, match="work_dir"):
        audio_durations(files, nj=2)


def test_a_failed_job_is_the_only_one_run_again(tmp_path, caplog):
    files = [write_audio(tmp_path / f"{index}.wav", 0.1 * (index + 1), index) for index in range(4)]
    work = durations_work_dir(files, tmp_path / "data")
    (work / "durations.2.tmp").mkdir(parents=True)  # job 2 cannot write its results there
    with pytest.raises(JobsFailed, match=r"1 of 2 job\(s\) failed") as failed:
        audio_durations(files, nj=2, work_dir=tmp_path / "data")
    assert "durations.2.log" in str(failed.value) and "IsADirectoryError" in str(failed.value)
    assert (work / "durations.1.done").is_file() and (work / "files.txt").is_file()  # left for the rerun
    (work / "durations.2.tmp").rmdir()
    with caplog.at_level(logging.INFO, logger="spk.jobs"):
        assert audio_durations(files, nj=2, work_dir=tmp_path / "data") == [audio_duration(f) for f in files]
    assert "1 of 2 jobs already done; running job(s) 2" in caplog.text
    assert not work.exists()
