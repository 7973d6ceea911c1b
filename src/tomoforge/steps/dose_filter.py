"""Step ``dose.filter``: Grant & Grigorieff exposure filter of every tilt → a dose-filtered ``tilt_series``.

Input and output are ``tilt_series`` folders (:mod:`tomoforge.steps._artifacts`). Each image is filtered with
:func:`tomoforge.fourier.dose_filter_image` from its prior dose (plus ``initial_dose_e_per_angstrom2``) and its own
dose, at the series' voltage (300 or 200 kV), as IMOD's ``mtffilter`` with a type-2 dose file does in the
tutorial (``../shared/docs/tutorial-steps.md`` §4). Even/odd stacks are filtered the same way.

As Scipion's protocol does, the output marks the series as filtered by setting every tilt's prior dose to 0 (own
doses kept), so later steps do not weight by exposure again. The :class:`~tomoforge.models.TiltSeries` model has
no field for the original prior doses nor for a "dose filtered" flag, so both are written to the sidecar
``<ts>_dose_filter.json`` (:class:`~tomoforge.steps._artifacts.DoseFilterRecord`) for later steps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from tomoforge.workflow import Artifact, Inputs, InputSpec, RunContext, step

__all__ = ["DoseFilterParams", "dose_filter"]


class DoseFilterParams(BaseModel):
    """Parameters of ``dose.filter``."""

    mode: Literal["mean", "start", "end"] = Field(
        "mean",
        description="Exposure each tilt's filter is evaluated at: averaged over its own exposure ('mean'), its "
        "prior dose ('start', RELION 5) or prior + own dose ('end', Unblur).",
    )
    initial_dose_e_per_angstrom2: float = Field(
        0.0,
        ge=0,
        description="Dose in e⁻/Å² received before the series, added to every prior dose (-InitialDose).",
    )


def _validate(params: DoseFilterParams, inputs: Inputs) -> list[str]:
    if "tilt_series" not in inputs:
        return []
    from tomoforge.steps._artifacts import read_dose_filter_record

    folder = inputs.path("tilt_series")
    done = [p.name for p in sorted(folder.glob("*_dose_filter.json"))]
    problems = []
    for name in done:
        record = read_dose_filter_record(folder, name.removesuffix("_dose_filter.json"))
        if record is not None and record.dose_filtered:
            problems.append(f"The tilt series of {name} is already dose filtered.")
    return problems


def _summary(outputs: dict[str, Artifact]) -> dict[str, object]:
    from tomoforge.steps._artifacts import read_dose_filter_record, read_tilt_series

    folder = outputs["tilt_series"].path
    result: dict[str, object] = {}
    for series in read_tilt_series(folder):
        record = read_dose_filter_record(folder, series.ts_id)
        if record is None:
            continue
        total = [
            p + d for p, d in zip(record.prior_dose_e_per_angstrom2, record.dose_e_per_angstrom2, strict=True)
        ]
        result[series.ts_id] = {
            "tilts": series.n_tilts,
            "voltage_kv": record.voltage_kv,
            "dose_per_tilt_e_per_angstrom2": [round(d, 4) for d in record.dose_e_per_angstrom2],
            "prior_dose_e_per_angstrom2": [round(d, 4) for d in record.prior_dose_e_per_angstrom2],
            "total_dose_e_per_angstrom2": round(max(total), 4),
        }
    return result


def _methods(params: DoseFilterParams) -> str:
    return (
        "Each tilt image was exposure filtered with the critical exposures of Grant & Grigorieff (2015, "
        f"doi:10.7554/eLife.06980), evaluated at the {params.mode} exposure of the tilt from its prior and own dose."
    )


@step(
    name="dose.filter",
    version="1",
    inputs={"tilt_series": InputSpec(kind="tilt_series", description="The tilt series to filter.")},
    outputs={"tilt_series": "tilt_series"},
    validate=_validate,
    summary=_summary,
    methods=_methods,
)
def dose_filter(params: DoseFilterParams, inputs: Inputs, ctx: RunContext) -> dict[str, Path]:
    """Filter every tilt image for radiation damage (Grant & Grigorieff exposure filter)."""
    import numpy as np
    import torch

    from tomoforge.fourier import dose_filter_image
    from tomoforge.steps._artifacts import (
        DoseFilterRecord,
        copy_sidecars,
        map_stacks,
        read_tilt_series,
        series_stacks,
        write_dose_filter_record,
        write_tilt_series,
    )

    source = inputs.path("tilt_series")
    out = ctx.work_dir / "tilt_series"
    out.mkdir()
    for series in read_tilt_series(source):
        voltage = series.acquisition.voltage_kv
        prior = [t.prior_dose_e_per_angstrom2 + params.initial_dose_e_per_angstrom2 for t in series.tilts]
        dose = [t.dose_e_per_angstrom2 for t in series.tilts]
        progress = ctx.progress(
            len(series_stacks(series)) * series.n_tilts, f"{series.ts_id}: dose filtering"
        )

        def _filter(
            field: str,
            i: int,
            image: np.ndarray,
            pixel: float = series.pixel_size_angstrom,
            voltage: float = voltage,
            prior_doses: list[float] = prior,
            own_doses: list[float] = dose,
        ) -> np.ndarray:
            filtered = dose_filter_image(
                torch.from_numpy(image),
                pixel_size_angstrom=pixel,
                prior_dose_e_per_angstrom2=prior_doses[i],
                dose_e_per_angstrom2=own_doses[i],
                voltage_kv=voltage,
                mode=params.mode,
            )
            return filtered.numpy()

        written = map_stacks(series, out, _filter, progress=progress)
        progress.close()
        filtered_series = series.model_copy(
            update={**written, "tilts": [t.replace(prior_dose_e_per_angstrom2=0.0) for t in series.tilts]}
        )
        write_tilt_series(out, type(series).model_validate(filtered_series.model_dump()))
        copy_sidecars(source, out, series.ts_id, skip=("_dose_filter.json",))
        write_dose_filter_record(
            out,
            series.ts_id,
            DoseFilterRecord(
                dose_filtered=True,
                mode=params.mode,
                voltage_kv=voltage,
                initial_dose_e_per_angstrom2=params.initial_dose_e_per_angstrom2,
                prior_dose_e_per_angstrom2=[t.prior_dose_e_per_angstrom2 for t in series.tilts],
                dose_e_per_angstrom2=dose,
            ),
        )
    return {"tilt_series": out}
