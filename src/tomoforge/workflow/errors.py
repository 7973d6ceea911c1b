"""Exceptions raised by the workflow engine.

Every exception derives from :class:`WorkflowError` and its message is meant to be shown to a
user as it is: one or a few complete sentences that say what went wrong and, where possible,
what to do about it. Front-ends catch :class:`WorkflowError` and print the message without a
traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ParamProblem",
    "ParamsError",
    "PipelineError",
    "ProjectError",
    "ProjectLockedError",
    "SchemaError",
    "StepFailedError",
    "UnknownStepError",
    "WorkflowError",
]


class WorkflowError(Exception):
    """Base class of all errors raised by the workflow engine."""


class ProjectError(WorkflowError):
    """A project folder or its database is missing, unreadable or inconsistent."""


class SchemaError(ProjectError):
    """The project database has a schema version this code cannot handle."""


class ProjectLockedError(ProjectError):
    """Another process holds the write lock of the project."""


class PipelineError(WorkflowError):
    """A pipeline is malformed: a cycle, a dangling reference, a missing or mistyped input."""


class UnknownStepError(WorkflowError):
    """No step of the requested name is registered.

    Parameters
    ----------
    name : str
        The requested step name.
    known : iterable of str
        The registered step names, used to suggest close matches.
    hint : str, optional
        A sentence appended to the message (a front-end names its listing command here).
    """

    def __init__(self, name: str, known: Iterable[str], hint: str = "") -> None:
        self.name = name
        self.suggestions = difflib.get_close_matches(name, sorted(known), n=3, cutoff=0.6)
        message = f"Unknown step '{name}'."
        if self.suggestions:
            message += f" Did you mean '{self.suggestions[0]}'?"
        if hint:
            message += f" {hint}"
        super().__init__(message)


@dataclass(frozen=True)
class ParamProblem:
    """One problem with the parameters of a step.

    Attributes
    ----------
    field : str or None
        The parameter (field) name, or None for a problem that concerns several parameters or
        the inputs (reported by a step's ``validate`` hook).
    message : str
        What is wrong: the violated constraint ("input should be greater than or equal to 1")
        or, for a problem without a field, a complete sentence.
    value : object
        The offending value as given (None when the parameter was not given).
    missing : bool
        True when a required parameter was not given at all.
    """

    field: str | None
    message: str
    value: Any = None
    missing: bool = False

    def sentence(self, label: Callable[[str], str] = str) -> str:
        """Render the problem as one sentence.

        Parameters
        ----------
        label : callable, optional
            Maps a field name to how the user spelled it, e.g. ``n_iterations`` to
            ``--n-iterations`` on the command line.

        Returns
        -------
        str
            The sentence, ending with a period.
        """
        text = self.message.rstrip(".")
        if self.field is None:
            return text[:1].upper() + text[1:] + "."
        name = label(self.field)
        if self.missing:
            return f"Missing value for {name}: {text}."
        return f"Invalid value {self.value!r} for {name}: {text}."


class ParamsError(WorkflowError):
    """The parameters (or the parameter/input combination) of a step are invalid.

    Parameters
    ----------
    step : str
        The step name.
    problems : sequence of ParamProblem
        One entry per problem; the message has one sentence per problem.
    node : str, optional
        The pipeline node the parameters belong to, if any.
    """

    def __init__(self, step: str, problems: Sequence[ParamProblem], node: str | None = None) -> None:
        self.step = step
        self.node = node
        self.problems = tuple(problems)
        super().__init__(self.describe())

    def describe(self, label: Callable[[str], str] = str) -> str:
        """Return the message with field names rendered by ``label``.

        Parameters
        ----------
        label : callable, optional
            Maps a field name to the spelling the user knows (see :meth:`ParamProblem.sentence`).

        Returns
        -------
        str
            One sentence per problem, separated by spaces.
        """
        sentences = " ".join(p.sentence(label) for p in self.problems)
        where = f"node '{self.node}' ({self.step})" if self.node else f"step '{self.step}'"
        if len(self.problems) == 1:
            return sentences
        return f"Invalid parameters for {where}: {sentences}"

    @classmethod
    def from_validation_error(cls, step: str, error: Any, node: str | None = None) -> ParamsError:
        """Convert a pydantic ``ValidationError`` into one sentence per bad field.

        Parameters
        ----------
        step : str
            The step name.
        error : pydantic.ValidationError
            The error raised while validating the parameters model.
        node : str, optional
            The pipeline node name.

        Returns
        -------
        ParamsError
            The converted error.
        """
        problems = []
        for item in error.errors(include_url=False):
            loc = [str(part) for part in item.get("loc", ())]
            field = ".".join(loc) if loc else None
            missing = item.get("type") == "missing"
            message = str(item.get("msg", "invalid value"))
            message = message[:1].lower() + message[1:]
            if field is None:
                problems.append(ParamProblem(None, message))
            else:
                problems.append(ParamProblem(field, message, item.get("input"), missing=missing))
        return cls(step, problems, node=node)


class StepFailedError(WorkflowError):
    """A step raised an exception while running.

    Parameters
    ----------
    step : str
        The step name.
    run_id : int
        The id of the failed run.
    reason : str
        A one-line description of the exception.
    hint : str, optional
        A sentence telling the user where to look (e.g. the log command).
    """

    def __init__(self, step: str, run_id: int, reason: str, hint: str = "") -> None:
        self.step = step
        self.run_id = run_id
        self.reason = reason
        message = f"Step '{step}' (run {run_id}) failed: {reason.rstrip('.')}."
        if hint:
            message += f" {hint}"
        super().__init__(message)
