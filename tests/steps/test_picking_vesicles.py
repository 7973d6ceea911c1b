"""``picking.vesicles`` through the engine and the CLI: vesicles found in a phantom tomogram, picks on them."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from tomoforge.io.mrc import write_mrc
from tomoforge.models import Tomogram
from tomoforge.picking import ellipsoid_closest_point
from tomoforge.steps._particles import read_particles_artifact
from tomoforge.steps._tomograms import write_tomogram_model
from tomoforge.workflow import Project, StepFailedError, run_step
from tomoforge.workflow.errors import ParamsError
from vesicle_phantom import VESICLES, VOXEL, vesicle_phantom

PARAMS = {"min_radius_angstrom": 200.0, "max_radius_angstrom": 400.0, "spacing_angstrom": 80.0}


@pytest.fixture(scope="module")
def tomograms(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The phantom as a ``tomograms`` artifact (MRC + Tomogram model)."""
    folder = tmp_path_factory.mktemp("vesicle_tomograms") / "tomograms"
    folder.mkdir()
    volume = vesicle_phantom(0, VESICLES).numpy()
    write_mrc(volume, folder / "TS_01.mrc", voxel_size_angstrom=VOXEL)
    tomogram = Tomogram(
        ts_id="TS_01",
        volume_file=folder / "TS_01.mrc",
        voxel_size_angstrom=VOXEL,
        shape_zyx=volume.shape,  # type: ignore[arg-type]
        reconstruction_method="wbp",
        binning=1.0,
    )
    write_tomogram_model(folder, tomogram)
    return folder


def _true_normals(positions: np.ndarray, centre: tuple[float, ...], radii: tuple[float, ...]) -> np.ndarray:
    local = torch.from_numpy(positions - np.array(centre))
    closest, distance = ellipsoid_closest_point(local, torch.tensor(radii, dtype=torch.float64))
    g = closest.numpy() / np.array(radii) ** 2
    return g / np.linalg.norm(g, axis=1, keepdims=True), distance.numpy()


def test_picks_lie_on_each_vesicle_with_its_normal(tomograms: Path, tmp_path: Path) -> None:
    project = Project.init(tmp_path / "project")
    result = run_step(project, "picking.vesicles", PARAMS, {"tomograms": tomograms})
    out = result.outputs["particles"].path
    models = json.loads((out / "models.json").read_text())["tomograms"]["TS_01"]
    assert [m["group"] for m in models] == ["TS_01/1", "TS_01/2"]
    picks = read_particles_artifact(out)
    for model in models:
        mine = [p for p in picks.particles if p.group == model["group"]]
        assert len(mine) == model["picks"] > 20
        positions = np.array([p.position_angstrom for p in mine])
        centre, radii = min(VESICLES, key=lambda v: np.linalg.norm(np.array(v[0]) - positions.mean(0)))
        normals, distance = _true_normals(positions, centre, radii)
        # On the visible band the picks sit on the true layer; the unseen caps are extrapolated by the fit.
        elevation = np.degrees(np.arcsin(np.abs(normals[:, 2])))
        assert float(np.median(np.abs(distance[elevation <= 50]))) < 8.0
        axes = np.array([p.rotation_matrix for p in mine])[:, :, 2]
        angle = np.degrees(np.arccos(np.clip((axes * normals).sum(1), -1, 1)))
        assert float(np.median(angle)) < 3.0, float(np.median(angle))
    assert (out / "TS_01_picks.png").read_bytes()[:4] == b"\x89PNG"


def test_drop_after_review_and_the_cli(
    tomograms: Path, tmp_path: Path, cli: Callable[..., tuple[int, str, str]]
) -> None:
    project = Project.init(tmp_path / "project")
    project.close()  # the CLI opens the project itself
    code, out, err = cli(
        "run", "picking.vesicles", "-p", str(project.root), "--input", f"tomograms={tomograms}",
        "--min-radius-angstrom", "200", "--max-radius-angstrom", "400", "--drop", "TS_01/2",
    )  # fmt: skip
    assert code == 0 and "succeeded" in out + err, out + err
    (made,) = (project.root / "runs").glob("*/particles/models.json")
    models = json.loads(made.read_text())["tomograms"]["TS_01"]
    assert [(m["group"], m["dropped"], m["picks"] > 0) for m in models] == [
        ("TS_01/1", False, True),
        ("TS_01/2", True, False),
    ]
    assert {p.group for p in read_particles_artifact(made.parent).particles} == {"TS_01/1"}


def test_bad_parameters_are_named(tomograms: Path, tmp_path: Path) -> None:
    project = Project.init(tmp_path / "project")
    with pytest.raises(StepFailedError, match="TS_99"):
        run_step(project, "picking.vesicles", {**PARAMS, "drop": ["TS_99/1"]}, {"tomograms": tomograms})
    with pytest.raises(ParamsError, match="min_radius_angstrom"):
        run_step(
            project,
            "picking.vesicles",
            {"min_radius_angstrom": 500.0, "max_radius_angstrom": 400.0},
            {"tomograms": tomograms},
        )
