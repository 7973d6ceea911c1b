"""Local (patch) motion on movies with a known per-pixel displacement field: tomoforge vs torch-motion-correction.

Usage (torch-motion-correction is not a dependency; install it beside, e.g. with ``pip install --target``)::

    PYTHONPATH=/path/to/torch_motion_correction_site \\
        .venv/bin/python benchmarks/motion_local_vs_torch_motion_correction.py [--quick] [--json out.json] \\
        [--tmc-default-lr] [--fp-seeds N [--only-fp]] [--no-tmc]

The full run (8 movies, torch-motion-correction on 6 of them) takes ~15 min wall on the 2-core development VM when
other jobs share it (~10 CPU-min); ``--quick`` (three 512² movies) ~2–3 min. ``--fp-seeds N`` adds N more
tomography-dose 1024² movies without local motion (tomoforge only, ~20–30 s each) for a false-positive rate.

What it does
------------
1. **Movies.** A specimen image ``I`` (Gaussian band-limited noise, σ = 2 px, RMS contrast 0.1, plus a few dark
   gold discs of 100 Å at 1.35 Å/px, contrast −0.5, soft edges) is resampled bicubically
   (``grid_sample`` of a larger padded image) at ``x − s(x, t)`` and exposed as
   ``Poisson(dose · max(1 + I, 0))``, so the specimen point imaged at ``x`` in frame 0 sits at ``x + s(x, t)`` in
   frame ``t`` (CONVENTIONS.md §8). ``s = g(t) + τ(t) · l(x)``: a decelerating global drift ``g`` of ~3.5 px
   with 0.1 px seeded jitter (frame 0 at rest) plus a local field growing in time as
   ``τ = 1 − (1 − t/(n − 1))²``, either

   * ``poly``: quadratic in the normalised coordinates (MotionCor2's model class), 1.1–2 px at the corners;
   * ``dome``: a Gaussian bump of radial doming ``B · (r − r₀)/w · exp(−|r − r₀|²/2w²)`` around an off-centre
     ``r₀`` (not a polynomial), 1.5 px at its ring of largest motion;
   * ``none``: global drift only (false-positive test).

   Doses: ``tomo``, 8 frames of 3 e⁻/Å² per tilt at 1.35 Å/px (0.68 counts/px/frame); ``spa``, 10 frames of
   5 counts/px/frame.
2. **Methods.** tomoforge: ``estimate_global_motion`` (defaults) then ``estimate_local_motion`` (5×5 patches,
   defaults) with patch overlap 0 and 0.5; corrected sum ``apply_local_motion``. torch-motion-correction 0.6.0:
   its ``estimate_global_motion`` (defaults) then ``estimate_local_motion`` with that field as
   ``initial_deformation_field``, deformation field resolution ``(n, 5, 5)``, patches of tomoforge's size at
   overlap 0.5 (≈ 5×5 patches), default Fourier filter, Adam for 100 iterations at learning rate 0.2 (the value
   the ``ripple`` application, which wraps the package, uses; the package's own default, 0.01 Å per step, cannot
   move a control point by more than ~1 Å in 100 steps, and is run too with ``--tmc-default-lr``); corrected sum
   ``correct_motion(...).sum(0)`` with the field made relative to frame 0.
3. **Scores.** RMS over a 16×16 grid of points (cell centres of a 16×16 tiling of the frame) and all frames of the
   error of the total displacement (relative to frame 0: each method's frame-0 value at the point is subtracted),
   in px ("inner": the 10×10 of those points inside the central (2/3)² of the frame, the span of the
   overlap-0.5 patch centres, where neither method extrapolates); "global" is tomoforge's whole-frame shift used
   everywhere. torch-motion-correction returns (y, x) in Å; its sign is taken as whichever matches the truth
   better, and reported. Correlation ``cc`` of each corrected sum, low-passed by the specimen's own band limit
   (Gaussian, σ = 2 px; without it the bicubic resampling of the local corrections smooths away noise and gains
   correlation that has nothing to do with alignment), with the true unmoved image inside a 1/16 margin; "truth"
   is the sum corrected with the true field (the ceiling).
   For ``none`` movies, whether tomoforge declared its model significant, and the RMS it added to global only.
   Times are wall seconds on the threads given (``--threads``, default 2); ``uptime`` is printed before and after
   because other processes may share the machine.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import math
import os
import subprocess
import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from tomoforge.fourier import fftfreq_grid
from tomoforge.motion import (
    apply_local_motion,
    apply_motion,
    estimate_global_motion,
    estimate_local_motion,
    patch_grid,
)

PIXEL_ANGSTROM = 1.35
PAD = 16  # px of specimen around the frame, so that no motion samples outside it
PATCHES_XY = (5, 5)
INNER = (
    slice(3, 13),
    slice(3, 13),
)  # the 10×10 of the 16×16 score points inside the central (2/3)² of the frame


@dataclass(frozen=True)
class Case:
    name: str
    size: int
    n_frames: int
    counts_per_px_frame: float
    local: str  # "poly", "dome" or "none"
    seed: int
    with_tmc: bool = True


def _cases(quick: bool) -> list[Case]:
    tomo = 3.0 * PIXEL_ANGSTROM**2 / 8  # 3 e/Å² per tilt over 8 frames, in counts/px/frame
    if quick:
        return [
            Case("tomo-512-poly", 512, 8, tomo, "poly", 1),
            Case("tomo-512-none", 512, 8, tomo, "none", 2, with_tmc=False),
            Case("spa-512-dome", 512, 10, 5.0, "dome", 3),
        ]
    return [
        Case("tomo-1k-poly", 1024, 8, tomo, "poly", 1),
        Case("tomo-1k-dome", 1024, 8, tomo, "dome", 2),
        Case("tomo-1k-none", 1024, 8, tomo, "none", 3),
        Case("tomo-2k-poly", 2048, 8, tomo, "poly", 4),
        # torch-motion-correction takes 1–2 min per 1024² and 2–3 min per 2048² movie on 2 busy cores: it runs on
        # the tomography "none" movie at 1024² only, to keep the whole benchmark under ~15 min.
        Case("tomo-2k-none", 2048, 8, tomo, "none", 5, with_tmc=False),
        Case("spa-1k-poly", 1024, 10, 5.0, "poly", 6),
        Case("spa-1k-dome", 1024, 10, 5.0, "dome", 7),
        Case("spa-1k-none", 1024, 10, 5.0, "none", 8, with_tmc=False),
    ]


def _false_positive_cases(count: int) -> list[Case]:
    """Extra tomography-dose movies without local motion (tomoforge only), for a false-positive rate."""
    tomo = 3.0 * PIXEL_ANGSTROM**2 / 8
    return [Case(f"fp-1k-none-{i}", 1024, 8, tomo, "none", 100 + i, with_tmc=False) for i in range(count)]


# --------------------------------------------------------------------------------------------------- simulation


def _specimen(size: int, seed: int) -> torch.Tensor:
    """``(size + 2 PAD)²`` contrast image (float64): band-limited noise plus dark gold discs."""
    n = size + 2 * PAD
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn((n, n), generator=g, dtype=torch.float64)
    k2 = fftfreq_grid((n, n), dtype=torch.float64).square().sum(dim=-1)
    noise = torch.fft.irfftn(torch.fft.rfftn(noise) * torch.exp(-2.0 * (math.pi * 2.0) ** 2 * k2), s=(n, n))
    image = 0.1 * noise / noise.std()
    radius = 50.0 / PIXEL_ANGSTROM  # 100 Å gold
    ys, xs = torch.meshgrid(
        torch.arange(n, dtype=torch.float64), torch.arange(n, dtype=torch.float64), indexing="ij"
    )
    for _ in range(max(2, size // 256)):
        cx, cy = (torch.rand(2, generator=g, dtype=torch.float64) * (n - 4 * radius) + 2 * radius).tolist()
        r = ((xs - cx).square() + (ys - cy).square()).sqrt()
        image -= 0.5 * 0.5 * (1.0 - torch.tanh((r - radius) / 1.5))
    return image


def _drift(n: int, seed: int) -> torch.Tensor:
    """``(n, 2)`` decelerating global drift in px, frame 0 at rest, with 0.1 px jitter."""
    g = torch.Generator().manual_seed(1000 + seed)
    k = torch.arange(n, dtype=torch.float64)
    ramp = (1.0 - torch.exp(-k / 2.5)) / (1.0 - math.exp(-(n - 1) / 2.5))
    drift = ramp[:, None] * torch.tensor([3.0, -2.0], dtype=torch.float64)
    drift[1:] += 0.1 * torch.randn((n - 1, 2), generator=g, dtype=torch.float64)
    return drift


def _local(case: Case, x_px: torch.Tensor, y_px: torch.Tensor) -> torch.Tensor:
    """``(..., 2)`` local field ``l(x)`` (x, y) in px at the end of the movie (``τ = 1``)."""
    half = case.size / 2
    u, v = (x_px - case.size // 2) / half, (y_px - case.size // 2) / half
    if case.local == "poly":
        amp = 1.5
        lx = amp * (0.6 * u * v + 0.4 * v.square() - 0.3 * u)
        ly = amp * (-0.5 * u.square() + 0.4 * u * v + 0.3 * v)
    elif case.local == "dome":
        b, w, u0, v0 = 2.5, 0.4, 0.25, -0.2
        du, dv = u - u0, v - v0
        bump = b / w * torch.exp(-(du.square() + dv.square()) / (2 * w * w))
        lx, ly = bump * du, bump * dv
    else:
        lx, ly = torch.zeros_like(u), torch.zeros_like(v)
    return torch.stack([lx, ly], dim=-1)


def _tau(n: int) -> torch.Tensor:
    t = torch.arange(n, dtype=torch.float64) / (n - 1)
    return 1.0 - (1.0 - t).square()


def true_field(case: Case, x_px: torch.Tensor, y_px: torch.Tensor) -> torch.Tensor:
    """``(..., n, 2)`` true displacement ``s(x, t)`` (x, y) in px of the points ``(x_px, y_px)``."""
    local = _local(case, x_px, y_px)[..., None, :] * _tau(case.n_frames)[:, None]
    return local + _drift(case.n_frames, case.seed)


def _true_field_at(case: Case, x_px: torch.Tensor, y_px: torch.Tensor, t: int) -> torch.Tensor:
    """``(..., 2)`` true displacement of frame ``t`` (one frame at a time: bounded memory)."""
    return _local(case, x_px, y_px) * _tau(case.n_frames)[t] + _drift(case.n_frames, case.seed)[t]


def _pixel_grid(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    ys, xs = torch.meshgrid(
        torch.arange(size, dtype=torch.float64), torch.arange(size, dtype=torch.float64), indexing="ij"
    )
    return xs, ys


def _sample(image: torch.Tensor, x_px: torch.Tensor, y_px: torch.Tensor) -> torch.Tensor:
    """Bicubic samples of a 2-D image at pixel positions (border padding)."""
    h, w = image.shape
    grid = torch.stack([2 * x_px / (w - 1) - 1, 2 * y_px / (h - 1) - 1], dim=-1).to(image.dtype)
    return F.grid_sample(
        image[None, None], grid[None], mode="bicubic", padding_mode="border", align_corners=True
    )[0, 0]


def simulate(case: Case) -> tuple[torch.Tensor, torch.Tensor]:
    """Poisson movie ``(n, size, size)`` float32 and the true unmoved image ``(size, size)`` float64."""
    big = _specimen(case.size, case.seed)
    xs, ys = _pixel_grid(case.size)
    g = torch.Generator().manual_seed(case.seed)
    frames = torch.empty((case.n_frames, case.size, case.size), dtype=torch.float32)
    for t in range(case.n_frames):
        s = _true_field_at(case, xs, ys, t)
        clean = _sample(big, xs - s[..., 0] + PAD, ys - s[..., 1] + PAD)
        rate = (case.counts_per_px_frame * (1.0 + clean)).clamp_min(0.0)
        frames[t] = torch.poisson(rate, generator=g).to(torch.float32)
    return frames, big[PAD:-PAD, PAD:-PAD]


def true_sum(case: Case, frames: torch.Tensor) -> torch.Tensor:
    """Sum of the frames corrected with the true field: ``Σ_t F_t(x + s(x, t))``."""
    xs, ys = _pixel_grid(case.size)
    total = torch.zeros((case.size, case.size), dtype=torch.float64)
    for t in range(case.n_frames):
        s = _true_field_at(case, xs, ys, t)
        total += _sample(frames[t].double(), xs + s[..., 0], ys + s[..., 1])
    return total


# ------------------------------------------------------------------------------------------------------ scoring


def _score_points(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    c = (torch.arange(16, dtype=torch.float64) + 0.5) * size / 16
    ys, xs = torch.meshgrid(c, c, indexing="ij")
    return xs, ys


def _term(a: int, b: int) -> str:
    return "1" if a == b == 0 else ("x" * a) + ("y" * b)


def _rms(error: torch.Tensor) -> float:
    return float(error.square().sum(dim=-1).mean().sqrt())


def _matched(image: torch.Tensor) -> torch.Tensor:
    """Low-pass by the specimen's own Gaussian band limit (σ = 2 px), so that the correlation measures the
    specimen band and not how much each method's interpolation happens to smooth the noise."""
    k2 = fftfreq_grid(image.shape, dtype=torch.float64).square().sum(dim=-1)
    envelope = torch.exp(-2.0 * (math.pi * 2.0) ** 2 * k2)
    return torch.fft.irfftn(torch.fft.rfftn(image.double()) * envelope, s=image.shape)


def _correlation(image: torch.Tensor, truth: torch.Tensor) -> float:
    m = truth.shape[-1] // 16
    a = _matched(image)[m:-m, m:-m]
    b = truth[m:-m, m:-m].double()
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / (a.norm() * b.norm()))


def _tmc_field_xy_px(field: Any, case: Case, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """``(..., n, 2)`` (x, y) px of a torch-motion-correction field at pixel points, relative to frame 0."""
    n = case.n_frames
    t = torch.arange(n, dtype=torch.float32) / (n - 1)
    tyx = torch.stack(
        torch.broadcast_tensors(
            t, (ys / (case.size - 1)).float()[..., None], (xs / (case.size - 1)).float()[..., None]
        ),
        dim=-1,
    )  # (..., n, 3)
    with torch.no_grad():
        yx = field(tyx.reshape(-1, 3)).reshape(*tyx.shape[:-1], 2).double()
    xy = yx.flip(-1) / PIXEL_ANGSTROM
    return xy - xy[..., :1, :]


# ------------------------------------------------------------------------------------------------------ running


def run_case(case: Case, tmc: Any, tmc_default_lr: bool) -> list[dict[str, Any]]:
    t0 = time.perf_counter()
    frames, truth_image = simulate(case)
    t_sim = time.perf_counter() - t0
    px, py = _score_points(case.size)
    truth = true_field(case, px, py)  # (16, 16, n, 2)
    rows: list[dict[str, Any]] = []

    def row(
        method: str,
        shifts: torch.Tensor | None,
        image: torch.Tensor | None,
        est_s: float,
        sum_s: float,
        **extra: Any,
    ):
        rows.append(
            {
                "case": case.name,
                "method": method,
                "local": case.local,
                "rms_px": None if shifts is None else _rms(shifts - truth),
                "rms_inner_px": None if shifts is None else _rms((shifts - truth)[INNER]),
                "cc": None if image is None else _correlation(image, truth_image),
                "estimate_s": est_s,
                "sum_s": sum_s,
                **extra,
            }
        )

    t0 = time.perf_counter()
    ideal = true_sum(case, frames)
    row("truth", truth, ideal, 0.0, time.perf_counter() - t0)

    t0 = time.perf_counter()
    g = estimate_global_motion(frames, pixel_size_angstrom=PIXEL_ANGSTROM)
    t_global = time.perf_counter() - t0
    t0 = time.perf_counter()
    sum_global = apply_motion(frames, g)
    row("tomoforge global", g.double().expand_as(truth), sum_global, t_global, time.perf_counter() - t0)
    global_rms = rows[-1]["rms_px"]

    for overlap in (0.0, 0.5):
        t0 = time.perf_counter()
        local = estimate_local_motion(
            frames, pixel_size_angstrom=PIXEL_ANGSTROM, global_shifts_xy_px=g, patch_overlap=overlap
        )
        t_local = time.perf_counter() - t0
        t0 = time.perf_counter()
        image = apply_local_motion(frames, g, local)
        t_sum = time.perf_counter() - t0
        shifts = local.shifts_at(px, py)
        shifts = shifts - shifts[..., :1, :]
        degree = int(local.coefficients.shape[1])
        row(
            f"tomoforge local ov{overlap:g}",
            shifts,
            image,
            t_global + t_local,
            t_sum,
            significant=local.significant,
            model="{" + ",".join(_term(a, b) for a, b in local.spatial_exponents) + f"}}×t^1..{degree}",
            rejected=int((~local.inliers).sum()),
            cv_px2=round(local.cv_error_px2, 4),
            null_cv_px2=round(local.null_cv_error_px2, 4),
            added_rms_px=_rms(shifts - truth) - global_rms,
        )

    if tmc is None or not case.with_tmc:
        return rows
    t0 = time.perf_counter()
    tmc_global = tmc.estimate_global_motion(frames, pixel_spacing=PIXEL_ANGSTROM)
    t_tg = time.perf_counter() - t0
    tg = _tmc_field_xy_px(tmc_global, case, px, py)
    plus, minus = _rms(tg - truth), _rms(-tg - truth)
    row(
        "tmc global",
        tg if plus <= minus else -tg,
        None,
        t_tg,
        0.0,
        sign="+" if plus <= minus else "-",
    )
    (ph, pw), _ = patch_grid((case.size, case.size), PATCHES_XY, 0.5)
    for lr in (0.2, 0.01) if tmc_default_lr else (0.2,):
        t0 = time.perf_counter()
        with open(os.devnull, "w") as devnull, contextlib.redirect_stderr(devnull):  # its tqdm bar
            field, _tracker = tmc.estimate_local_motion(
                frames,
                pixel_spacing=PIXEL_ANGSTROM,
                deformation_field_resolution=(case.n_frames, 5, 5),
                patch_sampling=tmc.PatchSamplingConfig(patch_shape=(ph, pw), overlap=0.5),
                initial_deformation_field=tmc_global,
                optimization=tmc.OptimizationConfig(optimizer_kwargs={"lr": lr}),
            )
        t_local = time.perf_counter() - t0
        shifts = _tmc_field_xy_px(field, case, px, py)
        plus, minus = _rms(shifts - truth), _rms(-shifts - truth)
        relative = tmc.DeformationField(field.data - field.data[:, :1], grid_type=field.grid_type)
        t0 = time.perf_counter()
        image = tmc.correct_motion(frames, relative, pixel_spacing=PIXEL_ANGSTROM).sum(0)
        t_sum = time.perf_counter() - t0
        row(
            f"tmc local lr{lr:g}",
            shifts if plus <= minus else -shifts,
            image,
            t_tg + t_local,
            t_sum,
            sign="+" if plus <= minus else "-",
            added_rms_px=min(plus, minus) - global_rms,
        )
    for r in rows:
        r["simulate_s"] = t_sim
    return rows


def _fmt(value: Any, spec: str) -> str:
    return format("—", f">{spec.split('.')[0]}") if value is None else format(value, spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="three 512² movies (about 2 minutes)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default=None, help="write all rows to this JSON file")
    parser.add_argument("--no-tmc", action="store_true", help="skip torch-motion-correction")
    parser.add_argument("--tmc-default-lr", action="store_true", help="also run tmc at its default lr 0.01")
    parser.add_argument(
        "--fp-seeds", type=int, default=0, help="also this many 1024² tomography movies without local motion"
    )
    parser.add_argument("--only-fp", action="store_true", help="run only the --fp-seeds movies")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tmc: Any = None
    if not args.no_tmc:
        try:
            tmc = importlib.import_module("torch_motion_correction")
        except ImportError as error:
            print(f"torch-motion-correction not importable ({error}): skipped")
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"uptime before: {uptime}")
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
        + (f", tmc {tmc.__version__}" if tmc else "")
    )
    start = time.perf_counter()
    all_rows: list[dict[str, Any]] = []
    header = (
        f"{'case':<15} {'method':<22} {'RMS px':>7} {'inner':>7} {'cc':>7} {'est s':>7} {'sum s':>6}  notes"
    )
    print(header)
    cases = [] if args.only_fp else _cases(args.quick)
    for case in cases + _false_positive_cases(args.fp_seeds):
        rows = run_case(case, tmc, args.tmc_default_lr)
        for r in rows:
            notes = []
            if "significant" in r:
                notes.append(f"significant={r['significant']} model={r['model']} rejected={r['rejected']}")
            if "sign" in r:
                notes.append(f"sign {r['sign']}")
            if "added_rms_px" in r:
                notes.append(f"RMS − tomoforge global {r['added_rms_px']:+.3f} px")
            print(
                f"{r['case']:<15} {r['method']:<22} {_fmt(r['rms_px'], '7.3f')} {_fmt(r['rms_inner_px'], '7.3f')} "
                f"{_fmt(r['cc'], '7.4f')} "
                f"{r['estimate_s']:7.2f} {r['sum_s']:6.2f}  {'; '.join(notes)}",
                flush=True,
            )
        all_rows.extend(rows)
    for overlap in ("0", "0.5"):
        nulls = [
            r for r in all_rows if r["method"] == f"tomoforge local ov{overlap}" and r["local"] == "none"
        ]
        if nulls:
            worse = [r["added_rms_px"] for r in nulls if r["significant"]]
            print(
                f"no local motion, overlap {overlap}: significant in {len(worse)} of {len(nulls)} movies"
                + (f" (RMS added {', '.join(f'{w:+.3f}' for w in worse)} px)" if worse else "")
            )
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"uptime after: {uptime}; total {time.perf_counter() - start:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(all_rows, f, indent=1)


if __name__ == "__main__":
    main()
