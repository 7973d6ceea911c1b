"""What a running step sees: its work folder, its logger and progress reporting.

Progress is reported to a process-wide handler that a front-end installs with
:func:`set_progress_handler` (the command line shows it as a progress bar). Without a handler,
for instance inside a worker process, progress is only written to the run log, at every tenth of
the total.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

__all__ = [
    "ProgressEvent",
    "ProgressHandler",
    "ProgressTracker",
    "RunContext",
    "set_progress_handler",
]

T = TypeVar("T")


@dataclass(frozen=True)
class ProgressEvent:
    """One progress update.

    Attributes
    ----------
    run_id : int
        The run reporting progress.
    step : str
        Its step name.
    task : int
        Number of the progress tracker within the run (a step may report several phases).
    description : str
        What is being counted.
    completed, total : int
        Units done and units in all.
    finished : bool
        True for the last event of a tracker.
    """

    run_id: int
    step: str
    task: int
    description: str
    completed: int
    total: int
    finished: bool = False


ProgressHandler = Callable[[ProgressEvent], None]

_handler: ProgressHandler | None = None


def set_progress_handler(handler: ProgressHandler | None) -> ProgressHandler | None:
    """Install the process-wide progress handler and return the previous one.

    Parameters
    ----------
    handler : callable or None
        Called with every :class:`ProgressEvent`; None to remove.

    Returns
    -------
    callable or None
        The handler that was installed before.
    """
    global _handler
    previous, _handler = _handler, handler
    return previous


class ProgressTracker:
    """Counts units of work of one phase of a run. Created by :meth:`RunContext.progress`.

    Call it to advance (``tracker()`` or ``tracker(5)``), or iterate through :meth:`wrap`.
    Use it as a context manager, or call :meth:`close`, to report the end.
    """

    def __init__(
        self, run_id: int, step: str, task: int, total: int, description: str, logger: logging.Logger
    ) -> None:
        if total < 0:
            raise ValueError(f"Progress total must be >= 0, got {total}.")
        self.run_id = run_id
        self.step = step
        self.task = task
        self.total = total
        self.description = description
        self.completed = 0
        self._logger = logger
        self._logged_tenth = -1
        self._closed = False
        self._emit()

    def __call__(self, advance: int = 1) -> None:
        """Add ``advance`` completed units."""
        self.completed = min(self.completed + advance, self.total) if self.total else self.completed + advance
        self._emit()

    def wrap(self, iterable: Iterable[T]) -> Iterator[T]:
        """Yield the items of ``iterable``, advancing by one after each, and close at the end."""
        for item in iterable:
            yield item
            self()
        self.close()

    def close(self) -> None:
        """Report the end of this phase (idempotent)."""
        if not self._closed:
            self._closed = True
            self._emit(finished=True)

    def __enter__(self) -> ProgressTracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _emit(self, finished: bool = False) -> None:
        tenth = (10 * self.completed) // self.total if self.total else 10
        if tenth > self._logged_tenth or (finished and self.completed < self.total):
            self._logged_tenth = tenth
            self._logger.info("progress %s: %d/%d", self.description, self.completed, self.total)
        if _handler is not None:
            event = ProgressEvent(
                self.run_id, self.step, self.task, self.description, self.completed, self.total, finished
            )
            _handler(event)


@dataclass
class RunContext:
    """Handed to a step function as its third argument.

    Attributes
    ----------
    run_id : int
        The id of the run.
    step : str
        The step name.
    work_dir : Path
        The temporary folder the step writes its outputs into; it is moved into the run folder
        only after the function returned.
    run_dir : Path
        The final run folder (do not write outputs there directly).
    logger : logging.Logger
        Writes to the run's ``run.log``.
    """

    run_id: int
    step: str
    work_dir: Path
    run_dir: Path
    logger: logging.Logger
    _tasks: int = 0

    def progress(self, total: int, description: str) -> ProgressTracker:
        """Start reporting progress of a phase of ``total`` units.

        Parameters
        ----------
        total : int
            Number of units (items, files, iterations, ...).
        description : str
            Short text shown next to the progress bar.

        Returns
        -------
        ProgressTracker
            Call it to advance, or iterate with :meth:`ProgressTracker.wrap`.

        Examples
        --------
        >>> for item in ctx.progress(len(items), "processing").wrap(items):  # doctest: +SKIP
        ...     process(item)
        """
        self._tasks += 1
        return ProgressTracker(self.run_id, self.step, self._tasks, total, description, self.logger)
