"""``tilts.exclude``: views left out by hand and by rules, marked or re-stacked, on synthetic tilt series."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from tomoforge.io.mrc import read_mrc, write_mrc
from tomoforge.models import Acquisition, CtfParameters, TiltImage, TiltSeries
from tomoforge.steps._artifacts import (
    DoseFilterRecord,
    read_dose_filter_record,
    read_tilt_series,
    write_dose_filter_record,
    write_tilt_series,
)
from tomoforge.steps.exclude_views import present_acquisition_orders, read_exclusions
from tomoforge.workflow import Project, RunResult, StepFailedError, run_step

ANGLES = np.arange(-60.0, 60.1, 6.0)  # 21 views
SHAPE_YX = (8, 10)
ACQUISITION = Acquisition(
    voltage_kv=300.0,
    spherical_aberration_mm=2.7,
    amplitude_contrast=0.07,
    pixel_size_angstrom=5.0,
    tilt_axis_angle_deg=85.0,
    dose_per_tilt_e_per_angstrom2=3.0,
)


def dose_symmetric_orders(angles: Sequence[float]) -> list[int]:
    """Acquisition order of each view of a dose-symmetric scheme starting at 0° (0 = first)."""
    ranked = sorted(range(len(angles)), key=lambda i: (abs(angles[i]), angles[i]))
    orders = [0] * len(angles)
    for order, i in enumerate(ranked):
        orders[i] = order
    return orders


def ctf(defocus_angstrom: float, fit_resolution_angstrom: float = 6.0) -> CtfParameters:
    return CtfParameters(
        defocus_u_angstrom=defocus_angstrom + 150.0,
        defocus_v_angstrom=defocus_angstrom - 150.0,
        astigmatism_angle_deg=30.0,
        fit_resolution_angstrom=fit_resolution_angstrom,
        score=0.2,
    )


def write_series(
    folder: Path,
    ts_id: str = "TS_01",
    *,
    angles: Sequence[float] = tuple(ANGLES),
    images: np.ndarray | None = None,
    ctfs: Sequence[CtfParameters | None] | None = None,
    excluded: Sequence[int] = (),
    doses: Sequence[float] | None = None,
    orders: Sequence[int] | None = None,
    even_odd: bool = False,
    handedness: int | None = None,
) -> TiltSeries:
    """Write ``<ts>.mrc`` (+ even/odd) and ``<ts>.json`` into ``folder`` with the steps' helpers."""
    folder.mkdir(parents=True, exist_ok=True)
    n = len(angles)
    rng = np.random.default_rng(len(ts_id) + n)
    if images is None:  # every image distinct: 100·index + noise
        images = (100.0 * np.arange(n)[:, None, None] + rng.normal(size=(n, *SHAPE_YX))).astype(np.float32)
    stacks = {"stack_file": folder / f"{ts_id}.mrc"}
    if even_odd:
        stacks |= {
            "even_stack_file": folder / f"{ts_id}_even.mrc",
            "odd_stack_file": folder / f"{ts_id}_odd.mrc",
        }
    for k, path in enumerate(stacks.values()):
        write_mrc(images + 1000.0 * k, path, voxel_size_angstrom=5.0, is_stack=True)
    orders = list(orders) if orders is not None else dose_symmetric_orders(angles)
    doses = list(doses) if doses is not None else [3.0] * n
    prior = {o: sum(d for d, p in zip(doses, orders, strict=True) if p < o) for o in orders}
    tilts = [
        TiltImage(
            index=i,
            tilt_angle_deg=float(angles[i]),
            acquisition_order=orders[i],
            prior_dose_e_per_angstrom2=prior[orders[i]],
            dose_e_per_angstrom2=doses[i],
            excluded=i in excluded,
            ctf=None if ctfs is None else ctfs[i],
        )
        for i in range(n)
    ]
    series = TiltSeries(
        ts_id=ts_id,
        acquisition=ACQUISITION,
        pixel_size_angstrom=5.0,
        tilts=tilts,
        image_shape_yx=SHAPE_YX,
        defocus_handedness=handedness,
        **stacks,
    )
    write_tilt_series(folder, series)
    return series


@pytest.fixture(autouse=True)
def exclusions_are_a_sidecar(monkeypatch: pytest.MonkeyPatch) -> None:
    """``<ts>_exclusions.json`` must be known as a sidecar, or ``read_tilt_series`` takes it for a series.

    Until ``_exclusions.json`` is part of ``SIDECAR_SUFFIXES`` in ``steps/_artifacts.py`` (a change asked of its
    owner), it is added here.
    """
    from tomoforge.steps import _artifacts

    if "_exclusions.json" not in _artifacts.SIDECAR_SUFFIXES:
        monkeypatch.setattr(
            _artifacts, "SIDECAR_SUFFIXES", (*_artifacts.SIDECAR_SUFFIXES, "_exclusions.json")
        )


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    return Project.init(tmp_path_factory.mktemp("exclude") / "project")


def run(project: Project, folder: Path, ctf_folder: Path | None = None, **params: object) -> RunResult:
    inputs = {"tilt_series": folder} | ({"ctf": ctf_folder} if ctf_folder is not None else {})
    return run_step(project, "tilts.exclude", params, inputs)


def excluded_by_rule(result: RunResult, ts_id: str = "TS_01") -> dict[int, list[str]]:
    """Excluded input indices and the rules (parameter names) that excluded them."""
    record = read_exclusions(result.outputs["tilt_series"].path, ts_id)
    assert record is not None
    return {v.index: sorted({r.split(":")[0] for r in v.reasons}) for v in record.excluded}


def test_explicit_views_by_index_angle_and_order_are_marked(project: Project, tmp_path: Path) -> None:
    one = write_series(tmp_path / "in", "TS_01")
    two = write_series(tmp_path / "in", "TS_02")
    order_5 = two.tilts[5].acquisition_order
    result = run(
        project,
        tmp_path / "in",
        views={"TS_01": [0, 20]},
        tilt_angles_deg=[30.3],  # within 0.5° of the 30° view, in both series
        acquisition_orders={"TS_02": [order_5]},
    )
    folder = result.outputs["tilt_series"].path
    out = {s.ts_id: s for s in read_tilt_series(folder)}
    assert out["TS_01"].excluded_indices() == [0, 15, 20]
    assert out["TS_02"].excluded_indices() == [5, 15]
    assert excluded_by_rule(result, "TS_01") == {0: ["views"], 15: ["tilt_angles_deg"], 20: ["views"]}
    assert excluded_by_rule(result, "TS_02") == {5: ["acquisition_orders"], 15: ["tilt_angles_deg"]}
    # Mark mode keeps every view in the (hard-linked) stack and every other field of the tilts.
    assert (folder / "TS_01.mrc").read_bytes() == one.stack_file.read_bytes()
    for before, after in zip(one.tilts, out["TS_01"].tilts, strict=True):
        assert after.model_copy(update={"excluded": before.excluded}) == before
    record = read_exclusions(folder, "TS_02")
    assert record is not None and record.original_indices == list(range(21))
    assert record.present_acquisition_orders == present_acquisition_orders(out["TS_02"])
    summary = project.store.summary(result.run.id)
    assert summary["TS_01"]["excluded"] == 3 and summary["TS_01"]["excluded_tilt_angle_deg"] == [
        -60.0,
        30.0,
        60.0,
    ]
    assert summary["TS_02"]["by_rule"] == {"acquisition_orders": 1, "tilt_angles_deg": 1}


def test_restack_writes_only_the_present_views(project: Project, tmp_path: Path) -> None:
    ctfs = [ctf(30000.0 + 10 * i) for i in range(21)]
    series = write_series(tmp_path / "in", ctfs=ctfs, excluded=[4], even_odd=True)
    prior = [t.prior_dose_e_per_angstrom2 for t in series.tilts]
    write_dose_filter_record(
        tmp_path / "in",
        "TS_01",
        DoseFilterRecord(
            mode="mean",
            voltage_kv=300.0,
            initial_dose_e_per_angstrom2=0.0,
            prior_dose_e_per_angstrom2=prior,
            dose_e_per_angstrom2=[3.0] * 21,
        ),
    )
    xrays = "tilt_index,tilt_angle_deg,y_px,x_px,radius_px,n_pixels,polarity\n7,-18.0,1,2,1,3,1\n8,-12.0,3,4,1,3,1\n"
    (tmp_path / "in" / "TS_01_xrays.csv").write_text(xrays, encoding="utf-8")
    (tmp_path / "in" / "TS_01.xf").write_text("1 0 0 1 0 0\n" * 21, encoding="utf-8")
    result = run(project, tmp_path / "in", views=[2, 7], mode="restack")
    folder = result.outputs["tilt_series"].path
    (out,) = read_tilt_series(folder)
    keep = [i for i in range(21) if i not in (2, 4, 7)]
    assert out.n_tilts == 18 and out.excluded_indices() == []
    assert [t.index for t in out.tilts] == list(range(18))
    for new, old in zip(out.tilts, (series.tilts[i] for i in keep), strict=True):
        assert new.acquisition_order == old.acquisition_order
        assert new.tilt_angle_deg == old.tilt_angle_deg and new.ctf == old.ctf
        assert new.prior_dose_e_per_angstrom2 == old.prior_dose_e_per_angstrom2
    for field in ("stack_file", "even_stack_file", "odd_stack_file"):
        before = read_mrc(getattr(series, field))
        after = read_mrc(getattr(out, field))
        assert after.path.parent == folder and after.is_stack
        np.testing.assert_array_equal(after.data, before.data[keep])
        assert after.pixel_size_angstrom == pytest.approx(5.0)
    record = read_exclusions(folder, "TS_01")
    assert record is not None and record.original_indices == keep
    assert [v.index for v in record.excluded] == [2, 4, 7]
    assert record.excluded[1].reasons == ["excluded_in_input: excluded before this step"]
    dose = read_dose_filter_record(folder, "TS_01")
    assert dose is not None and dose.prior_dose_e_per_angstrom2 == [prior[i] for i in keep]
    # IMOD exports are rewritten for the new stack: one line per present view.
    assert len((folder / "TS_01.xf").read_text().splitlines()) == 18
    assert [float(a) for a in (folder / "TS_01.tlt").read_text().split()] == [
        series.tilts[i].tilt_angle_deg for i in keep
    ]
    rows = (folder / "TS_01_xrays.csv").read_text().splitlines()
    assert rows[1:] == ["5,-12.0,3,4,1,3,1"]  # view 7 is gone, view 8 is now 5


def test_excluded_views_stay_excluded_and_keep_their_reasons(project: Project, tmp_path: Path) -> None:
    write_series(tmp_path / "in", excluded=[3])
    first = run(project, tmp_path / "in", views=[9])
    assert excluded_by_rule(first) == {3: ["excluded_in_input"], 9: ["views"]}
    # A second pass with no rule at all excludes nothing new and removes nothing.
    second = run(project, first.outputs["tilt_series"].path)
    (out,) = read_tilt_series(second.outputs["tilt_series"].path)
    assert out.excluded_indices() == [3, 9]
    assert excluded_by_rule(second) == {3: ["excluded_in_input"], 9: ["views"]}


def test_ctf_fit_resolution_missing_ctf_and_prior_dose_rules(project: Project, tmp_path: Path) -> None:
    ctfs: list[CtfParameters | None] = [ctf(30000.0, 6.0) for _ in range(21)]
    clean = write_series(tmp_path / "clean", ctfs=ctfs)
    result = run(project, tmp_path / "clean", max_fit_resolution_angstrom=10.0, exclude_missing_ctf=True)
    assert excluded_by_rule(result) == {}
    ctfs[3] = ctf(30000.0, 15.0)
    ctfs[8] = None
    write_series(tmp_path / "bad", ctfs=ctfs)
    result = run(project, tmp_path / "bad", max_fit_resolution_angstrom=10.0, exclude_missing_ctf=True)
    assert excluded_by_rule(result) == {3: ["max_fit_resolution_angstrom"], 8: ["exclude_missing_ctf"]}
    # Prior dose: 3 e⁻/Å² per view, so views recorded after more than 30 e⁻/Å² are the 11th onwards.
    late = {t.index for t in clean.tilts if t.prior_dose_e_per_angstrom2 > 30.0}
    assert len(late) == 10
    result = run(project, tmp_path / "clean", max_prior_dose_e_per_angstrom2=30.0)
    assert set(excluded_by_rule(result)) == late
    # A dose-filtered series holds 0 prior dose; the original doses come from its record.
    filtered = write_series(tmp_path / "filtered", ctfs=[ctf(30000.0)] * 21)
    write_dose_filter_record(
        tmp_path / "filtered",
        "TS_01",
        DoseFilterRecord(
            mode="mean",
            voltage_kv=300.0,
            initial_dose_e_per_angstrom2=0.0,
            prior_dose_e_per_angstrom2=[t.prior_dose_e_per_angstrom2 for t in filtered.tilts],
            dose_e_per_angstrom2=[3.0] * 21,
        ),
    )
    zeroed = filtered.model_copy(
        update={"tilts": [t.model_copy(update={"prior_dose_e_per_angstrom2": 0.0}) for t in filtered.tilts]}
    )
    write_tilt_series(tmp_path / "filtered", zeroed)
    result = run(project, tmp_path / "filtered", max_prior_dose_e_per_angstrom2=30.0)
    assert set(excluded_by_rule(result)) == late


def test_defocus_trend_with_tilt_is_kept_and_jumps_are_outliers(project: Project, tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    theta = np.radians(ANGLES)
    # Image-centre defocus of a tilted specimen (offset from the tilt axis) + 80 Å estimation noise.
    defocus = 30000.0 + 6000.0 * np.sin(theta) + 8000.0 * (np.cos(theta) - 1.0) + rng.normal(0, 80.0, 21)
    write_series(tmp_path / "clean", ctfs=[ctf(d) for d in defocus])
    assert excluded_by_rule(run(project, tmp_path / "clean", defocus_outlier_sigma=4.0)) == {}
    bad = defocus.copy()
    bad[15] += 50000.0  # a 5 µm jump
    bad[4] += 1500.0  # 0.15 µm: inside the spread of the series, but off the trend
    naive = np.abs(bad[4] - np.median(bad)) / (1.4826 * np.median(np.abs(bad - np.median(bad))))
    assert naive < 2.0  # a global median/MAD test without the trend would not see it
    write_series(tmp_path / "bad", ctfs=[ctf(d) for d in bad])
    result = run(project, tmp_path / "bad", defocus_outlier_sigma=4.0)
    assert excluded_by_rule(result) == {4: ["defocus_outlier_sigma"], 15: ["defocus_outlier_sigma"]}


def test_dark_views_are_found_after_the_thickness_darkening(project: Project, tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    theta = np.radians(ANGLES)
    doses = 2.0 / np.cos(theta)  # exposure raised with tilt, as SerialEM can
    # Beer–Lambert: counts ∝ dose · exp(−t / (Λ cos θ)), t/Λ = 2: the 60° view is 0.27 as bright as 0°.
    means = 2000.0 * doses * np.exp(-2.0 / np.cos(theta))
    images = means[:, None, None] * (1.0 + 0.01 * rng.normal(size=(21, *SHAPE_YX)))
    assert np.min(means / np.median(means)) < 0.5  # a plain median test would flag the high tilts
    write_series(tmp_path / "clean", images=images.astype(np.float32), doses=doses)
    assert excluded_by_rule(run(project, tmp_path / "clean", min_relative_mean_intensity=0.6)) == {}
    images[12] *= 0.4  # 12°: a grid bar
    images[1] *= 0.5  # −54°
    write_series(tmp_path / "dark", images=images.astype(np.float32), doses=doses)
    result = run(project, tmp_path / "dark", min_relative_mean_intensity=0.6)
    assert excluded_by_rule(result) == {
        1: ["min_relative_mean_intensity"],
        12: ["min_relative_mean_intensity"],
    }


def test_alignment_residual_outliers_and_candidates(project: Project, tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    write_series(tmp_path / "in")
    residuals = 0.3 + 0.02 * rng.normal(size=21)
    residuals[6] = 1.2
    views = [
        {"stack_index": i, "tilt_angle_deg": float(a), "residual_nm": float(r)}
        for i, (a, r) in enumerate(zip(ANGLES, residuals, strict=True))
    ]
    record = {"ts_id": "TS_01", "views": views, "exclusion_candidates": [10]}
    (tmp_path / "in" / "TS_01_alignment.json").write_text(json.dumps(record), encoding="utf-8")
    result = run(project, tmp_path / "in", max_alignment_residual_sigma=5.0)
    assert excluded_by_rule(result) == {6: ["max_alignment_residual_sigma"]}
    assert (result.outputs["tilt_series"].path / "TS_01_alignment.json").is_file()  # passed through
    result = run(project, tmp_path / "in", use_alignment_exclusion_candidates=True)
    assert excluded_by_rule(result) == {10: ["use_alignment_exclusion_candidates"]}
    write_series(tmp_path / "none")
    with pytest.raises(StepFailedError, match="alignment rules need the record"):
        run(project, tmp_path / "none", max_alignment_residual_sigma=5.0)


def test_present_views_are_the_common_set_with_a_ctf_input(project: Project, tmp_path: Path) -> None:
    series = write_series(tmp_path / "in", excluded=[12])
    # The CTFs were estimated on another copy of the series: view 2 is missing there, 5 excluded, 9 unfitted.
    ctfs: list[CtfParameters | None] = [ctf(30000.0 + 100.0 * i) for i in range(21)]
    ctfs[9] = None
    other = write_series(tmp_path / "ctf_full", ctfs=ctfs, excluded=[5], handedness=-1)
    kept = [t for t in other.tilts if t.index != 2]
    write_series(
        tmp_path / "ctf",
        angles=[t.tilt_angle_deg for t in kept],
        orders=[t.acquisition_order for t in kept],
        ctfs=[t.ctf for t in kept],
        excluded=[k for k, t in enumerate(kept) if t.excluded],
        handedness=-1,
    )
    (ctf_series,) = read_tilt_series(tmp_path / "ctf")
    expected = present_acquisition_orders(series, ctf_series)
    assert expected == sorted(t.acquisition_order for t in series.tilts if t.index not in (2, 5, 9, 12))
    result = run(project, tmp_path / "in", tmp_path / "ctf")
    (out,) = read_tilt_series(result.outputs["tilt_series"].path)
    assert out.excluded_indices() == [2, 5, 9, 12]
    assert excluded_by_rule(result) == {2: ["ctf"], 5: ["ctf"], 9: ["ctf"], 12: ["excluded_in_input"]}
    assert out.defocus_handedness == -1
    for tilt in out.included():  # the CTFs travel by acquisition order
        assert tilt.ctf == ctfs[tilt.index]
    record = read_exclusions(result.outputs["tilt_series"].path, "TS_01")
    assert record is not None and record.present_acquisition_orders == expected
    assert present_acquisition_orders(out) == expected


def test_ctf_matching_falls_back_to_the_index_and_checks_angles(tmp_path: Path) -> None:
    series = write_series(tmp_path / "a")
    shifted = write_series(
        tmp_path / "b",
        orders=[100 + o for o in dose_symmetric_orders(ANGLES)],
        ctfs=[ctf(3e4)] * 21,
        excluded=[0],
    )
    # No acquisition order in common: matched by index (Scipion's fallback).
    assert present_acquisition_orders(series, shifted) == sorted(
        t.acquisition_order for t in series.tilts[1:]
    )
    # Same orders, other angles (recorded in another sequence): refused rather than matched wrongly.
    other_scheme = write_series(tmp_path / "c", orders=list(range(21)), ctfs=[ctf(3e4)] * 21)
    with pytest.raises(ValueError, match="do not match"):
        present_acquisition_orders(series, other_scheme)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"views": list(range(21))}, "would exclude all 21 views"),
        ({"views": [21]}, "names index 21, but the stack has 21 views"),
        ({"tilt_angles_deg": [31.0]}, "no view within 0.5° of tilt angle 31°"),
        ({"acquisition_orders": [99]}, "no view has acquisition order 99"),
        ({"views": {"TS_99": [1]}}, "names tilt series TS_99"),
    ],
)
def test_bad_requests_are_refused(
    project: Project, tmp_path: Path, params: dict[str, object], message: str
) -> None:
    write_series(tmp_path / "in")
    with pytest.raises(StepFailedError, match=message):
        run(project, tmp_path / "in", **params)
