"""Step ``tilts.exclude``: leave bad views (and views without a usable CTF) out of a ``tilt_series``.

As the tutorial's "Excluding views and CTFs" (``../shared/docs/tutorial-steps.md`` §10): a view is excluded by
marking it (Scipion's ``enabled`` = 0, here :attr:`TiltImage.excluded`) or by re-stacking, which writes a new stack
holding only the present views (IMOD ``newstack -exclude``). Views are chosen by hand (stack index, nominal tilt
angle or acquisition order, for every series or per series) and by rules, each off by default:

* ``exclude_missing_ctf``: no CTF estimate;
* ``max_fit_resolution_angstrom``: Thon rings fitted only to a worse resolution than this;
* ``defocus_outlier_sigma``: mean defocus off the tilt trend. The trend is the defocus of the image centre of a
  tilted specimen, ``Δf(θ) = c0 + c1·sin θ + c2·cos θ`` (a point at a fixed offset from the tilt axis), fitted
  robustly (L1 start, Tukey bisquare); a view is an outlier when its residual exceeds this many robust sigmas
  (1.4826·MAD of the residuals) and ``defocus_outlier_min_angstrom`` (200 Å, ctfphaseflip's default DefocusTol);
* ``min_relative_mean_intensity``: too dark. A slab of thickness t transmits ``I ∝ exp(−t/(Λ cos θ))`` (Beer–
  Lambert along the 1/cos θ path), so ``ln(mean / own dose) = a − b / cos θ`` is fitted robustly (b ≥ 0; the
  dose division only when every tilt has a dose) and a view is dark when its mean is below this fraction of what
  the fit expects at its tilt — the series' median brightness, corrected for the thickness darkening;
* ``max_alignment_residual_sigma``: mean bead residual (``<ts>_alignment.json`` of ``alignment.fiducial``) more
  than this many robust sigmas above the median (sigma at least 10 % of the median); and
  ``use_alignment_exclusion_candidates``: the views that step proposed;
* ``max_prior_dose_e_per_angstrom2``: pre-exposure above this (the original prior doses of a dose-filtered
  series, from ``<ts>_dose_filter.json``).

An optional second input, ``ctf``, is a ``tilt_series`` folder whose tilts carry the CTFs to use (e.g. estimated
on another copy of the series). Series are matched by ``ts_id`` and tilts by acquisition order (by stack index if
the two share no acquisition order). The present views are then §10's common set: the enabled views of the series
∩ the enabled views with a CTF of ``ctf`` (:func:`present_acquisition_orders`); the matched CTFs (and a measured
defocus handedness) are copied onto the output tilts.

Exclusion only adds: a view excluded in the input stays excluded (with the reasons of an earlier
``<ts>_exclusions.json`` when there is one). Statistics (trends, medians) are taken over the views no fixed
criterion excluded; the defocus rule needs 5 such views with a CTF and the residual rule 3, else they flag none. Excluding every view of a series is refused. ``<ts>_exclusions.json``
(:class:`ExclusionRecord`) lists every excluded view with its reasons, each ``"<rule>: <detail>"`` with the rule
named by its parameter. With ``mode="restack"`` the stacks (even/odd too) hold only the present views, indices
run 0..m−1 and ``original_indices`` maps them to the input stack; the per-view sidecars ``<ts>_dose_filter.json``,
``<ts>_local_motion.json`` and ``<ts>_xrays.csv`` are re-indexed and IMOD ``<ts>.xf``/``.tlt`` rewritten, while
the alignment records (``_coarse``, ``_fiducials``, ``_alignment``, ``_patch_tracking``) are copied unchanged and
keep the input stack's indices.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, Field, NonNegativeInt

from tomoforge.workflow import Artifact, Inputs, InputSpec, RunContext, step

if TYPE_CHECKING:
    import numpy as np

    from tomoforge.models import CtfParameters, TiltImage, TiltSeries

__all__ = [
    "ExcludeViewsParams",
    "ExcludedView",
    "ExclusionRecord",
    "exclude_views",
    "present_acquisition_orders",
    "read_exclusions",
]

_T = TypeVar("_T")
AngleDeg = Annotated[float, Field(ge=-90.0, le=90.0)]
_ANGLE_MATCH_DEG = 0.5  # nominal tilt angles of the same acquisition in two series agree to this
_TUKEY_C = 4.685  # bisquare cut-off in robust sigmas (95 % efficiency for Gaussian noise)
_MAD_TO_SIGMA = 1.4826


class ExcludeViewsParams(BaseModel):
    """Parameters of ``tilts.exclude``. Every rule is off until given a value."""

    views: list[NonNegativeInt] | dict[str, list[NonNegativeInt]] = Field(
        default_factory=list,
        description="Views to exclude by 0-based stack index, for every series ([3, 40]) or per series "
        '({"TS_01": [3]}); IMOD -exclude lists are 1-based.',
    )
    tilt_angles_deg: list[AngleDeg] | dict[str, list[AngleDeg]] = Field(
        default_factory=list,
        description="Views to exclude by nominal tilt angle in degrees (nearest within the tolerance), for every "
        "series or per series.",
    )
    tilt_angle_tolerance_deg: float = Field(
        0.5, gt=0.0, le=5.0, description="How close in degrees a tilt angle must be to name a view."
    )
    acquisition_orders: list[NonNegativeInt] | dict[str, list[NonNegativeInt]] = Field(
        default_factory=list,
        description="Views to exclude by acquisition order (0 = first exposure), for every series or per series.",
    )
    exclude_missing_ctf: bool = Field(False, description="Exclude views that have no CTF estimate.")
    max_fit_resolution_angstrom: float | None = Field(
        None,
        gt=0.0,
        description="Exclude views whose CTF was fitted only to a resolution worse than this (Å).",
    )
    defocus_outlier_sigma: float | None = Field(
        None,
        gt=0.0,
        description="Exclude views whose mean defocus is this many robust sigmas off the trend with tilt angle.",
    )
    defocus_outlier_min_angstrom: float = Field(
        200.0, ge=0.0, description="Smallest defocus deviation (Å) that counts as an outlier."
    )
    min_relative_mean_intensity: float | None = Field(
        None,
        gt=0.0,
        lt=1.0,
        description="Exclude views darker than this fraction of the mean expected at their tilt (1/cos θ "
        "thickness darkening fitted).",
    )
    max_alignment_residual_sigma: float | None = Field(
        None,
        gt=0.0,
        description="Exclude views whose fiducial residual is this many robust sigmas above the median.",
    )
    use_alignment_exclusion_candidates: bool = Field(
        False, description="Exclude the views alignment.fiducial proposed for exclusion."
    )
    max_prior_dose_e_per_angstrom2: float | None = Field(
        None, ge=0.0, description="Exclude views recorded after more than this dose (e⁻/Å²)."
    )
    mode: Literal["mark", "restack"] = Field(
        "mark",
        description="mark: keep excluded views in the stack, flagged; restack: write stacks of the present "
        "views only (newstack -exclude).",
    )


class ExcludedView(BaseModel):
    """One excluded view of ``<ts>_exclusions.json``."""

    index: int = Field(description="Index of the view in the input stack (0-based).")
    acquisition_order: int = Field(description="Acquisition order of the view (0 = first exposure).")
    tilt_angle_deg: float = Field(description="Nominal tilt angle in degrees.")
    reasons: list[str] = Field(description="Why, each '<rule>: <detail>' with the rule's parameter name.")


class ExclusionRecord(BaseModel):
    """Contents of ``<ts>_exclusions.json``."""

    ts_id: str = Field(description="Identifier of the tilt series.")
    mode: Literal["mark", "restack"] = Field(description="Whether excluded views were flagged or removed.")
    input_tilts: int = Field(description="Number of views in the input stack.")
    excluded: list[ExcludedView] = Field(description="The excluded views, in input stack order.")
    present_acquisition_orders: list[int] = Field(
        description="Acquisition orders of the present views, sorted."
    )
    original_indices: list[int] = Field(
        description="Input stack index of each view of the output stack (identity with mode 'mark')."
    )


def read_exclusions(folder: Path, ts_id: str) -> ExclusionRecord | None:
    """Read ``<ts>_exclusions.json`` from a ``tilt_series`` folder, or None when there is none."""
    path = Path(folder) / f"{ts_id}_exclusions.json"
    if not path.is_file():
        return None
    return ExclusionRecord.model_validate_json(path.read_text(encoding="utf-8"))


def _match_ctf_tilts(series: TiltSeries, ctf_series: TiltSeries) -> list[TiltImage | None]:
    """The tilt of ``ctf_series`` matching each tilt of ``series`` (None: no match), in stack order."""
    if ctf_series.ts_id != series.ts_id:
        raise ValueError(f"the CTF series {ctf_series.ts_id!r} is not the tilt series {series.ts_id!r}")
    by_order = {t.acquisition_order: t for t in ctf_series.tilts}
    if by_order.keys() & {t.acquisition_order for t in series.tilts}:
        matches = [by_order.get(t.acquisition_order) for t in series.tilts]
    else:  # no acquisition order in common: Scipion's fallback to the index
        matches = [ctf_series.tilts[t.index] if t.index < ctf_series.n_tilts else None for t in series.tilts]
    for tilt, match in zip(series.tilts, matches, strict=True):
        if match is not None and abs(match.tilt_angle_deg - tilt.tilt_angle_deg) > _ANGLE_MATCH_DEG:
            raise ValueError(
                f"{series.ts_id}: the CTF series has acquisition {tilt.acquisition_order} (index {match.index}) "
                f"at {match.tilt_angle_deg:g}° but the series at {tilt.tilt_angle_deg:g}°; they do not match"
            )
    return matches


def present_acquisition_orders(series: TiltSeries, ctf_series: TiltSeries | None = None) -> list[int]:
    """The acquisition orders of the views to use: enabled in ``series`` and, if given, with an enabled CTF.

    ``tutorial-steps.md`` §10 (Scipion ``getCommonTsAndCtfElements``): {acquisition order of the enabled tilt
    images} ∩ {acquisition order of the enabled CTFs}. Tilts are matched by acquisition order, or by stack index
    when the two series share none.

    Parameters
    ----------
    series
        The tilt series; its tilts marked ``excluded`` are not present.
    ctf_series
        A series (same ``ts_id``) whose tilts carry the CTFs; a tilt of it counts when it is not excluded and
        has a CTF. None: only ``series`` decides (its own CTFs are not required).

    Returns
    -------
    list of int
        The acquisition orders (as stored in ``series``) of the present views, sorted ascending.

    Raises
    ------
    ValueError
        When ``ctf_series`` belongs to another tilt series, or a matched pair of tilts disagrees in nominal tilt
        angle by more than 0.5°.
    """
    enabled = [not t.excluded for t in series.tilts]
    if ctf_series is not None:
        matches = _match_ctf_tilts(series, ctf_series)
        enabled = [
            e and m is not None and not m.excluded and m.ctf is not None
            for e, m in zip(enabled, matches, strict=True)
        ]
    return sorted(t.acquisition_order for t, e in zip(series.tilts, enabled, strict=True) if e)


def _for_series(value: list[_T] | dict[str, list[_T]], ts_id: str) -> list[_T]:
    return list(value.get(ts_id, [])) if isinstance(value, dict) else list(value)


def _explicit_reasons(series: TiltSeries, params: ExcludeViewsParams, reasons: list[list[str]]) -> None:
    n = series.n_tilts
    for index in _for_series(params.views, series.ts_id):
        if index >= n:
            raise ValueError(
                f"{series.ts_id}: views names index {index}, but the stack has {n} views (0..{n - 1})"
            )
        reasons[index].append("views: named by stack index")
    angles = series.tilt_angles_deg
    for angle in _for_series(params.tilt_angles_deg, series.ts_id):
        index = min(range(n), key=lambda i: abs(angles[i] - angle))
        if abs(angles[index] - angle) > params.tilt_angle_tolerance_deg:
            raise ValueError(
                f"{series.ts_id}: no view within {params.tilt_angle_tolerance_deg:g}° of tilt angle {angle:g}° "
                f"(nearest {angles[index]:g}°)"
            )
        reasons[index].append(f"tilt_angles_deg: named as {angle:g}°")
    by_order = {t.acquisition_order: t.index for t in series.tilts}
    for order in _for_series(params.acquisition_orders, series.ts_id):
        if order not in by_order:
            raise ValueError(f"{series.ts_id}: no view has acquisition order {order}")
        reasons[by_order[order]].append("acquisition_orders: named by acquisition order")


def _robust_sigma(residuals: np.ndarray) -> float:
    """1.4826 × the median absolute deviation from the median (the sigma of Gaussian noise)."""
    import numpy as np

    return _MAD_TO_SIGMA * float(np.median(np.abs(residuals - np.median(residuals))))


def _robust_fit(design: np.ndarray, values: np.ndarray, *, iterations: int = 40) -> np.ndarray:
    """Coefficients ``c`` of ``values ≈ design @ c``: IRLS, L1 weights first, then Tukey's bisquare.

    ``design`` is ``(n, k)``, ``values`` ``(n,)``; returns ``(k,)``. The bisquare rejects points beyond 4.685
    robust sigmas of the current residuals, so a few wild points do not pull the fit.
    """
    import numpy as np

    floor = 1e-9 * (1.0 + float(np.max(np.abs(values))))
    weights = np.ones_like(values)
    coef = np.zeros(design.shape[1])
    for it in range(iterations):
        root = np.sqrt(weights)
        coef = np.linalg.lstsq(design * root[:, None], values * root, rcond=None)[0]
        residuals = values - design @ coef
        if it < iterations // 2:
            weights = 1.0 / np.maximum(np.abs(residuals), floor)
            continue
        u = residuals / (_TUKEY_C * max(_robust_sigma(residuals), floor))
        new = np.where(np.abs(u) < 1.0, (1.0 - u**2) ** 2, 0.0)
        if np.count_nonzero(new) <= design.shape[1]:
            break
        weights = new
    return coef


def _defocus_reasons(
    series: TiltSeries, ctfs: Sequence[CtfParameters | None], base: list[bool], params: ExcludeViewsParams
) -> dict[int, str]:
    import numpy as np

    assert params.defocus_outlier_sigma is not None
    have = [i for i, c in enumerate(ctfs) if c is not None]
    fit_on = [i for i in have if base[i]]
    if len(fit_on) < 5:
        return {}
    theta = np.radians([series.tilts[i].effective_tilt_angle_deg for i in have])
    design = np.stack([np.ones_like(theta), np.sin(theta), np.cos(theta)], axis=1)
    defocus = np.array([ctfs[i].defocus_mean_angstrom for i in have])  # type: ignore[union-attr]
    used = np.array([base[i] for i in have])
    residual = defocus - design @ _robust_fit(design[used], defocus[used])
    sigma = max(_robust_sigma(residual[used]), 1e-6)
    limit = max(params.defocus_outlier_sigma * sigma, params.defocus_outlier_min_angstrom)
    return {
        i: f"defocus_outlier_sigma: mean defocus {d / 1e4:.2f} µm is {r:+.0f} Å off the tilt trend "
        f"({abs(r) / sigma:.1f} σ)"
        for i, d, r in zip(have, defocus, residual, strict=True)
        if abs(r) > limit
    }


def _image_means(series: TiltSeries) -> np.ndarray:
    """Mean of every image of the stack, ``(n_tilts,)`` float64, reading one image at a time."""
    import numpy as np

    from tomoforge.io.mrc import read_mrc

    data = read_mrc(series.stack_file).data
    data = data if data.ndim == 3 else data[np.newaxis]
    if data.shape[0] != series.n_tilts:
        raise ValueError(f"{series.stack_file}: holds {data.shape[0]} images for {series.n_tilts} tilts")
    return np.array([float(np.mean(data[i], dtype=np.float64)) for i in range(series.n_tilts)])


def _intensity_reasons(
    series: TiltSeries, means: np.ndarray, base: list[bool], params: ExcludeViewsParams
) -> dict[int, str]:
    import numpy as np

    assert params.min_relative_mean_intensity is not None
    doses = np.array([t.dose_e_per_angstrom2 for t in series.tilts])
    per_dose = means / doses if np.all(doses > 0) else means
    used = np.array(base) & (per_dose > 0)
    if not np.any(np.array(base) & (means > 0)) or np.median(means[np.array(base)]) <= 0:
        raise ValueError(
            f"{series.stack_file}: the images have a mean ≤ 0 (normalised?); min_relative_mean_intensity "
            "needs images in counts"
        )
    cosine = np.maximum(np.cos(np.radians(series.effective_tilt_angles_deg)), 0.05)
    design = np.stack([np.ones_like(cosine), -1.0 / cosine], axis=1)
    log_value = np.log(np.where(per_dose > 0, per_dose, 1.0))
    coef = np.array([float(np.median(log_value[used])), 0.0])
    if np.count_nonzero(used) >= 4:
        fitted = _robust_fit(design[used], log_value[used])
        coef = fitted if fitted[1] >= 0.0 else coef  # brighter with tilt is not thickness: no correction
    relative = np.where(per_dose > 0, np.exp(log_value - design @ coef), 0.0)
    return {
        i: f"min_relative_mean_intensity: mean {means[i]:.4g} is {r:.2f} of that expected at "
        f"{series.tilts[i].tilt_angle_deg:g}°"
        for i, r in enumerate(relative)
        if r < params.min_relative_mean_intensity
    }


def _alignment_views(folder: Path, series: TiltSeries) -> tuple[dict[int, float], list[int]]:
    """Residuals in nm by stack index and the proposed exclusions, from ``<ts>_alignment.json``."""
    import json

    path = folder / f"{series.ts_id}_alignment.json"
    if not path.is_file():
        raise ValueError(
            f"{path}: missing; the alignment rules need the record written by alignment.fiducial"
        )
    record = json.loads(path.read_text(encoding="utf-8"))
    angles = series.tilt_angles_deg
    index_of: dict[int, int] = {}
    for view in record["views"]:
        k = int(view["stack_index"])
        if k < series.n_tilts and abs(angles[k] - view["tilt_angle_deg"]) <= 0.01:
            index_of[k] = k
            continue
        near = [i for i, a in enumerate(angles) if abs(a - view["tilt_angle_deg"]) <= 0.01]
        if near:  # recorded on a stack of other indices (same acquisitions): match by tilt angle
            index_of[k] = near[0]
    residuals = {
        index_of[int(v["stack_index"])]: float(v["residual_nm"])
        for v in record["views"]
        if int(v["stack_index"]) in index_of and v.get("residual_nm") is not None
    }
    return residuals, [index_of[k] for k in record.get("exclusion_candidates", []) if k in index_of]


def _residual_reasons(residuals: dict[int, float], base: list[bool], sigmas: float) -> dict[int, str]:
    import numpy as np

    used = np.array([r for i, r in residuals.items() if base[i]])
    if used.size < 3:
        return {}
    median = float(np.median(used))
    sigma = max(_robust_sigma(used), 0.1 * median, 1e-6)
    return {
        i: f"max_alignment_residual_sigma: residual {r:.3g} nm, {(r - median) / sigma:.1f} σ above the median "
        f"{median:.3g} nm"
        for i, r in sorted(residuals.items())
        if r > median + sigmas * sigma
    }


def _decide(
    series: TiltSeries,
    ctf_matches: list[TiltImage | None] | None,
    params: ExcludeViewsParams,
    folder: Path,
    previous: ExclusionRecord | None,
) -> list[list[str]]:
    """The reasons each view of ``series`` is excluded (empty: present), in stack order."""
    from tomoforge.steps._artifacts import read_dose_filter_record

    n = series.n_tilts
    reasons: list[list[str]] = [[] for _ in range(n)]
    earlier = {v.acquisition_order: v.reasons for v in previous.excluded} if previous is not None else {}
    for t in series.tilts:
        if t.excluded:
            reasons[t.index] += earlier.get(
                t.acquisition_order, ["excluded_in_input: excluded before this step"]
            )
    ctfs = [t.ctf for t in series.tilts]
    if ctf_matches is not None:
        ctfs = [m.ctf if m is not None else None for m in ctf_matches]
        for i, m in enumerate(ctf_matches):
            if m is None:
                reasons[i].append("ctf: no view of this acquisition order in the ctf input")
            elif m.excluded:
                reasons[i].append("ctf: excluded in the ctf input")
            elif m.ctf is None:
                reasons[i].append("ctf: no CTF in the ctf input")
    _explicit_reasons(series, params, reasons)
    for i, ctf in enumerate(ctfs):
        if params.exclude_missing_ctf and ctf is None and ctf_matches is None:
            reasons[i].append("exclude_missing_ctf: no CTF estimate")
        limit = params.max_fit_resolution_angstrom
        if limit is not None and ctf is not None and (ctf.fit_resolution_angstrom or 0.0) > limit:
            reasons[i].append(
                f"max_fit_resolution_angstrom: CTF fitted to {ctf.fit_resolution_angstrom:.3g} Å"
            )
    if params.max_prior_dose_e_per_angstrom2 is not None:
        record = read_dose_filter_record(folder, series.ts_id)
        prior = [t.prior_dose_e_per_angstrom2 for t in series.tilts]
        if record is not None and len(record.prior_dose_e_per_angstrom2) == n:
            prior = list(record.prior_dose_e_per_angstrom2)  # a dose-filtered series holds 0 in its tilts
        for i, dose in enumerate(prior):
            if dose > params.max_prior_dose_e_per_angstrom2:
                reasons[i].append(f"max_prior_dose_e_per_angstrom2: {dose:.4g} e⁻/Å² before this view")
    residuals: dict[int, float] = {}
    if params.max_alignment_residual_sigma is not None or params.use_alignment_exclusion_candidates:
        residuals, candidates = _alignment_views(folder, series)
        if params.use_alignment_exclusion_candidates:
            for i in candidates:
                reasons[i].append("use_alignment_exclusion_candidates: proposed by alignment.fiducial")
    base = [not r for r in reasons]  # statistics only over views no fixed criterion excluded
    found: list[dict[int, str]] = []
    if params.defocus_outlier_sigma is not None:
        found.append(_defocus_reasons(series, ctfs, base, params))
    if params.min_relative_mean_intensity is not None:
        found.append(_intensity_reasons(series, _image_means(series), base, params))
    if params.max_alignment_residual_sigma is not None:
        found.append(_residual_reasons(residuals, base, params.max_alignment_residual_sigma))
    for rule in found:
        for i, text in rule.items():
            reasons[i].append(text)
    return reasons


def _restack(series: TiltSeries, keep: list[int], out: Path, ctx: RunContext) -> dict[str, Path]:
    """Write each stack of ``series`` into ``out`` with only the images ``keep``, unchanged, one at a time."""
    from tomoforge.steps._artifacts import map_stacks, series_stacks

    with ctx.progress(len(series_stacks(series)) * len(keep), f"{series.ts_id}: re-stacking") as progress:
        return map_stacks(series, out, None, progress=progress, indices=keep)


def _reindex_sidecars(source: Path, out: Path, ts_id: str, keep: list[int]) -> None:
    """Write the per-view sidecars whose lists follow the stack for the re-stacked views ``keep``."""
    from tomoforge.steps._artifacts import (
        read_local_motion_record,
        subset_dose_filter_record,
        write_local_motion_record,
    )

    subset_dose_filter_record(source, out, ts_id, keep)
    local = read_local_motion_record(source, ts_id)
    if local is not None:
        write_local_motion_record(
            out, ts_id, local.model_copy(update={"tilts": [local.tilts[i] for i in keep]})
        )
    xrays = source / f"{ts_id}_xrays.csv"
    if xrays.is_file():
        header, *rows = xrays.read_text(encoding="utf-8").splitlines()
        new_index = {old: new for new, old in enumerate(keep)}
        lines = [header]
        for row in rows:
            first, _, rest = row.partition(",")
            if row.strip() and int(first) in new_index:
                lines.append(f"{new_index[int(first)]},{rest}")
        (out / xrays.name).write_text("\n".join(lines) + "\n", encoding="utf-8")


def _summary(outputs: dict[str, Artifact]) -> dict[str, object]:
    folder = outputs["tilt_series"].path
    result: dict[str, object] = {}
    for path in sorted(folder.glob("*_exclusions.json")):
        record = ExclusionRecord.model_validate_json(path.read_text(encoding="utf-8"))
        counts: dict[str, int] = {}
        for view in record.excluded:
            for rule in {r.split(":")[0] for r in view.reasons}:
                counts[rule] = counts.get(rule, 0) + 1
        result[record.ts_id] = {
            "mode": record.mode,
            "views": record.input_tilts,
            "present": len(record.present_acquisition_orders),
            "excluded": len(record.excluded),
            "by_rule": counts,
            "excluded_index": [v.index for v in record.excluded],
            "excluded_tilt_angle_deg": [v.tilt_angle_deg for v in record.excluded],
            "excluded_why": [
                ", ".join(dict.fromkeys(r.split(":")[0] for r in v.reasons)) for v in record.excluded
            ],
        }
    return result


def _methods(params: ExcludeViewsParams) -> str:
    rules = []
    if params.max_fit_resolution_angstrom is not None:
        rules.append(f"CTF fitted to worse than {params.max_fit_resolution_angstrom:g} Å")
    if params.defocus_outlier_sigma is not None:
        rules.append(
            f"defocus more than {params.defocus_outlier_sigma:g} robust SD off its trend with tilt angle"
        )
    if params.min_relative_mean_intensity is not None:
        rules.append(
            f"mean intensity below {params.min_relative_mean_intensity:g} of that expected for the 1/cos θ "
            "path through the specimen"
        )
    if params.max_alignment_residual_sigma is not None:
        rules.append(f"fiducial residual more than {params.max_alignment_residual_sigma:g} robust SD high")
    if params.max_prior_dose_e_per_angstrom2 is not None:
        rules.append(f"prior dose above {params.max_prior_dose_e_per_angstrom2:g} e⁻/Å²")
    if params.exclude_missing_ctf:
        rules.append("no CTF estimate")
    text = "Views were excluded by hand" + (f" and when they had {'; '.join(rules)}" if rules else "")
    how = "removed from the stacks" if params.mode == "restack" else "flagged and left out of later steps"
    return f"{text}; only views with both an enabled image and an enabled CTF were kept, the others {how}."


@step(
    name="tilts.exclude",
    version="1",
    inputs={
        "tilt_series": InputSpec(kind="tilt_series", description="The tilt series to exclude views from."),
        "ctf": InputSpec(
            kind="tilt_series",
            optional=True,
            description="Tilt series whose tilts carry the CTFs to use (matched by ts_id and acquisition order).",
        ),
    },
    outputs={"tilt_series": "tilt_series"},
    summary=_summary,
    methods=_methods,
)
def exclude_views(params: ExcludeViewsParams, inputs: Inputs, ctx: RunContext) -> dict[str, Path]:
    """Exclude bad views, by hand or by rules, marking them or re-stacking without them."""
    from tomoforge.models import TiltSeries, save_json
    from tomoforge.steps._alignment_io import export_imod_alignment
    from tomoforge.steps._artifacts import copy_sidecars, pass_through, read_tilt_series, write_tilt_series

    source = inputs.path("tilt_series")
    all_series = read_tilt_series(source)
    ctf_series = {s.ts_id: s for s in read_tilt_series(inputs.path("ctf"))} if "ctf" in inputs else None
    names = {s.ts_id for s in all_series}
    for field in ("views", "tilt_angles_deg", "acquisition_orders"):
        value: Mapping[str, Any] | list[Any] = getattr(params, field)
        unknown = sorted(set(value) - names) if isinstance(value, dict) else []
        if unknown:
            raise ValueError(f"{field} names tilt series {', '.join(unknown)} that are not in {source}")
    out = ctx.work_dir / "tilt_series"
    out.mkdir()
    for series in all_series:
        matches = None
        if ctf_series is not None:
            if series.ts_id not in ctf_series:
                raise ValueError(f"{inputs.path('ctf')}: the ctf input holds no tilt series {series.ts_id}")
            matches = _match_ctf_tilts(series, ctf_series[series.ts_id])
        reasons = _decide(series, matches, params, source, read_exclusions(source, series.ts_id))
        keep = [i for i, r in enumerate(reasons) if not r]
        if not keep:
            rules = sorted({text.split(":")[0] for r in reasons for text in r})
            raise ValueError(
                f"{series.ts_id}: would exclude all {series.n_tilts} views (by {', '.join(rules)}); "
                "relax the rules or leave the series out"
            )
        tilts = []
        for tilt, why, match in zip(series.tilts, reasons, matches or [None] * series.n_tilts, strict=True):
            update: dict[str, Any] = {"excluded": bool(why)}
            if match is not None:
                update["ctf"] = match.ctf
            tilts.append(tilt.model_copy(update=update))
        update_series: dict[str, Any] = {"tilts": tilts}
        if ctf_series is not None and ctf_series[series.ts_id].defocus_handedness is not None:
            update_series["defocus_handedness"] = ctf_series[series.ts_id].defocus_handedness
        marked = TiltSeries.model_validate(series.model_copy(update=update_series).model_dump())
        if params.mode == "mark":
            written = pass_through(source, out, marked)
            original = list(range(series.n_tilts))
        else:
            stacks = _restack(series, keep, out, ctx)
            present = [tilts[i].model_copy(update={"index": k}) for k, i in enumerate(keep)]
            written = TiltSeries.model_validate(
                marked.model_copy(update={"tilts": present, **stacks}).model_dump()
            )
            write_tilt_series(out, written)
            copy_sidecars(
                source, out, series.ts_id, skip=("_dose_filter.json", "_local_motion.json", "_xrays.csv")
            )
            _reindex_sidecars(source, out, series.ts_id, keep)
            original = keep
        if (source / f"{series.ts_id}.xf").is_file():
            export_imod_alignment(out, written)
        record = ExclusionRecord(
            ts_id=series.ts_id,
            mode=params.mode,
            input_tilts=series.n_tilts,
            excluded=[
                ExcludedView(
                    index=t.index,
                    acquisition_order=t.acquisition_order,
                    tilt_angle_deg=t.tilt_angle_deg,
                    reasons=why,
                )
                for t, why in zip(series.tilts, reasons, strict=True)
                if why
            ],
            present_acquisition_orders=sorted(series.tilts[i].acquisition_order for i in keep),
            original_indices=original,
        )
        save_json(record, out / f"{series.ts_id}_exclusions.json")
        ctx.logger.info(
            "%s: %d of %d views excluded%s",
            series.ts_id,
            series.n_tilts - len(keep),
            series.n_tilts,
            "".join(
                f"\n  view {v.index} ({v.tilt_angle_deg:g}°): {'; '.join(v.reasons)}" for v in record.excluded
            ),
        )
    return {"tilt_series": out}
