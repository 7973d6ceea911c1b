"""Tilt-series metadata: the imported movies and the motion-corrected image stack.

In both :class:`TiltSeriesMovies` and :class:`TiltSeries` the tilts are listed in stack order:
``tilts[i].index == i`` and the stack is sorted by nominal tilt angle (ascending). The order in
which the tilts were recorded is kept separately in ``acquisition_order``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, NonNegativeInt, PositiveInt, model_validator

from tomoforge.models._base import FrozenModel, MutableModel, TiltAngleDeg, TsId, find_duplicates
from tomoforge.models.acquisition import Acquisition
from tomoforge.models.ctf import CtfParameters
from tomoforge.models.transform import TiltTransform

__all__ = ["TiltImage", "TiltImageMovie", "TiltSeries", "TiltSeriesMovies"]


class _TiltCommon(FrozenModel):
    """Fields shared by a tilt movie and a tilt image."""

    index: NonNegativeInt = Field(
        description="Position in the tilt-series stack (0-based); the stack is sorted by nominal tilt angle."
    )
    tilt_angle_deg: TiltAngleDeg = Field(description="Nominal stage tilt angle in degrees, within [-90, 90].")
    acquisition_order: NonNegativeInt = Field(
        description="Position in the order of recording (0-based): 0 is the first exposure."
    )
    prior_dose_e_per_angstrom2: float = Field(
        ge=0.0,
        description="Electron dose in e⁻/Å² accumulated by the specimen before this tilt was recorded.",
    )
    dose_e_per_angstrom2: float = Field(
        ge=0.0, description="Electron dose in e⁻/Å² of this tilt's own exposure."
    )
    acquired_at: datetime | None = Field(
        default=None, description="Time the exposure was recorded, if known."
    )
    excluded: bool = Field(default=False, description="Whether this tilt is left out of further processing.")


class TiltImageMovie(_TiltCommon):
    """One tilt as a movie of dose-fractionated frames, as imported."""

    frames_file: Path = Field(description="Movie file (MRC, TIFF or EER) holding the frames of this tilt.")
    frame_count: PositiveInt | None = Field(
        default=None, description="Number of frames in the movie, if known."
    )


class TiltImage(_TiltCommon):
    """One tilt as an image of the tilt-series stack, with what alignment and CTF steps found."""

    frames_file: Path | None = Field(
        default=None, description="Movie this image was made from, for provenance."
    )
    transform: TiltTransform | None = Field(
        default=None,
        description="Raw-to-aligned 2D transform of this image (IMOD .xf meaning), once aligned.",
    )
    refined_tilt_angle_deg: TiltAngleDeg | None = Field(
        default=None,
        description="Tilt angle in degrees refined by alignment, within [-90, 90]; None if not refined.",
    )
    x_tilt_angle_deg: float = Field(
        default=0.0,
        ge=-90.0,
        le=90.0,
        description="Rotation φ of the specimen about the x axis applied before the tilt (IMOD .xtilt, RELION "
        "rlnTomoXTilt), in degrees (CONVENTIONS.md §7); 0 when not refined.",
    )
    ctf: CtfParameters | None = Field(
        default=None, description="CTF parameters of this image, once estimated."
    )

    @property
    def effective_tilt_angle_deg(self) -> float:
        """Refined tilt angle in degrees when available, otherwise the nominal one."""
        return self.tilt_angle_deg if self.refined_tilt_angle_deg is None else self.refined_tilt_angle_deg

    @classmethod
    def from_movie(cls, movie: TiltImageMovie, **changes: Any) -> TiltImage:
        """Start a tilt image from the metadata of its movie.

        Parameters
        ----------
        movie
            The imported movie of this tilt.
        **changes
            Further :class:`TiltImage` fields to set.

        Returns
        -------
        TiltImage
        """
        data = movie.model_dump(exclude={"frame_count"})
        data.update(changes)
        return cls.model_validate(data)


def _check_tilt_list(tilts: Sequence[_TiltCommon]) -> None:
    indices = [t.index for t in tilts]
    duplicates = find_duplicates(indices)
    if duplicates:
        raise ValueError(f"duplicate tilt indices: {duplicates}")
    if indices != list(range(len(tilts))):
        raise ValueError(f"tilt indices must run 0..{len(tilts) - 1} in list order, got {indices}")
    duplicates = find_duplicates(t.acquisition_order for t in tilts)
    if duplicates:
        raise ValueError(f"duplicate acquisition orders: {duplicates}")
    for before, after in zip(tilts, tilts[1:], strict=False):
        if after.tilt_angle_deg < before.tilt_angle_deg:
            raise ValueError(
                f"tilts must be sorted by nominal tilt angle: tilt {after.index} ({after.tilt_angle_deg}°) "
                f"comes after tilt {before.index} ({before.tilt_angle_deg}°)"
            )


class TiltSeriesMovies(MutableModel):
    """The imported movies of one tilt series, before motion correction."""

    ts_id: TsId = Field(description="Identifier of the tilt series (also used as a file stem).")
    acquisition: Acquisition = Field(description="Microscope and detector settings.")
    tilts: list[TiltImageMovie] = Field(
        min_length=1, description="One movie per tilt, in stack (index) order."
    )
    mdoc_file: Path | None = Field(
        default=None, description="SerialEM .mdoc file the series was imported from."
    )

    @model_validator(mode="after")
    def _check_tilts(self) -> TiltSeriesMovies:
        _check_tilt_list(self.tilts)
        return self

    @property
    def n_tilts(self) -> int:
        """Number of tilts, excluded ones included."""
        return len(self.tilts)

    @property
    def tilt_angles_deg(self) -> list[float]:
        """Nominal tilt angles in degrees, in stack order."""
        return [t.tilt_angle_deg for t in self.tilts]

    def included(self) -> list[TiltImageMovie]:
        """Return the tilts not marked excluded, in stack order."""
        return [t for t in self.tilts if not t.excluded]


class TiltSeries(MutableModel):
    """A tilt series as one image stack (MRC), one image per tilt in index order.

    ``transform`` of each tilt maps raw (unaligned) image coordinates to aligned ones. When
    ``aligned`` is True the stack on disk already holds the aligned images, i.e. the transforms have
    been applied and must not be applied again; every included tilt then has a transform.
    """

    ts_id: TsId = Field(description="Identifier of the tilt series (also used as a file stem).")
    acquisition: Acquisition = Field(description="Microscope and detector settings as acquired.")
    stack_file: Path = Field(
        description="MRC stack with one image per tilt, in index order (excluded ones too)."
    )
    pixel_size_angstrom: float = Field(
        gt=0.0, description="Pixel size of the stack in Å (differs from the acquisition pixel after binning)."
    )
    tilts: list[TiltImage] = Field(min_length=1, description="Per-tilt metadata, in stack (index) order.")
    aligned: bool = Field(default=False, description="Whether the transforms have been applied to the stack.")
    image_shape_yx: tuple[PositiveInt, PositiveInt] | None = Field(
        default=None, description="Shape (ny, nx) in pixels of each image of the stack, if known."
    )
    even_stack_file: Path | None = Field(
        default=None,
        description="Stack made from the even-numbered frames only (for noise2noise-style uses).",
    )
    odd_stack_file: Path | None = Field(
        default=None, description="Stack made from the odd-numbered frames only."
    )
    defocus_handedness: Literal[1, -1] | None = Field(
        default=None,
        description="Sign h in Δf(point) = Δf_view − h·depth·pixel size (CONVENTIONS.md §8), as measured from the "
        "defocus gradient across tilted images by the CTF step; None until measured (+1 is then assumed).",
    )

    @model_validator(mode="after")
    def _check_series(self) -> TiltSeries:
        _check_tilt_list(self.tilts)
        if (self.even_stack_file is None) != (self.odd_stack_file is None):
            raise ValueError("even_stack_file and odd_stack_file must be given together or not at all")
        if self.aligned:
            missing = [t.index for t in self.tilts if not t.excluded and t.transform is None]
            if missing:
                raise ValueError(f"aligned is True but included tilts {missing} have no transform")
        return self

    @classmethod
    def from_movies(
        cls,
        movies: TiltSeriesMovies,
        *,
        stack_file: Path,
        pixel_size_angstrom: float,
        **fields: Any,
    ) -> TiltSeries:
        """Start a tilt series from its imported movies (e.g. after motion correction).

        Parameters
        ----------
        movies
            The imported tilt-series movies; ids, acquisition and per-tilt metadata are copied.
        stack_file
            The MRC stack written from the movies.
        pixel_size_angstrom
            Pixel size of that stack in Å.
        **fields
            Further :class:`TiltSeries` fields (e.g. ``even_stack_file``, ``image_shape_yx``).

        Returns
        -------
        TiltSeries
        """
        return cls(
            ts_id=movies.ts_id,
            acquisition=movies.acquisition,
            stack_file=stack_file,
            pixel_size_angstrom=pixel_size_angstrom,
            tilts=[TiltImage.from_movie(m) for m in movies.tilts],
            **fields,
        )

    @property
    def n_tilts(self) -> int:
        """Number of tilts in the stack, excluded ones included."""
        return len(self.tilts)

    @property
    def tilt_angles_deg(self) -> list[float]:
        """Nominal tilt angles in degrees, in stack order."""
        return [t.tilt_angle_deg for t in self.tilts]

    @property
    def effective_tilt_angles_deg(self) -> list[float]:
        """Refined tilt angles in degrees where available, nominal ones elsewhere, in stack order."""
        return [t.effective_tilt_angle_deg for t in self.tilts]

    def included(self) -> list[TiltImage]:
        """Return the tilts not marked excluded, in stack order."""
        return [t for t in self.tilts if not t.excluded]

    def excluded_indices(self) -> list[int]:
        """Return the indices of the tilts marked excluded."""
        return [t.index for t in self.tilts if t.excluded]

    def tilt(self, index: int) -> TiltImage:
        """Return the tilt at a stack index.

        Raises
        ------
        IndexError
            If no tilt has this index.
        """
        if not 0 <= index < len(self.tilts):
            raise IndexError(f"tilt series {self.ts_id!r} has no tilt index {index} (n_tilts={self.n_tilts})")
        return self.tilts[index]

    def replace_tilt(self, index: int, **changes: Any) -> TiltImage:
        """Change fields of one tilt in place, with validation of the tilt and the whole series.

        Parameters
        ----------
        index
            Stack index of the tilt.
        **changes
            New :class:`TiltImage` field values (e.g. ``transform=...``, ``excluded=True``).

        Returns
        -------
        TiltImage
            The new tilt image now stored in the series.
        """
        new = self.tilt(index).replace(**changes)
        tilts = list(self.tilts)
        tilts[index] = new
        self.tilts = tilts  # validated assignment: runs the series checks
        return new

    def transform_matrices(self, pixel_size_angstrom: float | None = None) -> np.ndarray:
        """Return all raw-to-aligned transforms as 3x3 pixel matrices, identity where missing.

        Parameters
        ----------
        pixel_size_angstrom
            Pixel size in Å to express shifts in; defaults to the stack's pixel size.

        Returns
        -------
        numpy.ndarray
            float64 array of shape (n_tilts, 3, 3), in stack order.
        """
        size = self.pixel_size_angstrom if pixel_size_angstrom is None else pixel_size_angstrom
        identity = TiltTransform.identity()
        return np.stack([(t.transform or identity).as_matrix(size) for t in self.tilts])
