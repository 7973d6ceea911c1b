"""``tomoforge score``: help with examples, a table and a JSON report, one-sentence errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "simulate"))
from test_scoring_fixtures import TS, make_export, write_export  # noqa: E402


@pytest.fixture
def cli_columns() -> int:
    """Wide enough for the score tables."""
    return 250


def test_help_shows_examples(cli) -> None:
    code, out, _ = cli("score", "--help")
    assert code == 0 and "Examples:" in out and "tomoforge score --truth" in out
    code, out, _ = cli("--help")
    assert code == 0 and "score" in out


def test_scores_a_results_folder(cli, tmp_path: Path) -> None:
    data = make_export(with_map=False)
    truth = write_export(tmp_path / "truth", data, truth=True)
    results = write_export(
        tmp_path / "results", data.replace(defocus_uv_angstrom=data.defocus_uv_angstrom + 500.0), truth=False
    )
    (results / "average").mkdir()
    code, out, err = cli("score", "--truth", truth, "--results", results)
    assert code == 0, err
    assert "alignment" in out and "picking" in out and "+500.0 Å" in out and "not provided" in out
    report = json.loads((results / "score.json").read_text())
    [series] = report["tilt_series"]
    assert series["ts_id"] == TS and series["ctf"]["mean_defocus_error_angstrom"] == pytest.approx(500.0)
    assert report["map"]["status"] == "not provided"
    code, _, _ = cli("score", "--truth", truth, "--results", results, "--json", tmp_path / "other.json")
    assert code == 0 and (tmp_path / "other.json").is_file()


def test_errors_are_one_sentence(cli, tmp_path: Path) -> None:
    code, _, err = cli("score", "--truth", tmp_path / "missing", "--results", tmp_path)
    assert code == 1
    lines = [line for line in err.splitlines() if line.strip()]
    assert (
        len(lines) == 1
        and lines[0].startswith("Error: ")
        and lines[0].endswith(".")
        and "missing" in lines[0]
    )
    truth = write_export(tmp_path / "truth", make_export(with_map=False), truth=True)
    (truth / "ctf" / f"{TS}.defocus").write_text("garbage\n")
    code, _, err = cli("score", "--truth", truth, "--results", truth)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1 and len(lines) == 1 and "defocus" in lines[0] and "Traceback" not in err
    code, _, err = cli("score", "--truth", truth, "--results", truth, "--symmetry", "I3")
    assert code == 2 and "--symmetry" in err
