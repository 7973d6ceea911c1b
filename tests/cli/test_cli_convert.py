"""``tomoforge convert``: end to end on the real files of tests/data, help texts and one-sentence errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import starfile

DATA = Path(__file__).resolve().parents[1] / "data"
RELION = DATA / "relion5_empiar10164"


def one_sentence_error(err: str) -> str:
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("Error: ") and lines[0].endswith("."), lines[0]
    return lines[0]


@pytest.mark.parametrize("command", ["alignment", "ctf", "particles"])
def test_help_shows_examples(cli, command: str) -> None:
    code, out, _ = cli("convert", command, "--help")
    assert code == 0
    assert "Examples:" in out and f"tomoforge convert {command} " in out
    assert "Formats:" in out


def test_group_help_lists_the_commands(cli) -> None:
    code, out, _ = cli("convert", "--help")
    assert code == 0 and "Examples:" in out
    for command in ("alignment", "ctf", "particles"):
        assert command in out
    code, out, _ = cli("--help")
    assert code == 0 and "convert" in out


def test_alignment_relion_to_imod_and_back(cli, tmp_path: Path) -> None:
    code, out, err = cli(
        "convert", "alignment", RELION / "tilt_series_TS_01.star", tmp_path / "TS_01.xf",
        "--tomograms", RELION / "tomograms.star", "--all-tilts", RELION / "ctffind_TS_01.star",
        "--image-size-px", "3838,3710",
    )  # fmt: skip
    assert code == 0, err
    assert out.strip() == (
        f"Converted 41 tilts (1 excluded) of TS_01 from RELION 5 tilt-series STAR to IMOD .xf: {tmp_path / 'TS_01.xf'} "
        "(with TS_01.tlt, TS_01.rawtlt); excluded tilts are left out, as in IMOD and RELION stacks."
    )
    code, out, err = cli(
        "convert", "alignment", tmp_path / "TS_01.xf", tmp_path / "TS_01.star",
        "--pixel-size-angstrom", "1.35", "--image-size-px", "3838,3710", "--template", RELION / "ctffind_TS_01.star",
    )  # fmt: skip
    assert code == 0, err
    assert out.startswith("Converted 40 tilts of TS_01 from IMOD .xf to RELION 5 tilt-series STAR: ")
    table = starfile.read(tmp_path / "TS_01.star")
    assert len(table) == 40 and table["rlnMicrographMovieName"].str.startswith("frames/TS_01_").all()


def test_ctf_and_particles(cli, tmp_path: Path) -> None:
    defocus = DATA / "imod" / "cetsimod_TS_03_only_astigmatism.defocus"
    code, out, err = cli(
        "convert", "ctf", defocus, tmp_path / "TS_03.star", "--zero-dose", "--tilt-axis-angle-deg", "85", "--ts-id", "TS_03"
    )  # fmt: skip
    assert code == 0, err
    assert out.startswith(
        "Converted 40 CTF estimates of TS_03 from IMOD .defocus to RELION 5 tilt-series STAR"
    )
    code, out, err = cli(
        "convert", "particles", DATA / "dynamo" / "t_double.tbl", tmp_path / "p.star",
        "--pixel-size-angstrom", "10", "--tomogram-size-px", "512,512,256",
    )  # fmt: skip
    assert code == 0, err
    assert out.strip() == (
        f"Converted 300 particles in 2 tomograms from Dynamo table to RELION 5 particles STAR: {tmp_path / 'p.star'}."
    )


def test_bad_input_is_one_red_sentence(cli, tmp_path: Path) -> None:
    code, _, err = cli("convert", "alignment", tmp_path / "nothere.xf", tmp_path / "out.star")
    assert code == 1 and "nothere.xf: no such alignment file." in one_sentence_error(err)

    code, _, err = cli("convert", "particles", DATA / "dynamo" / "PROVENANCE.md", tmp_path / "out.star")
    assert code == 1 and "extension '.md'" in one_sentence_error(err)

    code, _, err = cli("convert", "alignment", DATA / "imod" / "cetsimod_TS_03.xf", tmp_path / "out.star")
    line = one_sentence_error(err)
    assert code == 1 and "--pixel-size-angstrom" in line and "--image-size-px" in line

    code, _, err = cli(
        "convert", "alignment", DATA / "imod" / "cetsimod_TS_03.xf", tmp_path / "out.star", "--image-size-px", "40,40"
    )  # fmt: skip
    assert code == 1 and "pass --pixel-size-angstrom" in one_sentence_error(err)

    code, _, err = cli(
        "convert", "ctf", DATA / "aretomo" / "cryoetalign_test_CTF.txt", tmp_path / "out.defocus"
    )
    assert code == 1 and "--tilt-angles" in one_sentence_error(err)
    assert not list(tmp_path.iterdir())

    code, _, err = cli(
        "convert", "alignment", DATA / "imod" / "cetsimod_TS_03.xf", "o.star", "--image-size-px", "4"
    )
    assert code == 2 and "--image-size-px" in err  # a malformed value is a usage error


def test_convert_help_imports_nothing_heavy() -> None:
    """No torch, numpy or converter module for help (typer itself loads pydantic for sub-command help)."""
    code = (
        "import sys\n"
        "from tomoforge.cli.main import main\n"
        "try:\n    main(['convert', 'particles', '--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('torch', 'numpy', 'tomoforge.io', 'tomoforge.models') if m in sys.modules]\n"
        "sys.stderr.write(repr(heavy))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stderr == "[]"


def test_format_and_model_file_errors_are_expected_errors() -> None:
    from tomoforge.cli.main import _message
    from tomoforge.io import FormatError
    from tomoforge.models import ModelFileError

    assert _message(FormatError("a.xf", "line 3 has 5 values")) == "a.xf: line 3 has 5 values."
    assert _message(ModelFileError(Path("ts.json"), "not JSON.")) == "ts.json: not JSON."
    assert _message(RuntimeError("bug")) is None
