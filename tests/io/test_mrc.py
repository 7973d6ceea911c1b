"""MRC reading and writing: real EMDB maps, every mode, lazy reads, streaming writes and clear errors."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import mrcfile
import numpy as np
import pytest

from tomoforge.io import FormatError, format_for, read, write
from tomoforge.io.mrc import (
    MrcVolume,
    MrcWriter,
    check_mrc_finite,
    mrc_mode_for,
    read_mrc,
    read_mrc_array,
    write_mrc,
)

MAPS = Path(__file__).parent.parent / "data" / "maps"


def assert_one_sentence_about(err: pytest.ExceptionInfo[FormatError], path: Path, *words: str) -> None:
    message = str(err.value)
    assert message.startswith(str(path) + ": ")
    assert "\n" not in message
    for word in words:
        assert word in message, message


# --- real maps ---------------------------------------------------------------------------------------------


def test_emd_3197_reads_as_stored_and_round_trips(tmp_path: Path):
    vol = read_mrc(MAPS / "EMD-3197.map")
    assert isinstance(vol.data, np.memmap)
    assert vol.shape == (20, 20, 20) and vol.mode == 2 and not vol.is_stack
    assert vol.voxel_size_angstrom == pytest.approx((11.4, 11.4, 11.4))
    assert vol.pixel_size_angstrom == pytest.approx(11.4)
    assert vol.origin_angstrom == (0.0, 0.0, 0.0)
    with mrcfile.open(MAPS / "EMD-3197.map") as mrc:
        np.testing.assert_array_equal(vol.data, mrc.data)

    out = write_mrc(vol, tmp_path / "copy.mrc")
    again = read_mrc(out)
    np.testing.assert_array_equal(again.data, vol.data)
    assert again.voxel_size_angstrom == pytest.approx(vol.voxel_size_angstrom, rel=1e-6)
    assert (again.origin_angstrom, again.mode, again.is_stack) == (vol.origin_angstrom, 2, False)
    with mrcfile.open(out) as mrc:  # header statistics describe the data
        assert mrc.header.dmin == pytest.approx(vol.data.min())
        assert mrc.header.dmax == pytest.approx(vol.data.max())
        assert mrc.header.dmean == pytest.approx(vol.data.mean(dtype=np.float64), rel=1e-5)
        assert mrc.header.rms == pytest.approx(vol.data.std(dtype=np.float64), rel=1e-5)


def test_emd_3001_axis_order_is_brought_to_zyx_and_round_trips(tmp_path: Path):
    # EMD-3001 stores columns along Z, rows along X, sections along Y (mapc, mapr, maps = 3, 1, 2)
    vol = read_mrc(MAPS / "EMD-3001.map")
    assert vol.shape == (73, 25, 43)
    assert vol.voxel_size_angstrom == pytest.approx((0.44825, 0.3925, 0.45875))
    with mrcfile.open(MAPS / "EMD-3001.map") as mrc:
        raw = np.array(mrc.data)  # raw[section=y, row=x, column=z]
        assert (mrc.header.mapc, mrc.header.mapr, mrc.header.maps) == (3, 1, 2)
    np.testing.assert_array_equal(vol.data, raw.transpose(2, 0, 1))
    with pytest.raises(FormatError, match="unequal voxel sizes"):
        _ = vol.pixel_size_angstrom

    again = read_mrc(write_mrc(vol, tmp_path / "std.mrc"))
    np.testing.assert_array_equal(again.data, vol.data)
    # the header stores the cell (voxel size × grid) in float32: the voxel size survives to float32 precision
    assert again.voxel_size_angstrom == pytest.approx(vol.voxel_size_angstrom, rel=1e-6)
    with mrcfile.open(tmp_path / "std.mrc") as mrc:
        assert (mrc.header.mapc, mrc.header.mapr, mrc.header.maps) == (1, 2, 3)
        assert (mrc.header.nx, mrc.header.ny, mrc.header.nz) == (43, 25, 73)


def test_registry_routes_mrc_files(tmp_path: Path):
    assert format_for(tmp_path / "a.mrc").name == "mrc"
    assert format_for(tmp_path / "a.mrcs", kind="movie").name == "mrc-movie"
    assert format_for(tmp_path / "a.map", kind="volume").name == "mrc-volume"
    vol = read(MAPS / "EMD-3197.map")
    write(vol, tmp_path / "b.mrc")
    np.testing.assert_array_equal(read(tmp_path / "b.mrc").data, vol.data)


# --- modes and round trips ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dtype", "mode"),
    [(np.int8, 0), (np.int16, 1), (np.float32, 2), (np.uint16, 6), (np.float16, 12)],
)
@pytest.mark.parametrize("shape", [(7, 5), (3, 7, 5)])
def test_round_trip_every_mode(tmp_path: Path, dtype: type, mode: int, shape: tuple[int, ...]):
    rng = np.random.default_rng(mode)
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None
    if info is None:
        data = rng.normal(size=shape).astype(dtype)
    else:
        data = rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)
    path = write_mrc(data, tmp_path / "x.mrc", (1.5, 2.0, 2.5), origin_angstrom=(-10.0, 20.0, 30.5))
    vol = read_mrc(path)
    assert vol.mode == mode and vol.data.dtype == dtype
    np.testing.assert_array_equal(vol.data, data)
    assert vol.voxel_size_angstrom == (1.5, 2.0, 2.5)
    assert vol.origin_angstrom == (-10.0, 20.0, 30.5)
    np.testing.assert_array_equal(read_mrc_array(path), data)


def test_stack_flag_round_trips(tmp_path: Path):
    data = np.zeros((4, 6, 8), np.float32)
    assert read_mrc(write_mrc(data, tmp_path / "s.mrcs", 2.0, is_stack=True)).is_stack
    assert not read_mrc(write_mrc(data, tmp_path / "v.mrc", 2.0)).is_stack
    stack = read_mrc(tmp_path / "s.mrcs")
    assert stack.voxel_size_angstrom == (2.0, 2.0, 2.0) and stack.pixel_size_angstrom == 2.0


@pytest.mark.parametrize(
    ("values", "mode"),
    [
        (np.array([[0, 127]], np.uint8), 0),
        (np.array([[0, 200]], np.uint8), 6),
        (np.array([[0, 3]], np.int64), 0),
        (np.array([[-300, 3]], np.int32), 1),
        (np.array([[0, 40000]], np.int64), 6),
        (np.array([[0.5, 1.5]], np.float64), 2),
        (np.array([[True, False]]), 0),
    ],
)
def test_mode_is_chosen_without_loss(tmp_path: Path, values: np.ndarray, mode: int):
    assert mrc_mode_for(values) == mode
    vol = read_mrc(write_mrc(values, tmp_path / "m.mrc", 1.0))
    assert vol.mode == mode
    np.testing.assert_array_equal(vol.data, values.astype(np.float64))


def test_explicit_mode_rounds_and_refuses_what_does_not_fit(tmp_path: Path):
    path = tmp_path / "m.mrc"
    np.testing.assert_array_equal(
        read_mrc(write_mrc(np.array([[1.4, -2.6]]), path, 1.0, mode=1)).data, [[1, -3]]
    )
    with pytest.raises(FormatError) as err:
        write_mrc(np.array([[0, 300]], np.int32), path, 1.0, mode=0)
    assert_one_sentence_about(err, path, "do not fit MRC mode 0")
    with pytest.raises(FormatError) as err:
        write_mrc(np.array([[0, 1e6]], np.int64), path, 1.0)
    assert_one_sentence_about(err, path, "fit no MRC integer mode")


def test_complex_data_are_refused_clearly(tmp_path: Path):
    with pytest.raises(FormatError) as err:
        write_mrc(np.ones((4, 4), np.complex64), tmp_path / "c.mrc", 1.0)
    assert_one_sentence_about(err, tmp_path / "c.mrc", "complex data cannot be written")
    assert not (tmp_path / "c.mrc").exists()


def test_big_endian_files_read_correctly(tmp_path: Path):
    data = np.arange(24, dtype=">f4").reshape(2, 3, 4)
    with mrcfile.new(tmp_path / "be.mrc") as mrc:
        mrc.set_data(data)
    assert read_mrc(tmp_path / "be.mrc").data.dtype.byteorder == ">"
    section = read_mrc_array(tmp_path / "be.mrc", (1, 2))
    assert section.dtype == np.float32 and section.dtype.isnative
    np.testing.assert_array_equal(section, data[1:2])


def test_imod_unsigned_bytes_are_read_unsigned(tmp_path: Path):
    path = write_mrc(np.array([[0, 100], [27, 5]], np.int8), tmp_path / "u.mrc", 1.0)
    raw = bytearray(path.read_bytes())
    raw[1024 + 1] = 0xC8  # byte 0xc8: 200 unsigned, -56 signed
    raw[152:160] = np.array([1146047817, 0], "<i4").tobytes()  # IMOD stamp, flags: bytes unsigned
    path.write_bytes(bytes(raw))
    vol = read_mrc(path)
    assert vol.data.dtype == np.uint8 and vol.data[0, 1] == 200
    raw[156:160] = np.array([1], "<i4").tobytes()  # flag bit 0: signed bytes
    path.write_bytes(bytes(raw))
    assert read_mrc(path).data[0, 1] == -56


# --- lazy reading ------------------------------------------------------------------------------------------


def test_read_is_lazy_and_section_ranges_read_only_what_is_asked(tmp_path: Path):
    path = tmp_path / "big.mrc"  # 256 MiB, sparse on disk: only two sections hold data
    with mrcfile.new_mmap(path, (64, 1024, 1024), mrc_mode=2) as mrc:
        mrc.data[20] = 1.5
        mrc.data[21, 3, 4] = 7.0
        mrc.voxel_size = 3.0
    tracemalloc.start()
    try:
        vol = read_mrc(path)
        part = read_mrc_array(path, slice(20, 22))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert isinstance(vol.data, np.memmap) and vol.shape == (64, 1024, 1024)
    assert peak < 12 * 2**20  # the two requested sections (8 MiB) and no more
    assert part.shape == (2, 1024, 1024)
    assert part[0].min() == part[0].max() == 1.5
    assert part[1, 3, 4] == 7.0 and part[1].sum() == 7.0
    assert float(vol.data[21, 3, 4]) == 7.0


def test_single_image_section_range(tmp_path: Path):
    image = np.arange(12, dtype=np.float32).reshape(3, 4)
    path = write_mrc(image, tmp_path / "i.mrc", 1.0)
    assert read_mrc(path).shape == (3, 4)
    np.testing.assert_array_equal(read_mrc_array(path, (0, 1)), image[np.newaxis])


# --- streaming writer --------------------------------------------------------------------------------------


def test_writer_writes_section_ranges_and_header_statistics(tmp_path: Path):
    rng = np.random.default_rng(0)
    volume = rng.normal(size=(10, 6, 8)).astype(np.float32)
    with MrcWriter(tmp_path / "w.mrc", volume.shape, 4.0, (1.0, 2.0, 3.0)) as out:
        for start in (6, 0, 3):  # any order
            out.write(volume[start : start + 4 if start == 6 else start + 3], start)
        assert not (tmp_path / "w.mrc").exists()  # only a temporary file until closed
    vol = read_mrc(tmp_path / "w.mrc")
    np.testing.assert_array_equal(vol.data, volume)
    assert vol.origin_angstrom == (1.0, 2.0, 3.0) and vol.voxel_size_angstrom == (4.0, 4.0, 4.0)
    with mrcfile.open(tmp_path / "w.mrc") as mrc:
        assert mrc.header.dmean == pytest.approx(volume.mean(dtype=np.float64), abs=1e-6)
        assert mrc.header.rms == pytest.approx(volume.std(dtype=np.float64), rel=1e-5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.mrc"]


def test_writer_failure_leaves_the_previous_file_intact(tmp_path: Path):
    target = write_mrc(np.ones((2, 3, 3), np.float32), tmp_path / "keep.mrc", 1.0)
    before = target.read_bytes()
    with pytest.raises(RuntimeError, match="reconstruction failed"):
        with MrcWriter(target, (5, 3, 3), 1.0) as out:
            out.write(np.zeros((2, 3, 3)), 0)
            raise RuntimeError("reconstruction failed")
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.mrc"]

    fresh = tmp_path / "new.mrc"
    writer = MrcWriter(fresh, (2, 3, 3), 1.0)
    writer.write(np.zeros((3, 3)), 1)
    writer.abort()
    assert not fresh.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["keep.mrc"]


def test_writer_refuses_data_that_do_not_fit(tmp_path: Path):
    with MrcWriter(tmp_path / "w.mrc", (4, 3, 3), 1.0, mode=6) as out:
        with pytest.raises(FormatError) as err:
            out.write(np.zeros((2, 3, 3)), 3)
        assert_one_sentence_about(err, tmp_path / "w.mrc", "cannot take data of shape")
        with pytest.raises(FormatError, match="do not fit MRC mode 6"):
            out.write(-np.ones((1, 3, 3)), 0)
    with pytest.raises(FormatError) as err:
        write_mrc(np.zeros((2, 2)), tmp_path / "missing" / "x.mrc", 1.0)
    assert_one_sentence_about(err, tmp_path / "missing" / "x.mrc", "cannot be written")
    with pytest.raises(FormatError, match="without a voxel size"):
        write_mrc(np.zeros((2, 2)), tmp_path / "x.mrc")


# --- broken files ------------------------------------------------------------------------------------------


def test_truncated_file(tmp_path: Path):
    path = write_mrc(np.ones((4, 8, 8), np.float32), tmp_path / "t.mrc", 1.0)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(FormatError) as err:
        read_mrc(path)
    assert_one_sentence_about(err, path, "is truncated", "8×8×4")


def test_garbage_short_and_missing_files(tmp_path: Path):
    garbage = tmp_path / "garbage.mrc"
    garbage.write_bytes(np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    with pytest.raises(FormatError) as err:
        read_mrc(garbage)
    assert_one_sentence_about(err, garbage, "not an MRC file")
    short = tmp_path / "short.mrc"
    short.write_text("hello")
    with pytest.raises(FormatError) as err:
        read_mrc(short)
    assert_one_sentence_about(err, short, "shorter than the 1024-byte MRC header")
    with pytest.raises(FormatError) as err:
        read_mrc(tmp_path / "none.mrc")
    assert_one_sentence_about(err, tmp_path / "none.mrc", "file not found")


@pytest.mark.parametrize(
    ("offset", "value", "words"),
    [
        (12, 4, "mode 4 (complex 32-bit floats)"),
        (12, 101, "packed 4-bit"),
        (0, -5, "non-positive dimensions"),
        (64, 7, "axis order"),
        (88, 401, "stack of volumes"),
        (92, -8, "negative extended-header size"),
    ],
)
def test_corrupt_header_fields(tmp_path: Path, offset: int, value: int, words: str):
    path = write_mrc(np.ones((2, 3, 4), np.float32), tmp_path / "h.mrc", 1.0)
    raw = bytearray(path.read_bytes())
    raw[offset : offset + 4] = np.array([value], "<i4").tobytes()
    path.write_bytes(bytes(raw))
    with pytest.raises(FormatError) as err:
        read_mrc(path)
    assert_one_sentence_about(err, path, words)


def test_nan_check_names_the_section(tmp_path: Path):
    data = np.zeros((6, 4, 4), np.float32)
    data[3, 1, 2] = np.nan
    data[5, 0, 0] = np.inf
    path = write_mrc(data, tmp_path / "nan.mrc", 1.0)
    vol = read_mrc(path)  # no scan unless asked
    with pytest.raises(FormatError) as err:
        read_mrc(path, check_finite=True)
    assert_one_sentence_about(err, path, "NaN or infinite", "section 3")
    with pytest.raises(FormatError, match="section 3"):
        check_mrc_finite(vol, chunk_bytes=16)  # one section per chunk
    check_mrc_finite(write_mrc(np.zeros((2, 2), np.int16), tmp_path / "int.mrc", 1.0))
    data[3, 1, 2] = 0
    with pytest.raises(FormatError, match="section 5"):
        check_mrc_finite(write_mrc(data, tmp_path / "inf.mrc", 1.0))


def test_mrc_volume_is_frozen():
    vol = read_mrc(MAPS / "EMD-3197.map")
    assert isinstance(vol, MrcVolume)
    with pytest.raises(AttributeError):
        vol.mode = 1  # type: ignore[misc]
    assert not vol.data.flags.writeable
