"""``picking.template`` through the engine and the CLI: copies of a reference on a sphere, found with their pose."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from tomoforge.io.mrc import write_mrc
from tomoforge.models import Tomogram
from tomoforge.picking import orientations_along_normals
from tomoforge.steps._particles import read_particles_artifact
from tomoforge.steps._tomograms import write_tomogram_model
from tomoforge.workflow import Project, StepFailedError, run_step

VOXEL = 10.0
SHAPE = (40, 48, 48)
RADIUS = 150.0  # Å, sphere centred on the centre voxel
# A reference of Gaussian blobs (Å from its centre, σ Å, amplitude), asymmetric.
BLOBS = [
    ((0.0, 0.0, 0.0), 15.0, 1.0),
    ((40.0, 0.0, 0.0), 12.0, 0.8),
    ((0.0, 30.0, 10.0), 10.0, 0.6),
    ((-10.0, -10.0, 40.0), 10.0, 0.7),
]
DIRECTIONS = np.array(
    [[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0.6, 0.6, 0.53], [-0.6, 0.6, -0.53]], dtype=float
)


def _render(
    shape: tuple[int, int, int], voxel: float, copies: list[tuple[np.ndarray, np.ndarray]]
) -> np.ndarray:
    """Blobs of each copy at ``centre + R·offset`` (Å from the centre voxel ``N // 2``)."""
    axes = [(np.arange(n) - n // 2) * voxel for n in shape]
    zz, yy, xx = np.meshgrid(*axes, indexing="ij")
    grid = np.stack([xx, yy, zz], axis=-1)
    out = np.zeros(shape)
    for centre, rotation in copies:
        for offset, sigma, amplitude in BLOBS:
            where = centre + rotation @ np.array(offset)
            out += amplitude * np.exp(-0.5 * ((grid - where) ** 2).sum(-1) / sigma**2)
    return out


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path, np.ndarray, np.ndarray]:
    """Tomogram (image contrast: dense dark, noisy), reference MRC at 5 Å, and a sphere model as ``surfaces``."""
    root = tmp_path_factory.mktemp("template")
    normals = DIRECTIONS / np.linalg.norm(DIRECTIONS, axis=1, keepdims=True)
    spins = torch.tensor([0.0, 40.0, 80.0, 120.0, 160.0, 200.0], dtype=torch.float64)
    rotations = orientations_along_normals(torch.from_numpy(normals), spin_deg=spins).numpy()
    positions = normals * RADIUS
    volume = _render(SHAPE, VOXEL, list(zip(positions, rotations, strict=True)))
    noise = np.random.default_rng(0).normal(size=SHAPE)
    image = -(volume + 0.3 * volume.std() * noise)
    folder = root / "tomograms"
    folder.mkdir()
    write_mrc(image.astype(np.float32), folder / "TS_01.mrc", voxel_size_angstrom=VOXEL)
    write_tomogram_model(
        folder,
        Tomogram(
            ts_id="TS_01",
            volume_file=folder / "TS_01.mrc",
            voxel_size_angstrom=VOXEL,
            shape_zyx=SHAPE,
            reconstruction_method="wbp",
            binning=1.0,
        ),  # fmt: skip
    )
    reference = root / "reference.mrc"
    write_mrc(
        _render((30, 30, 30), 5.0, [(np.zeros(3), np.eye(3))]).astype(np.float32),
        reference,
        voxel_size_angstrom=5.0,
    )
    surfaces = root / "surfaces"
    surfaces.mkdir()
    model = {"group": "TS_01/1", "centre_angstrom": [0.0, 0.0, 0.0], "radii_angstrom": [RADIUS] * 3,
             "rotation": np.eye(3).tolist(), "rms_distance_angstrom": 0.0, "picks": 0}  # fmt: skip
    (surfaces / "models.json").write_text(json.dumps({"tomograms": {"TS_01": [model]}}))
    return folder, reference, surfaces, positions, rotations


def _matched(picks: list, positions: np.ndarray) -> list[int]:
    found = np.array([p.position_angstrom for p in picks])
    distance = np.linalg.norm(found[:, None] - positions[None], axis=-1)
    assert float(distance.min(axis=0).max()) <= 1.5 * VOXEL, distance.min(axis=0)
    return [int(i) for i in distance.argmin(axis=0)]


def test_finds_every_copy_with_its_orientation(
    scene: tuple[Path, Path, Path, np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    folder, reference, _, positions, rotations = scene
    project = Project.init(tmp_path / "project")
    params = {"angular_step_deg": 20.0, "tilt_range_deg": 90.0}
    result = run_step(project, "picking.template", params, {"tomograms": folder, "reference": reference})
    out = result.outputs["particles"].path
    picks = read_particles_artifact(out).particles
    assert len(picks) == len(positions)
    for i, k in enumerate(_matched(picks, positions)):
        turn = picks[k].rotation().T @ rotations[i]
        angle = np.degrees(np.arccos(np.clip((np.trace(turn) - 1) / 2, -1, 1)))
        assert angle < 20.0, (i, angle)
        assert picks[k].score is not None and picks[k].score > 0.5
    record = json.loads((out / "TS_01_template_matching.json").read_text())
    assert record["picks"] == len(picks) and record["orientations"] > 1000
    assert (out / "TS_01_scores.mrc").is_file() and (out / "TS_01_picks.png").read_bytes()[:4] == b"\x89PNG"


def test_near_surfaces_the_picks_take_the_group_and_normal(
    scene: tuple[Path, Path, Path, np.ndarray, np.ndarray],
    tmp_path: Path,
    cli: Callable[..., tuple[int, str, str]],
) -> None:
    folder, reference, surfaces, positions, _ = scene
    project = Project.init(tmp_path / "project")
    project.close()  # the CLI opens the project itself
    code, out, err = cli(
        "run", "picking.template", "-p", str(project.root), "--input", f"tomograms={folder}",
        "--input", f"reference={reference}", "--input", f"surfaces={surfaces}",
        "--angular-step-deg", "20", "--tilt-range-deg", "90", "--normal-range-deg", "25",
    )  # fmt: skip
    assert code == 0 and "succeeded" in out + err, out + err
    (made,) = (project.root / "runs").glob("*/particles/particles.json")
    picks = read_particles_artifact(made.parent).particles
    assert len(picks) == len(positions)
    for i, k in enumerate(_matched(picks, positions)):
        normal = np.array(picks[k].prior_normal)
        assert picks[k].group == "TS_01/1"
        assert float(normal @ DIRECTIONS[i] / np.linalg.norm(DIRECTIONS[i])) > np.cos(np.radians(6.0))
        assert float(picks[k].rotation()[:, 2] @ normal) >= np.cos(np.radians(25.0)) - 1e-6


def test_bad_inputs_are_named(scene: tuple[Path, Path, Path, np.ndarray, np.ndarray], tmp_path: Path) -> None:
    folder, _, _, _, _ = scene
    project = Project.init(tmp_path / "project")
    flat = tmp_path / "flat.mrc"
    write_mrc(np.zeros((4, 30, 30), dtype=np.float32), flat, voxel_size_angstrom=5.0)
    with pytest.raises(StepFailedError, match="flat.mrc"):
        run_step(
            project, "picking.template", {"tilt_range_deg": 60.0}, {"tomograms": folder, "reference": flat}
        )
    good = tmp_path / "good.mrc"
    write_mrc(np.ones((20, 20, 20), dtype=np.float32), good, voxel_size_angstrom=5.0)
    with pytest.raises(
        StepFailedError, match="tilt_range_deg"
    ):  # no reconstruction record to read the range from
        run_step(project, "picking.template", {}, {"tomograms": folder, "reference": good})
