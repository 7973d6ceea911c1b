"""Movies: lazy MRC and TIFF frame reading, chunked iteration, MotionCor2 gain orientation and defect repair."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from tomoforge.io import FormatError
from tomoforge.io.movies import (
    TIFF_MISSING,
    apply_defects,
    apply_gain,
    gain_options_from_motioncor2,
    open_movie,
    transform_gain,
    write_movie_mrc,
)
from tomoforge.io.mrc import read_mrc


def counts(shape: tuple[int, ...], dtype: type = np.int64, lam: float = 2.0, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).poisson(lam, size=shape).astype(dtype)


# --- MRC movies --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frames", "mode"),
    [
        (counts((7, 6, 5), np.uint8), 0),
        (counts((7, 6, 5), np.int64), 0),
        (counts((7, 6, 5), np.int64, lam=300.0), 6),
        (counts((7, 6, 5), np.uint16), 6),
        (counts((7, 6, 5), np.int16) - 1000, 1),
        (np.random.default_rng(1).normal(size=(7, 6, 5)).astype(np.float32), 2),
        (np.random.default_rng(2).normal(size=(7, 6, 5)).astype(np.float16), 12),
    ],
)
def test_mrc_movie_round_trip_and_chunks(tmp_path: Path, frames: np.ndarray, mode: int):
    path = write_movie_mrc(frames, tmp_path / "movie.mrcs", pixel_size_angstrom=0.675)
    assert read_mrc(path).mode == mode and read_mrc(path).is_stack
    with open_movie(path) as movie:
        assert movie.shape == (7, 6, 5) and len(movie) == 7
        assert movie.pixel_size_angstrom == pytest.approx(0.675)
        full = movie.read_frames()
        assert full.dtype == np.float32
        np.testing.assert_array_equal(full, frames.astype(np.float32))
        np.testing.assert_array_equal(movie.read_frames(2, 5), full[2:5])
        chunks = list(movie.iter_chunks(3))
        assert [start for start, _ in chunks] == [0, 3, 6]
        assert [len(c) for _, c in chunks] == [3, 3, 1]
        np.testing.assert_array_equal(np.concatenate([c for _, c in chunks]), full)


def test_single_image_mrc_is_a_one_frame_movie(tmp_path: Path):
    from tomoforge.io.mrc import write_mrc

    image = np.arange(24, dtype=np.float32).reshape(4, 6)
    path = write_mrc(image, tmp_path / "one.mrc", 0.0)
    movie = open_movie(path)
    assert movie.shape == (1, 4, 6) and movie.pixel_size_angstrom is None
    np.testing.assert_array_equal(movie.read_frames(), image[np.newaxis])


def test_frame_ranges_are_checked(tmp_path: Path):
    movie = open_movie(write_movie_mrc(counts((4, 3, 3)), tmp_path / "m.mrc", 1.0))
    assert movie.read_frames(2, 2).shape == (0, 3, 3)
    with pytest.raises(IndexError, match="outside 0 to 4"):
        movie.read_frames(3, 5)
    with pytest.raises(ValueError, match="at least 1"):
        next(movie.iter_chunks(0))


def test_movie_writer_refuses_what_is_not_a_movie(tmp_path: Path):
    with pytest.raises(FormatError, match="a movie is"):
        write_movie_mrc(np.zeros((4, 4)), tmp_path / "m.mrc", 1.0)
    with pytest.raises(FormatError, match="complex"):
        write_movie_mrc(np.zeros((2, 4, 4), np.complex64), tmp_path / "m.mrc", 1.0)


def test_unknown_and_eer_movies_are_refused(tmp_path: Path):
    for name, words in (("a.eer", "EER movie"), ("a.avi", "not a known movie type")):
        with pytest.raises(FormatError) as err:
            open_movie(tmp_path / name)
        assert str(err.value).startswith(str(tmp_path / name)) and words in str(err.value)


# --- TIFF movies -------------------------------------------------------------------------------------------


def test_tiff_movie_pages_are_frames_flipped_along_y(tmp_path: Path):
    frames = counts((5, 8, 6), np.uint16)
    path = tmp_path / "movie.tif"
    with tifffile.TiffWriter(path) as tif:  # one page per frame, as SerialEM and EPU write them
        for frame in frames:
            tif.write(frame, contiguous=False, metadata=None)
    with open_movie(path) as movie:
        assert movie.shape == (5, 8, 6) and movie.dtype == np.uint16
        assert movie.pixel_size_angstrom is None
        full = movie.read_frames()
        # TIFF row 0 is the top of the image, MRC row 0 the bottom: flipped like IMOD, MotionCor2 and RELION
        np.testing.assert_array_equal(full, frames[:, ::-1, :].astype(np.float32))
        np.testing.assert_array_equal(np.concatenate([c for _, c in movie.iter_chunks(2)]), full)
        np.testing.assert_array_equal(movie.read_frames(4, 5)[0], frames[4, ::-1])


def test_tiff_written_as_one_array_and_compressed(tmp_path: Path):
    frames = counts((4, 5, 7), np.uint8)
    path = tmp_path / "movie.tiff"
    tifffile.imwrite(path, frames, photometric="minisblack", compression="zlib")
    np.testing.assert_array_equal(open_movie(path).read_frames(1, 3), frames[1:3, ::-1].astype(np.float32))


def test_bad_tiff_files(tmp_path: Path):
    garbage = tmp_path / "garbage.tif"
    garbage.write_bytes(b"not a tiff at all" * 10)
    with pytest.raises(FormatError) as err:
        open_movie(garbage)
    assert str(err.value).startswith(str(garbage)) and "\n" not in str(err.value)
    mixed = tmp_path / "mixed.tif"
    with tifffile.TiffWriter(mixed) as tif:
        tif.write(np.zeros((4, 4), np.uint8), metadata=None)
        tif.write(np.zeros((3, 3), np.uint8), metadata=None)
    with pytest.raises(FormatError, match="not one 2D frame of the same size"):
        open_movie(mixed)


def test_missing_tifffile_is_a_clear_import_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "tifffile", None)
    with pytest.raises(ImportError) as err:
        open_movie(tmp_path / "movie.tif")
    assert str(err.value) == TIFF_MISSING
    assert "pip install tomoforge[tiff]" in TIFF_MISSING


# --- gain references ---------------------------------------------------------------------------------------

# A 2×3 gain. Displayed with y up (row 0 at the bottom, as IMOD shows images):
#     4 5 6
#     1 2 3
GAIN = np.array([[1, 2, 3], [4, 5, 6]], dtype=np.float32)


@pytest.mark.parametrize(
    ("rotation_deg", "flip", "expected"),
    [
        (0, None, [[1, 2, 3], [4, 5, 6]]),
        # 90° counter-clockwise with y up: the top row 4 5 6 becomes the left column, read upwards
        #     6 3
        #     5 2
        #     4 1
        (90, None, [[4, 1], [5, 2], [6, 3]]),
        (180, None, [[6, 5, 4], [3, 2, 1]]),
        (270, None, [[3, 6], [2, 5], [1, 4]]),
        (0, "y", [[4, 5, 6], [1, 2, 3]]),  # -FlipGain 1: upside down
        (0, "x", [[3, 2, 1], [6, 5, 4]]),  # -FlipGain 2: left to right
        (90, "x", [[1, 4], [2, 5], [3, 6]]),  # rotation first, then the flip
        (90, "y", [[6, 3], [5, 2], [4, 1]]),
    ],
)
def test_gain_rotation_and_flip(rotation_deg: int, flip: str | None, expected: list[list[int]]):
    np.testing.assert_array_equal(transform_gain(GAIN, rotation_deg, flip), expected)  # type: ignore[arg-type]


def test_rot_gain_1_matches_relions_rotate90_formula():
    # RELION's ImageOp::rotate90 ("equivalent to MotionCor2's -RotGain 1"): dest(y=x, x=ny-1-y) = src(y, x)
    src = np.random.default_rng(3).normal(size=(4, 7))
    dest = np.empty((7, 4))
    for y in range(4):
        for x in range(7):
            dest[x, 4 - 1 - y] = src[y, x]
    rotation_deg, flip = gain_options_from_motioncor2(rot_gain=1, flip_gain=0)
    np.testing.assert_array_equal(transform_gain(src, rotation_deg, flip), dest)
    assert gain_options_from_motioncor2(3, 2) == (270, "x")
    assert gain_options_from_motioncor2(2, 1) == (180, "y")
    with pytest.raises(ValueError, match="RotGain"):
        gain_options_from_motioncor2(4, 0)


def test_apply_gain_multiplies_rotated_gain():
    frames = np.arange(2 * 3 * 2, dtype=np.uint16).reshape(2, 3, 2)
    out = apply_gain(frames, GAIN, rotation_deg=270)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, frames * np.array([[3, 6], [2, 5], [1, 4]], np.float32))
    with pytest.raises(ValueError, match="does not match frames"):
        apply_gain(frames, GAIN)
    with pytest.raises(ValueError, match="0, 90, 180 or 270"):
        transform_gain(GAIN, 45)


# --- defects -----------------------------------------------------------------------------------------------


def test_defect_pixels_take_the_median_of_good_neighbours():
    ramp = np.add.outer(np.arange(12.0) * 3, np.arange(10.0)).astype(np.float32)  # linear in y and x
    frames = np.stack([ramp, 2 * ramp])
    mask = np.zeros(ramp.shape, bool)
    mask[5, 4] = mask[0, 0] = True  # a hot pixel, and one in the corner
    hot = frames.copy()
    hot[:, mask] = 1e6
    fixed = apply_defects(hot, mask)
    np.testing.assert_allclose(fixed[:, 5, 4], [ramp[5, 4], 2 * ramp[5, 4]])  # symmetric window on a ramp
    np.testing.assert_array_equal(fixed[:, ~mask], frames[:, ~mask])  # good pixels untouched
    assert fixed[0, 0, 0] == np.median([ramp[0, 1], ramp[1, 0], ramp[1, 1]])
    assert np.all(hot[:, mask] == 1e6)  # the input is not changed


def test_defect_columns_wider_than_one_pixel_are_filled_from_their_sides():
    rows = np.repeat((np.arange(9.0) * 2)[:, None], 11, axis=1).astype(np.float32)  # depends on y only
    mask = np.zeros(rows.shape, bool)
    mask[:, 4:7] = True  # a 3-pixel-wide defect column: its middle needs a radius of 2
    bad = np.where(mask, np.nan, rows)
    for method in ("median", "mean"):
        fixed = apply_defects(bad, mask, method=method)
        assert fixed.shape == rows.shape and np.all(np.isfinite(fixed))
        np.testing.assert_allclose(fixed[2:-2], rows[2:-2])  # two rows from the edges the window is symmetric


def test_defects_that_cannot_be_filled():
    with pytest.raises(ValueError, match="no good pixel"):
        apply_defects(np.zeros((3, 3)), np.ones((3, 3), bool))
    with pytest.raises(ValueError, match="does not match"):
        apply_defects(np.zeros((3, 3)), np.ones((2, 3), bool))
