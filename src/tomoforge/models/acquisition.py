"""Microscope and detector settings under which a tilt series was recorded."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, PositiveInt

from tomoforge.models._base import FrozenModel

__all__ = ["Acquisition"]


class Acquisition(FrozenModel):
    """Acquisition parameters shared by all tilts of one tilt series.

    The pixel size is that of the frames as written by the detector: for super-resolution
    movies it is the super-resolution pixel. Later products (stacks, tomograms) carry their
    own pixel or voxel sizes.
    """

    voltage_kv: float = Field(gt=0.0, le=1000.0, description="Acceleration voltage in kV, in (0, 1000].")
    spherical_aberration_mm: float = Field(
        ge=0.0, description="Spherical aberration Cs of the objective lens in mm (0 for Cs-corrected)."
    )
    amplitude_contrast: float = Field(
        ge=0.0,
        lt=1.0,
        description="Fraction of amplitude contrast (unitless), 0 <= w < 1; typically 0.07-0.1 for cryo samples.",
    )
    pixel_size_angstrom: float = Field(
        gt=0.0,
        description="Pixel size of the frames as acquired, in Å (super-resolution pixel if applicable).",
    )
    tilt_axis_angle_deg: float = Field(
        ge=-180.0,
        le=180.0,
        description=(
            "Angle of the tilt axis in the image plane, in degrees, in the IMOD/SerialEM sense: measured "
            "from the image Y axis to the tilt axis, counter-clockwise positive (x right, y up)."
        ),
    )
    dose_per_tilt_e_per_angstrom2: float = Field(
        ge=0.0,
        description="Nominal electron dose per tilt image in e⁻/Å² (per-tilt values live on the tilts).",
    )
    magnification: float | None = Field(
        default=None, gt=0.0, description="Nominal magnification (unitless), if known."
    )
    frames_per_tilt: PositiveInt | None = Field(
        default=None, description="Number of movie frames recorded per tilt, if constant and known."
    )
    exposure_time_per_tilt_s: float | None = Field(
        default=None, gt=0.0, description="Exposure time of one tilt image in seconds, if known."
    )
    super_resolution: bool = Field(
        default=False,
        description="Whether the frames were recorded in super-resolution mode (pixel size is then half "
        "the physical detector pixel).",
    )
    gain_reference_file: Path | None = Field(
        default=None, description="Gain reference image (MRC or TIFF) to multiply frames by, if needed."
    )
    defects_file: Path | None = Field(
        default=None, description="Detector defects file (bad pixels/lines), if any."
    )
    microscope: str | None = Field(default=None, description="Free-text microscope name, for provenance.")
    detector: str | None = Field(default=None, description="Free-text detector name, for provenance.")

    @property
    def electron_wavelength_angstrom(self) -> float:
        """Relativistic electron wavelength in Å for :attr:`voltage_kv`.

        Returns
        -------
        float
            λ = h / sqrt(2 m₀ e V (1 + e V / (2 m₀ c²))), e.g. 0.0197 Å at 300 kV.
        """
        volts = self.voltage_kv * 1e3
        return 12.264259661581491 / (volts * (1.0 + 0.978466e-6 * volts)) ** 0.5
