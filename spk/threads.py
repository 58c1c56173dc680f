"""How many torch intra-op threads a process uses, and why (the log says which rule decided).

The first of these that is set decides:

1. an explicit request (``--threads N`` of ``spk train``);
2. the environment variable ``SPK_NUM_THREADS``;
3. ``OMP_NUM_THREADS`` (torch's own setting; ``torchrun`` sets it to 1 for several processes);
4. ``SLURM_CPUS_PER_TASK``, in a Slurm job that asked for ``--cpus-per-task``;
5. the CPU cores this process may use: its CPU affinity, capped by the cgroup CPU quota of a
   container or a systemd slice (cgroup v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``/``cpu.cfs_period_us``).

More threads than cores make every thread wait for the others: under contention a batch took
10x longer with torch's default, which counts the machine's cores, not the ones granted.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

ENV_VAR = "SPK_NUM_THREADS"
CGROUP_ROOT = Path("/sys/fs/cgroup")
SELF_CGROUP = Path("/proc/self/cgroup")
_V1_CPU_DIRS = ("cpu", "cpu,cpuacct", "cpuacct,cpu")


class ThreadConfigError(ValueError):
    """A thread count that cannot be used: a bad option, environment variable or cgroup file."""


@dataclass(frozen=True)
class CoreCount:
    """The cores a process may use, and what limited them (for the log)."""

    cores: int
    affinity: int
    quota: float | None  # CPUs' worth of time per period granted by the cgroup; None: no quota

    def describe(self) -> str:
        quota = "no cgroup CPU quota" if self.quota is None else f"cgroup CPU quota {self.quota:g} CPUs"
        return f"{self.cores} core(s) this process may use: affinity {self.affinity} CPU(s), {quota}"


def cgroup_cpu_quota(root: Path = CGROUP_ROOT, self_cgroup: Path = SELF_CGROUP) -> float | None:
    """CPUs' worth of time the cgroup CPU quota grants this process (quota / period), or None without one.

    Reads cgroup v2 ``cpu.max`` ("QUOTA PERIOD", QUOTA "max" for none) and cgroup v1
    ``cpu/cpu.cfs_quota_us`` and ``cpu.cfs_period_us`` (quota -1 for none) under ``root``,
    in the process's own cgroup (from ``self_cgroup``, i.e. /proc/self/cgroup) and every
    ancestor up to ``root``; the smallest quota found applies. Raises
    :class:`ThreadConfigError` naming the file when one holds something else.
    """
    root = Path(root)
    v2_path, v1_path = _own_cgroup_paths(Path(self_cgroup))
    quotas = [_read_v2(d / "cpu.max") for d in _dirs_up_to(root, v2_path) if (d / "cpu.max").is_file()]
    for name in _V1_CPU_DIRS:
        controller = root / name
        if controller.is_dir():
            quotas += [_read_v1(d) for d in _dirs_up_to(controller, v1_path)
                       if (d / "cpu.cfs_quota_us").is_file()]
            break
    limits = [q for q in quotas if q is not None]
    return min(limits) if limits else None


def available_cores(root: Path = CGROUP_ROOT, self_cgroup: Path = SELF_CGROUP) -> CoreCount:
    """The CPU cores this process may use: its affinity, capped by ``ceil`` of the cgroup CPU quota (at least 1)."""
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = cgroup_cpu_quota(root, self_cgroup)
    cores = affinity if quota is None else max(1, min(affinity, math.ceil(quota)))
    return CoreCount(cores, affinity, quota)


def choose_thread_count(requested: int = 0, environ: dict[str, str] | None = None) -> tuple[int, str]:
    """The intra-op thread count and the reason for it, by the rules of this module (requested > 0 wins)."""
    if requested < 0:
        raise ThreadConfigError(f"--threads must be 0 (automatic) or a positive number, not {requested}")
    if requested > 0:
        return requested, "--threads"
    environ = os.environ if environ is None else environ
    for name in (ENV_VAR, "OMP_NUM_THREADS", "SLURM_CPUS_PER_TASK"):
        value = environ.get(name, "").strip()
        if value:
            return _positive_int(value.split(",")[0] if name == "OMP_NUM_THREADS" else value, name), name
    count = available_cores()
    return count.cores, count.describe()


def configure_torch_threads(requested: int = 0, *, purpose: str) -> int:
    """Set torch's intra-op thread count by :func:`choose_thread_count` and log it; returns the count.

    ``purpose`` names the work in the log line (e.g. "training"). Raises
    :class:`ThreadConfigError` for a bad ``requested``, ``SPK_NUM_THREADS`` or cgroup file.
    """
    import torch  # here, not at the top: the core count alone does not need torch

    threads, reason = choose_thread_count(requested)
    torch.set_num_threads(threads)
    logger.info("%s: %d torch thread(s) (%s)", purpose, threads, reason)
    return threads


def _positive_int(value: str, name: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise ThreadConfigError(f"{name}={value!r} is not a positive whole number of threads; "
                                f"set it to e.g. 4, or unset it to use the cores this process may use")
    return number


def _own_cgroup_paths(self_cgroup: Path) -> tuple[str, str]:
    """This process's cgroup v2 path and v1 ``cpu`` controller path ("/" when unknown)."""
    v2 = v1 = "/"
    try:
        lines = self_cgroup.read_text().splitlines()
    except OSError:
        return v2, v1
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy, controllers, path = parts
        if hierarchy == "0" and controllers == "":
            v2 = path
        elif "cpu" in controllers.split(","):
            v1 = path
    return v2, v1


def _dirs_up_to(root: Path, cgroup_path: str) -> list[Path]:
    """``root/cgroup_path`` and each of its parents down to ``root`` itself (those that exist).

    In a container the process's path (e.g. /docker/<id>) may not exist under its own
    mount of the hierarchy, whose top is then the container's cgroup: ``root`` itself.
    """
    parts = [p for p in cgroup_path.split("/") if p and p not in (".", "..")]
    dirs = [root.joinpath(*parts[:i]) for i in range(len(parts), -1, -1)]
    return [d for d in dirs if d.is_dir()]


def _read_v2(path: Path) -> float | None:
    text = path.read_text().strip()
    fields = text.split()
    try:
        if len(fields) != 2:
            raise ValueError
        quota, period = fields
        return None if quota == "max" else _ratio(float(quota), float(period))
    except ValueError:
        raise ThreadConfigError(f"{path}: expected 'QUOTA PERIOD' (QUOTA a number or 'max'), found {text!r}; "
                                f"set {ENV_VAR} or --threads to choose the thread count instead") from None


def _read_v1(directory: Path) -> float | None:
    quota_path, period_path = directory / "cpu.cfs_quota_us", directory / "cpu.cfs_period_us"
    try:
        quota = int(quota_path.read_text().strip())
        period = int(period_path.read_text().strip())
        return None if quota < 0 else _ratio(quota, period)
    except (OSError, ValueError):
        raise ThreadConfigError(f"{quota_path} and {period_path}: expected whole numbers of microseconds "
                                f"(quota -1 for none); set {ENV_VAR} or --threads to choose the thread count "
                                "instead") from None


def _ratio(quota: float, period: float) -> float:
    if quota <= 0 or period <= 0:
        raise ValueError
    return quota / period
