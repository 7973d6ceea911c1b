"""``tomogram.reconstruct``: WBP and SIRT through the engine and the CLI, checked against the simulator's gold.

The tiny preset (96 × 96 px of 10 Å, tilt axis 86°, gold beads 350 Å above and below the mid-plane) is motion
corrected and given its true alignment; the raw stack is then reconstructed at bin 2 (the truth tomogram's 20 Å
voxels, 58 thick). A gold bead is the darkest thing in the tomogram, so sampling the tomogram where the simulator put
the beads — and where a mirrored reconstruction would have put them — checks position, sign of z, handedness and the
tilt-axis direction end to end.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tiny_series import true_tiny_series
from tomoforge.io.mrc import read_mrc, write_mrc
from tomoforge.models import TiltSeries
from tomoforge.steps._artifacts import write_tilt_series
from tomoforge.steps._tomograms import read_tomograms
from tomoforge.workflow import Artifact, Project, StepFailedError, get_registry, run_step

BIN = 2
THICKNESS = 58


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Project, Path, TiltSeries]:
    """Project, truth folder and the motion-corrected tiny series with its true transforms and tilt angles."""
    data = tmp_path_factory.mktemp("reconstruct_data")
    project = Project.init(tmp_path_factory.mktemp("reconstruct") / "project")
    truth, series = true_tiny_series(data, project, even_odd=True)
    return project, truth, series


def _folder(base: Path, series: TiltSeries, **changes: object) -> Path:
    """A ``tilt_series`` artifact folder holding ``series`` (stacks hard-linked) with ``changes`` applied."""
    base.mkdir(parents=True)
    links: dict[str, Path | None] = {}
    for field, suffix in (("stack_file", ""), ("even_stack_file", "_even"), ("odd_stack_file", "_odd")):
        source = getattr(series, field)
        if source is None:
            links[field] = None
            continue
        target = base / f"{series.ts_id}{suffix}.mrc"
        os.link(source, target)
        links[field] = target
    write_tilt_series(base, series.model_copy(update={**links, **changes}))
    return base


def _gold_z_scores(volume: np.ndarray, truth: Path, voxel: float, *, mirror_z: bool = False) -> np.ndarray:
    """Mean z-score of the 3³ voxels at every true gold position (optionally at z mirrored)."""
    gold = np.loadtxt(truth / "gold" / "TS_01.csv", delimiter=",", skiprows=1)[:, :3]
    nz, ny, nx = volume.shape
    normed = (volume - volume.mean()) / volume.std()
    scores = []
    for x, y, z in gold:
        i, j = round(x / voxel) + nx // 2, round(y / voxel) + ny // 2
        k = round((-z if mirror_z else z) / voxel) + nz // 2
        assert 1 <= i < nx - 1 and 1 <= j < ny - 1 and 1 <= k < nz - 1
        scores.append(normed[k - 1 : k + 2, j - 1 : j + 2, i - 1 : i + 2].mean())
    return np.array(scores)


def _reconstruct(project: Project, folder: Path, **params: object) -> Path:
    options = {"binning": BIN, "thickness_px": THICKNESS, **params}
    return (
        run_step(project, "tomogram.reconstruct", options, {"tilt_series": folder}).outputs["tomograms"].path
    )


@pytest.fixture(scope="module")
def wbp(tiny: tuple[Project, Path, TiltSeries], tmp_path_factory: pytest.TempPathFactory) -> Path:
    project, _, series = tiny
    folder = _folder(tmp_path_factory.mktemp("wbp") / "tilt_series", series)
    return _reconstruct(project, folder, even_odd=True)


def test_wbp_puts_the_gold_where_the_simulator_did(tiny: tuple[Project, Path, TiltSeries], wbp: Path) -> None:
    _, truth, series = tiny
    (tomogram,) = read_tomograms(wbp)
    volume = read_mrc(tomogram.volume_file)
    data = np.asarray(volume.data, dtype=np.float64)
    voxel = series.pixel_size_angstrom * BIN
    assert data.shape == (THICKNESS, 48, 48) and tomogram.shape_zyx == (THICKNESS, 48, 48)
    assert volume.pixel_size_angstrom == pytest.approx(voxel)
    assert tomogram.voxel_size_angstrom == pytest.approx(voxel) and tomogram.reconstruction_method == "wbp"
    at_gold = _gold_z_scores(data, truth, voxel)
    mirrored = _gold_z_scores(data, truth, voxel, mirror_z=True)
    assert at_gold.max() < -4.0, at_gold  # every bead is dark where it should be ...
    assert mirrored.min() > -3.0, mirrored  # ... and not where a wrong hand would put it


def test_outputs_model_previews_and_summary(tiny: tuple[Project, Path, TiltSeries], wbp: Path) -> None:
    project, _, series = tiny
    (tomogram,) = read_tomograms(wbp)
    header = read_mrc(tomogram.volume_file)
    # The header origin puts the centre voxel at the specimen origin (Scipion's default origin).
    np.testing.assert_allclose(header.origin_angstrom, [-24 * 20.0, -24 * 20.0, -29 * 20.0])
    assert tomogram.even_volume_file is not None and tomogram.odd_volume_file is not None
    full = np.asarray(header.data, dtype=np.float64)
    halves = sum(
        np.asarray(read_mrc(p).data, dtype=np.float64)
        for p in (tomogram.even_volume_file, tomogram.odd_volume_file)
    )
    assert (
        np.corrcoef(full.ravel(), halves.ravel())[0, 1] > 0.99
    )  # reconstruction is linear: full = even + odd
    for name, shape in (("TS_01_xy.png", (48, 48)), ("TS_01_xz.png", (THICKNESS, 48))):
        png = (wbp / name).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        assert int.from_bytes(png[16:20], "big") == shape[1] and int.from_bytes(png[20:24], "big") == shape[0]
    spec = get_registry().get("tomogram.reconstruct")
    assert spec.summary is not None
    summary = spec.summary(
        {"tomograms": Artifact(run_id=0, name="tomograms", kind="tomograms", path=wbp, token="")}
    )["TS_01"]
    assert isinstance(summary, dict)
    assert summary["xy_slice"] == "TS_01_xy.png" and summary["xz_slice"] == "TS_01_xz.png"
    assert summary["size_xyz_voxels"] == f"48 × 48 × {THICKNESS}" and summary["views_used"] == series.n_tilts
    record = json.loads((wbp / "TS_01_reconstruction.json").read_text())
    assert (
        len(record["acquisition_orders_used"]) == series.n_tilts
        and record["excluded_acquisition_orders"] == []
    )


def test_excluded_views_have_no_influence(tiny: tuple[Project, Path, TiltSeries], tmp_path: Path) -> None:
    """An excluded view filled with garbage gives exactly the reconstruction of the other views."""
    project, _, series = tiny
    victim = series.n_tilts // 2 + 1
    stack = np.asarray(read_mrc(series.stack_file).data, dtype=np.float32).copy()
    stack[victim] = 1e4 * np.random.default_rng(0).standard_normal(stack.shape[1:])
    spoiled = tmp_path / "spoiled.mrc"
    write_mrc(stack, spoiled, voxel_size_angstrom=series.pixel_size_angstrom)
    tilts = [t.model_copy(update={"excluded": t.index == victim}) for t in series.tilts]
    clean = series.model_copy(update={"tilts": tilts, "even_stack_file": None, "odd_stack_file": None})
    a = _reconstruct(project, _folder(tmp_path / "a", clean))
    b = _reconstruct(project, _folder(tmp_path / "b", clean.model_copy(update={"stack_file": spoiled})))
    np.testing.assert_allclose(read_mrc(a / "TS_01.mrc").data, read_mrc(b / "TS_01.mrc").data, atol=1e-5)
    record = json.loads((a / "TS_01_reconstruction.json").read_text())
    assert record["excluded_acquisition_orders"] == [series.tilts[victim].acquisition_order]
    assert len(record["tilt_angles_used_deg"]) == series.n_tilts - 1


def test_sub_volume_equals_the_same_block_of_the_full_volume(
    tiny: tuple[Project, Path, TiltSeries], tmp_path: Path
) -> None:
    """Width, row range and z offset select a block of the same tomogram (IMOD/tomo3d -x, -y, SHIFT)."""
    project, _, series = tiny
    plain = series.model_copy(update={"even_stack_file": None, "odd_stack_file": None})
    folder = _folder(tmp_path / "ts", plain)
    full = np.asarray(
        read_mrc(_reconstruct(project, folder, thickness_px=60, slab_rows=7) / "TS_01.mrc").data
    )
    part_dir = _reconstruct(
        project, folder, thickness_px=20, z_offset_px=10, width_px=32, y_start=9, y_stop=40
    )
    part = np.asarray(read_mrc(part_dir / "TS_01.mrc").data)
    # Full: voxel k is specimen z = k − 30, i = x + 24. Part: k' is z = k' − 10 + 10 = k', i' = x + 16.
    np.testing.assert_allclose(part, full[30:50, 9:40, 8:40], atol=1e-4)
    (tomogram,) = read_tomograms(part_dir)
    voxel = series.pixel_size_angstrom * BIN
    # Centre row 9 + 31//2 = 24 is view row 24 = specimen y 0; centre voxel at z = 10 voxels.
    assert tomogram.origin_angstrom == pytest.approx((0.0, 0.0, 10 * voxel))


def test_sirt_from_the_cli_and_x_tilt_rules(
    tiny: tuple[Project, Path, TiltSeries], tmp_path: Path, cli: Callable[..., tuple[int, str, str]]
) -> None:
    project, truth, series = tiny
    plain = series.model_copy(update={"even_stack_file": None, "odd_stack_file": None})
    folder = _folder(tmp_path / "ts", plain)
    own = Project.init(tmp_path / "cli_project")
    own.close()  # the CLI opens the project itself
    code, out, err = cli(
        "run", "tomogram.reconstruct", "-p", str(own.root), "--input", f"tilt_series={folder}",
        "--method", "sirt", "--iterations", "8", "--binning", str(BIN), "--thickness-px", str(THICKNESS),
    )  # fmt: skip
    assert code == 0 and "succeeded" in out + err, out + err
    (made,) = (own.root / "runs").glob("*/tomograms/TS_01.mrc")
    data = np.asarray(read_mrc(made).data, dtype=np.float64)
    at_gold, mirrored = _gold_z_scores(data, truth, 20.0), _gold_z_scores(data, truth, 20.0, mirror_z=True)
    assert at_gold.max() < -2.5 and mirrored.min() > -1.5, (at_gold, mirrored)
    # With an x-axis tilt WBP takes the general path (beads still in place); SIRT refuses clearly.
    tilted = plain.model_copy(
        update={"tilts": [t.model_copy(update={"x_tilt_angle_deg": 0.5}) for t in plain.tilts]}
    )
    tilted_dir = _folder(tmp_path / "tilted", tilted)
    volume = np.asarray(read_mrc(_reconstruct(project, tilted_dir) / "TS_01.mrc").data, dtype=np.float64)
    assert _gold_z_scores(volume, truth, 20.0).max() < -4.0
    with pytest.raises(StepFailedError, match="x-axis tilt"):
        _reconstruct(project, tilted_dir, method="sirt")


def test_too_few_present_views_is_a_clear_error(
    tiny: tuple[Project, Path, TiltSeries], tmp_path: Path
) -> None:
    project, _, series = tiny
    tilts = [t.model_copy(update={"excluded": t.index > 0}) for t in series.tilts]
    folder = _folder(tmp_path / "ts", series.model_copy(update={"tilts": tilts}))
    with pytest.raises(StepFailedError, match="present view"):
        _reconstruct(project, folder)
