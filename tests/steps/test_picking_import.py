"""``picking.import``: the tutorial's real Scipion coordinates land on the voxels Scipion puts them on."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import mrcfile
import numpy as np
import pytest

from tomoforge.io.convert import read_particles, tomogram_geometry
from tomoforge.io.scipion.coordinates import scipion_coordinate
from tomoforge.models import Tomogram
from tomoforge.steps._particles import read_particles_artifact
from tomoforge.steps._tomograms import write_tomogram_model
from tomoforge.workflow import Project, StepFailedError, run_step

REAL = Path(__file__).resolve().parents[1] / "data" / "scipion" / "coordinates3d_TS_03_EMPIAR-10164.sqlite"
SHAPE = (
    140,
    928,
    928,
)  # 928 × 928 as the tutorial's bin-4 tomograms; an even depth (odd ones: test_scipion.py)


def _tomograms(folder: Path, names: list[str], voxel: float) -> Path:
    """A ``tomograms`` artifact of empty (sparse) 928 × 928 × 140 volumes."""
    folder.mkdir(parents=True)
    for name in names:
        path = folder / f"{name}.mrc"
        mrcfile.new_mmap(path, SHAPE, mrc_mode=2, overwrite=True).close()
        tomogram = Tomogram(
            ts_id=name,
            volume_file=path,
            voxel_size_angstrom=voxel,
            shape_zyx=SHAPE,
            reconstruction_method="wbp",
            binning=4.0,
        )
        write_tomogram_model(folder, tomogram)
    return folder


def _stored() -> tuple[np.ndarray, list[str], list[int]]:
    """``_x, _y, _z``, ``_tomoId`` and ``_groupId`` straight from the file (no tomoforge reader involved)."""
    with sqlite3.connect(REAL) as con:
        rows = con.execute("select c01, c02, c03, c08, c07 from Objects order by id").fetchall()
    return np.array([r[:3] for r in rows], dtype=np.float64), [r[3] for r in rows], [r[4] for r in rows]


@pytest.mark.parametrize("voxel", [5.4, 10.8])
def test_real_scipion_picks_land_on_scipions_voxels(tmp_path: Path, voxel: float) -> None:
    """Scipion's import keeps voxel positions at the tomograms' sampling (5.4 Å in the file; bin 2 here too)."""
    folder = _tomograms(tmp_path / "tomograms", ["TS_03", "TS_54"], voxel)
    project = Project.init(tmp_path / "project")
    result = run_step(project, "picking.import", {}, {"tomograms": folder, "coordinates": REAL})
    out = result.outputs["particles"].path
    particles = read_particles_artifact(out)
    assert particles.count_per_tomogram() == {"TS_03": 99, "TS_54": 111}
    stored, tomo_ids, groups = _stored()
    corner = scipion_coordinate(stored, "BOTTOM_LEFT_CORNER", SHAPE, 5.4)  # Scipion's voxel of each pick
    tomogram = Tomogram(
        ts_id="TS_03", volume_file=folder / "TS_03.mrc", voxel_size_angstrom=voxel, shape_zyx=SHAPE,
        reconstruction_method="wbp", binning=4.0,
    )  # fmt: skip
    ours = tomogram.position_to_index_zyx(particles.positions_angstrom())[:, ::-1]
    np.testing.assert_allclose(ours, corner, atol=1e-6)
    assert [p.ts_id for p in particles.particles] == tomo_ids
    assert [p.group for p in particles.particles] == [str(g) for g in groups]
    record = json.loads((out / "import.json").read_text())
    assert record["dropped"] == {} and (out / "TS_54_picks.png").is_file()
    # The exports read back as the same particles; Scipion's stores the same voxel positions as the original file.
    geometry = tomogram_geometry(pixel_size_angstrom=voxel, tomogram_size_xyz_px=SHAPE[::-1])
    for name in ("particles.tbl", "coordinates.sqlite", "particles.star"):
        again = read_particles(out / name, geometry)
        np.testing.assert_allclose(again.positions_angstrom(), particles.positions_angstrom(), atol=1e-3)
        np.testing.assert_allclose(again.rotation_matrices(), particles.rotation_matrices(), atol=1e-6)
    with sqlite3.connect(out / "coordinates.sqlite") as con:
        exported = np.array(
            con.execute("select c01, c02, c03 from Objects order by id").fetchall(), dtype=np.float64
        )
    np.testing.assert_allclose(exported, stored, atol=1e-6)


def test_unmatched_tomograms_are_dropped_and_none_is_an_error(tmp_path: Path) -> None:
    project = Project.init(tmp_path / "project")
    one = _tomograms(
        tmp_path / "one", ["TS_03_bin4"], 5.4
    )  # name containing TS_03: Scipion's rule matches it
    result = run_step(project, "picking.import", {}, {"tomograms": one, "coordinates": REAL})
    out = result.outputs["particles"].path
    assert read_particles_artifact(out).count_per_tomogram() == {"TS_03_bin4": 99}
    assert json.loads((out / "import.json").read_text())["dropped"] == {"TS_54": 111}
    other = _tomograms(tmp_path / "other", ["TS_07"], 5.4)
    with pytest.raises(StepFailedError, match="none of its particles"):
        run_step(project, "picking.import", {}, {"tomograms": other, "coordinates": REAL})


def test_sampling_file_keeps_angstrom_positions(tmp_path: Path) -> None:
    project = Project.init(tmp_path / "project")
    at_5 = _tomograms(tmp_path / "a", ["TS_03", "TS_54"], 5.4)
    at_10 = _tomograms(tmp_path / "b", ["TS_03", "TS_54"], 10.8)
    a = run_step(project, "picking.import", {}, {"tomograms": at_5, "coordinates": REAL})
    b = run_step(project, "picking.import", {"sampling": "file"}, {"tomograms": at_10, "coordinates": REAL})
    pa = read_particles_artifact(a.outputs["particles"].path)
    pb = read_particles_artifact(b.outputs["particles"].path)
    np.testing.assert_allclose(pa.positions_angstrom(), pb.positions_angstrom(), atol=1e-9)
    np.testing.assert_allclose(pa.rotation_matrices(), pb.rotation_matrices(), atol=1e-12)


def test_csv_coordinates_in_voxels(tmp_path: Path) -> None:
    """A CSV of corner-origin voxels comes in at those voxels, with its groups (identity orientations)."""
    folder = _tomograms(tmp_path / "tomograms", ["TS_03"], 5.4)
    voxels = np.array([[10.0, 20.0, 30.0], [464.0, 464.0, 70.0], [900.5, 3.25, 139.0]])
    rows = "\n".join(f"TS_03,{g},{x},{y},{z}" for g, (x, y, z) in zip("aab", voxels, strict=True))
    csv = tmp_path / "points.csv"
    csv.write_text("ts_id,group,x,y,z\n" + rows + "\n", encoding="utf-8")
    result = run_step(
        Project.init(tmp_path / "project"), "picking.import", {}, {"tomograms": folder, "coordinates": csv}
    )
    particles = read_particles_artifact(result.outputs["particles"].path)
    # Voxel (464, 464, 70) is the centre of a 928 × 928 × 140 tomogram: position 0.
    expected = (voxels - np.array([464.0, 464.0, 70.0])) * 5.4
    order = np.argsort([p.position_angstrom[0] for p in particles.particles])
    np.testing.assert_allclose(particles.positions_angstrom()[order], expected, atol=1e-9)
    assert sorted(p.group or "" for p in particles.particles) == ["a", "a", "b"]
    np.testing.assert_allclose(particles.rotation_matrices(), np.broadcast_to(np.eye(3), (3, 3, 3)))


def test_relion5_centred_angstroms_are_kept_whatever_the_tomograms_voxel(tmp_path: Path) -> None:
    """RELION 5's rlnCenteredCoordinate…Angst are physical positions: a star written at a 1.35 Å pixel lands at the
    same Å on 8.1 Å tomograms (not 6× farther out, as Scipion's voxel rule would put it)."""
    import starfile

    from tomoforge.io.convert import write_particles
    from tomoforge.models import Particle, ParticleSet

    positions = [(468.6, -362.6, 129.6), (-206.0, 626.7, -126.1)]
    source = ParticleSet(
        particles=[Particle(ts_id="TS_03", position_angstrom=xyz) for xyz in positions],
        pixel_size_angstrom=1.35,
    )
    star = write_particles(source, tmp_path / "particles.star")
    assert "rlnCenteredCoordinateXAngst" in starfile.read(star)["particles"].columns
    folder = _tomograms(tmp_path / "tomograms", ["TS_03"], 8.1)
    result = run_step(
        Project.init(tmp_path / "p"), "picking.import", {}, {"tomograms": folder, "coordinates": star}
    )
    particles = read_particles_artifact(result.outputs["particles"].path)
    np.testing.assert_allclose(particles.positions_angstrom(), np.array(positions), atol=1e-6)
