"""Warp tilt-series XML: the real EMPIAR-10491 file, CTF (µm → Å) and geometry decoding, broken files, fuzz."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tomoforge.io import FormatError, format_for
from tomoforge.io.warp import read_warp_xml, warp_ctf_to_ctf, warp_projection_parameters, warp_to_transforms

PATH = Path(__file__).resolve().parents[1] / "data" / "warp" / "warpylib_TS_1_EMPIAR-10491_subset.xml"
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SMALL = """<?xml version="1.0" encoding="utf-8"?>
<TiltSeries LevelAngleX="1.5" LevelAngleY="-2" AreAnglesInverted="False">
  <Angles>-3
0
3</Angles>
  <Dose>3
0
6</Dose>
  <UseTilt>True
True
False</UseTilt>
  <AxisAngle>85
85
85</AxisAngle>
  <AxisOffsetX>1
2
3</AxisOffsetX>
  <AxisOffsetY>-1
0
1</AxisOffsetY>
  <CTF>
    <Param Name="Defocus" Value="3.5" />
    <Param Name="DefocusDelta" Value="0.2" />
    <Param Name="DefocusAngle" Value="30" />
    <Param Name="PhaseShift" Value="0.5" />
    <Param Name="PixelSize" Value="1.5" />
  </CTF>
  <GridCTF Width="1" Height="1" Depth="3" MarginX="0" MarginY="0" MarginZ="0">
    <Node X="0" Y="0" Z="0" Value="3.0" />
    <Node X="0" Y="0" Z="1" Value="3.1" />
    <Node X="0" Y="0" Z="2" Value="3.2" />
  </GridCTF>
</TiltSeries>
"""


def _one_line_error(exc: FormatError, path: Path) -> None:
    assert str(exc).startswith(str(path)) and "\n" not in str(exc)


def test_real_tilt_series():
    warp = read_warp_xml(PATH)
    assert warp.n_tilts == 41 and warp.pixel_size_angstrom == 0.834
    assert warp.angles_deg[0] == 40.01 and warp.angles_deg[-1] == -39.98
    assert (
        warp.dose_e_per_angstrom2[0] == 120.0
        and warp.dose_e_per_angstrom2[np.argmin(np.abs(warp.angles_deg))] == 0.0
    )
    assert warp.use_tilt.all()
    np.testing.assert_allclose(warp.axis_angles_deg, -85.6005, atol=1e-4)
    np.testing.assert_array_equal(warp.axis_offsets_xy_angstrom[0], [12.05431, -51.868156])
    assert len(warp.movie_paths) == 41 and warp.movie_paths[0].endswith("_-40.0_Jul31_11.05.12.tif")
    assert warp.grids["GridCTF"].values.shape == (41, 1, 1)
    assert warp.grids["GridMovementX"].values.shape == (41, 4, 6)
    assert warp.grids["GridVolumeWarpX"].values.shape == (1, 1, 1, 1)
    assert warp.grids["GridMovementX"].values[0, 0, 1] == -0.3384567  # <Node X="1" Y="0" Z="0" ...>


def test_ctf_per_tilt_from_the_grids_in_angstrom():
    warp = read_warp_xml(PATH)
    ctf = warp_ctf_to_ctf(warp, "TS_1")
    first = ctf.parameters_for(0)
    assert first is not None
    # GridCTF 2.8969412 µm, GridCTFDefocusDelta 0.02141254 µm (u − v), GridCTFDefocusAngle 26.262018°
    assert first.defocus_u_angstrom == pytest.approx((2.8969412 + 0.01070627) * 1e4)
    assert first.defocus_v_angstrom == pytest.approx((2.8969412 - 0.01070627) * 1e4)
    assert first.astigmatism_angle_deg == 26.262018 and first.phase_shift_deg == 0.0
    assert first.fit_resolution_angstrom == 4.8
    means = [t.parameters.defocus_mean_angstrom for t in ctf.tilts if t.parameters]
    np.testing.assert_allclose(means, warp.grids["GridCTF"].values[:, 0, 0] * 1e4)


def test_ctf_without_grids_and_exclusions(tmp_path: Path):
    path = tmp_path / "small.xml"
    path.write_text(SMALL)
    ctf = warp_ctf_to_ctf(read_warp_xml(path), "TS")
    third = ctf.tilts[2]
    assert third.excluded and third.parameters is not None
    assert third.parameters.defocus_u_angstrom == pytest.approx(33000.0)  # GridCTF 3.2 + 0.2/2 µm
    assert third.parameters.astigmatism_angle_deg == 30.0 and third.parameters.phase_shift_deg == 90.0
    assert ctf.excluded_indices() == [2]


def test_geometry_decoding():
    warp = read_warp_xml(PATH)
    geometry = warp_projection_parameters(warp)
    np.testing.assert_allclose(geometry.tilt_angles_deg, -(warp.angles_deg - 5.920115))
    assert geometry.x_tilt_deg == 1.457031
    # Warp's angles are the negated nominal (SerialEM) angles named in the movie files
    nominal = [float(re.search(r"_(-?\d+\.\d)_[A-Z][a-z]{2}\d", p).group(1)) for p in warp.movie_paths]  # type: ignore[union-attr]
    np.testing.assert_allclose(-warp.angles_deg, nominal, atol=0.05)
    transforms = warp_to_transforms(warp)
    for t, alpha, s in zip(
        transforms, geometry.tilt_axis_angles_deg, geometry.shifts_xy_angstrom, strict=True
    ):
        assert t.tilt_axis_angle_deg == pytest.approx(alpha)
        np.testing.assert_allclose(
            t.apply(s / 0.834, 0.834), [0.0, 0.0], atol=1e-9
        )  # centre → aligned centre


def test_non_numeric_parameters_name_the_file(tmp_path: Path):
    path = tmp_path / "bad.xml"
    path.write_text(
        SMALL.replace('Name="Defocus" Value="3.5"', 'Name="Defocus" Value="abc"')
        .replace("<GridCTF ", "<XGridCTF ")
        .replace("</GridCTF>", "</XGridCTF>")
    )
    with pytest.raises(FormatError, match="<CTF Defocus>: 'abc' is not a number") as err:
        warp_ctf_to_ctf(read_warp_xml(path), "TS")
    _one_line_error(err.value, path)
    path.write_text(SMALL.replace('LevelAngleY="-2"', 'LevelAngleY="tilted"'))
    with pytest.raises(FormatError, match="LevelAngleY"):
        warp_projection_parameters(read_warp_xml(path))


def test_inverted_angles_are_refused(tmp_path: Path):
    path = tmp_path / "inv.xml"
    path.write_text(SMALL.replace('AreAnglesInverted="False"', 'AreAnglesInverted="True"'))
    with pytest.raises(ValueError, match="AreAnglesInverted"):
        warp_projection_parameters(read_warp_xml(path))


def test_registry():
    assert format_for("TS_1.xml").name == "warp-tilt-series"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<TiltSeries><Angles>1\n2</Angles>", "is not well-formed XML"),
        ("<Movie><Angles>1</Angles></Movie>", "root element <Movie> is not <TiltSeries>"),
        ("<TiltSeries><Dose>1</Dose></TiltSeries>", "has no <Angles>"),
        (
            "<TiltSeries><Angles>1\n2</Angles><Dose>1</Dose></TiltSeries>",
            "<Dose> has 1 entries but <Angles> has 2",
        ),
        ("<TiltSeries><Angles>1\nx</Angles></TiltSeries>", "<Angles> entry 2: 'x' is not a number"),
        ("<TiltSeries><Angles>1</Angles><UseTilt>yes</UseTilt></TiltSeries>", "'yes' is not True or False"),
        (
            '<TiltSeries><Angles>1</Angles><GridCTF Width="1" Height="1" Depth="1">'
            '<Node X="0" Y="0" Z="3" Value="1"/></GridCTF></TiltSeries>',
            "outside the grid",
        ),
        (
            '<TiltSeries><Angles>1</Angles><GridCTF Width="1" Height="1" Depth="2">'
            '<Node X="0" Y="0" Z="0" Value="1"/></GridCTF></TiltSeries>',
            "has 1 nodes, expected 2",
        ),
        (
            '<TiltSeries><Angles>1</Angles><GridCTF Width="1" Height="1"/></TiltSeries>',
            "needs positive Width",
        ),
    ],
)
def test_broken_xml(tmp_path: Path, text: str, expected: str):
    path = tmp_path / "broken.xml"
    path.write_text(text)
    with pytest.raises(FormatError, match=expected) as err:
        read_warp_xml(path)
    _one_line_error(err.value, path)


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tomoforge-warp-fuzz")


_SMALL_LINES = SMALL.splitlines()
_pieces = st.sampled_from(
    ["<", ">", "/", "TiltSeries", "Angles", "Node", "Value=", '"1"', "x", "True", "\n", " "]
)


@st.composite
def _mutated(draw: st.DrawFn) -> str:
    lines = list(_SMALL_LINES)
    for _ in range(draw(st.integers(0, 3))):
        index = draw(st.integers(0, len(lines) - 1))
        action = draw(st.sampled_from(["delete", "replace", "insert"]))
        if action == "delete" and len(lines) > 1:
            del lines[index]
        else:
            new = "".join(draw(st.lists(_pieces, max_size=8)))
            lines[index : index + (action == "replace")] = [new]
    return "\n".join(lines)


@FUZZ
@given(text=st.one_of(_mutated(), st.text(max_size=60)))
def test_fuzz_warp_parser(fuzz_dir: Path, text: str):
    path = fuzz_dir / "fuzz.xml"
    path.write_text(text, encoding="utf-8")
    try:
        warp = read_warp_xml(path)
        warp_ctf_to_ctf(warp, "TS")
        warp_to_transforms(warp)
    except FormatError as exc:
        _one_line_error(exc, path)
        return
    except ValueError as exc:  # the one documented refusal of the geometry decoding
        assert "AreAnglesInverted" in str(exc)
        return
    assert warp.n_tilts >= 1
