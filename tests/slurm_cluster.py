"""The one-node Slurm of ``tools/slurm_local.sh`` for the tests (the ``slurm`` fixture in conftest.py).

:func:`acquire_cluster` uses a cluster that already runs or starts one, installing Slurm with apt-get
where that is needed and possible (root); it raises :class:`SlurmUnavailable` with the reason and the
remedy where it cannot. The client commands (``sbatch``, ``squeue``, ``scontrol``) then work from any
process: the script writes the config to /etc/slurm/slurm.conf, the path they read by default.

Several test processes may use the cluster at once (the xdist workers of one session when tests of
more than one xdist group use it, or two sessions). Each registers its pid in the state dir; a cluster
that test processes started is stopped by the last of them to leave, and a cluster started by hand is
never stopped by the tests.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
import subprocess
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "tools" / "slurm_local.sh"
START_TIMEOUT_S = 600  # a first start installs the packages (about 15 s with a near Debian mirror)


class SlurmUnavailable(RuntimeError):
    """The local Slurm cannot run here; the message says why and how to get it."""


@dataclass(frozen=True)
class SlurmCluster:
    """A running one-node Slurm: its node, partition and state dir; ``managed`` when test processes started
    it (the last one to release it stops it), False when it was started by hand."""

    node: str
    partition: str
    state_dir: Path
    managed: bool


def _run(action: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), action], capture_output=True, text=True, timeout=timeout)


def state_dir() -> Path:
    """The state dir the script uses (``$SPK_SLURM_DIR``, default /tmp/spk-slurm)."""
    return Path(os.environ.get("SPK_SLURM_DIR", "/tmp/spk-slurm"))


def cluster_running() -> bool:
    """True when the cluster of ``tools/slurm_local.sh`` runs and answers."""
    return _run("status", 60).returncode == 0


def _cluster(managed: bool) -> SlurmCluster:
    return SlurmCluster(node=socket.gethostname().split(".")[0], partition="debug", state_dir=state_dir(),
                        managed=managed)


@contextmanager
def _tests_lock():
    """An exclusive lock over the test processes' bookkeeping in the state dir (None where it is not ours)."""
    try:
        state_dir().mkdir(parents=True, exist_ok=True)
        handle = open(state_dir() / "tests.lock", "a")
    except OSError:  # a state dir of another user (a cluster started by root, tests as a user)
        yield None
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield handle


def _users_dir() -> Path:
    return state_dir() / "test-users"


def _live_users() -> list[Path]:
    """Registered test processes that still run (the files of dead ones are removed)."""
    live = []
    for entry in _users_dir().glob("*"):
        try:
            os.kill(int(entry.name), 0)
            live.append(entry)
        except (ValueError, ProcessLookupError):
            entry.unlink(missing_ok=True)
        except PermissionError:  # alive, another user's
            live.append(entry)
    return live


def acquire_cluster() -> SlurmCluster:
    """The running local Slurm, started (and installed, as root) when it does not run yet; call
    :func:`release_cluster` with it when done.

    Raises SlurmUnavailable with the reason and the remedy where it cannot be started.
    """
    if shutil.which("bash") is None:
        raise SlurmUnavailable("Slurm tests need bash to run tools/slurm_local.sh")
    with _tests_lock() as lock:
        managed_marker = state_dir() / "started-by-tests"
        if cluster_running():
            if lock is None or not managed_marker.exists():
                return _cluster(managed=False)
        else:
            _start()
            if lock is None:
                return _cluster(managed=False)
            managed_marker.touch()
        _users_dir().mkdir(exist_ok=True)
        (_users_dir() / str(os.getpid())).touch()
        return _cluster(managed=True)


def release_cluster(cluster: SlurmCluster) -> None:
    """Done with the cluster: the last test process to release a cluster that tests started stops it."""
    if not cluster.managed:
        return
    with _tests_lock() as lock:
        if lock is None:
            return
        (_users_dir() / str(os.getpid())).unlink(missing_ok=True)
        if not _live_users():
            stop_cluster()
            (state_dir() / "started-by-tests").unlink(missing_ok=True)


def _start() -> None:
    if shutil.which("sbatch") is None and os.geteuid() != 0:
        raise SlurmUnavailable(
            "Slurm tests need root to install Slurm (Debian packages slurmctld slurmd slurm-client munge): "
            "run the tests as root, or install those packages and start the test cluster with "
            "'sudo tools/slurm_local.sh start'")
    if shutil.which("sbatch") is None and shutil.which("apt-get") is None:
        raise SlurmUnavailable(
            "Slurm tests need Slurm and munge, and there is no apt-get to install them: install your "
            "distribution's Slurm and munge and start the test cluster with 'tools/slurm_local.sh start'")
    try:
        proc = _run("start", START_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise SlurmUnavailable(f"tools/slurm_local.sh start did not finish in {START_TIMEOUT_S} s "
                               f"(see the logs in {state_dir()}/log)") from None
    tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-8:])
    if proc.returncode == 2:
        raise SlurmUnavailable(f"Slurm tests need root to start the local Slurm: run the tests as root, or "
                               f"start it once with 'sudo tools/slurm_local.sh start' ({tail})")
    if proc.returncode != 0:
        raise SlurmUnavailable(f"Slurm tests: 'tools/slurm_local.sh start' failed (exit {proc.returncode}); "
                               f"run it by hand as root to see why. Its last lines:\n{tail}")


def stop_cluster() -> None:
    """Stop the daemons of the local Slurm (the packages stay installed)."""
    proc = _run("stop", 120)
    if proc.returncode != 0:
        raise RuntimeError(f"tools/slurm_local.sh stop failed (exit {proc.returncode}): "
                           f"{(proc.stdout + proc.stderr).strip()}")
