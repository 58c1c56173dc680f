"""Shared test set-up.

The suite runs in two pytest-xdist workers (``-n 2`` in pyproject.toml), one per core.
Every test process and the processes they start use one torch/OpenMP thread: the test
models are tiny, and more threads than cores make every process wait for the others.
"""

import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

os.environ["OMP_NUM_THREADS"] = "1"  # inherited by every subprocess a test starts
TINY_RECIPE_GROUP = "tiny_recipe"
SLURM_GROUP = "slurm"


def pytest_itemcollected(item):
    """Tests of the shared tiny recipe (the ``product`` fixture) run in one worker, which runs that recipe once;
    so do the tests on the local Slurm (the ``slurm`` fixture), which starts it once."""
    fixtures = getattr(item, "fixturenames", ())
    if "product" in fixtures:
        item.add_marker(pytest.mark.xdist_group(TINY_RECIPE_GROUP))
    elif "slurm" in fixtures:
        item.add_marker(pytest.mark.xdist_group(SLURM_GROUP))


def pytest_sessionstart(session):
    """In CI, start installing Chromium for the browser test at once, in the background: the test runs in
    the tiny recipe's worker, the longest, and would otherwise wait there for the download. The test's own
    install call waits for this one (one apt-get at a time, by a lock)."""
    if (os.environ.get("CI") and hasattr(os, "geteuid") and os.geteuid() == 0
            and not hasattr(session.config, "workerinput") and not shutil.which("chromedriver")):
        log = open(os.path.join(tempfile.gettempdir(), "spk-chromium-install.log"), "ab")
        subprocess.Popen(["bash", str(Path(__file__).resolve().parents[1] / "tools" / "chromium_local.sh"),
                          "install"], stdout=log, stderr=log, start_new_session=True)


def pytest_collection_modifyitems(config, items):
    """``test_recipe_mini.py`` reruns stages of the shared tiny recipe: it runs after the other tests of it."""
    items.sort(key=lambda item: item.module.__name__.endswith("test_recipe_mini"))


@pytest.fixture(autouse=True)
def restore_spk_loggers():
    """CLI commands point the spk/local loggers at the stderr of the moment; undo that after each test."""
    saved = {name: (logging.getLogger(name).handlers[:], logging.getLogger(name).propagate,
                    logging.getLogger(name).level) for name in ("spk", "local")}
    yield
    for name, (handlers, propagate, level) in saved.items():
        logger = logging.getLogger(name)
        logger.handlers[:] = handlers
        logger.propagate = propagate
        logger.setLevel(level)


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """Tiny test models run far faster on one thread than on several on a small machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def slurm():
    """The one-node Slurm of tools/slurm_local.sh, started (installed as root) for the session and stopped
    after it; one started by hand is used and left running. Tests skip where it cannot be started, except
    in CI (CI=true), where they fail: CI must run them."""
    from tests.slurm_cluster import SlurmUnavailable, acquire_cluster, release_cluster

    try:
        cluster, unavailable = acquire_cluster(), None
    except SlurmUnavailable as e:
        unavailable = str(e)
    if unavailable is not None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI must run the Slurm tests: {unavailable}", pytrace=False)
        pytest.skip(unavailable)
    yield cluster
    release_cluster(cluster)


@pytest.fixture(scope="session")
def product(tmp_path_factory):
    """The tiny model the mini recipe trains for the product tests (API, CLI), once per session."""
    from tests.product_model import trained_recipe

    return trained_recipe(tmp_path_factory)


@pytest.fixture(scope="module")
def model(product):
    """The product model loaded through the Python API."""
    from spk.api import SpeakerModel

    return SpeakerModel.load(product.exp)
