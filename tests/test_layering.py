"""The one-way layering of ARCHITECTURE.md, checked on the source tree.

kernels → other kernels only; models → nothing of ours; io → models and kernels; steps → kernels, io, models and
workflow; workflow → nothing of ours and nothing cryo-ET (no torch, no EM file libraries); simulate → kernels,
models and io; front-ends (cli, report, viewer) → anything.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "tomoforge"

KERNELS = {
    "geometry",
    "fourier",
    "motion",
    "ctf",
    "preprocess",
    "alignment",
    "reconstruction",
    "picking",
    "averaging",
}
ALLOWED: dict[str, set[str]] = {
    **{k: KERNELS for k in KERNELS},
    "models": {"models"},
    "io": {"io", "models"} | KERNELS,
    "steps": {"steps", "io", "models", "workflow"} | KERNELS,
    "workflow": {"workflow"},
    "simulate": {"simulate", "io", "models"} | KERNELS,
}
# Third-party modules the generic engine must not touch.
WORKFLOW_FORBIDDEN_THIRD_PARTY = {"torch", "mrcfile", "starfile", "numpy", "einops"}


def _imports(path: Path, package: str) -> list[tuple[int, str]]:
    """Absolute module names imported by a file, relative imports resolved against ``package``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.append((node.lineno, name))
    return found


def layering_violations(src: Path) -> list[str]:
    """List every import that crosses the layering the wrong way, one readable line each."""
    problems = []
    for path in sorted(src.rglob("*.py")):
        rel = path.relative_to(src)
        if len(rel.parts) < 2:
            continue  # top-level modules such as __init__.py / __main__.py
        layer = rel.parts[0]
        package = ".".join(["tomoforge", *rel.parts[:-1]])
        for lineno, name in _imports(path, package):
            parts = name.split(".")
            if parts[0] == "tomoforge" and len(parts) > 1 and layer in ALLOWED:
                target = parts[1]
                if target not in ALLOWED[layer] and target != "__version__":
                    problems.append(f"{rel}:{lineno}: layer '{layer}' imports tomoforge.{target}")
            if layer == "workflow" and parts[0] in WORKFLOW_FORBIDDEN_THIRD_PARTY:
                problems.append(f"{rel}:{lineno}: the workflow engine imports {parts[0]}")
    return problems


def test_source_tree_respects_the_layering():
    assert SRC.is_dir()
    assert layering_violations(SRC) == []


def test_checker_catches_violations(tmp_path: Path):
    pkg = tmp_path / "tomoforge"
    for sub in ("geometry", "workflow", "models"):
        (pkg / sub).mkdir(parents=True)
    (pkg / "geometry" / "bad.py").write_text("from tomoforge.steps import x\nfrom ..io import y\n")
    (pkg / "workflow" / "bad.py").write_text("import torch\nfrom tomoforge.models import z\n")
    (pkg / "models" / "ok.py").write_text("from .other import a\nimport numpy\n")
    problems = layering_violations(pkg)
    assert problems == [
        "geometry/bad.py:1: layer 'geometry' imports tomoforge.steps",
        "geometry/bad.py:2: layer 'geometry' imports tomoforge.io",
        "workflow/bad.py:1: the workflow engine imports torch",
        "workflow/bad.py:2: layer 'workflow' imports tomoforge.models",
    ]


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_every_layer_only_allows_lower_layers(layer):
    # Front-ends never appear as allowed targets of a lower layer.
    assert not ({"cli", "report", "viewer"} & ALLOWED[layer])
