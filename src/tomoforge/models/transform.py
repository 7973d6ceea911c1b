"""2D affine transform of one tilt image, with the meaning of a line of an IMOD ``.xf`` file."""

from __future__ import annotations

import math

import numpy as np
from pydantic import Field, model_validator

from tomoforge.models._base import FrozenModel

__all__ = ["TiltTransform"]

_MIN_ABS_DET = 1e-12
_AFFINE_ROW_TOL = 1e-9


class TiltTransform(FrozenModel):
    """Affine map from raw-image to aligned-image coordinates, about the image centres.

    With (x, y) a point of the raw tilt image relative to its centre and (x', y') the same
    point in the aligned image relative to its centre (centres at N//2, x along columns,
    y along rows)::

        x' = a11·x + a12·y + dx
        y' = a21·x + a22·y + dy

    This is the meaning of a line ``a11 a12 a21 a22 dx dy`` of an IMOD ``.xf`` file, except that
    the shifts are stored in Å so that the transform does not depend on binning; multiply by
    ``1 / pixel_size_angstrom`` (see :meth:`as_matrix`) to get pixels of a given image.

    The in-plane rotation angle is ``degrees(atan2(a21, a11))`` (:attr:`rotation_deg`): a pure
    rotation ``[[cos θ, -sin θ], [sin θ, cos θ]]`` has rotation θ, counter-clockwise positive
    with x right and y up (as IMOD displays images).
    """

    a11: float = Field(default=1.0, description="Linear part, row 1 column 1 (dimensionless).")
    a12: float = Field(default=0.0, description="Linear part, row 1 column 2 (dimensionless).")
    a21: float = Field(default=0.0, description="Linear part, row 2 column 1 (dimensionless).")
    a22: float = Field(default=1.0, description="Linear part, row 2 column 2 (dimensionless).")
    dx_angstrom: float = Field(default=0.0, description="Shift along x applied after the linear part, in Å.")
    dy_angstrom: float = Field(default=0.0, description="Shift along y applied after the linear part, in Å.")

    @model_validator(mode="after")
    def _check_invertible(self) -> TiltTransform:
        det = self.a11 * self.a22 - self.a12 * self.a21
        if abs(det) < _MIN_ABS_DET:
            raise ValueError(f"the linear part [[a11, a12], [a21, a22]] is singular (determinant {det:g})")
        return self

    @classmethod
    def identity(cls) -> TiltTransform:
        """Return the transform that leaves every point in place."""
        return cls()

    @classmethod
    def from_rotation(
        cls, rotation_deg: float, dx_angstrom: float = 0.0, dy_angstrom: float = 0.0, scale: float = 1.0
    ) -> TiltTransform:
        """Build a rotation (counter-clockwise, degrees) with optional isotropic scale, then a shift.

        Parameters
        ----------
        rotation_deg
            Rotation angle θ in degrees; the linear part is ``scale·[[cos θ, -sin θ], [sin θ, cos θ]]``.
        dx_angstrom, dy_angstrom
            Shift in Å applied after the rotation.
        scale
            Isotropic magnification factor (dimensionless, > 0).

        Returns
        -------
        TiltTransform
        """
        if not scale > 0.0:
            raise ValueError(f"scale must be > 0, got {scale}")
        theta = math.radians(rotation_deg)
        c, s = scale * math.cos(theta), scale * math.sin(theta)
        return cls(a11=c, a12=-s, a21=s, a22=c, dx_angstrom=dx_angstrom, dy_angstrom=dy_angstrom)

    @classmethod
    def from_matrix(cls, matrix: np.ndarray, pixel_size_angstrom: float) -> TiltTransform:
        """Build from a 3x3 homogeneous matrix whose shifts are in pixels of the given size.

        Parameters
        ----------
        matrix
            ``[[a11, a12, dx_px], [a21, a22, dy_px], [0, 0, 1]]``.
        pixel_size_angstrom
            Pixel size in Å of the image the pixel shifts refer to.

        Returns
        -------
        TiltTransform

        Raises
        ------
        ValueError
            If the matrix is not 3x3, its last row is not (0, 0, 1), or the pixel size is not positive.
        """
        m = np.asarray(matrix, dtype=np.float64)
        if m.shape != (3, 3):
            raise ValueError(f"expected a 3x3 matrix, got shape {m.shape}")
        if not np.allclose(m[2], (0.0, 0.0, 1.0), rtol=0.0, atol=_AFFINE_ROW_TOL):
            raise ValueError(
                f"the last row of an affine matrix must be (0, 0, 1), got {tuple(m[2].tolist())}"
            )
        _check_pixel_size(pixel_size_angstrom)
        return cls(
            a11=float(m[0, 0]),
            a12=float(m[0, 1]),
            a21=float(m[1, 0]),
            a22=float(m[1, 1]),
            dx_angstrom=float(m[0, 2]) * pixel_size_angstrom,
            dy_angstrom=float(m[1, 2]) * pixel_size_angstrom,
        )

    def as_matrix(self, pixel_size_angstrom: float) -> np.ndarray:
        """Return the 3x3 homogeneous matrix with shifts in pixels of the given size.

        Parameters
        ----------
        pixel_size_angstrom
            Pixel size in Å of the image the matrix will be applied to.

        Returns
        -------
        numpy.ndarray
            float64 array ``[[a11, a12, dx_px], [a21, a22, dy_px], [0, 0, 1]]`` acting on column
            vectors ``(x, y, 1)`` measured in pixels from the image centre.
        """
        _check_pixel_size(pixel_size_angstrom)
        return np.array(
            [
                [self.a11, self.a12, self.dx_angstrom / pixel_size_angstrom],
                [self.a21, self.a22, self.dy_angstrom / pixel_size_angstrom],
                [0.0, 0.0, 1.0],
            ],
            dtype=np.float64,
        )

    def compose(self, later: TiltTransform) -> TiltTransform:
        """Return the transform that applies ``self`` first and then ``later``.

        In matrix terms ``M_total = M_later @ M_self``. Composition is exact in Å, so the result
        is the same whatever pixel size the matrices are later expressed in.

        Parameters
        ----------
        later
            The transform applied to the output of this one.

        Returns
        -------
        TiltTransform
        """
        return TiltTransform(
            a11=later.a11 * self.a11 + later.a12 * self.a21,
            a12=later.a11 * self.a12 + later.a12 * self.a22,
            a21=later.a21 * self.a11 + later.a22 * self.a21,
            a22=later.a21 * self.a12 + later.a22 * self.a22,
            dx_angstrom=later.a11 * self.dx_angstrom + later.a12 * self.dy_angstrom + later.dx_angstrom,
            dy_angstrom=later.a21 * self.dx_angstrom + later.a22 * self.dy_angstrom + later.dy_angstrom,
        )

    def inverse(self) -> TiltTransform:
        """Return the transform from aligned-image back to raw-image coordinates.

        Returns
        -------
        TiltTransform
            ``T⁻¹`` such that ``T.compose(T.inverse())`` is the identity (to rounding).
        """
        det = self.a11 * self.a22 - self.a12 * self.a21
        b11, b12 = self.a22 / det, -self.a12 / det
        b21, b22 = -self.a21 / det, self.a11 / det
        return TiltTransform(
            a11=b11,
            a12=b12,
            a21=b21,
            a22=b22,
            dx_angstrom=-(b11 * self.dx_angstrom + b12 * self.dy_angstrom),
            dy_angstrom=-(b21 * self.dx_angstrom + b22 * self.dy_angstrom),
        )

    def apply(self, xy_px: np.ndarray, pixel_size_angstrom: float) -> np.ndarray:
        """Map points from raw-image to aligned-image coordinates.

        Parameters
        ----------
        xy_px
            Array of shape (..., 2) with (x, y) in pixels relative to the raw image centre.
        pixel_size_angstrom
            Pixel size in Å of the image the points are measured in.

        Returns
        -------
        numpy.ndarray
            Array of the same shape with (x', y') in pixels relative to the aligned image centre.
        """
        pts = np.asarray(xy_px, dtype=np.float64)
        if pts.shape[-1:] != (2,):
            raise ValueError(f"expected points with a last axis of length 2, got shape {pts.shape}")
        m = self.as_matrix(pixel_size_angstrom)
        return pts @ m[:2, :2].T + m[:2, 2]

    @property
    def rotation_deg(self) -> float:
        """In-plane rotation in degrees, ``degrees(atan2(a21, a11))``, counter-clockwise positive."""
        return math.degrees(math.atan2(self.a21, self.a11))

    @property
    def tilt_axis_angle_deg(self) -> float:
        """Tilt-axis angle of the raw image implied by an alignment transform, ``degrees(atan2(a12, a11))``.

        An alignment brings the tilt axis onto image Y, so for a rigid transform ``A = R(−α)`` this is α, the IMOD /
        SerialEM tilt-axis angle (from Y, counter-clockwise), i.e. ``−rotation_deg`` (Scipion's
        ``getRotationAngle``; CONVENTIONS.md §6).
        """
        return math.degrees(math.atan2(self.a12, self.a11))

    @property
    def determinant(self) -> float:
        """Determinant of the linear part (area scale; negative for a mirror)."""
        return self.a11 * self.a22 - self.a12 * self.a21

    @property
    def is_identity(self) -> bool:
        """Whether this is exactly the identity transform."""
        return self == TiltTransform()


def _check_pixel_size(pixel_size_angstrom: float) -> None:
    if not (pixel_size_angstrom > 0.0 and math.isfinite(pixel_size_angstrom)):
        raise ValueError(f"pixel_size_angstrom must be a positive finite number, got {pixel_size_angstrom}")
