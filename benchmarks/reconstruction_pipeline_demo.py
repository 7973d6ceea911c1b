"""The ``demo`` tilt series through CTF estimation, CTF correction and reconstruction, scored against the truth.

Starts from a project run that holds the demo series with its fiducial alignment (``alignment.fiducial``'s output,
made by ``benchmarks/alignment_fiducial_demo.py``), runs ``ctf.estimate`` → ``ctf.correct`` (bin 2, the truth
tomogram's 10.8 Å voxels) → ``tomogram.reconstruct`` (WBP, and SIRT) in a copy of the project, and scores each
tomogram: the correlation with the missing-wedge-filtered truth after a low-pass (images are in the contrast of the
data, so dense matter is dark and the correlation is negative), and the beads' contrast (mean z-score of the 3³
voxels) at the positions the fiducial alignment solved (``<ts>.xyz``, the frame the tomogram is built in) against
z-mirrored ones, and at the simulator's true positions. The solved frame may differ from the simulator's by the
alignment's gauge (a rotation about y that levels the specimen, a shift), which shows in the truth columns and in
the correlation, not in the solved-bead columns. Times are per step.

Usage::

    python benchmarks/reconstruction_pipeline_demo.py --project P --run 6 --truth DEMO/truth --work W
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

from tomoforge.io.mrc import read_mrc
from tomoforge.workflow import Project, RunOutput, run_step

sys.path.insert(0, str(Path(__file__).parent))
from reconstruction_demo import _cc, _lowpass, _wedge  # noqa: E402


def _solved_beads_angstrom(alignment: Path, pixel: float, size_xy: tuple[int, int]) -> np.ndarray:
    """The fiducial alignment's 3D bead positions (``<ts>.xyz``: x, y corner-based, z centred; pixels) in Å."""
    xyz = np.loadtxt(alignment / "TS_01.xyz")[:, 1:4]
    return (xyz - np.array([size_xy[0] // 2, size_xy[1] // 2, 0])) * pixel


def _register(
    solved: np.ndarray, truth: np.ndarray, iterations: int = 20
) -> tuple[np.ndarray, np.ndarray, float]:
    """Rigid ``R, t`` with ``truth ≈ R·solved + t``: nearest-neighbour matching and Kabsch, from the identity."""
    rotation, shift = np.eye(3), np.zeros(3)
    rms = np.inf
    for _ in range(iterations):
        moved = solved @ rotation.T + shift
        pairs = np.argmin(((moved[:, None] - truth[None]) ** 2).sum(-1), axis=1)
        target = truth[pairs]
        a, b = solved - solved.mean(0), target - target.mean(0)
        u, _, vt = np.linalg.svd(b.T @ a)
        d = np.sign(np.linalg.det(u @ vt))
        rotation = u @ np.diag([1.0, 1.0, d]) @ vt
        shift = target.mean(0) - rotation @ solved.mean(0)
        rms = float(np.sqrt((((solved @ rotation.T + shift) - target) ** 2).sum(-1).mean()))
    return rotation, shift, rms


def _truth_in_solved_frame(
    truth: torch.Tensor,
    truth_voxel: float,
    shape_zyx: tuple[int, ...],
    voxel: float,
    rotation: np.ndarray,
    shift: np.ndarray,
) -> torch.Tensor:
    """The truth volume sampled at every voxel of the reconstruction (trilinear; zeros outside)."""
    nz, ny, nx = shape_zyx
    axes = [(torch.arange(n, dtype=torch.float64) - n // 2) * voxel for n in (nz, ny, nx)]
    zz, yy, xx = torch.meshgrid(*axes, indexing="ij")
    points = torch.stack([xx, yy, zz], -1) @ torch.from_numpy(rotation).T + torch.from_numpy(shift)
    tz, ty, tx = truth.shape
    scale = torch.tensor([tx - 1, ty - 1, tz - 1], dtype=torch.float64)
    centre = torch.tensor([tx // 2, ty // 2, tz // 2], dtype=torch.float64)
    grid = ((points / truth_voxel + centre) / scale * 2 - 1).to(torch.float32)
    return torch.nn.functional.grid_sample(
        truth[None, None], grid[None], mode="bilinear", padding_mode="zeros", align_corners=True
    )[0, 0]


def _gold(volume: np.ndarray, gold: np.ndarray, voxel: float, mirror: bool) -> float:
    nz, ny, nx = volume.shape
    normed = (volume - volume.mean()) / volume.std()
    values = []
    for x, y, z in gold:
        i, j, k = (
            round(x / voxel) + nx // 2,
            round(y / voxel) + ny // 2,
            round((-z if mirror else z) / voxel) + nz // 2,
        )
        if 1 <= i < nx - 1 and 1 <= j < ny - 1 and 1 <= k < nz - 1:
            values.append(normed[k - 1 : k + 2, j - 1 : j + 2, i - 1 : i + 2].mean())
    return float(np.mean(values))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--project", type=Path, required=True)
    parser.add_argument("--run", type=int, required=True, help="run id of alignment.fiducial")
    parser.add_argument("--truth", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True, help="folder for the project copy")
    parser.add_argument("--sirt-iterations", type=int, default=30)
    args = parser.parse_args()
    copy = args.work / "project"
    if not copy.exists():
        shutil.copytree(args.project, copy)
    project = Project.open(copy, write=True)
    truth_volume = torch.from_numpy(
        np.asarray(read_mrc(args.truth / "tomograms" / "TS_01.mrc").data, dtype=np.float32)
    )
    nz = truth_volume.shape[0]
    wedge = truth_volume
    truth_voxel = float(read_mrc(args.truth / "tomograms" / "TS_01.mrc").pixel_size_angstrom)
    t0 = time.perf_counter()
    ctf = run_step(
        project,
        "ctf.estimate",
        {"tile_size_px": 128},
        {"tilt_series": RunOutput(args.run, "tilt_series")},
    )
    t1 = time.perf_counter()
    corrected = run_step(
        project, "ctf.correct", {"binning": 2}, {"tilt_series": RunOutput(ctf.run.id, "tilt_series")}
    )
    t2 = time.perf_counter()
    print(f"ctf.estimate {t1 - t0:.1f} s, ctf.correct (bin 2) {t2 - t1:.1f} s")
    aligned_run = project.outputs(args.run)["tilt_series"].path
    record = json.loads((aligned_run / "TS_01_alignment.json").read_text())
    beads = _solved_beads_angstrom(aligned_run, record["pixel_size_angstrom"], (512, 512))
    truth_gold = np.loadtxt(args.truth / "gold" / "TS_01.csv", delimiter=",", skiprows=1)[:, :3]
    rotation, shift, rms = _register(beads, truth_gold)
    angle = float(np.degrees(np.arccos(np.clip((np.trace(rotation) - 1) / 2, -1, 1))))
    print(
        f"solved frame → truth frame: rotation {angle:.2f}°, shift {np.round(shift, 1)} Å, bead RMS {rms:.1f} Å"
    )
    print(
        "\n| method | s | cc with wedge-filtered truth (registered), 40 Å low-pass | solved beads z-score | mirrored | "
        "true gold z-score | mirrored |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, params in (
        ("WBP", {"method": "wbp"}),
        ("WBP SIRT-like", {"method": "wbp", "sirt_like_iterations": args.sirt_iterations}),
        ("SIRT", {"method": "sirt", "iterations": args.sirt_iterations}),
    ):
        start = time.perf_counter()
        result = run_step(
            project,
            "tomogram.reconstruct",
            {"thickness_px": nz, **params},
            {"tilt_series": RunOutput(corrected.run.id, "tilt_series")},
        )
        seconds = time.perf_counter() - start
        folder = result.outputs["tomograms"].path
        volume = np.asarray(read_mrc(folder / "TS_01.mrc").data, dtype=np.float32)
        voxel = json.loads((folder / "TS_01_reconstruction.json").read_text())["voxel_size_angstrom"]
        rec = torch.from_numpy(volume)
        cutoff = voxel / 40.0
        if name == "WBP":
            moved = _truth_in_solved_frame(truth_volume, truth_voxel, volume.shape, voxel, rotation, shift)
            wedge = _wedge(moved, 61.5)
        cc = _cc(_lowpass(rec, cutoff, 0.01), _lowpass(wedge, cutoff, 0.01))
        print(
            f"| {name} | {seconds:.1f} | {cc:.3f} | {_gold(volume, beads, voxel, False):.1f} | "
            f"{_gold(volume, beads, voxel, True):.1f} | {_gold(volume, truth_gold, voxel, False):.1f} | "
            f"{_gold(volume, truth_gold, voxel, True):.1f} |"
        )
        print(f"<!-- {folder} -->")


if __name__ == "__main__":
    main()
