"""``tomoforge score --oracle`` on the tiny preset: the oracle average is reconstructed, written and reported."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tomoforge.cli.main import main


def _run(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    capsys.readouterr()
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def test_oracle_beside_the_truth_scored_against_itself(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    sim = tmp_path / "sim"
    code, _, err = _run(capsys, "simulate", "--preset", "tiny", "--out", sim, "--seed", "3")
    assert code == 0, err
    code, out, err = _run(capsys, "score", "--truth", sim / "truth", "--results", sim / "truth", "--oracle")
    assert code == 0, err
    assert "oracle map" in out and "recall 1.000" in out
    numbers = json.loads((sim / "oracle" / "oracle.json").read_text())
    assert numbers["n_particles"] > 10 and numbers["n_views"] > 100
    # tiny averages at 10 Å (Nyquist 20 Å): the oracle reaches close to Nyquist against the truth.
    assert numbers["resolution_truth_envelope_fsc_0_143_angstrom"] < 30.0
    for name in ("map.mrc", "half1.mrc", "half2.mrc", "fsc.csv"):
        assert (sim / "oracle" / "average" / name).is_file()


def test_score_needs_results_or_oracle(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = _run(capsys, "score", "--truth", tmp_path)
    assert code != 0
    assert "--results" in err and "Traceback" not in err
