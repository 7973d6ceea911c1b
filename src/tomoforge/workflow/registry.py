"""The process-wide registry of steps and step discovery.

Steps register themselves when the module defining them is imported (the ``@step`` decorator
calls :meth:`StepRegistry.register`). Discovery imports the step modules from three sources:

1. built-in packages (default ``tomoforge.steps``): every submodule, recursively;
2. the entry points of group ``tomoforge.steps`` of installed distributions; an entry point
   names a module (``mypkg.steps``) or a :class:`StepSpec` object;
3. the environment variable ``TOMOFORGE_STEP_MODULES``: comma-separated importable module names.

Discovery runs once per registry, the first time a step is looked up by a name that is not yet
registered or the list of steps is requested.
"""

from __future__ import annotations

import importlib
import logging
import os
import pkgutil
from collections.abc import Iterator, Sequence
from importlib import metadata

from .errors import UnknownStepError, WorkflowError
from .step import StepSpec

__all__ = [
    "DEFAULT_STEP_PACKAGES",
    "ENTRY_POINT_GROUP",
    "STEP_MODULES_ENV",
    "StepRegistry",
    "get_registry",
]

logger = logging.getLogger(__name__)

DEFAULT_STEP_PACKAGES: tuple[str, ...] = ("tomoforge.steps",)
"""Packages whose submodules are imported by discovery."""
ENTRY_POINT_GROUP = "tomoforge.steps"
"""Entry-point group scanned by discovery."""
STEP_MODULES_ENV = "TOMOFORGE_STEP_MODULES"
"""Environment variable with extra comma-separated step module names."""


class StepRegistry:
    """Steps by name.

    Parameters
    ----------
    packages : sequence of str, optional
        Packages imported (with their submodules) by discovery.
    entry_point_group : str or None, optional
        Entry-point group scanned by discovery; None to skip entry points.
    env_var : str or None, optional
        Environment variable naming extra step modules; None to skip.
    autodiscover : bool, optional
        Whether lookups trigger discovery; set False for a registry filled by hand.
    unknown_hint : str, optional
        Sentence appended to :class:`UnknownStepError` messages.
    """

    def __init__(
        self,
        packages: Sequence[str] = DEFAULT_STEP_PACKAGES,
        entry_point_group: str | None = ENTRY_POINT_GROUP,
        env_var: str | None = STEP_MODULES_ENV,
        autodiscover: bool = True,
        unknown_hint: str = "",
    ) -> None:
        self._steps: dict[str, StepSpec] = {}
        self.packages = tuple(packages)
        self.entry_point_group = entry_point_group
        self.env_var = env_var
        self.autodiscover = autodiscover
        self.unknown_hint = unknown_hint
        self._discovered = False

    def register(self, spec: StepSpec) -> StepSpec:
        """Add ``spec``; re-registering the same function (a reloaded module) replaces it.

        Raises
        ------
        WorkflowError
            If another function already registered the same name.
        """
        existing = self._steps.get(spec.name)
        if existing is not None and (existing.module, existing.qualname) != (spec.module, spec.qualname):
            raise WorkflowError(
                f"Step name '{spec.name}' is registered twice: by {existing.module}.{existing.qualname} "
                f"and by {spec.module}.{spec.qualname}; rename one of them."
            )
        self._steps[spec.name] = spec
        return spec

    def get(self, name: str) -> StepSpec:
        """Return the step called ``name``, discovering step modules if needed.

        Raises
        ------
        UnknownStepError
            If no such step exists, with close-match suggestions.
        """
        if name not in self._steps and self.autodiscover:
            self.discover()
        try:
            return self._steps[name]
        except KeyError:
            raise UnknownStepError(name, self._steps, self.unknown_hint) from None

    def names(self) -> list[str]:
        """Return all step names, sorted (after discovery)."""
        if self.autodiscover:
            self.discover()
        return sorted(self._steps)

    def __contains__(self, name: object) -> bool:
        return name in self._steps

    def __iter__(self) -> Iterator[StepSpec]:
        return iter([self._steps[n] for n in self.names()])

    def __len__(self) -> int:
        return len(self.names())

    def discover(self, force: bool = False) -> None:
        """Import all step modules from the configured sources (once unless ``force``).

        Raises
        ------
        WorkflowError
            If a step module cannot be imported; the message names the module and its source.
        """
        if self._discovered and not force:
            return
        self._discovered = True
        for package in self.packages:
            self._import_package(package)
        if self.entry_point_group:
            for entry_point in metadata.entry_points(group=self.entry_point_group):
                try:
                    loaded = entry_point.load()
                except Exception as exc:
                    raise WorkflowError(
                        f"Could not load step entry point '{entry_point.name} = {entry_point.value}' "
                        f"(group {self.entry_point_group}): {type(exc).__name__}: {exc}."
                    ) from exc
                if isinstance(loaded, StepSpec) and loaded.name not in self._steps:
                    self.register(loaded)
        if self.env_var:
            for module in filter(None, (m.strip() for m in os.environ.get(self.env_var, "").split(","))):
                _import(module, f"environment variable {self.env_var}")

    def _import_package(self, package: str) -> None:
        module = _import(package, "built-in step packages")
        for info in pkgutil.walk_packages(getattr(module, "__path__", []), prefix=f"{package}."):
            _import(info.name, f"package {package}")


def _import(module: str, source: str) -> object:
    try:
        return importlib.import_module(module)
    except Exception as exc:
        raise WorkflowError(
            f"Could not import step module '{module}' (from {source}): {type(exc).__name__}: {exc}."
        ) from exc


_REGISTRY: StepRegistry | None = None


def get_registry() -> StepRegistry:
    """Return the process-wide registry (created on first use)."""
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = StepRegistry()
    return _REGISTRY
