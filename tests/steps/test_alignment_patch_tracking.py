"""``alignment.patch_tracking`` then ``alignment.fiducial``: alignment without using the beads, scored on them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tomoforge.models import LandmarkModel, load_json
from tomoforge.workflow import Project, RunOutput, RunResult, run_step


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, RunResult]]:
    from tomoforge.simulate import generate_dataset, preset_config

    data = tmp_path_factory.mktemp("patch_data")
    generate_dataset(preset_config("tiny", tilt_stride=2, n_gold=14, frame_size_xy_px=(256, 256)), data)
    project = Project.init(tmp_path_factory.mktemp("patch") / "project")
    imported = run_step(project, "import.movies", {}, {"movies": data / "frames"})
    motion = run_step(project, "motion.correct", {}, {"movies": RunOutput(imported.run.id, "movies")})
    coarse = run_step(
        project,
        "alignment.coarse",
        {"specimen_thickness_nm": 80.0},
        {"tilt_series": RunOutput(motion.run.id, "tilt_series")},
    )
    patches = run_step(
        project, "alignment.patch_tracking", {}, {"tilt_series": RunOutput(coarse.run.id, "tilt_series")}
    )
    fiducial = run_step(
        project,
        "alignment.fiducial",
        {"rotation": "one", "tilt": "fixed"},
        {"tilt_series": RunOutput(patches.run.id, "tilt_series")},
    )
    return data, {"coarse": coarse, "patches": patches, "fiducial": fiducial}


def test_patch_tracking_aligns_without_the_beads(
    chain: tuple[Path, dict[str, RunResult]], tmp_path: Path
) -> None:
    from tomoforge.simulate.scoring.alignment import score_alignment

    data, runs = chain
    folder = runs["patches"].outputs["tilt_series"].path
    model = load_json(LandmarkModel, folder / "TS_01_fiducials.json")
    record = json.loads((folder / "TS_01_patch_tracking.json").read_text())
    assert model.n_beads >= 6 and record["chains"] == model.n_beads
    out = runs["fiducial"].outputs["tilt_series"].path
    (tmp_path / "alignment").mkdir()
    for suffix in (".xf", ".tlt"):
        shutil.copyfile(out / f"TS_01{suffix}", tmp_path / "alignment" / f"TS_01{suffix}")
    score = score_alignment(data / "truth", tmp_path, "TS_01")
    assert score.rms_px < 1.5, score.rms_px  # the target for patch tracking
    alignment = json.loads((out / "TS_01_alignment.json").read_text())
    assert "surfaces" not in alignment  # patches are not beads on two surfaces
