"""Fiducial alignment on a simulated dataset, through the engine, scored against the truth.

Usage::

    tomoforge simulate --preset demo --out demo
    python benchmarks/alignment_fiducial_demo.py demo [--axis-offset-deg 5] [--workdir DIR]

Runs import.movies → motion.correct → alignment.coarse → alignment.fiducial_model → alignment.fiducial (tutorial
parameters: two surfaces, rotation and tilt grouped by 5, magnification fixed) on the first tilt series, then
scores the coarse and the fiducial alignment with :func:`tomoforge.simulate.scoring.alignment.score_alignment`
(true gold reprojected with the estimated and the true geometry after a rigid fit), reports the tilt-axis and
tilt-angle errors, how many beads were tracked through ≥ 80 % of the views, and the time of every step.
``--axis-offset-deg`` imports the movies with a tilt axis that far from the mdoc's, to show it is corrected.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path


def _tracking_coverage(truth: Path, folder: Path, ts_id: str) -> dict[str, object]:
    """Tracked views of every tracked bead over the views where its true bead lies inside the image."""
    import numpy as np
    import torch

    from tomoforge.geometry import project_points, projection_matrices_from_xf
    from tomoforge.models import LandmarkModel, load_json
    from tomoforge.simulate.scoring.alignment import read_export_alignment, read_gold_csv

    data = read_export_alignment(truth, ts_id)
    assert data is not None
    px = data.pixel_size_angstrom
    t = [m for m in data.alignment.transforms if m is not None]
    a = torch.tensor([[[m.a11, m.a12], [m.a21, m.a22]] for m in t], dtype=torch.float64)
    d = torch.tensor([[m.dx_angstrom, m.dy_angstrom] for m in t], dtype=torch.float64)
    theta = torch.tensor(data.alignment.tilt_angles_deg, dtype=torch.float64)
    matrices = projection_matrices_from_xf(a, d / px, theta, torch.zeros_like(theta))
    gold = torch.from_numpy(read_gold_csv(truth / "gold" / f"{ts_id}.csv") / px)
    model = load_json(LandmarkModel, folder / f"{ts_id}_fiducials.json")
    shape = np.array(json.loads((truth / "alignment" / f"{ts_id}.json").read_text())["image_size_xy"])
    true_xy = project_points(gold, matrices)[..., :2].numpy() + shape // 2
    if true_xy.shape[0] == len(theta):  # (n, g, 2) → (g, n, 2)
        true_xy = np.transpose(true_xy, (1, 0, 2))
    r = model.bead_diameter_px / 2
    visible = ((true_xy >= r) & (true_xy <= shape - 1 - r)).all(-1)
    tracked = model.to_array()
    fractions, errors = [], []
    for b in range(tracked.shape[0]):
        seen = np.isfinite(tracked[b, :, 0])
        dist = np.nanmean(np.linalg.norm(true_xy - tracked[b][None], axis=-1), axis=1)
        g = int(np.nanargmin(dist))
        fractions.append(float((seen & visible[g]).sum() / max(visible[g].sum(), 1)))
        errors.append(np.linalg.norm(true_xy[g][seen] - tracked[b][seen], axis=-1))
    all_errors = np.concatenate(errors)
    return {
        "beads_tracked": int(tracked.shape[0]),
        "true_beads_in_field_at_zero_tilt": int(visible[:, int(np.argmin(np.abs(theta.numpy())))].sum()),
        "fraction_of_visible_views_per_bead": [round(f, 3) for f in fractions],
        "beads_through_80pct_of_visible_views": int(sum(f >= 0.8 for f in fractions)),
        "point_error_rms_px": round(float(np.sqrt(np.mean(all_errors**2))), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--axis-offset-deg", type=float, default=0.0)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--patches", action="store_true", help="patch tracking instead of the bead model")
    args = parser.parse_args()

    from tomoforge.simulate.scoring.alignment import score_alignment
    from tomoforge.steps._artifacts import read_tilt_series, read_tilt_series_movies
    from tomoforge.workflow import Project, RunOutput, run_step

    work = args.workdir or Path(tempfile.mkdtemp(prefix="align_bench_"))
    project = Project.init(work / "project")
    timings: dict[str, float] = {}

    def timed(name: str, *a, **k):  # noqa: ANN002, ANN003, ANN202
        t0 = time.perf_counter()
        result = run_step(project, name, *a, **k)
        timings[name] = round(time.perf_counter() - t0, 2)
        return result

    imported = timed("import.movies", {}, {"movies": args.dataset / "frames"})
    (movies,) = read_tilt_series_movies(imported.outputs["movies"].path)[:1]
    nominal = movies.acquisition.tilt_axis_angle_deg
    if args.axis_offset_deg:
        imported = timed(
            "import.movies",
            {"tilt_axis_angle_deg": nominal + args.axis_offset_deg},
            {"movies": args.dataset / "frames"},
        )
    corrected = timed("motion.correct", {}, {"movies": RunOutput(imported.run.id, "movies")})
    coarse = timed("alignment.coarse", {}, {"tilt_series": RunOutput(corrected.run.id, "tilt_series")})
    landmarks = "alignment.patch_tracking" if args.patches else "alignment.fiducial_model"
    model = timed(landmarks, {}, {"tilt_series": RunOutput(coarse.run.id, "tilt_series")})
    fit = {"rotation": "one", "tilt": "fixed"} if args.patches else {}
    fiducial = timed("alignment.fiducial", fit, {"tilt_series": RunOutput(model.run.id, "tilt_series")})

    truth = args.dataset / "truth"
    truth_axis = None
    report: dict[str, object] = {
        "timings_s": timings,
        "mdoc_axis_deg": nominal,
        "axis_given_deg": nominal + args.axis_offset_deg,
    }
    for label, result in (("coarse", coarse), ("fiducial", fiducial)):
        folder = result.outputs["tilt_series"].path
        results = work / f"results_{label}" / "alignment"
        results.mkdir(parents=True, exist_ok=True)
        for suffix in (".xf", ".tlt"):
            shutil.copyfile(folder / f"{movies.ts_id}{suffix}", results / f"{movies.ts_id}{suffix}")
        score = score_alignment(truth, results.parent, movies.ts_id)
        report[label] = {
            k: getattr(score, k, None)
            for k in (
                "rms_px",
                "max_view_rms_px",
                "tilt_axis_angle_error_deg",
                "tilt_angle_rms_error_deg",
                "tilt_angle_offset_deg",
                "n_gold",
                "mirrored",
            )
        }
        if hasattr(score, "views"):
            report[label]["max_tilt_error_deg"] = max(  # type: ignore[index]
                abs(v.tilt_angle_error_deg) for v in score.views if v.tilt_angle_error_deg is not None
            )
    if not args.patches:
        report["tracking"] = _tracking_coverage(truth, model.outputs["tilt_series"].path, movies.ts_id)
    fid = json.loads((fiducial.outputs["tilt_series"].path / f"{movies.ts_id}_alignment.json").read_text())
    report["landmarks"] = project.store.summary(model.run.id)[movies.ts_id]
    report["mean_residual_nm"] = fid["mean_residual_nm"]
    report["solved_axis_deg"] = fid["tilt_axis_deg_mean"]
    report["true_axis_deg"] = truth_axis
    report["surfaces"] = fid.get("surfaces")
    (series,) = read_tilt_series(fiducial.outputs["tilt_series"].path)
    report["stack"] = {"pixel_size_angstrom": series.pixel_size_angstrom, "shape_yx": series.image_shape_yx}
    print(json.dumps(report, indent=1, default=str))


if __name__ == "__main__":
    main()
