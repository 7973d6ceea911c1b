"""Tensor conversion shared by the geometry kernels."""

from __future__ import annotations

from typing import Any

import torch


def as_float_tensor(x: Any, like: torch.Tensor | None = None) -> torch.Tensor:
    """Return ``x`` as a floating tensor.

    Tensors keep their device and floating dtype (integers become float64); array-likes and Python numbers become
    float64 tensors, on the device of ``like`` when given, so that geometry keeps full precision by default.
    """
    if isinstance(x, torch.Tensor):
        return x if x.is_floating_point() else x.to(torch.float64)
    device = like.device if like is not None else None
    dtype = like.dtype if like is not None and like.is_floating_point() else torch.float64
    return torch.as_tensor(x, dtype=dtype, device=device)
