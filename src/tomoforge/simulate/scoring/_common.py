"""Pieces shared by the scorers: the "not provided" entry, small statistics and CSV tables."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from tomoforge.io import FormatError

__all__ = [
    "NotProvided",
    "Scored",
    "circular_mean_deg",
    "read_csv_columns",
    "rms",
    "rotation_angle_deg",
    "rotation_from_vector",
    "skew",
    "wrap_deg",
]


class Scored(BaseModel):
    """Base of every score section: ``status`` is ``"scored"``."""

    model_config = ConfigDict(extra="forbid")

    status: Literal["scored"] = Field(default="scored", description="This section was scored.")


class NotProvided(BaseModel):
    """A section that could not be scored, and why (a file missing from the results or the truth)."""

    model_config = ConfigDict(extra="forbid")

    status: Literal["not provided"] = Field(
        default="not provided", description="This section was not scored."
    )
    reason: str = Field(description="Why, in one sentence.")


def rms(values: torch.Tensor, dim: int | tuple[int, ...] | None = None) -> torch.Tensor:
    """Root mean square of ``values`` over ``dim`` (all elements when None)."""
    squared = values.square()
    return (squared.mean() if dim is None else squared.mean(dim=dim)).sqrt()


def wrap_deg(angles_deg: torch.Tensor, period_deg: float = 360.0) -> torch.Tensor:
    """Angles wrapped into ``(−period/2, period/2]`` degrees."""
    half = period_deg / 2.0
    wrapped = torch.remainder(angles_deg + half, period_deg) - half
    return torch.where(wrapped <= -half, wrapped + period_deg, wrapped)


def circular_mean_deg(angles_deg: torch.Tensor, period_deg: float = 360.0) -> float:
    """Circular mean of angles with the given period, in ``(−period/2, period/2]`` degrees."""
    scale = 2.0 * math.pi / period_deg
    a = angles_deg.to(torch.float64) * scale
    mean = math.atan2(float(torch.sin(a).mean()), float(torch.cos(a).mean())) / scale
    return float(wrap_deg(torch.tensor(mean, dtype=torch.float64), period_deg))


def read_csv_columns(path: Path, columns: Sequence[str]) -> dict[str, np.ndarray]:
    """Read the named numeric columns of a CSV file with a header line.

    Raises
    ------
    FormatError
        When the file is empty, a column is missing or a value is not a number.
    """
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        header = [name.strip() for name in (reader.fieldnames or [])]
        missing = [c for c in columns if c not in header]
        if missing:
            raise FormatError(
                path, f"has no column {', '.join(missing)} (columns: {', '.join(header) or 'none'})"
            )
        values: dict[str, list[float]] = {c: [] for c in columns}
        for lineno, row in enumerate(reader, start=2):
            row = {(k or "").strip(): v for k, v in row.items()}
            for c in columns:
                try:
                    values[c].append(float(row[c]))
                except (TypeError, ValueError):
                    raise FormatError(path, f"line {lineno}: {c} is not a number ({row[c]!r})") from None
    return {c: np.asarray(v, dtype=np.float64) for c, v in values.items()}


def rotation_from_vector(rotation_vectors: torch.Tensor) -> torch.Tensor:
    """Rotation matrices from rotation vectors (axis × angle in radians), Rodrigues' formula.

    Parameters
    ----------
    rotation_vectors
        ``(..., 3)`` rotation vectors.

    Returns
    -------
    torch.Tensor
        ``(..., 3, 3)`` active rotations.
    """
    v = rotation_vectors
    theta = v.norm(dim=-1, keepdim=True).unsqueeze(-1)
    k = skew(v)
    small = theta < 1e-8
    safe = torch.where(small, torch.ones_like(theta), theta)
    a = torch.where(small, 1.0 - theta.square() / 6.0, torch.sin(safe) / safe)
    b = torch.where(small, 0.5 - theta.square() / 24.0, (1.0 - torch.cos(safe)) / safe.square())
    eye = torch.eye(3, dtype=v.dtype, device=v.device).expand(k.shape)
    return eye + a * k + b * (k @ k)


def skew(v: torch.Tensor) -> torch.Tensor:
    """``(..., 3)`` → ``(..., 3, 3)`` cross-product matrices ``[v]×``."""
    x, y, z = v.unbind(-1)
    o = torch.zeros_like(x)
    return torch.stack(
        [torch.stack([o, -z, y], -1), torch.stack([z, o, -x], -1), torch.stack([-y, x, o], -1)], -2
    )


def rotation_angle_deg(rotations: torch.Tensor) -> torch.Tensor:
    """Rotation angle in degrees of ``(..., 3, 3)`` proper rotations, in [0, 180]."""
    trace = rotations.diagonal(dim1=-2, dim2=-1).sum(-1)
    return torch.rad2deg(torch.acos(((trace - 1.0) / 2.0).clamp(-1.0, 1.0)))
