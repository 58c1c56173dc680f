"""Tests for spk.threads: the cgroup quota on cgroup trees written to tmp_path, the rules' order, torch's count."""

import logging
import os

import pytest
import torch

from spk.threads import (
    ENV_VAR,
    ThreadConfigError,
    available_cores,
    cgroup_cpu_quota,
    choose_thread_count,
    configure_torch_threads,
)


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def self_cgroup(tmp_path):
    """A /proc/self/cgroup that puts the process at the top of every hierarchy (as in a container)."""
    return write(tmp_path / "proc_self_cgroup", "0::/\n")


@pytest.fixture
def torch_threads():
    """Restore torch's thread count after a test that changes it."""
    before = torch.get_num_threads()
    yield before
    torch.set_num_threads(before)


# --- the cgroup CPU quota -------------------------------------------------------------------------


def test_v2_quota_is_quota_over_period(tmp_path, self_cgroup):
    write(tmp_path / "cg" / "cpu.max", "150000 100000\n")
    assert cgroup_cpu_quota(tmp_path / "cg", self_cgroup) == 1.5


def test_v2_max_is_no_quota(tmp_path, self_cgroup):
    write(tmp_path / "cg" / "cpu.max", "max 100000\n")
    assert cgroup_cpu_quota(tmp_path / "cg", self_cgroup) is None


def test_no_cgroup_files_is_no_quota(tmp_path, self_cgroup):
    (tmp_path / "cg").mkdir()
    assert cgroup_cpu_quota(tmp_path / "cg", self_cgroup) is None
    assert cgroup_cpu_quota(tmp_path / "cg", tmp_path / "no_such_file") is None


def test_v2_own_cgroup_and_its_ancestors_smallest_wins(tmp_path):
    root = tmp_path / "cg"
    write(root / "cpu.max", "max 100000\n")
    write(root / "user.slice" / "cpu.max", "300000 100000\n")
    write(root / "user.slice" / "job.scope" / "cpu.max", "max 100000\n")
    write(root / "other.slice" / "cpu.max", "50000 100000\n")  # not this process's: ignored
    proc = write(tmp_path / "proc_self_cgroup", "0::/user.slice/job.scope\n")
    assert cgroup_cpu_quota(root, proc) == 3.0


def test_v1_quota_and_no_quota(tmp_path):
    root = tmp_path / "cg"
    proc = write(tmp_path / "proc_self_cgroup", "4:memory:/x\n2:cpu,cpuacct:/docker/abc\n1:name=systemd:/\n")
    write(root / "cpu,cpuacct" / "cpu.cfs_quota_us", "-1\n")
    write(root / "cpu,cpuacct" / "cpu.cfs_period_us", "100000\n")
    assert cgroup_cpu_quota(root, proc) is None
    # the container's own cgroup is the top of its mount: /docker/abc does not exist under it
    write(root / "cpu,cpuacct" / "cpu.cfs_quota_us", "250000\n")
    assert cgroup_cpu_quota(root, proc) == 2.5


@pytest.mark.parametrize("layout, text", [
    ("v2", "lots 100000\n"), ("v2", "200000\n"), ("v2", "100000 0\n"), ("v1", "two\n"),
])
def test_bad_cgroup_file_names_it(tmp_path, self_cgroup, layout, text):
    root = tmp_path / "cg"
    if layout == "v2":
        bad = write(root / "cpu.max", text)
    else:
        bad = write(root / "cpu" / "cpu.cfs_quota_us", text)
        write(root / "cpu" / "cpu.cfs_period_us", "100000\n")
    with pytest.raises(ThreadConfigError, match=str(bad)) as error:
        cgroup_cpu_quota(root, self_cgroup)
    assert ENV_VAR in str(error.value)


def test_cores_are_affinity_capped_by_ceil_of_quota(tmp_path, self_cgroup):
    affinity = len(os.sched_getaffinity(0))
    root = tmp_path / "cg"
    write(root / "cpu.max", "max 100000\n")
    assert available_cores(root, self_cgroup).cores == affinity
    write(root / "cpu.max", "10000 100000\n")  # a tenth of a CPU still gets one thread
    count = available_cores(root, self_cgroup)
    assert (count.cores, count.affinity, count.quota) == (1, affinity, 0.1)
    write(root / "cpu.max", f"{100000 * (affinity + 7)} 100000\n")  # a quota above the affinity: no cap
    assert available_cores(root, self_cgroup).cores == affinity


# --- which rule decides ------------------------------------------------------------------------


def test_requested_wins_over_environment():
    assert choose_thread_count(3, {ENV_VAR: "5", "OMP_NUM_THREADS": "1"}) == (3, "--threads")


def test_spk_variable_then_omp_variable():
    assert choose_thread_count(0, {ENV_VAR: "5", "OMP_NUM_THREADS": "1"}) == (5, ENV_VAR)
    assert choose_thread_count(0, {"OMP_NUM_THREADS": "2,1"}) == (2, "OMP_NUM_THREADS")


def test_without_settings_the_available_cores():
    threads, reason = choose_thread_count(0, {ENV_VAR: "", "OMP_NUM_THREADS": " "})
    assert threads == available_cores().cores
    assert "core(s) this process may use" in reason


@pytest.mark.parametrize("value", ["0", "-2", "four", "1.5"])
def test_bad_environment_value_is_an_error_naming_the_variable(value):
    with pytest.raises(ThreadConfigError, match=f"{ENV_VAR}='{value}'"):
        choose_thread_count(0, {ENV_VAR: value})


def test_negative_request_is_an_error():
    with pytest.raises(ThreadConfigError, match="--threads"):
        choose_thread_count(-1, {})


def test_configure_sets_torch_and_logs(torch_threads, monkeypatch, caplog):
    target = 2 if torch_threads != 2 else 3
    monkeypatch.setenv(ENV_VAR, str(target))
    with caplog.at_level(logging.INFO, logger="spk.threads"):
        assert configure_torch_threads(0, purpose="testing") == target
    assert torch.get_num_threads() == target
    assert f"testing: {target} torch thread(s) ({ENV_VAR})" in caplog.text
    assert configure_torch_threads(1, purpose="testing") == 1 and torch.get_num_threads() == 1
