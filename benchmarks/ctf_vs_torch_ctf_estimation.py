"""Per-tilt CTF estimation of the simulated ``demo`` tilt series, tomoforge vs torch-ctf-estimation, against truth.

Usage (torch-ctf-estimation is not a dependency; install it beside, see below)::

    .venv/bin/python benchmarks/ctf_vs_torch_ctf_estimation.py \\
        --peer-path /tmp/ctfbench/pkgs:/tmp/ctfbench/stub [--stack TS_01.mrc] [--truth DIR] [--json out.json]

With the default paths absent (or ``--regenerate``) the data are made first: ``tomoforge simulate --preset demo``
into ``--dataset`` (default ``WORKDIR/demo``; skipped when that folder already has ``frames/``), then
``import.movies`` and ``motion.correct`` through the engine, as in ``benchmarks/alignment_fiducial_demo.py``.
The 41 tilts (512², 5.4 Å/px) take about 1.5 min for all five estimators on a quiet 2-core development VM.

Installing the peer (torch-ctf-estimation 0.6.0, BSD-3, teamtomo) without touching the project's torch
----------------------------------------------------------------------------------------------------------
::

    pip install --no-deps --target /tmp/ctfbench/pkgs torch-ctf-estimation==0.6.0 teamtomo-basemodel \\
        torch-ctf torch-cubic-spline-grids torch-fourier-filter torch-fourier-rescale torch-grid-utils \\
        torch-image-interpolation PyYAML
    python benchmarks/ctf_vs_torch_ctf_estimation.py --write-torchvision-stub /tmp/ctfbench/stub

(its other requirements — numpy, scipy, einops, pydantic, pandas, starfile, typing-extensions — are already in the
development environment). torch-ctf-estimation hard-depends on ``torchvision``, whose PyPI build does not load
beside the CPU torch (``operator torchvision::nms does not exist``), and uses from it only
``torchvision.transforms.functional.gaussian_blur`` (in ``estimate_background_2d``). The **only change** to the
peer is therefore a stand-in ``torchvision`` package written by ``--write-torchvision-stub``: that one function,
re-implemented as torchvision does it (normalised Gaussian sampled at ``linspace(-(k-1)/2, (k-1)/2, k)``, reflect
padding by ``k // 2``, separable ``conv2d``). The peer folders are put on ``sys.path`` only by ``--peer-path`` (or
``PYTHONPATH``); tomoforge does not depend on them.

What is compared
----------------
Every tilt of the motion-corrected stack is fitted independently, with the same fit band
(``--band``, default 50–11.5 Å; Nyquist is 10.8 Å), defocus range (``--defocus-range``, default 10 000–50 000 Å),
tile (patch) size (``--tile``, default 256 px, i.e. 3×3 half-overlapping tiles in a 512² image for the peer) and
the microscope of the series JSON (300 kV, Cs 2.7 mm, amplitude contrast 0.1).

* ``torch-ctf-estimation``: ``estimate_ctf(image, OpticalParams, CTFFittingParams)`` with
  ``defocus_grid_resolution = (1, 1, 1)`` (one defocus per image), ``patch_sidelength = tile``, band and range
  (the range in µm), all else default (1-D grid search and refinement, then 100 Adam steps of the 2-D fit with
  astigmatism). ``--peer-linear`` adds its ``defocus_model = "linear"`` (a defocus plane fitted over the
  tiles; its own tilt-aware mode), ``defocus_0`` being the defocus at the image centre.
* ``tomoforge``: :func:`tomoforge.ctf.estimate_ctf` with ``tile_size_px = tile``, the same band and range, other
  options at their defaults (tile overlap 0.5, so also 3×3 tiles; 500 Å search step; astigmatism tolerance
  200 Å, beyond which ``|u − v|`` is penalised — ``--astigmatism-tolerance none`` lifts it), three ways:
  ``no geometry`` (``projection_matrix=None``: untilted flat specimen, like the peer); ``nominal geometry``
  (the view's matrix from :func:`tomoforge.geometry.projection_matrices` with the nominal tilt angle, the series
  JSON's tilt axis and no shift: what is known before alignment); ``true geometry``
  (true tilt angle, tilt axis, x-tilt, handedness and the image position of the tomogram centre from the
  simulation's ``truth.json``: what a tilt-aware fit can do after a perfect alignment).

Truth is the simulator's ``truth/ctf/<ts>.defocus`` (IMOD, read with :func:`tomoforge.io.imod.read_imod_defocus`;
matched to the stack's tilts by nominal tilt angle ±1°): the view's defocus at the height of the tomogram centre,
``u`` along the astigmatism angle counter-clockwise from image +x. Scores, estimate − truth:

* ``Δdefocus``: mean defocus ``(u + v) / 2``, median and RMS in Å, for |tilt| ≤ 30° and for all tilts;
* ``Δastig``: of ``u − v``, median and RMS in Å;
* ``Δangle``: astigmatism angle modulo 180°, median of its absolute value, over the tilts whose true ``|u − v|``
  is ≥ 100 Å;
* time per tilt: wall seconds on ``--threads`` threads (default 2), median and minimum over the tilts; the
  estimators run interleaved, tilt by tilt, so that a change of machine load hits them alike; the first call of
  each estimator (warm-up: lazy imports, allocator, first FFT plans) is timed separately on the first tilt before
  the loop. ``uptime`` is printed before and after, as other processes share the machine. Both estimators do many
  small tensor operations: with 2 threads on the 2-core VM while another process keeps the cores busy, a call can
  take 10–50× its quiet time (OpenMP threads waiting on each other), so trust timings only from a quiet machine
  (or compare at ``--threads 1``).

**Peer's astigmatism.** torch-ctf's CTF uses ``defocus ± astigmatism`` along and across the astigmatism angle
(so ``u − v = 2·astigmatism``), but ``Defocus2DResults`` reports ``defocus_u/v = mean ± astigmatism / 2``. The
reported ``u − v`` is thus half the fitted one; this benchmark scores ``u − v = 2·astigmatism`` (the fitted CTF)
and prints the as-reported value too. The mean defocus is unaffected. Its ``astigmatism_angle`` is, by the code,
the direction of ``u`` counter-clockwise from +x (array column axis) towards +y (row axis), in [−90°, 90°], i.e.
tomoforge's convention; torch-ctf's docstring ("0 places defocus_u along the y-axis") does not match its code.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mrcfile
import numpy as np
import torch

DEFAULT_STACK = Path("/tmp/alb1/project/runs/000003_motion_correct/tilt_series/TS_01.mrc")
DEFAULT_TRUTH = Path("/tmp/demo_shared/truth")
LOW_TILT_DEG = 30.0
ANGLE_MIN_ASTIG_ANGSTROM = 100.0

_TORCHVISION_STUB = {
    "__init__.py": '"""Benchmark-only stand-in for torchvision: transforms.functional.gaussian_blur."""\n\n'
    '__version__ = "0.0.0+gaussian-blur-stub"\n',
    "transforms/__init__.py": "from torchvision.transforms import functional  # noqa: F401\n",
    "transforms/functional.py": '''"""``gaussian_blur`` as torchvision computes it on tensors."""

import torch
import torch.nn.functional as F


def _kernel_1d(size, sigma, dtype, device):
    half = (size - 1) * 0.5
    x = torch.linspace(-half, half, steps=size, dtype=dtype, device=device)
    pdf = torch.exp(-0.5 * (x / sigma).pow(2))
    return pdf / pdf.sum()


def gaussian_blur(img, kernel_size, sigma=None):
    kx, ky = (kernel_size, kernel_size) if isinstance(kernel_size, int) else map(int, kernel_size)
    if sigma is None:
        sigma = [0.3 * ((k - 1) * 0.5 - 1) + 0.8 for k in (kx, ky)]
    sx, sy = (float(sigma), float(sigma)) if isinstance(sigma, (int, float)) else map(float, sigma)
    shape = img.shape
    dtype = img.dtype if img.is_floating_point() else torch.float32
    x = img.reshape(-1, 1, shape[-2], shape[-1]).to(dtype)
    x = F.pad(x, [kx // 2, kx // 2, ky // 2, ky // 2], mode="reflect")
    x = F.conv2d(x, _kernel_1d(kx, sx, dtype, x.device).view(1, 1, 1, kx))
    x = F.conv2d(x, _kernel_1d(ky, sy, dtype, x.device).view(1, 1, ky, 1))
    return x.reshape(shape).to(img.dtype)
''',
}


def write_torchvision_stub(folder: Path) -> None:
    """Write the stand-in ``torchvision`` (only ``transforms.functional.gaussian_blur``) under ``folder``."""
    for name, text in _TORCHVISION_STUB.items():
        path = folder / "torchvision" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


# ------------------------------------------------------------------------------------------------------- data


@dataclass
class View:
    index: int
    nominal_tilt_deg: float
    true_u: float
    true_v: float
    true_angle_deg: float
    true_tilt_deg: float | None = None
    true_shift_xy_px: tuple[float, float] | None = None

    @property
    def true_mean(self) -> float:
        return 0.5 * (self.true_u + self.true_v)


@dataclass
class Dataset:
    stack: torch.Tensor  # (n, h, w) float32
    pixel_size_angstrom: float
    voltage_kv: float
    spherical_aberration_mm: float
    amplitude_contrast: float
    tilt_axis_angle_deg: float  # nominal, from the series JSON
    views: list[View]
    true_tilt_axis_angle_deg: float | None = None
    true_x_tilt_deg: float = 0.0
    true_handedness: int = 1
    sources: dict[str, str] = field(default_factory=dict)


def _regenerate(dataset: Path, workdir: Path, ts_id: str) -> tuple[Path, Path]:
    """Simulate (unless ``dataset/frames`` exists), import and motion-correct; return (stack, truth folder)."""
    from tomoforge.steps._artifacts import read_tilt_series
    from tomoforge.workflow import Project, ProjectError, RunOutput, run_step

    if not (dataset / "frames").is_dir():
        print(f"simulating the demo preset into {dataset} ...", flush=True)
        subprocess.run(
            [sys.executable, "-m", "tomoforge.cli", "simulate", "--preset", "demo", "--out", str(dataset)],
            check=True,
        )
    project_dir = workdir / "project"
    try:
        project = Project.init(project_dir)
    except (
        ProjectError
    ):  # a project from an earlier run of this benchmark: reuse it (the engine caches steps)
        project = Project.open(project_dir, write=True)
    print("import.movies + motion.correct ...", flush=True)
    imported = run_step(project, "import.movies", {}, {"movies": dataset / "frames"})
    corrected = run_step(project, "motion.correct", {}, {"movies": RunOutput(imported.run.id, "movies")})
    series = [s for s in read_tilt_series(corrected.outputs["tilt_series"].path) if s.ts_id == ts_id]
    if not series:
        raise SystemExit(f"motion.correct wrote no tilt series {ts_id}")
    return Path(series[0].stack_file), dataset / "truth"


def load_dataset(stack_path: Path, series_json: Path, truth: Path, ts_id: str) -> Dataset:
    from tomoforge.io.imod.defocus import read_imod_defocus
    from tomoforge.models import TiltSeries, load_json

    series = load_json(TiltSeries, series_json)
    acq = series.acquisition
    with mrcfile.open(stack_path, permissive=True) as mrc:
        stack = torch.from_numpy(np.asarray(mrc.data, dtype=np.float32).copy())
    if stack.ndim != 3 or stack.shape[0] != len(series.tilts):
        raise SystemExit(f"{stack_path}: shape {tuple(stack.shape)} does not match {len(series.tilts)} tilts")
    entries = read_imod_defocus(truth / "ctf" / f"{ts_id}.defocus").entries
    truth_json_path = truth / "truth.json"
    truth_ts: dict[str, Any] = {}
    if truth_json_path.is_file():
        truth_ts = json.loads(truth_json_path.read_text()).get("tilt_series", {}).get(ts_id, {})
    truth_tilts = truth_ts.get("tilts", [])
    views = []
    for tilt in series.tilts:
        if tilt.excluded:
            continue
        nominal = float(tilt.tilt_angle_deg)
        match = [e for e in entries if abs(e.start_tilt_deg - nominal) <= 1.0]
        if len(match) != 1:
            print(f"tilt {tilt.index} ({nominal:.1f}°): {len(match)} truth lines within 1°, skipped")
            continue
        ctf = match[0].ctf
        view = View(
            tilt.index, nominal, ctf.defocus_u_angstrom, ctf.defocus_v_angstrom, ctf.astigmatism_angle_deg
        )
        geo = [t for t in truth_tilts if abs(float(t["nominal_tilt_angle_deg"]) - nominal) <= 1.0]
        if len(geo) == 1:
            view.true_tilt_deg = float(geo[0]["tilt_angle_deg"])
            sx, sy = geo[0]["shift_xy_angstrom"]
            view.true_shift_xy_px = (sx / series.pixel_size_angstrom, sy / series.pixel_size_angstrom)
        views.append(view)
    return Dataset(
        stack=stack,
        pixel_size_angstrom=float(series.pixel_size_angstrom),
        voltage_kv=float(acq.voltage_kv),
        spherical_aberration_mm=float(acq.spherical_aberration_mm),
        amplitude_contrast=float(acq.amplitude_contrast),
        tilt_axis_angle_deg=float(acq.tilt_axis_angle_deg),
        views=views,
        true_tilt_axis_angle_deg=truth_ts.get("tilt_axis_angle_deg"),
        true_x_tilt_deg=float(truth_ts.get("x_tilt_deg", 0.0)),
        true_handedness=int(truth_ts.get("handedness", 1)),
        sources={"stack": str(stack_path), "series_json": str(series_json), "truth": str(truth)},
    )


# -------------------------------------------------------------------------------------------------- estimators


@dataclass
class Fit:
    mean: float
    u_minus_v: float
    angle_deg: float
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)


class Estimator:
    name = ""

    def fit(self, data: Dataset, view: View) -> Fit:  # pragma: no cover - interface
        raise NotImplementedError


class Peer(Estimator):
    def __init__(self, module: Any, data: Dataset, args: argparse.Namespace, linear: bool) -> None:
        self.m = module
        self.name = "torch-ctf-estimation" + (" linear" if linear else "")
        self.optics = module.OpticalParams(
            pixel_spacing_angstroms=data.pixel_size_angstrom,
            voltage_kev=data.voltage_kv,
            spherical_aberration_mm=data.spherical_aberration_mm,
            amplitude_contrast_fraction=data.amplitude_contrast,
        )
        self.fitting = module.CTFFittingParams(
            defocus_grid_resolution=(1, 3, 3) if linear else (1, 1, 1),
            defocus_model="linear" if linear else "grid",
            frequency_fit_range_angstroms=(args.band[0], args.band[1]),
            defocus_range_microns=(args.defocus_range[0] / 1e4, args.defocus_range[1] / 1e4),
            patch_sidelength=args.tile,
        )

    def fit(self, data: Dataset, view: View) -> Fit:
        t0 = time.perf_counter()
        _ps, r1, r2 = self.m.estimate_ctf(
            data.stack[view.index], self.optics, self.fitting, device=torch.device("cpu")
        )
        seconds = time.perf_counter() - t0
        mean = 0.5 * (r2.defocus_u + r2.defocus_v) * 1e4
        astig = float(r2.astigmatism or 0.0) * 1e4
        extra = {
            "reported_u_minus_v": (r2.defocus_u - r2.defocus_v) * 1e4,
            "mean_1d": float(r1.ctf_model.defocus_um) * 1e4,
            "cc": r2.cross_correlation_final,
        }
        if r2.tilt_magnitude_deg is not None:
            extra["tilt_magnitude_deg"] = r2.tilt_magnitude_deg
            extra["gradient_axis_deg"] = r2.tilt_axis_angle_deg
        return Fit(mean, 2.0 * astig, float(r2.astigmatism_angle or 0.0), seconds, extra)


class Ours(Estimator):
    def __init__(self, estimate: Any, args: argparse.Namespace, geometry: str) -> None:
        self.estimate = estimate
        self.args = args
        self.geometry = geometry
        self.name = f"tomoforge {geometry} geometry"
        self.options: dict[str, Any] = {}
        if args.astigmatism_tolerance is not None:
            tolerance = args.astigmatism_tolerance.lower()
            self.options["astigmatism_tolerance_angstrom"] = None if tolerance == "none" else float(tolerance)
            self.name += f", astig. tol. {tolerance}"

    def _matrix(self, data: Dataset, view: View) -> tuple[torch.Tensor | None, int]:
        from tomoforge.geometry import projection_matrices

        if self.geometry == "no":
            return None, 1
        if self.geometry == "nominal":
            m = projection_matrices(view.nominal_tilt_deg, data.tilt_axis_angle_deg, [0.0, 0.0])
            return m.to(torch.float64), 1
        if (
            view.true_tilt_deg is None
            or view.true_shift_xy_px is None
            or data.true_tilt_axis_angle_deg is None
        ):
            raise SystemExit(
                "true geometry needs truth.json with per-tilt tilt_angle_deg and shift_xy_angstrom"
            )
        m = projection_matrices(
            view.true_tilt_deg,
            data.true_tilt_axis_angle_deg,
            list(view.true_shift_xy_px),
            x_tilt_angles_deg=data.true_x_tilt_deg,
        )
        return m.to(torch.float64), data.true_handedness

    def fit(self, data: Dataset, view: View) -> Fit:
        matrix, handedness = self._matrix(data, view)
        a = self.args
        t0 = time.perf_counter()
        r = self.estimate(
            data.stack[view.index],
            pixel_size_angstrom=data.pixel_size_angstrom,
            voltage_kv=data.voltage_kv,
            spherical_aberration_mm=data.spherical_aberration_mm,
            amplitude_contrast=data.amplitude_contrast,
            tile_size_px=a.tile,
            min_resolution_angstrom=a.band[0],
            max_resolution_angstrom=a.band[1],
            defocus_min_angstrom=a.defocus_range[0],
            defocus_max_angstrom=a.defocus_range[1],
            projection_matrix=matrix,
            handedness=handedness,
            **self.options,
        )
        seconds = time.perf_counter() - t0
        u, v = float(r.defocus_u_angstrom), float(r.defocus_v_angstrom)
        extra = {"score": float(r.score), "fit_resolution_angstrom": float(r.fit_resolution_angstrom)}
        return Fit(0.5 * (u + v), u - v, float(r.astigmatism_angle_deg), seconds, extra)


# ----------------------------------------------------------------------------------------------------- scoring


def _angle_error(estimate: float, truth: float) -> float:
    """Difference of two axis directions, in [−90°, 90°)."""
    return (estimate - truth + 90.0) % 180.0 - 90.0


def _rms(values: list[float]) -> float:
    return math.sqrt(sum(v * v for v in values) / len(values)) if values else float("nan")


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def summarise(rows: list[dict[str, Any]], warmup_s: float) -> dict[str, Any]:
    out: dict[str, Any] = {"warmup_s": warmup_s, "n": len(rows)}
    for label, sel in (("low", [r for r in rows if abs(r["tilt"]) <= LOW_TILT_DEG + 0.5]), ("all", rows)):
        d = [r["d_defocus"] for r in sel]
        s = [r["d_astig"] for r in sel]
        g = [abs(r["d_angle"]) for r in sel if abs(r["true_u_minus_v"]) >= ANGLE_MIN_ASTIG_ANGSTROM]
        out[label] = {
            "n": len(sel),
            "defocus_median": _median(d),
            "defocus_rms": _rms(d),
            "astig_median": _median(s),
            "astig_rms": _rms(s),
            "angle_abs_median": _median(g),
            "angle_n": len(g),
        }
    times = [r["seconds"] for r in rows]
    out["time_median_s"] = _median(times)
    out["time_min_s"] = min(times) if times else float("nan")
    out["time_mean_s"] = sum(times) / len(times) if times else float("nan")
    return out


def _row(est: Estimator, view: View, f: Fit) -> dict[str, Any]:
    true_uv = view.true_u - view.true_v
    return {
        "method": est.name,
        "index": view.index,
        "tilt": view.nominal_tilt_deg,
        "true_mean": view.true_mean,
        "true_u_minus_v": true_uv,
        "true_angle": view.true_angle_deg,
        "mean": f.mean,
        "u_minus_v": f.u_minus_v,
        "angle": f.angle_deg,
        "d_defocus": f.mean - view.true_mean,
        "d_astig": f.u_minus_v - true_uv,
        "d_angle": _angle_error(f.angle_deg, view.true_angle_deg),
        "seconds": f.seconds,
        **f.extra,
    }


def run(
    estimators: list[Estimator], data: Dataset, views: list[View]
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, float]]:
    """Fit every view with every estimator, interleaved (tilt by tilt) so that a change of machine load hits all
    estimators alike; each estimator's first call (on the first view) is a warm-up, timed apart."""
    warmup = {}
    for est in estimators:
        t0 = time.perf_counter()
        est.fit(data, views[0])
        warmup[est.name] = time.perf_counter() - t0
    rows: dict[str, list[dict[str, Any]]] = {est.name: [] for est in estimators}
    for view in views:
        for est in estimators:
            row = _row(est, view, est.fit(data, view))
            rows[est.name].append(row)
            print(
                f"  {est.name:<30} tilt {view.nominal_tilt_deg:6.1f}  Δdf {row['d_defocus']:7.0f}  "
                f"u−v {row['u_minus_v']:5.0f} (true {row['true_u_minus_v']:4.0f})  angle {row['angle']:6.1f} "
                f"(true {view.true_angle_deg:5.1f})  {row['seconds']:5.2f} s",
                flush=True,
            )
    return rows, warmup


def _table(summaries: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| estimator | Δdefocus median / RMS, \\|tilt\\| ≤ 30° (Å) | Δdefocus median / RMS, all (Å) "
        "| Δ(u−v) median / RMS, ≤ 30° (Å) | Δ(u−v) median / RMS, all (Å) | \\|Δangle\\| median ≤ 30° / all (°) "
        "| s per tilt, median (min) | first call (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, s in summaries.items():
        lo, al = s["low"], s["all"]
        lines.append(
            f"| {name} | {lo['defocus_median']:+.0f} / {lo['defocus_rms']:.0f} "
            f"| {al['defocus_median']:+.0f} / {al['defocus_rms']:.0f} "
            f"| {lo['astig_median']:+.0f} / {lo['astig_rms']:.0f} "
            f"| {al['astig_median']:+.0f} / {al['astig_rms']:.0f} "
            f"| {lo['angle_abs_median']:.1f} / {al['angle_abs_median']:.1f} "
            f"| {s['time_median_s']:.2f} ({s['time_min_s']:.2f}) | {s['warmup_s']:.2f} |"
        )
    return "\n".join(lines)


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stack", type=Path, default=DEFAULT_STACK, help="motion-corrected stack (.mrc)")
    parser.add_argument(
        "--series-json", type=Path, default=None, help="its tilt-series JSON (default: beside it)"
    )
    parser.add_argument("--truth", type=Path, default=DEFAULT_TRUTH, help="the simulation's truth/ folder")
    parser.add_argument("--ts-id", default="TS_01")
    parser.add_argument(
        "--regenerate", action="store_true", help="simulate and motion-correct even if present"
    )
    parser.add_argument("--dataset", type=Path, default=None, help="simulated dataset (default WORKDIR/demo)")
    parser.add_argument(
        "--workdir", type=Path, default=None, help="for regenerated data (default: a temp dir)"
    )
    parser.add_argument(
        "--peer-path", action="append", default=[], help="folders (os.pathsep-separated) for sys.path"
    )
    parser.add_argument(
        "--write-torchvision-stub", type=Path, default=None, metavar="DIR", help="write it and exit"
    )
    parser.add_argument("--no-peer", action="store_true")
    parser.add_argument("--no-ours", action="store_true")
    parser.add_argument(
        "--peer-linear", action="store_true", help="also the peer's linear (tilt-plane) model"
    )
    parser.add_argument(
        "--geometries", default="no,nominal,true", help="tomoforge runs: any of no,nominal,true"
    )
    parser.add_argument("--tile", type=int, default=256, help="tile / patch side in px, both estimators")
    parser.add_argument("--band", type=float, nargs=2, default=(50.0, 11.5), metavar=("LOW_A", "HIGH_A"))
    parser.add_argument(
        "--defocus-range", type=float, nargs=2, default=(10000.0, 50000.0), metavar=("MIN_A", "MAX_A")
    )
    parser.add_argument(
        "--astigmatism-tolerance",
        default=None,
        metavar="A",
        help="tomoforge's astigmatism_tolerance_angstrom (Å or 'none'); default: the estimator's default",
    )
    parser.add_argument("--tilts", type=int, nargs="*", default=None, help="only these stack indices")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None, help="write the per-tilt rows and summaries")
    args = parser.parse_args()

    if args.write_torchvision_stub is not None:
        write_torchvision_stub(args.write_torchvision_stub)
        print(f"wrote {args.write_torchvision_stub / 'torchvision'}")
        return
    for entry in args.peer_path:
        sys.path[:0] = [p for p in entry.split(os.pathsep) if p]
    torch.set_num_threads(args.threads)

    stack, truth = args.stack, args.truth
    if args.regenerate or not stack.is_file() or not (truth / "ctf" / f"{args.ts_id}.defocus").is_file():
        workdir = args.workdir or Path(tempfile.mkdtemp(prefix="ctf_bench_"))
        stack, truth = _regenerate(args.dataset or workdir / "demo", workdir, args.ts_id)
    series_json = args.series_json or stack.with_suffix(".json")
    data = load_dataset(stack, series_json, truth, args.ts_id)
    views = [v for v in data.views if args.tilts is None or v.index in args.tilts]

    estimators: list[Estimator] = []
    peer_version = None
    if not args.no_peer:
        try:
            module = importlib.import_module("torch_ctf_estimation")
            peer_version = getattr(module, "__version__", "?")
            estimators.append(Peer(module, data, args, linear=False))
            if args.peer_linear:
                estimators.append(Peer(module, data, args, linear=True))
        except ImportError as error:
            print(f"torch-ctf-estimation not importable ({error}): skipped")
    if not args.no_ours:
        import tomoforge.ctf

        estimate = getattr(tomoforge.ctf, "estimate_ctf", None)
        if estimate is None:  # not yet exported from the package
            with contextlib.suppress(ImportError):
                estimate = importlib.import_module("tomoforge.ctf.estimate").estimate_ctf
        if estimate is None:
            print("tomoforge.ctf.estimate_ctf not found: tomoforge skipped")
        else:
            for geometry in [g for g in args.geometries.split(",") if g]:
                if geometry not in ("no", "nominal", "true"):
                    raise SystemExit(f"--geometries: unknown {geometry!r} (expected no, nominal, true)")
                estimators.append(Ours(estimate, args, geometry))

    print(f"uptime before: {_uptime()}")
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
        + (f", torch-ctf-estimation {peer_version}" if peer_version else "")
    )
    print(
        f"data: {data.sources['stack']} ({len(views)} tilts, {tuple(data.stack.shape[1:])} px, "
        f"{data.pixel_size_angstrom} Å/px, {data.voltage_kv:g} kV, Cs {data.spherical_aberration_mm} mm, "
        f"w {data.amplitude_contrast}); truth {data.sources['truth']}; "
        f"nominal axis {data.tilt_axis_angle_deg}°, true axis {data.true_tilt_axis_angle_deg}°"
    )
    print(
        f"band {args.band[0]}–{args.band[1]} Å, "
        f"defocus {args.defocus_range[0]:.0f}–{args.defocus_range[1]:.0f} Å, tile {args.tile} px"
    )
    start = time.perf_counter()
    all_rows: list[dict[str, Any]] = []
    summaries: dict[str, dict[str, Any]] = {}
    rows_by, warmups = run(estimators, data, views)
    for est in estimators:
        rows = rows_by[est.name]
        all_rows.extend(rows)
        summaries[est.name] = summarise(rows, warmups[est.name])
        if isinstance(est, Peer):
            reported = [r["reported_u_minus_v"] - r["true_u_minus_v"] for r in rows]
            summaries[est.name]["astig_as_reported_median"] = _median(reported)
    end_uptime = _uptime()
    print()
    print(_table(summaries))
    for name, s in summaries.items():
        if "astig_as_reported_median" in s:
            print(
                f"{name}: Δ(u−v) as reported (defocus_u − defocus_v = astigmatism) median "
                f"{s['astig_as_reported_median']:+.0f} Å (all tilts)"
            )
    print(f"\ncommand: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"uptime after: {end_uptime}; total {time.perf_counter() - start:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({"summaries": summaries, "rows": all_rows}, indent=1))


if __name__ == "__main__":
    main()
