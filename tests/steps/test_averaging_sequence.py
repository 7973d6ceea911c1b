"""The tutorial's averaging sequence through the CLI on the tiny preset (``../shared/docs/hiv-tutorial.md``, with
binning 2 and 1 standing in for the tutorial's 6 and 2):

extract (3D, bin 2) → initial model → extract (2D, bin 2) → refine → remove duplicates → extract (2D, bin 1) →
reconstruct → refine at bin 1.

The particles are the 62 true hexamers picked with their true normals (give or take 4°) and any in-plane angle,
plus 10 duplicates 12 Å from their originals. The de novo model must put every particle in one common frame, the
duplicates must go without losing a hexamer, and the final map must match the true map, not its mirror image.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from map_scoring import hand_scores
from tiny_series import tiny_series_folder
from tomoforge.averaging import symmetry_rotations
from tomoforge.geometry import rotation_x, rotation_z
from tomoforge.io.mrc import read_mrc
from tomoforge.io.relion5 import read_relion_particles
from tomoforge.models import ParticleSet, Tomogram, save_json
from tomoforge.steps._tomograms import write_tomogram_model
from tomoforge.workflow import Project

Invoke = Callable[..., tuple[int, str, str]]


def _picks(folder: Path, true: ParticleSet) -> Path:
    rng = np.random.default_rng(3)
    picked = []
    for p in true.particles:
        turn = rotation_z(float(rng.uniform(0, 360))).numpy() @ rotation_x(float(rng.normal(0, 4))).numpy()
        picked.append(p.model_copy(update={"rotation_matrix": tuple(map(tuple, p.rotation() @ turn))}))
    for p in picked[:10]:
        step = rng.normal(size=3)
        moved = np.add(p.position_angstrom, 12.0 * step / np.linalg.norm(step))
        picked.append(p.model_copy(update={"position_angstrom": tuple(float(v) for v in moved)}))
    folder.mkdir()
    save_json(true.model_copy(update={"particles": picked}), folder / "particles.json")
    return folder


def _tomograms(folder: Path, truth: Path) -> Path:
    folder.mkdir()
    os.link(truth / "tomograms" / "TS_01.mrc", folder / "TS_01.mrc")
    mrc = read_mrc(folder / "TS_01.mrc")
    write_tomogram_model(
        folder,
        Tomogram(
            ts_id="TS_01", volume_file=folder / "TS_01.mrc", voxel_size_angstrom=float(mrc.voxel_size_angstrom[0]),
            shape_zyx=tuple(mrc.data.shape), reconstruction_method="wbp", binning=1.0,
        ),
    )  # fmt: skip
    return folder


def _last_run(project: Path) -> int:
    return max(int(p.name.split("_")[0]) for p in (project / "runs").iterdir())


def _frame_spread(found: ParticleSet, true: ParticleSet) -> float:
    """Median angle between each particle's pose and the truth turned by the common rotation (modulo C6)."""
    truth = {tuple(np.round(p.position_angstrom, 3)): p for p in true.particles}
    relative = []
    for p in found.particles:
        nearest = min(
            truth.values(),
            key=lambda q: float(np.linalg.norm(np.subtract(q.position_angstrom, p.position_angstrom))),
        )
        relative.append(nearest.rotation().T @ p.rotation())
    ops = symmetry_rotations("C6").numpy()
    best = math.inf
    for anchor in relative:
        angles = [
            min(math.degrees(math.acos(np.clip((np.trace(anchor.T @ op @ r) - 1) / 2, -1, 1))) for op in ops)
            for r in relative
        ]
        best = min(best, float(np.median(angles)))
    return best


def test_the_tutorial_sequence_through_the_cli(tmp_path: Path, cli: Invoke) -> None:
    project = Project.init(tmp_path / "project")
    truth, folder, _ = tiny_series_folder(tmp_path, project)
    project.close()
    true = read_relion_particles(truth / "relion5" / "particles.star").particles
    picks = _picks(tmp_path / "picks", true)
    p = str(project.root)

    def run(step: str, *args: str) -> int:
        code, out, err = cli("run", step, "-p", p, *args)
        assert code == 0 and "succeeded" in out + err, out + err
        return _last_run(project.root)

    bin2 = ("--binning", "2", "--box-size-px", "14")
    cubes = run("averaging.extract", *bin2, "--dimension", "3d", "--input", f"particles={picks}",
                "--input", f"tilt_series={folder}")  # fmt: skip
    model = run("averaging.initial_model", "--input", f"subtomograms={cubes}:subtomograms", "--symmetry", "C6",
                "--sigma-tilt-deg", "10", "--iterations", "15", "--offset-range-px", "1",
                "--initial-resolution-angstrom", "80", "--final-resolution-angstrom", "45")  # fmt: skip
    stacks = run("averaging.extract", *bin2, "--input", f"particles={model}:particles",
                 "--input", f"tilt_series={folder}")  # fmt: skip
    refined = run("averaging.refine", *bin2, "--symmetry", "C6", "--sigma-tilt-deg", "10", "--iterations", "3",
                  "--initial-low-pass-angstrom", "60", "--max-shift-angstrom", "10",
                  "--input", f"particles={stacks}:particles", "--input", f"tilt_series={folder}",
                  "--input", f"reference={model}:map")  # fmt: skip
    # The particles' tomogram (the simulator's true one stands in for a reconstruction).
    unique = run("averaging.remove_duplicates", "--min-distance-angstrom", "30",
                 "--input", f"particles={refined}:particles",
                 "--input", f"tomograms={_tomograms(tmp_path / 'tomograms', truth)}")  # fmt: skip
    bin1 = ("--binning", "1", "--box-size-px", "26")
    fine = run("averaging.extract", *bin1, "--input", f"particles={unique}:particles",
               "--input", f"tilt_series={folder}")  # fmt: skip
    rebuilt = run("averaging.reconstruct", *bin1, "--symmetry", "C6", "--input", f"particles={fine}:particles",
                  "--input", f"tilt_series={folder}")  # fmt: skip
    final = run("averaging.refine", *bin1, "--symmetry", "C6", "--sigma-tilt-deg", "10", "--iterations", "2",
                "--initial-step-deg", "2", "--max-shift-angstrom", "10",
                "--input", f"particles={fine}:particles", "--input", f"tilt_series={folder}")  # fmt: skip

    runs = {int(r.name.split("_")[0]): r for r in (project.root / "runs").iterdir()}

    def particles(run_id: int, name: str = "particles") -> ParticleSet:
        return ParticleSet.model_validate_json((runs[run_id] / name / "particles.json").read_text())

    assert len(particles(model).particles) == 72
    assert _frame_spread(particles(model), true) < 12.0
    # The duplicates go (at 20 Å pixels a pair refined apart by more than 30 Å may stay), no hexamer is lost.
    kept = particles(unique).particles
    assert 62 <= len(kept) <= 64
    for q in true.particles:
        assert (
            min(float(np.linalg.norm(np.subtract(q.position_angstrom, p.position_angstrom))) for p in kept)
            < 30
        )
    assert _frame_spread(particles(final), true) < 8.0
    right, mirror = hand_scores(runs[final] / "map" / "map.mrc", truth / "average" / "map.mrc")
    assert right > 0.6 and right > mirror + 0.3, (right, mirror)
    record = json.loads((runs[rebuilt] / "map" / "reconstruction.json").read_text())
    assert record["particles"] == len(kept)
