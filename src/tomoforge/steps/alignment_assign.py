"""Step ``alignment.assign``: give one tilt series the alignment found on another → ``tilt_series``.

As Scipion's "assign alignment" (``../shared/docs/tutorial-steps.md`` §8), used in the tutorial to align the
unfiltered, X-ray-erased series with the transforms found on its dose-filtered copy. Series are matched by
``ts_id`` and tilts by acquisition order. A matched tilt takes the source's transform (IMOD ``.xf`` meaning,
CONVENTIONS.md §6), refined tilt angle, x-axis tilt and exclusion; its own stack, doses and CTF stay. Transforms
keep their shifts in Å, so a source at another pixel size (e.g. aligned at binning 4) needs no rescaling — the
shift in pixels of the target is ``shift_Å / target pixel size``, Scipion's division by the sampling ratio. A
target tilt without a counterpart in the source is excluded, with no transform. The tilt-axis angle of the
acquisition is taken from the source.

Stacks are hard-linked into the output folder (copied across file systems); sidecars of the target are copied, and
the alignment sidecars of the source (``<ts>_fiducials.json``, ``<ts>_alignment.json`` and IMOD exports) too.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field

from tomoforge.workflow import Artifact, Inputs, InputSpec, RunContext, step

__all__ = ["AssignAlignmentParams", "assign_alignment"]

ALIGNMENT_FILES = ("_fiducials.json", "_alignment.json", ".xf", ".tlt", ".xtilt")
"""Per-series files (after ``<ts>``) an alignment step writes and ``alignment.assign`` carries over."""


class AssignAlignmentParams(BaseModel):
    """Parameters of ``alignment.assign``."""

    require_all_series: bool = Field(
        True,
        description="Fail when a target tilt series has no counterpart (same ts_id) in the aligned input.",
    )


def _summary(outputs: dict[str, Artifact]) -> dict[str, object]:
    from tomoforge.steps._artifacts import read_tilt_series

    return {
        s.ts_id: {
            "tilts": s.n_tilts,
            "aligned_tilts": sum(t.transform is not None for t in s.tilts),
            "excluded_tilts": sum(t.excluded for t in s.tilts),
            "pixel_size_angstrom": s.pixel_size_angstrom,
            "tilt_axis_angle_deg": s.acquisition.tilt_axis_angle_deg,
        }
        for s in read_tilt_series(outputs["tilt_series"].path)
    }


@step(
    name="alignment.assign",
    version="1",
    inputs={
        "aligned": InputSpec(kind="tilt_series", description="Tilt series whose alignment is copied."),
        "tilt_series": InputSpec(kind="tilt_series", description="Tilt series that receives the alignment."),
    },
    outputs={"tilt_series": "tilt_series"},
    summary=_summary,
    methods=lambda params: (
        "The alignment (transforms and refined tilt angles) was assigned to the unfiltered tilt series by "
        "tilt-series identifier and acquisition order."
    ),
)
def assign_alignment(params: AssignAlignmentParams, inputs: Inputs, ctx: RunContext) -> dict[str, Path]:
    """Copy transforms and refined tilt angles from ``aligned`` onto the tilts of ``tilt_series``."""
    import shutil

    from tomoforge.steps._artifacts import pass_through, read_tilt_series

    source_folder, target_folder = inputs.path("aligned"), inputs.path("tilt_series")
    sources = {s.ts_id: s for s in read_tilt_series(source_folder)}
    out = ctx.work_dir / "tilt_series"
    out.mkdir()
    targets = read_tilt_series(target_folder)
    missing = [t.ts_id for t in targets if t.ts_id not in sources]
    if missing and params.require_all_series:
        raise ValueError(
            f"{source_folder}: holds no alignment for the tilt series {', '.join(missing)} "
            "(set require_all_series to false to pass them through unaligned)"
        )
    for target in targets:
        source = sources.get(target.ts_id)
        if source is not None and source.aligned:
            raise ValueError(
                f"{source_folder / (source.ts_id + '.json')}: its transforms were already applied to its stack, "
                "so they cannot be assigned to a raw tilt series"
            )
        by_order = {} if source is None else {t.acquisition_order: t for t in source.tilts}
        tilts = []
        for tilt in target.tilts:
            match = by_order.get(tilt.acquisition_order)
            if match is None:
                tilts.append(tilt.model_copy(update={"transform": None, "excluded": True}))
                continue
            tilts.append(
                tilt.model_copy(
                    update={
                        "transform": match.transform,
                        "refined_tilt_angle_deg": match.refined_tilt_angle_deg,
                        "x_tilt_angle_deg": match.x_tilt_angle_deg,
                        "excluded": tilt.excluded or match.excluded,
                    }
                )
            )
        matched = sum(t.acquisition_order in by_order for t in target.tilts)
        ctx.logger.info("%s: alignment assigned to %d of %d tilts", target.ts_id, matched, target.n_tilts)
        acquisition = target.acquisition
        if source is not None:
            acquisition = acquisition.model_copy(
                update={"tilt_axis_angle_deg": source.acquisition.tilt_axis_angle_deg}
            )
        pass_through(target_folder, out, target, update={"tilts": tilts, "acquisition": acquisition})
        if source is not None:
            for suffix in ALIGNMENT_FILES:
                path = source_folder / f"{target.ts_id}{suffix}"
                if path.is_file():
                    shutil.copyfile(path, out / path.name)
    return {"tilt_series": out}
