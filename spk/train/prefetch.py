"""Prepare the next batches in a background thread while the current one trains.

Cutting and augmenting a batch is numpy, soundfile, scipy FFT and
kaldi-native-fbank work, which releases the GIL for its heavy parts, while a
training step is torch work, which releases it too; a thread overlaps the two
without copying the training data into another process.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")

_DONE = object()


class _Failure:
    def __init__(self, error: BaseException):
        self.error = error


class Prefetcher(Generic[T]):
    """Iterate over ``iterable`` in a daemon thread, keeping up to ``depth`` items ready.

    Items come out in order; an exception raised by ``iterable`` is raised again
    by ``__next__``. Use as a context manager (or call :meth:`close`) so that the
    thread stops when the consumer stops early.
    """

    def __init__(self, iterable: Iterable[T], depth: int = 2, name: str = "prefetch"):
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._finished = False
        self._thread = threading.Thread(target=self._produce, args=(iter(iterable),), name=name, daemon=True)
        self._thread.start()

    def _produce(self, iterator: Iterator[T]) -> None:
        try:
            for item in iterator:
                if not self._put(item):
                    return
        except BaseException as error:  # noqa: BLE001 - handed to the consumer, which raises it
            self._put(_Failure(error))
            return
        finally:
            close = getattr(iterator, "close", None)
            if close is not None and self._stop.is_set():
                close()
        self._put(_DONE)

    def _put(self, item) -> bool:
        """Queue ``item``, waiting for room; False when the consumer has closed."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> "Prefetcher[T]":
        return self

    def __next__(self) -> T:
        if self._finished:
            raise StopIteration
        item = self._queue.get()
        if item is _DONE:
            self._finished = True
            raise StopIteration
        if isinstance(item, _Failure):
            self._finished = True
            raise item.error
        return item

    def close(self) -> None:
        """Stop the thread (it finishes the item in hand) and drop what it had prepared."""
        self._finished = True
        self._stop.set()
        self._thread.join()

    def __enter__(self) -> "Prefetcher[T]":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

