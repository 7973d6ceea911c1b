"""A reconstructed tomogram on disk."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from tomoforge.models._base import FrozenModel, ShapeZYX, TsId, Vector3
from tomoforge.models.volume import index_zyx_to_position, position_to_index_zyx

__all__ = ["ReconstructionMethod", "Tomogram"]

ReconstructionMethod = Literal["wbp", "sirt", "sart", "fourier"]
"""How a tomogram was reconstructed: weighted back-projection, SIRT, SART or direct Fourier inversion."""


class Tomogram(FrozenModel):
    """A tomogram reconstructed from one tilt series, stored as an MRC volume (axes z, y, x).

    Positions in a tomogram (e.g. of particles) are given in Å as (x, y, z) relative to its centre
    voxel, index (Z//2, Y//2, X//2); :meth:`position_to_index_zyx` converts them to array indices.
    ``origin_angstrom`` places that centre voxel in the specimen frame of the tilt series, whose
    origin is the point on the tilt axis that projects onto the centre (N//2) of the zero-tilt image.
    """

    ts_id: TsId = Field(description="Identifier of the tilt series the tomogram was reconstructed from.")
    volume_file: Path = Field(description="MRC file holding the tomogram, axes (z, y, x).")
    voxel_size_angstrom: float = Field(gt=0.0, description="Edge length of a voxel in Å.")
    shape_zyx: ShapeZYX = Field(description="Array shape (nz, ny, nx) in voxels.")
    origin_angstrom: Vector3 = Field(
        default=(0.0, 0.0, 0.0),
        description="Position (x, y, z) in Å, in the specimen frame of the tilt series, of the centre voxel "
        "(Z//2, Y//2, X//2); non-zero z for a tomogram reconstructed off the tilt axis.",
    )
    reconstruction_method: ReconstructionMethod = Field(description="Reconstruction algorithm used.")
    binning: float = Field(
        gt=0.0, description="Voxel size divided by the acquisition pixel size (unitless; 1 = unbinned)."
    )
    ctf_corrected: bool = Field(
        default=False, description="Whether the CTF was corrected during reconstruction."
    )
    even_volume_file: Path | None = Field(
        default=None, description="Tomogram reconstructed from even frames only (same geometry), if made."
    )
    odd_volume_file: Path | None = Field(
        default=None, description="Tomogram reconstructed from odd frames only (same geometry), if made."
    )

    @model_validator(mode="after")
    def _even_odd_together(self) -> Tomogram:
        if (self.even_volume_file is None) != (self.odd_volume_file is None):
            raise ValueError("even_volume_file and odd_volume_file must be given together or not at all")
        return self

    @property
    def centre_index_zyx(self) -> tuple[int, int, int]:
        """Index (Z//2, Y//2, X//2) of the centre voxel."""
        nz, ny, nx = self.shape_zyx
        return nz // 2, ny // 2, nx // 2

    @property
    def size_angstrom(self) -> Vector3:
        """Extent of the tomogram (x, y, z) in Å."""
        nz, ny, nx = self.shape_zyx
        v = self.voxel_size_angstrom
        return nx * v, ny * v, nz * v

    def position_to_index_zyx(self, position_angstrom: np.ndarray) -> np.ndarray:
        """Convert (x, y, z) positions in Å relative to the centre voxel into fractional (z, y, x) indices.

        Parameters
        ----------
        position_angstrom
            Array of shape (..., 3).

        Returns
        -------
        numpy.ndarray
            Array of shape (..., 3) of 0-based fractional indices.
        """
        return position_to_index_zyx(position_angstrom, self.shape_zyx, self.voxel_size_angstrom)

    def index_zyx_to_position(self, index_zyx: np.ndarray) -> np.ndarray:
        """Convert 0-based (z, y, x) indices into (x, y, z) positions in Å relative to the centre voxel."""
        return index_zyx_to_position(index_zyx, self.shape_zyx, self.voxel_size_angstrom)
