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

from tomoforge.steps._device import device_problems, resolve_device
from tomoforge.workflow import Artifact, Inputs, InputSpec, RunContext, step

if TYPE_CHECKING:
    from tomoforge.models import TiltImage, TiltSeries
    from tomoforge.steps._reconstruction_slabs import SlabGeometry

__all__ = ["ReconstructParams", "reconstruct_tomograms"]


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
    problems += device_problems(params.device)
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


def _record(
    series: TiltSeries,
    present: list[TiltImage],
    geometry: SlabGeometry,
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

    from tomoforge.io.mrc import read_mrc
    from tomoforge.models import Tomogram
    from tomoforge.steps._artifacts import read_tilt_series
    from tomoforge.steps._reconstruction_slabs import SlabGeometry, SlabPlan, aligned_views, reconstruct_stack
    from tomoforge.steps._tomograms import write_slice_pngs, write_tomogram_model
    from tomoforge.workflow.fsutil import atomic_write_text

    device = resolve_device(params.device)
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
            geometry: SlabGeometry | None = None
            plan: SlabPlan | None = None
            seconds: dict[str, float] = {}
            for field, (stack, target) in stacks.items():
                t0 = time.perf_counter()
                views = aligned_views(series, stack, present, params.binning, scratch, device)
                if plan is None:
                    geometry = SlabGeometry(params, views.height, views.width, series)
                    plan = SlabPlan(
                        present, geometry, params, (views.height, views.width), device, series.stack_file
                    )
                t1 = time.perf_counter()
                progress = ctx.progress(
                    plan.geometry.shape_zyx[1], f"{series.ts_id}: {params.method.upper()} {target.stem}"
                )
                reconstruct_stack(views, plan, target, voxel, progress)
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
