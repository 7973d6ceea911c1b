"""Step ``preprocess.bin``: binning (Fourier or antialiased) and normalisation of a tilt series → ``tilt_series``.

Input and output are ``tilt_series`` folders (:mod:`tomoforge.steps._artifacts`). Binning by ``N`` uses one of two
methods, with the same geometry: ``fourier`` (default) crops the spectrum (:func:`tomoforge.fourier.fourier_bin_2d`,
an ideal low-pass), ``antialias`` filters in real space with a separable 3-lobe Lanczos-windowed sinc cut off at the
new Nyquist and then decimates (:func:`tomoforge.preprocess.antialias_bin_2d`; IMOD ``newstack -bin N
-antialias 6``, the Scipion protocol's default). Either way the pixel size becomes exactly ``N`` times the input's.
When a side ``n`` is not a multiple of ``N`` the output covers the largest window of ``N·m`` pixels that keeps the
centre pixel ``n // 2`` at binned pixel ``m // 2`` (CONVENTIONS.md: centres at ``N // 2``), and binned pixel ``j``
sits on input pixel ``start + N·j``, so positions in Å relative to the image centre are unchanged. (Fourier
cropping sees only that window; the real-space filter also uses the pixels just outside it and mirrors the image at
its edges.) Tilt transforms hold their shifts in Å, hence stay valid as they are; tilt angles, doses and sidecars
are copied. Optional normalisation scales every image to mean 0 and standard deviation 1 (IMOD ``newstack
-FloatDensities 2``, the tutorial's default for "Tilt-series preprocess", ``../shared/docs/tutorial-steps.md`` §12).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from tomoforge.workflow import Artifact, Inputs, InputSpec, RunContext, step

__all__ = ["BinParams", "binned_window", "preprocess_bin"]


class BinParams(BaseModel):
    """Parameters of ``preprocess.bin``."""

    binning: int = Field(1, ge=1, le=64, description="Binning factor; 1 keeps the size.")
    method: Literal["fourier", "antialias"] = Field(
        "fourier",
        description=(
            "How to bin: 'fourier' crops the spectrum (ideal low-pass); 'antialias' filters in real space with a "
            "3-lobe Lanczos-windowed sinc at the new Nyquist, then decimates (IMOD newstack -antialias 6). Both "
            "give the same pixel size, shape and centre."
        ),
    )
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
    if params.method == "antialias":
        text = (
            f"Tilt series were binned by {params.binning} in real space after antialiasing with a 3-lobe "
            "Lanczos-windowed sinc filter cut off at the new Nyquist frequency (as IMOD newstack -antialias 6; "
            "Duchon, 1979, doi:10.1175/1520-0450(1979)018<1016:LFIOAT>2.0.CO;2)"
        )
    else:
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
    """Bin a tilt series (Fourier cropping or antialiased real-space binning), optionally normalise every image."""
    import numpy as np
    import torch

    from tomoforge.fourier import fourier_bin_2d
    from tomoforge.io.mrc import read_mrc
    from tomoforge.preprocess import antialias_bin_2d
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
            if params.method == "antialias":
                binned = antialias_bin_2d(torch.from_numpy(np.array(image, dtype=np.float64)), factor)
            else:
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
        ctx.logger.info(
            "%s: %s px at %.3f Å (%s binning)",
            series.ts_id,
            shape,
            series.pixel_size_angstrom * factor,
            params.method,
        )
    return {"tilt_series": out}
