"""``averaging.refine`` on the tiny preset: poses perturbed by 6° and 15 Å move back towards the truth until the
refinement converges; a map folder serves as the reference; a tilt prior keeps every axis within three sigmas of
its start; the angular step and the convergence rule.

The tiny preset (10 Å pixels, nine tilts, 62 hexamers) holds information to about 20 Å, which limits a single
particle's orientation to a few degrees; the test asks for a clear improvement, not for the truth. The kernel's
exact recovery of a known pose and its priors are tested in ``tests/averaging/test_align.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from poses import c6_errors, perturbed_particles
from tiny_series import tiny_series_folder
from tomoforge.io.mrc import write_mrc
from tomoforge.io.relion5 import read_relion_particles
from tomoforge.models import ParticleSet, save_json
from tomoforge.steps._refine import angular_step_deg, convergence_checks
from tomoforge.workflow import Project, RunResult, StepFailedError, run_step


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Project, Path, Path, ParticleSet]:
    root = tmp_path_factory.mktemp("refine")
    project = Project.init(root / "project")
    truth, folder, _ = tiny_series_folder(root, project)
    true = read_relion_particles(truth / "relion5" / "particles.star").particles
    return project, folder, root, true


def _tilts_from(found: ParticleSet, start: ParticleSet) -> np.ndarray:
    """Angle between each particle's z axis and its starting one, degrees."""
    cosines = [
        p.rotation()[:, 2] @ q.rotation()[:, 2] for p, q in zip(found.particles, start.particles, strict=True)
    ]
    return np.degrees(np.arccos(np.clip(cosines, -1, 1)))


@pytest.fixture(scope="module")
def perturbed(tiny: tuple[Project, Path, Path, ParticleSet]) -> tuple[Path, ParticleSet]:
    """The true particles turned by 6° about random axes and moved by 15 Å: their folder and the set."""
    _, _, root, true = tiny
    start = perturbed_particles(true, 6.0, 15.0, seed=0)
    folder = root / "perturbed"
    folder.mkdir()
    save_json(start, folder / "particles.json")
    return folder, start


@pytest.fixture(scope="module")
def refined(tiny: tuple[Project, Path, Path, ParticleSet], perturbed: tuple[Path, ParticleSet]) -> RunResult:
    project, series, _, _ = tiny
    return run_step(
        project,
        "averaging.refine",
        {"box_size_px": 26, "symmetry": "C6", "iterations": 8, "max_shift_angstrom": 20.0},
        {"particles": perturbed[0], "tilt_series": series},
    )


def _particles(result: RunResult) -> ParticleSet:
    return ParticleSet.model_validate_json((result.outputs["particles"].path / "particles.json").read_text())


def test_perturbed_poses_move_back_towards_the_truth_until_converged(
    tiny: tuple[Project, Path, Path, ParticleSet], perturbed: tuple[Path, ParticleSet], refined: RunResult
) -> None:
    _, _, _, true = tiny
    start = perturbed[1]
    assert c6_errors(start, true) == pytest.approx((6.0, 15.0))
    found = _particles(refined)
    angle, distance = c6_errors(found, true)
    assert angle < 5.0 and distance < 9.0, (angle, distance)
    assert {p.half_set for p in found.particles} == {1, 2}
    record = json.loads((refined.outputs["map"].path / "refine.json").read_text())
    steps = [it["step_deg"] for it in record["iterations"]]
    # The information reaches Nyquist (20 Å) at once, so the step halves by iteration, down to the final 0.5°; the
    # refinement stops at the first iteration that passes every check, before the most (8).
    assert steps[:4] == [4.0, 2.0, 1.0, 0.5] and set(steps[4:]) <= {0.5}, steps
    assert record["converged"] and "converged" in record["stopped_because"] and len(steps) < 8, record
    checks = [it["convergence"] for it in record["iterations"]]
    assert all(checks[-1].values()) and not any(all(c.values()) for c in checks[:-1]), checks
    assert record["final"]["particles"] == 62 and (refined.outputs["map"].path / "half1.mrc").is_file()
    # Without a prior some axes turn well beyond 3° from their start.
    assert float(np.max(_tilts_from(found, start))) > 4.0


def test_a_map_folder_serves_as_reference_and_a_tilt_prior_holds_the_axes(
    tiny: tuple[Project, Path, Path, ParticleSet], perturbed: tuple[Path, ParticleSet], refined: RunResult
) -> None:
    project, series, _, _ = tiny
    result = run_step(
        project,
        "averaging.refine",
        {"box_size_px": 26, "symmetry": "C6", "iterations": 2, "sigma_tilt_deg": 1.0},
        {"particles": perturbed[0], "tilt_series": series, "reference": refined.outputs["map"].path},
    )
    record = json.loads((result.outputs["map"].path / "refine.json").read_text())
    # The first iteration searched against the folder's map.mrc, low-passed to initial_low_pass_angstrom.
    assert record["iterations"][0]["resolution_angstrom"] == 40.0
    tilts = _tilts_from(_particles(result), perturbed[1])
    assert float(np.max(tilts)) <= 3.0 + 1e-6 and float(np.max(tilts)) > 1.0, tilts
    assert max(it["max_tilt_from_start_deg"] for it in record["iterations"]) <= 3.0 + 1e-6
    assert not record["converged"] and "iterations = 2" in record["stopped_because"]


def test_a_reference_folder_without_a_map_is_named(
    tiny: tuple[Project, Path, Path, ParticleSet], perturbed: tuple[Path, ParticleSet], tmp_path: Path
) -> None:
    project, series, _, _ = tiny
    empty = tmp_path / "not_a_map"
    empty.mkdir()
    with pytest.raises(StepFailedError, match="not_a_map.*no map.mrc"):
        run_step(
            project, "averaging.refine", {"box_size_px": 26, "iterations": 1},
            {"particles": perturbed[0], "tilt_series": series, "reference": empty},
        )  # fmt: skip


def test_the_step_halves_but_follows_the_resolution() -> None:
    # A 208 Å particle at 20 Å supports steps up to 5.5°: the halving ladder from 4° rules, down to the final step.
    assert [angular_step_deg(4.0, 0.5, i, 20.0, 208.0) for i in range(6)] == [4.0, 2.0, 1.0, 0.5, 0.5, 0.5]
    # At 8 Å a 300 Å particle needs steps of at most 1.53°: the first iteration starts on the 1° order.
    assert [angular_step_deg(4.0, 0.5, i, 8.0, 300.0) for i in range(3)] == [1.0, 1.0, 1.0]
    assert angular_step_deg(4.0, 0.5, 0, 1.0, 300.0) == 0.5  # never below the final step


def test_convergence_needs_every_check() -> None:
    previous = {"resolution_angstrom": 20.0, "step_deg": 0.5, "mean_rotation_change_deg": 0.6,
                "mean_shift_angstrom": 4.0}  # fmt: skip
    settled = {"resolution_angstrom": 19.9, "step_deg": 0.5, "mean_rotation_change_deg": 0.3,
               "mean_shift_angstrom": 3.0}  # fmt: skip
    assert all(convergence_checks(previous, settled, 0.5, 10.0).values())
    assert not convergence_checks(None, settled, 0.5, 10.0)["no_resolution_gain"]
    for change, failed in (
        ({"step_deg": 1.0}, "final_step"),
        ({"resolution_angstrom": 19.7}, "no_resolution_gain"),  # 1.5 % better
        ({"mean_rotation_change_deg": 0.5}, "rotations_settled"),
        ({"mean_shift_angstrom": 10.0}, "positions_settled"),
    ):
        checks = convergence_checks(previous, {**settled, **change}, 0.5, 10.0)
        assert [k for k, ok in checks.items() if not ok] == [failed], (change, checks)


def test_a_bad_reference_is_named(tiny: tuple[Project, Path, Path, ParticleSet], tmp_path: Path) -> None:
    project, series, _, true = tiny
    folder = tmp_path / "particles"
    folder.mkdir()
    save_json(true, folder / "particles.json")
    flat = tmp_path / "flat.mrc"
    write_mrc(np.zeros((4, 26, 26), dtype=np.float32), flat, voxel_size_angstrom=10.0)
    with pytest.raises(StepFailedError, match="flat.mrc"):
        run_step(
            project, "averaging.refine", {"box_size_px": 26, "iterations": 1},
            {"particles": folder, "tilt_series": series, "reference": flat},
        )  # fmt: skip
