"""``motion.correct`` options beyond whole-frame alignment: patches (local motion) and a separate sum range."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tomoforge.io.mrc import read_mrc
from tomoforge.steps._artifacts import read_local_motion_record, read_motion_table, read_tilt_series
from tomoforge.steps.motion_correction import MotionCorrectionParams
from tomoforge.workflow import (
    ParamsError,
    Project,
    RunOutput,
    RunResult,
    StepFailedError,
    get_registry,
    run_step,
)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    return Project.init(tmp_path_factory.mktemp("motion_step") / "project")


@pytest.fixture(scope="module")
def movies(project: Project, tmp_path_factory: pytest.TempPathFactory) -> RunOutput:
    from tomoforge.simulate import generate_dataset, preset_config

    config = preset_config("tiny", initial_jump_angstrom=12.0, drift_angstrom_per_frame=2.0)
    out = tmp_path_factory.mktemp("tiny_motion")
    generate_dataset(config, out)
    imported = run_step(project, "import.movies", {}, {"movies": out / "frames"})
    return RunOutput(imported.run.id, "movies")


@pytest.fixture(scope="module")
def global_only(project: Project, movies: RunOutput) -> RunResult:
    return run_step(project, "motion.correct", {}, {"movies": movies})


def stack(result: RunResult) -> np.ndarray:
    (series,) = read_tilt_series(result.outputs["tilt_series"].path)
    return np.asarray(read_mrc(series.stack_file).data, dtype=np.float64)


def test_patches_without_local_motion_keep_the_global_correction(
    project: Project, movies: RunOutput, global_only: RunResult
) -> None:
    """The tiny preset has whole-frame motion only: a 3×3 patch model must not fit its shot noise."""
    result = run_step(project, "motion.correct", {"patches_x": 3, "patches_y": 3}, {"movies": movies})
    folder = result.outputs["tilt_series"].path
    record = read_local_motion_record(folder, "TS_01")
    assert record is not None and record.patches_xy == (3, 3) and len(record.tilts) == 9
    assert not any(t.significant for t in record.tilts)
    for tilt in record.tilts:
        assert len(tilt.patch_centres_xy_px) == 9 and len(tilt.patch_shifts_xy_angstrom[0]) == 4
        assert tilt.rms_local_angstrom == 0.0
    np.testing.assert_array_equal(stack(result), stack(global_only))
    spec = get_registry().get("motion.correct")
    assert spec.summary is not None and spec.methods is not None
    summary = spec.summary(result.outputs)["TS_01"]
    assert isinstance(summary, dict)
    assert summary["tilts_with_local_model"] == 0 and summary["local_motion_patches_xy"] == [3, 3]
    assert summary["local_model_used"] == [False] * 9
    assert "cross-validation" in spec.methods(MotionCorrectionParams(patches_x=3, patches_y=3))


def test_sum_range_sums_fewer_frames_but_aligns_all(
    project: Project, movies: RunOutput, global_only: RunResult
) -> None:
    result = run_step(project, "motion.correct", {"sum_first_frame": 1}, {"movies": movies})
    # Every image is a sum of counts: three of the four frames carry three quarters of the electrons.
    ratio = stack(result).mean(axis=(1, 2)) / stack(global_only).mean(axis=(1, 2))
    np.testing.assert_allclose(ratio, 0.75, rtol=0.02)
    table = read_motion_table(result.outputs["tilt_series"].path / "TS_01_motion.csv")
    reference = read_motion_table(global_only.outputs["tilt_series"].path / "TS_01_motion.csv")
    for order, (frames, shifts) in table.items():
        np.testing.assert_array_equal(frames, np.arange(4))
        np.testing.assert_allclose(shifts, reference[order][1])


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"first_frame": 1, "sum_first_frame": 0}, "(?i)sum_first_frame 0 lies before the aligned range"),
        ({"last_frame": 2, "sum_last_frame": 3}, "(?i)sum_last_frame 3 lies after the aligned range"),
        ({"patches_x": 2}, "at least 3 patches"),
    ],
)
def test_bad_ranges_and_grids_are_refused(
    project: Project, movies: RunOutput, params: dict[str, int], message: str
) -> None:
    with pytest.raises(ParamsError, match=message):
        run_step(project, "motion.correct", params, {"movies": movies})


def test_sum_range_beyond_the_movie_names_the_file(project: Project, movies: RunOutput) -> None:
    with pytest.raises(StepFailedError, match=r"\.mrc.*cannot be summed|\.tif.*cannot be summed"):
        run_step(project, "motion.correct", {"sum_first_frame": 5}, {"movies": movies})


def test_local_motion_sidecar_survives_later_steps(project: Project, movies: RunOutput) -> None:
    result = run_step(project, "motion.correct", {"patches_x": 2, "patches_y": 2}, {"movies": movies})
    dosed = run_step(project, "dose.filter", {}, {"tilt_series": RunOutput(result.run.id, "tilt_series")})
    assert (Path(dosed.outputs["tilt_series"].path) / "TS_01_local_motion.json").is_file()


def test_trajectory_picture_has_one_panel_per_tilt(
    global_only: RunResult, png_decode: Callable[[bytes], tuple[int, np.ndarray]]
) -> None:
    """Nine panels in a row; every trajectory starts at its panel's centre (frame 0 is at rest by convention)."""
    path = global_only.outputs["tilt_series"].path / "TS_01_motion.png"
    colour, rows = png_decode(path.read_bytes())
    assert colour == 2 and rows.shape == (96, 9 * 96, 3)
    green = np.all(rows == (60, 220, 60), axis=-1)
    for k in range(9):
        ys, xs = np.nonzero(green[:, k * 96 : (k + 1) * 96])
        assert len(xs) > 0
        assert abs(xs.mean() - 48) < 1.0 and abs(ys.mean() - 48) < 1.5, (k, xs.mean(), ys.mean())
