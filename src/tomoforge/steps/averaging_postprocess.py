"""Step ``averaging.postprocess``: RELION's ``relion_postprocess`` on a map's half maps.

The half maps of a ``map`` folder (``half1.mrc``, ``half2.mrc``; :mod:`tomoforge.steps._map_outputs`) are compared
within a mask, their FSC corrected for the mask by phase randomisation, the resolution taken where the corrected
FSC falls below 0.143, and their average FSC-weighted, sharpened with a B-factor (fitted to the Guinier plot
between 10 Å and the resolution, or given) and low-passed at the resolution
(:func:`tomoforge.averaging.postprocess.postprocess`, whose docstring gives the steps and the B-factor's sign:
RELION's, negative to sharpen).

The mask is, in this order of preference: the ``mask`` input (an MRC file, or a folder holding ``mask.mrc`` such as
an earlier ``postprocess`` output); the average of the half maps cut at ``mask_threshold``, grown by ``extend_px``
and given a soft edge of ``soft_edge_px`` (as ``relion_mask_create``); or a soft sphere of
``mask_diameter_angstrom`` (0.8 × the box by default) whose soft edge lies inside that diameter.

Output: a ``postprocess`` folder with ``postprocess.mrc`` (sharpened, unmasked), ``postprocess_masked.mrc``,
``mask.mrc``, ``fsc.csv`` (shell, frequency in 1/Å, resolution in Å, FSC unmasked, masked, phase-randomised and
corrected), ``fsc.svg``, ``guinier.svg`` and ``postprocess.json`` (resolution, B-factor, randomisation resolution,
the mask used and any warnings).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field, field_validator

from tomoforge.steps._device import checked_device, resolve_device
from tomoforge.workflow import Artifact, Inputs, InputSpec, RunContext, step

if TYPE_CHECKING:
    import numpy as np
    import torch

    from tomoforge.averaging.postprocess import PostprocessResult

__all__ = ["PostprocessParams", "postprocess_map"]


class PostprocessParams(BaseModel):
    """Parameters of ``averaging.postprocess`` (RELION's in brackets)."""

    mask_diameter_angstrom: float | None = Field(
        None,
        gt=0,
        description="Without a mask input or threshold: diameter of the soft spherical mask, soft edge included, Å "
        "(default 0.8 × the box).",
    )
    mask_threshold: float | None = Field(
        None,
        description="Without a mask input: make the mask from the average of the half maps cut at this density "
        "(relion_mask_create --ini_threshold) instead of the sphere.",
    )
    extend_px: float = Field(
        3.0, ge=0, description="Grow the thresholded mask by this many voxels (--extend_inimask)."
    )
    soft_edge_px: float = Field(
        6.0, ge=0, description="Width of the mask's raised-cosine edge in voxels (--width_soft_edge)."
    )
    b_factor_angstrom2: float | None = Field(
        None,
        description="B-factor to apply, Å², negative to sharpen (--adhoc_bfac); fitted to the Guinier plot when "
        "not given (--autob).",
    )
    guinier_low_angstrom: float = Field(
        10.0,
        gt=0,
        description="Lowest resolution of the Guinier fit, Å (--autob_lowres); the highest is the "
        "resolution found.",
    )
    randomise_from_angstrom: float | None = Field(
        None,
        gt=0,
        description="Randomise phases from this resolution on, Å (--randomize_at_A); by default from where the "
        "unmasked FSC falls below 0.8.",
    )
    low_pass_angstrom: float | None = Field(
        None,
        gt=0,
        description="Low-pass the sharpened map here, Å (--low_pass); by default at the resolution.",
    )
    fsc_weighting: bool = Field(
        True, description="Weight the shells by sqrt(2·FSC/(1+FSC)) (off: --skip_fsc_weighting)."
    )
    seed: int = Field(0, ge=0, description="Seed of the random phases (--random_seed).")
    device: str = Field("auto", description="auto, cpu or cuda[:n].")

    _device = field_validator("device")(checked_device)


def _summary(outputs: dict[str, Artifact]) -> dict[str, object]:
    record = json.loads((outputs["postprocess"].path / "postprocess.json").read_text(encoding="utf-8"))
    return {
        "resolution_angstrom (corrected FSC 0.143)": record["resolution_angstrom"],
        "b_factor_angstrom2": record["b_factor_angstrom2"],
        "randomise_from_angstrom": record["randomise_from_angstrom"],
        "mask": record["mask"],
        "warnings": record["warnings"],
        "pictures": ["fsc.svg", "guinier.svg"],
    }


def _methods(params: PostprocessParams) -> str:
    b = (
        f"a B-factor of {params.b_factor_angstrom2:g} Å²"
        if params.b_factor_angstrom2 is not None
        else f"the B-factor of a straight line fitted to its Guinier plot from {params.guinier_low_angstrom:g} Å "
        "to the resolution (Rosenthal & Henderson 2003, J. Mol. Biol. 333, 721-745)"
    )
    weighting = " weighted by sqrt(2·FSC/(1+FSC)) of the corrected FSC," if params.fsc_weighting else ""
    return (
        "The half maps were post-processed as RELION's relion_postprocess does: their FSC within a soft mask was "
        "corrected for the mask by phase randomisation (Chen et al. 2013, Ultramicroscopy 135, 24-35) and the "
        f"resolution taken where it falls below 0.143; their average was{weighting} sharpened with {b}, and "
        "low-passed at the resolution."
    )


@step(
    name="averaging.postprocess",
    version="1",
    inputs={
        "map": InputSpec(kind="map", description="A map with its half maps (half1.mrc, half2.mrc)."),
        "mask": InputSpec(
            kind="any",
            optional=True,
            description="A mask MRC (values 0 to 1, the half maps' box), or a folder holding mask.mrc.",
        ),
    },
    outputs={"postprocess": "postprocess"},
    summary=_summary,
    methods=_methods,
)
def postprocess_map(params: PostprocessParams, inputs: Inputs, ctx: RunContext) -> dict[str, Path]:
    """Masked and corrected FSC, B-factor, sharpening and low-pass of a map's half maps."""
    from tomoforge.averaging.postprocess import postprocess
    from tomoforge.io.mrc import write_mrc

    device = resolve_device(params.device)
    folder = inputs.path("map")
    half1, pixel = _read_volume(folder / "half1.mrc")
    half2, pixel2 = _read_volume(folder / "half2.mrc")
    if half2.shape != half1.shape:
        raise ValueError(
            f"{folder / 'half2.mrc'}: its shape {tuple(half2.shape)} differs from half1.mrc's {tuple(half1.shape)}"
        )
    if abs(pixel2 - pixel) > 1e-3 * pixel:
        raise ValueError(
            f"{folder / 'half2.mrc'}: its voxel size {pixel2:g} Å differs from half1.mrc's {pixel:g} Å"
        )
    if len(set(half1.shape)) != 1:
        raise ValueError(
            f"{folder / 'half1.mrc'}: the half maps must be cubic, their shape is {tuple(half1.shape)}"
        )
    half1, half2 = half1.to(device), half2.to(device)
    mask, mask_text = _mask(params, inputs, half1, half2, pixel)
    mask = mask.to(device=device, dtype=half1.dtype)
    ctx.logger.info("mask: %s", mask_text)
    result = postprocess(
        half1,
        half2,
        mask,
        pixel,
        b_factor_angstrom2=params.b_factor_angstrom2,
        randomise_from_angstrom=params.randomise_from_angstrom,
        guinier_low_angstrom=params.guinier_low_angstrom,
        low_pass_angstrom=params.low_pass_angstrom,
        fsc_weighting=params.fsc_weighting,
        seed=params.seed,
    )
    out = ctx.work_dir / "postprocess"
    out.mkdir()
    for name, volume in (
        ("postprocess", result.sharpened),
        ("postprocess_masked", result.sharpened_masked),
        ("mask", mask),
    ):
        write_mrc(_numpy32(volume), out / f"{name}.mrc", voxel_size_angstrom=pixel)
    warnings = _warnings(result)
    for warning in warnings:
        ctx.logger.warning("%s", warning)
    _write_tables_and_plots(out, result)
    size = half1.shape[0]
    record = {
        "resolution_angstrom": result.resolution_angstrom,
        "b_factor_angstrom2": result.b_factor_angstrom2,
        "b_factor_fitted": params.b_factor_angstrom2 is None,
        "guinier_intercept": _finite_or_none(result.guinier.intercept),
        "guinier_low_angstrom": params.guinier_low_angstrom,
        "randomise_from_shell": result.randomise_from_shell,
        "randomise_from_angstrom": size * pixel / result.randomise_from_shell,
        "low_pass_angstrom": result.low_pass_angstrom,
        "fsc_weighting": params.fsc_weighting,
        "mask": mask_text,
        "box_size_px": size,
        "pixel_size_angstrom": pixel,
        "half_maps": [str(folder / "half1.mrc"), str(folder / "half2.mrc")],
        "warnings": warnings,
    }
    from tomoforge.workflow.fsutil import atomic_write_text

    atomic_write_text(out / "postprocess.json", json.dumps(record, indent=1) + "\n")
    ctx.logger.info(
        "resolution %.2f Å at corrected FSC 0.143 (phases randomised from %.2f Å); B-factor %.1f Å²",
        result.resolution_angstrom,
        record["randomise_from_angstrom"],
        result.b_factor_angstrom2,
    )
    return {"postprocess": out}


def _read_volume(path: Path) -> tuple[torch.Tensor, float]:
    """A map as a float32 ``(z, y, x)`` tensor and its voxel size in Å (from the header)."""
    import numpy as np
    import torch

    from tomoforge.io.mrc import read_mrc

    mrc = read_mrc(path)
    if mrc.data.ndim != 3:
        raise ValueError(f"{path}: expected a volume, the file holds an array of shape {mrc.data.shape}")
    pixel = float(mrc.voxel_size_angstrom[0])
    if not pixel > 0:
        raise ValueError(f"{path}: the header gives no voxel size")
    data = np.array(mrc.data, dtype=np.float32)
    if not np.isfinite(data).all():
        raise ValueError(f"{path}: the map holds NaN or infinite values")
    return torch.from_numpy(data), pixel


def _mask(
    params: PostprocessParams, inputs: Inputs, half1: torch.Tensor, half2: torch.Tensor, pixel: float
) -> tuple[torch.Tensor, str]:
    """The mask and one line describing it."""
    from tomoforge.averaging import soft_sphere_mask
    from tomoforge.averaging.postprocess import threshold_mask

    size = half1.shape[0]
    if "mask" in inputs:
        path = inputs.path("mask")
        if path.is_dir():
            path = path / "mask.mrc"
        mask, mask_pixel = _read_volume(path)
        if mask.shape != half1.shape:
            raise ValueError(
                f"{path}: the mask's shape {tuple(mask.shape)} differs from the half maps' {tuple(half1.shape)}"
            )
        if abs(mask_pixel - pixel) > 1e-2 * pixel:
            raise ValueError(
                f"{path}: the mask's voxel size {mask_pixel:g} Å differs from the half maps' {pixel:g} Å"
            )
        low, high = float(mask.min()), float(mask.max())
        if low < -1e-6 or high > 1 + 1e-6:
            raise ValueError(
                f"{path}: mask values must lie between 0 and 1, they run from {low:g} to {high:g}"
            )
        return mask.clamp(0.0, 1.0), f"the file {path}"
    if params.mask_threshold is not None:
        average = 0.5 * (half1 + half2)
        mask = threshold_mask(
            average, params.mask_threshold, extend_px=params.extend_px, soft_edge_px=params.soft_edge_px
        )
        return mask, (
            f"the average of the half maps at threshold {params.mask_threshold:g}, grown by {params.extend_px:g} px "
            f"with a {params.soft_edge_px:g} px soft edge"
        )
    diameter = (
        params.mask_diameter_angstrom if params.mask_diameter_angstrom is not None else 0.8 * size * pixel
    )
    radius = 0.5 * diameter / pixel - params.soft_edge_px
    if radius < 1.0:
        raise ValueError(
            f"a mask diameter of {diameter:g} Å is {diameter / pixel:.1f} voxels, too small for a "
            f"{params.soft_edge_px:g} px soft edge"
        )
    mask = soft_sphere_mask(size, radius_px=radius, edge_px=params.soft_edge_px, dtype=half1.dtype)
    return mask.to(half1.device), (
        f"a sphere of {diameter:g} Å diameter (1 to {2 * radius * pixel:g} Å, then a {params.soft_edge_px:g} px "
        "soft edge)"
    )


def _warnings(result: PostprocessResult) -> list[str]:
    """RELION's checks on the mask correction, as sentences."""
    from tomoforge.averaging import fsc_resolution_angstrom

    warnings = []
    unmasked = fsc_resolution_angstrom(result.fsc_unmasked.cpu(), result.frequencies_per_angstrom, 0.143)
    if unmasked < result.resolution_angstrom - 1e-9:
        warnings.append(
            f"the unmasked FSC reaches {unmasked:.2f} Å, beyond the corrected FSC's {result.resolution_angstrom:.2f} Å; "
            "the mask may be too tight or cut the density"
        )
    box_angstrom = 1.0 / float(result.frequencies_per_angstrom[1])
    shell = min(round(box_angstrom / result.resolution_angstrom), len(result.fsc_randomised) - 1)
    if float(result.fsc_randomised[shell]) > 0.1:
        warnings.append(
            f"the phase-randomised FSC is {float(result.fsc_randomised[shell]):.2f} at the resolution (above 0.1); "
            "a softer mask with fewer features would give a more trustworthy resolution"
        )
    if result.randomise_from_shell == len(result.fsc_unmasked) - 1:
        warnings.append("the unmasked FSC never falls below 0.8; phases were randomised from Nyquist only")
    return warnings


def _write_tables_and_plots(out: Path, result: PostprocessResult) -> None:
    """``fsc.csv``, ``fsc.svg`` and ``guinier.svg``."""
    import numpy as np

    from tomoforge.steps._plots import curves_svg
    from tomoforge.workflow.fsutil import atomic_write_text

    frequencies = result.frequencies_per_angstrom.cpu().numpy()
    curves = {
        "unmasked": result.fsc_unmasked.cpu().numpy(),
        "masked": result.fsc_masked.cpu().numpy(),
        "randomised": result.fsc_randomised.cpu().numpy(),
        "corrected": result.fsc_corrected.cpu().numpy(),
    }
    rows = ["shell,frequency_per_angstrom,resolution_angstrom," + ",".join(curves)]
    for s, f in enumerate(frequencies.tolist()):
        values = ",".join(f"{float(c[s]):.5f}" for c in curves.values())
        rows.append(f"{s},{f:.6f},{(1 / f if f > 0 else math.inf):.3f},{values}")
    atomic_write_text(out / "fsc.csv", "\n".join(rows) + "\n")
    resolution = result.resolution_angstrom
    atomic_write_text(
        out / "fsc.svg",
        curves_svg(
            frequencies,
            [
                ("corrected", curves["corrected"], "#111111"),
                ("unmasked", curves["unmasked"], "#2e8b57"),
                ("masked", curves["masked"], "#1f5fbf"),
                ("phase-randomised", curves["randomised"], "#c0392b"),
            ],
            title=f"FSC of the half maps; corrected FSC 0.143 at {resolution:.2f} Å",
            x_label="spatial frequency (1/Å)",
            y_range=(-0.1, 1.05),
            guides=[0.0, 0.143, 0.5, 1.0],
            x_resolution_ticks=True,
        ),
    )
    guinier = result.guinier
    x = guinier.s2_per_angstrom2.cpu().numpy()
    y = guinier.ln_amplitude.cpu().numpy()
    keep = np.isfinite(y)
    series = [("ln |F| (FSC-weighted average)", y, "#1f5fbf")]
    if math.isfinite(guinier.b_factor_angstrom2):
        fitted = x[guinier.in_fit.cpu().numpy()]
        line = np.full_like(y, np.nan)
        span = (x >= fitted.min()) & (x <= fitted.max())
        line[span] = guinier.intercept + guinier.b_factor_angstrom2 / 4.0 * x[span]
        series.append((f"fit, B = {guinier.b_factor_angstrom2:.1f} Å²", line, "#c0392b"))
    finite = y[keep]
    low, high = (float(finite.min()), float(finite.max())) if len(finite) else (0.0, 1.0)
    atomic_write_text(
        out / "guinier.svg",
        curves_svg(
            x,
            series,
            title=f"Guinier plot; B-factor applied {result.b_factor_angstrom2:.1f} Å²",
            x_label="1/d² (1/Å²)",
            y_range=(low - 0.05 * (high - low + 1e-9), high + 0.05 * (high - low + 1e-9)),
            guides=[],
            x_resolution_ticks=False,
        ),
    )


def _numpy32(volume: torch.Tensor) -> np.ndarray:
    import numpy as np

    return np.ascontiguousarray(volume.detach().cpu().numpy().astype(np.float32))


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None
