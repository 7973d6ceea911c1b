"""The one error every reader and writer raises for a bad file."""

from __future__ import annotations

from pathlib import Path


class FormatError(ValueError):
    """A file that cannot be read or written as asked.

    The message is one sentence that names the file and the problem, e.g.
    ``"TS_01.mrc.mdoc: no [ZValue = …] sections; is this a tilt-series mdoc?"``.

    Parameters
    ----------
    path
        The file concerned.
    problem
        What is wrong, as a sentence fragment without the path.
    """

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")
