"""3D maps on disk (averages, references, masks), half-map pairs and Fourier shell correlation curves."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from pydantic import Field, model_validator

from tomoforge.models._base import FrozenModel, ShapeZYX, Vector3

__all__ = ["FscCurve", "HalfMaps", "Volume", "index_zyx_to_position", "position_to_index_zyx"]

_FSC_TOLERANCE = 1e-6
_VOXEL_SIZE_RTOL = 1e-6


def position_to_index_zyx(
    position_angstrom: np.ndarray, shape_zyx: tuple[int, int, int], voxel_size_angstrom: float
) -> np.ndarray:
    """Convert positions relative to a volume's centre into fractional array indices.

    Parameters
    ----------
    position_angstrom
        Array of shape (..., 3): (x, y, z) in Å relative to the centre voxel (Z//2, Y//2, X//2).
    shape_zyx
        Shape of the volume.
    voxel_size_angstrom
        Voxel size in Å.

    Returns
    -------
    numpy.ndarray
        Array of shape (..., 3): fractional 0-based indices (z, y, x).
    """
    pos = np.asarray(position_angstrom, dtype=np.float64)
    centre = np.array([n // 2 for n in shape_zyx], dtype=np.float64)
    return centre + pos[..., ::-1] / voxel_size_angstrom


def index_zyx_to_position(
    index_zyx: np.ndarray, shape_zyx: tuple[int, int, int], voxel_size_angstrom: float
) -> np.ndarray:
    """Convert 0-based (z, y, x) array indices into (x, y, z) positions in Å relative to the centre voxel.

    The inverse of :func:`position_to_index_zyx`.
    """
    idx = np.asarray(index_zyx, dtype=np.float64)
    centre = np.array([n // 2 for n in shape_zyx], dtype=np.float64)
    return ((idx - centre) * voxel_size_angstrom)[..., ::-1]


class Volume(FrozenModel):
    """A 3D map stored in an MRC file."""

    file: Path = Field(description="MRC file holding the map, axes (z, y, x).")
    voxel_size_angstrom: float = Field(gt=0.0, description="Edge length of a voxel in Å.")
    shape_zyx: ShapeZYX = Field(description="Array shape (nz, ny, nx) in voxels.")
    origin_angstrom: Vector3 = Field(
        default=(0.0, 0.0, 0.0),
        description="Position (x, y, z) in Å, in the frame the map belongs to, of its centre voxel "
        "(Z//2, Y//2, X//2); (0, 0, 0) for a box centred on its subject.",
    )

    @property
    def centre_index_zyx(self) -> tuple[int, int, int]:
        """Index (Z//2, Y//2, X//2) of the centre voxel."""
        nz, ny, nx = self.shape_zyx
        return nz // 2, ny // 2, nx // 2

    @property
    def is_cubic(self) -> bool:
        """Whether all three dimensions are equal."""
        return len(set(self.shape_zyx)) == 1

    @property
    def nyquist_angstrom(self) -> float:
        """Nyquist resolution, twice the voxel size, in Å."""
        return 2.0 * self.voxel_size_angstrom


class HalfMaps(FrozenModel):
    """The two independently refined half maps of a gold-standard reconstruction.

    Half set 1 is always :attr:`half1` and half set 2 :attr:`half2`, matching the particles'
    ``half_set`` labels.
    """

    half1: Volume = Field(description="Map reconstructed from the particles of half set 1.")
    half2: Volume = Field(description="Map reconstructed from the particles of half set 2.")
    mask_file: Path | None = Field(default=None, description="Mask used for the masked FSC, if any.")

    @model_validator(mode="after")
    def _same_grid(self) -> HalfMaps:
        if self.half1.shape_zyx != self.half2.shape_zyx:
            raise ValueError(f"half maps differ in shape: {self.half1.shape_zyx} vs {self.half2.shape_zyx}")
        if not math.isclose(
            self.half1.voxel_size_angstrom, self.half2.voxel_size_angstrom, rel_tol=_VOXEL_SIZE_RTOL
        ):
            raise ValueError(
                f"half maps differ in voxel size: {self.half1.voxel_size_angstrom} Å vs "
                f"{self.half2.voxel_size_angstrom} Å"
            )
        return self

    @property
    def voxel_size_angstrom(self) -> float:
        """Voxel size in Å shared by both halves."""
        return self.half1.voxel_size_angstrom

    @property
    def shape_zyx(self) -> tuple[int, int, int]:
        """Shape shared by both halves."""
        return self.half1.shape_zyx


class FscCurve(FrozenModel):
    """A Fourier shell correlation curve, one value per shell."""

    spatial_frequency_per_angstrom: list[float] = Field(
        min_length=1, description="Shell spatial frequencies in 1/Å, >= 0 and strictly increasing."
    )
    fsc: list[float] = Field(
        min_length=1, description="Correlation (unitless, within [-1, 1]) of each shell, same length."
    )

    @model_validator(mode="after")
    def _check_curve(self) -> FscCurve:
        freq, fsc = self.spatial_frequency_per_angstrom, self.fsc
        if len(freq) != len(fsc):
            raise ValueError(
                f"spatial_frequency_per_angstrom has {len(freq)} values but fsc has {len(fsc)}; "
                "they must have equal length"
            )
        if freq[0] < 0.0:
            raise ValueError(f"spatial frequencies must be >= 0, got {freq[0]}")
        for i in range(1, len(freq)):
            if not freq[i] > freq[i - 1]:
                raise ValueError(
                    f"spatial frequencies must increase strictly; sample {i} is {freq[i]} after {freq[i - 1]}"
                )
        bad = [v for v in fsc if abs(v) > 1.0 + _FSC_TOLERANCE]
        if bad:
            raise ValueError(f"fsc values must lie within [-1, 1], got {bad[0]}")
        return self

    @classmethod
    def from_arrays(cls, spatial_frequency_per_angstrom: np.ndarray, fsc: np.ndarray) -> FscCurve:
        """Build a curve from two 1D arrays."""
        return cls(
            spatial_frequency_per_angstrom=np.asarray(
                spatial_frequency_per_angstrom, dtype=np.float64
            ).tolist(),
            fsc=np.asarray(fsc, dtype=np.float64).tolist(),
        )

    def as_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Return (spatial_frequency_per_angstrom, fsc) as float64 arrays."""
        return np.asarray(self.spatial_frequency_per_angstrom), np.asarray(self.fsc)

    def resolution_at(self, threshold: float = 0.143) -> float:
        """Resolution in Å where the curve first falls below a threshold.

        The crossing frequency is linearly interpolated between the last sample at or above the
        threshold and the first sample below it; the resolution is its reciprocal.

        Parameters
        ----------
        threshold
            FSC threshold (0.143 is the gold-standard criterion for half maps).

        Returns
        -------
        float
            Resolution in Å. ``nan`` if the curve never falls below the threshold (resolution not
            determined: at least as good as the highest sampled frequency). ``inf`` if the very first
            sample is already below the threshold, or the crossing is at frequency 0.
        """
        freq, fsc = self.as_arrays()
        below = np.flatnonzero(fsc < threshold)
        if below.size == 0:
            return math.nan
        i = int(below[0])
        if i == 0:
            return math.inf
        f0, f1 = freq[i - 1], freq[i]
        c0, c1 = fsc[i - 1], fsc[i]
        crossing = f0 + (c0 - threshold) / (c0 - c1) * (f1 - f0)
        return math.inf if crossing <= 0.0 else float(1.0 / crossing)
