"""CTF estimation on the simulator's ``demo`` tilt series through the ``ctf.estimate`` step, scored against truth.

Needs a project whose run holds the demo series with its alignment (e.g. ``alignment.fiducial``'s output, made by
``benchmarks/alignment_fiducial_demo.py``) and the simulator's truth folder. Prints, per setting, the defocus error
(estimate − truth) over |tilt| ≤ 30° and over all tilts, the astigmatism-angle error, the measured handedness and
the time per tilt.

    python benchmarks/ctf_demo.py --project DIR --run RUN_ID --truth DIR [--tile 128 256] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from tomoforge.simulate.scoring.ctf import score_ctf
from tomoforge.workflow import Project, RunOutput, run_step


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--project", type=Path, required=True)
    parser.add_argument("--run", type=int, required=True, help="run id whose tilt_series output is fitted")
    parser.add_argument("--truth", type=Path, required=True, help="the simulator's truth folder")
    parser.add_argument("--tile", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--geometry", choices=["on", "off", "both"], default="both")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    project = Project.open(args.project, write=True)
    print(
        "| tile | geometry | median err |tilt|≤30° (Å) | RMS |tilt|≤30° (Å) | RMS all (Å) | max |err| (Å) "
        "| angle RMS (°) | handedness | s/tilt |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for tile in args.tile:
        for geometry in [True, False] if args.geometry == "both" else [args.geometry == "on"]:
            params = {"tile_size_px": tile, "tilt_geometry": geometry, "device": args.device}
            start = time.perf_counter()
            result = run_step(
                project, "ctf.estimate", params, {"tilt_series": RunOutput(args.run, "tilt_series")}
            )
            elapsed = time.perf_counter() - start
            folder = project.outputs(result.run.id)["tilt_series"].path
            record = json.loads(next(folder.glob("*_ctf.json")).read_text())
            ts = record["ts_id"]
            with tempfile.TemporaryDirectory() as tmp:
                (Path(tmp) / "ctf").mkdir()
                shutil.copyfile(folder / f"{ts}.defocus", Path(tmp) / "ctf" / f"{ts}.defocus")
                score = score_ctf(args.truth, tmp, ts)
            errors = np.array([t.defocus_error_angstrom for t in score.tilts])  # type: ignore[union-attr]
            angles = np.array([t.tilt_angle_deg for t in score.tilts])  # type: ignore[union-attr]
            low = np.abs(angles) <= 30.0
            angle_errors = [t.angle_error_deg for t in score.tilts if t.angle_error_deg is not None]  # type: ignore[union-attr]
            angle_rms = float(np.sqrt(np.mean(np.square(angle_errors)))) if angle_errors else float("nan")
            print(
                f"| {tile} | {'on' if geometry else 'off'} | {np.median(errors[low]):.0f} | "
                f"{np.sqrt(np.mean(errors[low] ** 2)):.0f} | {np.sqrt(np.mean(errors**2)):.0f} | "
                f"{np.abs(errors).max():.0f} | {angle_rms:.1f} | {record['handedness']['value']:+d}: "
                f"{record['handedness']['verdict']} | {elapsed / len(errors):.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
