"""The tutorial's averaging sequence on the demo pipeline's own picks, alignment and CTF, with a de novo initial
model: picks → ``averaging.remove_duplicates`` → ``averaging.extract`` (3D, bin 2) → ``averaging.initial_model``
(C6 after C1, tilt prior 10°) → ``averaging.extract`` (2D, bin 2) → ``averaging.refine`` (bin 2, the initial model
as reference, tilt prior 10°) → ``averaging.remove_duplicates`` → ``averaging.extract`` (2D, bin 1) →
``averaging.reconstruct`` (bin 1) → ``averaging.refine`` (bin 1) → ``averaging.postprocess``.

Every step's time and particle count is printed, and each map is scored against the true map after the best turn
about z and shift (a de novo map's frame is fixed only up to those), and against the mirrored truth.

Usage::

    python benchmarks/averaging_tutorial_demo.py --project P --picks-run 24 --tomogram-run 9 --ctf-run 7 \
        --truth DEMO/truth --work W [--score 0.25] [--iterations 40]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tomoforge.averaging import (
    fourier_shell_correlation,
    fsc_resolution_angstrom,
    shell_frequencies_per_angstrom,
)
from tomoforge.geometry import rotate_volume, rotation_z
from tomoforge.io.mrc import read_mrc
from tomoforge.models import ParticleSet, save_json
from tomoforge.simulate.oracle import envelope_mask
from tomoforge.workflow import Project, RunOutput, run_step

sys.path.insert(0, str(Path(__file__).parent))
from averaging_reconstruct_demo import _truth_on  # noqa: E402

DEMO_PIXEL = 5.4


def _volume(path: Path) -> torch.Tensor:
    return torch.from_numpy(np.array(read_mrc(path).data, dtype=np.float64))


def _aligned(made: torch.Tensor, truth: torch.Tensor, envelope: torch.Tensor) -> torch.Tensor:
    """The truth turned about z (1° steps over 60°) and shifted to best match ``made`` within the envelope."""
    best, placed = -2.0, truth
    for angle in range(60):
        turned = rotate_volume(truth, rotation_z(float(angle)).double())
        cc = torch.fft.ifftn(torch.fft.fftn(made) * torch.fft.fftn(turned * envelope).conj()).real
        shift = np.unravel_index(int(torch.argmax(cc)), made.shape)
        moved = torch.roll(turned, shifts=tuple(int(s) for s in shift), dims=(0, 1, 2))
        c = float(
            torch.corrcoef(torch.stack([(made * envelope).flatten(), (moved * envelope).flatten()]))[0, 1]
        )
        if c > best:
            best, placed = c, moved
    return placed


def _score(folder: Path, truth_dir: Path, pixel: float) -> str:
    made = _volume(folder / "map.mrc")
    box = made.shape[0]
    truth = _truth_on(box, pixel, truth_dir)
    envelope = envelope_mask(truth, pixel_size_angstrom=pixel)
    frequencies = shell_frequencies_per_angstrom(box, pixel)
    top = int(box * pixel / 20) + 1
    right = fourier_shell_correlation(made, _aligned(made, truth, envelope), mask=envelope)
    mirrored_truth = torch.flip(truth, dims=(0,))
    mirror = fourier_shell_correlation(made, _aligned(made, mirrored_truth, envelope), mask=envelope)
    text = (
        f"vs truth (aligned, envelope) FSC 0.143 at {fsc_resolution_angstrom(right, frequencies, 0.143):.1f} Å, "
        f"0.5 at {fsc_resolution_angstrom(right, frequencies, 0.5):.1f} Å, mean to 20 Å "
        f"{float(right[1:top].mean()):.2f} (mirrored truth {float(mirror[1:top].mean()):.2f})"
    )
    if (folder / "half1.mrc").is_file():
        halves = fourier_shell_correlation(_volume(folder / "half1.mrc"), _volume(folder / "half2.mrc"))
        text = f"half maps FSC 0.143 at {fsc_resolution_angstrom(halves, frequencies, 0.143):.1f} Å; " + text
    return text


def _count(folder: Path) -> int:
    return len(json.loads((folder / "particles.json").read_text())["particles"])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    for name in ("--project", "--truth", "--work"):
        parser.add_argument(name, type=Path, required=True)
    for name in ("--picks-run", "--tomogram-run", "--ctf-run"):
        parser.add_argument(name, type=int, required=True)
    parser.add_argument("--score", type=float, default=None, help="Keep picks scoring at least this.")
    parser.add_argument("--iterations", type=int, default=40, help="Initial-model mini-batches.")
    parser.add_argument("--refine-iterations", type=int, default=10, help="Most refinement iterations.")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    project = Project.open(args.project, write=True)
    picked = ParticleSet.model_validate_json(
        (project.outputs(args.picks_run)["particles"].path / "particles.json").read_text()
    )
    kept = [p for p in picked.particles if args.score is None or (p.score or 0.0) >= args.score]
    folder = args.work / "picks"
    folder.mkdir(exist_ok=True)
    save_json(picked.model_copy(update={"particles": kept}), folder / "particles.json")
    print(f"picks: {len(kept)}")
    tomograms = RunOutput(args.tomogram_run, "tomograms")
    series = RunOutput(args.ctf_run, "tilt_series")
    common: dict[str, Any] = {"max_dose_e_per_angstrom2": 1000.0}
    timings: list[tuple[str, float, int]] = []

    def timed(
        label: str, name: str, params: dict[str, Any], inputs: dict[str, Any], count_output: str
    ) -> Any:
        start = time.perf_counter()
        result = run_step(project, name, params, inputs)
        seconds = time.perf_counter() - start
        n = _count(result.outputs[count_output].path)
        timings.append((label, seconds, n))
        print(f"{label}: {seconds:.0f} s, {n} particles", flush=True)
        return result

    unique = timed(
        "remove duplicates (30 Å)", "averaging.remove_duplicates", {"min_distance_angstrom": 30.0},
        {"particles": folder, "tomograms": tomograms}, "particles",
    )  # fmt: skip
    particles = RunOutput(unique.run.id, "particles")
    bin2 = {**common, "binning": 2, "box_size_px": 32}
    cubes = timed(
        "extract 3D (bin 2, box 32)", "averaging.extract", {**bin2, "dimension": "3d"},
        {"particles": particles, "tilt_series": series, "tomograms": tomograms}, "subtomograms",
    )  # fmt: skip
    model = timed(
        "initial model (C1 then C6, tilt prior 10°)", "averaging.initial_model",
        {"iterations": args.iterations, "symmetry": "C6", "sigma_tilt_deg": 10.0, "offset_range_px": 3.0,
         "mask_diameter_angstrom": 300.0},
        {"subtomograms": RunOutput(cubes.run.id, "subtomograms")}, "particles",
    )  # fmt: skip
    print("  initial model:", _score(model.outputs["map"].path, args.truth, 2 * DEMO_PIXEL), flush=True)
    stacks = timed(
        "extract 2D (bin 2, box 32)", "averaging.extract", bin2,
        {"particles": RunOutput(model.run.id, "particles"), "tilt_series": series, "tomograms": tomograms},
        "subtomograms",
    )  # fmt: skip
    refined = timed(
        "refine (bin 2, initial model as reference, tilt prior 10°)", "averaging.refine",
        {**bin2, "symmetry": "C6", "iterations": args.refine_iterations, "sigma_tilt_deg": 10.0,
         "initial_low_pass_angstrom": 60.0, "max_shift_angstrom": 21.6, "mask_diameter_angstrom": 300.0},
        {"particles": RunOutput(stacks.run.id, "particles"), "tilt_series": series, "tomograms": tomograms,
         "reference": RunOutput(model.run.id, "map")},
        "particles",
    )  # fmt: skip
    record = json.loads((refined.outputs["map"].path / "refine.json").read_text())
    print(f"  refine bin 2: {len(record['iterations'])} iterations, stopped: {record.get('stopped_because')}")
    print("  refined bin 2:", _score(refined.outputs["map"].path, args.truth, 2 * DEMO_PIXEL), flush=True)
    cleaned = timed(
        "remove duplicates (30 Å)", "averaging.remove_duplicates", {"min_distance_angstrom": 30.0},
        {"particles": RunOutput(refined.run.id, "particles"), "tomograms": tomograms}, "particles",
    )  # fmt: skip
    bin1 = {**common, "binning": 1, "box_size_px": 48}
    fine_stacks = timed(
        "extract 2D (bin 1, box 48)", "averaging.extract", bin1,
        {"particles": RunOutput(cleaned.run.id, "particles"), "tilt_series": series, "tomograms": tomograms},
        "subtomograms",
    )  # fmt: skip
    start = time.perf_counter()
    rebuilt = run_step(
        project, "averaging.reconstruct", {**bin1, "symmetry": "C6"},
        {"particles": RunOutput(fine_stacks.run.id, "particles"), "tilt_series": series,
         "tomograms": tomograms},
    )  # fmt: skip
    timings.append(
        ("reconstruct (bin 1)", time.perf_counter() - start, _count(fine_stacks.outputs["subtomograms"].path))
    )
    print(
        f"reconstruct (bin 1): {timings[-1][1]:.0f} s;",
        _score(rebuilt.outputs["map"].path, args.truth, DEMO_PIXEL),
    )
    final = timed(
        "refine (bin 1)", "averaging.refine",
        {**bin1, "symmetry": "C6", "iterations": args.refine_iterations, "sigma_tilt_deg": 10.0,
         "initial_step_deg": 2.0, "max_shift_angstrom": 10.8, "mask_diameter_angstrom": 300.0},
        {"particles": RunOutput(fine_stacks.run.id, "particles"), "tilt_series": series, "tomograms": tomograms},
        "particles",
    )  # fmt: skip
    record = json.loads((final.outputs["map"].path / "refine.json").read_text())
    print(f"  refine bin 1: {len(record['iterations'])} iterations, stopped: {record.get('stopped_because')}")
    print("  refined bin 1:", _score(final.outputs["map"].path, args.truth, DEMO_PIXEL), flush=True)
    start = time.perf_counter()
    post = run_step(
        project, "averaging.postprocess", {"b_factor_angstrom2": 0.0}, {"map": RunOutput(final.run.id, "map")}
    )
    summary = json.loads((post.outputs["postprocess"].path / "postprocess.json").read_text())
    print(
        f"postprocess: {time.perf_counter() - start:.1f} s; corrected FSC 0.143 at {summary['resolution_angstrom']} Å"
    )
    print("\n| step | time | particles |\n|---|---|---|")
    for label, seconds, n in timings:
        print(f"| {label} | {seconds:.0f} s | {n} |")


if __name__ == "__main__":
    main()
