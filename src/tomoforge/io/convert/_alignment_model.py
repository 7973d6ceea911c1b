"""The one data model of alignment conversions: :class:`Alignment`."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from tomoforge.models import TiltTransform

__all__ = ["Alignment", "size_xy"]


@dataclass(frozen=True)
class Alignment:
    """The alignment of one tilt series, per tilt in stack order.

    Attributes
    ----------
    ts_id
        Tilt-series id.
    tilt_angles_deg
        Tilt angle θ of each tilt (refined where the alignment refined it), degrees.
    transforms
        Raw → aligned transform of each tilt (shifts in Å); ``None`` only for an excluded tilt the input gives no
        transform for.
    excluded
        Whether each tilt is left out (default: none).
    x_tilt_angles_deg
        Rotation φ about x applied before the tilt (IMOD ``.xtilt``, RELION ``rlnTomoXTilt``), degrees (default 0).
    nominal_tilt_angles_deg
        Nominal stage tilt angles, when the input has them (RELION, Warp, an IMOD ``.rawtlt``).
    prior_dose_e_per_angstrom2
        Dose received before each tilt, when the input has it (RELION, Warp).
    pixel_size_angstrom
        Pixel size of the tilt images the IMOD/AreTomo numbers refer to, when known.
    image_size_xy
        ``(nx, ny)`` of those raw tilt images, when known.
    """

    ts_id: str
    tilt_angles_deg: tuple[float, ...]
    transforms: tuple[TiltTransform | None, ...]
    excluded: tuple[bool, ...] = ()
    x_tilt_angles_deg: tuple[float, ...] = ()
    nominal_tilt_angles_deg: tuple[float, ...] | None = None
    prior_dose_e_per_angstrom2: tuple[float, ...] | None = None
    pixel_size_angstrom: float | None = None
    image_size_xy: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        n = len(self.tilt_angles_deg)
        if n == 0:
            raise ValueError("an alignment needs at least one tilt")
        set_ = object.__setattr__
        set_(self, "tilt_angles_deg", tuple(float(a) for a in self.tilt_angles_deg))
        set_(self, "transforms", tuple(self.transforms))
        set_(self, "excluded", tuple(bool(e) for e in self.excluded) or (False,) * n)
        set_(self, "x_tilt_angles_deg", tuple(float(a) for a in self.x_tilt_angles_deg) or (0.0,) * n)
        for name in ("nominal_tilt_angles_deg", "prior_dose_e_per_angstrom2"):
            values = getattr(self, name)
            if values is not None:
                set_(self, name, tuple(float(v) for v in values))
        if self.image_size_xy is not None:
            set_(self, "image_size_xy", (int(self.image_size_xy[0]), int(self.image_size_xy[1])))
        for name in (
            "transforms",
            "excluded",
            "x_tilt_angles_deg",
            "nominal_tilt_angles_deg",
            "prior_dose_e_per_angstrom2",
        ):
            values = getattr(self, name)
            if values is not None and len(values) != n:
                raise ValueError(f"{name} has {len(values)} entries for {n} tilts")
        missing = [
            i
            for i, (t, e) in enumerate(zip(self.transforms, self.excluded, strict=True))
            if t is None and not e
        ]
        if missing:
            raise ValueError(f"included tilts {missing} have no transform")
        if self.pixel_size_angstrom is not None and not self.pixel_size_angstrom > 0:
            raise ValueError(f"pixel_size_angstrom must be positive, got {self.pixel_size_angstrom}")

    @property
    def n_tilts(self) -> int:
        """Number of tilts, excluded ones included."""
        return len(self.tilt_angles_deg)

    @property
    def n_excluded(self) -> int:
        """Number of excluded tilts."""
        return sum(self.excluded)

    def included_indices(self) -> list[int]:
        """Stack indices of the tilts not excluded."""
        return [i for i, e in enumerate(self.excluded) if not e]

    def replace(self, **changes: object) -> Alignment:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


def size_xy(size: Sequence[int] | None) -> tuple[int, int] | None:
    """``(nx, ny)`` as two positive integers (None stays None)."""
    if size is None:
        return None
    values = tuple(int(v) for v in size)
    if len(values) != 2 or min(values) < 1:
        raise ValueError(f"image_size_xy must be two positive integers (nx, ny), got {tuple(size)}")
    return values[0], values[1]
