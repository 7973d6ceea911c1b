"""Scipion set sqlite files: the real TS_03 SetOfCoordinates3D, a SetOfTiltSeries in §17 layout, broken files."""

import json
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from tomoforge.io import FormatError
from tomoforge.io.scipion import (
    read_scipion_coordinates,
    read_scipion_tilt_series,
    scipion_coordinate,
    write_scipion_coordinates,
)
from tomoforge.models import ParticleSet

DATA = Path(__file__).resolve().parents[1] / "data" / "scipion"
COORDS = DATA / "coordinates3d_TS_03_EMPIAR-10164.sqlite"


def assert_one_sentence(err: pytest.ExceptionInfo, path: Path) -> str:
    message = str(err.value)
    assert message.startswith(str(path) + ": ") and "\n" not in message
    return message


def fit_sphere(points: np.ndarray) -> tuple[np.ndarray, float]:
    """Least-squares sphere through points: |p|² = 2 c·p + (r² − |c|²)."""
    a = np.c_[2 * points, np.ones(len(points))]
    solution, *_ = np.linalg.lstsq(a, (points**2).sum(1), rcond=None)
    centre = solution[:3]
    return centre, float(np.sqrt(solution[3] + centre @ centre))


def radial_cosines(positions: np.ndarray, axes: np.ndarray, groups: np.ndarray) -> np.ndarray:
    cosines = np.empty(len(positions))
    for g in np.unique(groups):
        mask = groups == g
        centre, radius = fit_sphere(positions[mask])
        assert 300 < radius < 600  # virus-sized spheres, in Å
        radial = positions[mask] - centre
        cosines[mask] = np.einsum(
            "ni,ni->n", axes[mask], radial / np.linalg.norm(radial, axis=1, keepdims=True)
        )
    return cosines


def test_real_coordinates_read_as_210_oriented_particles():
    coords = read_scipion_coordinates(COORDS)
    ps = coords.particles
    assert ps.n_particles == 210
    assert (ps.pixel_size_angstrom, ps.box_size_px) == (5.4, 20)
    r = ps.rotation_matrices()
    assert np.allclose(r @ np.swapaxes(r, -1, -2), np.eye(3), atol=1e-9)
    assert np.allclose(np.linalg.det(r), 1.0, atol=1e-9)
    # despite the file name, the coordinates lie on two tomograms, one virus particle each
    assert ps.count_per_tomogram() == {"TS_03": 99, "TS_54": 111}
    assert sorted({(p.ts_id, p.group) for p in ps.particles}) == [("TS_03", "24"), ("TS_54", "315")]
    assert {p.half_set for p in ps.particles} == {1, 2}
    assert coords.extra["_classNumber"][0] == "Integer"  # -1 for 8 items: kept as an attribute, not a class
    assert set(coords.volume_ids) == {2, 5} and coords.translations_px.shape == (210, 3)
    first = ps.particles[0]
    assert first.position_angstrom == pytest.approx((-436.75 * 5.4, 291.0 * 5.4, 18.25 * 5.4))
    assert coords.properties["_relion5Picking"] == "False"


def test_particle_axes_point_out_of_the_picked_viruses():
    """R·ẑ (R = transpose of Scipion's rotation part) is the outward radius of the sphere fitted to each virus."""
    ps = read_scipion_coordinates(COORDS).particles
    groups = np.array(ps.ts_ids())  # one virus per tomogram here
    r = ps.rotation_matrices()
    cosines = radial_cosines(ps.positions_angstrom(), r[:, :, 2], groups)
    assert (
        np.median(cosines) > 0.93
    )  # measured 0.96 (0.946 on TS_03, 0.973 on TS_54; fitted radii 460, 469 Å)
    assert np.mean(cosines > 0.8) > 0.85
    wrong = radial_cosines(ps.positions_angstrom(), r[:, 2, :], groups)  # Scipion's matrix used untransposed
    assert np.median(wrong) < 0.7


def test_round_trip_reproduces_the_set(tmp_path: Path):
    coords = read_scipion_coordinates(COORDS)
    out = write_scipion_coordinates(coords, tmp_path / "coordinates.sqlite")
    again = read_scipion_coordinates(out)
    assert np.allclose(again.particles.positions_angstrom(), coords.particles.positions_angstrom(), atol=1e-9)
    assert np.allclose(again.particles.rotation_matrices(), coords.particles.rotation_matrices(), atol=1e-15)
    assert [p.model_dump(exclude={"position_angstrom"}) for p in again.particles.particles] == [
        p.model_dump(exclude={"position_angstrom"}) for p in coords.particles.particles
    ]
    assert np.array_equal(again.translations_px, coords.translations_px)
    assert (again.volume_ids, again.object_ids, again.enabled) == (
        coords.volume_ids,
        coords.object_ids,
        coords.enabled,
    )
    assert again.extra == coords.extra and again.properties == coords.properties
    tables = {}
    for path in (COORDS, out):
        with sqlite3.connect(path) as con:
            tables[path] = (
                con.execute(
                    "SELECT label_property, column_name, class_name FROM Classes ORDER BY id"
                ).fetchall(),
                [(r[1], r[2]) for r in con.execute("PRAGMA table_info(Objects)")],
                con.execute("PRAGMA user_version").fetchone(),
            )
    assert tables[out] == tables[COORDS]


def test_bare_particle_set_writes_a_readable_set(tmp_path: Path):
    ps = read_scipion_coordinates(COORDS).particles
    shapes = {"TS_03": (139, 928, 928), "TS_54": (139, 928, 928)}
    out = write_scipion_coordinates(ps, tmp_path / "bare.sqlite", shapes_zyx=shapes)
    again = read_scipion_coordinates(out, shapes_zyx=shapes)
    assert np.allclose(again.particles.positions_angstrom(), ps.positions_angstrom(), atol=1e-9)
    assert again.volume_ids == [1 if name == "TS_03" else 2 for name in ps.ts_ids()]
    assert np.all(again.translations_px == 0)
    # odd depth: Scipion's origin is −139/2 voxels, ours is voxel 69, so stored z is 0.5 voxel lower
    plain = read_scipion_coordinates(out)
    assert np.allclose(plain.particles.positions_angstrom()[:, 2] + 0.5 * 5.4, ps.positions_angstrom()[:, 2])
    with pytest.raises(ValueError, match="pixel_size"):
        write_scipion_coordinates(ParticleSet(particles=ps.particles[:2]), tmp_path / "x.sqlite")


def test_scipion_coordinate_conventions():
    stored = np.array([-436.75, 291.0, 18.25])
    shape = (140, 928, 928)
    corner = scipion_coordinate(stored, "BOTTOM_LEFT_CORNER", shape, 5.4)
    assert np.allclose(corner, stored + [464, 464, 70])
    assert np.allclose(scipion_coordinate(stored, "CENTER_GRAVITY", shape, 5.4), stored)
    assert np.allclose(scipion_coordinate(stored, "SCIPION", shape, 5.4), stored)
    moved = scipion_coordinate(stored, "BOTTOM_LEFT_CORNER", shape, 5.4, origin_angstrom=(0.0, 0.0, 0.0))
    assert np.allclose(moved, stored)


def make_tilt_series_set(path: Path) -> None:
    """A SetOfTiltSeries in the layout of tutorial-steps.md §17, with columns deliberately not in §17's order."""
    con = sqlite3.connect(path)
    con.execute("PRAGMA user_version = 1")
    con.execute("CREATE TABLE Properties (key TEXT UNIQUE, value TEXT DEFAULT NULL)")
    con.executemany("INSERT INTO Properties VALUES (?, ?)", [
        ("self", "SetOfTiltSeries"), ("_size", "1"), ("_samplingRate", "1.35"), ("_mapperPath", "ts.sqlite, ")
    ])  # fmt: skip

    def flat(prefix: str, item: str, columns: list[tuple[str, str, str]], rows: list[tuple]) -> None:
        con.execute(f"CREATE TABLE {prefix}Classes (id INTEGER PRIMARY KEY AUTOINCREMENT, label_property TEXT UNIQUE,"
                    " column_name TEXT UNIQUE, class_name TEXT DEFAULT NULL)")  # fmt: skip
        con.execute(f"INSERT INTO {prefix}Classes (label_property, column_name, class_name) VALUES ('self','c00',?)",
                    (item,))  # fmt: skip
        con.executemany(f"INSERT INTO {prefix}Classes (label_property, column_name, class_name) VALUES (?, ?, ?)",
                        columns)  # fmt: skip
        types = {"Float": "REAL", "Integer": "INTEGER"}
        defs = "".join(f", {c} {types.get(cls, 'TEXT')}" for _, c, cls in columns)
        con.execute(f"CREATE TABLE {prefix}Objects (id INTEGER PRIMARY KEY, enabled INTEGER DEFAULT 1, label TEXT,"
                    f" comment TEXT, creation DATE{defs})")  # fmt: skip
        names = ", ".join(c for _, c, _ in columns)
        marks = ", ".join("?" * (len(columns) + 2))
        con.executemany(f"INSERT INTO {prefix}Objects (id, enabled, {names}) VALUES ({marks})", rows)

    flat("", "TiltSeries", [
        ("_tsId", "c05", "String"), ("_samplingRate", "c01", "Float"), ("_acquisition", "c02", "TomoAcquisition"),
        ("_acquisition._voltage", "c03", "Float"), ("_acquisition._sphericalAberration", "c04", "Float"),
        ("_acquisition._amplitudeContrast", "c06", "Float"), ("_acquisition._dosePerFrame", "c07", "Float"),
        ("_acquisition._tiltAxisAngle", "c08", "Float"), ("_firstDim", "c09", "ImageDim"),
    ], [(1, 1, "TS_07", 1.35, None, 300.0, 2.7, 0.07, 3.0, 85.3, "3710,3838,3")])  # fmt: skip
    xf = [[0.0858, 0.9963, 10.0], [-0.9963, 0.0858, -4.0], [0.0, 0.0, 1.0]]
    rows = [  # stack order _index 1..3, acquisition order 0°, +3°, −3°; the −3° view disabled
        (11, 0, 1, "TS_07.mrcs", -3.0, 3, 6.0, 3.0, json.dumps(xf)),
        (12, 1, 2, "TS_07.mrcs", 0.0, 1, 0.0, 3.0, json.dumps(xf)),
        (13, 1, 3, "TS_07.mrcs", 3.0, 2, 3.0, 3.0, json.dumps(xf)),
    ]
    flat("TS_07_", "TiltImage", [
        ("_index", "c01", "Integer"), ("_filename", "c02", "String"), ("_tiltAngle", "c19", "Float"),
        ("_acqOrder", "c21", "Integer"), ("_acquisition._doseInitial", "c09", "Float"),
        ("_acquisition._dosePerFrame", "c10", "Float"), ("_transform._matrix", "c18", "Matrix"),
    ], rows)  # fmt: skip
    con.commit()
    con.close()


def test_tilt_series_set_reads_through_the_column_map(tmp_path: Path):
    path = tmp_path / "tiltseries.sqlite"
    make_tilt_series_set(path)
    [ts] = read_scipion_tilt_series(path)
    assert ts.ts_id == "TS_07" and ts.n_tilts == 3 and ts.excluded_indices() == [0]
    assert ts.tilt_angles_deg == [-3.0, 0.0, 3.0]
    assert [t.acquisition_order for t in ts.tilts] == [2, 0, 1]
    assert [t.prior_dose_e_per_angstrom2 for t in ts.tilts] == [6.0, 0.0, 3.0]
    assert ts.acquisition.voltage_kv == 300.0 and ts.acquisition.tilt_axis_angle_deg == 85.3
    assert ts.image_shape_yx == (3838, 3710) and ts.stack_file == Path("TS_07.mrcs")
    t = ts.tilts[1].transform
    assert t is not None and t.tilt_axis_angle_deg == pytest.approx(np.degrees(np.arctan2(0.9963, 0.0858)))
    # IMOD centre (N−1)/2 → tomoforge N//2: d' = d + A·(0.5, 0.5) − (0.5, 0.5) for even sizes
    a = np.array([[0.0858, 0.9963], [-0.9963, 0.0858]])
    expected = np.array([10.0, -4.0]) + a @ [0.5, 0.5] - 0.5
    assert np.allclose([t.dx_angstrom / 1.35, t.dy_angstrom / 1.35], expected)


def test_set_of_another_kind_is_named_in_the_error(tmp_path: Path):
    path = tmp_path / "tiltseries.sqlite"
    make_tilt_series_set(path)
    with pytest.raises(FormatError) as err:
        read_scipion_coordinates(path)
    assert assert_one_sentence(err, path).endswith(": a SetOfTiltSeries, not a SetOfCoordinates3D")
    with pytest.raises(FormatError) as err:
        read_scipion_tilt_series(COORDS)
    assert assert_one_sentence(err, COORDS).endswith(": a SetOfCoordinates3D, not a SetOfTiltSeries")


@pytest.mark.parametrize("content", [b"", b"SQLite format 2\x00 not really", b"_x _y _z\n1 2 3\n" * 20])
def test_non_sqlite_files_are_format_errors(tmp_path: Path, content: bytes):
    path = tmp_path / "coordinates.sqlite"
    path.write_bytes(content)
    with pytest.raises(FormatError) as err:
        read_scipion_coordinates(path)
    assert_one_sentence(err, path)


def test_sqlite_that_is_not_a_scipion_set(tmp_path: Path):
    path = tmp_path / "other.sqlite"
    with sqlite3.connect(path) as con:
        con.execute("CREATE TABLE t (a INTEGER)")
    with pytest.raises(FormatError) as err:
        read_scipion_coordinates(path)
    assert "not a Scipion set" in assert_one_sentence(err, path)
    with pytest.raises(FormatError) as err:
        read_scipion_coordinates(tmp_path / "absent.sqlite")
    assert "no such file" in assert_one_sentence(err, tmp_path / "absent.sqlite")


def test_broken_matrix_and_missing_columns_are_format_errors(tmp_path: Path):
    path = tmp_path / "broken.sqlite"
    shutil.copy(COORDS, path)
    with sqlite3.connect(path) as con:
        con.execute("UPDATE Objects SET c06 = '[[1, 0], [0, 1]]' WHERE id = 7")
    with pytest.raises(FormatError) as err:
        read_scipion_coordinates(path)
    assert "item 7" in assert_one_sentence(err, path)
    with sqlite3.connect(path) as con:
        con.execute("DELETE FROM Classes WHERE label_property = '_y'")
    with pytest.raises(FormatError) as err:
        read_scipion_coordinates(path)
    assert "_y" in assert_one_sentence(err, path)
