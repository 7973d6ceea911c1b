"""RELION 5 tomograms.star and optimisation_set.star on the real EMPIAR-10164 run; broken files; STAR fuzzing."""

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tomoforge.io import FormatError, format_for
from tomoforge.io.relion5 import (
    RelionOptimisationSet,
    read_optimisation_set,
    read_relion_particles,
    read_relion_tilt_series_table,
    read_tomograms_star,
    write_optimisation_set,
    write_tomograms_star,
)

DATA = Path(__file__).resolve().parents[1] / "data" / "relion5_empiar10164"


def assert_one_sentence(err: pytest.ExceptionInfo, path: Path) -> str:
    message = str(err.value)
    assert message.startswith(str(path) + ": ")
    assert "\n" not in message
    assert "Traceback" not in message
    return message


def test_real_tomograms_star_reads_every_column():
    tomos = read_tomograms_star(DATA / "tomograms.star")
    assert list(tomos) == ["TS_01", "TS_03", "TS_43", "TS_45", "TS_54"]
    ts01 = tomos["TS_01"]
    assert (ts01.voltage_kv, ts01.spherical_aberration_mm, ts01.amplitude_contrast) == (300.0, 2.7, 0.1)
    assert ts01.original_pixel_size_angstrom == 0.675
    assert ts01.tilt_series_pixel_size_angstrom == 1.35
    assert ts01.handedness == -1.0
    assert ts01.size_xyz_px == (4000, 4000, 2000)
    assert ts01.tilt_series_star_file == Path("Tomograms/job006/tilt_series/TS_01.star")
    # 7.407407 binning of 1.35 Å pixels: a 10 Å tomogram of 540 × 540 × 270 voxels
    assert ts01.tomogram_voxel_size_angstrom == pytest.approx(10.0, abs=1e-5)
    assert ts01.tomogram_shape_zyx == (270, 540, 540)
    assert ts01.extra["rlnTomoReconstructedTomogramHalf1"] == "Tomograms/job006/tomograms/rec_TS_01_half1.mrc"
    assert list(ts01.extra) == [
        "rlnEtomoDirectiveFile",
        "rlnTomoReconstructedTomogramHalf1",
        "rlnTomoReconstructedTomogramHalf2",
    ]


def test_tomograms_star_round_trip_is_lossless(tmp_path: Path):
    tomos = read_tomograms_star(DATA / "tomograms.star")
    out = write_tomograms_star(tomos, tmp_path / "tomograms.star")
    assert read_tomograms_star(out) == tomos
    assert out.read_text().startswith("# version 50001")
    assert out.stat().st_mode & 0o777 != 0o600  # not the private mode of the temporary file
    assert [p.name for p in tmp_path.iterdir()] == ["tomograms.star"]


def test_optimisation_set_round_trip(tmp_path: Path):
    path = tmp_path / "optimisation_set.star"
    path.write_text(
        "\n# version 50001\n\ndata_\n\n_rlnTomoParticlesFile   Extract/job010/particles.star\n"
        "_rlnTomoTomogramsFile   Tomograms/job006/tomograms.star\n"
        "_rlnTomoReferenceMap1File  Refine3D/job011/run_half1_class001_unfil.mrc\n\n"
    )
    opt = read_optimisation_set(path)
    assert opt.particles_file == Path("Extract/job010/particles.star")
    assert opt.tomograms_file == Path("Tomograms/job006/tomograms.star")
    assert opt.other == {"rlnTomoReferenceMap1File": "Refine3D/job011/run_half1_class001_unfil.mrc"}
    again = read_optimisation_set(write_optimisation_set(opt, tmp_path / "copy_optimisation_set.star"))
    assert again == opt
    assert format_for(path).name == "relion5-optimisation-set"


def test_optimisation_set_without_file_names_is_refused(tmp_path: Path):
    path = tmp_path / "optimisation_set.star"
    write_optimisation_set(RelionOptimisationSet(other={"rlnTomoTrajectoriesFile": "t.star"}), path)
    with pytest.raises(FormatError) as err:
        read_optimisation_set(path)
    assert "rlnTomoParticlesFile" in assert_one_sentence(err, path)


def test_missing_required_column_names_it(tmp_path: Path):
    text = (DATA / "tomograms.star").read_text().replace("_rlnVoltage #2", "_rlnSomethingElse #2")
    path = tmp_path / "tomograms.star"
    path.write_text(text)
    with pytest.raises(FormatError) as err:
        read_tomograms_star(path)
    assert "rlnVoltage" in assert_one_sentence(err, path)


def test_non_numeric_value_is_a_format_error(tmp_path: Path):
    text = (DATA / "tomograms.star").read_text().replace("300.000000", "three-hundred", 1)
    path = tmp_path / "tomograms.star"
    path.write_text(text)
    with pytest.raises(FormatError) as err:
        read_tomograms_star(path)
    assert "rlnVoltage" in assert_one_sentence(err, path)


@pytest.mark.parametrize(
    "content", [b"", b"\x00\x01\x02 binary \xff\xfe", b"just some words\n", b"data_\nloop_\n"]
)
def test_garbage_files_are_one_sentence_errors(tmp_path: Path, content: bytes):
    path = tmp_path / "tomograms.star"
    path.write_bytes(content)
    with pytest.raises(FormatError) as err:
        read_tomograms_star(path)
    assert_one_sentence(err, path)


def test_missing_file_is_a_format_error(tmp_path: Path):
    path = tmp_path / "absent.star"
    with pytest.raises(FormatError) as err:
        read_tomograms_star(path)
    assert "no such file" in assert_one_sentence(err, path)


_STAR_WORDS = st.sampled_from(
    ["data_", "data_global", "data_particles", "loop_", "_rlnTomoName", "_rlnVoltage", "_rlnCenteredCoordinateXAngst",
     "#1", "TS_01", "300.0", "-1", "nan", "'", '"', "\n", "\t", " ", "1e400", "x"]
)  # fmt: skip


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(words=st.lists(_STAR_WORDS, max_size=40), noise=st.text(max_size=30))
def test_fuzzed_star_text_parses_or_raises_format_error(tmp_path: Path, words: list[str], noise: str):
    path = tmp_path / "fuzz.star"
    path.write_text(" ".join(words) + noise, encoding="utf-8", errors="surrogateescape")
    for reader in (
        read_tomograms_star,
        read_relion_particles,
        read_optimisation_set,
        read_relion_tilt_series_table,
    ):
        try:
            reader(path)
        except FormatError as exc:
            assert "\n" not in str(exc)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(min_value=0, max_value=2135), junk=st.text(max_size=8))
def test_mutated_real_tomograms_star_parses_or_raises_format_error(tmp_path: Path, cut: int, junk: str):
    text = (DATA / "tomograms.star").read_text()
    path = tmp_path / "mutated.star"
    path.write_text(text[:cut] + junk + text[cut + len(junk) :], encoding="utf-8", errors="surrogateescape")
    try:
        read_tomograms_star(path)
    except FormatError as exc:
        assert "\n" not in str(exc)
