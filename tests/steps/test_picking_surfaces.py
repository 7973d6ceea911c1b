"""``picking.surfaces`` on the tiny preset: ellipsoid from a few noisy points, oriented picks against the true lattice."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from tomoforge.io.relion5 import read_relion_particles
from tomoforge.models import Tomogram
from tomoforge.picking import ellipsoid_closest_point
from tomoforge.steps._particles import read_particles_artifact
from tomoforge.steps._tomograms import write_tomogram_model
from tomoforge.workflow import Project, StepFailedError, get_registry, run_step

VOXEL = 20.0
LATTICE_DEPTH = 110.0


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Project, Path, dict[str, object], Tomogram]:
    """The tiny preset's truth, and its true tomogram (48 × 48 × 58 voxels of 20 Å) as a ``tomograms`` artifact."""
    from tomoforge.simulate import generate_dataset, preset_config

    data = tmp_path_factory.mktemp("picking_data")
    generate_dataset(preset_config("tiny"), data)
    truth = json.loads((data / "truth" / "truth.json").read_text())["tilt_series"]["TS_01"]
    folder = tmp_path_factory.mktemp("picking_tomograms") / "tomograms"
    folder.mkdir()
    os.link(data / "truth" / "tomograms" / "TS_01.mrc", folder / "TS_01.mrc")
    tomogram = Tomogram(
        ts_id="TS_01",
        volume_file=folder / "TS_01.mrc",
        voxel_size_angstrom=VOXEL,
        shape_zyx=(58, 48, 48),
        reconstruction_method="wbp",
        binning=2.0,
    )
    write_tomogram_model(folder, tomogram)
    project = Project.init(tmp_path_factory.mktemp("picking") / "project")
    return project, folder, truth, tomogram


def _virus_points(truth: dict[str, object], n: int, noise: float, seed: int) -> np.ndarray:
    """``n`` points on the true membrane mid-surface (uniform directions), with Gaussian noise, in Å."""
    (virus,) = truth["viruses"]  # type: ignore[index]
    centre, radii = np.array(virus["centre_xyz_angstrom"]), np.array(virus["radii_xyz_angstrom"])
    rotation = np.array(virus["rotation"])
    rng = np.random.default_rng(seed)
    d = rng.normal(size=(n, 3))
    local = d / np.linalg.norm(d / radii, axis=1, keepdims=True)
    return local @ rotation.T + centre + rng.normal(scale=noise, size=(n, 3))


def _write_csv(path: Path, points: np.ndarray, tomogram: Tomogram, group: str = "7") -> Path:
    index = tomogram.position_to_index_zyx(points)[:, ::-1]  # corner-origin voxels (x, y, z)
    rows = [f"TS_01,{group},{x:.3f},{y:.3f},{z:.3f}" for x, y, z in index]
    path.write_text("ts_id,group,x,y,z\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return path


def test_picks_cover_the_true_lattice_with_its_orientation(
    setup: tuple[Project, Path, dict[str, object], Tomogram], tmp_path: Path
) -> None:
    project, folder, truth, tomogram = setup
    points = _write_csv(tmp_path / "points.csv", _virus_points(truth, 25, 10.0, 0), tomogram)
    result = run_step(
        project,
        "picking.surfaces",
        {"offset_angstrom": -LATTICE_DEPTH, "spacing_angstrom": 60.0},
        {"tomograms": folder, "points": points},
    )
    out = result.outputs["particles"].path
    picks = read_particles_artifact(out)
    assert {p.group for p in picks.particles} == {"7"}
    positions, rotations = picks.positions_angstrom(), picks.rotation_matrices()
    true_positions = np.array(truth["particles"]["positions_xyz_angstrom"])  # type: ignore[index]
    true_axes = np.array(truth["particles"]["rotations"])[:, :, 2]  # type: ignore[index]
    distance = np.linalg.norm(true_positions[:, None] - positions[None], axis=-1)
    nearest = distance.argmin(axis=1)
    recall = float((distance.min(axis=1) <= 40.0).mean())
    assert recall >= 0.95, recall
    # Near its pick a true hexamer has the same axis, up to the curvature over the distance between them.
    cos = (rotations[nearest, :, 2] * true_axes).sum(-1)
    assert float(np.median(np.degrees(np.arccos(np.clip(cos, -1, 1))))) < 8.0
    # Each pick's z is the true virus's outward normal where it sits (the fit's error only).
    (virus,) = truth["viruses"]  # type: ignore[index]
    rotation_v = np.array(virus["rotation"])
    local = torch.from_numpy((positions - np.array(virus["centre_xyz_angstrom"])) @ rotation_v)
    radii_v = np.array(virus["radii_xyz_angstrom"])
    closest, _ = ellipsoid_closest_point(local, torch.from_numpy(radii_v))
    g = closest.numpy() / radii_v**2
    true_normal = (g / np.linalg.norm(g, axis=1, keepdims=True)) @ rotation_v.T
    angle = np.degrees(np.arccos(np.clip((rotations[:, :, 2] * true_normal).sum(-1), -1, 1)))
    assert float(np.median(angle)) < 3.0 and float(angle.max()) < 8.0, (
        float(np.median(angle)),
        float(angle.max()),
    )
    normals = np.array([p.prior_normal for p in picks.particles])
    np.testing.assert_allclose(normals, rotations[:, :, 2], atol=1e-9)
    # The fitted model against the true virus.
    (model,) = json.loads((out / "models.json").read_text())["tomograms"]["TS_01"]
    assert np.linalg.norm(np.array(model["centre_angstrom"]) - np.array(virus["centre_xyz_angstrom"])) < 15.0
    np.testing.assert_allclose(
        sorted(model["radii_angstrom"]), sorted(virus["radii_xyz_angstrom"]), rtol=0.05
    )
    # RELION's file holds the same particles; the picture and the summary are there.
    star = read_relion_particles(out / "particles.star").particles
    np.testing.assert_allclose(star.positions_angstrom(), positions, atol=1e-3)
    assert (out / "TS_01_picks.png").read_bytes()[:4] == b"\x89PNG"
    spec = get_registry().get("picking.surfaces")
    assert spec.summary is not None
    summary = spec.summary(result.outputs)["TS_01"]
    assert (
        isinstance(summary, dict)
        and summary["picks"] == len(positions)
        and summary["picture"] == "TS_01_picks.png"
    )


def test_inward_zero_spin_and_too_few_points(
    setup: tuple[Project, Path, dict[str, object], Tomogram], tmp_path: Path
) -> None:
    project, folder, truth, tomogram = setup
    good = _virus_points(truth, 12, 0.0, 1)
    few = _virus_points(truth, 4, 0.0, 2)
    path = tmp_path / "points.csv"
    _write_csv(path, good, tomogram, group="a")
    extra = _write_csv(tmp_path / "few.csv", few, tomogram, group="b").read_text().splitlines()[1:]
    path.write_text(path.read_text() + "\n".join(extra) + "\n")
    result = run_step(
        project,
        "picking.surfaces",
        {"direction": "inward", "spin": "zero", "spacing_angstrom": 80.0},
        {"tomograms": folder, "points": path},
    )
    out = result.outputs["particles"].path
    picks = read_particles_artifact(out)
    assert {p.group for p in picks.particles} == {"a"}
    assert json.loads((out / "models.json").read_text())["skipped"] == {"TS_01": ["b"]}
    assert json.loads((out / "particle_groups.json").read_text()) == {"a": "1"}  # RELION numbers groups
    assert {p.group for p in read_relion_particles(out / "particles.star").particles.particles} == {"1"}
    rotations = picks.rotation_matrices()
    normals = np.array([p.prior_normal for p in picks.particles])
    np.testing.assert_allclose(
        rotations[:, :, 2], -normals, atol=1e-9
    )  # z inward, prior stays the outward normal
    # Spin 0: x lies in the tomogram's xy plane (the normal's "east").
    np.testing.assert_allclose(rotations[:, 2, 0], 0.0, atol=1e-9)


def test_a_bad_points_file_is_named(
    setup: tuple[Project, Path, dict[str, object], Tomogram], tmp_path: Path
) -> None:
    project, folder, _, _ = setup
    bad = tmp_path / "bad.csv"
    bad.write_text("ts_id,group,x,y\nTS_01,1,3,4\n", encoding="utf-8")
    with pytest.raises(StepFailedError, match="bad.csv"):
        run_step(project, "picking.surfaces", {}, {"tomograms": folder, "points": bad})
    other = tmp_path / "other.csv"
    other.write_text("ts_id,group,x,y,z\nTS_99,1,3,4,5\n", encoding="utf-8")
    with pytest.raises(StepFailedError, match="TS_99"):
        run_step(project, "picking.surfaces", {}, {"tomograms": folder, "points": other})
