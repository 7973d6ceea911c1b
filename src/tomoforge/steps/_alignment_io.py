"""What the alignment steps share: a binned working copy of a tilt series, and writing their results.

The working copy holds the included tilts only (stack order), each Fourier-binned by one factor after cropping to
the window that keeps its centre pixel ``N // 2`` on the binned centre (:func:`tomoforge.steps.preprocess.binned_window`),
so a position ``p`` relative to the centre in binned pixels is ``b·p`` in pixels of the stack; memory is one
binned stack plus one full image.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from tomoforge.models import TiltSeries, TiltTransform

__all__ = [
    "WorkingStack",
    "export_imod_alignment",
    "rigid_transforms",
    "working_stack",
    "write_aligned_stack",
]


class WorkingStack:
    """Binned images of the included tilts of a series (see the module docstring)."""

    def __init__(
        self,
        images: Any,
        indices: list[int],
        factor: int,
        pixel_size_angstrom: float,
        origin_xy_px: tuple[int, int] = (0, 0),
    ) -> None:
        self.images = images
        """``(m, h', w')`` float32 torch tensor, the included tilts in stack order."""
        self.indices = indices
        """Stack index of every working image."""
        self.factor = factor
        """Binning factor of the working images relative to the stack."""
        self.pixel_size_angstrom = pixel_size_angstrom
        """Pixel size of the working images in Å."""
        self.origin_xy_px = origin_xy_px
        """Stack pixel ``(x, y)`` of working pixel ``(0, 0)``: stack = origin + factor · working."""

    def to_stack_px(self, xy_px: np.ndarray) -> np.ndarray:
        """0-based working-pixel positions ``(..., 2)`` → 0-based stack-pixel positions."""
        return np.asarray(xy_px, dtype=np.float64) * self.factor + np.asarray(
            self.origin_xy_px, dtype=np.float64
        )

    def from_stack_px(self, xy_px: np.ndarray) -> np.ndarray:
        """0-based stack-pixel positions ``(..., 2)`` → 0-based working-pixel positions."""
        return (
            np.asarray(xy_px, dtype=np.float64) - np.asarray(self.origin_xy_px, dtype=np.float64)
        ) / self.factor

    def translations_xf(self, series: TiltSeries) -> Any:
        """``(m, 2, 3)`` translation-only raw → aligned transforms in working pixels (IMOD meaning about ``N // 2``)
        from the series' rigid transforms: the shift ``t = A⁻¹·d`` applied before the rotation, or 0 without one."""
        import torch

        out = torch.zeros((len(self.indices), 2, 3), dtype=torch.float64)
        out[:, 0, 0] = out[:, 1, 1] = 1.0
        for k, index in enumerate(self.indices):
            transform = series.tilts[index].transform
            if transform is not None:
                m = transform.as_matrix(self.pixel_size_angstrom)
                out[k, :, 2] = torch.from_numpy(np.linalg.solve(m[:2, :2], m[:2, 2]))
        return out


def working_stack(
    series: TiltSeries, *, max_size_px: int | None = None, factor: int | None = None
) -> WorkingStack:
    """Read the included tilts of ``series``, binned by ``factor`` or so that no side exceeds ``max_size_px``."""
    import torch

    from tomoforge.fourier import fourier_bin_2d
    from tomoforge.io.mrc import read_mrc
    from tomoforge.steps.preprocess import binned_window

    volume = read_mrc(series.stack_file)
    data = volume.data
    height, width = int(data.shape[-2]), int(data.shape[-1])
    if factor is None:
        factor = max(1, math.ceil(max(height, width) / max_size_px)) if max_size_px else 1
    (y0, my), (x0, mx) = binned_window(height, factor), binned_window(width, factor)
    indices = [t.index for t in series.tilts if not t.excluded]
    if len(indices) < 3:
        raise ValueError(f"{series.stack_file}: fewer than 3 tilts are included, nothing to align")
    images = torch.empty((len(indices), my, mx), dtype=torch.float32)
    for k, index in enumerate(indices):
        window = np.array(data[index, y0 : y0 + factor * my, x0 : x0 + factor * mx], dtype=np.float32)
        if not np.isfinite(window).all():
            raise ValueError(f"{series.stack_file}: image {index} holds NaN or infinite values")
        image = torch.from_numpy(window)
        images[k] = fourier_bin_2d(image, factor) if factor > 1 else image
    return WorkingStack(images, indices, factor, series.pixel_size_angstrom * factor, (x0, y0))


def rigid_transforms(
    shifts_xy_px: np.ndarray, tilt_axis_deg: np.ndarray | float, pixel_size_angstrom: float
) -> list[TiltTransform]:
    """Transforms that shift raw images by ``shifts`` then rotate the tilt axis onto Y: ``A = Rz(−α)``, ``d = A·t``.

    CONVENTIONS.md §6: the aligned image has the axis vertical, so ``α = atan2(A12, A11)`` recovers the axis.
    """
    shifts = np.asarray(shifts_xy_px, dtype=np.float64).reshape(-1, 2) * pixel_size_angstrom
    axis = np.broadcast_to(np.asarray(tilt_axis_deg, dtype=np.float64), (len(shifts),))
    return [
        TiltTransform(dx_angstrom=float(tx), dy_angstrom=float(ty)).compose(
            TiltTransform.from_rotation(-float(a))
        )
        for (tx, ty), a in zip(shifts, axis, strict=True)
    ]


def export_imod_alignment(folder: Path, series: TiltSeries) -> None:
    """Write ``<ts>.xf`` and ``<ts>.tlt`` (IMOD files, stack order; excluded tilts get the identity) for users."""
    from tomoforge.io.imod.tlt import write_tlt
    from tomoforge.io.imod.xf import transforms_to_xf, write_xf

    if series.image_shape_yx is None:
        return
    h, w = series.image_shape_yx
    transforms = [t.transform or TiltTransform.identity() for t in series.tilts]
    write_xf(transforms_to_xf(transforms, series.pixel_size_angstrom, (w, h)), folder / f"{series.ts_id}.xf")
    write_tlt([t.effective_tilt_angle_deg for t in series.tilts], folder / f"{series.ts_id}.tlt")


def write_aligned_stack(folder: Path, series: TiltSeries, binning: int) -> Path:
    """Write ``<ts>_ali.mrc``: the included tilts resampled through their transforms (newstack ``-xform``).

    The images are Fourier-binned by ``binning`` first and interpolated bicubically
    (:func:`tomoforge.alignment.transform_images`); when the transforms rotate by 45°–135° (a tilt axis near
    horizontal brought onto Y) the output has X and Y sizes swapped, as IMOD's. One image is in memory at a time.
    """
    import torch

    from tomoforge.alignment.transform import transform_images
    from tomoforge.io.mrc import MrcWriter, read_mrc
    from tomoforge.steps.preprocess import binned_window

    data = read_mrc(series.stack_file).data
    h, w = int(data.shape[-2]), int(data.shape[-1])
    tilts = [t for t in series.tilts if not t.excluded and t.transform is not None]
    if not tilts:
        raise ValueError(f"{series.stack_file}: no included tilt has a transform, nothing to interpolate")
    (y0, my), (x0, mx) = binned_window(h, binning), binned_window(w, binning)
    angle = abs(tilts[0].transform.rotation_deg) % 180.0 if tilts[0].transform else 0.0
    shape = (mx, my) if 45.0 < angle < 135.0 else (my, mx)
    path = folder / f"{series.ts_id}_ali.mrc"
    px = series.pixel_size_angstrom
    with MrcWriter(path, (len(tilts), *shape), voxel_size_angstrom=px * binning, is_stack=True) as out:
        for k, tilt in enumerate(tilts):
            assert tilt.transform is not None
            window = np.array(
                data[tilt.index, y0 : y0 + binning * my, x0 : x0 + binning * mx], dtype=np.float32
            )
            xf = torch.from_numpy(tilt.transform.as_matrix(px)[:2].copy())
            image = transform_images(torch.from_numpy(window), xf, binning=binning, output_shape_yx=shape)
            out.write(image.numpy().astype(np.float32), k)
    return path
