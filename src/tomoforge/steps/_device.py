"""Where a step computes: its ``device`` parameter (``"auto" | "cpu" | "cuda"``) checked and resolved in one place."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = ["checked_device", "device_problems", "resolve_device"]


def device_problems(name: str) -> list[str]:
    """The validation message for ``device`` (empty when it can be used)."""
    if name == "cuda":
        import torch

        if not torch.cuda.is_available():
            return ["device is 'cuda' but no CUDA GPU is available."]
    return []


def resolve_device(name: str) -> torch.device:
    """``"auto"`` → the GPU when one is present, else the CPU; ``"cpu"``/``"cuda"`` as given."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def checked_device(name: str) -> str:
    """``name`` when it can be used; a ``ValueError`` with the reason otherwise (a params-model validator)."""
    problems = device_problems(name)
    if problems:
        raise ValueError(problems)
    return name
