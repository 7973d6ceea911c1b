"""``tomoforge simulate``: the tiny preset end to end, help text and one-sentence errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tomoforge.io.mdoc import read_tilt_series_mdoc


def test_tiny_preset_writes_frames_truth_and_previews(cli, tmp_path: Path) -> None:
    out = tmp_path / "sim"
    code, stdout, stderr = cli("simulate", "--preset", "tiny", "--out", out, "--seed", "2", "--preview")
    assert code == 0, stderr
    assert "Simulated 1 tilt series (TS_01) of 9 tilts x 4 frames" in stdout
    assert "Wrote 7 previews" in stdout
    assert "TS_01 tilts" in stderr  # the progress bar
    series = read_tilt_series_mdoc(out / "frames" / "TS_01.mrc.mdoc", check_frames_exist=True)
    assert series.n_tilts == 9
    for name in (
        "truth.json",
        "alignment/TS_01.xf",
        "ctf/TS_01.defocus",
        "relion5/particles.star",
        "preview/frame.png",
    ):
        assert (out / "truth" / name).is_file(), name
    assert '"seed": 2' in (out / "truth" / "truth.json").read_text()


def test_help_shows_presets_and_examples(cli) -> None:
    code, stdout, _ = cli("simulate", "--help")
    assert code == 0
    assert "Examples:" in stdout and "tomoforge simulate --preset demo" in stdout
    for preset in ("tiny", "demo", "tutorial-small", "tutorial-large"):
        assert preset in stdout
    code, stdout, _ = cli("--help")
    assert code == 0 and "simulate" in stdout


def test_errors_are_one_sentence(cli, tmp_path: Path) -> None:
    code, _, stderr = cli(
        "simulate", "--preset", "tiny", "--out", tmp_path, "--mdoc", tmp_path / "missing.mdoc"
    )
    assert code == 1 and "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: No mdoc file") and lines[0].endswith(".")
    code, _, stderr = cli("simulate", "--preset", "huge", "--out", tmp_path)
    assert code == 2 and "expected one of tiny, small, demo" in stderr
    bad = tmp_path / "bad.cif"
    bad.write_text("data_x\n")
    code, _, stderr = cli("simulate", "--preset", "tiny", "--out", tmp_path / "o", "--structure", bad)
    assert code == 1 and "Traceback" not in stderr and stderr.startswith("Error: ")


def test_module_entry_point_runs_in_a_subprocess() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tomoforge.cli", "simulate", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0 and "--preset" in result.stdout
