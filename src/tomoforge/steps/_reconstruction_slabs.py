"""How ``tomogram.reconstruct`` reads its views and builds a tomogram slab by slab (its memory-bounded core).

:class:`ViewRows` reads the same rows of every present aligned view from an MRC stack; :func:`aligned_views`
makes such a stack when the input is raw (interpolated through the transforms) or to be binned; :class:`SlabPlan`
holds what the full, even and odd stacks of one tomogram share (filters, sparse projector); :func:`reconstruct_stack`
writes the slabs into the output MRC.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from tomoforge.models import TiltImage, TiltSeries
    from tomoforge.steps.reconstruct import ReconstructParams

__all__ = [
    "X_TILT_TOLERANCE_DEG",
    "SlabGeometry",
    "SlabPlan",
    "ViewRows",
    "aligned_views",
    "reconstruct_stack",
]

X_TILT_TOLERANCE_DEG = 1e-3
"""Views whose x-axis tilts are all within this of 0 use the single-axis (sparse) projector."""


class ViewRows:
    """Rows of the aligned present views, read from an MRC stack one slab at a time."""

    def __init__(self, path: Path, indices: list[int]) -> None:
        from tomoforge.io.mrc import read_mrc

        self.path, self.indices = path, indices
        self.data = read_mrc(path).data
        self.height, self.width = int(self.data.shape[-2]), int(self.data.shape[-1])

    def rows(self, r0: int, r1: int, device: torch.device) -> torch.Tensor:
        import numpy as np
        import torch

        block = np.stack([np.asarray(self.data[i, r0:r1], dtype=np.float32) for i in self.indices])
        if not np.isfinite(block).all():
            raise ValueError(f"{self.path}: rows {r0}-{r1 - 1} hold NaN or infinite values")
        return torch.from_numpy(block).to(device)


def _binned_copy(stack: Path, indices: list[int], binning: int, path: Path, pixel: float) -> Path:
    """The views ``indices`` of an aligned stack, Fourier-binned about their centre, as a scratch stack."""
    import numpy as np
    import torch

    from tomoforge.fourier import fourier_bin_2d
    from tomoforge.io.mrc import MrcWriter, read_mrc
    from tomoforge.steps.preprocess import binned_window

    data = read_mrc(stack).data
    (y0, my), (x0, mx) = (
        binned_window(int(data.shape[-2]), binning),
        binned_window(int(data.shape[-1]), binning),
    )
    with MrcWriter(path, (len(indices), my, mx), voxel_size_angstrom=pixel * binning, is_stack=True) as out:
        for k, index in enumerate(indices):
            window = np.array(data[index, y0 : y0 + binning * my, x0 : x0 + binning * mx], dtype=np.float32)
            out.write(fourier_bin_2d(torch.from_numpy(window), binning).numpy(), k)
    return path


def aligned_views(
    series: TiltSeries, stack: Path, present: list[TiltImage], binning: int, scratch: Path, device: Any
) -> ViewRows:
    """The present views of ``stack`` in aligned form at the output binning (interpolated/binned if needed)."""
    from tomoforge.steps._alignment_io import write_aligned_stack

    path = scratch / f"{stack.stem}_views.mrc"
    if not series.aligned:
        write_aligned_stack(scratch, series, binning, tilts=present, stack=stack, path=path, device=device)
        return ViewRows(path, list(range(len(present))))
    if binning > 1:
        _binned_copy(stack, [t.index for t in present], binning, path, series.pixel_size_angstrom)
        return ViewRows(path, list(range(len(present))))
    return ViewRows(stack, [t.index for t in present])


class SlabGeometry:
    """Output shape and offsets of one tomogram from the views' shape and the parameters."""

    def __init__(self, params: ReconstructParams, height: int, width: int, series: TiltSeries) -> None:
        stop = params.y_stop or height
        if params.y_start >= height or stop > height:
            raise ValueError(
                f"{series.stack_file}: rows {params.y_start}-{stop - 1} asked for, but the views of {series.ts_id} "
                f"have {height} rows at this binning"
            )
        self.row_start = params.y_start
        ny = stop - params.y_start
        self.shape_zyx = (params.thickness_px, ny, params.width_px or width)
        self.offset_xyz_px = (0.0, float(params.y_start + ny // 2 - height // 2), float(params.z_offset_px))


class SlabPlan:
    """What every stack of one tomogram shares: filters, the sparse projector (and its transpose for SIRT) or the
    projection matrices of views with an x-axis tilt, and the slab size. Built once, used for full, even and odd."""

    def __init__(
        self,
        tilts: list[TiltImage],
        geometry: SlabGeometry,
        params: ReconstructParams,
        shape_yx: tuple[int, int],
        device: torch.device,
        source: Path,
    ) -> None:
        import torch

        from tomoforge.fourier.windows import fast_fft_size
        from tomoforge.geometry import projection_matrices
        from tomoforge.reconstruction import (
            full_ray_width,
            single_axis_matrix,
            transpose_matrix,
            weighting_filters,
        )

        self.geometry, self.params, self.device = geometry, params, device
        self.height, self.width = shape_yx
        angles = [t.effective_tilt_angle_deg for t in tilts]
        x_tilts = [t.x_tilt_angle_deg for t in tilts]
        self.single_axis = max(abs(x) for x in x_tilts) <= X_TILT_TOLERANCE_DEG
        if not self.single_axis and params.method == "sirt":
            raise ValueError(
                f"{source}: views with an x-axis tilt ({max(abs(x) for x in x_tilts):.3f}°) are reconstructed by "
                "WBP only; use method 'wbp'"
            )
        nz, _, nx = geometry.shape_zyx
        _, _, oz = geometry.offset_xyz_px
        self.padded = fast_fft_size(2 * self.width)
        self.filters = weighting_filters(
            angles,
            self.padded,
            cutoff=params.radial_cutoff,
            sigma=params.radial_falloff,
            hamming_cutoff=params.hamming_cutoff,
            sirt_like_iterations=params.sirt_like_iterations or None,
            thickness_px=float(nz),
            device=device,
        )
        self.solve_width, self.crop = nx, 0
        self.matrix: torch.Tensor | None = None
        self.transposed: torch.Tensor | None = None
        self.matrices: torch.Tensor | None = None
        if self.single_axis:
            if params.method == "sirt":
                self.solve_width = full_ray_width(
                    angles, detector_width=self.width, thickness=nz, volume_width=nx, z_offset_px=oz
                )
                self.crop = self.solve_width // 2 - nx // 2
            self.matrix = single_axis_matrix(
                angles,
                detector_width=self.width,
                volume_width=self.solve_width,
                thickness=nz,
                x_offset_px=geometry.offset_xyz_px[0],
                z_offset_px=oz,
                device=device,
            )
            self.transposed = transpose_matrix(self.matrix) if params.method == "sirt" else None
        else:
            self.matrices = projection_matrices(torch.tensor(angles), 0.0, None, torch.tensor(x_tilts))
        self.rows_per_slab = self._slab_rows(len(tilts))

    def _slab_rows(self, n_views: int) -> int:
        """Rows per slab: the parameter, or as many as fit in about 256 MB of working memory."""
        if self.params.slab_rows:
            return self.params.slab_rows
        nz, ny, _ = self.geometry.shape_zyx
        if self.params.method == "sirt":  # projections, residual; slab, update, crop on the wide slab
            per_row = 4 * (3 * n_views * self.width + 3 * nz * self.solve_width)
        else:  # rows, padded rows and spectra; slab and its re-ordered copy
            per_row = 4 * (6 * n_views * self.width + 3 * nz * self.solve_width)
        return max(1, min(ny, (256 * 2**20) // per_row))

    def slab(self, views: ViewRows, j0: int, j1: int) -> torch.Tensor:
        """Tomogram rows ``[j0, j1)`` ``(nz, j1 − j0, nx)`` from the views."""
        from tomoforge.reconstruction import (
            backproject_general,
            backproject_single_axis,
            general_rows_needed,
            sirt_slab,
            weight_projections,
        )

        g, p = self.geometry, self.params
        nz, _, nx = g.shape_zyx
        if self.matrix is not None:
            rows = views.rows(g.row_start + j0, g.row_start + j1, self.device)
            if self.transposed is not None:
                wide = sirt_slab(
                    self.matrix,
                    self.transposed,
                    rows,
                    thickness=nz,
                    volume_width=self.solve_width,
                    iterations=p.iterations,
                    relaxation=p.relaxation,
                )
                return wide[..., self.crop : self.crop + nx]
            return backproject_single_axis(
                self.matrix, weight_projections(rows, self.filters, self.padded), nz, nx
            )
        assert self.matrices is not None
        r0, r1 = general_rows_needed(self.matrices, g.shape_zyx, (j0, j1), g.offset_xyz_px, self.height)
        rows = weight_projections(views.rows(r0, r1, self.device), self.filters, self.padded)
        return backproject_general(
            rows, r0, self.height, self.matrices, g.shape_zyx, (j0, j1), g.offset_xyz_px
        )


def reconstruct_stack(
    views: ViewRows, plan: SlabPlan, out_path: Path, voxel_size: float, progress: Any
) -> None:
    """Reconstruct one stack's present views into ``out_path`` slab by slab."""
    from tomoforge.io.mrc import MrcWriter

    if (views.height, views.width) != (plan.height, plan.width):
        raise ValueError(
            f"{views.path}: views of {views.height} × {views.width} px where the tomogram's other stacks have "
            f"{plan.height} × {plan.width}"
        )
    nz, ny, nx = plan.geometry.shape_zyx
    ox, oy, oz = plan.geometry.offset_xyz_px
    origin = ((ox - nx // 2) * voxel_size, (oy - ny // 2) * voxel_size, (oz - nz // 2) * voxel_size)
    with MrcWriter(
        out_path, plan.geometry.shape_zyx, voxel_size_angstrom=voxel_size, origin_angstrom=origin
    ) as out:
        for j0 in range(0, ny, plan.rows_per_slab):
            j1 = min(ny, j0 + plan.rows_per_slab)
            out.write_rows(plan.slab(views, j0, j1).cpu().numpy(), j0)
            progress(j1 - j0)
