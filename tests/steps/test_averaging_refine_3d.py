"""``averaging.refine_3d`` on the tiny preset: 3D subtomograms extracted at poses perturbed by 6° and 15 Å move back
towards the truth (the tiny data hold information to about 20 Å, which limits one particle to a few degrees; see
``test_averaging_refine.py``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from poses import c6_errors, perturbed_particles
from tiny_series import tiny_series_folder
from tomoforge.io.relion5 import read_relion_particles
from tomoforge.models import ParticleSet, save_json
from tomoforge.workflow import Project, RunResult, StepFailedError, run_step


@pytest.fixture(scope="module")
def perturbed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Project, Path, Path, ParticleSet]:
    root = tmp_path_factory.mktemp("refine_3d")
    project = Project.init(root / "project")
    truth, folder, _ = tiny_series_folder(root, project)
    true = read_relion_particles(truth / "relion5" / "particles.star").particles
    particles = root / "perturbed"
    particles.mkdir()
    save_json(perturbed_particles(true, 6.0, 15.0, seed=0), particles / "particles.json")
    cubes = run_step(
        project,
        "averaging.extract",
        {"box_size_px": 26, "dimension": "3d"},
        {"particles": particles, "tilt_series": folder},
    )
    return project, cubes.outputs["subtomograms"].path, folder, true


@pytest.fixture(scope="module")
def refined(perturbed: tuple[Project, Path, Path, ParticleSet]) -> RunResult:
    project, cubes, _, _ = perturbed
    return run_step(
        project,
        "averaging.refine_3d",
        {"symmetry": "C6", "max_shift_angstrom": 20.0, "sigma_tilt_deg": 10.0},
        {"subtomograms": cubes},
    )


def test_perturbed_poses_move_back_towards_the_truth(
    perturbed: tuple[Project, Path, Path, ParticleSet], refined: RunResult
) -> None:
    true = perturbed[3]
    found = ParticleSet.model_validate_json(
        (refined.outputs["particles"].path / "particles.json").read_text()
    )
    angle, distance = c6_errors(found, true)
    assert angle < 5.2 and distance < 9.0, (angle, distance)
    record = json.loads((refined.outputs["map"].path / "refine.json").read_text())
    assert record["converged"] and len(record["iterations"]) < 10
    assert [it["step_deg"] for it in record["iterations"][:4]] == [4.0, 2.0, 1.0, 0.5]
    assert record["final"]["particles"] == 62
    assert {p.half_set for p in found.particles} == {1, 2}
    for name in (
        "map.mrc",
        "half1.mrc",
        "half2.mrc",
        "fsc.svg",
        "map_isosurface.png",
        "angular_distribution.svg",
    ):
        assert (refined.outputs["map"].path / name).stat().st_size > 0


def test_a_reference_folder_and_2d_subtomograms(
    perturbed: tuple[Project, Path, Path, ParticleSet], refined: RunResult, tmp_path: Path
) -> None:
    project, cubes, series, true = perturbed
    again = run_step(
        project,
        "averaging.refine_3d",
        {"symmetry": "C6", "iterations": 2, "max_shift_angstrom": 20.0},
        {"subtomograms": cubes, "reference": refined.outputs["map"].path},
    )
    record = json.loads((again.outputs["map"].path / "refine.json").read_text())
    assert record["iterations"][0]["resolution_angstrom"] == 40.0  # the reference's low-pass at the start
    particles = tmp_path / "particles"
    particles.mkdir()
    save_json(true, particles / "particles.json")
    flat = run_step(
        project, "averaging.extract", {"box_size_px": 26}, {"particles": particles, "tilt_series": series}
    )
    with pytest.raises(StepFailedError, match="3D subtomograms"):
        run_step(project, "averaging.refine_3d", {}, {"subtomograms": flat.outputs["subtomograms"].path})
