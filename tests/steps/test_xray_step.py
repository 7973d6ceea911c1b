"""Step ``xray.erase`` on the simulator's tiny preset and on a synthetic stack with injected hot pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tomoforge.io.mrc import read_mrc, write_mrc
from tomoforge.steps._artifacts import read_tilt_series, write_tilt_series
from tomoforge.steps.xray_eraser import XrayEraseParams, read_xray_table
from tomoforge.workflow import Node, Project, Ref, RunResult, get_registry, run_pipeline, run_step


def chain(frames: Path) -> dict[str, Node]:
    return {
        "import": Node("import.movies", {}, {"movies": frames}),
        "motion": Node("motion.correct", {"even_odd": True}, {"movies": Ref("import", "movies")}),
        "xray": Node("xray.erase", {}, {"tilt_series": Ref("motion", "tilt_series")}),
    }


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tomoforge.simulate import generate_dataset, preset_config

    out = tmp_path_factory.mktemp("tiny_xray")
    generate_dataset(preset_config("tiny"), out)
    return out


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    return Project.init(tmp_path_factory.mktemp("xray_project") / "project")


@pytest.fixture(scope="module")
def results(project: Project, dataset: Path) -> dict[str, RunResult]:
    return run_pipeline(project, chain(dataset / "frames"))


def test_step_is_registered_with_scipion_defaults() -> None:
    spec = get_registry().get("xray.erase")
    assert spec.summary is not None and spec.methods is not None
    assert "doi:" in spec.methods(spec.params_model())
    assert all(f.description for f in spec.params_model.model_fields.values())
    p = XrayEraseParams()
    assert (p.peak_criterion_sd, p.difference_criterion_sd, p.max_radius_px) == (8.0, 6.0, 4.2)
    assert (p.big_difference_criterion_sd, p.edge_exclusion_px, p.border_px, p.polynomial_order) == (
        19,
        4,
        2,
        2,
    )


def test_output_differs_only_at_erased_pixels(results: dict[str, RunResult]) -> None:
    from tomoforge.preprocess import find_xrays

    (before,) = read_tilt_series(results["motion"].outputs["tilt_series"].path)
    folder = results["xray"].outputs["tilt_series"].path
    (after,) = read_tilt_series(folder)
    assert after.tilt_angles_deg == before.tilt_angles_deg and after.even_stack_file is not None
    assert (folder / "TS_01_motion.csv").is_file()
    raw = np.array(read_mrc(before.stack_file).data, dtype=np.float32)
    erased = np.asarray(read_mrc(after.stack_file).data, dtype=np.float32)
    mask, objects = find_xrays(torch.from_numpy(raw), **XrayEraseParams().find_kwargs())
    changed = raw != erased
    assert not (changed & ~mask.numpy()).any()
    table = read_xray_table(folder / "TS_01_xrays.csv")
    assert len(table) == len(objects) > 0 and changed.any()
    assert sum(int(r["n_pixels"]) for r in table) == int(mask.sum())
    for row in table:
        i, y, x = int(row["tilt_index"]), round(row["y_px"]), round(row["x_px"])
        assert row["tilt_angle_deg"] == pytest.approx(before.tilt_angles_deg[i])
        assert mask[i, max(y - 5, 0) : y + 6, max(x - 5, 0) : x + 6].any()
    summary = get_registry().get("xray.erase").summary
    assert summary is not None
    numbers = summary(results["xray"].outputs)["TS_01"]
    assert isinstance(numbers, dict) and sum(numbers["objects_erased_per_tilt"]) == len(table)
    assert len(numbers["objects_erased_per_tilt"]) == 9


def test_rerun_is_cached(project: Project, dataset: Path, results: dict[str, RunResult]) -> None:
    again = run_pipeline(project, chain(dataset / "frames"))
    assert all(r.cached for r in again.values())
    assert again["xray"].run.id == results["xray"].run.id


def test_injected_hot_pixels_are_erased(
    project: Project, results: dict[str, RunResult], tmp_path: Path
) -> None:
    (series,) = read_tilt_series(results["motion"].outputs["tilt_series"].path)
    n, (h, w) = series.n_tilts, (96, 96)
    rng = np.random.default_rng(5)
    stack = rng.normal(100.0, 10.0, size=(n, h, w)).astype(np.float32)
    grid = np.stack(np.meshgrid(np.arange(10, h - 10, 12), np.arange(10, w - 10, 12), indexing="ij"), -1)
    points = grid.reshape(-1, 2)
    hits = []
    for i in range(n):
        for y, x in points:
            y, x = int(y + rng.integers(-2, 3)), int(x + rng.integers(-2, 3))
            stack[i, y, x] += float(rng.uniform(200.0, 2000.0))
            hits.append((i, y, x))
    folder = tmp_path / "ts"
    folder.mkdir()
    write_mrc(stack, folder / "TS_01.mrc", voxel_size_angstrom=series.pixel_size_angstrom)
    write_tilt_series(
        folder,
        series.model_copy(
            update={"stack_file": folder / "TS_01.mrc", "even_stack_file": None, "odd_stack_file": None}
        ),
    )
    result = run_step(project, "xray.erase", {}, {"tilt_series": folder})
    (out,) = read_tilt_series(result.outputs["tilt_series"].path)
    erased = np.asarray(read_mrc(out.stack_file).data)
    removed = sum(abs(float(erased[i, y, x]) - 100.0) < 50.0 for i, y, x in hits)
    assert removed >= 0.99 * len(hits), f"{removed}/{len(hits)} injected pixels erased"
    assert len(read_xray_table(result.outputs["tilt_series"].path / "TS_01_xrays.csv")) >= 0.99 * len(hits)


def test_dead_pixels_are_erased_and_listed_as_dark(
    project: Project, results: dict[str, RunResult], tmp_path: Path
) -> None:
    (series,) = read_tilt_series(results["motion"].outputs["tilt_series"].path)
    n, (h, w) = series.n_tilts, (96, 96)
    rng = np.random.default_rng(7)
    stack = rng.normal(1000.0, 20.0, size=(n, h, w)).astype(np.float32)
    dead, hot = [], []
    for i in range(n):
        for k, (y, x) in enumerate((y, x) for y in range(12, h - 12, 16) for x in range(12, w - 12, 16)):
            if k % 3 == 0:  # a hot pixel in every third cell, a dead pixel or 2×2 dead cluster in the others
                stack[i, y, x] += 2000.0
                hot.append((i, y, x))
            elif k % 3 == 1:
                stack[i, y, x] = 0.0
                dead.append((i, y, x))
            else:
                stack[i, y : y + 2, x : x + 2] = 0.0
                dead += [(i, y + dy, x + dx) for dy in (0, 1) for dx in (0, 1)]
    folder = tmp_path / "ts"
    folder.mkdir()
    write_mrc(stack, folder / "TS_01.mrc", voxel_size_angstrom=series.pixel_size_angstrom)
    write_tilt_series(
        folder,
        series.model_copy(
            update={"stack_file": folder / "TS_01.mrc", "even_stack_file": None, "odd_stack_file": None}
        ),
    )
    result = run_step(project, "xray.erase", {}, {"tilt_series": folder})
    out_folder = result.outputs["tilt_series"].path
    (out,) = read_tilt_series(out_folder)
    erased = np.asarray(read_mrc(out.stack_file).data)
    for points in (dead, hot):
        assert sum(abs(float(erased[i, y, x]) - 1000.0) < 100.0 for i, y, x in points) >= 0.99 * len(points)
    changed = erased != stack
    injected = np.zeros_like(changed)
    for i, y, x in dead + hot:
        injected[i, y, x] = True
    assert (changed & ~injected).sum() <= 1e-4 * (~injected).sum()
    table = read_xray_table(out_folder / "TS_01_xrays.csv")
    n_dark_objects = n * sum(1 for k in range(25) if k % 3)  # 5×5 cells per tilt
    assert sum(r["polarity"] == -1 for r in table) == n_dark_objects
    assert sum(r["polarity"] == 1 for r in table) == len(hot)
    for row in table:
        i, y, x = int(row["tilt_index"]), round(row["y_px"]), round(row["x_px"])
        assert stack[i, y, x] == 0.0 if row["polarity"] == -1 else stack[i, y, x] > 1500.0
    summary = get_registry().get("xray.erase").summary
    assert summary is not None
    numbers = summary(result.outputs)["TS_01"]
    assert isinstance(numbers, dict) and numbers["dark_objects_erased"] == n_dark_objects


def test_xray_table_written_before_the_polarity_column_still_reads(tmp_path: Path) -> None:
    old = tmp_path / "TS_01_xrays.csv"
    old.write_text("tilt_index,tilt_angle_deg,y_px,x_px,radius_px,n_pixels\n3,-6.0,10.000,12.500,0.500,2\n")
    (row,) = read_xray_table(old)
    assert row == {
        "tilt_index": 3.0,
        "tilt_angle_deg": -6.0,
        "y_px": 10.0,
        "x_px": 12.5,
        "radius_px": 0.5,
        "n_pixels": 2.0,
        "polarity": 1.0,
    }
    bad = tmp_path / "bad_xrays.csv"
    bad.write_text("tilt,y,x\n1,2,3\n")
    with pytest.raises(ValueError, match="not an X-ray table"):
        read_xray_table(bad)
