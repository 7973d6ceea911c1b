"""Fiducial (gold bead) landmark model of a tilt series, as made by tracking and refined by alignment."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from pydantic import Field, NonNegativeInt, PositiveInt, model_validator

from tomoforge.models._base import FrozenModel, MutableModel, TsId, Vector3, find_duplicates

__all__ = ["LandmarkChain", "LandmarkModel", "LandmarkPoint"]


class LandmarkPoint(FrozenModel):
    """Position of one bead in one tilt image.

    Coordinates are 0-based pixel positions in the raw (unaligned) tilt image of the stack, x along
    columns and y along rows, at the model's ``pixel_size_angstrom`` (pixel centres at integers).
    """

    tilt_index: NonNegativeInt = Field(description="Stack index of the tilt image the bead was found in.")
    x_px: float = Field(description="Column coordinate of the bead centre in pixels (0-based).")
    y_px: float = Field(description="Row coordinate of the bead centre in pixels (0-based).")
    residual_xy_px: tuple[float, float] | None = Field(
        default=None,
        description="Alignment residual (measured minus projected position) along (x, y) in pixels, if fitted.",
    )

    @property
    def residual_px(self) -> float | None:
        """Length of the residual vector in pixels, or None if not fitted."""
        if self.residual_xy_px is None:
            return None
        return math.hypot(*self.residual_xy_px)


class LandmarkChain(FrozenModel):
    """All observations of one bead across the tilt series."""

    bead_id: NonNegativeInt = Field(description="Identifier of the bead, unique within the model.")
    points: list[LandmarkPoint] = Field(
        default_factory=list, description="Observations of the bead, at most one per tilt (any order)."
    )
    position_angstrom: Vector3 | None = Field(
        default=None,
        description="Fitted 3D bead position (x, y, z) in Å relative to the specimen centre (the tilt-axis "
        "point projecting onto the image centre N//2 at zero tilt), if solved.",
    )

    @model_validator(mode="after")
    def _one_point_per_tilt(self) -> LandmarkChain:
        duplicates = find_duplicates(p.tilt_index for p in self.points)
        if duplicates:
            raise ValueError(f"bead {self.bead_id} has several points on tilt indices {duplicates}")
        return self


class LandmarkModel(MutableModel):
    """Tracked fiducial beads of one tilt series.

    The bulk form is :meth:`to_array`, shape (n_beads, n_tilts, 2) holding (x, y) in pixels with NaN
    where a bead was not observed; :meth:`from_array` builds a model back from it.
    """

    ts_id: TsId = Field(description="Identifier of the tilt series.")
    pixel_size_angstrom: float = Field(
        gt=0.0, description="Pixel size in Å of the images the points refer to."
    )
    n_tilts: PositiveInt = Field(description="Number of tilts in the stack the points refer to.")
    bead_diameter_angstrom: float = Field(gt=0.0, description="Diameter of the gold beads in Å.")
    chains: list[LandmarkChain] = Field(default_factory=list, description="One chain per tracked bead.")
    mean_residual_px: float | None = Field(
        default=None, ge=0.0, description="Overall mean residual of the alignment in pixels, if fitted."
    )

    @model_validator(mode="after")
    def _check_chains(self) -> LandmarkModel:
        duplicates = find_duplicates(c.bead_id for c in self.chains)
        if duplicates:
            raise ValueError(f"duplicate bead ids: {duplicates}")
        for chain in self.chains:
            for point in chain.points:
                if point.tilt_index >= self.n_tilts:
                    raise ValueError(
                        f"bead {chain.bead_id} has a point on tilt index {point.tilt_index}, "
                        f"but the series has only {self.n_tilts} tilts"
                    )
        return self

    @property
    def n_beads(self) -> int:
        """Number of chains (beads)."""
        return len(self.chains)

    @property
    def bead_diameter_px(self) -> float:
        """Bead diameter in pixels of the model's images."""
        return self.bead_diameter_angstrom / self.pixel_size_angstrom

    def to_array(self) -> np.ndarray:
        """Return the point coordinates as an array with NaN gaps.

        Returns
        -------
        numpy.ndarray
            float64 array of shape (n_beads, n_tilts, 2): ``[b, t] = (x_px, y_px)`` of chain ``b``
            on tilt index ``t``, NaN where not observed. Beads follow the order of :attr:`chains`.
        """
        return self._gather(lambda p: (p.x_px, p.y_px))

    def residuals_array(self) -> np.ndarray:
        """Return the residual vectors, shape (n_beads, n_tilts, 2), in pixels; NaN where absent."""
        return self._gather(lambda p: p.residual_xy_px)

    def positions_angstrom(self) -> np.ndarray:
        """Return the fitted 3D positions, shape (n_beads, 3), (x, y, z) in Å; NaN rows where unsolved."""
        out = np.full((self.n_beads, 3), np.nan)
        for b, chain in enumerate(self.chains):
            if chain.position_angstrom is not None:
                out[b] = chain.position_angstrom
        return out

    def computed_mean_residual_px(self) -> float:
        """Mean residual length over all points that have one, in pixels; NaN if none has."""
        lengths = [r for c in self.chains for p in c.points if (r := p.residual_px) is not None]
        return float(np.mean(lengths)) if lengths else math.nan

    def _gather(self, value_of: Callable[[LandmarkPoint], tuple[float, float] | None]) -> np.ndarray:
        out = np.full((self.n_beads, self.n_tilts, 2), np.nan)
        for b, chain in enumerate(self.chains):
            for point in chain.points:
                value = value_of(point)
                if value is not None:
                    out[b, point.tilt_index] = value
        return out

    @classmethod
    def from_array(
        cls,
        xy_px: np.ndarray,
        *,
        ts_id: str,
        pixel_size_angstrom: float,
        bead_diameter_angstrom: float,
        bead_ids: Sequence[int] | None = None,
        residuals_xy_px: np.ndarray | None = None,
        positions_angstrom: np.ndarray | None = None,
        mean_residual_px: float | None = None,
    ) -> LandmarkModel:
        """Build a model from point arrays with NaN gaps (the inverse of :meth:`to_array`).

        Parameters
        ----------
        xy_px
            Array of shape (n_beads, n_tilts, 2) of (x, y) pixel coordinates, NaN where not observed.
            A point with only one of x, y NaN is an error.
        ts_id, pixel_size_angstrom, bead_diameter_angstrom, mean_residual_px
            Model fields.
        bead_ids
            One id per bead; default 0..n_beads-1.
        residuals_xy_px
            Optional residuals with the same shape as ``xy_px`` (NaN where absent).
        positions_angstrom
            Optional (n_beads, 3) array of 3D positions, NaN rows where unsolved.

        Returns
        -------
        LandmarkModel
        """
        xy = np.asarray(xy_px, dtype=np.float64)
        if xy.ndim != 3 or xy.shape[2] != 2:
            raise ValueError(f"expected an array of shape (n_beads, n_tilts, 2), got {xy.shape}")
        n_beads, n_tilts = xy.shape[:2]
        present = np.isfinite(xy)
        half = present[..., 0] != present[..., 1]
        if half.any():
            b, t = np.argwhere(half)[0]
            raise ValueError(f"bead row {b}, tilt {t} has only one finite coordinate")
        res = None if residuals_xy_px is None else np.asarray(residuals_xy_px, dtype=np.float64)
        if res is not None and res.shape != xy.shape:
            raise ValueError(f"residuals_xy_px has shape {res.shape}, expected {xy.shape}")
        pos = None if positions_angstrom is None else np.asarray(positions_angstrom, dtype=np.float64)
        if pos is not None and pos.shape != (n_beads, 3):
            raise ValueError(f"positions_angstrom has shape {pos.shape}, expected {(n_beads, 3)}")
        ids = list(range(n_beads)) if bead_ids is None else [int(i) for i in bead_ids]
        if len(ids) != n_beads:
            raise ValueError(f"got {len(ids)} bead ids for {n_beads} beads")

        chains = []
        for b in range(n_beads):
            points = []
            for t in np.flatnonzero(present[b, :, 0]):
                residual = None
                if res is not None and np.isfinite(res[b, t]).all():
                    residual = (float(res[b, t, 0]), float(res[b, t, 1]))
                points.append(
                    LandmarkPoint(
                        tilt_index=int(t),
                        x_px=float(xy[b, t, 0]),
                        y_px=float(xy[b, t, 1]),
                        residual_xy_px=residual,
                    )
                )
            position = None
            if pos is not None and np.isfinite(pos[b]).all():
                position = (float(pos[b, 0]), float(pos[b, 1]), float(pos[b, 2]))
            chains.append(LandmarkChain(bead_id=ids[b], points=points, position_angstrom=position))
        return cls(
            ts_id=ts_id,
            pixel_size_angstrom=pixel_size_angstrom,
            n_tilts=n_tilts,
            bead_diameter_angstrom=bead_diameter_angstrom,
            chains=chains,
            mean_residual_px=mean_residual_px,
        )
