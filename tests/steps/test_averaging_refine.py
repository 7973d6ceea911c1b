"""``averaging.refine`` on the tiny preset: poses perturbed by 6° and 15 Å move back towards the truth.

The tiny preset (10 Å pixels, nine tilts, 62 hexamers) holds information to about 20 Å, which limits a single
particle's orientation to a few degrees; the test asks for a clear improvement, not for the truth. The kernel's
exact recovery of a known pose is tested in ``tests/averaging/test_align.py``.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from tiny_series import true_tiny_series
from tomoforge.averaging import symmetry_rotations
from tomoforge.io.mrc import write_mrc
from tomoforge.io.relion5 import read_relion_particles
from tomoforge.models import ParticleSet, save_json
from tomoforge.steps._artifacts import write_tilt_series
from tomoforge.workflow import Project, StepFailedError, run_step


def _turn(vector: np.ndarray) -> np.ndarray:
    angle = float(np.linalg.norm(vector))
    k = vector / angle
    cross = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + math.sin(angle) * cross + (1 - math.cos(angle)) * cross @ cross


def _errors(found: ParticleSet, true: ParticleSet) -> tuple[float, float]:
    """Median angle (modulo C6 about the reference's z) and median distance to the true poses."""
    ops = symmetry_rotations("C6", dtype=torch.float64).numpy()
    angles, distances = [], []
    for p, q in zip(found.particles, true.particles, strict=True):
        turn = p.rotation().T @ q.rotation()
        angles.append(min(math.degrees(math.acos(np.clip((np.trace(turn @ s) - 1) / 2, -1, 1))) for s in ops))
        distances.append(float(np.linalg.norm(np.subtract(p.position_angstrom, q.position_angstrom))))
    return float(np.median(angles)), float(np.median(distances))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Project, Path, Path, ParticleSet]:
    root = tmp_path_factory.mktemp("refine")
    project = Project.init(root / "project")
    truth, series = true_tiny_series(root / "data", project)
    folder = root / "tilt_series"
    folder.mkdir()
    os.link(series.stack_file, folder / "TS_01.mrc")
    write_tilt_series(folder, series.model_copy(update={"stack_file": folder / "TS_01.mrc"}))
    true = read_relion_particles(truth / "relion5" / "particles.star").particles
    return project, folder, root, true


def test_perturbed_poses_move_back_towards_the_truth(tiny: tuple[Project, Path, Path, ParticleSet]) -> None:
    project, series, root, true = tiny
    rng = np.random.default_rng(0)
    moved = []
    for p in true.particles:
        axis, shift = rng.normal(size=3), rng.normal(size=3)
        turn = _turn(axis / np.linalg.norm(axis) * math.radians(6.0))
        moved.append(
            p.model_copy(
                update={
                    "rotation_matrix": tuple(map(tuple, turn @ p.rotation())),
                    "position_angstrom": tuple(
                        np.add(p.position_angstrom, shift / np.linalg.norm(shift) * 15.0)
                    ),
                }
            )
        )
    start = true.model_copy(update={"particles": moved})
    folder = root / "perturbed"
    folder.mkdir()
    save_json(start, folder / "particles.json")
    assert _errors(start, true) == pytest.approx((6.0, 15.0))
    result = run_step(
        project,
        "averaging.refine",
        {"box_size_px": 26, "symmetry": "C6", "iterations": 4, "max_shift_angstrom": 20.0},
        {"particles": folder, "tilt_series": series},
    )
    refined = ParticleSet.model_validate_json(
        (result.outputs["particles"].path / "particles.json").read_text()
    )
    angle, distance = _errors(refined, true)
    assert angle < 5.0 and distance < 9.0, (angle, distance)
    assert {p.half_set for p in refined.particles} == {1, 2}
    record = json.loads((result.outputs["map"].path / "refine.json").read_text())
    assert [it["step_deg"] for it in record["iterations"]] == [4.0, 2.0, 1.0, 0.5]
    assert record["final"]["particles"] == 62 and (result.outputs["map"].path / "half1.mrc").is_file()


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
