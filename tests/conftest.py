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
