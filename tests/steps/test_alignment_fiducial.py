"""The fiducial chain (coarse → bead model → bundle adjustment) on a small simulated series, scored against truth."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tomoforge.models import LandmarkModel, load_json
from tomoforge.steps._artifacts import read_tilt_series
from tomoforge.workflow import Project, RunOutput, RunResult, StepFailedError, get_registry, run_step


def dataset(tmp_path_factory: pytest.TempPathFactory, name: str, **changes: object) -> Path:
    from tomoforge.simulate import generate_dataset, preset_config

    out = tmp_path_factory.mktemp(name)
    generate_dataset(preset_config("tiny", **changes), out)
    return out


def corrected(project: Project, frames: Path, **import_params: object) -> RunOutput:
    imported = run_step(project, "import.movies", dict(import_params), {"movies": frames})
    result = run_step(project, "motion.correct", {}, {"movies": RunOutput(imported.run.id, "movies")})
    return RunOutput(result.run.id, "tilt_series")


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, RunResult]]:
    """21 tilts (6° steps) of 128² at 10 Å with 14 beads of 10 nm (some outside the field); the mdoc axis is given 4° off."""
    data = dataset(tmp_path_factory, "fid_data", tilt_stride=2, n_gold=14, frame_size_xy_px=(256, 256))
    project = Project.init(tmp_path_factory.mktemp("fid") / "project")
    series = corrected(project, data / "frames", tilt_axis_angle_deg=89.3)
    coarse = run_step(project, "alignment.coarse", {"specimen_thickness_nm": 80.0}, {"tilt_series": series})
    model = run_step(
        project, "alignment.fiducial_model", {}, {"tilt_series": RunOutput(coarse.run.id, "tilt_series")}
    )
    fiducial = run_step(
        project, "alignment.fiducial", {}, {"tilt_series": RunOutput(model.run.id, "tilt_series")}
    )
    return data, {"coarse": coarse, "model": model, "fiducial": fiducial}


def score(data: Path, result: RunResult, tmp_path: Path):  # noqa: ANN201
    from tomoforge.simulate.scoring.alignment import score_alignment

    folder = result.outputs["tilt_series"].path
    (tmp_path / "alignment").mkdir(parents=True)
    for suffix in (".xf", ".tlt"):
        shutil.copyfile(folder / f"TS_01{suffix}", tmp_path / "alignment" / f"TS_01{suffix}")
    return score_alignment(data / "truth", tmp_path, "TS_01")


def test_beads_are_tracked(chain: tuple[Path, dict[str, RunResult]]) -> None:
    _, runs = chain
    folder = runs["model"].outputs["tilt_series"].path
    model = load_json(LandmarkModel, folder / "TS_01_fiducials.json")
    assert model.n_beads >= 5 and model.bead_diameter_px == pytest.approx(10.0)
    seen = np.isfinite(model.to_array()[..., 0]).mean(axis=1)
    assert (seen >= 0.8).mean() >= 0.6, seen  # beads near the edge leave the field at high tilt
    assert (folder / "TS_01_fiducials.png").is_file() and (folder / "TS_01.fid").is_file()


def test_fiducial_alignment_recovers_the_geometry(
    chain: tuple[Path, dict[str, RunResult]], tmp_path: Path
) -> None:
    data, runs = chain
    result = score(data, runs["fiducial"], tmp_path)
    coarse = score(data, runs["coarse"], tmp_path / "coarse")
    assert result.rms_px < 0.5, result.rms_px
    assert abs(result.tilt_axis_angle_error_deg) < 0.2, result.tilt_axis_angle_error_deg  # from 4° off
    assert max(abs(v.tilt_angle_error_deg) for v in result.views) < 0.3
    assert result.rms_px < 0.25 * coarse.rms_px
    folder = runs["fiducial"].outputs["tilt_series"].path
    (series,) = read_tilt_series(folder)
    assert all(t.transform is not None and t.refined_tilt_angle_deg is not None for t in series.tilts)
    record = json.loads((folder / "TS_01_alignment.json").read_text())
    assert record["mean_residual_nm"] < 0.5 and abs(record["tilt_axis_change_deg"]) > 3.0
    refined = load_json(LandmarkModel, folder / "TS_01_fiducials.json")
    assert refined.mean_residual_px is not None and np.isfinite(refined.positions_angstrom()).all()
    for name in ("TS_01.xf", "TS_01.tlt", "TS_01.fid", "TS_01.xyz", "TS_01_alignment.png"):
        assert (folder / name).is_file(), name


def test_residual_plot_has_a_point_per_aligned_view(chain: tuple[Path, dict[str, RunResult]]) -> None:
    import xml.etree.ElementTree as ET

    _, runs = chain
    folder = runs["fiducial"].outputs["tilt_series"].path
    record = json.loads((folder / "TS_01_alignment.json").read_text())
    root = ET.fromstring((folder / "TS_01_residuals.svg").read_text(encoding="utf-8"))
    lines = root.findall("{http://www.w3.org/2000/svg}polyline")
    assert len(lines) == 2  # the residuals and the exclusion threshold
    assert len(lines[0].get("points", "").split()) == len(record["views"]) == 21
    assert record["exclusion_threshold_nm"] > 0
    titles = [t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}text")]
    assert any(
        t.startswith(f"TS_01: bead residual per view (mean {record['mean_residual_nm']:.3f} nm")
        for t in titles
    )
    spec = get_registry().get("alignment.fiducial")
    assert spec.summary is not None
    summary = spec.summary(runs["fiducial"].outputs)["TS_01"]
    assert isinstance(summary, dict) and summary["residual_plot"] == "TS_01_residuals.svg"


def test_no_beads_suggests_patch_tracking(tmp_path_factory: pytest.TempPathFactory) -> None:
    data = dataset(tmp_path_factory, "nogold", n_gold=0)
    project = Project.init(tmp_path_factory.mktemp("nogold_project") / "project")
    series = corrected(project, data / "frames")
    with pytest.raises(StepFailedError, match="patch tracking"):
        run_step(project, "alignment.fiducial_model", {}, {"tilt_series": series})


def test_aligned_stack_puts_beads_where_the_transforms_say(
    chain: tuple[Path, dict[str, RunResult]],
) -> None:
    from tomoforge.io.mrc import read_mrc

    _, runs = chain
    model_out = RunOutput(runs["model"].run.id, "tilt_series")
    project = Project.open(runs["model"].run.folder.parents[1], write=True)
    with project:
        result = run_step(
            project, "alignment.fiducial", {"aligned_stack_binning": 2}, {"tilt_series": model_out}
        )
    folder = result.outputs["tilt_series"].path
    (series,) = read_tilt_series(folder)
    stack = np.asarray(read_mrc(folder / "TS_01_ali.mrc").data, dtype=np.float64)
    assert stack.shape == (series.n_tilts, 64, 64)
    points = load_json(LandmarkModel, folder / "TS_01_fiducials.json").to_array()
    errors, along_axis = [], []
    for tilt in series.tilts:
        assert tilt.transform is not None
        m = tilt.transform.as_matrix(series.pixel_size_angstrom)
        for b in range(points.shape[0]):
            xy = points[b, tilt.index]
            if not np.isfinite(xy).all():
                continue
            aligned = m[:2, :2] @ (xy - 64) + m[:2, 2]  # about the centre N//2 = 64, stack pixels
            along_axis.append((b, aligned[1]))
            cx, cy = aligned / 2 + 32  # binned pixels
            ix, iy = int(round(cx)), int(round(cy))
            if not (4 <= ix < 60 and 4 <= iy < 60):
                continue
            window = stack[tilt.index, iy - 3 : iy + 4, ix - 3 : ix + 4]
            weight = np.clip(window.max() - window, 0, None) ** 2  # beads are dark
            yy, xx = np.mgrid[-3:4, -3:4]
            errors.append(
                np.hypot(
                    (weight * xx).sum() / weight.sum() + ix - cx, (weight * yy).sum() / weight.sum() + iy - cy
                )
            )
    assert len(errors) > 50 and float(np.median(errors)) < 0.5, np.median(errors)
    # The transforms bring the tilt axis onto Y: a bead keeps its aligned y in every view.
    spread = [np.std([y for bb, y in along_axis if bb == b]) for b in {b for b, _ in along_axis}]
    assert float(np.median(spread)) < 0.5, spread
