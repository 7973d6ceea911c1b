"""Saving and loading models as JSON files, atomically and with clear errors."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

__all__ = ["ModelFileError", "load_json", "save_json"]

_T = TypeVar("_T", bound=BaseModel)


class ModelFileError(ValueError):
    """A model file is missing, unreadable, not JSON, or does not validate.

    The message is one sentence that starts with the file path, e.g.
    ``"run/ts01.json: field 'tilts.3.tilt_angle_deg': Input should be less than or equal to 90"``
    """

    def __init__(self, path: Path, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"{path}: {problem}")


def save_json(model: BaseModel, path: str | os.PathLike[str], *, indent: int | None = 2) -> Path:
    """Write a model to a JSON file atomically.

    The JSON is written to a temporary file in the same folder, flushed to disk and then moved over
    ``path`` with :func:`os.replace`, so readers see either the old file or the complete new one;
    a failure at any point leaves a previous file at ``path`` untouched.

    Parameters
    ----------
    model
        Any pydantic model.
    path
        Destination file; its folder must exist.
    indent
        JSON indentation (None for a single line).

    Returns
    -------
    pathlib.Path
        The destination path.
    """
    target = Path(path)
    text = model.model_dump_json(indent=indent) + "\n"
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    return target


def load_json(cls: type[_T], path: str | os.PathLike[str]) -> _T:
    """Read and validate a model from a JSON file.

    Parameters
    ----------
    cls
        The model class to validate against.
    path
        The JSON file.

    Returns
    -------
    BaseModel
        An instance of ``cls``.

    Raises
    ------
    ModelFileError
        If the file is missing or unreadable, is not JSON, or does not validate as ``cls``; the message
        names the file and, for validation problems, the first offending field.
    """
    source = Path(path)
    try:
        text = source.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ModelFileError(source, f"file not found (expected a {cls.__name__} JSON file)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelFileError(source, f"cannot read the file ({exc})") from exc
    try:
        json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModelFileError(
            source, f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
        ) from exc
    try:
        return cls.model_validate_json(text)
    except ValidationError as exc:
        raise ModelFileError(source, _describe(exc, cls.__name__)) from exc


def _describe(exc: ValidationError, model_name: str) -> str:
    errors = exc.errors(include_url=False)
    first = errors[0]
    message = str(first["msg"])
    if first["type"] == "value_error":
        message = message.removeprefix("Value error, ")
    location = ".".join(str(part) for part in first["loc"])
    problem = f"field '{location}': {message}" if location else f"invalid {model_name}: {message}"
    if len(errors) > 1:
        problem += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return problem
