"""``alignment.assign``: the alignment of one tilt series is given to another by ts_id and acquisition order."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tomoforge.models import TiltTransform
from tomoforge.steps._artifacts import read_tilt_series
from tomoforge.workflow import Project, RunOutput, StepFailedError, run_step


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Project, RunOutput, Path]:
    """A project with the tiny preset motion-corrected at binning 2 (10 Å): the series to assign to."""
    from tomoforge.simulate import generate_dataset, preset_config

    data = tmp_path_factory.mktemp("assign_data")
    generate_dataset(preset_config("tiny"), data)
    project = Project.init(tmp_path_factory.mktemp("assign") / "project")
    imported = run_step(project, "import.movies", {}, {"movies": data / "frames"})
    corrected = run_step(project, "motion.correct", {}, {"movies": RunOutput(imported.run.id, "movies")})
    return project, RunOutput(corrected.run.id, "tilt_series"), data


def aligned_copy(
    project: Project, target: RunOutput, out: Path, *, pixel_factor: int, drop_order: int
) -> Path:
    """A fake "aligned" source: the target's series at ``pixel_factor`` × its pixel, with transforms set."""
    (series,) = read_tilt_series(project.outputs(target.run_id)[target.output].path)
    out.mkdir()
    tilts = []
    for tilt in series.tilts:
        if tilt.acquisition_order == drop_order:
            continue
        angle = 85.0 + 0.1 * tilt.index
        transform = TiltTransform.from_rotation(-angle, 30.0 * tilt.index, -20.0)
        tilts.append(
            tilt.model_copy(
                update={"transform": transform, "refined_tilt_angle_deg": tilt.tilt_angle_deg + 0.3}
            )
        )
    source = series.model_copy(
        update={
            "tilts": [t.model_copy(update={"index": i}) for i, t in enumerate(tilts)],
            "pixel_size_angstrom": series.pixel_size_angstrom * pixel_factor,
            "stack_file": Path("TS_01.mrc"),
            "even_stack_file": None,
            "odd_stack_file": None,
            "acquisition": series.acquisition.model_copy(update={"tilt_axis_angle_deg": 86.0}),
        }
    )
    (out / "TS_01.mrc").write_bytes(b"")  # never read by alignment.assign
    (out / "TS_01.json").write_text(source.model_dump_json(), encoding="utf-8")
    (out / "TS_01.xf").write_text("1 0 0 1 0 0\n", encoding="utf-8")
    return out


def test_assign_copies_transforms_by_acquisition_order(
    setup: tuple[Project, RunOutput, Path], tmp_path: Path
) -> None:
    project, target, _ = setup
    (original,) = read_tilt_series(project.outputs(target.run_id)[target.output].path)
    source = aligned_copy(project, target, tmp_path / "aligned", pixel_factor=4, drop_order=5)
    result = run_step(project, "alignment.assign", {}, {"aligned": source, "tilt_series": target})
    folder = result.outputs["tilt_series"].path
    (assigned,) = read_tilt_series(folder)
    (source_series,) = read_tilt_series(source)
    by_order = {t.acquisition_order: t for t in source_series.tilts}
    assert assigned.pixel_size_angstrom == original.pixel_size_angstrom
    assert assigned.acquisition.tilt_axis_angle_deg == 86.0
    assert [t.acquisition_order for t in assigned.tilts] == [t.acquisition_order for t in original.tilts]
    for tilt, before in zip(assigned.tilts, original.tilts, strict=True):
        assert tilt.dose_e_per_angstrom2 == before.dose_e_per_angstrom2
        if tilt.acquisition_order == 5:
            assert tilt.excluded and tilt.transform is None
            continue
        match = by_order[tilt.acquisition_order]
        assert not tilt.excluded and tilt.transform == match.transform
        assert tilt.refined_tilt_angle_deg == pytest.approx(tilt.tilt_angle_deg + 0.3)
        # Shifts in pixels scale by the pixel-size ratio (Scipion divides by target/source sampling).
        ours = tilt.transform.as_matrix(assigned.pixel_size_angstrom)
        theirs = match.transform.as_matrix(source_series.pixel_size_angstrom)
        np.testing.assert_allclose(ours[:2, 2], theirs[:2, 2] * 4.0)
        np.testing.assert_allclose(ours[:2, :2], theirs[:2, :2])
    # The stack is the target's own (hard-linked), and the alignment export travels along.
    assert (folder / "TS_01.mrc").read_bytes() == original.stack_file.read_bytes()
    assert (folder / "TS_01.xf").is_file()
    assert project.store.summary(result.run.id)["TS_01"]["excluded_tilts"] == 1


def test_missing_series_and_applied_transforms_are_refused(
    setup: tuple[Project, RunOutput, Path], tmp_path: Path
) -> None:
    project, target, _ = setup
    source = aligned_copy(project, target, tmp_path / "other", pixel_factor=1, drop_order=-1)
    data = json.loads((source / "TS_01.json").read_text())
    data["ts_id"] = "TS_99"
    (source / "TS_01.json").unlink()
    (source / "TS_99.json").write_text(json.dumps(data))
    with pytest.raises(StepFailedError, match="holds no alignment for the tilt series TS_01"):
        run_step(project, "alignment.assign", {}, {"aligned": source, "tilt_series": target})
    data["ts_id"], data["aligned"] = "TS_01", True
    (source / "TS_99.json").unlink()
    (source / "TS_01.json").write_text(json.dumps(data))
    with pytest.raises(StepFailedError, match="already applied"):
        run_step(project, "alignment.assign", {}, {"aligned": source, "tilt_series": target})
