"""Declaring steps: the ``@step`` decorator and the :class:`StepSpec` it returns.

A step is a plain typed function::

    class CountParams(BaseModel):
        n: int = Field(3, ge=1, description="How many rows to count.")

    @step(name="toy.count", version="1", inputs={"table": "table"}, outputs={"counts": "table"})
    def count(params: CountParams, inputs: Inputs, ctx: RunContext) -> dict[str, Path]:
        '''Count rows of a table.'''
        out = ctx.work_dir / "counts.txt"
        ...
        return {"counts": out}

The function writes its outputs below ``ctx.work_dir`` and returns them by output name; the
engine moves them into the run folder once the function has returned. The params model is taken
from the annotation of the first argument unless given with ``params=``.
"""

from __future__ import annotations

import hashlib
import inspect
import marshal
import re
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from .artifacts import IMPORT_STEP, Artifact, Inputs

if TYPE_CHECKING:
    from .context import RunContext
    from .registry import StepRegistry

__all__ = [
    "InputSpec",
    "MethodsHook",
    "StepFunction",
    "StepSpec",
    "SummaryHook",
    "ValidateHook",
    "code_version",
    "step",
]

StepFunction = Callable[[Any, Inputs, "RunContext"], Mapping[str, Path]]
"""Signature of a step function: ``fn(params, inputs, ctx) -> {output name: path}``."""
ValidateHook = Callable[[Any, Inputs], list[str]]
"""``validate(params, inputs) -> problems``: each problem is one sentence; empty means valid."""
SummaryHook = Callable[[dict[str, Artifact]], dict[str, object]]
"""``summary(outputs) -> {name: JSON-serializable value}``: a few numbers describing a run."""
MethodsHook = Callable[[Any], str]
"""``methods(params) -> text``: a methods paragraph, with citations, for reports."""

_STEP_NAME = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class InputSpec:
    """Declaration of one step input.

    Attributes
    ----------
    kind : str
        The artifact kind the input accepts; ``"any"`` accepts every kind.
    optional : bool
        Whether the step can run without it.
    description : str
        One sentence for help texts.
    """

    kind: str
    optional: bool = False
    description: str = ""


@dataclass(frozen=True, eq=False)
class StepSpec:
    """Everything the engine knows about a step. Created by :func:`step`.

    Attributes
    ----------
    name : str
        Unique dotted name, e.g. ``"toy.count"``.
    fn : callable
        The step function ``fn(params, inputs, ctx) -> {output name: path}``.
    params_model : type of pydantic.BaseModel
        The parameters model.
    inputs : mapping of str to InputSpec
        Declared inputs by name.
    outputs : mapping of str to str
        Declared outputs: name to artifact kind.
    version : str
        The declared version; bump it to invalidate caches on purpose.
    code_version : str
        ``version`` plus a hash of the function source (see :func:`code_version`).
    description : str
        The function docstring (first line is the short description).
    validate, summary, methods : callable or None
        Optional hooks, see :data:`ValidateHook`, :data:`SummaryHook`, :data:`MethodsHook`.
    """

    name: str
    fn: StepFunction
    params_model: type[BaseModel]
    inputs: Mapping[str, InputSpec]
    outputs: Mapping[str, str]
    version: str
    code_version: str
    description: str = ""
    validate: ValidateHook | None = None
    summary: SummaryHook | None = None
    methods: MethodsHook | None = None

    @property
    def short_description(self) -> str:
        """The first line of the description (empty if there is none)."""
        return self.description.strip().splitlines()[0].strip() if self.description.strip() else ""

    @property
    def module(self) -> str:
        """Name of the module that defines the step function."""
        return str(self.fn.__module__)

    @property
    def qualname(self) -> str:
        """Qualified name of the step function inside its module."""
        return str(getattr(self.fn, "__qualname__", getattr(self.fn, "__name__", repr(self.fn))))


def code_version(fn: Callable[..., Any], version: str) -> str:
    """Return ``version`` combined with a hash of the source of ``fn``.

    Parameters
    ----------
    fn : callable
        The step function.
    version : str
        The declared version.

    Returns
    -------
    str
        ``"<version>+<16 hex digits>"``. The hash covers the source text of the function
        (decorator included) as returned by :func:`inspect.getsource`; when the source is not
        available (e.g. frozen applications) it covers the marshalled code object instead.
        Helper functions called by the step are not covered: bump ``version`` when they change.
    """
    try:
        data = inspect.getsource(fn).encode("utf-8")
    except (OSError, TypeError):
        code = getattr(fn, "__code__", None)
        data = marshal.dumps(code) if code is not None else repr(fn).encode("utf-8")
    return f"{version}+{hashlib.sha256(data).hexdigest()[:16]}"


def _params_model_from(fn: Callable[..., Any], name: str) -> type[BaseModel]:
    try:
        hints = typing.get_type_hints(fn)
    except Exception as exc:  # any failure to resolve the annotations means the same thing
        raise TypeError(f"Step '{name}': cannot resolve the annotations of {fn!r} ({exc}).") from exc
    first = next(iter(inspect.signature(fn).parameters), None)
    model = hints.get(first) if first is not None else None
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise TypeError(
            f"Step '{name}': annotate the first argument of {fn.__name__} with a pydantic BaseModel "
            "subclass or pass params=... to @step."
        )
    return model


def _normalize_inputs(name: str, inputs: Mapping[str, InputSpec | str] | None) -> dict[str, InputSpec]:
    result: dict[str, InputSpec] = {}
    for input_name, declared in (inputs or {}).items():
        if not _IDENTIFIER.match(input_name):
            raise ValueError(f"Step '{name}': input name {input_name!r} is not a valid identifier.")
        if isinstance(declared, str):
            result[input_name] = InputSpec(kind=declared)
        elif isinstance(declared, InputSpec):
            result[input_name] = declared
        else:
            raise TypeError(f"Step '{name}': input {input_name!r} must be a kind string or an InputSpec.")
    return result


def step(
    *,
    name: str,
    version: str,
    outputs: Mapping[str, str],
    inputs: Mapping[str, InputSpec | str] | None = None,
    params: type[BaseModel] | None = None,
    description: str | None = None,
    validate: ValidateHook | None = None,
    summary: SummaryHook | None = None,
    methods: MethodsHook | None = None,
    registry: StepRegistry | None = None,
) -> Callable[[StepFunction], StepSpec]:
    """Declare a step and register it.

    Parameters
    ----------
    name : str
        Unique dotted lower-case name (``"toy.count"``); ``"import"`` is reserved.
    version : str
        Declared version, part of the cache key together with a hash of the source.
    outputs : mapping of str to str
        Output names and their artifact kinds.
    inputs : mapping of str to InputSpec or str, optional
        Input names and their :class:`InputSpec` (a plain string is a required input of that kind).
    params : type of pydantic.BaseModel, optional
        The parameters model; by default the annotation of the function's first argument.
    description : str, optional
        Help text; by default the function docstring.
    validate, summary, methods : callable, optional
        Hooks, see :class:`StepSpec`.
    registry : StepRegistry, optional
        Where to register the step; the process-wide registry by default.

    Returns
    -------
    callable
        A decorator turning the function into a registered, frozen :class:`StepSpec`.
    """
    if not _STEP_NAME.match(name) or name == IMPORT_STEP:
        raise ValueError(
            f"Invalid step name {name!r}: use dotted lower-case words like 'motion.correct' "
            f"('{IMPORT_STEP}' is reserved)."
        )
    if not outputs:
        raise ValueError(f"Step '{name}' declares no outputs; declare at least one.")
    for output_name, kind in outputs.items():
        if not _IDENTIFIER.match(output_name) or not isinstance(kind, str):
            raise ValueError(
                f"Step '{name}': output {output_name!r} needs an identifier name and a kind string."
            )
    input_specs = _normalize_inputs(name, inputs)

    def decorate(fn: StepFunction) -> StepSpec:
        if len(inspect.signature(fn).parameters) != 3:
            raise TypeError(f"Step '{name}': {fn.__name__} must take exactly (params, inputs, ctx).")
        spec = StepSpec(
            name=name,
            fn=fn,
            params_model=params if params is not None else _params_model_from(fn, name),
            inputs=input_specs,
            outputs=dict(outputs),
            version=str(version),
            code_version=code_version(fn, str(version)),
            description=inspect.cleandoc(description if description is not None else (fn.__doc__ or "")),
            validate=validate,
            summary=summary,
            methods=methods,
        )
        if registry is None:
            from .registry import get_registry

            get_registry().register(spec)
        else:
            registry.register(spec)
        return spec

    return decorate
