"""Rich consoles and the progress display of the command line (imported only when needed)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from rich.console import Console

if TYPE_CHECKING:
    from tomoforge.workflow import ProgressEvent

__all__ = ["progress_display", "stderr", "stdout"]


def stdout() -> Console:
    """The console for normal output."""
    return Console(highlight=False)


def stderr() -> Console:
    """The console for errors and progress."""
    return Console(stderr=True, highlight=False)


@contextlib.contextmanager
def progress_display() -> Iterator[None]:
    """Show the progress reported by steps as rich progress bars while the block runs."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

    from tomoforge.workflow import set_progress_handler

    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=stderr(),
        transient=False,
    )
    tasks: dict[tuple[int, int], TaskID] = {}

    def handle(event: ProgressEvent) -> None:
        key = (event.run_id, event.task)
        if not tasks:
            progress.start()
        if key not in tasks:
            label = f"run {event.run_id} {event.step}: {event.description}"
            tasks[key] = progress.add_task(label, total=event.total or None)
        progress.update(tasks[key], completed=event.completed)
        if event.finished:
            progress.stop_task(tasks[key])

    previous = set_progress_handler(handle)
    try:
        yield
    finally:
        progress.stop()
        set_progress_handler(previous)
