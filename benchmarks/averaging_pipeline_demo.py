"""The averaging sequence on the demo pipeline's own picks, alignment and CTF: template-matching picks →
``averaging.remove_duplicates`` → ``averaging.refine`` → ``averaging.postprocess``, with the time, particle count
and resolution of each step, and the final map against the true map.

Starts from the project of the picking benchmarks (``picking.template`` near the vesicles, run ``--template-run``;
its tomograms ``--tomogram-run``; the CTF-estimated tilt series ``--ctf-run``). Picks above ``--score`` are kept.

Usage::

    python benchmarks/averaging_pipeline_demo.py --project P --template-run 24 --tomogram-run 9 --ctf-run 7 \
        --truth DEMO/truth --work W [--binning 2 --box 32 --iterations 3]
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
    fourier_shell_correlation,
    fsc_resolution_angstrom,
    shell_frequencies_per_angstrom,
)
from tomoforge.io.mrc import read_mrc
from tomoforge.models import ParticleSet, save_json
from tomoforge.simulate.oracle import envelope_mask
from tomoforge.workflow import Project, RunOutput, run_step

sys.path.insert(0, str(Path(__file__).parent))
from averaging_reconstruct_demo import _truth_on  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    for name in ("--project", "--truth", "--work"):
        parser.add_argument(name, type=Path, required=True)
    for name in ("--template-run", "--tomogram-run", "--ctf-run"):
        parser.add_argument(name, type=int, required=True)
    parser.add_argument("--score", type=float, default=0.25)
    parser.add_argument("--binning", type=int, default=2)
    parser.add_argument("--box", type=int, default=32)
    parser.add_argument("--iterations", type=int, default=3)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    project = Project.open(args.project, write=True)
    picked = ParticleSet.model_validate_json(
        (project.outputs(args.template_run)["particles"].path / "particles.json").read_text()
    )
    kept = [p for p in picked.particles if (p.score or 0.0) >= args.score]
    folder = args.work / "picks"
    folder.mkdir(exist_ok=True)
    save_json(picked.model_copy(update={"particles": kept}), folder / "particles.json")
    print(f"template-matching picks ≥ {args.score:g}: {len(kept)}")
    tomograms = RunOutput(args.tomogram_run, "tomograms")
    series = RunOutput(args.ctf_run, "tilt_series")
    start = time.perf_counter()
    unique = run_step(
        project, "averaging.remove_duplicates", {"min_distance_angstrom": 30.0},
        {"particles": folder, "tomograms": tomograms},
    )  # fmt: skip
    n_unique = len(json.loads((unique.outputs["particles"].path / "particles.json").read_text())["particles"])
    print(f"remove_duplicates 30 Å: {n_unique} particles, {time.perf_counter() - start:.1f} s")
    start = time.perf_counter()
    common = {
        "box_size_px": args.box,
        "binning": args.binning,
        "symmetry": "C6",
        "max_dose_e_per_angstrom2": 1000.0,
    }
    refined = run_step(
        project,
        "averaging.refine",
        {**common, "iterations": args.iterations, "max_shift_angstrom": 2.0 * 5.4 * args.binning},
        {"particles": RunOutput(unique.run.id, "particles"), "tilt_series": series, "tomograms": tomograms},
    )
    record = json.loads((refined.outputs["map"].path / "refine.json").read_text())
    print(f"refine ({args.iterations} iterations): {time.perf_counter() - start:.0f} s")
    for it in record["iterations"]:
        print(
            f"  iteration {it['iteration']}: references {it['resolution_angstrom']:.1f} Å, step {it['step_deg']:g}°, "
            f"mean change {it['mean_rotation_change_deg']:.2f}° / {it['mean_shift_angstrom']:.1f} Å"
        )
    start = time.perf_counter()
    post = run_step(
        project, "averaging.postprocess", {"b_factor_angstrom2": 0.0},
        {"map": RunOutput(refined.run.id, "map")},
    )  # fmt: skip
    summary = json.loads((post.outputs["postprocess"].path / "postprocess.json").read_text())
    print(
        f"postprocess: {time.perf_counter() - start:.1f} s; corrected FSC 0.143 at {summary['resolution_angstrom']} Å"
    )
    pixel = 5.4 * args.binning
    made = torch.from_numpy(
        np.array(read_mrc(refined.outputs["map"].path / "map.mrc").data, dtype=np.float64)
    )
    truth_map = _truth_on(args.box, pixel, args.truth)
    envelope = envelope_mask(truth_map, pixel_size_angstrom=pixel)
    fsc = fourier_shell_correlation(made, truth_map, mask=envelope)
    frequencies = shell_frequencies_per_angstrom(args.box, pixel)
    print(
        f"final map vs truth (envelope): FSC 0.143 at {fsc_resolution_angstrom(fsc, frequencies, 0.143):.1f} Å, mean FSC "
        f"to 25 Å {float(fsc[1 : int(args.box * pixel / 25) + 1].mean()):.2f}; mirrored "
        f"{float(fourier_shell_correlation(made, torch.flip(truth_map, dims=(0,)), mask=envelope)[1 : int(args.box * pixel / 25) + 1].mean()):.2f}"
    )


if __name__ == "__main__":
    main()
