"""``picking.template`` on the demo pipeline's own tomogram, scored against the simulator's particles; and its time
per orientation at the tutorial's bin-6 size.

Starts from the project of ``benchmarks/reconstruction_pipeline_demo.py`` (bin-2 tomograms of 10.8 Å voxels in
the frame the fiducial alignment solved) after ``benchmarks/picking_vesicles_demo.py`` (whose ``picking.vesicles``
run gives the surfaces). The reference is the simulator's hexamer map (``truth/average/map.mrc``, 5.4 Å: the
density of the CA-SP1 hexamer model, as a user would simulate a reference from a PDB model), with C6 symmetry.
The search runs twice, over all orientations and near the vesicle surfaces (±``--normal-range``° of the normal),
with a low score threshold so that every peak is kept with its score; the picks are then scored at 40 Å against
the true particles (registered on the gold beads, as in the vesicle benchmark) at the default one-false-alarm
threshold and at a sweep of thresholds.

The timing part runs the kernel on a random tomogram of the tutorial's bin-6 size (``--timing-shape``; EMPIAR-10164
at 8.1 Å: about 320 × 310 × 300) with a 34³ template, the size in pytom-match-pick's published timings, for a few
orientations, and reports seconds per orientation and for whole angular searches.

Usage::

    python benchmarks/picking_template_demo.py --project P --alignment-run 6 --tomogram-run 9 \
        --vesicles-run 12 --truth DEMO/truth
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from tomoforge.io.mrc import read_mrc
from tomoforge.io.relion5 import read_relion_particles
from tomoforge.picking import angular_sampling, false_alarm_threshold, match_template, missing_wedge_weight
from tomoforge.workflow import Project, RunOutput, run_step

sys.path.insert(0, str(Path(__file__).parent))
from reconstruction_pipeline_demo import _register, _solved_beads_angstrom  # noqa: E402


def _precision_recall(picks: np.ndarray, truth: np.ndarray, radius: float) -> tuple[float, float, int]:
    """Recall (true particles with a pick within ``radius``), precision (picks within ``radius`` of a true one)."""
    if len(picks) == 0:
        return 0.0, 0.0, 0
    distance = np.linalg.norm(picks[:, None] - truth[None], axis=-1)
    return float((distance.min(0) <= radius).mean()), float((distance.min(1) <= radius).mean()), len(picks)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--project", type=Path, required=True)
    parser.add_argument("--alignment-run", type=int, required=True)
    parser.add_argument("--tomogram-run", type=int, required=True)
    parser.add_argument("--vesicles-run", type=int, required=True)
    parser.add_argument("--truth", type=Path, required=True)
    parser.add_argument("--angular-step", type=float, default=15.0)
    parser.add_argument("--normal-range", type=float, default=20.0)
    parser.add_argument("--radius", type=float, default=40.0)
    parser.add_argument("--min-distance", type=float, default=50.0, help="picks at least this far apart, Å")
    parser.add_argument("--timing-shape", default="300,310,320", help="z,y,x of the timing tomogram")
    parser.add_argument("--timing-orientations", type=int, default=20)
    parser.add_argument("--skip-timing", action="store_true")
    args = parser.parse_args()
    truth = json.loads((args.truth / "truth.json").read_text())["tilt_series"]["TS_01"]
    true_positions = np.array(truth["particles"]["positions_xyz_angstrom"])
    project = Project.open(args.project, write=True)
    aligned = project.outputs(args.alignment_run)["tilt_series"].path
    record = json.loads((aligned / "TS_01_alignment.json").read_text())
    beads = _solved_beads_angstrom(aligned, record["pixel_size_angstrom"], (512, 512))
    truth_gold = np.loadtxt(args.truth / "gold" / "TS_01.csv", delimiter=",", skiprows=1)[:, :3]
    rotation, shift, _ = _register(beads, truth_gold)
    common = {
        "angular_step_deg": args.angular_step,
        "symmetry": "C6",
        "score_threshold": 0.1,
        "min_distance_angstrom": args.min_distance,
    }
    for label, extra, inputs in (
        ("all orientations", {}, {}),
        (
            f"near the vesicles, ±{args.normal_range:g}° of the normal",
            {"normal_range_deg": args.normal_range},
            {"surfaces": RunOutput(args.vesicles_run, "particles")},
        ),
    ):
        start = time.perf_counter()
        result = run_step(
            project,
            "picking.template",
            {**common, **extra},
            {
                "tomograms": RunOutput(args.tomogram_run, "tomograms"),
                "reference": args.truth / "average" / "map.mrc",
                **inputs,
            },
        )
        seconds = time.perf_counter() - start
        out = result.outputs["particles"].path
        step_record = json.loads((out / "TS_01_template_matching.json").read_text())
        scores_map = torch.from_numpy(np.array(read_mrc(out / "TS_01_scores.mrc").data, dtype=np.float32))
        default = false_alarm_threshold(scores_map, step_record["orientations"])
        picks = read_relion_particles(out / "particles.star").particles
        positions = picks.positions_angstrom() @ rotation.T + shift
        scores = np.array([p.score for p in picks.particles])
        print(
            f"\n{label}: {step_record['orientations']} orientations, step {seconds:.0f} s "
            f"(search {step_record['seconds']:.0f} s); one-false-alarm threshold {default:.3f}"
        )
        print("| threshold | picks | recall | precision |")
        print("|---|---|---|---|")
        for threshold in sorted({round(default, 3), 0.2, 0.25, 0.3, 0.35, 0.4}):
            keep = scores >= threshold
            recall, precision, n = _precision_recall(positions[keep], true_positions, args.radius)
            mark = " (default)" if threshold == round(default, 3) else ""
            print(f"| {threshold:.3f}{mark} | {n} | {recall:.3f} | {precision:.3f} |")
    if args.skip_timing:
        return
    shape = tuple(int(v) for v in args.timing_shape.split(","))
    volume = torch.randn(shape)
    template = torch.randn(34, 34, 34)
    rotations = angular_sampling(12.85)[: args.timing_orientations]
    match_template(volume, template, rotations[:2], mask_radius_px=16.0)  # warm up
    start = time.perf_counter()
    match_template(volume, template, rotations, mask_radius_px=16.0, weight=missing_wedge_weight(34, 60.0))
    per = (time.perf_counter() - start) / len(rotations)
    full = len(angular_sampling(12.85))
    print(
        f"\ntiming, {shape[2]}×{shape[1]}×{shape[0]} tomogram, 34³ template, {torch.get_num_threads()} threads: "
        f"{per:.3f} s per orientation; 12.85° C1 ({full} orientations) {per * full:.0f} s, "
        f"C6 ({len(angular_sampling(12.85, symmetry_order=6))}) {per * len(angular_sampling(12.85, symmetry_order=6)):.0f} s"
    )


if __name__ == "__main__":
    main()
