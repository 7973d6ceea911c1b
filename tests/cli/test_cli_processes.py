"""The command line as separate processes: entry point, lazy imports, the project lock."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ENTRY_POINT = Path(sys.executable).parent / "tomoforge"


def _wait_for(path: Path, process: subprocess.Popen[str], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None:
            raise AssertionError(f"process exited early: {process.communicate()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} did not appear within {timeout} s")
        time.sleep(0.02)


def test_entry_point_help_and_errors(toy, tmp_path: Path) -> None:
    assert ENTRY_POINT.exists()
    done = subprocess.run(
        [str(ENTRY_POINT), "--help"], env=toy.env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and "Usage: tomoforge" in done.stdout

    done = subprocess.run(
        [str(ENTRY_POINT), "run", "toy.cont", "-p", str(tmp_path)],
        env=toy.env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert (
        done.stderr.strip()
        == "Error: Unknown step 'toy.cont'. Did you mean 'toy.count'? `tomoforge steps` lists them."
    )


def test_help_imports_nothing_heavy(toy) -> None:
    code = (
        "import sys\n"
        "from tomoforge.cli.main import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('torch', 'numpy', 'pydantic', 'tomoforge.workflow', 'toy_steps') if m in sys.modules]\n"
        "sys.stderr.write(repr(heavy))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=toy.env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and done.stderr == "[]"


def test_locked_project(toy, tmp_path: Path) -> None:
    root = tmp_path / "P"
    assert toy.cli("project", "init", str(root)).returncode == 0
    signals = tmp_path / "signals"
    signals.mkdir()
    holder = toy.popen(
        "-m", "tomoforge.cli.main", "run", "toy.slow", "-p", str(root), "--signal-dir", str(signals)
    )
    try:
        _wait_for(signals / "started", holder)

        second = toy.cli("run", "toy.count", "-p", str(root), "--n", "2")
        assert second.returncode == 1
        assert "Traceback" not in second.stderr
        (line,) = second.stderr.strip().splitlines()
        assert line.startswith(f"Error: Project {root} is in use by process {holder.pid} on host ")
        assert line.endswith("wait for it to finish or stop that process, then try again.")

        status = toy.cli("status", str(root))
        assert status.returncode == 0, status.stderr
        assert "toy.slow" in status.stdout and "running" in status.stdout

        log = toy.cli("log", "1", "-p", str(root))
        assert log.returncode == 0 and "step toy.slow" in log.stdout
    finally:
        (signals / "release").write_text("go")
        out, err = holder.communicate(timeout=60)
    assert holder.returncode == 0, err
    assert "Run 1 (toy.slow) succeeded" in out
    after = toy.cli("run", "toy.count", "-p", str(root), "--n", "2")
    assert after.returncode == 0 and "Run 2 (toy.count) succeeded" in after.stdout
    assert len(toy.calls("toy.count")) == 1


def test_sigterm_marks_run_interrupted(toy, tmp_path: Path) -> None:
    import signal

    from tomoforge.workflow import Project

    root = tmp_path / "P"
    assert toy.cli("project", "init", str(root)).returncode == 0
    signals = tmp_path / "signals"
    signals.mkdir()
    process = toy.popen(
        "-m", "tomoforge.cli.main", "run", "toy.slow", "-p", str(root), "--signal-dir", str(signals)
    )
    _wait_for(signals / "started", process)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 130 and "Traceback" not in err
    with Project.open(root) as reader:  # read-only: no recovery needed, the run ended cleanly
        (record,) = reader.runs()
        assert record.status == "interrupted" and reader.outputs(record.id) == {}
        assert not [p for p in record.folder.iterdir() if p.name.startswith(".work-")]
