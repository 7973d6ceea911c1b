"""Header fuzz: random files, and valid files with header bytes overwritten, either read or raise FormatError."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tomoforge.io import FormatError
from tomoforge.io.movies import open_movie
from tomoforge.io.mrc import check_mrc_finite, read_mrc, read_mrc_array, write_mrc

_counter = itertools.count()
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _valid_file(tmp_path: Path) -> bytes:
    path = tmp_path / "valid.mrc"
    if not path.exists():
        data = np.arange(3 * 4 * 5, dtype=np.float32).reshape(3, 4, 5)
        write_mrc(data, path, (1.0, 2.0, 3.0), origin_angstrom=(4.0, 5.0, 6.0))
    return path.read_bytes()


def _read_everything(path: Path) -> None:
    """Every reader on the file must either succeed (and give its data) or raise FormatError."""
    try:
        vol = read_mrc(path)
    except FormatError as err:
        assert str(err).startswith(str(path)) and "\n" not in str(err)
        return
    assert vol.data.ndim in (2, 3)
    assert all(np.isfinite(vol.voxel_size_angstrom)) and all(np.isfinite(vol.origin_angstrom))
    np.asarray(vol.data).sum()
    read_mrc_array(path, (0, 1))
    try:
        check_mrc_finite(vol)
    except FormatError:
        pass
    with open_movie(path) as movie:
        assert movie.read_frames(0, 1).dtype == np.float32


@FUZZ
@given(st.binary(min_size=0, max_size=3000))
def test_random_bytes_read_or_raise_format_error(tmp_path: Path, blob: bytes):
    path = tmp_path / f"random_{next(_counter)}.mrc"
    path.write_bytes(blob)
    _read_everything(path)


@FUZZ
@given(
    st.lists(st.tuples(st.integers(0, 1023), st.integers(0, 255)), min_size=1, max_size=12),
    st.booleans(),
)
def test_valid_file_with_header_bytes_changed(
    tmp_path: Path, edits: list[tuple[int, int]], keep_map_id: bool
):
    raw = bytearray(_valid_file(tmp_path))
    for offset, value in edits:
        raw[offset] = value
    if keep_map_id:  # also reach the checks behind the identifier and the machine stamp
        raw[208:214] = b"MAP DD"
    path = tmp_path / f"mutated_{next(_counter)}.mrc"
    path.write_bytes(bytes(raw))
    _read_everything(path)


@FUZZ
@given(
    st.sampled_from([0, 4, 8, 12, 28, 32, 36, 40, 44, 48, 64, 68, 72, 88, 92, 196, 200, 204]),
    st.integers(-(2**31), 2**31 - 1),
)
def test_valid_file_with_an_integer_field_changed(tmp_path: Path, offset: int, value: int):
    raw = bytearray(_valid_file(tmp_path))
    raw[offset : offset + 4] = np.array([value], "<i4").tobytes()
    path = tmp_path / f"field_{next(_counter)}.mrc"
    path.write_bytes(bytes(raw))
    _read_everything(path)
