"""Speed and memory of ``tomogram.reconstruct`` at the tutorial's bin-4 size (issue 8's speed targets).

Target: a 928 × 928 × 300 tomogram from 41 aligned views of 928 × 928 (−60…60° in steps of 3°, the tutorial's
bin-4 size, 5.4 Å) on the 2-core development machine, in < 4 GB of RAM; the voxel updates per second of the
back-projection set against this machine's memory bandwidth.

Usage::

    .venv/bin/python benchmarks/reconstruction_speed.py [--size 928] [--thickness 300] [--views 41] \\
        [--device cpu|cuda] [--repeats 2] [--sirt-iterations 2] [--json out.json]
    .venv/bin/python benchmarks/reconstruction_speed.py --quick        # 256 × 256 × 100, one run of each

What it does
------------
1. **Data.** A seeded phantom of Gaussian blobs (σ 2–5 px, peak density 0.2–1, one per 12 000 voxels) and a few dense "beads" (σ 1.5 px)
   in a slab of 80 % of the thickness, continued sideways beyond the tomogram's width as far as the most tilted
   rays reach (a real specimen goes on beyond the field of view). The aligned views are its exact line
   integrals (a Gaussian projects to a Gaussian: no projector of ours is involved) in the geometry of
   CONVENTIONS.md §7 with the tilt axis on y, ``u = cos θ·x + sin θ·z``, plus white Gaussian noise
   (``--noise``, standard deviation relative to that of the noise-free views). They are written as an MRC stack
   with a ``tilt_series`` artifact (``aligned=True``, identity transforms) in a temporary folder.
2. **Runs.** Each run is a fresh process (``--child``) that opens a new project and runs the real step through
   the engine (``run_step(project, "tomogram.reconstruct", params, {"tilt_series": folder})``): WBP with the
   defaults, and SIRT with ``--sirt-iterations`` iterations when asked. The kernels and the I/O the step calls are
   wrapped with timers (``torch.sparse.mm``, ``single_axis_matrix``, ``transpose_matrix``, ``weighting_filters``,
   ``weight_projections``, ``backproject_single_axis``, ``sirt_slab``, the row reads, ``MrcWriter.write_rows``
   and ``close``, ``write_slice_pngs``). A thread samples ``/proc/self/status`` every 10 ms: peak ``VmRSS``,
   ``RssAnon`` (what the step allocates) and ``RssFile`` (memory-mapped MRC pages, which the kernel can drop); with
   ``VmHWM`` and ``ru_maxrss``. Each case runs ``--repeats`` times; the best wall time is reported, with the
   1-min load average (``os.getloadavg``) at its start and end, since the 2 cores are shared.
3. **Bandwidth.** ``b.copy_(a)`` and ``torch.add(a, b, out=c)`` on 1 GiB float32 tensors (best of 5), counting
   the bytes read and written. The WBP back-projection is a CSR sparse × dense product per slab of ``r`` rows: the
   matrix (two entries of 4-byte value + 4-byte column per voxel and view) is streamed once per slab and applied
   to all ``r`` rows, so its compulsory traffic is ``16 / r`` bytes per voxel update, plus the slab written
   (``4 / m`` bytes per update for ``m`` views). The report gives the updates per second, the bytes per update
   the measured bandwidth would allow at that rate, and the bandwidth-bound ceiling of the update rate. Each
   matrix entry also reads a row of ``r`` floats of the dense operand (the views' rows), from cache: 8 bytes per
   update for the two interpolation taps, which is what bounds the product on CPU (printed as GB/s).
4. **Sanity score.** The correlation, in the central 70 % of x, of 16 central rows of the WBP tomogram with the
   true phantom sampled on the voxel grid and filtered in each XZ plane by the missing wedge (``|k_z| ≤
   tan 60°·|k_x|``) and, for ``cc band``, also by the WBP's radial fall-off (0.35 cycles/px, σ 0.035) — the
   filters act only in the XZ plane, as the weighting does.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

PIXEL_ANGSTROM = 5.4


# ----------------------------------------------------------------------------------------------------- phantom


@dataclass
class Phantom:
    """Gaussian blobs: centres ``(n, 3)`` as ``(x, y, z)`` in px about the tomogram's centre voxel, σ ``(n,)`` in
    px and peak density ``(n,)``."""

    centres_xyz: np.ndarray
    sigma: np.ndarray
    amplitude: np.ndarray


def make_phantom(
    shape_zyx: tuple[int, int, int],
    *,
    max_tilt_deg: float = 60.0,
    seed: int = 0,
    specimen_fraction: float = 0.8,
) -> Phantom:
    """Blobs in a slab of ``specimen_fraction`` of the thickness, continued sideways as far as tilted rays reach."""
    nz, ny, nx = shape_zyx
    rng = np.random.default_rng(seed)
    half_t = 0.5 * specimen_fraction * nz
    half_x = 0.5 * nx + half_t * math.tan(math.radians(max_tilt_deg)) + 8.0
    half_y = 0.5 * ny + 8.0
    volume = (2 * half_x) * (2 * half_y) * (2 * half_t)
    n_blobs, n_beads = int(volume / 12000.0) + 20, int(volume / 400000.0) + 5
    lo, hi = np.array([-half_x, -half_y, -half_t]), np.array([half_x, half_y, half_t])
    centres = np.concatenate([rng.uniform(lo, hi, (n_blobs, 3)), rng.uniform(lo, hi, (n_beads, 3))])
    sigma = np.concatenate([rng.uniform(2.0, 5.0, n_blobs), np.full(n_beads, 1.5)])
    amplitude = np.concatenate([rng.uniform(0.2, 1.0, n_blobs), np.full(n_beads, 4.0)])
    return Phantom(centres, sigma, amplitude)


def _gauss(coords: torch.Tensor, centres: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    return torch.exp(-0.5 * ((coords[:, None] - centres[None, :]) / sigma[None, :]) ** 2)


def render_views(
    phantom: Phantom,
    angles_deg: np.ndarray,
    shape_yx: tuple[int, int],
    *,
    noise: float = 0.0,
    seed: int = 1,
    band_rows: int = 128,
) -> np.ndarray:
    """Exact line integrals ``(m, H, W)`` of the blobs in the aligned frame (tilt axis on y), plus white noise of
    standard deviation ``noise`` × the noise-free views' standard deviation."""
    h, w = shape_yx
    c = torch.from_numpy(phantom.centres_xyz)
    s = torch.from_numpy(phantom.sigma).float()
    mass = torch.from_numpy(phantom.amplitude).float() * s * math.sqrt(2.0 * math.pi)  # integral at the peak
    rows = torch.arange(h, dtype=torch.float32) - h // 2
    cols = torch.arange(w, dtype=torch.float32) - w // 2
    views = np.empty((len(angles_deg), h, w), dtype=np.float32)
    for v, angle in enumerate(angles_deg):
        t = math.radians(float(angle))
        u = (math.cos(t) * c[:, 0] + math.sin(t) * c[:, 2]).float()
        y = c[:, 1].float()
        seen = (u.abs() < w / 2 + 5 * s) & (y.abs() < h / 2 + 5 * s)
        u, y, sv, mv = u[seen], y[seen], s[seen], mass[seen]
        gx = _gauss(cols, u, sv).T.contiguous()  # (B, W)
        for r0 in range(0, h, band_rows):
            r1 = min(h, r0 + band_rows)
            near = (y > rows[r0] - 5 * sv) & (y < rows[r1 - 1] + 5 * sv)
            gy = _gauss(rows[r0:r1], y[near], sv[near]) * mv[near][None, :]
            views[v, r0:r1] = (gy @ gx[near]).numpy()
    if noise > 0:
        rng = np.random.default_rng(seed)
        views += (noise * float(views.std()) * rng.standard_normal(views.shape)).astype(np.float32)
    return views


def render_truth_rows(phantom: Phantom, shape_zyx: tuple[int, int, int], rows: range) -> np.ndarray:
    """The phantom sampled on the tomogram's voxel grid for tomogram rows ``rows``: ``(nz, len(rows), nx)``."""
    nz, ny, nx = shape_zyx
    c = torch.from_numpy(phantom.centres_xyz)
    s = torch.from_numpy(phantom.sigma)
    a = torch.from_numpy(phantom.amplitude)
    z = torch.arange(nz, dtype=torch.float64) - nz // 2
    y = torch.arange(rows.start, rows.stop, dtype=torch.float64) - ny // 2
    x = torch.arange(nx, dtype=torch.float64) - nx // 2
    near = (
        (c[:, 1] > y[0] - 5 * s)
        & (c[:, 1] < y[-1] + 5 * s)
        & (c[:, 0].abs() < nx / 2 + 5 * s)
        & (c[:, 2].abs() < nz / 2 + 5 * s)
    )
    c, s, a = c[near], s[near], a[near]
    zy = _gauss(z, c[:, 2], s)[:, None, :] * _gauss(y, c[:, 1], s)[None, :, :] * a  # (nz, r, B)
    out = zy.reshape(nz * len(y), -1) @ _gauss(x, c[:, 0], s).T  # (nz·r, nx)
    return out.reshape(nz, len(y), nx).float().numpy()


def xz_filtered(
    block: np.ndarray, *, max_tilt_deg: float = 60.0, cutoff: float | None = None, falloff: float = 0.035
) -> np.ndarray:
    """Filter every XZ plane of a ``(nz, r, nx)`` block by the missing wedge and optionally a radial fall-off."""
    nz, _, nx = block.shape
    kz = torch.fft.fftfreq(nz, dtype=torch.float64)[:, None, None]
    kx = torch.fft.fftfreq(nx, dtype=torch.float64)[None, None, :]
    keep = ((kz.abs() <= math.tan(math.radians(max_tilt_deg)) * kx.abs()) | ((kz == 0) & (kx == 0))).double()
    if cutoff is not None:
        radius = torch.sqrt(kz**2 + kx**2)
        keep = keep * torch.exp(-((radius - cutoff).clamp(min=0) ** 2) / (2 * falloff**2))
    spectrum = torch.fft.fft2(torch.from_numpy(np.asarray(block, dtype=np.float64)), dim=(0, 2))
    return torch.fft.ifft2(spectrum * keep, dim=(0, 2)).real.float().numpy()


def central_cc(a: np.ndarray, b: np.ndarray, *, inner: float = 0.7) -> float:
    """Pearson correlation of two ``(nz, r, nx)`` blocks over the central ``inner`` fraction of x."""
    nx = a.shape[-1]
    m = int(round(0.5 * (1.0 - inner) * nx))
    aa = np.asarray(a[..., m : nx - m], dtype=np.float64).ravel()
    bb = np.asarray(b[..., m : nx - m], dtype=np.float64).ravel()
    aa, bb = aa - aa.mean(), bb - bb.mean()
    return float((aa * bb).sum() / math.sqrt((aa * aa).sum() * (bb * bb).sum()))


def tilt_angles(views: int, max_tilt_deg: float = 60.0) -> np.ndarray:
    """``views`` evenly spaced angles from −max to +max (41 → steps of 3°)."""
    return np.linspace(-max_tilt_deg, max_tilt_deg, views)


def write_aligned_series(folder: Path, views: np.ndarray, angles_deg: np.ndarray, pixel: float) -> Path:
    """A ``tilt_series`` artifact folder: ``TS_01.mrc`` and ``TS_01.json`` (aligned, identity transforms)."""
    from tomoforge.io.mrc import MrcWriter
    from tomoforge.models import Acquisition, TiltImage, TiltSeries, TiltTransform
    from tomoforge.steps._artifacts import write_tilt_series

    folder.mkdir(parents=True, exist_ok=True)
    stack = folder / "TS_01.mrc"
    with MrcWriter(stack, views.shape, voxel_size_angstrom=pixel, is_stack=True) as out:
        out.write(views, 0)
    order = np.argsort(np.abs(angles_deg), kind="stable")  # dose-symmetric-like acquisition order
    acquisition_order = np.empty(len(angles_deg), dtype=int)
    acquisition_order[order] = np.arange(len(angles_deg))
    dose = 3.0
    tilts = [
        TiltImage(
            index=i,
            tilt_angle_deg=float(a),
            acquisition_order=int(acquisition_order[i]),
            prior_dose_e_per_angstrom2=dose * int(acquisition_order[i]),
            dose_e_per_angstrom2=dose,
            transform=TiltTransform(),
        )
        for i, a in enumerate(angles_deg)
    ]
    series = TiltSeries(
        ts_id="TS_01",
        acquisition=Acquisition(
            voltage_kv=300.0,
            spherical_aberration_mm=2.7,
            amplitude_contrast=0.1,
            pixel_size_angstrom=pixel,
            tilt_axis_angle_deg=0.0,
            dose_per_tilt_e_per_angstrom2=dose,
        ),
        stack_file=stack,
        pixel_size_angstrom=pixel,
        tilts=tilts,
        aligned=True,
        image_shape_yx=(views.shape[1], views.shape[2]),
    )
    write_tilt_series(folder, series)
    return folder


# ------------------------------------------------------------------------------------------------ child process


class _MemorySampler:
    """Peak VmRSS / RssAnon / RssFile of this process, sampled from /proc/self/status every ``period`` s."""

    def __init__(self, period: float = 0.01) -> None:
        self.peak = {"VmRSS": 0, "RssAnon": 0, "RssFile": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(period,), daemon=True)

    def _read(self) -> dict[str, int]:
        values = {}
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                key, _, rest = line.partition(":")
                if key in self.peak or key == "VmHWM":
                    values[key] = int(rest.split()[0]) * 1024
        return values

    def _run(self, period: float) -> None:
        while not self._stop.is_set():
            for key, value in self._read().items():
                if key in self.peak:
                    self.peak[key] = max(self.peak[key], value)
            time.sleep(period)

    def __enter__(self) -> _MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak["VmHWM"] = self._read()["VmHWM"]


class _Timers:
    """Wraps callables with wall-clock timers (synchronising CUDA so that GPU time is counted where it is spent)."""

    def __init__(self, device: str) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self.cuda = device == "cuda"

    def wrap(self, owner: Any, attribute: str, name: str) -> None:
        inner = getattr(owner, attribute)
        timers = self

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            result = inner(*args, **kwargs)
            if timers.cuda:
                torch.cuda.synchronize()
            timers.seconds[name] = timers.seconds.get(name, 0.0) + time.perf_counter() - start
            timers.calls[name] = timers.calls.get(name, 0) + 1
            return result

        setattr(owner, attribute, timed)


def _child(config: dict[str, Any]) -> dict[str, Any]:
    """Run the step once in this process with the kernels timed; return timings and memory."""
    import tomoforge.reconstruction as recon
    import tomoforge.steps._reconstruction_slabs as slabs
    import tomoforge.steps._tomograms as tomograms
    from tomoforge.io.mrc import MrcWriter
    from tomoforge.workflow import Project, run_step

    if config.get("threads"):
        torch.set_num_threads(int(config["threads"]))
    timers = _Timers(config["params"].get("device", "cpu"))
    for name in (
        "single_axis_matrix",
        "transpose_matrix",
        "weighting_filters",
        "weight_projections",
        "backproject_single_axis",
        "sirt_slab",
        "full_ray_width",
    ):
        timers.wrap(recon, name, name)
    timers.wrap(torch.sparse, "mm", "torch.sparse.mm")
    timers.wrap(slabs.ViewRows, "rows", "read view rows")
    timers.wrap(MrcWriter, "write_rows", "MrcWriter.write_rows")
    timers.wrap(MrcWriter, "close", "MrcWriter.close")
    timers.wrap(tomograms, "write_slice_pngs", "write_slice_pngs")
    load_start = os.getloadavg()[0]
    with _MemorySampler() as memory:
        start = time.perf_counter()
        project = Project.init(Path(config["project"]))
        result = run_step(
            project, "tomogram.reconstruct", config["params"], {"tilt_series": Path(config["input"])}
        )
        wall = time.perf_counter() - start
    folder = result.outputs["tomograms"].path
    record = json.loads((folder / "TS_01_reconstruction.json").read_text(encoding="utf-8"))
    return {
        "wall_s": wall,
        "step_seconds": record["seconds"],
        "step_timings_s": record["timings_s"],
        "tomogram": str(folder / "TS_01.mrc"),
        "kernels_s": timers.seconds,
        "calls": timers.calls,
        "memory_bytes": memory.peak,
        "ru_maxrss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "load_start": load_start,
        "load_end": os.getloadavg()[0],
        "threads": torch.get_num_threads(),
    }


def run_case(input_folder: Path, work: Path, params: dict[str, Any], threads: int | None) -> dict[str, Any]:
    """One reconstruction in a fresh process; returns the child's report plus the process's wall time."""
    project = work / f"project_{time.monotonic_ns()}"
    config = {"project": str(project), "input": str(input_folder), "params": params, "threads": threads}
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(config)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"the reconstruction process failed:\n{done.stderr[-4000:]}")
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    report["process_wall_s"] = time.perf_counter() - start
    report["project"] = str(project)
    return report


# -------------------------------------------------------------------------------------------------- bandwidth


def memory_bandwidth(device: str, gib: float = 1.0, repeats: int = 5) -> dict[str, float]:
    """GB/s (10⁹ bytes read + written per second) of a copy and an add of ``gib`` GiB float32 tensors."""
    n = int(gib * 2**30) // 4
    first = torch.rand(n, device=device)
    second = torch.empty_like(first)
    third = torch.empty_like(first)
    best: dict[str, float] = {}
    for name in ("copy", "add"):
        seconds = math.inf
        for _ in range(repeats):
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            if name == "copy":
                second.copy_(first)
            else:
                torch.add(first, second, out=third)
            if device == "cuda":
                torch.cuda.synchronize()
            seconds = min(seconds, time.perf_counter() - start)
        best[name] = (2 if name == "copy" else 3) * 4 * n / seconds / 1e9
    return best


# ------------------------------------------------------------------------------------------------------- main


def _gb(n: float) -> str:
    return f"{n / 1e9:.2f}"


def _best(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return min(runs, key=lambda r: r["wall_s"])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=928, help="views and tomogram are SIZE × SIZE")
    parser.add_argument("--thickness", type=int, default=300)
    parser.add_argument("--views", type=int, default=41)
    parser.add_argument("--max-tilt", type=float, default=60.0)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--sirt-iterations", type=int, default=0, help="also run SIRT with this many iterations"
    )
    parser.add_argument("--noise", type=float, default=0.5)
    parser.add_argument("--quick", action="store_true", help="256 × 256 × 100, one run each")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--child", type=str, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(_child(json.loads(args.child))))
        return
    if args.quick:
        args.size, args.thickness, args.repeats = 256, 100, 1
    size, nz, m = args.size, args.thickness, args.views
    work = args.work or Path(tempfile.mkdtemp(prefix="recon_speed_"))
    work.mkdir(parents=True, exist_ok=True)
    command = " ".join(["python", *sys.argv])
    print(f"command: {command}")
    print(
        f"torch {torch.__version__}, threads {args.threads or torch.get_num_threads()}, device {args.device}"
    )
    report: dict[str, Any] = {"command": command, "size": size, "thickness": nz, "views": m}
    try:
        t0 = time.perf_counter()
        shape = (nz, size, size)
        angles = tilt_angles(m, args.max_tilt)
        phantom = make_phantom(shape, max_tilt_deg=args.max_tilt)
        views = render_views(phantom, angles, (size, size), noise=args.noise)
        folder = write_aligned_series(work / "tilt_series", views, angles, PIXEL_ANGSTROM)
        del views
        print(
            f"data: {len(phantom.sigma)} blobs, {m} views of {size}² written in {time.perf_counter() - t0:.1f} s "
            f"(load {os.getloadavg()[0]:.2f})",
            flush=True,
        )
        cases = [("WBP", {"method": "wbp", "thickness_px": nz, "device": args.device})]
        if args.sirt_iterations:
            cases.append(
                (
                    f"SIRT ×{args.sirt_iterations}",
                    {
                        "method": "sirt",
                        "thickness_px": nz,
                        "iterations": args.sirt_iterations,
                        "device": args.device,
                    },
                )
            )
        results: dict[str, dict[str, Any]] = {}
        for name, params in cases:
            runs = []
            for _ in range(args.repeats):
                run = run_case(folder, work, params, args.threads)
                print(
                    f"  {name}: {run['wall_s']:.1f} s in the step ({run['process_wall_s']:.1f} s process), "
                    f"load {run['load_start']:.2f}→{run['load_end']:.2f}",
                    flush=True,
                )
                runs.append(run)
            results[name] = _best(runs)
            for run in runs:
                if run is not results[name]:
                    shutil.rmtree(run["project"], ignore_errors=True)
        report["runs"] = results

        # sanity score of the WBP tomogram on 16 central rows
        from tomoforge.io.mrc import read_mrc

        rows = range(size // 2 - 8, size // 2 + 8)
        recon = np.asarray(
            read_mrc(results["WBP"]["tomogram"]).data[:, rows.start : rows.stop], dtype=np.float32
        )
        truth = render_truth_rows(phantom, shape, rows)
        scores = {
            "cc_wedge": central_cc(recon, xz_filtered(truth, max_tilt_deg=args.max_tilt)),
            "cc_band": central_cc(recon, xz_filtered(truth, max_tilt_deg=args.max_tilt, cutoff=0.35)),
        }
        report["wbp_scores"] = scores
        bandwidth = memory_bandwidth(args.device)
        report["bandwidth_gb_s"] = bandwidth
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)

    # ------------------------------------------------------------------ tables
    print(f"\n### tomogram.reconstruct, {size}×{size}×{nz} from {m} views of {size}² ({args.device})\n")
    print(
        "| case | step wall (s) | process wall (s) | kernels (s) | peak VmRSS (GB) | peak RssAnon (GB) "
        "| peak RssFile (GB) | ru_maxrss (GB) | load (1 min) start→end |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    kernel_names = (
        "single_axis_matrix",
        "transpose_matrix",
        "weighting_filters",
        "weight_projections",
        "backproject_single_axis",
        "sirt_slab",
    )
    for name, run in results.items():
        k = run["kernels_s"]
        kernels = sum(k.get(n, 0.0) for n in kernel_names)
        mem = run["memory_bytes"]
        print(
            f"| {name} | {run['wall_s']:.1f} | {run['process_wall_s']:.1f} | {kernels:.1f} | {_gb(mem['VmRSS'])} "
            f"| {_gb(mem['RssAnon'])} | {_gb(mem['RssFile'])} | {_gb(run['ru_maxrss_bytes'])} "
            f"| {run['load_start']:.2f}→{run['load_end']:.2f} |"
        )
    for name, run in results.items():
        k, calls = run["kernels_s"], run["calls"]
        print(f"\n#### {name}: where the time goes (best run, {run['wall_s']:.1f} s in run_step)\n")
        print("| part | seconds | calls | share of the step |")
        print("|---|---|---|---|")
        for part in (
            *kernel_names,
            "torch.sparse.mm",
            "read view rows",
            "MrcWriter.write_rows",
            "MrcWriter.close",
            "write_slice_pngs",
        ):
            if part in k:
                print(f"| {part} | {k[part]:.2f} | {calls[part]} | {100 * k[part] / run['wall_s']:.0f} % |")
        timed = sum(
            k.get(p, 0.0)
            for p in (
                *kernel_names,
                "read view rows",
                "MrcWriter.write_rows",
                "MrcWriter.close",
                "write_slice_pngs",
            )
        )
        print(
            f"| rest (engine, layout copies, .cpu(), statistics) | {run['wall_s'] - timed:.2f} | | "
            f"{100 * (run['wall_s'] - timed) / run['wall_s']:.0f} % |"
        )
        if name.startswith("SIRT"):
            per_iteration = k.get("sirt_slab", 0.0) / args.sirt_iterations
            print(
                f"\nSIRT: {per_iteration:.2f} s per iteration over the whole volume (sirt_slab time / iterations)"
            )

    wbp = results["WBP"]["kernels_s"]
    updates = nz * size * size * m
    bp_seconds = wbp["backproject_single_axis"]
    mm_seconds = wbp["torch.sparse.mm"]
    rows = math.ceil(size / results["WBP"]["calls"]["backproject_single_axis"])  # rows per slab (mean)
    bytes_per_update = 16.0 / rows + 4.0 / m
    copy_bw = bandwidth["copy"] * 1e9
    print(f"\n### WBP back-projection against memory bandwidth ({args.device})\n")
    print(
        f"memory bandwidth: copy {bandwidth['copy']:.1f} GB/s, add {bandwidth['add']:.1f} GB/s "
        "(bytes read + written, 1 GiB float32)"
    )
    print("| measure | value |")
    print("|---|---|")
    print(f"| voxel updates (nz·ny·nx·views) | {updates:.3e} |")
    print(
        f"| back-projection (backproject_single_axis) | {bp_seconds:.2f} s → {updates / bp_seconds / 1e9:.2f} "
        "G updates/s |"
    )
    print(
        f"| of which sparse × dense products | {mm_seconds:.2f} s → {updates / mm_seconds / 1e9:.2f} G updates/s |"
    )
    print(
        f"| bytes per update the copy bandwidth allows at that rate | {copy_bw * bp_seconds / updates:.2f} B |"
    )
    print(
        f"| compulsory traffic of the slab method (16/r + 4/m, r = {rows} rows per slab) | "
        f"{bytes_per_update:.3f} B |"
    )
    print(
        f"| bandwidth-bound ceiling (copy bandwidth / compulsory bytes) | "
        f"{copy_bw / bytes_per_update / 1e9:.1f} G updates/s |"
    )
    print(
        f"| fraction of the ceiling reached by the sparse products | "
        f"{100 * updates / mm_seconds / (copy_bw / bytes_per_update):.1f} % |"
    )
    print(
        "| on-chip traffic of the sparse products: the 2 interpolation taps (4 B each) read per update from the "
        f"cached dense rows | {8 * updates / mm_seconds / 1e9:.0f} GB/s |"
    )
    print(
        f"\nWBP sanity: cc with the wedge-filtered phantom {scores['cc_wedge']:.3f}, with the wedge- and "
        f"band-filtered phantom {scores['cc_band']:.3f} (16 central rows, central 70 % of x)"
    )
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, default=str) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
