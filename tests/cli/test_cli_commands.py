"""The command line, run in this process through ``tomoforge.cli.main.main``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tomoforge.cli.main import main
from tomoforge.cli.params import convert_value, option_specs
from tomoforge.workflow import Project, ProjectError


@pytest.fixture
def cli(toy, cli):
    """The CLI (tests/cli/conftest.py) with the toy steps registered."""
    return cli


def _one_sentence_error(err: str) -> str:
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("Error: ") and lines[0].endswith((".", "?")), lines[0]
    return lines[0]


def test_init_run_status_log(cli, tmp_path: Path, toy) -> None:
    root = tmp_path / "P"
    code, out, _ = cli("project", "init", str(root))
    assert code == 0 and f"Created project {root}" in out

    code, out, err = cli("run", "toy.count", "--project", str(root), "--n", "3", "--label", "k")
    assert code == 0, err
    assert "Run 1 (toy.count) succeeded" in out and "counts: runs/000001_toy_count/counts.txt" in out
    assert (root / "runs" / "000001_toy_count" / "counts.txt").read_text() == "k1\nk2\nk3\n"
    assert "counting" in err  # the rich progress bar goes to stderr

    code, out, _ = cli("run", "toy.count", "-p", str(root), "--n", "3", "--label", "k")
    assert code == 0 and "Run 1 (toy.count) is up to date" in out
    assert len(toy.calls("toy.count")) == 1

    code, out, err = cli("run", "toy.sum", "-p", str(root), "--input", "counts=1:counts", "--scale", "2")
    assert code == 0, err
    assert (root / "runs" / "000002_toy_sum" / "total.txt").read_text() == "12.0\n"

    table = tmp_path / "table.txt"
    table.write_text("z7\n")
    code, out, err = cli("run", "toy.count", "-p", str(root), "--n", "1", "-i", f"table={table}")
    assert code == 0, err
    assert (root / "runs" / "000004_toy_count" / "counts.txt").read_text() == "z7\nx1\n"

    code, out, _ = cli("status", str(root))
    assert code == 0
    rows = [line for line in out.splitlines() if "│" in line]
    assert len(rows) == 4
    assert "toy.count" in rows[0] and "succeeded" in rows[0] and "counts" in rows[0]
    assert "toy.sum" in rows[1] and "total" in rows[1]
    assert "import" in rows[2] and str(table) in rows[2]

    code, out, _ = cli("log", "1", "--project", str(root))
    assert code == 0 and "wrote 3 lines" in out and "progress counting: 3/3" in out


def test_step_help_lists_params(cli, toy) -> None:
    code, out, _ = cli("run", "toy.count", "--help")
    assert code == 0
    for text in (
        "--n",
        "How many lines to write.",
        "Must be >= 1 and <= 1000.",
        "--label",
        "Prefix of every line.",
        "--mode",
        "One of: plain, squared.",
        "--input",
        "--project",
        "Examples",
        "table (table, optional)",
    ):
        assert text in out, text
    assert "[default: 3]" in out.replace("\\", "")

    code, out, _ = cli("run", "--help")
    assert code == 0 and "toy.count" in out and "Write n numbered lines" in out and "Examples" in out

    code, out, _ = cli("--help")
    assert code == 0 and "Examples" in out
    for command in ("project", "status", "run", "steps", "log"):
        assert command in out
        if command != "run":
            code, sub, _ = cli(command, "--help")
            assert code == 0 and "Examples" in sub, command
    code, sub, _ = cli("project", "init", "--help")
    assert code == 0 and "Examples" in sub


def test_steps_and_version(cli, toy) -> None:
    code, out, _ = cli("steps")
    assert code == 0
    assert "toy.count" in out and "Write n numbered lines" in out and "toy.sum" in out
    code, out, _ = cli("--version")
    assert code == 0 and out.startswith("tomoforge ")


def test_list_bool_and_json_options(cli, tmp_path: Path) -> None:
    root = tmp_path / "P"
    cli("project", "init", str(root))
    code, out, err = cli(
        "run",
        "toy.lists",
        "-p",
        str(root),
        "--values",
        "4,5",
        "--values",
        "6",
        "--weights",
        '{"b": 2, "a": 0.5}',
        "--verbose",
        "--shape",
        "column",
    )
    assert code == 0, err
    text = (root / "runs" / "000001_toy_lists" / "table.txt").read_text()
    assert text == "values and weights\n4\n5\n6\n[('a', 0.5), ('b', 2.0)]\n"

    code, _, err = cli("run", "toy.lists", "-p", str(root), "--weights", "{not json")
    assert code == 1
    assert _one_sentence_error(err).startswith(
        "Error: Invalid value '{not json' for --weights: it is not valid JSON"
    )

    code, _, err = cli("run", "toy.lists", "-p", str(root), "--shape", "diagonal")
    assert code == 1
    assert (
        _one_sentence_error(err)
        == "Error: Invalid value 'diagonal' for --shape: input should be 'row' or 'column'."
    )


def test_bad_inputs_give_one_sentence(cli, tmp_path: Path) -> None:
    root = tmp_path / "P"
    cli("project", "init", str(root))

    code, _, err = cli("run", "toy.count", "--project", str(root), "--n", "-1")
    assert code == 1
    assert (
        _one_sentence_error(err)
        == "Error: Invalid value -1 for --n: input should be greater than or equal to 1."
    )

    code, _, err = cli("run", "toy.count", "--project", str(root), "--n", "many")
    assert (
        code == 1
        and "Invalid value 'many' for --n: input should be a valid integer" in _one_sentence_error(err)
    )

    code, _, err = cli("run", "toy.cont", "--project", str(root))
    assert code == 1
    assert _one_sentence_error(err) == (
        "Error: Unknown step 'toy.cont'. Did you mean 'toy.count'? `tomoforge steps` lists them."
    )

    missing = tmp_path / "missing"
    code, _, err = cli("run", "toy.count", "--project", str(missing))
    assert code == 1
    assert _one_sentence_error(err) == (
        f"Error: No tomoforge project at {missing} (no project.sqlite). "
        f"Create one with `tomoforge project init {missing}`."
    )
    code, _, err = cli("status", str(missing))
    assert code == 1 and "No tomoforge project" in _one_sentence_error(err)

    code, _, err = cli("run", "toy.count", "-p", str(root), "-i", f"table={tmp_path / 'nope.txt'}")
    assert code == 1 and _one_sentence_error(err).endswith("nope.txt does not exist.")

    code, _, err = cli("log", "42", "-p", str(root))
    assert code == 1 and _one_sentence_error(err).endswith("has no run 42.")

    code, _, err = cli("run", "toy.count", "-p", str(root), "--no-such-option", "1")
    assert code == 2 and "No such option" in err and "Traceback" not in err


def test_corrupt_database(cli, tmp_path: Path) -> None:
    root = tmp_path / "P"
    cli("project", "init", str(root))
    db = root / "project.sqlite"
    for suffix in ("-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    db.write_bytes(bytes(range(256)) * 64)
    for args in (("status", str(root)), ("run", "toy.count", "-p", str(root)), ("log", "1", "-p", str(root))):
        code, _, err = cli(*args)
        assert code == 1
        sentence = _one_sentence_error(err)
        assert str(db) in sentence and "not a SQLite database" in sentence


def test_debug_shows_traceback(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOMOFORGE_DEBUG", "1")
    with pytest.raises(ProjectError):
        main(["status", str(tmp_path / "missing")])
    monkeypatch.delenv("TOMOFORGE_DEBUG")
    with pytest.raises(ProjectError):
        main(["--debug", "status", str(tmp_path / "missing")])


def test_option_specs_cover_types(toy) -> None:
    import toy_steps

    specs = {s.field: s for s in option_specs(toy_steps.ListParams)}
    assert specs["values"].kind == "list" and specs["values"].default_text == "1,2"
    assert convert_value(specs["values"], ("1, 2", "3")) == [1, 2, 3]
    assert specs["weights"].kind == "json" and convert_value(specs["weights"], '{"a": 1}') == {"a": 1}
    assert specs["verbose"].kind == "bool" and specs["verbose"].flag == "--verbose"
    assert specs["shape"].kind == "choice" and list(specs["shape"].choices or {}) == ["row", "column"]
    slow = {s.field: s for s in option_specs(toy_steps.SlowParams)}
    assert slow["signal_dir"].required and slow["signal_dir"].flag == "--signal-dir"
    assert convert_value(slow["signal_dir"], "/x") == Path("/x")
    count = {s.field: s for s in option_specs(toy_steps.CountParams)}
    assert convert_value(count["mode"], "squared") == "squared" and count["mode"].default_text == "plain"


def test_run_records_provenance_of_cli(cli, tmp_path: Path) -> None:
    root = tmp_path / "P"
    cli("project", "init", str(root))
    code, _, err = cli("run", "toy.count", "-p", str(root), "--mode", "squared", "--n", "2")
    assert code == 0, err
    with Project.open(root) as project:
        (record,) = project.runs()
        provenance = json.loads((record.folder / "provenance.json").read_text())
    assert provenance["params"] == {"n": 2, "label": "x", "mode": "squared"}
    assert (record.folder / "counts.txt").read_text() == "x1\nx4\n"


def test_show_prints_params_outputs_and_summary(cli, tmp_path: Path) -> None:
    root = tmp_path / "P"
    cli("project", "init", str(root))
    code, _, err = cli("run", "toy.count", "-p", str(root), "--n", "4", "--label", "q")
    assert code == 0, err
    code, out, err = cli("show", "1", "-p", str(root))
    assert code == 0, err
    assert "Run 1 toy.count succeeded" in out
    assert "n=4" in out and "label='q'" in out
    assert "counts.txt" in out or "runs/000001_toy_count" in out
    assert "lines: 4" in out
    code, _, err = cli("show", "7", "-p", str(root))
    assert code != 0 and "has no run 7" in err


def test_summary_lists_of_equal_length_become_table_columns() -> None:
    from rich.console import Console

    from tomoforge.cli.main import _summary_renderables

    console = Console(width=120, record=True)
    summary = {"tilts": 3, "tilt_angle_deg": [-3.0, 0.0, 3.0], "xrays": [1, 0, 5], "shape": [64, 64, 2, 2]}
    for renderable in _summary_renderables("TS_01", summary):
        console.print(renderable)
    text = console.export_text()
    assert "TS_01  tilts: 3" in text and "shape: [64, 64, 2, 2]" in text
    rows = [line.split() for line in text.splitlines() if line.strip().startswith(("-3", "0", "3"))]
    assert rows == [["-3", "1"], ["0", "0"], ["3", "5"]]
