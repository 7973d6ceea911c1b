"""Conversions through the one data model (tomoforge.io.convert), on the real files of tests/data."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import starfile

from tomoforge.io import FormatError
from tomoforge.io.aretomo import aretomo_to_imod_xf, read_aretomo_aln
from tomoforge.io.convert import (
    Alignment,
    convert_alignment,
    convert_ctf,
    convert_particles,
    read_alignment,
    read_ctf,
    read_particles,
    tomogram_geometry,
    write_alignment,
    write_ctf,
    write_particles,
)
from tomoforge.io.dynamo import read_dynamo_table
from tomoforge.io.imod import read_imod_defocus, read_tlt, read_xf, write_tlt
from tomoforge.io.warp import read_warp_xml, warp_projection_parameters
from tomoforge.models import TiltTransform

DATA = Path(__file__).resolve().parents[1] / "data"
RELION = DATA / "relion5_empiar10164"
TS_01 = RELION / "tilt_series_TS_01.star"
CTFFIND = RELION / "ctffind_TS_01.star"
TOMOGRAMS = RELION / "tomograms.star"
IMOD_XF = DATA / "imod" / "cetsimod_TS_03.xf"
ARETOMO = DATA / "aretomo" / "alnfile_global_no_local.aln"
WARP = DATA / "warp" / "warpylib_TS_1_EMPIAR-10491_subset.xml"
DYNAMO = DATA / "dynamo" / "t_double.tbl"
SCIPION = DATA / "scipion" / "coordinates3d_TS_03_EMPIAR-10164.sqlite"
SIZE_XY = (3838, 3710)  # any size works for a round trip; the same one is used both ways


def numbers(transforms) -> np.ndarray:
    return np.array([[t.a11, t.a12, t.a21, t.a22, t.dx_angstrom, t.dy_angstrom] for t in transforms])


def centre_positions(transforms) -> np.ndarray:
    """s = −A⁻¹·d: where the tomogram centre lies in each raw image (Å), the number RELION stores."""
    m = numbers(transforms)
    a = m[:, :4].reshape(-1, 2, 2)
    return -np.einsum("nij,nj->ni", np.linalg.inv(a), m[:, 4:])


def included(alignment: Alignment, values) -> list:
    return [values[i] for i in alignment.included_indices()]


def one_line_error(excinfo: pytest.ExceptionInfo[FormatError], *words: str) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    for word in words:
        assert word in message, message
    return message


# --- alignments -----------------------------------------------------------------------------------------------


def test_relion_to_imod_to_relion_round_trip_is_exact(tmp_path: Path) -> None:
    """RELION 5 TS_01 (41 tilts, the −60° one excluded) → IMOD .xf/.tlt/.rawtlt → RELION star: equal within 1e-6."""
    original = read_alignment(TS_01, tomograms_path=TOMOGRAMS, all_tilts_path=CTFFIND, image_size_xy=SIZE_XY)
    assert (original.n_tilts, original.n_excluded, original.pixel_size_angstrom) == (41, 1, 1.35)
    assert original.excluded[0] and original.transforms[0] is None and original.tilt_angles_deg[0] == -59.9986
    written = write_alignment(original, tmp_path / "TS_01.xf")
    assert [p.name for p in written] == [
        "TS_01.xf",
        "TS_01.tlt",
        "TS_01.rawtlt",
    ]  # x-tilts all zero: no .xtilt
    assert len(read_xf(written[0])) == 40  # excluded tilts are left out, as in IMOD stacks
    imod = read_alignment(written[0], pixel_size_angstrom=1.35, image_size_xy=SIZE_XY)
    assert imod.ts_id == "TS_01" and imod.n_tilts == 40
    write_alignment(imod, tmp_path / "again.star", template_path=CTFFIND)
    again = read_alignment(tmp_path / "again.star")
    assert again.ts_id == "TS_01" and again.n_tilts == 40
    np.testing.assert_allclose(
        numbers(again.transforms), numbers(included(original, original.transforms)), atol=1e-6
    )
    for name in (
        "tilt_angles_deg",
        "x_tilt_angles_deg",
        "nominal_tilt_angles_deg",
        "prior_dose_e_per_angstrom2",
    ):
        np.testing.assert_allclose(
            getattr(again, name), included(original, getattr(original, name)), atol=1e-6
        )
    # the columns RELION reads are the original ones, and the template's other columns came along
    new, old = starfile.read(tmp_path / "again.star"), starfile.read(TS_01)
    for column in ("rlnTomoXTilt", "rlnTomoYTilt", "rlnTomoZRot", "rlnTomoXShiftAngst", "rlnTomoYShiftAngst"):
        np.testing.assert_allclose(new[column].to_numpy(), old[column].to_numpy(), atol=1e-6)
    assert list(new["rlnMicrographMovieName"]) == list(old["rlnMicrographMovieName"])


def test_relion_file_written_from_imod_reads_back_to_the_same_alignment(tmp_path: Path) -> None:
    """IMOD .xf (+ .tlt) → RELION 5 star → Alignment: the same within 1e-6.

    RELION keeps one rotation and the tomogram centre's image position s per tilt. IMOD writes matrices with 7
    decimals, so they are orthogonal only to ~1e-6: matrices agree within 1e-6, s within 1e-6 Å, and the shifts
    d = −A·s within 1e-6 of their size (≤ 0.0003 Å here).
    """
    imod = read_alignment(IMOD_XF, pixel_size_angstrom=1.35, image_size_xy=SIZE_XY)
    assert imod.n_tilts == 40 and imod.ts_id == "cetsimod_TS_03"
    np.testing.assert_array_equal(imod.tilt_angles_deg, read_tlt(IMOD_XF.with_suffix(".tlt")))
    write_alignment(imod, tmp_path / "TS_03.star", zero_dose=True)
    back = read_alignment(tmp_path / "TS_03.star")
    assert back.ts_id == imod.ts_id and back.excluded == imod.excluded
    np.testing.assert_allclose(numbers(back.transforms)[:, :4], numbers(imod.transforms)[:, :4], atol=1e-6)
    s = centre_positions(imod.transforms)
    np.testing.assert_allclose(centre_positions(back.transforms), s, atol=1e-6)
    d_error = np.abs(numbers(back.transforms)[:, 4:] - numbers(imod.transforms)[:, 4:]).max()
    assert d_error <= 1e-6 * np.abs(s).max()
    np.testing.assert_allclose(back.tilt_angles_deg, imod.tilt_angles_deg, atol=1e-6)
    np.testing.assert_allclose(back.x_tilt_angles_deg, imod.x_tilt_angles_deg, atol=1e-6)
    assert back.prior_dose_e_per_angstrom2 == (0.0,) * 40


def test_imod_x_tilts_and_raw_angles_beside_the_xf_are_read_and_written(tmp_path: Path) -> None:
    xf = DATA / "imod" / "etomofiles_TS_001.xf"
    a = read_alignment(xf, pixel_size_angstrom=2.0, image_size_xy=(1024, 1024))
    np.testing.assert_array_equal(a.x_tilt_angles_deg, read_tlt(xf.with_suffix(".xtilt")))
    np.testing.assert_array_equal(a.nominal_tilt_angles_deg, read_tlt(xf.with_suffix(".rawtlt")))
    written = write_alignment(a, tmp_path / "out.xf")
    assert {p.suffix for p in written} == {".xf", ".tlt", ".xtilt", ".rawtlt"}
    np.testing.assert_allclose(
        read_xf(written[0]), read_xf(xf), rtol=0, atol=1e-12
    )  # IMOD's numbers come back
    again = read_alignment(written[0], pixel_size_angstrom=2.0, image_size_xy=(1024, 1024))
    assert again.ts_id == "out" and again.x_tilt_angles_deg == a.x_tilt_angles_deg
    assert (
        again.nominal_tilt_angles_deg == a.nominal_tilt_angles_deg
        and again.tilt_angles_deg == a.tilt_angles_deg
    )
    np.testing.assert_allclose(numbers(again.transforms), numbers(a.transforms), rtol=0, atol=1e-12)


def test_aretomo_to_imod_agrees_with_aretomo_own_xf_up_to_the_centre_convention(tmp_path: Path) -> None:
    """Same matrices as aretomo_to_imod_xf; shifts differ by (I − A)·δ, δ = N//2 − (N − 1)/2 = 0.5 px.

    AreTomo rotates about N/2 but writes its .xf unchanged for IMOD, which rotates about (N − 1)/2; going through
    tomoforge's transforms applies the half-pixel centre correction (CONVENTIONS.md §2, §6).
    """
    summary = convert_alignment(ARETOMO, tmp_path / "are.xf", pixel_size_angstrom=1.0)
    assert (summary.count, summary.excluded) == (61, 0)
    ours, theirs = read_xf(tmp_path / "are.xf"), aretomo_to_imod_xf(read_aretomo_aln(ARETOMO))
    np.testing.assert_allclose(ours[:, :, :2], theirs[:, :, :2], atol=1e-7)
    correction = np.einsum("nij,j->ni", np.eye(2) - theirs[:, :, :2], np.array([0.5, 0.5]))
    np.testing.assert_allclose(ours[:, :, 2], theirs[:, :, 2] + correction, atol=1e-9)
    rot = np.radians(
        read_aretomo_aln(ARETOMO).tilt_axis_angles_deg
    )  # |(I − R)·δ| = 2·sin(|ROT|/2)·|δ| ≈ 1.05 px
    np.testing.assert_allclose(np.linalg.norm(correction, axis=1), 2 * np.abs(np.sin(rot / 2)) * np.sqrt(0.5))
    np.testing.assert_array_equal(read_tlt(tmp_path / "are.tlt"), read_aretomo_aln(ARETOMO).tilt_angles_deg)


def test_aretomo_dark_frames_are_excluded_tilts(tmp_path: Path) -> None:
    aln = DATA / "aretomo" / "alnfile_global_and_local.aln"
    a = read_alignment(aln, pixel_size_angstrom=1.0)
    assert (a.n_tilts, a.n_excluded, a.image_size_xy) == (51, 14, (4096, 4096))
    assert all(a.excluded[:14]) and a.tilt_angles_deg[0] == -68.0 and a.transforms[0] is None
    write_alignment(a, tmp_path / "are.xf")
    assert len(read_xf(tmp_path / "are.xf")) == 37


def test_warp_alignment_to_relion_and_imod(tmp_path: Path) -> None:
    warp = read_warp_xml(WARP)
    geometry = warp_projection_parameters(warp)
    a = read_alignment(WARP)
    assert a.pixel_size_angstrom == 0.834 and a.image_size_xy == (
        5760,
        4092,
    )  # ImageDimensionsAngstrom / pixel
    np.testing.assert_array_equal(a.tilt_angles_deg, geometry.tilt_angles_deg)
    np.testing.assert_array_equal(a.prior_dose_e_per_angstrom2, warp.dose_e_per_angstrom2)
    write_alignment(a, tmp_path / "warp.star")
    relion = read_alignment(tmp_path / "warp.star")
    np.testing.assert_allclose(numbers(relion.transforms), numbers(a.transforms), atol=1e-9)
    np.testing.assert_allclose(relion.x_tilt_angles_deg, [geometry.x_tilt_deg] * 41, atol=1e-12)
    write_alignment(a, tmp_path / "warp.xf")
    imod = read_alignment(tmp_path / "warp.xf", pixel_size_angstrom=0.834, image_size_xy=(5760, 4092))
    np.testing.assert_allclose(numbers(imod.transforms), numbers(a.transforms), atol=1e-9)
    np.testing.assert_allclose(imod.x_tilt_angles_deg, a.x_tilt_angles_deg)


def test_alignment_errors_name_the_option_to_pass(tmp_path: Path) -> None:
    with pytest.raises(FormatError) as excinfo:
        read_alignment(IMOD_XF, image_size_xy=SIZE_XY)
    one_line_error(excinfo, "cetsimod_TS_03.xf", "--pixel-size-angstrom")
    with pytest.raises(FormatError) as excinfo:
        read_alignment(IMOD_XF)
    one_line_error(excinfo, "--pixel-size-angstrom and --image-size-px")
    lone = tmp_path / "lone.xf"
    lone.write_bytes(IMOD_XF.read_bytes())
    with pytest.raises(FormatError) as excinfo:
        read_alignment(lone, pixel_size_angstrom=1.0, image_size_xy=SIZE_XY)
    one_line_error(excinfo, "lone.xf", "--tilt-angles")
    imod = read_alignment(IMOD_XF, pixel_size_angstrom=1.35, image_size_xy=SIZE_XY)
    with pytest.raises(FormatError) as excinfo:
        write_alignment(imod, tmp_path / "x.star")
    one_line_error(excinfo, "x.star", "--template", "--zero-dose")
    with pytest.raises(FormatError) as excinfo:
        write_alignment(imod.replace(pixel_size_angstrom=None), tmp_path / "x.xf")
    one_line_error(excinfo, "--pixel-size-angstrom")
    scaled = imod.replace(transforms=(TiltTransform.from_rotation(30.0, scale=1.01),) * imod.n_tilts)
    with pytest.raises(FormatError) as excinfo:
        write_alignment(scaled, tmp_path / "x.star", zero_dose=True)
    one_line_error(excinfo, "--nearest-rotation")
    write_alignment(scaled, tmp_path / "x.star", zero_dose=True, nearest_rotation=True)
    for bad, words in (
        (tmp_path / "missing.xf", ("missing.xf", "no such")),
        (DATA / "imod" / "cryoetalign_imod1_newst.com", (".com", ".xf (IMOD .xf)")),
        (
            DATA / "aretomo" / "cryoetalign_test.aln",
            ("cryoetalign_test.aln",),
        ),  # rows + dark frames ≠ RawSize
        (CTFFIND, ("no alignment columns",)),
    ):
        with pytest.raises(FormatError) as excinfo:
            read_alignment(bad, pixel_size_angstrom=1.0, image_size_xy=SIZE_XY)
        one_line_error(excinfo, *words)
    with pytest.raises(FormatError) as excinfo:
        convert_alignment(TS_01, tmp_path / "out.aln")
    one_line_error(excinfo, "out.aln", ".xf (IMOD .xf), .star")
    assert not (tmp_path / "out.aln").exists()


# --- CTF ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted((DATA / "imod").glob("*.defocus")), ids=lambda p: p.stem[15:])
def test_imod_defocus_to_relion_to_defocus_keeps_every_number(tmp_path: Path, path: Path) -> None:
    original = read_ctf(path)
    assert original.n_tilts == original.n_usable == 40
    convert_ctf(path, tmp_path / "TS_03.star", zero_dose=True, tilt_axis_angle_deg=85.0)
    star = starfile.read(tmp_path / "TS_03.star")
    first = read_imod_defocus(path).entries[0]
    assert star["rlnDefocusU"].iloc[0] == first.ctf.defocus_u_angstrom  # nm × 10 = Å
    assert star["rlnTomoNominalTiltAxisAngle"].iloc[0] == 85.0
    convert_ctf(tmp_path / "TS_03.star", tmp_path / "again.defocus")
    again = read_ctf(tmp_path / "again.defocus")
    assert again.ctf.tilts == original.ctf.tilts
    assert again.tilt_angles_deg == original.tilt_angles_deg


def _write_angles(tmp_path: Path, angles) -> Path:
    return write_tlt(angles, tmp_path / "angles.tlt")


def test_relion_ctf_to_imod_defocus_and_back_with_a_template(tmp_path: Path) -> None:
    ctf = read_ctf(TS_01, all_tilts_path=CTFFIND)
    assert (ctf.n_tilts, ctf.n_usable) == (41, 40) and ctf.tilt_axis_angle_deg == 85.0
    write_ctf(ctf, tmp_path / "TS_01.defocus")
    star = starfile.read(TS_01).sort_values("rlnTomoNominalStageTiltAngle")
    entries = read_imod_defocus(tmp_path / "TS_01.defocus").entries
    assert [e.start_view for e in entries] == list(range(2, 42))  # view 1 (−60°) is excluded
    np.testing.assert_array_equal([e.ctf.defocus_u_angstrom for e in entries], star["rlnDefocusU"])
    np.testing.assert_array_equal([e.ctf.defocus_v_angstrom for e in entries], star["rlnDefocusV"])
    np.testing.assert_array_equal([e.ctf.astigmatism_angle_deg for e in entries], star["rlnDefocusAngle"])
    # the .defocus alone lacks view 1, so the angle of every stack position must be given
    with pytest.raises(FormatError) as excinfo:
        write_ctf(read_ctf(tmp_path / "TS_01.defocus"), tmp_path / "x.star", template_path=CTFFIND)
    one_line_error(excinfo, "x.star", "--tilt-angles")
    angles = _write_angles(tmp_path, ctf.tilt_angles_deg)
    imod = read_ctf(tmp_path / "TS_01.defocus", tilt_angles_path=angles)
    assert (imod.n_tilts, imod.n_usable) == (41, 40) and imod.ctf.tilts[0].excluded
    with pytest.raises(FormatError) as excinfo:
        write_ctf(imod, tmp_path / "x.star")
    one_line_error(excinfo, "--template", "--zero-dose")
    write_ctf(imod, tmp_path / "back.star", template_path=CTFFIND)
    back = starfile.read(tmp_path / "back.star").sort_values("rlnTomoNominalStageTiltAngle")
    for column in ("rlnDefocusU", "rlnDefocusV", "rlnDefocusAngle", "rlnMicrographPreExposure"):
        np.testing.assert_array_equal(back[column], star[column])
    assert list(back["rlnMicrographMovieName"]) == list(star["rlnMicrographMovieName"])


def test_warp_ctf_to_relion_and_aretomo_ctf_to_imod(tmp_path: Path) -> None:
    warp = read_ctf(WARP)
    assert warp.n_usable == 41 and warp.tilt_angles_deg == tuple(-read_warp_xml(WARP).angles_deg)
    write_ctf(warp, tmp_path / "warp.star")
    back = read_ctf(tmp_path / "warp.star")
    assert [t.parameters for t in back.ctf.tilts] == [t.parameters for t in warp.ctf.tilts]
    assert back.prior_dose_e_per_angstrom2 == warp.prior_dose_e_per_angstrom2

    aretomo = DATA / "aretomo" / "cryoetalign_test_CTF.txt"
    ctf = read_ctf(aretomo)
    assert ctf.ts_id == "cryoetalign_test" and ctf.tilt_angles_deg is None and ctf.n_usable == 3
    with pytest.raises(FormatError) as excinfo:
        write_ctf(ctf, tmp_path / "a.defocus")
    one_line_error(excinfo, "a.defocus", "--tilt-angles")
    write_ctf(
        read_ctf(aretomo, tilt_angles_path=_write_angles(tmp_path, [-3.0, 0.0, 3.0])), tmp_path / "a.defocus"
    )
    again = read_ctf(tmp_path / "a.defocus")
    assert again.tilt_angles_deg == (-3.0, 0.0, 3.0)
    for mine, theirs in zip(again.ctf.tilts, ctf.ctf.tilts, strict=True):
        assert mine.tilt_index == theirs.tilt_index
        assert mine.parameters.defocus_u_angstrom == theirs.parameters.defocus_u_angstrom
        assert mine.parameters.defocus_v_angstrom == theirs.parameters.defocus_v_angstrom
        assert mine.parameters.astigmatism_angle_deg == theirs.parameters.astigmatism_angle_deg


# --- particles ------------------------------------------------------------------------------------------------

DYNAMO_GEOMETRY = {"pixel_size_angstrom": 10.0, "tomogram_size_xyz_px": (512, 512, 256)}


def test_dynamo_to_relion_to_dynamo_keeps_positions_and_orientations(tmp_path: Path) -> None:
    summary = convert_particles(DYNAMO, tmp_path / "particles.star", **DYNAMO_GEOMETRY)
    assert (summary.count, summary.detail) == (300, "in 2 tomograms")
    star = starfile.read(tmp_path / "particles.star")["particles"]
    table = read_dynamo_table(DYNAMO)
    assert list(star["rlnTomoName"].astype(str).unique()) == ["1", "2"]  # Dynamo numbers become the ids
    # x + dx voxels (0-based, corner) → Å from the centre voxel 256 of a 512-voxel axis
    np.testing.assert_allclose(
        star["rlnCenteredCoordinateXAngst"], (table.x + table.dx - 256) * 10.0, atol=1e-9
    )
    np.testing.assert_allclose(
        star["rlnCenteredCoordinateZAngst"], (table.z + table.dz - 128) * 10.0, atol=1e-9
    )
    convert_particles(tmp_path / "particles.star", tmp_path / "back.tbl", **DYNAMO_GEOMETRY)
    back = read_dynamo_table(tmp_path / "back.tbl")
    np.testing.assert_array_equal(back.tomo, table.tomo)
    for c in "xyz":
        np.testing.assert_allclose(back[c] * 10.0, (table[c] + table["d" + c]) * 10.0, rtol=0, atol=1e-4)
    geometry = tomogram_geometry(**DYNAMO_GEOMETRY)
    before, after = read_particles(DYNAMO, geometry), read_particles(tmp_path / "back.tbl", geometry)
    np.testing.assert_allclose(after.positions_angstrom(), before.positions_angstrom(), rtol=0, atol=1e-4)
    np.testing.assert_allclose(after.rotation_matrices(), before.rotation_matrices(), rtol=0, atol=1e-6)


def test_relion_particles_through_scipion_and_dynamo_with_tomograms_star(tmp_path: Path) -> None:
    """TS_01 is row 1 of tomograms.star: Dynamo number 1; its tomogram has 540 voxels of ~10 Å along x and y."""
    relion = read_particles(RELION / "run_data_TS_01_subset.star")
    geometry = tomogram_geometry(tomograms_path=TOMOGRAMS)
    summary = convert_particles(
        RELION / "run_data_TS_01_subset.star", tmp_path / "p.tbl", tomograms_path=TOMOGRAMS
    )
    assert summary.note == "; Dynamo tomogram numbers 1=TS_01"
    table = read_dynamo_table(tmp_path / "p.tbl")
    voxel = 1.35 * 7.407407  # rlnTomoTiltSeriesPixelSize × rlnTomoTomogramBinning
    assert set(table.tomo) == {1.0} and set(table.apix) == {voxel}
    np.testing.assert_allclose(table.x, relion.positions_angstrom()[:, 0] / voxel + 270, atol=1e-9)
    dynamo = read_particles(tmp_path / "p.tbl", geometry)
    assert set(dynamo.ts_ids()) == {"TS_01"}
    np.testing.assert_allclose(dynamo.positions_angstrom(), relion.positions_angstrom(), atol=1e-9)
    np.testing.assert_allclose(dynamo.rotation_matrices(), relion.rotation_matrices(), atol=1e-9)
    write_particles(relion, tmp_path / "p.sqlite", geometry)
    scipion = read_particles(tmp_path / "p.sqlite", geometry)
    assert scipion.pixel_size_angstrom == voxel
    np.testing.assert_allclose(scipion.positions_angstrom(), relion.positions_angstrom(), atol=1e-9)
    np.testing.assert_allclose(scipion.rotation_matrices(), relion.rotation_matrices(), atol=1e-12)


def test_scipion_to_relion_keeps_each_particles_axis(tmp_path: Path) -> None:
    """R·ẑ (the picked normal) is the third row of the stored 4×4 matrix, whose rotation part is Rᵀ."""
    convert_particles(SCIPION, tmp_path / "particles.star")
    relion = read_particles(tmp_path / "particles.star")
    con = sqlite3.connect(SCIPION)
    try:
        rows = con.execute("select c01, c02, c03, c06, c08 from Objects order by id").fetchall()
    finally:
        con.close()
    stored_axes = np.array([json.loads(r[3])[2][:3] for r in rows])
    assert relion.n_particles == len(rows) == 210
    np.testing.assert_allclose(relion.rotation_matrices()[:, :, 2], stored_axes, atol=1e-9)
    np.testing.assert_allclose(relion.positions_angstrom(), np.array([r[:3] for r in rows]) * 5.4, atol=1e-9)
    assert relion.ts_ids() == [r[4] for r in rows]


def test_particle_errors_name_the_options(tmp_path: Path) -> None:
    with pytest.raises(FormatError) as excinfo:
        convert_particles(DYNAMO, tmp_path / "p.star")
    one_line_error(excinfo, "t_double.tbl", "--tomograms", "--pixel-size-angstrom", "--tomogram-size-px")
    with pytest.raises(FormatError) as excinfo:
        convert_particles(DYNAMO, tmp_path / "p.star", pixel_size_angstrom=10.0)
    one_line_error(excinfo, "given alone")
    with pytest.raises(FormatError) as excinfo:
        convert_particles(SCIPION, tmp_path / "p.sqlite")
    one_line_error(excinfo, "p.sqlite", "--tomograms")
    with pytest.raises(FormatError) as excinfo:
        convert_particles(
            DATA / "dynamo" / "t_complex_subset.tbl", tmp_path / "p.star", tomograms_path=TOMOGRAMS
        )
    one_line_error(excinfo, "number 6", "k-th row")
    with pytest.raises(FormatError) as excinfo:
        convert_particles(tmp_path / "none.tbl", tmp_path / "p.star", **DYNAMO_GEOMETRY)
    one_line_error(excinfo, "none.tbl", "no such")
    with pytest.raises(FormatError) as excinfo:
        convert_particles(DYNAMO, tmp_path / "p.csv", **DYNAMO_GEOMETRY)
    one_line_error(excinfo, "p.csv", ".tbl (Dynamo table)")
