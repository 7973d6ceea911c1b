"""Step ``preprocess.bin``: Fourier binning and normalisation of a tilt series → ``tilt_series``.

Input and output are ``tilt_series`` folders (:mod:`tomoforge.steps._artifacts`). Binning by ``N`` is Fourier
cropping (:func:`tomoforge.fourier.fourier_bin_2d`, an ideal antialiasing filter), so the pixel size becomes exactly
``N`` times the input's. When a side ``n`` is not a multiple of ``N`` the image is first cut to the largest
window of ``N·m`` pixels that keeps the centre pixel ``n // 2`` at binned pixel ``m // 2`` (CONVENTIONS.md:
centres at ``N // 2``), so positions in Å relative to the image centre are unchanged. Tilt transforms hold their
shifts in Å, hence stay valid as they are; tilt angles, doses and sidecars are copied. Optional normalisation
scales every image to mean 0 and standard deviation 1 (IMOD ``newstack -FloatDensities 2``, the tutorial's
default for "Tilt-series preprocess", ``../shared/docs/tutorial-steps.md`` §12).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field

from tomoforge.workflow import Artifact, Inputs, InputSpec, RunContext, step

__all__ = ["BinParams", "binned_window", "preprocess_bin"]


class BinParams(BaseModel):
    """Parameters of ``preprocess.bin``."""

    binning: int = Field(1, ge=1, le=64, description="Binning factor (Fourier cropping); 1 keeps the size.")
    normalise: bool = Field(True, description="Scale every image to mean 0 and standard deviation 1.")


def binned_window(n: int, factor: int) -> tuple[int, int]:
    """Return ``(start, m)``: binning pixels ``start … start + factor·m`` by ``factor`` keeps the centre.

    The centre pixel ``n // 2`` of the input lands exactly on pixel ``m // 2`` of the binned image
    (``start + factor·(m // 2) == n // 2``); ``m`` is the largest size for which that window fits.
    """
    if n < factor:
        raise ValueError(f"an image side of {n} px cannot be binned by {factor}")
    m = n // factor
    while m > 0:
        start = n // 2 - factor * (m // 2)
        if start >= 0 and start + factor * m <= n:
            return start, m
        m -= 1
    raise ValueError(f"an image side of {n} px cannot be binned by {factor}")


def _summary(outputs: dict[str, Artifact]) -> dict[str, object]:
    from tomoforge.steps._artifacts import read_tilt_series

    return {
        s.ts_id: {
            "tilts": s.n_tilts,
            "pixel_size_angstrom": s.pixel_size_angstrom,
            "image_shape_yx": list(s.image_shape_yx or ()),
        }
        for s in read_tilt_series(outputs["tilt_series"].path)
    }


def _methods(params: BinParams) -> str:
    text = f"Tilt series were binned by {params.binning} by Fourier cropping"
    if params.normalise:
        text += " and every image was scaled to mean 0 and standard deviation 1 (as IMOD newstack; Kremer et al., "
        text += "1996, doi:10.1006/jsbi.1996.0013)"
    return text + "."


@step(
    name="preprocess.bin",
    version="1",
    inputs={"tilt_series": InputSpec(kind="tilt_series", description="The tilt series to bin.")},
    outputs={"tilt_series": "tilt_series"},
    summary=_summary,
    methods=_methods,
)
def preprocess_bin(params: BinParams, inputs: Inputs, ctx: RunContext) -> dict[str, Path]:
    """Bin a tilt series by Fourier cropping and optionally normalise every image."""
    import numpy as np
    import torch

    from tomoforge.fourier import fourier_bin_2d
    from tomoforge.io.mrc import read_mrc
    from tomoforge.steps._artifacts import (
        copy_sidecars,
        map_stacks,
        read_tilt_series,
        series_stacks,
        write_tilt_series,
    )

    source = inputs.path("tilt_series")
    out = ctx.work_dir / "tilt_series"
    out.mkdir()
    factor = params.binning
    for series in read_tilt_series(source):
        height, width = series.image_shape_yx or read_mrc(series.stack_file).data.shape[-2:]
        (y0, my), (x0, mx) = binned_window(height, factor), binned_window(width, factor)
        shape = (my, mx)
        progress = ctx.progress(len(series_stacks(series)) * series.n_tilts, f"{series.ts_id}: binning")

        def _bin(
            field: str, i: int, image: np.ndarray, y0: int = y0, x0: int = x0, my: int = my, mx: int = mx
        ) -> np.ndarray:
            window = np.array(image[y0 : y0 + factor * my, x0 : x0 + factor * mx], dtype=np.float64)
            binned = fourier_bin_2d(torch.from_numpy(window), factor)
            if params.normalise:
                sd = float(binned.std(correction=0))
                binned = (binned - binned.mean()) / (sd if sd > 0 else 1.0)
            return binned.to(torch.float32).numpy()

        written = map_stacks(
            series,
            out,
            _bin,
            progress=progress,
            out_shape_yx=shape,
            pixel_size_angstrom=series.pixel_size_angstrom * factor,
        )
        progress.close()
        binned = series.model_copy(
            update={
                **written,
                "pixel_size_angstrom": series.pixel_size_angstrom * factor,
                "image_shape_yx": shape,
            }
        )
        write_tilt_series(out, type(series).model_validate(binned.model_dump()))
        copy_sidecars(source, out, series.ts_id)
        ctx.logger.info("%s: %s px at %.3f Å", series.ts_id, shape, series.pixel_size_angstrom * factor)
    return {"tilt_series": out}
