"""Work done ahead in a thread: the next batch is parsed and mapped while this one is written.

Parsing and mapping hold the GIL; SQLite's statements, its commit and the disk's fsync do not.
So one thread that prepares the next batch while the writer runs overlaps the two on a second
core, with no second process and nothing to pickle. The thread shares no mutable state with the
writer: it reads stored messages on its own connection and builds new objects.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")
A = TypeVar("A")


class Ahead(Generic[A, T]):
    """`work(argument)` started in a thread now; `result()` waits for it (or raises its error)."""

    def __init__(self, work: Callable[[A], T], argument: A) -> None:
        self._work = work
        self._argument = argument
        self._value: T | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="hl7-ahead", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._value = self._work(self._argument)
        except BaseException as exc:  # handed to the caller of result()
            self._error = exc

    def result(self) -> T:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]
