"""Shared base classes, constrained types and small validators for :mod:`tomoforge.models`.

Two base classes fix the configuration every model uses:

* :class:`FrozenModel` for values that never change once made (an acquisition, a transform,
  a CTF fit, one tilt image). Use :meth:`FrozenModel.replace` to derive a validated variant.
* :class:`MutableModel` for collections that processing steps build up (a tilt series, a
  particle set). Attribute assignment is validated; in-place mutation of a list field is not,
  so call :meth:`MutableModel.revalidate` after such edits.

Both forbid unknown fields and reject NaN and infinities in every float field.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Hashable, Iterable
from typing import Annotated, Any, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PositiveInt,
    ValidationError,
)

__all__ = [
    "FrozenModel",
    "LabelInt",
    "Matrix3",
    "MutableModel",
    "ShapeZYX",
    "TiltAngleDeg",
    "TsId",
    "Vector3",
    "find_duplicates",
    "reject_bool",
]

_F = TypeVar("_F", bound="FrozenModel")
_M = TypeVar("_M", bound="MutableModel")


class FrozenModel(BaseModel):
    """Base of immutable metadata values: frozen, no unknown fields, finite floats only."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    def replace(self: _F, **changes: Any) -> _F:
        """Return a copy with some fields changed, validated like a new instance.

        Unlike :meth:`pydantic.BaseModel.model_copy` with ``update=``, which skips validation,
        this runs every field and model validator on the result.

        Parameters
        ----------
        **changes
            New values by field name. Unknown names are rejected.

        Returns
        -------
        FrozenModel
            A new instance of the same class.
        """
        data = {name: getattr(self, name) for name in type(self).model_fields}
        data.update(changes)
        return type(self).model_validate(data)


class MutableModel(BaseModel):
    """Base of metadata collections that steps build up: assignment is validated, no unknown fields."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    def __setattr__(self, name: str, value: Any) -> None:
        # pydantic stores the new value before model-level ("after") validators run, so a rejected
        # assignment would leave the instance invalid; restore the previous state in that case.
        if name not in type(self).model_fields:
            super().__setattr__(name, value)
            return
        previous = dict(self.__dict__)
        previous_fields_set = set(self.__pydantic_fields_set__)
        try:
            super().__setattr__(name, value)
        except ValidationError:
            object.__setattr__(self, "__dict__", previous)
            object.__setattr__(self, "__pydantic_fields_set__", previous_fields_set)
            raise

    def revalidate(self: _M) -> _M:
        """Return a freshly validated copy; raises if in-place list edits broke an invariant.

        Returns
        -------
        MutableModel
            A new, validated instance of the same class.
        """
        data = {name: getattr(self, name) for name in type(self).model_fields}
        return type(self).model_validate(data)


_TS_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def _check_ts_id(value: str) -> str:
    if not _TS_ID_PATTERN.fullmatch(value):
        raise ValueError(
            f"tilt-series id {value!r} must start with a letter or digit and contain only "
            "letters, digits, '.', '_' and '-' (it is used in file names)"
        )
    return value


def reject_bool(value: Any) -> Any:
    """Refuse booleans where an integer label is expected (pydantic would read True as 1)."""
    if isinstance(value, bool):
        raise ValueError("expected an integer, got a boolean")
    return value


def find_duplicates(values: Iterable[Hashable]) -> list[Any]:
    """Return the values that occur more than once, in order of first occurrence."""
    counts = Counter(values)
    return [value for value, count in counts.items() if count > 1]


TsId = Annotated[str, AfterValidator(_check_ts_id)]
"""Tilt-series (and tomogram) identifier: letters, digits, '.', '_', '-'; usable as a file stem."""

TiltAngleDeg = Annotated[float, Field(ge=-90.0, le=90.0)]
"""A tilt angle in degrees, within [-90, 90]."""

Vector3 = tuple[float, float, float]
"""Three floats in (x, y, z) order."""

ShapeZYX = tuple[PositiveInt, PositiveInt, PositiveInt]
"""Array shape of a volume, axes (z, y, x), each > 0."""

Matrix3 = tuple[Vector3, Vector3, Vector3]
"""A 3x3 matrix as three rows."""

LabelInt = Annotated[int, BeforeValidator(reject_bool)]
"""An integer label that must not be given as a boolean."""
