"""The tutorial's own workflow (`hiv-tutorial-small`) at the real EMPIAR-10164 sizes on a CPU machine: time and peak
memory of every step.

The simulator's `tutorial-small` preset (one tilt series, 41 tilts × 8 super-resolution frames of 7420 × 7676 at
0.675 Å) holds its specimen potential at 2.7 Å in memory: 776 × 2144 × 2192 voxels, 14.6 GB of float32, which with
the working arrays does not fit a 24 GB machine. This benchmark therefore changes two settings and says so:

* ``--simulation-voxel`` (default 5.4 Å): the potential is rendered at 5.4 Å (1.8 GB). The frames keep their real
  size and pixel; they only carry no specimen detail finer than 10.8 Å, far below what a bin-6 workflow uses;
* ``--tilt-stride`` (default 4): every 4th tilt of the real mdoc, 11 tilts from −60° to +60° in 12° steps, so that
  the simulation and motion correction finish in well under an hour on 2 cores. Per-tilt steps scale linearly, so
  the table also gives the time per tilt.

Then it runs ``tomoforge run hiv-tutorial-small --until NODE`` (default: through the tomogram) and prints each
node's time and peak memory from the project's run records.

    python benchmarks/tutorial_small_cpu.py --work /tmp/tutorial --until tomograms
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path


def _simulate(data: Path, tilt_stride: int, voxel: float) -> dict[str, float]:
    from tomoforge.simulate import generate_dataset, preset_config

    config = preset_config("tutorial-small", tilt_stride=tilt_stride, simulation_voxel_size_angstrom=voxel)
    start = time.perf_counter()
    summary = generate_dataset(config, data)
    return {
        "seconds": time.perf_counter() - start,
        "peak_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "tilts": summary.n_tilts,
        "bytes_written": summary.bytes_written,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="Folder for the data and the project.")
    parser.add_argument("--tilt-stride", type=int, default=4)
    parser.add_argument("--simulation-voxel", type=float, default=5.4)
    parser.add_argument("--until", default="tomograms", help="Last node to run (and what it needs).")
    parser.add_argument("--simulate-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    data, project = args.work / "data", args.work / "project"
    record = args.work / "simulation.json"
    if args.simulate_only:
        record.write_text(json.dumps(_simulate(data, args.tilt_stride, args.simulation_voxel)) + "\n")
        return
    if not (data / "frames").is_dir():  # in a process of its own, so that its peak memory is its own
        again = [sys.executable, __file__, "--work", str(args.work), "--tilt-stride", str(args.tilt_stride),
                 "--simulation-voxel", str(args.simulation_voxel), "--simulate-only"]  # fmt: skip
        subprocess.run(again, check=True)
    simulation = json.loads(record.read_text()) if record.is_file() else None
    coordinates = data / "truth" / "relion5" / "particles.star"
    command = [sys.executable, "-m", "tomoforge.cli.main", "run", "hiv-tutorial-small", "--movies",
               str(data / "frames"), "--coordinates", str(coordinates), "--project", str(project),
               "--until", args.until]  # fmt: skip
    subprocess.run(command, check=True)

    from tomoforge.workflow import Project
    from tomoforge.workflow.memory import format_bytes

    print("\n| run (step) | time | per tilt | peak memory |\n|---|---|---|---|")
    if simulation is not None:
        print(
            f"| simulation ({simulation['tilts']} tilts, {simulation['bytes_written'] / 1e9:.1f} GB written) | "
            f"{simulation['seconds']:.0f} s | {simulation['seconds'] / simulation['tilts']:.0f} s | "
            f"{format_bytes(int(simulation['peak_bytes']))} |"
        )
    with Project.open(project) as opened:
        tilts = simulation["tilts"] if simulation is not None else 0
        for run in opened.runs():
            if run.status == "succeeded" and run.step != "import":
                seconds = run.duration_s or 0.0
                per_tilt = f"{seconds / tilts:.1f} s" if tilts else "—"
                memory = format_bytes(run.peak_memory_bytes)
                print(f"| {run.id} ({run.step}) | {seconds:.1f} s | {per_tilt} | {memory} |")


if __name__ == "__main__":
    main()
