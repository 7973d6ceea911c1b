"""Step ``tomogram.reconstruct``: weighted back-projection or SIRT of the present views, slab by slab.

As Scipion's "tomo3d - reconstruct tomogram" (``../shared/docs/tutorial-steps.md`` §13) and IMOD ``tilt``: the
views that are present (not excluded) are taken in their aligned form, the tilt axis along y and the specimen
origin at the centre pixel: an aligned stack (``ctf.correct``, ``preprocess.bin`` of an aligned stack) is read as it
is, a raw stack with transforms is first interpolated through them (``newstack -xform``) into a scratch file. The
tilt angles are the refined ones (nominal when not refined) and x-axis tilts are honoured (then WBP only).

The tomogram is made in slabs of rows along the tilt axis, each from the same rows of every view
(:mod:`tomoforge.reconstruction`), so memory is bounded by a slab and the sparse projector, not the volume; slabs
are written straight into the output MRC. Output geometry (CONVENTIONS.md §11): axes ``(z, y, x)``, x and y those
of the aligned views, z towards the electron source at zero tilt, the centre voxel at the specimen position
``(0, y offset of the row range, z_offset_px)``: the specimen the same way up as IMOD's ``tilt`` + ``trimvol -rx``
and RELION 5's reconstructions. Even/odd tomograms come from the even/odd stacks with the same geometry.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

from tomoforge.workflow import Artifact, Inputs, InputSpec, RunContext, step

if TYPE_CHECKING:
    import torch

    from tomoforge.models import TiltImage, TiltSeries

__all__ = ["ReconstructParams", "reconstruct_tomograms"]

_X_TILT_TOLERANCE_DEG = 1e-3


class ReconstructParams(BaseModel):
    """Parameters of ``tomogram.reconstruct`` (tomo3d / IMOD tilt options in brackets)."""

    method: Literal["wbp", "sirt"] = Field(
        "wbp", description="'wbp': weighted back-projection; 'sirt': SIRT iterations (tomo3d -S)."
    )
    thickness_px: int = Field(
        300, ge=1, description="Tomogram thickness in output voxels (tomo3d -z, THICKNESS)."
    )
    width_px: int = Field(
        0, ge=0, description="Tomogram width in voxels, centred; 0 = the views' width (tomo3d -x)."
    )
    y_start: int = Field(0, ge=0, description="First view row to reconstruct (0-based; tomo3d -y, SLICE).")
    y_stop: int = Field(0, ge=0, description="Row after the last one to reconstruct; 0 = to the end.")
    z_offset_px: float = Field(
        0.0,
        description="Specimen height (voxels, towards the source) of the tomogram's centre: a positive value moves "
        "the reconstructed slab up (IMOD SHIFT z).",
    )
    binning: int = Field(1, ge=1, description="Fourier binning of the views before reconstruction.")
    radial_cutoff: float | None = Field(
        0.35,
        gt=0,
        le=0.5,
        description="WBP: radial weighting cut-off in cycles/pixel (IMOD RADIAL); none for no cut-off.",
    )
    radial_falloff: float = Field(
        0.035,
        ge=0,
        description="WBP: standard deviation of the Gaussian fall-off above the cut-off (cycles/pixel).",
    )
    hamming_cutoff: float | None = Field(
        None, gt=0, le=0.5, description="WBP: Hamming window up to this frequency (cycles/pixel; tomo3d -H)."
    )
    sirt_like_iterations: int = Field(
        0,
        ge=0,
        description="WBP: weight like this many SIRT iterations (SIRT-like contrast; IMOD FakeSIRTiterations); 0 = off.",
    )
    iterations: int = Field(30, ge=1, description="SIRT: number of iterations (tomo3d -l).")
    relaxation: float = Field(1.0, gt=0, lt=2, description="SIRT: relaxation factor λ.")
    even_odd: bool = Field(
        False, description="Also reconstruct the even/odd half stacks when the series has them."
    )
    slab_rows: int = Field(
        0, ge=0, description="Rows per slab; 0 = as many as fit in about 256 MB of working memory."
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Where to compute: 'auto' uses the GPU when one is present."
    )


def _validate(params: ReconstructParams, inputs: Inputs) -> list[str]:
    problems = []
    if params.y_stop and params.y_stop <= params.y_start:
        problems.append(f"y_stop ({params.y_stop}) must be larger than y_start ({params.y_start}).")
    if params.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            problems.append("device is 'cuda' but no CUDA GPU is available.")
    return problems


def _summary(outputs: dict[str, Artifact]) -> dict[str, object]:
    folder = outputs["tomograms"].path
    result: dict[str, object] = {}
    for path in sorted(folder.glob("*_reconstruction.json")):
        record = json.loads(path.read_text(encoding="utf-8"))
        ts_id = record["ts_id"]
        result[ts_id] = {
            "method": record["method"],
            "size_xyz_voxels": " × ".join(str(n) for n in reversed(record["shape_zyx"])),
            "voxel_size_angstrom": record["voxel_size_angstrom"],
            "views_used": len(record["acquisition_orders_used"]),
            "excluded_acquisition_orders": record["excluded_acquisition_orders"],
            "seconds": record["seconds"],
            "xy_slice": f"{ts_id}_xy.png",
            "xz_slice": f"{ts_id}_xz.png",
        }
    return result


def _methods(params: ReconstructParams) -> str:
    if params.method == "sirt":
        how = (
            f"with {params.iterations} iterations of SIRT (Gilbert 1972, J. Theor. Biol. 36, 105-117; relaxation "
            f"{params.relaxation:g})"
        )
    else:
        filters = []
        if params.radial_cutoff is not None:
            filters.append(
                f"a radial cut-off at {params.radial_cutoff:g} cycles/pixel with a Gaussian fall-off of "
                f"{params.radial_falloff:g}"
            )
        if params.hamming_cutoff is not None:
            filters.append(f"a Hamming window up to {params.hamming_cutoff:g} cycles/pixel")
        if params.sirt_like_iterations:
            filters.append(
                f"a SIRT-like filter equivalent to {params.sirt_like_iterations} iterations (Zeng 2012, "
                "doi:10.1118/1.3697736)"
            )
        how = "by weighted back-projection (Radermacher 1992) with exact angular weighting" + (
            ", " + " and ".join(filters) if filters else ""
        )
    binning = f" binned by {params.binning}," if params.binning > 1 else ""
    return (
        f"Tomograms {params.thickness_px} voxels thick were reconstructed from the aligned present views,{binning} "
        f"{how}, slab by slab along the tilt axis as in tomo3d (Agulleiro & Fernandez 2011, Bioinformatics 27, "
        "582-583)."
    )


class _ViewRows:
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


def _present(series: TiltSeries) -> list[TiltImage]:
    present = series.included()
    if len(present) < 2:
        raise ValueError(
            f"{series.stack_file}: {series.ts_id} has {len(present)} present view(s); need at least 2"
        )
    if not series.aligned:
        missing = [t.index for t in present if t.transform is None]
        if missing:
            raise ValueError(
                f"{series.stack_file}: views {missing} of {series.ts_id} have no alignment transform; align the "
                "series (or exclude those views) before reconstructing"
            )
    return present


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


def _aligned_views(
    series: TiltSeries, stack: Path, present: list[TiltImage], binning: int, scratch: Path, device: Any
) -> _ViewRows:
    """The present views of ``stack`` in aligned form at the output binning (interpolated/binned if needed)."""
    from tomoforge.steps._alignment_io import write_aligned_stack

    path = scratch / f"{stack.stem}_views.mrc"
    if not series.aligned:
        write_aligned_stack(scratch, series, binning, tilts=present, stack=stack, path=path, device=device)
        return _ViewRows(path, list(range(len(present))))
    if binning > 1:
        _binned_copy(stack, [t.index for t in present], binning, path, series.pixel_size_angstrom)
        return _ViewRows(path, list(range(len(present))))
    return _ViewRows(stack, [t.index for t in present])


class _Geometry:
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


class _Plan:
    """What every stack of one tomogram shares: filters, the sparse projector (and its transpose for SIRT) or the
    projection matrices of views with an x-axis tilt, and the slab size. Built once, used for full, even and odd."""

    def __init__(
        self,
        tilts: list[TiltImage],
        geometry: _Geometry,
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
        self.single_axis = max(abs(x) for x in x_tilts) <= _X_TILT_TOLERANCE_DEG
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

    def slab(self, views: _ViewRows, j0: int, j1: int) -> torch.Tensor:
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


def _reconstruct(views: _ViewRows, plan: _Plan, out_path: Path, voxel_size: float, progress: Any) -> None:
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


def _record(
    series: TiltSeries,
    present: list[TiltImage],
    geometry: _Geometry,
    params: ReconstructParams,
    extra: dict[str, Any],
) -> dict[str, Any]:
    used = {t.index for t in present}
    return {
        "ts_id": series.ts_id,
        "method": params.method,
        "shape_zyx": list(geometry.shape_zyx),
        "offset_xyz_px": list(geometry.offset_xyz_px),
        "acquisition_orders_used": [t.acquisition_order for t in present],
        "tilt_angles_used_deg": [t.effective_tilt_angle_deg for t in present],
        "excluded_acquisition_orders": [t.acquisition_order for t in series.tilts if t.index not in used],
        "input_aligned": series.aligned,
        **extra,
    }


@step(
    name="tomogram.reconstruct",
    version="1",
    inputs={
        "tilt_series": InputSpec(
            kind="tilt_series",
            description="Aligned tilt series (e.g. CTF-corrected), or raw stacks whose views carry transforms.",
        )
    },
    outputs={"tomograms": "tomograms"},
    validate=_validate,
    summary=_summary,
    methods=_methods,
)
def reconstruct_tomograms(params: ReconstructParams, inputs: Inputs, ctx: RunContext) -> dict[str, Path]:
    """Reconstruct a tomogram per tilt series by WBP or SIRT from its present aligned views (tomo3d, IMOD tilt)."""
    import shutil

    import torch

    from tomoforge.io.mrc import read_mrc
    from tomoforge.models import Tomogram
    from tomoforge.steps._artifacts import read_tilt_series
    from tomoforge.steps._tomograms import write_slice_pngs, write_tomogram_model
    from tomoforge.workflow.fsutil import atomic_write_text

    if params.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(params.device)
    out = ctx.work_dir / "tomograms"
    out.mkdir()
    scratch = ctx.work_dir / "scratch"
    scratch.mkdir()
    try:
        for series in read_tilt_series(inputs.path("tilt_series")):
            started = time.perf_counter()
            present = _present(series)
            stacks = {"volume_file": (series.stack_file, out / f"{series.ts_id}.mrc")}
            if params.even_odd and series.even_stack_file is not None and series.odd_stack_file is not None:
                stacks["even_volume_file"] = (series.even_stack_file, out / f"{series.ts_id}_even.mrc")
                stacks["odd_volume_file"] = (series.odd_stack_file, out / f"{series.ts_id}_odd.mrc")
            written: dict[str, Path | None] = {"even_volume_file": None, "odd_volume_file": None}
            voxel = series.pixel_size_angstrom * params.binning
            geometry: _Geometry | None = None
            plan: _Plan | None = None
            seconds: dict[str, float] = {}
            for field, (stack, target) in stacks.items():
                t0 = time.perf_counter()
                views = _aligned_views(series, stack, present, params.binning, scratch, device)
                if plan is None:
                    geometry = _Geometry(params, views.height, views.width, series)
                    plan = _Plan(
                        present, geometry, params, (views.height, views.width), device, series.stack_file
                    )
                t1 = time.perf_counter()
                progress = ctx.progress(
                    plan.geometry.shape_zyx[1], f"{series.ts_id}: {params.method.upper()} {target.stem}"
                )
                _reconstruct(views, plan, target, voxel, progress)
                progress.close()
                written[field] = target
                seconds[field] = time.perf_counter() - t1
                seconds[f"{field}_views"] = t1 - t0
                del views
                for leftover in scratch.iterdir():
                    leftover.unlink()
            assert geometry is not None
            ox, oy, oz = geometry.offset_xyz_px
            tomogram = Tomogram(
                ts_id=series.ts_id,
                volume_file=written["volume_file"] or out / f"{series.ts_id}.mrc",
                voxel_size_angstrom=voxel,
                shape_zyx=geometry.shape_zyx,
                origin_angstrom=(ox * voxel, oy * voxel, oz * voxel),
                reconstruction_method=params.method,
                binning=voxel / series.acquisition.pixel_size_angstrom,
                ctf_corrected=_ctf_corrected(inputs.path("tilt_series"), series),
                even_volume_file=written["even_volume_file"],
                odd_volume_file=written["odd_volume_file"],
            )
            write_tomogram_model(out, tomogram)
            write_slice_pngs(read_mrc(tomogram.volume_file).data, out, series.ts_id)
            total = time.perf_counter() - started
            record = _record(
                series,
                present,
                geometry,
                params,
                {
                    "voxel_size_angstrom": voxel,
                    "seconds": round(total, 3),
                    "timings_s": seconds,
                    "device": str(device),
                },
            )
            atomic_write_text(
                out / f"{series.ts_id}_reconstruction.json", json.dumps(record, indent=1) + "\n"
            )
            ctx.logger.info(
                "%s: %s tomogram %s at %.3f Å from %d views (%d excluded) in %.1f s on %s",
                series.ts_id,
                params.method.upper(),
                "×".join(str(n) for n in reversed(geometry.shape_zyx)),
                voxel,
                len(present),
                series.n_tilts - len(present),
                total,
                device,
            )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return {"tomograms": out}


def _ctf_corrected(folder: Path, series: TiltSeries) -> bool:
    """Whether the input came out of ``ctf.correct`` (it leaves ``<ts>_ctf_correction.csv``)."""
    return (folder / f"{series.ts_id}_ctf_correction.csv").is_file() and series.aligned
