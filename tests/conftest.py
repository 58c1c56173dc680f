"""Shared test set-up."""

import logging

import pytest


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
def product(tmp_path_factory):
    """The tiny model the mini recipe trains for the product tests (API, CLI), once per session."""
    from tests.product_model import trained_recipe

    return trained_recipe(tmp_path_factory)


@pytest.fixture(scope="module")
def model(product):
    """The product model loaded through the Python API."""
    from spk.api import SpeakerModel

    return SpeakerModel.load(product.exp)
