"""``tomoforge score --oracle`` on the tiny preset: the oracle average is reconstructed, written and reported."""

from __future__ import annotations

import json
from pathlib import Path


def test_oracle_beside_the_truth_scored_against_itself(cli, tmp_path: Path) -> None:
    sim = tmp_path / "sim"
    code, _, err = cli("simulate", "--preset", "tiny", "--out", sim, "--seed", "3")
    assert code == 0, err
    code, out, err = cli("score", "--truth", sim / "truth", "--results", sim / "truth", "--oracle")
    assert code == 0, err
    assert "oracle map" in out and "recall 1.000" in out
    numbers = json.loads((sim / "oracle" / "oracle.json").read_text())
    assert numbers["n_particles"] > 10 and numbers["n_views"] > 100
    # tiny averages at 10 Å (Nyquist 20 Å): the oracle reaches close to Nyquist against the truth.
    assert numbers["resolution_truth_envelope_fsc_0_143_angstrom"] < 30.0
    for name in ("map.mrc", "half1.mrc", "half2.mrc", "fsc.csv"):
        assert (sim / "oracle" / "average" / name).is_file()


def test_score_needs_results_or_oracle(cli, tmp_path: Path) -> None:
    code, _, err = cli("score", "--truth", tmp_path)
    assert code != 0
    assert "--results" in err and "Traceback" not in err
