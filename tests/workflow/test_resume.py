"""Crash safety: a killed run is marked interrupted, never registered, and redone on the next run."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tomoforge.workflow import Project, ProjectLockedError, StepFailedError, run_step

SCRIPT = Path(__file__).parent / "pipeline_script.py"


def _wait_for(path: Path, process, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None:
            raise AssertionError(f"process exited early: {process.communicate()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} did not appear within {timeout} s")
        time.sleep(0.02)


def test_resume_after_sigkill(tmp_path: Path, toy) -> None:
    root = tmp_path / "proj"
    Project.init(root).close()
    signals = tmp_path / "signals"
    signals.mkdir()

    process = toy.popen(str(SCRIPT), str(root), str(signals))
    _wait_for(signals / "started", process)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=10)
    assert process.returncode == -signal.SIGKILL

    # the killed run is still 'running' for a reader; nothing of it is registered
    with Project.open(root) as reader:
        count, slow = reader.runs()
        assert (count.step, count.status) == ("toy.count", "succeeded")
        assert (slow.step, slow.status) == ("toy.slow", "running")
        assert reader.outputs(slow.id) == {}
        assert [p.name for p in slow.folder.iterdir() if p.name.startswith(".work-")]

    # opening for writing marks it interrupted and removes the half-written work folder
    with Project.open(root, write=True) as writer:
        assert writer.recovered == [slow.id]
        slow_after = writer.run(slow.id)
        assert slow_after.status == "interrupted"
        assert "stopped before the run finished" in (slow_after.error or "")
        assert (slow.folder / "STATUS").read_text().strip() == "interrupted"
        assert not [p for p in slow.folder.iterdir() if p.name.startswith(".work-")]
        assert not (slow.folder / "result").exists()
        assert writer.outputs(slow.id) == {}

    # the rerun reuses the finished upstream run and completes the interrupted one
    (signals / "release").write_text("go")
    (signals / "started").unlink()
    rerun = toy.popen(str(SCRIPT), str(root), str(signals))
    out, err = rerun.communicate(timeout=60)
    assert rerun.returncode == 0, err
    assert out.splitlines() == [f"count {count.id} cached", f"slow {slow.id + 1} ran"]
    assert len(toy.calls("toy.count")) == 1
    assert len(toy.calls("toy.slow")) == 2
    with Project.open(root) as reader:
        result = reader.outputs(slow.id + 1)["result"].path
        assert sorted(p.name for p in result.iterdir()) == ["part1.txt", "part2.txt"]
        assert [r.status for r in reader.runs()] == ["succeeded", "interrupted", "succeeded"]


def test_failed_step_is_recorded(toy_project: Project, toy) -> None:
    with pytest.raises(StepFailedError) as info:
        run_step(toy_project, "toy.fail")
    message = str(info.value)
    assert "ValueError: toy failure as requested" in message and "run.log" in message
    record = toy_project.runs()[-1]
    assert record.status == "failed" and "toy failure" in (record.error or "")
    assert toy_project.outputs(record.id) == {}
    assert (record.folder / "STATUS").read_text().strip() == "failed"
    assert not [p for p in record.folder.iterdir() if p.name.startswith(".work-")]
    assert "Traceback" in (record.folder / "run.log").read_text()
    # a failed run is not a cache hit
    with pytest.raises(StepFailedError):
        run_step(toy_project, "toy.fail")
    assert len(toy.calls("toy.fail")) == 2


def test_undeclared_or_missing_output_fails(toy_project: Project, toy) -> None:
    with pytest.raises(StepFailedError, match="missing.txt.*does not exist"):
        run_step(toy_project, "toy.fail", {"how": "bad-output"})
    assert toy_project.runs()[-1].status == "failed"


def test_keyboard_interrupt_marks_run_interrupted(toy_project: Project, toy) -> None:
    with pytest.raises(KeyboardInterrupt):
        run_step(toy_project, "toy.fail", {"how": "interrupt"})
    record = toy_project.runs()[-1]
    assert record.status == "interrupted"
    assert (record.folder / "STATUS").read_text().strip() == "interrupted"
    assert not [p for p in record.folder.iterdir() if p.name.startswith(".work-")]


def test_write_lock_in_process(toy_project: Project, toy) -> None:
    with pytest.raises(ProjectLockedError) as info:
        Project.open(toy_project.root, write=True)
    message = str(info.value)
    assert f"is in use by process {os.getpid()}" in message and "wait for it to finish" in message
    with Project.open(toy_project.root) as reader:  # readers do not need the lock
        assert reader.runs() == []
        assert not reader.writable
