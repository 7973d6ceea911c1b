"""``averaging.extract``: every particle's projection lands in the centre of its box in every visible tilt.

The tiny preset's geometry (raw 96 × 96 stack of 10 Å with the true IMOD alignment, tilt axis 86°) is kept, but
the images are replaced by blobs drawn where the true alignment, read independently from the simulator's ``.xf``
and ``.tlt`` (:func:`tomoforge.io.convert.read_alignment`), projects three points; the CTF is made flat (1 Å of
defocus) so that the premultiplied boxes are the blobs themselves.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import starfile
import torch

from tiny_series import series_without_ctf, true_tiny_series
from tomoforge.geometry import project_points, projection_matrices_from_xf
from tomoforge.io.convert import read_alignment
from tomoforge.io.mrc import read_mrc, write_mrc
from tomoforge.models import CtfParameters, Particle, ParticleSet, TiltSeries, save_json
from tomoforge.steps._artifacts import write_tilt_series
from tomoforge.workflow import Project, StepFailedError, run_step

# Å from the centre; 25 px apart in y, so that no blob reaches another one's box.
POINTS = np.array([[0.0, 0.0, 0.0], [120.0, -250.0, 80.0], [-150.0, 250.0, -60.0]])
SIGMA = 1.5  # px


@pytest.fixture(scope="module")
def blobs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Project, Path, Path, TiltSeries]:
    root = tmp_path_factory.mktemp("extract")
    project = Project.init(root / "project")
    truth, series = true_tiny_series(root / "data", project)
    sidecar = json.loads((truth / "alignment" / "TS_01.json").read_text())
    alignment = read_alignment(
        truth / "alignment" / "TS_01.xf", pixel_size_angstrom=10.0, image_size_xy=sidecar["image_size_xy"]
    )
    a = torch.tensor([[[t.a11, t.a12], [t.a21, t.a22]] for t in alignment.transforms], dtype=torch.float64)
    d = (
        torch.tensor([[t.dx_angstrom, t.dy_angstrom] for t in alignment.transforms], dtype=torch.float64)
        / 10.0
    )
    matrices = projection_matrices_from_xf(
        a, d, list(alignment.tilt_angles_deg), list(alignment.x_tilt_angles_deg)
    )
    h, w = series.image_shape_yx or (0, 0)
    yy, xx = np.indices((h, w))
    stack = np.ones((series.n_tilts, h, w), dtype=np.float32)
    for i in range(series.n_tilts):
        projected = project_points(torch.from_numpy(POINTS / 10.0), matrices[i]).numpy()
        for x, y, _ in projected:
            stack[i] += 0.5 * np.exp(-0.5 * ((xx - (x + w // 2)) ** 2 + (yy - (y + h // 2)) ** 2) / SIGMA**2)
    folder = root / "tilt_series"
    folder.mkdir()
    write_mrc(stack, folder / "TS_01.mrc", voxel_size_angstrom=10.0, is_stack=True)
    flat = CtfParameters(defocus_u_angstrom=1.0, defocus_v_angstrom=1.0, astigmatism_angle_deg=0.0)
    series = series.model_copy(
        update={
            "stack_file": folder / "TS_01.mrc",
            "tilts": [t.model_copy(update={"ctf": flat}) for t in series.tilts],
        }
    )
    write_tilt_series(folder, series)
    particles = root / "particles"
    particles.mkdir()
    eye = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))
    save_json(
        ParticleSet(
            particles=[
                Particle(ts_id="TS_01", position_angstrom=tuple(p), rotation_matrix=eye) for p in POINTS
            ],  # type: ignore[arg-type]
            pixel_size_angstrom=10.0,
        ),
        particles / "particles.json",
    )
    return project, folder, particles, series


def _centroid(box: np.ndarray) -> tuple[float, float]:
    v = box - np.median(box)
    weight = v * v
    yy, xx = np.indices(box.shape)
    return float((weight * xx).sum() / weight.sum()), float((weight * yy).sum() / weight.sum())


def test_each_point_lands_in_the_box_centre_in_every_tilt(
    blobs: tuple[Project, Path, Path, TiltSeries],
) -> None:
    project, series_folder, particles, series = blobs
    result = run_step(
        project,
        "averaging.extract",
        {"box_size_px": 24, "crop_size_px": 16, "dose_weighting": False},
        {"particles": particles, "tilt_series": series_folder},
    )
    out = result.outputs["subtomograms"].path
    record = json.loads((out / "extraction.json").read_text())
    assert record["dropped"] == 0 and (record["box_size_px"], record["crop_size_px"]) == (24, 16)
    for entry in record["particles"]:
        stack = np.asarray(read_mrc(out / entry["file"]).data).reshape(-1, 16, 16)
        assert len(stack) == len(entry["tilts"]) == sum(entry["visible"]) >= 5
        for box in stack:
            cx, cy = _centroid(box)
            assert abs(cx - 8) < 0.1 and abs(cy - 8) < 0.1, (entry["index"], cx, cy)
    table = starfile.read(out / "particles.star", always_dict=True)
    assert int(table["general"]["rlnTomoSubTomosAre2DStacks"]) == 1
    rows = table["particles"]
    assert list(rows["rlnImageName"]) == [e["file"] for e in record["particles"]]
    assert list(rows["rlnTomoVisibleFrames"]) == [
        "[" + ",".join(str(v) for v in e["visible"]) + "]" for e in record["particles"]
    ]
    assert len(record["particles"][0]["visible"]) == len(series.included())


def test_max_dose_min_frames_and_the_cli(
    blobs: tuple[Project, Path, Path, TiltSeries], tmp_path: Path, cli: Callable[..., tuple[int, str, str]]
) -> None:
    _, series_folder, particles, series = blobs
    doses = sorted(t.prior_dose_e_per_angstrom2 for t in series.tilts)
    project = Project.init(tmp_path / "project")
    project.close()  # the CLI opens the project itself
    code, out, err = cli(
        "run", "averaging.extract", "-p", str(project.root), "--input", f"particles={particles}",
        "--input", f"tilt_series={series_folder}", "--box-size-px", "12", "--binning", "2",
        "--max-dose-e-per-angstrom2", str(doses[3] + 0.01), "--min-frames", "4",
    )  # fmt: skip
    assert code == 0 and "succeeded" in out + err, out + err
    (made,) = (project.root / "runs").glob("*/subtomograms/extraction.json")
    record = json.loads(made.read_text())
    assert record["pixel_size_angstrom"] == 20.0
    for entry in record["particles"]:
        assert 4 <= len(entry["tilts"]) <= 4  # only the four least-exposed tilts may be used
    assert record["dropped"] == len(POINTS) - len(record["particles"])


def test_crop_larger_than_box_and_missing_ctf_are_refused(
    blobs: tuple[Project, Path, Path, TiltSeries], tmp_path: Path
) -> None:
    project, series_folder, particles, series = blobs
    with pytest.raises(Exception, match="crop_size_px"):
        run_step(
            project, "averaging.extract", {"box_size_px": 12, "crop_size_px": 16},
            {"particles": particles, "tilt_series": series_folder},
        )  # fmt: skip
    no_ctf = series_without_ctf(tmp_path / "no_ctf", series)
    with pytest.raises(StepFailedError, match="ctf.estimate"):
        run_step(project, "averaging.extract", {}, {"particles": particles, "tilt_series": no_ctf})


def test_3d_subtomograms_hold_each_point_at_their_centre(
    blobs: tuple[Project, Path, Path, TiltSeries],
) -> None:
    project, series_folder, particles, _ = blobs
    result = run_step(
        project,
        "averaging.extract",
        {"box_size_px": 24, "crop_size_px": 16, "dose_weighting": False, "dimension": "3d"},
        {"particles": particles, "tilt_series": series_folder},
    )
    out = result.outputs["subtomograms"].path
    record = json.loads((out / "extraction.json").read_text())
    for entry in record["particles"]:
        data = np.asarray(read_mrc(out / entry["file"]).data, dtype=np.float64)
        weights = np.asarray(read_mrc(out / entry["weights"]).data, dtype=np.float64)
        assert data.shape == weights.shape == (16, 16, 16)
        v = (data - np.median(data)) ** 2
        zz, yy, xx = np.indices(v.shape)
        centroid = [float((v * a).sum() / v.sum()) for a in (xx, yy, zz)]
        assert np.allclose(centroid, 8.0, atol=0.3), centroid
        # Σ CTF²: positive where views were inserted, and Hermitian (W(−k) = W(k) about the centre voxel).
        assert weights[8, 8, 8] > 0 and np.allclose(
            weights[1:, 1:, 1:], weights[1:, 1:, 1:][::-1, ::-1, ::-1]
        )
    table = starfile.read(out / "particles.star", always_dict=True)
    assert int(table["general"]["rlnTomoSubTomosAre2DStacks"]) == 0
    assert list(table["particles"]["rlnCtfImage"]) == [e["weights"] for e in record["particles"]]
