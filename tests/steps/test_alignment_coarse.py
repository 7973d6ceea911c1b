"""``alignment.coarse`` on the tiny preset: per-view translations against the simulator's true alignment."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tomoforge.io.imod.tlt import read_tlt
from tomoforge.io.imod.xf import read_xf, xf_to_transforms
from tomoforge.steps._artifacts import read_tilt_series
from tomoforge.workflow import Project, RunOutput, RunResult, get_registry, run_step


def centre_positions(matrices: np.ndarray) -> np.ndarray:
    """``(n, 2)`` raw-image position of the aligned centre, ``s = −A⁻¹·d`` (CONVENTIONS.md §7), in pixels."""
    return np.stack([-np.linalg.solve(m[:2, :2], m[:2, 2]) for m in matrices])


def gauge_free_rms(true_s: np.ndarray, est_s: np.ndarray, angles_deg: np.ndarray, axis_deg: float) -> float:
    """RMS of the difference after removing what no translation alignment can know: an offset and a height."""
    a = math.radians(axis_deg)
    across = np.stack([np.full_like(angles_deg, 1.0), np.zeros_like(angles_deg)], 1)
    height = np.sin(np.radians(angles_deg))[:, None] * np.array([math.cos(a), math.sin(a)])
    design = np.concatenate(
        [np.stack([across, across[:, ::-1]], 1).reshape(-1, 2), height.reshape(-1, 1)], axis=1
    )
    diff = (true_s - est_s).reshape(-1)
    solution, *_ = np.linalg.lstsq(design, diff, rcond=None)
    return float(np.sqrt(np.mean((diff - design @ solution).reshape(-1, 2).__pow__(2).sum(1))))


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Project, RunResult, Path]:
    from tomoforge.simulate import generate_dataset, preset_config

    data = tmp_path_factory.mktemp("coarse_data")
    generate_dataset(preset_config("tiny"), data)
    project = Project.init(tmp_path_factory.mktemp("coarse") / "project")
    imported = run_step(project, "import.movies", {}, {"movies": data / "frames"})
    corrected = run_step(project, "motion.correct", {}, {"movies": RunOutput(imported.run.id, "movies")})
    coarse = run_step(
        project,
        "alignment.coarse",
        {"specimen_thickness_nm": 80.0},
        {"tilt_series": RunOutput(corrected.run.id, "tilt_series")},
    )
    return project, coarse, data


def test_coarse_translations_match_the_truth(run: tuple[Project, RunResult, Path]) -> None:
    _, coarse, data = run
    (series,) = read_tilt_series(coarse.outputs["tilt_series"].path)
    px = series.pixel_size_angstrom
    h, w = series.image_shape_yx or (0, 0)
    truth = xf_to_transforms(read_xf(data / "truth" / "alignment" / "TS_01.xf"), px, (w, h))
    true_s = centre_positions(np.stack([t.as_matrix(px) for t in truth]))
    assert all(t.transform is not None for t in series.tilts)
    est_s = centre_positions(np.stack([t.transform.as_matrix(px) for t in series.tilts if t.transform]))
    angles = np.array([t.tilt_angle_deg for t in series.tilts])
    axis = series.acquisition.tilt_axis_angle_deg
    rms = gauge_free_rms(true_s, est_s, angles, axis)
    spread = gauge_free_rms(true_s, np.zeros_like(true_s), angles, axis)
    # Measured 1.33 px (no alignment 3.41 px) with 15° steps through 80 nm of ice at 10 Å/px; plain tiltxcorr
    # behaviour (no parallax smoothing, no outlier erasing) gives 9.9 px here.
    assert rms < 1.5 and rms < 0.5 * spread, (
        f"coarse alignment RMS {rms:.2f} px (no alignment: {spread:.2f} px)"
    )
    # Every transform is rigid with the acquisition's axis: atan2(A12, A11) = α (CONVENTIONS.md §6).
    for tilt in series.tilts:
        assert tilt.transform is not None
        assert tilt.transform.tilt_axis_angle_deg == pytest.approx(axis, abs=1e-9)


def test_imod_files_and_summary(run: tuple[Project, RunResult, Path]) -> None:
    _, coarse, _ = run
    folder = coarse.outputs["tilt_series"].path
    (series,) = read_tilt_series(folder)
    assert read_xf(folder / "TS_01.xf").shape == (9, 2, 3)
    prexg = read_xf(folder / "TS_01.prexg")
    np.testing.assert_allclose(prexg[:, :, :2], np.broadcast_to(np.eye(2), (9, 2, 2)))
    np.testing.assert_allclose(
        read_tlt(folder / "TS_01.tlt"), [t.tilt_angle_deg for t in series.tilts], atol=0.01
    )
    spec = get_registry().get("alignment.coarse")
    assert spec.summary is not None
    summary = spec.summary(coarse.outputs)["TS_01"]
    assert isinstance(summary, dict) and len(summary["peak_correlation"]) == 9
    assert summary["peak_correlation"].count(None) == 1  # the reference view


def test_alignment_steps_run_from_the_cli(
    run: tuple[Project, RunResult, Path], cli: Callable[..., tuple[int, str, str]]
) -> None:
    """The tutorial's alignment chain from the command line: coarse, then assign it to the same series."""
    project, coarse, _ = run
    project.close()  # release the writer's lock: the CLI opens the project itself

    def run_cli(*args: str) -> tuple[int, str]:
        code, out, err = cli(*args)
        return code, out + err

    code, out = run_cli("steps")
    names = ("alignment.coarse", "alignment.fiducial_model", "alignment.fiducial", "alignment.assign")
    assert code == 0 and all(name in out for name in names)
    root = str(project.root)
    motion_run = coarse.run.id - 1
    code, out = run_cli(
        "run",
        "alignment.coarse",
        "-p",
        root,
        "--input",
        f"tilt_series={motion_run}:tilt_series",
        "--specimen-thickness-nm",
        "60",
    )
    assert code == 0 and "succeeded" in out, out
    code, out = run_cli(
        "run",
        "alignment.assign",
        "-p",
        root,
        "--input",
        f"aligned={coarse.run.id}:tilt_series",
        "--input",
        f"tilt_series={motion_run}:tilt_series",
    )
    assert code == 0 and "succeeded" in out, out
    code, out = run_cli("show", str(coarse.run.id), "-p", root)
    assert code == 0 and "peak correlation" in out, out
