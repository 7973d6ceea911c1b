"""RELION 5 particle files and picker annotations on the real EMPIAR-10164 run."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import starfile
from scipy.spatial.transform import Rotation

from tomoforge.io import FormatError
from tomoforge.io.relion5 import (
    RelionSpheres,
    read_relion_particles,
    read_relion_picks,
    read_relion_spheres,
    read_tomograms_star,
    write_relion_particles,
    write_relion_picks,
    write_relion_spheres,
)
from tomoforge.models import ParticleSet

DATA = Path(__file__).resolve().parents[1] / "data" / "relion5_empiar10164"
RUN_DATA = DATA / "run_data_TS_01_subset.star"


def relion_matrix(angles: np.ndarray) -> np.ndarray:
    """RELION's Euler matrix written independently: transpose of SciPy's intrinsic ZYZ (CONVENTIONS.md §4)."""
    return np.swapaxes(Rotation.from_euler("ZYZ", angles, degrees=True).as_matrix(), -1, -2)


@pytest.fixture(scope="module")
def tomograms():
    return read_tomograms_star(DATA / "tomograms.star")


def test_real_refined_particles_read_with_relion_geometry():
    relion = read_relion_particles(RUN_DATA)
    ps = relion.particles
    raw = starfile.read(RUN_DATA)["particles"]
    assert ps.n_particles == 305 and set(ps.ts_ids()) == {"TS_01"}
    assert relion.general == {"rlnTomoSubTomosAre2DStacks": 1}
    assert (ps.pixel_size_angstrom, ps.box_size_px) == (1.35, 192)
    a_sub = relion_matrix(
        raw[["rlnTomoSubtomogramRot", "rlnTomoSubtomogramTilt", "rlnTomoSubtomogramPsi"]].to_numpy()
    )
    a_part = relion_matrix(raw[["rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"]].to_numpy())
    assert np.allclose(ps.rotation_matrices(), a_sub @ a_part, atol=1e-12)
    centred = raw[[f"rlnCenteredCoordinate{a}Angst" for a in "XYZ"]].to_numpy()
    origin = raw[[f"rlnOrigin{a}Angst" for a in "XYZ"]].to_numpy()
    assert np.allclose(ps.positions_angstrom(), centred - np.einsum("nij,nj->ni", a_sub, origin), atol=1e-9)
    assert [p.half_set for p in ps.particles] == raw.rlnRandomSubset.tolist()
    assert [p.class_number for p in ps.particles] == raw.rlnClassNumber.tolist()
    assert [p.group for p in ps.particles] == [str(g) for g in raw.rlnGroupNumber]
    # what the model does not hold is kept, row by row
    assert relion.extra["rlnTomoParticleName"].tolist() == raw.rlnTomoParticleName.tolist()
    assert "rlnTomoVisibleFrames" in relion.extra and "rlnCenteredCoordinateXAngst" not in relion.extra


def test_refined_particle_axes_point_out_of_their_virus(tomograms):
    """R·ẑ of the real refined CA-SP1 particles is the outward radius of the sphere picked around their virus."""
    ps = read_relion_particles(RUN_DATA).particles
    spheres = read_relion_spheres(DATA / "TS_01_spheres.star", tomograms)
    assert len(spheres.ts_ids) == 9
    assert np.all((spheres.radii_angstrom > 400) & (spheres.radii_angstrom < 500))  # HIV VLPs, ~90 nm across
    pos = ps.positions_angstrom()
    dist = np.linalg.norm(pos[:, None] - spheres.centres_angstrom[None], axis=-1)
    nearest = np.argmin(np.abs(dist - spheres.radii_angstrom[None]), axis=1)
    radial = pos - spheres.centres_angstrom[nearest]
    radial /= np.linalg.norm(radial, axis=1, keepdims=True)
    cosines = np.einsum("ni,ni->n", ps.rotation_matrices()[:, :, 2], radial)
    assert np.median(cosines) > 0.99


def test_particles_round_trip_is_lossless(tmp_path: Path):
    relion = read_relion_particles(RUN_DATA)
    out = write_relion_particles(relion, tmp_path / "particles.star")
    again = read_relion_particles(out)
    assert np.allclose(again.particles.rotation_matrices(), relion.particles.rotation_matrices(), atol=1e-9)
    assert np.allclose(again.particles.positions_angstrom(), relion.particles.positions_angstrom(), atol=1e-9)
    assert [
        p.model_dump(exclude={"rotation_matrix", "position_angstrom"}) for p in again.particles.particles
    ] == [p.model_dump(exclude={"rotation_matrix", "position_angstrom"}) for p in relion.particles.particles]
    pd.testing.assert_frame_equal(again.extra, relion.extra)
    pd.testing.assert_frame_equal(again.optics, relion.optics)
    assert again.general == relion.general and again.column_order == relion.column_order
    raw, back = starfile.read(RUN_DATA)["particles"], starfile.read(out)["particles"]
    for column in raw.columns:
        if column.startswith("rlnAngle") and not column.endswith("Prior"):
            continue  # re-derived from R: compared as matrices above
        if pd.api.types.is_numeric_dtype(raw[column]):
            assert np.allclose(back[column], raw[column], rtol=0, atol=1e-6), column
        else:
            assert back[column].tolist() == raw[column].tolist(), column
    angles = [["rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"]]
    assert np.allclose(
        relion_matrix(back[angles[0]].to_numpy()), relion_matrix(raw[angles[0]].to_numpy()), atol=1e-9
    )


def test_bare_particle_set_is_written_with_identity_subtomograms(tmp_path: Path):
    ps = read_relion_particles(RUN_DATA).particles
    out = write_relion_particles(ps, tmp_path / "bare.star")
    raw = starfile.read(out)
    table = raw["particles"]
    assert np.all(
        table[["rlnTomoSubtomogramRot", "rlnTomoSubtomogramTilt", "rlnTomoSubtomogramPsi"]].to_numpy() == 0
    )
    assert np.all(table[["rlnOriginXAngst", "rlnOriginYAngst", "rlnOriginZAngst"]].to_numpy() == 0)
    assert np.allclose(relion_matrix(table[["rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"]].to_numpy()),
                       ps.rotation_matrices(), atol=1e-9)  # fmt: skip
    assert raw["optics"].rlnImagePixelSize.tolist() == [1.35] and raw["optics"].rlnImageSize.tolist() == [192]
    again = read_relion_particles(out).particles
    assert np.allclose(again.positions_angstrom(), ps.positions_angstrom(), atol=1e-9)
    assert np.allclose(again.rotation_matrices(), ps.rotation_matrices(), atol=1e-9)


def test_picker_annotations_match_relion_centred_coordinates(tmp_path: Path, tomograms):
    """The annotations and RELION's own particles.star of the same picking job give the same positions."""
    picks = read_relion_picks(DATA / "picks_TS_01_particles_subset.star", tomograms)
    relion = read_relion_particles(DATA / "picks_particles_TS_01_subset.star").particles
    assert picks.n_particles == relion.n_particles == 196
    assert np.abs(picks.positions_angstrom() - relion.positions_angstrom()).max() < 1e-4
    again = read_relion_picks(
        write_relion_picks(picks, tmp_path / "TS_01_particles.star", tomograms), tomograms
    )
    assert np.allclose(again.positions_angstrom(), picks.positions_angstrom(), atol=1e-9)


def test_spheres_round_trip(tmp_path: Path, tomograms):
    spheres = read_relion_spheres(DATA / "TS_01_spheres.star", tomograms)
    again = read_relion_spheres(
        write_relion_spheres(spheres, tmp_path / "TS_01_spheres.star", tomograms), tomograms
    )
    assert again.ts_ids == spheres.ts_ids
    assert np.allclose(again.centres_angstrom, spheres.centres_angstrom, atol=1e-9)
    assert np.allclose(again.radii_angstrom, spheres.radii_angstrom, atol=1e-9)
    with pytest.raises(ValueError, match="TS_99"):
        write_relion_spheres(
            RelionSpheres(["TS_99"], np.zeros((1, 3)), np.ones(1)), tmp_path / "x.star", tomograms
        )


def test_unknown_tomogram_in_annotations_is_a_format_error(tmp_path: Path, tomograms):
    path = tmp_path / "TS_02_spheres.star"
    path.write_text((DATA / "TS_01_spheres.star").read_text().replace("TS_01", "TS_02"))
    with pytest.raises(FormatError) as err:
        read_relion_spheres(path, tomograms)
    message = str(err.value)
    assert message.startswith(str(path) + ": ") and "\n" not in message and "TS_02" in message


def test_missing_coordinate_column_is_a_format_error(tmp_path: Path):
    path = tmp_path / "particles.star"
    path.write_text(RUN_DATA.read_text().replace("_rlnCenteredCoordinateYAngst", "_rlnCoordinateY"))
    with pytest.raises(FormatError) as err:
        read_relion_particles(path)
    message = str(err.value)
    assert message.startswith(str(path) + ": ") and "\n" not in message
    assert "rlnCenteredCoordinateYAngst" in message


def test_file_without_particles_table_is_a_format_error(tmp_path: Path):
    path = tmp_path / "tomograms_not_particles.star"
    path.write_text((DATA / "tomograms.star").read_text())
    with pytest.raises(FormatError) as err:
        read_relion_particles(path)
    message = str(err.value)
    assert message.startswith(str(path) + ": ") and "\n" not in message
    assert "no data_particles table (found data_global)" in message


def test_bad_tomogram_name_is_a_format_error(tmp_path: Path):
    path = tmp_path / "particles.star"
    path.write_text(
        RUN_DATA.read_text().replace("TS_01/", "XX/").replace("TS_01", "TS 01?", 1).replace("TS 01?", "..bad")
    )
    with pytest.raises(FormatError) as err:
        read_relion_particles(path)
    message = str(err.value)
    assert message.startswith(str(path) + ": ") and "\n" not in message and "do not validate" in message


def test_extra_rows_must_match_particles(tmp_path: Path):
    relion = read_relion_particles(RUN_DATA)
    relion.particles = ParticleSet(particles=relion.particles.particles[:10])
    with pytest.raises(ValueError, match="row by row"):
        write_relion_particles(relion, tmp_path / "p.star")
