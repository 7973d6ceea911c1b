"""Global motion on a simulated dataset: tomoforge vs torch-motion-correction, against the truth.

Usage (torch-motion-correction is not a dependency; install it beside, e.g. with ``pip install --target``)::

    tomoforge simulate --preset demo --out demo
    PYTHONPATH=/path/to/torch_motion_correction_site python benchmarks/motion_global_vs_torch_motion_correction.py demo

Both estimates and the truth are taken relative to frame 0 (the truth's convention) before comparing, so a
reference-frame choice does not count as error. torch-motion-correction returns (y, x) in Å; its sign is taken as
whichever matches the truth better, and reported.
"""

from __future__ import annotations

import csv
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from tomoforge.io.movies import open_movie
from tomoforge.motion import estimate_global_motion


def _truth(dataset: Path, ts: str) -> dict[int, np.ndarray]:
    rows: dict[int, list[tuple[int, float, float]]] = {}
    with open(dataset / "truth" / "motion" / f"{ts}.csv") as f:
        for r in csv.DictReader(f):
            rows.setdefault(int(r["acquisition_order"]), []).append(
                (int(r["frame"]), float(r["shift_x_angstrom"]), float(r["shift_y_angstrom"]))
            )
    return {k: np.array([(x, y) for _, x, y in sorted(v)]) for k, v in rows.items()}


def main(dataset: Path) -> None:
    truth_json = json.loads((dataset / "truth" / "truth.json").read_text())
    pixel = float(truth_json["config"]["frame_pixel_size_angstrom"])
    truth = _truth(dataset, "TS_01")
    movies = sorted((dataset / "frames").glob("TS_01_*.mrc"))
    ours, theirs, true, t_ours, t_theirs = [], [], [], 0.0, 0.0
    try:
        from torch_motion_correction import estimate_global_motion as tmc_global
    except ImportError:
        tmc_global = None
    for path in movies:
        order = int(path.name.split("_")[2])
        with open_movie(path) as movie:
            frames = torch.from_numpy(movie.read_frames())
        t0 = time.perf_counter()
        s = estimate_global_motion(frames, pixel_size_angstrom=pixel, binning=2).numpy()
        t_ours += time.perf_counter() - t0
        ours.append(s * pixel)
        true.append(truth[order] - truth[order][0])
        if tmc_global is not None:
            t0 = time.perf_counter()
            field = tmc_global(frames, pixel_spacing=pixel)
            t_theirs += time.perf_counter() - t0
            yx = field.data[:, :, 0, 0].T.detach().numpy()  # (t, 2) as (y, x) Å
            xy = yx[:, ::-1]
            theirs.append(xy - xy[0])
    true_a, ours_a = np.array(true), np.array(ours)
    n_frames = true_a.shape[0] * true_a.shape[1]
    rms = lambda e: float(np.sqrt(np.mean(np.sum(e**2, axis=-1))))  # noqa: E731
    print(f"{len(movies)} movies, {n_frames} frames, movie pixel {pixel} Å")
    print(f"no correction      RMS {rms(true_a) / pixel:.3f} px")
    print(f"tomoforge (bin 2)  RMS {rms(ours_a - true_a) / pixel:.3f} px, {n_frames / t_ours:.1f} frames/s")
    if theirs:
        th = np.array(theirs)
        plus, minus = rms(th - true_a), rms(-th - true_a)
        sign = "+" if plus <= minus else "-"
        print(
            f"torch-motion-corr. RMS {min(plus, minus) / pixel:.3f} px (sign {sign}), "
            f"{n_frames / t_theirs:.1f} frames/s"
        )


if __name__ == "__main__":
    main(Path(sys.argv[1]))
