"""Command-line options generated from a step's pydantic params model.

Each field becomes an option ``--field-name`` (underscores become dashes):

========================  =====================================================================
field type                option
========================  =====================================================================
``bool``                  flag pair ``--name/--no-name``
``int``, ``float``,       one value, converted here when it parses and otherwise handed to
``str``, ``Path``         pydantic as given, so that every error reads the same
``Enum``, ``Literal``     one of the listed choices
``list[...]`` of those    repeated option (``--x 1 --x 2``) or a comma list (``--x 1,2``)
anything else             a JSON string (``--weights '{"a": 1}'``)
========================  =====================================================================

Validation (ranges, choices, types) is left to the params model, which reports one sentence per
bad field through :class:`tomoforge.workflow.ParamsError`.
"""

from __future__ import annotations

import enum
import json
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any, Literal

__all__ = ["OptionSpec", "OptionValueError", "convert_value", "option_flag", "option_specs"]

OptionKind = Literal["scalar", "bool", "choice", "list", "json"]
_SCALARS: tuple[type, ...] = (int, float, str)
_METAVARS = {int: "INTEGER", float: "FLOAT", str: "TEXT", Path: "PATH"}


@dataclass(frozen=True)
class OptionSpec:
    """How one params field appears on the command line.

    Attributes
    ----------
    field : str
        The model field name.
    flag : str
        The option, e.g. ``--pixel-size-angstrom``.
    kind : {"scalar", "bool", "choice", "list", "json"}
        How values are given (see the module documentation).
    element : type or None
        Scalar type of the value (or of the list elements): int, float, str or Path.
    choices : dict of str to object or None
        For choices: the accepted spellings and the values they stand for.
    required : bool
        Whether the field has no default.
    default_text : str or None
        The default as shown in help, None when there is none to show.
    help : str
        The field description, followed by its constraints and choices.
    metavar : str
        Placeholder shown in help.
    """

    field: str
    flag: str
    kind: OptionKind
    element: type | None
    choices: dict[str, Any] | None
    required: bool
    default_text: str | None
    help: str
    metavar: str


def option_flag(field: str) -> str:
    """Return the option spelling of a field name (``n_iter`` -> ``--n-iter``)."""
    return "--" + field.replace("_", "-")


def _strip_optional(annotation: Any) -> Any:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _choices(annotation: Any) -> dict[str, Any] | None:
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return {str(member.value): member.value for member in annotation}
    if typing.get_origin(annotation) is Literal:
        return {str(value): value for value in typing.get_args(annotation)}
    return None


def _scalar(annotation: Any) -> type | None:
    if annotation in _SCALARS:
        return typing.cast(type, annotation)
    if isinstance(annotation, type) and issubclass(annotation, PurePath):
        return Path
    return None


def _constraints(metadata: Sequence[Any]) -> list[str]:
    words = {
        "ge": ">=",
        "gt": ">",
        "le": "<=",
        "lt": "<",
        "min_length": "length >=",
        "max_length": "length <=",
    }
    found = []
    for item in metadata:
        for attribute, symbol in words.items():
            value = getattr(item, attribute, None)
            if value is not None:
                found.append(f"{symbol} {value}")
    return found


def _default_text(field_info: Any) -> str | None:
    if field_info.is_required():
        return None
    value = field_info.get_default(call_default_factory=True)
    if value is None:
        return None
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, (list, tuple, set)):
        return ",".join(str(v.value if isinstance(v, enum.Enum) else v) for v in value) or "none"
    if isinstance(value, (dict, bool, int, float, str, PurePath)):
        return json.dumps(value) if isinstance(value, dict) else str(value)
    return str(value)


def option_specs(model: type[Any]) -> list[OptionSpec]:
    """Describe the options of every field of a pydantic model, in field order."""
    specs = []
    for name, info in model.model_fields.items():
        annotation = _strip_optional(info.annotation)
        element: type | None = None
        choices: dict[str, Any] | None = None
        kind: OptionKind
        if annotation is bool:
            kind, metavar = "bool", ""
        elif (choices := _choices(annotation)) is not None:
            kind, metavar = "choice", "[" + "|".join(choices) + "]"
        elif (element := _scalar(annotation)) is not None:
            kind, metavar = "scalar", _METAVARS[element]
        elif typing.get_origin(annotation) in (list, set, frozenset, tuple) and _list_element(annotation):
            inner = _strip_optional(typing.get_args(annotation)[0])
            kind, choices, element = "list", _choices(inner), _scalar(inner)
            metavar = ("[" + "|".join(choices) + "]") if choices else _METAVARS[element or str]
            metavar += ",..."
        else:
            kind, metavar = "json", "JSON"
        sentences = [(info.description or "").strip()]
        limits = _constraints(info.metadata)
        if limits:
            sentences.append(f"Must be {' and '.join(limits)}.")
        if choices is not None:
            sentences.append(f"One of: {', '.join(choices)}.")
        if kind == "list":
            sentences.append("Repeat the option or give a comma-separated list.")
        if kind == "json":
            sentences.append("Given as JSON.")
        help_text = " ".join(s if s.endswith((".", "!", "?")) else s + "." for s in sentences if s)
        specs.append(
            OptionSpec(
                field=name,
                flag=option_flag(name),
                kind=kind,
                element=element,
                choices=choices,
                required=info.is_required(),
                default_text=_default_text(info),
                help=help_text,
                metavar=metavar,
            )
        )
    return specs


def _list_element(annotation: Any) -> bool:
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is tuple and not (len(args) == 2 and args[1] is Ellipsis):
        return False
    if not args:
        return False
    inner = _strip_optional(args[0])
    return _scalar(inner) is not None or _choices(inner) is not None


class OptionValueError(ValueError):
    """A command-line value that cannot even be handed to the params model (e.g. bad JSON)."""


def _convert_scalar(element: type | None, choices: dict[str, Any] | None, text: str) -> Any:
    if choices is not None:
        return choices.get(text, text)
    try:
        if element is int:
            return int(text)
        if element is float:
            return float(text)
    except ValueError:
        return text
    if element is Path:
        return Path(text)
    return text


def convert_value(spec: OptionSpec, raw: Any) -> Any:
    """Turn the value click parsed for ``spec`` into the value handed to the params model.

    Raises
    ------
    OptionValueError
        For a JSON option whose text is not valid JSON.
    """
    if spec.kind == "bool":
        return bool(raw)
    if spec.kind in ("scalar", "choice"):
        return _convert_scalar(spec.element, spec.choices, str(raw))
    if spec.kind == "list":
        items = [part.strip() for value in raw for part in str(value).split(",") if part.strip()]
        return [_convert_scalar(spec.element, spec.choices, item) for item in items]
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise OptionValueError(f"it is not valid JSON ({exc.msg})") from exc
