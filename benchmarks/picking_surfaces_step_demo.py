"""``picking.surfaces`` through the engine on the ``demo`` truth tomogram, scored by the simulator's picking scorer.

Points: ``--points`` per virus drawn on the true membrane (``--noise`` Å Gaussian), written as a CSV in voxels of
the truth tomogram (256 × 256 × 164 of 10.8 Å), which serves as the ``tomograms`` input. The step fits each virus
and picks every ``--spacing`` Å at ``--offset`` Å (the lattice depth, −110 Å); the picks' ``particles.star`` is
scored by :func:`tomoforge.simulate.scoring.score_picking` at ``--radius`` Å (recall, precision, axis error with C6).

Usage::

    python benchmarks/picking_surfaces_step_demo.py --truth DEMO/truth --work W [--points 10] [--noise 20]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from tomoforge.models import Tomogram
from tomoforge.simulate.scoring import score_picking
from tomoforge.steps._tomograms import write_tomogram_model
from tomoforge.workflow import Project, run_step


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--truth", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--points", type=int, default=10)
    parser.add_argument("--noise", type=float, default=20.0)
    parser.add_argument("--spacing", type=float, default=60.0)
    parser.add_argument("--offset", type=float, default=-110.0)
    parser.add_argument("--radius", type=float, default=40.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    truth = json.loads((args.truth / "truth.json").read_text())
    ts_id, series = next(iter(truth["tilt_series"].items()))
    info = series["tomogram"]
    folder = args.work / "tomograms"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{ts_id}.mrc"
    if not target.exists():
        os.link(args.truth / info["file"], target)
    tomogram = Tomogram(
        ts_id=ts_id,
        volume_file=target,
        voxel_size_angstrom=info["voxel_size_angstrom"],
        shape_zyx=tuple(info["shape_zyx"]),
        reconstruction_method="wbp",
        binning=1.0,
    )
    write_tomogram_model(folder, tomogram)
    rng = np.random.default_rng(args.seed)
    rows = []
    for virus in series["viruses"]:
        radii, rotation = np.array(virus["radii_xyz_angstrom"]), np.array(virus["rotation"])
        d = rng.normal(size=(args.points, 3))
        local = d / np.linalg.norm(d / radii, axis=1, keepdims=True)
        xyz = (
            local @ rotation.T
            + np.array(virus["centre_xyz_angstrom"])
            + rng.normal(scale=args.noise, size=local.shape)
        )
        for x, y, z in tomogram.position_to_index_zyx(xyz)[:, ::-1]:
            rows.append(f"{ts_id},{virus['id']},{x:.3f},{y:.3f},{z:.3f}")
    points = args.work / "points.csv"
    points.write_text("ts_id,group,x,y,z\n" + "\n".join(rows) + "\n", encoding="utf-8")
    project_dir = args.work / "project"
    project = Project.open(project_dir, write=True) if project_dir.exists() else Project.init(project_dir)
    start = time.perf_counter()
    result = run_step(
        project,
        "picking.surfaces",
        {"spacing_angstrom": args.spacing, "offset_angstrom": args.offset, "seed": args.seed},
        {"tomograms": folder, "points": points},
    )
    seconds = time.perf_counter() - start
    out = result.outputs["particles"].path
    score = score_picking(
        args.truth / "relion5" / "particles.star",
        out / "particles.star",
        distance_threshold_angstrom=args.radius,
    )
    print(f"step {seconds:.1f} s; picks {score.n_picked}, true {score.n_truth}, matched {score.n_matched}")  # type: ignore[union-attr]
    print(
        f"recall {score.recall:.3f}, precision {score.precision:.3f}, RMS position {score.rms_position_error_angstrom:.1f} Å, "  # type: ignore[union-attr]
        f"median axis error {score.median_axis_error_deg:.2f}°"  # type: ignore[union-attr]
    )
    print(f"picture: {out / f'{ts_id}_picks.png'}")


if __name__ == "__main__":
    main()
