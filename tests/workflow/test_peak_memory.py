"""The peak resident memory of runs: the measuring helper, the run records and the command line."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import socket
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from tomoforge.workflow import LocalProcessExecutor, Project, run_step
from tomoforge.workflow import memory as memory_module
from tomoforge.workflow.memory import format_bytes, peak_rss
from tomoforge.workflow.store import SCHEMA_VERSION, Store

MB = 10**6
linux_proc = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")


@pytest.fixture
def memtest(toy) -> None:
    import memory_steps  # noqa: F401 - registers memtest.alloc (workers import it by name: tests/workflow is on PYTHONPATH)


def _touch(megabytes: int) -> np.ndarray:
    return np.ones(megabytes * MB, dtype=np.uint8)  # np.ones writes every page, so all of it is resident


@linux_proc
@pytest.mark.parametrize("use_clear_refs", [True, False], ids=["high-water-mark", "sampled"])
def test_peak_rss_sees_an_allocation(use_clear_refs: bool) -> None:
    n = 200
    with peak_rss(use_clear_refs=use_clear_refs) as empty:
        pass
    with peak_rss(interval_s=0.01, use_clear_refs=use_clear_refs) as full:
        block = _touch(n)
    del block
    assert empty.method == full.method == ("hwm" if use_clear_refs else "sampled")
    assert empty.bytes is not None and full.bytes is not None and full.start_bytes is not None
    # The block holds n MB on top of what was resident when it began; a few hundred kB of other pages may
    # leave the resident set meanwhile, hence the 2 % slack.
    assert full.bytes - full.start_bytes >= 0.98 * n * MB
    assert full.bytes - empty.bytes >= 0.98 * n * MB


@linux_proc
def test_peak_rss_nested_and_on_error() -> None:
    with peak_rss() as outer:
        block = _touch(100)
        del block
        with pytest.raises(RuntimeError), peak_rss() as inner:  # its reset must not hide the outer peak
            raise RuntimeError("boom")
    assert inner.bytes is not None and outer.bytes is not None and outer.start_bytes is not None
    assert outer.bytes - outer.start_bytes >= 98 * MB
    assert outer.bytes > inner.bytes + 90 * MB


def test_peak_rss_without_proc(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(memory_module, "STATUS_PATH", str(tmp_path / "no-status"))
    monkeypatch.setattr(memory_module, "CLEAR_REFS_PATH", str(tmp_path / "no-dir" / "clear_refs"))
    with peak_rss() as peak:
        pass
    assert (peak.bytes, peak.start_bytes, peak.method) == (None, None, None)


@linux_proc
def test_peak_rss_falls_back_to_sampling(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(memory_module, "CLEAR_REFS_PATH", str(tmp_path / "no-dir" / "clear_refs"))
    with peak_rss() as peak:
        pass
    assert peak.method == "sampled" and peak.bytes is not None and peak.bytes > 0


def test_format_bytes() -> None:
    assert [format_bytes(n) for n in (None, 0, 999, 1500, 85_300_000, 1_234_567_890)] == [
        "",
        "0 B",
        "999 B",
        "1.5 kB",
        "85 MB",
        "1.2 GB",
    ]


@linux_proc
def test_runs_record_their_peak_memory(toy_project: Project, memtest) -> None:
    nothing = run_step(toy_project, "memtest.alloc", {"megabytes": 0})
    allocating = run_step(toy_project, "memtest.alloc", {"megabytes": 150})
    low, high = nothing.run.peak_memory_bytes, allocating.run.peak_memory_bytes
    assert isinstance(low, int) and isinstance(high, int) and low > 0
    assert high - low >= 140 * MB
    with Project.open(toy_project.root) as reader:  # stored, not just returned
        assert reader.run(allocating.run.id).peak_memory_bytes == high
    provenance = json.loads((allocating.run.folder / "provenance.json").read_text())
    assert provenance["peak_memory_bytes"] == high
    assert f"peak memory (RSS) {format_bytes(high)}" in (allocating.run.folder / "run.log").read_text()


@linux_proc
def test_worker_runs_record_their_peak_memory(tmp_path: Path, memtest) -> None:
    with Project.init(tmp_path / "procs") as project, LocalProcessExecutor(max_workers=1) as executor:
        nothing = run_step(project, "memtest.alloc", {"megabytes": 0}, executor=executor)
        allocating = run_step(project, "memtest.alloc", {"megabytes": 150}, executor=executor)
    worker = json.loads((allocating.run.folder / "provenance.json").read_text())["worker_pid"]
    assert worker != os.getpid()
    low, high = nothing.run.peak_memory_bytes, allocating.run.peak_memory_bytes
    assert low is not None and high is not None
    assert high - low >= 140 * MB


def test_records_without_peak_memory_still_load(tmp_path: Path, toy) -> None:
    """A project made before schema version 3 has no peak_memory_bytes column; its runs load with None."""
    root = tmp_path / "old"
    (root / "runs").mkdir(parents=True)
    store = Store(root / "project.sqlite", root)
    store.migrate(target=SCHEMA_VERSION - 1)
    old = store.create_run(
        step="toy.count", cache_key="k" * 64, code_version="1+old", status="running", created_at="2024-01-01T00:00:00+00:00",
        pid=1, host=socket.gethostname(), folder_name="runs/{id:06d}_toy_count", params={"n": 1}, inputs={},
    )  # fmt: skip
    store.conn.execute(
        "UPDATE runs SET status = 'succeeded', finished_at = started_at, duration_s = 2.5 WHERE id = ?",
        (old.id,),
    )
    expected = dataclasses.replace(old, status="succeeded", finished_at=old.started_at, duration_s=2.5)
    assert store.get_run(old.id) == expected  # the v2 row, read without the column
    store.close()
    conn = sqlite3.connect(root / "project.sqlite")
    assert "peak_memory_bytes" not in {row[1] for row in conn.execute("PRAGMA table_info(runs)")}
    conn.close()

    with Project.open(root, write=True) as project:
        assert project.store.version == SCHEMA_VERSION
        record = project.run(old.id)
        assert (record.status, record.duration_s, record.peak_memory_bytes) == ("succeeded", 2.5, None)
        new = run_step(project, "toy.count", {"n": 1})
    assert new.run.id != old.id
    if Path("/proc/self/status").exists():
        assert new.run.peak_memory_bytes is not None


@linux_proc
def test_cli_shows_peak_memory(cli, tmp_path: Path, memtest) -> None:
    root = tmp_path / "P"
    code, _, err = cli("project", "init", str(root))
    assert code == 0, err
    code, out, err = cli("run", "memtest.alloc", "-p", str(root), "--megabytes", "20")
    assert code == 0, err
    assert "Run 1 (memtest.alloc) succeeded in " in out and ", peak memory " in out and " MB." in out
    code, out, err = cli("status", str(root))
    assert code == 0, err
    assert "peak memory" in out
    row = next(line for line in out.splitlines() if "memtest.alloc" in line)
    assert " MB " in row
    code, out, err = cli("show", "1", "-p", str(root))
    assert code == 0, err
    assert "peak memory" in out.splitlines()[0]


FLOW = """
[workflow]
name = "memflow"
description = "Allocate, then count."

[workflow.inputs]
table = "Lines to prepend."

[nodes.alloc]
step = "memtest.alloc"
params = { megabytes = 30 }

[nodes.count]
step = "toy.count"
inputs = { table = "$table" }
"""


@linux_proc
def test_cli_workflow_prints_time_and_peak_memory_under_each_finished_node(
    cli, tmp_path: Path, memtest
) -> None:
    flow, table = tmp_path / "flow.toml", tmp_path / "lines.txt"
    flow.write_text(FLOW)
    table.write_text("first\n")
    code, out, err = cli("run", str(flow), "--table", str(table), "-p", str(tmp_path / "P"))
    assert code == 0, err
    lines = out.splitlines()
    node_line = re.compile(
        r"^\s*[\d.]+ s  (\w+) \(([\w.]+), run (\d+)\): (.+)$"
    )  # as tests/test_end_to_end.py
    for node in ("alloc", "count"):
        at = next(i for i, line in enumerate(lines) if f"{node} (" in line and line.endswith(": succeeded"))
        assert node_line.match(lines[at]).group(4) == "succeeded"  # type: ignore[union-attr]
        assert re.fullmatch(r" {11}took \d+\.\d s, peak memory \d+(\.\d)? MB", lines[at + 1]), lines[at + 1]
        assert not node_line.match(lines[at + 1])
