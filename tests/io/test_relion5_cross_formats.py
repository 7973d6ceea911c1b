"""The numeric relations of tutorial-steps.md §18 through the files: Dynamo ↔ RELION 5 ↔ Scipion."""

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import starfile

from tomoforge.geometry import scipion_matrix_from_dynamo
from tomoforge.io.dynamo import DynamoTomogram, dynamo_table_to_particles, read_dynamo_table
from tomoforge.io.relion5 import read_relion_particles, write_relion_particles
from tomoforge.io.scipion import read_scipion_coordinates, write_scipion_coordinates

DATA = Path(__file__).resolve().parents[1] / "data"
DYNAMO = DATA / "dynamo" / "t_complex_subset.tbl"
SCIPION = DATA / "scipion" / "coordinates3d_TS_03_EMPIAR-10164.sqlite"


def wrap_deg(angles: np.ndarray) -> np.ndarray:
    """Angles into (−180°, 180°]."""
    return 180.0 - np.mod(180.0 - angles, 360.0)


@pytest.fixture(scope="module")
def dynamo():
    table = read_dynamo_table(DYNAMO)
    tomos = {int(i): DynamoTomogram(f"tomo{int(i)}", (200, 960, 928), 15.0) for i in table.tomo.unique()}
    return table, dynamo_table_to_particles(table, tomos)


def test_dynamo_to_relion_and_back_keeps_rotations_and_positions(tmp_path: Path, dynamo):
    _, ps = dynamo
    again = read_relion_particles(write_relion_particles(ps, tmp_path / "particles.star")).particles
    assert again.ts_ids() == ps.ts_ids()
    assert np.allclose(again.rotation_matrices(), ps.rotation_matrices(), atol=1e-9)
    assert np.allclose(again.positions_angstrom(), ps.positions_angstrom(), atol=1e-9)


def test_relion_angles_are_dynamo_angles_shifted_by_90_degrees(tmp_path: Path, dynamo):
    """RELION (rot, tilt, psi) = (narot − 90°, tilt, tdrot + 90°) on the real Dynamo table (729 particles)."""
    table, ps = dynamo
    star = starfile.read(write_relion_particles(ps, tmp_path / "particles.star"))["particles"]
    assert np.all(
        star[["rlnTomoSubtomogramRot", "rlnTomoSubtomogramTilt", "rlnTomoSubtomogramPsi"]].to_numpy() == 0
    )
    assert np.all((table.tilt > 0.5) & (table.tilt < 179.5))  # no gimbal lock in this table
    assert np.allclose(wrap_deg(star.rlnAngleRot - (table.narot - 90.0)), 0.0, atol=1e-6)
    assert np.allclose(star.rlnAngleTilt, table.tilt, atol=1e-6)
    assert np.allclose(wrap_deg(star.rlnAnglePsi - (table.tdrot + 90.0)), 0.0, atol=1e-6)


def test_picked_outward_normal_becomes_relions_z_axis(tmp_path: Path, dynamo):
    table, ps = dynamo
    tdrot, tilt = np.radians(table.tdrot.to_numpy()), np.radians(table.tilt.to_numpy())
    normal = np.stack([np.sin(tilt) * np.sin(tdrot), np.sin(tilt) * np.cos(tdrot), np.cos(tilt)], axis=1)
    relion = read_relion_particles(write_relion_particles(ps, tmp_path / "particles.star")).particles
    assert np.allclose(relion.rotation_matrices()[:, :, 2], normal, atol=1e-9)
    star = starfile.read(tmp_path / "particles.star")["particles"]
    # RELION's tilt is the angle between the normal and tomogram Z
    assert np.allclose(star.rlnAngleTilt, np.degrees(np.arccos(normal[:, 2])), atol=1e-6)


def test_dynamo_particles_through_scipion_keep_dynamos_matrix(tmp_path: Path, dynamo):
    table, ps = dynamo
    ps = ps.revalidate()  # a copy: the fixture is shared
    ps.pixel_size_angstrom = 15.0
    out = write_scipion_coordinates(ps, tmp_path / "coordinates.sqlite", shapes_zyx=None)
    again = read_scipion_coordinates(out).particles
    assert np.allclose(again.rotation_matrices(), ps.rotation_matrices(), atol=1e-12)
    assert np.allclose(again.positions_angstrom(), ps.positions_angstrom(), atol=1e-9)
    stored = stored_euler_matrices(out)
    expected = scipion_matrix_from_dynamo(
        table[["tdrot", "tilt", "narot"]].to_numpy().copy(), np.zeros((len(table), 3))
    )
    assert np.allclose(
        stored, expected.numpy(), atol=1e-12
    )  # Scipion stores R_dyn, as its Dynamo converter does


def stored_euler_matrices(path: Path) -> np.ndarray:
    with sqlite3.connect(path) as con:
        column = con.execute(
            "SELECT column_name FROM Classes WHERE label_property = '_eulerMatrix._matrix'"
        ).fetchone()
        return np.array(
            [json.loads(r[0]) for r in con.execute(f"SELECT {column[0]} FROM Objects ORDER BY id")]
        )


def test_real_scipion_picks_become_relion_particles(tmp_path: Path):
    coords = read_scipion_coordinates(SCIPION).particles
    relion = read_relion_particles(write_relion_particles(coords, tmp_path / "particles.star"))
    assert np.allclose(relion.particles.rotation_matrices(), coords.rotation_matrices(), atol=1e-9)
    assert np.allclose(relion.particles.positions_angstrom(), coords.positions_angstrom(), atol=1e-9)
    assert [p.half_set for p in relion.particles.particles] == [p.half_set for p in coords.particles]
    assert [p.group for p in relion.particles.particles] == [p.group for p in coords.particles]
