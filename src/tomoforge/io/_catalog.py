"""The built-in file formats, registered by import path so that no format module loads until it is used.

Each block belongs to one format module; keep the entries in step with the functions that module defines
(``tests/io/test_registry.py`` imports every reader and writer named here).
"""

from __future__ import annotations

from tomoforge.io.registry import FormatSpec

BUILTIN_FORMATS: list[FormatSpec] = [
    # --- block: mrc, movies ---
    # --- end block: mrc, movies ---
    # --- block: mdoc ---
    # --- end block: mdoc ---
    # --- block: imod, aretomo, warp ---
    # --- end block: imod, aretomo, warp ---
    # --- block: relion5, dynamo, scipion ---
    # --- end block: relion5, dynamo, scipion ---
]
