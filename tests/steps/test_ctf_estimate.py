"""``ctf.estimate`` on simulated data: defocus against the simulator's truth, handedness, and the files it writes.

The ``tiny`` preset's 10 Å pixels leave barely one Thon ring below Nyquist at its 2.5–3.5 µm defocus, too little for
any CTF fit; these tests use ``tiny`` with 5 Å pixels (same field, specimen and acquisition, 192² images).
"""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from tomoforge.io.imod import read_imod_defocus
from tomoforge.io.relion5 import read_relion_tilt_series
from tomoforge.simulate.scoring.ctf import score_ctf
from tomoforge.steps._artifacts import read_tilt_series
from tomoforge.workflow import Project, RunOutput, run_step


@pytest.fixture(scope="module")
def estimated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Project, Path, Path, dict]:
    """The tiny preset at 5 Å, motion-corrected, then CTF-estimated with 128-pixel tiles."""
    from tomoforge.simulate import generate_dataset, preset_config

    data = tmp_path_factory.mktemp("ctf_data")
    config = preset_config(
        "tiny",
        frame_pixel_size_angstrom=2.5,
        frame_size_xy_px=(384, 384),
        motion_corrected_pixel_size_angstrom=5.0,
        simulation_voxel_size_angstrom=5.0,
    )
    generate_dataset(config, data)
    project = Project.init(tmp_path_factory.mktemp("ctf") / "project")
    imported = run_step(project, "import.movies", {}, {"movies": data / "frames"})
    corrected = run_step(project, "motion.correct", {}, {"movies": RunOutput(imported.run.id, "movies")})
    result = run_step(
        project,
        "ctf.estimate",
        {"tile_size_px": 128, "handedness_min_tilt_deg": 14.0},
        {"tilt_series": RunOutput(corrected.run.id, "tilt_series")},
    )
    folder = project.outputs(result.run.id)["tilt_series"].path
    return project, data, folder, project.store.summary(result.run.id)


def test_defocus_matches_the_truth(estimated: tuple[Project, Path, Path, dict], tmp_path: Path) -> None:
    _, data, folder, _ = estimated
    (series,) = read_tilt_series(folder)
    assert all(t.ctf is not None for t in series.included())
    results = tmp_path / "results" / "ctf"
    results.mkdir(parents=True)
    shutil.copyfile(folder / "TS_01.defocus", results / "TS_01.defocus")
    score = score_ctf(data / "truth", tmp_path / "results", "TS_01")
    errors = np.array([t.defocus_error_angstrom for t in score.tilts])  # type: ignore[union-attr]
    assert len(errors) == series.n_tilts
    # Measured: |error| 8–365 Å over the 9 tilts (−60…+60°), median ≈ 70 Å, at 2.9 µm defocus.
    assert np.median(np.abs(errors)) < 200.0
    assert np.abs(errors).max() < 600.0


def test_handedness_is_measured_and_recorded(estimated: tuple[Project, Path, Path, dict]) -> None:
    _, _, folder, summary = estimated
    (series,) = read_tilt_series(folder)
    record = json.loads((folder / "TS_01_ctf.json").read_text())
    # The simulator images with handedness +1 (CONVENTIONS.md §8).
    assert series.defocus_handedness == 1
    assert record["handedness"]["value"] == 1
    voted = [t["free_gradient_scale"] for t in record["tilts"] if t["free_gradient_scale"] is not None]
    assert len(voted) == 8  # the tilts of 15° and more
    assert np.median(voted) > 0.0
    assert summary["TS_01"]["handedness"] == 1
    assert summary["TS_01"]["plot"] == "TS_01_ctf.svg"


def test_files_agree_with_the_model(estimated: tuple[Project, Path, Path, dict]) -> None:
    _, _, folder, _ = estimated
    (series,) = read_tilt_series(folder)
    defocus = read_imod_defocus(folder / "TS_01.defocus")
    assert len(defocus.entries) == series.n_tilts
    for entry, tilt in zip(defocus.entries, series.tilts, strict=True):
        assert tilt.ctf is not None
        assert entry.ctf.defocus_u_angstrom == pytest.approx(tilt.ctf.defocus_u_angstrom, abs=1.0)
        assert entry.ctf.defocus_v_angstrom == pytest.approx(tilt.ctf.defocus_v_angstrom, abs=1.0)
    relion = read_relion_tilt_series(
        folder / "TS_01.star", acquisition=series.acquisition, pixel_size_angstrom=series.pixel_size_angstrom
    )
    for tilt, back in zip(series.included(), relion.included(), strict=True):
        assert back.ctf is not None and tilt.ctf is not None
        assert back.ctf.defocus_mean_angstrom == pytest.approx(tilt.ctf.defocus_mean_angstrom, abs=1.0)
    svg = ET.fromstring((folder / "TS_01_ctf.svg").read_text())
    assert svg.tag.endswith("svg")
    assert (folder / "TS_01_ctf_psd.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_parameters_are_refused() -> None:
    from tomoforge.steps.ctf_estimate import CtfEstimateParams

    with pytest.raises(ValueError, match="defocus_min_angstrom"):
        CtfEstimateParams(defocus_min_angstrom=60000.0)
    with pytest.raises(ValueError, match="min_resolution_angstrom"):
        CtfEstimateParams(min_resolution_angstrom=4.0)


def test_view_geometry_follows_the_stack(estimated: tuple[Project, Path, Path, dict]) -> None:
    """A raw stack uses the view's transform (its tilt axis and shift); an interpolated one has the axis on Y and
    no shift; a raw stack without alignment has the nominal axis."""
    import torch

    from tomoforge.geometry import projection_matrices, projection_matrices_from_xf
    from tomoforge.models import TiltTransform
    from tomoforge.steps._alignment_io import view_projection_matrix as _projection_matrix

    _, _, folder, _ = estimated
    (series,) = read_tilt_series(folder)
    tilt = series.tilts[-1]  # +60°
    angle = torch.tensor(tilt.effective_tilt_angle_deg, dtype=torch.float64)
    nominal = projection_matrices(angle, series.acquisition.tilt_axis_angle_deg)
    assert torch.allclose(_projection_matrix(series, tilt), nominal)
    transform = TiltTransform.from_rotation(-80.0, 30.0, -20.0)
    tilts = [t.replace(transform=transform) for t in series.tilts]
    raw = series.model_copy(update={"tilts": tilts})
    m = torch.from_numpy(transform.as_matrix(series.pixel_size_angstrom))
    expected = projection_matrices_from_xf(m[:2, :2], m[:2, 2], angle)
    assert torch.allclose(_projection_matrix(raw, tilts[-1]), expected)
    assert expected[0, 3].abs() > 1.0  # the transform's shift enters the raw geometry
    aligned = series.model_copy(update={"tilts": tilts, "aligned": True})
    assert torch.allclose(_projection_matrix(aligned, tilts[-1]), projection_matrices(angle, 0.0))
