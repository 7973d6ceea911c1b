"""Contrast transfer function parameters of tilt images."""

from __future__ import annotations

import math

from pydantic import Field, NonNegativeInt, field_validator, model_validator

from tomoforge.models._base import FrozenModel, MutableModel, TsId, find_duplicates

__all__ = ["CtfParameters", "CtfTiltEstimate", "CtfTiltSeries"]


class CtfParameters(FrozenModel):
    """Fitted CTF of one image (at the image centre for a tilted specimen).

    Defocus is positive for underfocus (CTFFIND/RELION convention). ``defocus_u_angstrom`` is the
    defocus along the direction at ``astigmatism_angle_deg`` from the image x axis (counter-clockwise
    positive), ``defocus_v_angstrom`` along the perpendicular. ``defocus_u >= defocus_v`` is common
    but not enforced. The angle is normalised into [-90, 90) because it is defined modulo 180°.
    Microscope constants (voltage, Cs, amplitude contrast) live in
    :class:`~tomoforge.models.acquisition.Acquisition`.
    """

    defocus_u_angstrom: float = Field(
        description="Defocus along the astigmatism angle in Å (underfocus > 0)."
    )
    defocus_v_angstrom: float = Field(description="Defocus perpendicular to the astigmatism angle in Å.")
    astigmatism_angle_deg: float = Field(
        default=0.0,
        description="Angle from the image x axis to the defocus-u direction in degrees, counter-clockwise "
        "positive, normalised into [-90, 90).",
    )
    phase_shift_deg: float = Field(
        default=0.0, description="Additional phase shift in degrees (e.g. from a phase plate); 0 without."
    )
    fit_resolution_angstrom: float | None = Field(
        default=None,
        gt=0.0,
        description="Resolution in Å up to which Thon rings were fitted reliably, if known.",
    )
    score: float | None = Field(
        default=None,
        description="Goodness of fit reported by the estimator (e.g. cross-correlation), if any.",
    )

    @field_validator("astigmatism_angle_deg")
    @classmethod
    def _normalise_angle(cls, value: float) -> float:
        # Only values outside the range are touched, so re-validating a dumped model is exact.
        if -90.0 <= value < 90.0:
            return value
        wrapped = math.fmod(value + 90.0, 180.0)
        if wrapped < 0.0:
            wrapped += 180.0
        result = wrapped - 90.0
        return result if result < 90.0 else -90.0

    @property
    def defocus_mean_angstrom(self) -> float:
        """Mean defocus ``(u + v) / 2`` in Å."""
        return 0.5 * (self.defocus_u_angstrom + self.defocus_v_angstrom)

    @property
    def astigmatism_angstrom(self) -> float:
        """Astigmatism ``(u - v) / 2`` in Å (signed; positive when u > v)."""
        return 0.5 * (self.defocus_u_angstrom - self.defocus_v_angstrom)

    def defocus_at_azimuth_angstrom(self, azimuth_deg: float) -> float:
        """Defocus in Å along the direction at ``azimuth_deg`` from the image x axis.

        Parameters
        ----------
        azimuth_deg
            Direction in the image plane, degrees counter-clockwise from x.

        Returns
        -------
        float
            ``mean + astigmatism · cos(2 (azimuth - astigmatism_angle))``: equal to ``defocus_u`` along
            the astigmatism angle and ``defocus_v`` perpendicular to it.
        """
        delta = math.radians(2.0 * (azimuth_deg - self.astigmatism_angle_deg))
        return self.defocus_mean_angstrom + self.astigmatism_angstrom * math.cos(delta)


class CtfTiltEstimate(FrozenModel):
    """CTF estimate for one tilt of a series, identified by its tilt index."""

    tilt_index: NonNegativeInt = Field(description="Index of the tilt in the tilt-series stack (0-based).")
    parameters: CtfParameters | None = Field(
        default=None,
        description="Fitted parameters; None when the fit failed (the tilt must then be excluded).",
    )
    excluded: bool = Field(default=False, description="Whether this fit is unreliable and must not be used.")

    @model_validator(mode="after")
    def _missing_fit_is_excluded(self) -> CtfTiltEstimate:
        if self.parameters is None and not self.excluded:
            raise ValueError(f"tilt {self.tilt_index} has no CTF parameters and must be marked excluded")
        return self


class CtfTiltSeries(MutableModel):
    """Per-tilt CTF estimates of one tilt series, keyed by tilt index (unique, any order)."""

    ts_id: TsId = Field(description="Identifier of the tilt series.")
    tilts: list[CtfTiltEstimate] = Field(default_factory=list, description="One estimate per fitted tilt.")

    @model_validator(mode="after")
    def _unique_indices(self) -> CtfTiltSeries:
        duplicates = find_duplicates(t.tilt_index for t in self.tilts)
        if duplicates:
            raise ValueError(f"duplicate tilt indices in CTF estimates: {duplicates}")
        return self

    def by_index(self) -> dict[int, CtfTiltEstimate]:
        """Return the estimates in a dict keyed by tilt index."""
        return {t.tilt_index: t for t in self.tilts}

    def parameters_for(self, tilt_index: int) -> CtfParameters | None:
        """Return the usable parameters of one tilt, or None if missing or excluded.

        Parameters
        ----------
        tilt_index
            Index of the tilt in the stack.

        Returns
        -------
        CtfParameters or None
        """
        estimate = self.by_index().get(tilt_index)
        if estimate is None or estimate.excluded:
            return None
        return estimate.parameters

    def excluded_indices(self) -> list[int]:
        """Return the sorted tilt indices whose estimates are marked excluded."""
        return sorted(t.tilt_index for t in self.tilts if t.excluded)
