"""What the alignment steps share: a binned working copy of a tilt series, and writing their results.

The working copy holds the included tilts only (stack order), each Fourier-binned by one factor after cropping to
the window that keeps its centre pixel ``N // 2`` on the binned centre (:func:`tomoforge.steps.preprocess.binned_window`),
so a position ``p`` relative to the centre in binned pixels is ``b·p`` in pixels of the stack; memory is one
binned stack plus one full image.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tomoforge.models import TiltSeries, TiltTransform

if TYPE_CHECKING:
    import torch

    from tomoforge.models import TiltImage

__all__ = [
    "AlignedViews",
    "WorkingStack",
    "export_imod_alignment",
    "rigid_transforms",
    "working_stack",
    "view_projection_matrix",
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


class AlignedViews:
    """How the views of a series are resampled into aligned images (newstack ``-xform``), one at a time.

    The raw images are cropped to the window whose binned centre is the raw centre (:func:`binned_window`),
    Fourier-binned by ``binning`` and interpolated bicubically through their transforms
    (:func:`tomoforge.alignment.transform_images`); when the transforms rotate by 45°–135° (a tilt axis near
    horizontal brought onto Y) the output has X and Y sizes swapped, as IMOD's.
    """

    def __init__(
        self, series: TiltSeries, binning: int, raw_shape_yx: tuple[int, int], tilts: list[Any]
    ) -> None:
        from tomoforge.steps.preprocess import binned_window

        if not tilts:
            raise ValueError(f"{series.stack_file}: no included tilt has a transform, nothing to interpolate")
        self.series, self.binning = series, binning
        self.window_yx = (binned_window(raw_shape_yx[0], binning), binned_window(raw_shape_yx[1], binning))
        (_, my), (_, mx) = self.window_yx
        first = tilts[0].transform
        angle = abs(first.rotation_deg) % 180.0 if first is not None else 0.0
        self.shape_yx = (mx, my) if 45.0 < angle < 135.0 else (my, mx)
        """Shape ``(h, w)`` of the aligned images."""
        self.pixel_size_angstrom = series.pixel_size_angstrom * binning
        """Pixel size of the aligned images in Å."""

    def image(self, data: Any, tilt: Any, device: Any = None) -> Any:
        """The aligned image ``(h, w)`` (float32 torch tensor on ``device``) of view ``tilt`` of the stack ``data``."""
        import torch

        from tomoforge.alignment.transform import transform_images

        if tilt.transform is None:
            raise ValueError(
                f"{self.series.stack_file}: view {tilt.index} has no transform to interpolate with"
            )
        b = self.binning
        (y0, my), (x0, mx) = self.window_yx
        window = np.array(data[tilt.index, y0 : y0 + b * my, x0 : x0 + b * mx], dtype=np.float32)
        if not np.isfinite(window).all():
            raise ValueError(f"{self.series.stack_file}: image {tilt.index} holds NaN or infinite values")
        xf = torch.from_numpy(tilt.transform.as_matrix(self.series.pixel_size_angstrom)[:2].copy())
        return transform_images(
            torch.from_numpy(window).to(device), xf.to(device), binning=b, output_shape_yx=self.shape_yx
        )


def write_aligned_stack(
    folder: Path,
    series: TiltSeries,
    binning: int,
    *,
    tilts: list[Any] | None = None,
    stack: Path | None = None,
    path: Path | None = None,
    process: Callable[[Any, Any], Any] | None = None,
    device: Any = None,
    progress: Callable[[], None] | None = None,
) -> Path:
    """Write the views resampled through their transforms (:class:`AlignedViews`), one image in memory at a time.

    Parameters
    ----------
    folder, series, binning
        Output folder, the series and the binning of the output.
    tilts
        Views to write, in output order; by default the included tilts that have a transform.
    stack
        Stack to read (e.g. an even/odd half); by default ``series.stack_file``.
    path
        Output file; by default ``<folder>/<ts>_ali.mrc``.
    process
        Applied to each aligned image (torch tensor) with its tilt before writing (e.g. CTF correction).
    device
        Where images are interpolated and processed.
    progress
        Called once per written image.

    Returns
    -------
    pathlib.Path
        The written stack.
    """
    from tomoforge.io.mrc import MrcWriter, read_mrc

    source = stack or series.stack_file
    data = read_mrc(source).data
    if data.ndim != 3 or data.shape[0] != series.n_tilts:
        raise ValueError(
            f"{source}: holds {data.shape[0] if data.ndim == 3 else 1} images for {series.n_tilts} tilts"
        )
    if tilts is None:
        tilts = [t for t in series.tilts if not t.excluded and t.transform is not None]
    views = AlignedViews(series, binning, (int(data.shape[-2]), int(data.shape[-1])), tilts)
    path = path or folder / f"{series.ts_id}_ali.mrc"
    shape = (len(tilts), *views.shape_yx)
    with MrcWriter(path, shape, voxel_size_angstrom=views.pixel_size_angstrom, is_stack=True) as out:
        for k, tilt in enumerate(tilts):
            image = views.image(data, tilt, device)
            if process is not None:
                image = process(image, tilt)
            out.write(image.cpu().numpy().astype(np.float32), k)
            if progress is not None:
                progress()
    return path


def view_projection_matrix(series: TiltSeries, tilt: TiltImage) -> torch.Tensor:
    """The view's projection matrix in pixels of the stack.

    An interpolated (``aligned``) stack has its tilt axis on Y and the tomogram centre at the image centre; a raw
    stack takes the view's transform when it has one, else the nominal tilt axis with no shift.
    """
    import torch

    from tomoforge.geometry import projection_matrices, projection_matrices_from_xf

    angle = torch.tensor(tilt.effective_tilt_angle_deg, dtype=torch.float64)
    if series.aligned:
        return projection_matrices(angle, 0.0, x_tilt_angles_deg=tilt.x_tilt_angle_deg)
    if tilt.transform is not None:
        m = torch.from_numpy(tilt.transform.as_matrix(series.pixel_size_angstrom))
        return projection_matrices_from_xf(m[:2, :2], m[:2, 2], angle, tilt.x_tilt_angle_deg)
    return projection_matrices(
        angle, series.acquisition.tilt_axis_angle_deg, x_tilt_angles_deg=tilt.x_tilt_angle_deg
    )
