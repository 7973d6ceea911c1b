"""MrcWriter.write_rows: a volume written slab by slab along y (as tomograms are reconstructed) reads back whole."""

from __future__ import annotations

from pathlib import Path

import mrcfile
import numpy as np
import pytest

from tomoforge.io import FormatError
from tomoforge.io.mrc import MrcWriter


def assert_header_describes(path: Path, full: np.ndarray) -> None:
    with mrcfile.open(path) as mrc:
        assert mrc.header.dmin == pytest.approx(full.min())
        assert mrc.header.dmax == pytest.approx(full.max())
        assert mrc.header.dmean == pytest.approx(full.mean(dtype=np.float64), rel=1e-5, abs=1e-6)
        assert mrc.header.rms == pytest.approx(full.std(dtype=np.float64), rel=1e-5)


def test_slabs_along_y_in_any_order_read_back_as_the_volume(tmp_path: Path):
    rng = np.random.default_rng(0)
    volume = (rng.normal(size=(6, 20, 9)) * 3 + 1).astype(np.float32)
    path = tmp_path / "tomo.mrc"
    with MrcWriter(
        path, volume.shape, voxel_size_angstrom=(2.0, 2.5, 3.0), origin_angstrom=(-9.0, -25.0, -9.0)
    ) as out:
        for start, stop in [(14, 20), (0, 7), (7, 14)]:
            out.write_rows(volume[:, start:stop], start)
    with mrcfile.open(path) as mrc:
        np.testing.assert_array_equal(mrc.data, volume)
        assert (int(mrc.header.nx), int(mrc.header.ny), int(mrc.header.nz)) == (9, 20, 6)
        assert tuple(mrc.voxel_size.item()) == pytest.approx((2.0, 2.5, 3.0))
        assert (float(mrc.header.origin.x), float(mrc.header.origin.y)) == (-9.0, -25.0)
        assert not mrc.is_image_stack()
    assert_header_describes(path, volume)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tomo.mrc"]  # no temporary file left


def test_rows_of_an_image_and_integer_modes(tmp_path: Path):
    image = np.arange(7 * 5, dtype=np.float32).reshape(7, 5) - 10
    path = tmp_path / "image.mrc"
    with MrcWriter(path, image.shape, 1.0, mode=1) as out:
        out.write_rows(image[4:], 4)
        out.write_rows(image[:4], 0)
    with mrcfile.open(path) as mrc:
        assert mrc.data.dtype == np.int16
        np.testing.assert_array_equal(mrc.data, image)
    assert_header_describes(path, image)


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_rows_never_written_read_as_zero_and_count_in_the_header(tmp_path: Path, sign: float):
    rng = np.random.default_rng(1)
    volume = np.zeros((4, 10, 6), dtype=np.float32)
    volume[:, 2:5] = sign * rng.uniform(1.0, 2.0, size=(4, 3, 6))  # all of one sign: 0 is outside their range
    path = tmp_path / "part.mrc"
    with MrcWriter(path, volume.shape, 1.0) as out:
        out.write_rows(volume[:, 2:5], 2)
    with mrcfile.open(path) as mrc:
        np.testing.assert_array_equal(mrc.data, volume)
        assert (mrc.header.dmin == 0.0) if sign > 0 else (mrc.header.dmax == 0.0)
    assert_header_describes(path, volume)


@pytest.mark.parametrize(
    ("shape", "start"),
    [
        ((3, 2, 5), 0),  # wrong number of sections
        ((4, 2, 6), 0),  # wrong width
        ((4, 3, 5), 8),  # past the last row
        ((4, 2, 5), -1),  # negative start
        ((2, 5), 0),  # an image for a volume
        ((1, 4, 2, 5), 0),  # too many dimensions
    ],
)
def test_rows_that_do_not_fit_are_refused_naming_the_file(tmp_path: Path, shape, start):
    path = tmp_path / "bad.mrc"
    with MrcWriter(path, (4, 10, 5), 1.0) as out:
        with pytest.raises(FormatError) as err:
            out.write_rows(np.zeros(shape, dtype=np.float32), start)
        message = str(err.value)
        assert message.startswith(f"{path}: ") and "\n" not in message
        assert str(shape) in message and "(4, 10, 5)" in message


def test_values_the_mode_cannot_hold_are_refused(tmp_path: Path):
    path = tmp_path / "int.mrc"
    with MrcWriter(path, (2, 4, 3), 1.0, mode=1) as out:
        with pytest.raises(FormatError, match=str(path)):
            out.write_rows(np.full((2, 1, 3), 1e6, dtype=np.float32), 0)
        out.write_rows(np.ones((2, 4, 3), dtype=np.float32), 0)
    with pytest.raises(FormatError, match="already closed"):
        out.write_rows(np.ones((2, 1, 3), dtype=np.float32), 0)


def test_an_exception_inside_the_block_leaves_no_file_and_keeps_the_old_one(tmp_path: Path):
    fresh = tmp_path / "fresh.mrc"
    with pytest.raises(RuntimeError, match="reconstruction failed"):
        with MrcWriter(fresh, (3, 8, 4), 1.0) as out:
            out.write_rows(np.ones((3, 4, 4), dtype=np.float32), 0)
            raise RuntimeError("reconstruction failed")
    assert list(tmp_path.iterdir()) == []

    old = tmp_path / "old.mrc"
    old.write_bytes(b"previous tomogram")
    with pytest.raises(FormatError):
        with MrcWriter(old, (3, 8, 4), 1.0) as out:
            out.write_rows(np.ones((3, 4, 4), dtype=np.float32), 0)
            out.write_rows(np.ones((3, 4, 5), dtype=np.float32), 4)
    assert old.read_bytes() == b"previous tomogram"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.mrc"]


def test_zero_rows_write_nothing_or_are_refused_naming_the_file(tmp_path: Path):
    path = tmp_path / "empty_rows.mrc"
    volume = np.ones((2, 4, 3), dtype=np.float32)
    with MrcWriter(path, volume.shape, 1.0) as out:
        try:
            out.write_rows(np.zeros((2, 0, 3), dtype=np.float32), 1)
        except FormatError as exc:
            assert str(exc).startswith(f"{path}: ")
        out.write_rows(volume, 0)
    assert_header_describes(path, volume)
