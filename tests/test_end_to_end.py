"""The whole tutorial from movies to a map: ``tomoforge run small`` on the simulator's ``small`` preset, killed in
the middle, then resumed by ``tomoforge demo``, exported and scored.

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
    # The second time through `tomoforge demo`, which finds the data and the project in place, resumes the
    # workflow, then exports and scores.
    demo = [sys.executable, "-m", "tomoforge.cli.main", "demo", str(tmp_path), "--preset", "small"]
    second = subprocess.run(demo, capture_output=True, text=True, env=env, timeout=900)
    assert second.returncode == 0, second.stdout + second.stderr
    after = _events(second.stdout)
    for node, run in finished.items():  # reused, not redone
        assert (node, run, "up to date") in after, second.stdout
    done = {node for node, _, what in after if what in ("succeeded", "up to date")}
    assert {"picks", "initial_model", "refine", "average", "postprocess"} <= done, second.stdout
    assert "Workflow small finished" in second.stdout and "Scores against" in second.stdout
    assert (tmp_path / "export" / "score.json").is_file()
    page = (tmp_path / "report.html").read_text()
    assert not (tmp_path / "report.pdf").exists()  # a PDF only when asked for (report --pdf)
    for part in ("Quality per tilt series", "Score against the truth", "averaging.initial_model", "Methods"):
        assert part in page
    assert page.count("<figure>") >= 10 and "data:image/png;base64," in page
    assert "X-rays erased" in page and "_residuals.svg" in page
    assert re.search(r"run \d+, [\d.]+ s, peak memory [\d.]+ [kMG]B", page) and "largest peak memory" in page
    assert re.search(r"Workflow small finished in [\d.]+ s; the largest peak memory", second.stdout)
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
    _check_export(project, tmp_path / "export2", data / "truth", record["particles"])


def _check_export(project: Path, out: Path, truth: Path, n_particles: int) -> None:
    """``tomoforge export``, read back with independent readers (mrcfile, starfile, sqlite3) and scored."""
    import sqlite3

    import mrcfile
    import starfile

    from tomoforge.simulate.scoring import score_results

    done = subprocess.run(
        [sys.executable, "-m", "tomoforge.cli.main", "export", "--project", str(project), "--to", str(out)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0 and "not exported" not in done.stdout, done.stdout + done.stderr
    for name in ("map", "half1", "half2", "mask"):
        with mrcfile.open(out / "average" / f"{name}.mrc", permissive=False) as mrc:
            assert mrc.data.shape == (26, 26, 26) and float(mrc.voxel_size.x) == pytest.approx(10.0)
    with mrcfile.open(out / "tomograms" / "TS_01.mrc") as mrc:
        assert mrc.data.ndim == 3 and float(mrc.voxel_size.x) == pytest.approx(20.0)
    particles = starfile.read(out / "relion5" / "particles.star", always_dict=True)["particles"]
    assert len(particles) == n_particles and {"rlnTomoName", "rlnCenteredCoordinateXAngst"} <= set(particles)
    tomograms = starfile.read(out / "relion5" / "tomograms.star", always_dict=True)["global"]
    assert list(tomograms["rlnTomoName"]) == ["TS_01"]
    tilts = starfile.read(out / "relion5" / "tilt_series" / "TS_01.star", always_dict=True)
    assert len(next(iter(tilts.values()))) == 21
    with sqlite3.connect(out / "scipion" / "coordinates.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM Objects").fetchone()[0] == n_particles
    assert len((out / "dynamo" / "particles.tbl").read_text().splitlines()) == n_particles
    assert (out / "motion" / "TS_01.csv").read_text().startswith("acquisition_order,tilt_angle_deg,frame,")
    fsc = (out / "average" / "fsc.csv").read_text().splitlines()
    assert fsc[0].startswith("shell,frequency_per_angstrom,resolution_angstrom")
    report = score_results(truth, out)
    (series,) = report.tilt_series
    assert series.motion.rms_angstrom < 1.0  # type: ignore[union-attr]
    assert series.alignment.rms_px < 0.5  # type: ignore[union-attr]
    assert report.picking.recall > 0.3  # type: ignore[union-attr]


@pytest.mark.parametrize("name", ["small", "demo", "hiv-tutorial-small", "hiv-tutorial-large"])
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
