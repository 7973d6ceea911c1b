"""tomoforge's ``tomogram.reconstruct`` (WBP, SIRT) against teamtomo's reconstructors on the same views and truth.

Usage::

    .venv/bin/python benchmarks/reconstruction_vs_peers.py [--peer-python /tmp/peervenv/bin/python] \\
        [--size 256] [--noise 0 0.5] [--repeats 2] [--sirt-iterations 30] [--trt-sidelength 64 128] \\
        [--cases cube tutorial] [--json out.json]

Peers (BSD-3, teamtomo 0.6.0; not dependencies of tomoforge) run in their own virtual environment, one process per
method and data set, so the project's environment stays clean:

* ``torch-fourier-slice`` ``backproject_2d_to_3d(images, rotation_matrices, pad_factor=2.0)``: direct Fourier
  inversion (central slices inserted into the padded 3D spectrum, divided by the insertion weights clamped at 1,
  sinc² correction). Square images and a cubic volume only.
* ``torch-reconstruct-tomogram`` ``reconstruct_tomogram(TiltSeries, volume_shape, sidelength, batch_size)``: the
  same Fourier insertion patch by patch (each patch ``1.5 × sidelength`` wide, padded ×2, cosine-blended), with
  ``torch-tilt-series``'s default preprocessing (plane subtraction, edge-tapered padding, normalisation). It reads
  the views from the MRC stack itself (inside the timed call).

Installing them (the CPU torch wheel is on local disk; ``--no-deps`` keeps pip from choosing anything else)::

    python3 -m venv /tmp/peervenv
    /tmp/peervenv/bin/pip install torch==2.13.0 numpy einops scipy
    /tmp/peervenv/bin/pip install --no-deps torch-fourier-slice==0.6.0 torch-reconstruct-tomogram==0.6.0 \\
        torch-tilt-series==0.6.0 torch-grid-utils==0.6.0 torch-image-interpolation==0.6.0 torch-ctf==0.6.0 \\
        torch-fourier-rescale==0.6.0 torch-subpixel-crop==0.6.0 torch-fourier-shift==0.6.0 \\
        torch-affine-utils==0.6.0 torch-fourier-filter==0.6.0 starfile pandas python-dateutil six tzdata \\
        typing-extensions mrcfile

Data and scores
---------------
The phantom, views and scores of ``benchmarks/reconstruction_speed.py``: seeded Gaussian blobs and beads in a slab
of 80 % of the thickness, continued sideways as far as tilted rays reach, exact line integrals for 41 views
(−60…60°, step 3°, tilt axis on y, already aligned) plus white noise at each ``--noise`` level (standard deviation
relative to the noise-free views'). Every method gets the same MRC stack. Scores: Pearson correlations over the
central 70 % of x and of y (the cube) or ``--score-rows`` central rows (the tutorial size), all z, with the true
phantom on the voxel grid filtered in each XZ plane by the missing wedge (``cc wedge``), also by WBP's radial
fall-off at 0.35 cycles/px (``cc band``, the "band-limited, missing-wedge-filtered" volume; equal to ``cc wedge``
to 3 digits here, the blobs having little power above 0.35), after low-passing both volumes in 3D to 0.1 cycles/px
(``cc low``, 54 Å: the contrast of the larger features, where noise weighs less), and with the z-mirrored
wedge-filtered phantom (``cc mirror``, a handedness check that must be near 0). The peers' geometry was checked
against ours on a point (a point at height z lands at ``u = sin θ·z``: ``torch-tilt-series`` with the tilt axis
angle 0 and our tilt angles; ``torch-fourier-slice`` with the rotation ``Ry(θ)ᵀ``) and is confirmed by ``cc mirror``.

Cases: **cube** — ``--size``³ voxels from 41 views of ``--size``² (the only shape torch-fourier-slice accepts), all
methods. **tutorial** (``--cases tutorial``) — 928 × 928 × 300 from 41 views of 928²: tomoforge WBP and
torch-reconstruct-tomogram with the first ``--trt-sidelength``, which is stopped after ``--peer-timeout`` s
(then it is run on the half size, 464 × 464 × 150, and the table says so); torch-fourier-slice cannot (not cubic;
its ×2-padded 1856³ spectrum alone would be 26 GB).

Timing: tomoforge runs through the engine (``run_step``) in a fresh process per run, so its time includes reading
the stack, writing the tomogram MRC and the PNG previews; its kernel-only time (matrix, weighting,
back-projection or SIRT) is given too. The peers are timed in-process around the reconstruction call, after
importing, ``--repeats`` calls in a row (the first call is also given). The machine has 2 cores shared with other
work: the best of the repeats is reported with the 1-min load average (``os.getloadavg``) before and after.
Peak memory: peak ``VmRSS`` / ``RssAnon`` of the process (sampled every 10 ms).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
import reconstruction_speed as rs  # noqa: E402

PEERS = (
    "torch-fourier-slice",
    "torch-reconstruct-tomogram",
    "torch-tilt-series",
    "torch-grid-utils",
    "torch",
)


# ------------------------------------------------------------------------------------ peer worker (peer venv)


def _peer_worker(config: dict[str, Any]) -> dict[str, Any]:
    """Run one peer method ``repeats`` times on the stack; save the last volume as .npy; return timings."""
    import mrcfile

    torch.set_num_threads(int(config["threads"]))
    start = time.perf_counter()
    if config["method"] == "torch-fourier-slice":
        from torch_fourier_slice import backproject_2d_to_3d
    else:
        from torch_reconstruct_tomogram import reconstruct_tomogram
        from torch_tilt_series import TiltSeries
    import_s = time.perf_counter() - start
    angles = np.asarray(config["angles"], dtype=np.float64)
    nz, ny, nx = config["shape"]
    calls, loads = [], []
    with rs._MemorySampler() as memory:
        for _ in range(int(config["repeats"])):
            load = os.getloadavg()[0]
            start = time.perf_counter()
            if config["method"] == "torch-fourier-slice":
                images = torch.from_numpy(np.array(mrcfile.read(config["stack"]), dtype=np.float32))
                theta = torch.deg2rad(torch.tensor(angles, dtype=torch.float32))
                c, s = torch.cos(theta), torch.sin(theta)
                ry = torch.zeros(len(angles), 3, 3)
                ry[:, 0, 0], ry[:, 0, 2], ry[:, 1, 1], ry[:, 2, 0], ry[:, 2, 2] = c, s, 1.0, -s, c
                volume = backproject_2d_to_3d(
                    images, ry.transpose(-1, -2), pad_factor=float(config["pad_factor"])
                )
            else:
                series = TiltSeries(
                    tilt_angles=torch.tensor(angles, dtype=torch.float32),
                    tilt_axis_angle=torch.zeros(len(angles)),
                    sample_translations=torch.zeros(len(angles), 2),
                    pixel_spacing=float(config["pixel"]),
                    image_path=config["stack"],
                    image_indices=np.arange(len(angles)),
                )
                volume = reconstruct_tomogram(
                    series, (nz, ny, nx), int(config["sidelength"]), batch_size=int(config["batch_size"])
                )
            calls.append(time.perf_counter() - start)
            loads.append((load, os.getloadavg()[0]))
    np.save(config["out"], volume.numpy().astype(np.float32))
    return {
        "import_s": import_s,
        "calls_s": calls,
        "loads": loads,
        "memory_bytes": memory.peak,
        "versions": {name: metadata.version(name) for name in PEERS if _installed(name)},
    }


def _installed(name: str) -> bool:
    try:
        metadata.version(name)
    except metadata.PackageNotFoundError:
        return False
    return True


def run_peer(python: str, config: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Run :func:`_peer_worker` with the peer interpreter; ``{"timeout": s}`` or ``{"error": text}`` on failure."""
    try:
        done = subprocess.run(
            [python, __file__, "--peer-worker", json.dumps(config)],
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return {"timeout": timeout}
    if done.returncode != 0:
        return {
            "error": done.stderr.strip().splitlines()[-1]
            if done.stderr.strip()
            else f"exit {done.returncode}"
        }
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# ------------------------------------------------------------------------------------------------ scoring


LOWPASS = 0.1  # cycles/px of the low-pass for ``cc low`` (54 Å at 5.4 Å/px)
MARGIN = 16  # rows on either side of a scored block that the 3D low-pass sees


def _lowpass_3d(block: np.ndarray, cutoff: float = LOWPASS, falloff: float = 0.035) -> np.ndarray:
    spectrum = torch.fft.fftn(torch.from_numpy(np.asarray(block, dtype=np.float64)))
    k = [torch.fft.fftfreq(n, dtype=torch.float64) for n in block.shape]
    radius = torch.sqrt(k[0][:, None, None] ** 2 + k[1][None, :, None] ** 2 + k[2][None, None, :] ** 2)
    gain = torch.exp(-((radius - cutoff).clamp(min=0) ** 2) / (2 * falloff**2))
    return torch.fft.ifftn(spectrum * gain).real.numpy()


def score(
    volume: np.ndarray, phantom: rs.Phantom, shape: tuple[int, int, int], rows: range
) -> dict[str, float]:
    """Pearson correlations over ``rows`` × the central 70 % of x (all z), streamed in blocks of 16 rows.

    ``cc wedge``: with the wedge-filtered phantom; ``cc band``: wedge and WBP fall-off (0.35 cycles/px);
    ``cc low``: both volumes low-passed in 3D to ``LOWPASS`` (blocks read with ``MARGIN`` extra rows, so ``rows``
    must stay ``MARGIN`` rows inside the volume); ``cc mirror``: with the z-mirrored wedge-filtered phantom.
    """
    nx = shape[2]
    m = int(round(0.15 * nx))
    sums: dict[str, np.ndarray] = {}
    for r0 in range(rows.start, rows.stop, 16):
        r1 = min(rows.stop, r0 + 16)
        lo, hi = max(0, r0 - MARGIN), min(shape[1], r1 + MARGIN)
        truth = rs.xz_filtered(rs.render_truth_rows(phantom, shape, range(lo, hi)))
        recon_ext = np.asarray(volume[:, lo:hi], dtype=np.float64)
        inner = (slice(None), slice(r0 - lo, r1 - lo), slice(m, nx - m))
        recon = recon_ext[inner]
        pairs = {
            "cc wedge": (recon, truth[inner]),
            "cc band": (recon, rs.xz_filtered(truth, cutoff=0.35)[inner]),
            "cc low": (_lowpass_3d(recon_ext)[inner], _lowpass_3d(truth)[inner]),
            "cc mirror": (recon, truth[::-1][inner]),
        }
        for name, (a, b) in pairs.items():
            a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
            acc = np.array([a.sum(), b.sum(), (a * b).sum(), (a**2).sum(), (b**2).sum(), a.size])
            sums[name] = sums.get(name, 0.0) + acc
    out = {}
    for name, (sa, sb, sab, saa, sbb, n) in sums.items():
        cov = sab - sa * sb / n
        out[name] = float(cov / math.sqrt((saa - sa * sa / n) * (sbb - sb * sb / n)))
    return out


# ---------------------------------------------------------------------------------------------------- main


def _load() -> float:
    return os.getloadavg()[0]


def _tomoforge_rows(
    name: str, folder: Path, work: Path, params: dict[str, Any], args: argparse.Namespace
) -> tuple[dict[str, Any], np.ndarray]:
    from tomoforge.io.mrc import read_mrc

    runs = [rs.run_case(folder, work, params, args.threads) for _ in range(args.repeats)]
    best = min(runs, key=lambda r: r["wall_s"])
    for run in runs:
        if run is not best:
            shutil.rmtree(run["project"], ignore_errors=True)
    kernels = sum(
        best["kernels_s"].get(k, 0.0)
        for k in (
            "single_axis_matrix",
            "transpose_matrix",
            "weighting_filters",
            "weight_projections",
            "backproject_single_axis",
            "sirt_slab",
        )
    )
    row = {
        "method": name,
        "best_s": best["wall_s"],
        "all_s": [r["wall_s"] for r in runs],
        "kernels_s": kernels,
        "scope": "run_step (read stack, reconstruct, write MRC + PNGs)",
        "memory_bytes": best["memory_bytes"],
        "load": (best["load_start"], best["load_end"]),
        "project": best["project"],
    }
    print(f"  {name}: {[round(t, 2) for t in row['all_s']]} s (load {row['load'][0]:.2f})", flush=True)
    return row, read_mrc(best["tomogram"]).data


def _peer_rows(
    method: str,
    label: str,
    extra: dict[str, Any],
    stack: Path,
    angles: np.ndarray,
    shape: tuple[int, int, int],
    work: Path,
    args: argparse.Namespace,
    repeats: int,
) -> tuple[dict[str, Any], np.ndarray | None]:
    out = work / f"{label.replace(' ', '_').replace('=', '')}.npy"
    config = {
        "method": method,
        "stack": str(stack),
        "angles": angles.tolist(),
        "shape": list(shape),
        "out": str(out),
        "repeats": repeats,
        "threads": args.threads or torch.get_num_threads(),
        "pixel": rs.PIXEL_ANGSTROM,
        **extra,
    }
    result = run_peer(args.peer_python, config, args.peer_timeout)
    row: dict[str, Any] = {"method": label, "scope": "the reconstruction call in-process (after import)"}
    if "timeout" in result or "error" in result:
        row.update(result)
        print(f"  {label}: {result}", flush=True)
        return row, None
    row.update(
        best_s=min(result["calls_s"]),
        all_s=result["calls_s"],
        first_s=result["calls_s"][0],
        import_s=result["import_s"],
        memory_bytes=result["memory_bytes"],
        load=result["loads"][int(np.argmin(result["calls_s"]))],
        versions=result["versions"],
    )
    print(f"  {label}: {[round(t, 2) for t in row['all_s']]} s (load {row['load'][0]:.2f})", flush=True)
    return row, np.load(out, mmap_mode="r")


def _case(
    title: str,
    shape: tuple[int, int, int],
    noise: float,
    peers: list[tuple[str, str, dict[str, Any], int]],
    args: argparse.Namespace,
    work: Path,
    rows: range,
    sirt: bool,
) -> dict[str, Any]:
    nz, ny, nx = shape
    angles = rs.tilt_angles(41)
    phantom = rs.make_phantom(shape)
    views = rs.render_views(phantom, angles, (ny, nx), noise=noise)
    folder = rs.write_aligned_series(work / f"series_{nx}_{noise}", views, angles, rs.PIXEL_ANGSTROM)
    del views
    print(f"{title}, noise {noise}: {len(phantom.sigma)} blobs (load {_load():.2f})", flush=True)
    results = []
    cases = [("tomoforge WBP", {"method": "wbp", "thickness_px": nz, "device": "cpu"})]
    if sirt:
        cases.append(
            (
                f"tomoforge SIRT ×{args.sirt_iterations}",
                {"method": "sirt", "thickness_px": nz, "iterations": args.sirt_iterations, "device": "cpu"},
            )
        )
    for name, params in cases:
        row, volume = _tomoforge_rows(name, folder, work, params, args)
        row.update(score(volume, phantom, shape, rows))
        shutil.rmtree(row.pop("project"), ignore_errors=True)
        results.append(row)
    for method, label, extra, repeats in peers:
        row, peer_volume = _peer_rows(
            method, label, extra, folder / "TS_01.mrc", angles, shape, work, args, repeats
        )
        if peer_volume is not None:
            row.update(score(peer_volume, phantom, shape, rows))
        results.append(row)
    shutil.rmtree(folder, ignore_errors=True)
    return {
        "title": title,
        "shape_zyx": shape,
        "noise": noise,
        "rows_scored": [rows.start, rows.stop],
        "results": results,
    }


def _print_case(case: dict[str, Any]) -> None:
    nz, ny, nx = case["shape_zyx"]
    print(
        f"\n### {case['title']}: {nx}×{ny}×{nz} from 41 views of {nx}×{ny}, noise {case['noise']} "
        f"(rows {case['rows_scored'][0]}–{case['rows_scored'][1] - 1} scored)\n"
    )
    print(
        "| method | best (s) | all runs (s) | first call (s) | kernels (s) | peak VmRSS / RssAnon (GB) "
        "| cc wedge | cc band | cc low | cc mirror | load (1 min) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in case["results"]:
        if "best_s" not in r:
            why = f"did not finish in {r['timeout']:.0f} s" if "timeout" in r else f"failed: {r.get('error')}"
            print(f"| {r['method']} | {why} | | | | | | | | | |")
            continue
        mem = r["memory_bytes"]
        first = f"{r['first_s']:.2f}" if "first_s" in r else "–"
        kernels = f"{r['kernels_s']:.2f}" if "kernels_s" in r else "–"
        print(
            f"| {r['method']} | {r['best_s']:.2f} | {', '.join(f'{t:.2f}' for t in r['all_s'])} | {first} "
            f"| {kernels} | {mem['VmRSS'] / 1e9:.2f} / {mem['RssAnon'] / 1e9:.2f} | {r['cc wedge']:.3f} "
            f"| {r['cc band']:.3f} | {r['cc low']:.3f} | {r['cc mirror']:.3f} | {r['load'][0]:.2f}→{r['load'][1]:.2f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--peer-python", default="/tmp/peervenv/bin/python")
    parser.add_argument("--size", type=int, default=256, help="cube edge for the all-methods case")
    parser.add_argument("--noise", type=float, nargs="+", default=[0.0, 0.5])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--sirt-iterations", type=int, default=30)
    parser.add_argument("--pad-factor", type=float, default=2.0, help="torch-fourier-slice padding")
    parser.add_argument("--trt-sidelength", type=int, nargs="+", default=[64, 128])
    parser.add_argument(
        "--trt-batch", type=int, default=8, help="torch-reconstruct-tomogram patches per batch"
    )
    parser.add_argument(
        "--cases", nargs="+", choices=["cube", "tutorial"], default=["cube"], help="which cases to run"
    )
    parser.add_argument("--score-rows", type=int, default=64, help="central rows scored at the tutorial size")
    parser.add_argument("--peer-timeout", type=float, default=600.0)
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--peer-worker", type=str, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peer_worker is not None:
        print(json.dumps(_peer_worker(json.loads(args.peer_worker))))
        return
    if not Path(args.peer_python).exists():
        raise SystemExit(f"{args.peer_python} does not exist: install the peers as the module docstring says")
    command = " ".join(["python", *sys.argv])
    print(f"command: {command}\ntorch {torch.__version__}, threads {args.threads or torch.get_num_threads()}")
    work = args.work or Path(tempfile.mkdtemp(prefix="recon_peers_"))
    work.mkdir(parents=True, exist_ok=True)
    n = args.size
    cube_peers = [
        (
            "torch-fourier-slice",
            f"torch-fourier-slice pad {args.pad_factor:g}",
            {"pad_factor": args.pad_factor},
            args.repeats,
        )
    ] + [
        (
            "torch-reconstruct-tomogram",
            f"torch-reconstruct-tomogram sidelength {s}",
            {"sidelength": s, "batch_size": args.trt_batch},
            args.repeats,
        )
        for s in args.trt_sidelength
    ]
    cases = []
    try:
        inner = range(int(round(0.15 * n)), n - int(round(0.15 * n)))  # the central 70 % of y
        for noise in args.noise if "cube" in args.cases else []:
            cases.append(_case("cube", (n, n, n), noise, cube_peers, args, work, inner, sirt=True))
        if "tutorial" in args.cases:
            s = args.trt_sidelength[0]
            trt = [
                (
                    "torch-reconstruct-tomogram",
                    f"torch-reconstruct-tomogram sidelength {s}",
                    {"sidelength": s, "batch_size": args.trt_batch},
                    1,
                )
            ]
            big = (300, 928, 928)
            rows = range(big[1] // 2 - args.score_rows // 2, big[1] // 2 + args.score_rows // 2)
            noise = args.noise[-1]
            case = _case("tutorial", big, noise, trt, args, work, rows, sirt=False)
            cases.append(case)
            if "timeout" in case["results"][-1]:
                half = (150, 464, 464)
                rows = range(half[1] // 2 - args.score_rows // 2, half[1] // 2 + args.score_rows // 2)
                cases.append(
                    _case("half of the tutorial size", half, noise, trt, args, work, rows, sirt=False)
                )
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    versions: dict[str, str] = next(
        (r["versions"] for c in cases for r in c["results"] if "versions" in r), {}
    )
    print("\npeer environment: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    for case in cases:
        _print_case(case)
    if args.json:
        payload = {"command": command, "versions": versions, "cases": cases}
        args.json.write_text(json.dumps(payload, indent=1, default=str) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
