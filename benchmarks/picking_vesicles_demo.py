"""``picking.vesicles`` on the demo pipeline's own tomograms, scored against the simulator's viruses and particles.

Starts from the project of ``benchmarks/reconstruction_pipeline_demo.py`` (demo series → fiducial alignment →
CTF → bin-2 tomograms of 10.8 Å voxels, WBP and SIRT) and runs ``picking.vesicles`` on each given
``tomogram.reconstruct`` run, with no other input. The tomograms are in the frame the fiducial alignment solved,
which differs from the simulator's by the alignment's gauge; it is registered on the gold beads (solved ``.xyz``
against the true bead positions, as the reconstruction benchmark does) and the results are mapped through it.

Reported per tomogram: time of the step; vesicles found, each matched to the nearest true virus (a vesicle more
than 200 Å from every true centre is a false one); centre error; the fitted surface against the true lattice
surface (the membrane 110 Å inside, where the hexamer centres lie): mean and RMS signed distance of points every
60 Å on it, and over the visible band (surface normal within 50° of the xy plane) alone; and the picks (every
60 Å, offset 0) scored by :func:`tomoforge.simulate.scoring.score_picking` at 40 Å (recall, precision, axis error
modulo C6).

Usage::

    python benchmarks/picking_vesicles_demo.py --project P --alignment-run 6 --runs 9,10,11 --truth DEMO/truth
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from tomoforge.picking import ellipsoid_closest_point, ellipsoid_surface_points
from tomoforge.simulate.scoring import score_picking
from tomoforge.workflow import Project, RunOutput, run_step

sys.path.insert(0, str(Path(__file__).parent))
from reconstruction_pipeline_demo import _register, _solved_beads_angstrom  # noqa: E402

LATTICE_DEPTH = 110.0


def _surface_errors(model: dict[str, list], virus: dict[str, list], rotation: np.ndarray, shift: np.ndarray):
    """Signed distances (Å) of points on the fitted surface (mapped to the truth frame) from the true lattice
    surface, all of them and those whose normal lies within 50° of the xy plane."""
    positions, normals = ellipsoid_surface_points(
        torch.tensor(model["centre_angstrom"], dtype=torch.float64),
        torch.tensor(model["radii_angstrom"], dtype=torch.float64),
        torch.tensor(model["rotation"], dtype=torch.float64),
        spacing=60.0,
    )
    moved = positions.numpy() @ rotation.T + shift
    frame = np.array(virus["rotation"])
    local = torch.from_numpy((moved - np.array(virus["centre_xyz_angstrom"])) @ frame)
    _, distance = ellipsoid_closest_point(
        local, torch.tensor(virus["radii_xyz_angstrom"], dtype=torch.float64)
    )
    signed = distance.numpy() + LATTICE_DEPTH
    visible = np.abs((normals.numpy() @ rotation.T)[:, 2]) <= np.sin(np.radians(50.0))
    return signed, signed[visible]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--project", type=Path, required=True)
    parser.add_argument("--alignment-run", type=int, required=True)
    parser.add_argument("--runs", required=True, help="tomogram.reconstruct run ids, comma-separated")
    parser.add_argument("--truth", type=Path, required=True)
    parser.add_argument("--radius", type=float, default=40.0)
    args = parser.parse_args()
    truth = json.loads((args.truth / "truth.json").read_text())["tilt_series"]["TS_01"]
    project = Project.open(args.project, write=True)
    aligned = project.outputs(args.alignment_run)["tilt_series"].path
    record = json.loads((aligned / "TS_01_alignment.json").read_text())
    beads = _solved_beads_angstrom(aligned, record["pixel_size_angstrom"], (512, 512))
    truth_gold = np.loadtxt(args.truth / "gold" / "TS_01.csv", delimiter=",", skiprows=1)[:, :3]
    rotation, shift, rms = _register(beads, truth_gold)
    print(f"solved → truth: shift {np.round(shift, 1)} Å, bead RMS {rms:.1f} Å")
    frames = {"TS_01": (rotation.T, -rotation.T @ shift)}  # X_solved = M·X_true + t
    for run in (int(r) for r in args.runs.split(",")):
        tomograms = project.outputs(run)["tomograms"].path
        method = json.loads((tomograms / "TS_01_reconstruction.json").read_text()).get("method", "?")
        start = time.perf_counter()
        result = run_step(project, "picking.vesicles", {}, {"tomograms": RunOutput(run, "tomograms")})
        seconds = time.perf_counter() - start
        out = result.outputs["particles"].path
        models = json.loads((out / "models.json").read_text())["tomograms"]["TS_01"]
        print(f"\nrun {run} ({method}): picking.vesicles {seconds:.1f} s, {len(models)} vesicles found")
        matched = set()
        for model in models:
            centre = np.array(model["centre_angstrom"]) @ rotation.T + shift
            errors = [np.linalg.norm(centre - np.array(v["centre_xyz_angstrom"])) for v in truth["viruses"]]
            k = int(np.argmin(errors))
            if errors[k] > 200.0:
                print(f"  {model['group']}: FALSE (nearest true virus {errors[k]:.0f} Å away)")
                continue
            matched.add(k)
            virus = truth["viruses"][k]
            every, visible = _surface_errors(model, virus, rotation, shift)
            print(
                f"  {model['group']} → virus {k}: score {model['score']:.1f}, centre error {errors[k]:.0f} Å, "
                f"radii {np.round(model['radii_angstrom'])} (true lattice "
                f"{np.round(np.array(virus['radii_xyz_angstrom']) - LATTICE_DEPTH)}), surface vs lattice: "
                f"mean {every.mean():+.0f} RMS {np.sqrt((every**2).mean()):.0f} Å; visible band mean "
                f"{visible.mean():+.0f} RMS {np.sqrt((visible**2).mean()):.0f} Å; {model['picks']} picks"
            )
        missed = len(truth["viruses"]) - len(matched)
        score = score_picking(
            args.truth / "relion5" / "particles.star",
            out / "particles.star",
            distance_threshold_angstrom=args.radius,
            frames=frames,
        )
        print(
            f"  missed viruses {missed}; picks {score.n_picked}, true {score.n_truth}: recall "  # type: ignore[union-attr]
            f"{score.recall:.3f}, precision {score.precision:.3f}, median axis error "  # type: ignore[union-attr]
            f"{score.median_axis_error_deg:.1f}°"  # type: ignore[union-attr]
        )


if __name__ == "__main__":
    main()
