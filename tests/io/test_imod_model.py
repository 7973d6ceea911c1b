"""Binary IMOD models: the real example files, lossless round trips, fiducial models as landmarks, broken files."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tomoforge.io import FormatError, format_for
from tomoforge.io.imod.model import (
    OBJECT_OPEN,
    ImodContour,
    ImodModel,
    ImodObject,
    imod_model_to_landmarks,
    landmarks_to_imod_model,
    read_imod_model,
    write_imod_model,
)
from tomoforge.models import LandmarkModel

DATA = Path(__file__).resolve().parents[1] / "data" / "imod" / "models"
MODELS = sorted(DATA.glob("*.mod"))
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# (objects, contours per object, points per object, pixel size Å) of each real model, found by reading it
EXPECTED = {
    "two_contour_example.mod": ([2], [25], 4.48),
    "multiple_objects_example.mod": ([0, 1, 1], [0, 3, 3], 19.733334),
    "point_sizes_example.mod": ([1, 3, 1], [4, 9, 5], 12.399),
    "slicer_angle_example.mod": ([4], [4], 16.145455),
    "meshed_curvature_example.mod": ([11, 11], [655, 521], 2.156),
}


def _one_line_error(exc: FormatError, path: Path) -> None:
    assert str(exc).startswith(str(path)) and "\n" not in str(exc)


@pytest.mark.parametrize("path", MODELS, ids=lambda p: p.name)
def test_real_models_read_and_round_trip(path: Path, tmp_path: Path):
    model = read_imod_model(path)
    contours, points, pixel = EXPECTED[path.name]
    assert [len(o.contours) for o in model.objects] == contours
    assert [sum(len(c.points_xyz) for c in o.contours) for o in model.objects] == points
    assert model.pixel_size_angstrom == pytest.approx(pixel, rel=1e-6)
    assert model.units == -9 and model.name == "IMOD-NewModel"
    again = read_imod_model(write_imod_model(model, tmp_path / path.name))
    assert again == model


def test_known_points_flags_and_point_sizes():
    two = read_imod_model(DATA / "two_contour_example.mod")
    assert two.max_xyz == (128, 128, 128)
    first = two.objects[0].contours[0]
    assert first.points_xyz.shape == (17, 3)
    np.testing.assert_allclose(first.points_xyz[0], [64.333336, 64.666664, 80.0], rtol=1e-7)
    sizes = read_imod_model(DATA / "point_sizes_example.mod")
    scattered, open_obj, _ = sizes.objects
    assert (
        scattered.name == "SCATTERED_POINT_SIZE" and scattered.is_scattered and scattered.point_radius_px == 6
    )
    assert open_obj.name == "OPEN_NO_POINTSIZE" and open_obj.is_open and not open_obj.is_scattered
    point_sizes = scattered.contours[0].point_sizes
    assert point_sizes is not None and point_sizes.shape == (4,)
    assert open_obj.contours[0].point_sizes is None


def test_written_file_layout_is_what_imod_expects(tmp_path: Path):
    model = ImodModel(
        objects=[
            ImodObject(contours=[ImodContour(np.array([[1.5, 2.5, 3.0]]))], name="beads", flags=OBJECT_OPEN)
        ],
        max_xyz=(10, 20, 3),
        pixel_size=0.5,
        units=-9,
    )
    data = write_imod_model(model, tmp_path / "m.mod").read_bytes()
    assert data[:8] == b"IMODV1.2" and data[-4:] == b"IEOF"
    assert struct.unpack(">3ii", data[136:152]) == (10, 20, 3, 1)
    assert data[240:244] == b"OBJT" and data[240 + 180 : 240 + 184] == b"CONT"
    assert struct.unpack(">i", data[424:428]) == (1,)  # one point, then flags, time, surface
    assert struct.unpack(">3f", data[440:452]) == (1.5, 2.5, 3.0)
    assert len(data) == 8 + 232 + 180 + 4 + 16 + 12 + 4


def test_fiducial_model_round_trips_through_landmarks(tmp_path: Path):
    xy = np.full((3, 5, 2), np.nan)
    xy[0, :4] = [[10.0, 20.0], [11.0, 20.5], [12.25, 21.0], [13.5, 21.5]]
    xy[1, 1:] = [[100.0, 50.0], [101.0, 51.0], [102.0, 52.0], [103.0, 53.0]]
    xy[2, 2] = [0.0, 0.0]
    landmarks = LandmarkModel.from_array(
        xy, ts_id="TS_01", pixel_size_angstrom=5.4, bead_diameter_angstrom=100.0
    )
    model = landmarks_to_imod_model(landmarks, (928, 928))
    contour = model.objects[0].contours[0]
    np.testing.assert_array_equal(contour.points_xyz[0], [10.5, 20.5, 0.0])  # pixel centres at .5, z = view
    assert model.objects[0].is_open and model.max_xyz == (928, 928, 5)
    back = imod_model_to_landmarks(
        read_imod_model(write_imod_model(model, tmp_path / "TS_01.fid")),
        ts_id="TS_01",
        bead_diameter_angstrom=100.0,
    )
    assert back.n_tilts == 5 and back.pixel_size_angstrom == pytest.approx(5.4, rel=1e-6)
    np.testing.assert_allclose(back.to_array(), xy, atol=1e-4)


def test_models_with_points_between_sections_are_not_fiducial_models():
    model = read_imod_model(DATA / "slicer_angle_example.mod")
    with pytest.raises(ValueError, match="lie between views"):
        imod_model_to_landmarks(model, ts_id="TS", bead_diameter_angstrom=100.0)


def test_registry():
    assert format_for("TS_01.fid").name == "imod-model"
    assert format_for("TS_01.mod").name == "imod-model"


@pytest.mark.parametrize("cut", [6, 100, 245, 300, 700, 1254])
def test_truncated_models(tmp_path: Path, cut: int):
    path = tmp_path / "cut.mod"
    path.write_bytes((DATA / "two_contour_example.mod").read_bytes()[:cut])
    with pytest.raises(FormatError, match="truncated|does not start|announces") as err:
        read_imod_model(path)
    _one_line_error(err.value, path)


def test_wrong_magic_unknown_chunk_and_wrong_counts(tmp_path: Path):
    data = (DATA / "two_contour_example.mod").read_bytes()
    cases = {
        b"IMODV1.1" + data[8:]: "does not start with IMODV1.2",
        data[:-4] + b"\x01\x02\x03\x04": "unknown chunk",
        data[:148] + struct.pack(">i", 2) + data[152:]: "announces 2 objects but the file holds 1",
    }
    for content, expected in cases.items():
        path = tmp_path / "bad.mod"
        path.write_bytes(content)
        with pytest.raises(FormatError, match=expected) as err:
            read_imod_model(path)
        _one_line_error(err.value, path)


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tomoforge-model-fuzz")


_SEED = (DATA / "point_sizes_example.mod").read_bytes()


@FUZZ
@given(
    cut=st.one_of(st.just(len(_SEED)), st.integers(0, len(_SEED))),
    flips=st.lists(st.tuples(st.integers(0, len(_SEED) - 1), st.integers(0, 255)), max_size=4),
)
def test_fuzz_model_reader(fuzz_dir: Path, cut: int, flips: list[tuple[int, int]]):
    data = bytearray(_SEED)
    for index, value in flips:
        data[index] = value
    path = fuzz_dir / "fuzz.mod"
    path.write_bytes(bytes(data[:cut]))
    try:
        model = read_imod_model(path)
    except FormatError as exc:
        _one_line_error(exc, path)
        return
    try:
        again = read_imod_model(write_imod_model(model, path))
    except FormatError as exc:  # e.g. a flipped byte made a coordinate NaN
        _one_line_error(exc, path)
        return
    assert [len(o.contours) for o in again.objects] == [len(o.contours) for o in model.objects]
