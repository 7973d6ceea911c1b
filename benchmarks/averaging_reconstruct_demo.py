"""``averaging.reconstruct`` on the demo pipeline's own tilt series (fiducial alignment, estimated CTF), against the
simulator's oracle (true motion, alignment, CTF and poses, from the raw movies) and the true map.

Particles: (1) the true particles carried into the frame the fiducial alignment solved (registered on the gold
beads, as the picking benchmarks do): the pipeline's alignment and CTF with perfect poses; (2) the picks and
orientations of a ``picking.template`` run (``--template-run``, optional), above ``--score`` and after RELION's
no duplicate removal, if that run exists. Each is reconstructed at the demo's 5.4 Å pixel, box ``--box``, C6,
and scored by the half-map FSC (0.143) and the FSC against the true map within its envelope (0.5 and 0.143), next
to the oracle computed the same way.

Usage::

    python benchmarks/averaging_reconstruct_demo.py --project P --alignment-run 6 --ctf-run 7 --truth DEMO/truth \
        --dataset DEMO [--template-run N] --work W
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from tomoforge.averaging import (
    centre_crop_or_pad,
    fourier_shell_correlation,
    fsc_resolution_angstrom,
    shell_frequencies_per_angstrom,
)
from tomoforge.io.mrc import read_mrc
from tomoforge.io.relion5 import read_relion_particles
from tomoforge.models import ParticleSet, save_json
from tomoforge.simulate.oracle import envelope_mask, run_oracle
from tomoforge.simulate.scoring.maps import fourier_resize
from tomoforge.workflow import Project, RunOutput, run_step

sys.path.insert(0, str(Path(__file__).parent))
from reconstruction_pipeline_demo import _register, _solved_beads_angstrom  # noqa: E402


def _volume(path: Path) -> torch.Tensor:
    return torch.from_numpy(np.array(read_mrc(path).data, dtype=np.float64))


def _truth_on(box: int, pixel: float, truth: Path) -> torch.Tensor:
    mrc = read_mrc(truth / "average" / "map.mrc")
    volume = torch.from_numpy(np.array(mrc.data, dtype=np.float64))
    size = round(volume.shape[0] * float(mrc.voxel_size_angstrom[0]) / pixel)
    if size != volume.shape[0]:
        volume = fourier_resize(volume, size)
    return centre_crop_or_pad(volume, box)


def _score(folder: Path, truth_map: torch.Tensor, pixel: float) -> str:
    made = _volume(folder / "map.mrc")
    halves = fourier_shell_correlation(_volume(folder / "half1.mrc"), _volume(folder / "half2.mrc"))
    frequencies = shell_frequencies_per_angstrom(made.shape[0], pixel)
    envelope = envelope_mask(truth_map, pixel_size_angstrom=pixel)
    against = fourier_shell_correlation(made, truth_map, mask=envelope)
    mirrored = fourier_shell_correlation(made, torch.flip(truth_map, dims=(0,)), mask=envelope)
    return (
        f"half maps 0.143: {fsc_resolution_angstrom(halves, frequencies, 0.143):.1f} Å; vs truth (envelope) 0.5: "
        f"{fsc_resolution_angstrom(against, frequencies, 0.5):.1f} Å, 0.143: "
        f"{fsc_resolution_angstrom(against, frequencies, 0.143):.1f} Å; mean FSC to 20 Å "
        f"{float(against[1 : int(made.shape[0] * pixel / 20) + 1].mean()):.2f} (mirrored truth "
        f"{float(mirrored[1 : int(made.shape[0] * pixel / 20) + 1].mean()):.2f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    for name in ("--project", "--truth", "--dataset", "--work"):
        parser.add_argument(name, type=Path, required=True)
    parser.add_argument("--alignment-run", type=int, required=True)
    parser.add_argument("--ctf-run", type=int, required=True)
    parser.add_argument("--template-run", type=int)
    parser.add_argument("--score", type=float, default=0.25)
    parser.add_argument("--box", type=int, default=48)
    parser.add_argument("--half-sets", default="alternate", choices=["alternate", "by_group"])
    parser.add_argument(
        "--max-dose",
        type=float,
        default=1000.0,
        help="e⁻/Å²; the oracle uses every tilt, RELION's default is 50",
    )
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    project = Project.open(args.project, write=True)
    aligned = project.outputs(args.alignment_run)["tilt_series"].path
    record = json.loads((aligned / "TS_01_alignment.json").read_text())
    beads = _solved_beads_angstrom(aligned, record["pixel_size_angstrom"], (512, 512))
    gold = np.loadtxt(args.truth / "gold" / "TS_01.csv", delimiter=",", skiprows=1)[:, :3]
    rotation, shift, rms = _register(beads, gold)
    print(f"solved → truth: shift {np.round(shift, 1)} Å, bead RMS {rms:.1f} Å")
    true = read_relion_particles(args.truth / "relion5" / "particles.star").particles
    viruses = json.loads((args.truth / "truth.json").read_text())["tilt_series"]["TS_01"]["particles"][
        "virus_ids"
    ]
    moved = true.model_copy(
        update={
            "particles": [
                p.model_copy(
                    update={
                        "position_angstrom": tuple(rotation.T @ (np.array(p.position_angstrom) - shift)),
                        "rotation_matrix": tuple(map(tuple, rotation.T @ p.rotation())),
                        "group": f"virus {virus}",
                    }
                )
                for p, virus in zip(true.particles, viruses, strict=True)
            ]
        }
    )
    sets: dict[str, Path] = {}
    folder = args.work / "true_poses"
    folder.mkdir(exist_ok=True)
    save_json(moved, folder / "particles.json")
    sets["true poses, pipeline alignment and CTF"] = folder
    if args.template_run is not None:
        picked = json.loads(
            (project.outputs(args.template_run)["particles"].path / "particles.json").read_text()
        )
        particles = ParticleSet.model_validate(picked)
        kept = [p for p in particles.particles if (p.score or 0.0) >= args.score]
        folder = args.work / "template"
        folder.mkdir(exist_ok=True)
        save_json(particles.model_copy(update={"particles": kept}), folder / "particles.json")
        sets[f"template-matching picks ≥ {args.score:g} (15° orientations)"] = folder
    pixel = 5.4
    truth_map = _truth_on(args.box, pixel, args.truth)
    start = time.perf_counter()
    oracle = run_oracle(
        args.dataset,
        args.work / "oracle",
        box_size_px=args.box,
        pixel_size_angstrom=pixel,
        max_dose_e_per_angstrom2=args.max_dose,
    )
    print(
        f"\noracle ({oracle['n_particles']} particles, {oracle['n_views']} views, {time.perf_counter() - start:.0f} s): "
        + _score(args.work / "oracle" / "average", truth_map, pixel)
    )
    for label, particles_folder in sets.items():
        start = time.perf_counter()
        result = run_step(
            project,
            "averaging.reconstruct",
            {
                "box_size_px": args.box,
                "symmetry": "C6",
                "max_dose_e_per_angstrom2": args.max_dose,
                "half_sets": args.half_sets,
            },
            {"particles": particles_folder, "tilt_series": RunOutput(args.ctf_run, "tilt_series")},
        )
        out = result.outputs["map"].path
        made = json.loads((out / "reconstruction.json").read_text())
        print(
            f"\n{label} ({made['particles']} particles, {made['views']} views, {time.perf_counter() - start:.0f} s): "
            + _score(out, truth_map, pixel)
        )


if __name__ == "__main__":
    main()
