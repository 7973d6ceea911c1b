"""The whole tutorial from movies to a map: ``tomoforge run small`` on the simulator's ``small`` preset, killed in
the middle and run again.

The second run must reuse every node the first one finished (same run ids, "up to date"), finish the rest, and
give a C6 map of the right hand against the simulator's true map.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from map_scoring import hand_scores
from tomoforge.simulate import generate_dataset, preset_config

_LINE = re.compile(r"^\s*[\d.]+ s  (\w+) \(([\w.]+), run (\d+)\): (.+)$")


def _events(text: str) -> list[tuple[str, int, str]]:
    return [
        (m.group(1), int(m.group(3)), m.group(4).strip()) for m in map(_LINE.match, text.splitlines()) if m
    ]


def test_the_small_workflow_survives_a_kill_and_gives_the_right_map(tmp_path: Path) -> None:
    data = tmp_path / "data"
    generate_dataset(preset_config("small"), data)
    project = tmp_path / "project"
    command = [sys.executable, "-m", "tomoforge.cli.main", "run", "small", "--movies", str(data / "frames"),
               "--project", str(project)]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    assert first.stdout is not None
    seen = []
    deadline = time.monotonic() + 300
    for line in first.stdout:
        seen.append(line)
        if re.search(r"ctf \(ctf\.estimate, run \d+\): succeeded", line):
            first.send_signal(signal.SIGTERM)  # as a batch scheduler would
            break
        assert time.monotonic() < deadline, "".join(seen)
    rest, _ = first.communicate(timeout=120)
    before = _events("".join(seen) + rest)
    finished = {node: run for node, run, what in before if what == "succeeded"}
    assert "ctf" in finished and "postprocess" not in finished, "".join(seen) + rest
    second = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
    assert second.returncode == 0, second.stdout + second.stderr
    after = _events(second.stdout)
    for node, run in finished.items():  # reused, not redone
        assert (node, run, "up to date") in after, second.stdout
    done = {node for node, _, what in after if what in ("succeeded", "up to date")}
    assert {"picks", "initial_model", "refine", "average", "postprocess"} <= done, second.stdout
    assert "Workflow small finished" in second.stdout
    # The result: a C6 map of the right hand, and particles at every averaging step.
    runs = {int(p.name.split("_")[0]): p for p in (project / "runs").iterdir()}
    run_of = {node: run for node, run, _ in after}
    record = json.loads((runs[run_of["average"]] / "map" / "reconstruction.json").read_text())
    assert record["symmetry"] == "C6" and record["particles"] >= 30
    right, mirror = hand_scores(
        runs[run_of["average"]] / "map" / "map.mrc", data / "truth" / "average" / "map.mrc", angle_step_deg=2
    )
    assert right > 0.3 and right > mirror, (right, mirror)
    assert (runs[run_of["postprocess"]] / "postprocess").is_dir()


@pytest.mark.parametrize("name", ["small"])
def test_the_builtin_workflow_prints_and_checks(name: str, tmp_path: Path) -> None:
    from tomoforge.workflow import check_workflow, read_workflow
    from tomoforge.workflows import locate

    shown = subprocess.run(
        [sys.executable, "-m", "tomoforge.cli.main", "workflow", "show", name], capture_output=True, text=True
    )
    assert shown.returncode == 0
    copy = tmp_path / "mine.toml"
    copy.write_text(shown.stdout)
    assert copy.read_text() == locate(name).read_text()
    check_workflow(read_workflow(copy))
