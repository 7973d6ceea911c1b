"""``averaging.initial_model`` on the tiny preset: 3D subtomograms of the 62 true hexamers, picked with their true
normals (give or take 4°) and any in-plane angle, give de novo a C6 map of the right hand that matches the true
map at low resolution, and poses that agree with the truth up to one common turn."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from tiny_series import tiny_series_folder
from tomoforge.averaging import (
    centre_crop_or_pad,
    fourier_shell_correlation,
    soft_sphere_mask,
    symmetry_rotations,
)
from tomoforge.geometry import rotate_volume, rotation_x, rotation_z
from tomoforge.io.mrc import read_mrc
from tomoforge.io.relion5 import read_relion_particles
from tomoforge.models import ParticleSet, save_json
from tomoforge.picking import rescale_reference
from tomoforge.workflow import Project, StepFailedError, run_step

BOX = 26
PARAMS = {
    "iterations": 15,
    "symmetry": "C6",
    "sigma_tilt_deg": 10.0,
    "offset_range_px": 3.0,
    "initial_resolution_angstrom": 60.0,
    "final_resolution_angstrom": 30.0,
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Project, Path, Path, ParticleSet, Path]:
    root = tmp_path_factory.mktemp("initial_model")
    project = Project.init(root / "project")
    truth, folder, _ = tiny_series_folder(root, project)
    true = read_relion_particles(truth / "relion5" / "particles.star").particles
    rng = np.random.default_rng(1)
    picked = [
        p.model_copy(
            update={
                "rotation_matrix": tuple(
                    map(
                        tuple,
                        p.rotation()
                        @ rotation_z(float(rng.uniform(0, 360))).numpy()
                        @ rotation_x(float(rng.normal(0, 4))).numpy(),
                    )
                )
            }
        )
        for p in true.particles
    ]
    particles = root / "picked"
    particles.mkdir()
    save_json(true.model_copy(update={"particles": picked}), particles / "particles.json")
    extracted = run_step(
        project,
        "averaging.extract",
        {"box_size_px": BOX, "dimension": "3d"},
        {"particles": particles, "tilt_series": folder},
    )
    return project, folder, extracted.outputs["subtomograms"].path, true, truth / "average" / "map.mrc"


def _match(found: torch.Tensor, truth: torch.Tensor) -> tuple[float, torch.Tensor]:
    """Best correlation of ``found`` with ``truth`` over turns about z and shifts, and the truth so placed."""
    mask = soft_sphere_mask(found.shape[0], radius_px=0.4 * found.shape[0], edge_px=2.0, dtype=torch.float64)
    best: tuple[float, torch.Tensor] = (-2.0, truth)
    for angle in range(0, 60, 3):
        turned = rotate_volume(truth, rotation_z(float(angle)).double())
        cc = torch.fft.ifftn(torch.fft.fftn(found * mask) * torch.fft.fftn(turned * mask).conj()).real
        shift = np.unravel_index(int(torch.argmax(cc)), found.shape)
        placed = torch.roll(turned, shifts=tuple(int(s) for s in shift), dims=(0, 1, 2))
        c = float(torch.corrcoef(torch.stack([(found * mask).flatten(), (placed * mask).flatten()]))[0, 1])
        if c > best[0]:
            best = (c, placed)
    return best


def test_a_de_novo_map_of_the_right_hand_and_consistent_poses(
    tiny: tuple[Project, Path, Path, ParticleSet, Path],
) -> None:
    project, _, subtomograms, true, true_map = tiny
    result = run_step(project, "averaging.initial_model", PARAMS, {"subtomograms": subtomograms})
    out = result.outputs["map"].path
    mrc = read_mrc(out / "map.mrc")
    pixel = float(mrc.voxel_size_angstrom[0])
    found = torch.tensor(np.array(mrc.data), dtype=torch.float64)
    reference = read_mrc(true_map)
    truth = centre_crop_or_pad(
        rescale_reference(
            torch.tensor(np.array(reference.data), dtype=torch.float64),
            float(reference.voxel_size_angstrom[0]),
            pixel,
        ),
        BOX,
    )
    right, placed = _match(found, truth)
    mirror, _ = _match(found, truth.flip(0))
    assert right > mirror + 0.1, (right, mirror)
    mask = soft_sphere_mask(BOX, radius_px=0.4 * BOX, edge_px=2.0, dtype=torch.float64)
    fsc = fourier_shell_correlation(found, placed, mask=mask)
    shell = round(BOX * pixel / 50.0)  # 50 Å
    assert float(fsc[shell]) > 0.5, fsc.tolist()
    # The poses: the truth turned by one rotation common to all particles (modulo C6).
    posed = ParticleSet.model_validate_json((result.outputs["particles"].path / "particles.json").read_text())
    relative = [q.rotation().T @ p.rotation() for p, q in zip(posed.particles, true.particles, strict=True)]
    ops = symmetry_rotations("C6").numpy()
    spreads = []
    for anchor in relative:
        angles = [
            min(math.degrees(math.acos(np.clip((np.trace(anchor.T @ op @ r) - 1) / 2, -1, 1))) for op in ops)
            for r in relative
        ]
        spreads.append(float(np.median(angles)))
    assert min(spreads) < 10.0, min(spreads)
    record = json.loads((out / "initial_model.json").read_text())
    assert record["particles"] == 62 and len(record["iterations"]) == 15
    assert record["iterations"][-1]["cutoff_angstrom"] == pytest.approx(30.0, rel=0.05)
    for name in ("map_slices.png", "map_isosurface.png", "angular_distribution.svg"):
        assert (out / name).stat().st_size > 0
    assert (result.outputs["particles"].path / "particles.star").is_file()


def test_the_cli_and_2d_subtomograms_are_refused(
    tiny: tuple[Project, Path, Path, ParticleSet, Path],
    tmp_path: Path,
    cli: Callable[..., tuple[int, str, str]],
) -> None:
    project, series, subtomograms, true, _ = tiny
    particles = tmp_path / "particles"
    particles.mkdir()
    save_json(true, particles / "particles.json")
    flat = run_step(
        project, "averaging.extract", {"box_size_px": BOX}, {"particles": particles, "tilt_series": series}
    )
    with pytest.raises(StepFailedError, match="3D subtomograms"):
        run_step(project, "averaging.initial_model", {}, {"subtomograms": flat.outputs["subtomograms"].path})
    fresh = Project.init(tmp_path / "project")
    fresh.close()
    code, out, err = cli(
        "run", "averaging.initial_model", "-p", str(fresh.root), "--input", f"subtomograms={subtomograms}",
        "--iterations", "2", "--symmetry", "C6", "--sigma-tilt-deg", "10",
    )  # fmt: skip
    assert code == 0 and "succeeded" in out + err, out + err
    (made,) = (fresh.root / "runs").glob("*/map/initial_model.json")
    assert len(json.loads(made.read_text())["iterations"]) == 2
