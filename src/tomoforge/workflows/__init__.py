"""The built-in workflow files (TOML, :mod:`tomoforge.workflow.files`): copy one with ``tomoforge workflow show NAME``,
change it, and run it with ``tomoforge run FILE``.

``small``
    The whole tutorial on the simulator's ``small`` preset in a few minutes on two cores (the end-to-end test).
``demo``
    The whole tutorial on the simulator's ``demo`` preset (``tomoforge demo``).
``hiv-tutorial-small``, ``hiv-tutorial-large``
    The tutorial itself, step by step with its parameter values (bin 6 / bin 4 tomograms, the imported picks,
    RelionTomo at bin 6 then bin 2), for EMPIAR-10164 or the simulator's presets of the same names (GPU-sized).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["available", "locate"]

_HERE = Path(__file__).parent


def available() -> dict[str, Path]:
    """The built-in workflows by name."""
    return {path.stem: path for path in sorted(_HERE.glob("*.toml"))}


def locate(name_or_path: str) -> Path:
    """A built-in workflow by name, or a workflow file by path; a clear error naming the built-in ones otherwise."""
    builtin = available()
    if name_or_path in builtin:
        return builtin[name_or_path]
    path = Path(name_or_path)
    if path.suffix == ".toml" and path.is_file():
        return path
    raise FileNotFoundError(
        f"{name_or_path!r} is neither a workflow file (.toml) nor a built-in workflow ({', '.join(builtin)})"
    )
