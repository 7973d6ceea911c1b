"""Executors: where the step functions of a pipeline run.

An executor is anything with ``submit(fn, *args) -> Future``, ``shutdown()`` and an
``in_process`` flag (see :class:`Executor`). The engine submits :func:`.runner.execute_job`
with a picklable :class:`.runner.RunJob`; the returned future yields a :class:`.runner.JobResult`
or raises the step's exception. The process that called :func:`.graph.run_pipeline` alone writes
to the project database; workers only write into the run's work folder and its ``run.log``.

Writing a cluster executor
--------------------------
A batch-system executor (SLURM, ...) implements the same three members:

* ``in_process = False``: the engine then passes only picklable arguments;
* ``submit(fn, *args)`` pickles ``(fn, args)`` into a job file on a filesystem shared with the
  compute nodes (functions pickle by qualified name, so step modules must be importable there),
  submits a job script that runs ``python -c "import pickle,sys; fn, args = pickle.load(...);
  pickle.dump(fn(*args), ...)"`` (writing the exception instead if it raises), creates a
  :class:`concurrent.futures.Future`, and returns it; a background thread polls the scheduler
  or the result files and completes the future with ``set_result``/``set_exception``;
* ``shutdown(wait, cancel_futures)`` waits for (or cancels, e.g. ``scancel``) outstanding jobs
  and stops the polling thread.

Runs whose worker dies without writing a result must complete their future with an exception;
the engine then marks them failed. Runs left ``running`` when the driving process dies are
marked ``interrupted`` the next time the project is opened for writing.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any, Protocol, TypeVar, runtime_checkable

__all__ = ["Executor", "InlineExecutor", "LocalProcessExecutor"]

T = TypeVar("T")


@runtime_checkable
class Executor(Protocol):
    """The interface the engine needs from an executor.

    Attributes
    ----------
    in_process : bool
        True if submitted functions run in the calling process; the engine then also passes
        objects that cannot be pickled (the step itself), and progress reaches the front-end.
    """

    in_process: bool

    def submit(self, fn: Callable[..., T], /, *args: Any) -> Future[T]:
        """Schedule ``fn(*args)`` and return a future for its result."""
        ...

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        """Release resources; optionally wait for or cancel outstanding work."""
        ...


class InlineExecutor:
    """Runs each function immediately in the calling process (one at a time).

    Exceptions are stored in the returned future; ``KeyboardInterrupt`` and ``SystemExit``
    propagate so that the engine can mark the run interrupted.
    """

    in_process = True

    def submit(self, fn: Callable[..., T], /, *args: Any) -> Future[T]:
        """Call ``fn(*args)`` now and return a completed future."""
        future: Future[T] = Future()
        try:
            result = fn(*args)
        except Exception as exc:
            future.set_exception(exc)
        else:
            future.set_result(result)
        return future

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        """Nothing to release."""


class LocalProcessExecutor:
    """Runs functions in a pool of local worker processes.

    Workers are started with the ``spawn`` method by default (safe with threads and with
    libraries that do not survive ``fork``); each worker imports the step module by name, so
    steps must be defined in importable modules (not in ``__main__``).

    Parameters
    ----------
    max_workers : int
        Number of worker processes.
    start_method : {"spawn", "forkserver"}, optional
        The multiprocessing start method.
    """

    in_process = False

    def __init__(self, max_workers: int, start_method: str = "spawn") -> None:
        if max_workers < 1:
            raise ValueError(f"max_workers must be >= 1, got {max_workers}.")
        if start_method not in ("spawn", "forkserver"):
            raise ValueError(f"start_method must be 'spawn' or 'forkserver', not {start_method!r}.")
        self.max_workers = max_workers
        self._pool = ProcessPoolExecutor(max_workers, mp_context=multiprocessing.get_context(start_method))

    def submit(self, fn: Callable[..., T], /, *args: Any) -> Future[T]:
        """Schedule ``fn(*args)`` on a worker process."""
        return self._pool.submit(fn, *args)

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        """Shut the pool down."""
        self._pool.shutdown(wait=wait, cancel_futures=cancel_futures)

    def __enter__(self) -> LocalProcessExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
