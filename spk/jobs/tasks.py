"""The job functions a step may run, by name.

A job process looks its function up here and nowhere else: a spec file names a task,
never a module or a function, so a spec cannot make a job run arbitrary code.
Each function is called as ``function(args, job, num_jobs)`` with the spec's plain
``args`` and returns nothing; it writes its outputs itself and raises on failure.
"""

from __future__ import annotations

import importlib
from typing import Callable

TASKS = {
    "features": ("spk.make_features", "features_job"),
    "augment": ("spk.augment.offline", "augment_job"),
    "embed": ("spk.embed", "embed_job"),
    "mini-synthesis": ("local.mini", "synthesis_job"),
    "durations": ("local.corpus", "durations_job"),
}


class UnknownTask(ValueError):
    """A spec names a task that is not in :data:`TASKS`."""


def task_function(name: str) -> Callable[[dict, int, int], None]:
    """The job function registered as ``name``."""
    if name not in TASKS:
        raise UnknownTask(f"unknown job task {name!r}; known: {', '.join(sorted(TASKS))}")
    module, function = TASKS[name]
    return getattr(importlib.import_module(module), function)
