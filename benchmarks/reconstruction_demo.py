"""Tomogram reconstruction scored against the simulator's true volume (issue 8's correctness targets).

1. **Noise-free**: the ``demo`` truth tomogram (the specimen potential, 256 × 256 × 164 voxels of 10.8 Å) is
   projected with the simulator's projector (:func:`tomoforge.simulate.imaging.project_tilt`, aligned frame, the
   41 true tilt angles, 256 × 256 views, rays leaving the sides see the ice continued) and reconstructed by WBP
   and SIRT. Scored by the correlation with the truth, with the missing-wedge-filtered truth, and with both
   low-passed to the WBP cut-off (the issue's "band-limited, missing-wedge-filtered" volume), inside the central
   70 % in x and y (where every view saw the specimen).
2. **Noisy**: the same projections plus white Gaussian noise (``--snr``, the variance ratio per pixel), scored by
   the Fourier shell correlation with the wedge-filtered truth per band, the 0.5 crossing, and a contrast measure
   (correlation after a 60 Å low-pass): SIRT's contrast against WBP's resolution (the tutorial's tip).

Usage::

    python benchmarks/reconstruction_demo.py --truth DEMO/truth [--snr 0.5] [--threads 2] [--tilt-step 1]

The truth comes from ``tomoforge simulate --preset demo --out DEMO``.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch

from tomoforge.io.imod import read_tlt
from tomoforge.io.mrc import read_mrc
from tomoforge.reconstruction import (
    backproject_single_axis,
    full_ray_width,
    single_axis_matrix,
    sirt_slab,
    transpose_matrix,
    weight_projections,
    weighting_filters,
)
from tomoforge.simulate.imaging import project_tilt


def _wedge(volume: torch.Tensor, max_tilt_deg: float) -> torch.Tensor:
    nz, ny, nx = volume.shape
    spectrum = torch.fft.fftn(volume.double())
    kz = torch.fft.fftfreq(nz, dtype=torch.float64)[:, None, None]
    kx = torch.fft.fftfreq(nx, dtype=torch.float64)[None, None, :]
    keep = (kz.abs() <= math.tan(math.radians(max_tilt_deg)) * kx.abs()) | ((kz == 0) & (kx == 0))
    return torch.fft.ifftn(spectrum * keep.expand(nz, ny, nx)).real.float()


def _lowpass(volume: torch.Tensor, cutoff_cycles_per_px: float, falloff: float = 0.035) -> torch.Tensor:
    nz, ny, nx = volume.shape
    k = [torch.fft.fftfreq(n, dtype=torch.float64) for n in (nz, ny, nx)]
    radius = torch.sqrt(k[0][:, None, None] ** 2 + k[1][None, :, None] ** 2 + k[2][None, None, :] ** 2)
    filt = torch.exp(-((radius - cutoff_cycles_per_px).clamp(min=0) ** 2) / (2 * falloff**2))
    return torch.fft.ifftn(torch.fft.fftn(volume.double()) * filt).real.float()


def _inner(volume: torch.Tensor) -> torch.Tensor:
    _, ny, nx = volume.shape
    my, mx = int(0.15 * ny), int(0.15 * nx)
    return volume[:, my : ny - my, mx : nx - mx]


def _cc(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = _inner(a).double().flatten(), _inner(b).double().flatten()
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / torch.sqrt((a * a).sum() * (b * b).sum()))


def _fsc_bands(a: torch.Tensor, b: torch.Tensor, voxel: float, edges_angstrom: list[float]) -> list[float]:
    fa, fb = torch.fft.fftn(_inner(a).double()), torch.fft.fftn(_inner(b).double())
    k = [torch.fft.fftfreq(n, d=voxel, dtype=torch.float64) for n in fa.shape]
    radius = torch.sqrt(k[0][:, None, None] ** 2 + k[1][None, :, None] ** 2 + k[2][None, None, :] ** 2)
    out = []
    for hi, lo in zip(edges_angstrom[:-1], edges_angstrom[1:], strict=True):
        band = (radius >= 1.0 / hi) & (radius < 1.0 / lo)
        num = (fa[band] * fb[band].conj()).real.sum()
        den = torch.sqrt((fa[band].abs() ** 2).sum() * (fb[band].abs() ** 2).sum())
        out.append(float(num / den))
    return out


def _transfer_bands(
    rec: torch.Tensor, truth: torch.Tensor, voxel: float, edges_angstrom: list[float]
) -> list[float]:
    """Signal transfer per band: ``Re Σ F_rec·F_truth* / Σ |F_truth|²`` (1 = amplitudes kept, < 1 = damped)."""
    fa, fb = torch.fft.fftn(_inner(rec).double()), torch.fft.fftn(_inner(truth).double())
    k = [torch.fft.fftfreq(n, d=voxel, dtype=torch.float64) for n in fa.shape]
    radius = torch.sqrt(k[0][:, None, None] ** 2 + k[1][None, :, None] ** 2 + k[2][None, None, :] ** 2)
    out = []
    for hi, lo in zip(edges_angstrom[:-1], edges_angstrom[1:], strict=True):
        band = (radius >= 1.0 / hi) & (radius < 1.0 / lo)
        out.append(float((fa[band] * fb[band].conj()).real.sum() / (fb[band].abs() ** 2).sum()))
    return out


def _shell_crossing(a: torch.Tensor, b: torch.Tensor, voxel: float, threshold: float) -> float:
    fa, fb = torch.fft.fftn(_inner(a).double()), torch.fft.fftn(_inner(b).double())
    k = [torch.fft.fftfreq(n, dtype=torch.float64) for n in fa.shape]
    radius = torch.sqrt(k[0][:, None, None] ** 2 + k[1][None, :, None] ** 2 + k[2][None, None, :] ** 2)
    shells = torch.round(radius * 100).long()
    for s in range(1, 50):
        band = shells == s
        num = (fa[band] * fb[band].conj()).real.sum()
        den = torch.sqrt((fa[band].abs() ** 2).sum() * (fb[band].abs() ** 2).sum())
        if float(num / den) < threshold:
            return voxel / (s / 100)
    return 2 * voxel


def _wbp(views: torch.Tensor, angles: list[float], nz: int, nx: int, **filters: object) -> torch.Tensor:
    padded = 2 * views.shape[-1]
    weights = weighting_filters(angles, padded, thickness_px=float(nz), **filters)  # type: ignore[arg-type]
    matrix = single_axis_matrix(angles, detector_width=views.shape[-1], volume_width=nx, thickness=nz)
    return backproject_single_axis(matrix, weight_projections(views, weights, padded), nz, nx)


def _sirt(views: torch.Tensor, angles: list[float], nz: int, nx: int, iterations: int) -> torch.Tensor:
    wide = full_ray_width(angles, detector_width=views.shape[-1], thickness=nz, volume_width=nx)
    crop = wide // 2 - nx // 2
    matrix = single_axis_matrix(angles, detector_width=views.shape[-1], volume_width=wide, thickness=nz)
    transposed = transpose_matrix(matrix)
    slabs = [
        sirt_slab(
            matrix, transposed, views[:, j : j + 64], thickness=nz, volume_width=wide, iterations=iterations
        )[..., crop : crop + nx]
        for j in range(0, views.shape[1], 64)
    ]
    return torch.cat(slabs, dim=1)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--truth", type=Path, required=True, help="the simulator's truth folder (demo preset)"
    )
    parser.add_argument("--snr", type=float, default=0.5, help="per-pixel variance SNR of the noisy views")
    parser.add_argument("--sirt-iterations", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--tilt-step",
        type=float,
        default=None,
        help="project at -60…60° in this step instead of the demo's 41 true tilts (e.g. 1 for 121 views)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    volume = torch.from_numpy(
        np.asarray(read_mrc(args.truth / "tomograms" / "TS_01.mrc").data, dtype=np.float32)
    )
    voxel = float(read_mrc(args.truth / "tomograms" / "TS_01.mrc").pixel_size_angstrom)
    angles = [float(a) for a in read_tlt(args.truth / "alignment" / "TS_01.tlt")]
    if args.tilt_step:
        angles = [float(a) for a in np.arange(-60.0, 60.0 + 1e-6, args.tilt_step)]
    nz, ny, nx = volume.shape
    start = time.perf_counter()
    views = torch.stack(
        [
            project_tilt(
                volume,
                voxel_size_angstrom=1.0,
                tilt_angle_deg=a,
                tilt_axis_angle_deg=0.0,
                out_shape_yx=(ny, nx),
                n_slabs=1,
                lateral_padding="border",
            )[0][0]
            for a in angles
        ]
    )
    print(f"projected {len(angles)} views of {ny}×{nx} in {time.perf_counter() - start:.1f} s")
    wedge = _wedge(volume, max(abs(a) for a in angles) + 1.5)
    truth_band = _lowpass(wedge, 0.35)
    print("\n## Noise-free\n")
    transfer_edges = [200.0, 100.0, 60.0, 40.0, 30.0]
    transfer_labels = " | ".join(
        f"transfer {hi:.0f}–{lo:.0f} Å"
        for hi, lo in zip(transfer_edges[:-1], transfer_edges[1:], strict=True)
    )
    print(
        f"| method | s | cc truth | cc wedge-filtered truth | cc wedge + band-limited (0.35) | {transfer_labels} |"
    )
    print("|---|---|---|---|---|" + "---|" * (len(transfer_edges) - 1))
    cases = {
        "WBP, no cut-off": lambda v: _wbp(v, angles, nz, nx, cutoff=None),
        "WBP, IMOD radial 0.35/0.035": lambda v: _wbp(v, angles, nz, nx),
        f"WBP, SIRT-like {args.sirt_iterations}": lambda v: _wbp(
            v, angles, nz, nx, sirt_like_iterations=args.sirt_iterations
        ),
        f"SIRT {args.sirt_iterations}": lambda v: _sirt(v, angles, nz, nx, args.sirt_iterations),
    }
    for name, run in cases.items():
        t0 = time.perf_counter()
        rec = run(views)
        seconds = time.perf_counter() - t0
        print(
            f"| {name} | {seconds:.1f} | {_cc(rec, volume):.3f} | {_cc(rec, wedge):.3f} | "
            f"{_cc(_lowpass(rec, 0.35), truth_band):.3f} | "
            + " | ".join(f"{t:.2f}" for t in _transfer_bands(rec, wedge, voxel, transfer_edges))
            + " |"
        )
    generator = torch.Generator().manual_seed(0)
    signal_sd = float(views.std(dim=(1, 2)).square().mean().sqrt())  # within-view signal, per pixel
    noise_sd = signal_sd / math.sqrt(args.snr)
    noisy = views + noise_sd * torch.randn(views.shape, generator=generator)
    edges = [1e9, 200.0, 100.0, 60.0, 40.0, 30.0, 2 * voxel]
    print(f"\n## Noisy (per-pixel SNR {args.snr:g})\n")
    labels = " | ".join(
        f"FSC {hi:.0f}–{lo:.0f} Å" if hi < 1e8 else f"FSC >{lo:.0f} Å"
        for hi, lo in zip(edges[:-1], edges[1:], strict=True)
    )
    print(f"| method | cc after 60 Å low-pass | {labels} | FSC 0.5 (Å) |")
    print("|---|---|" + "---|" * (len(edges) - 1) + "---|")
    for name, run in cases.items():
        rec = run(noisy)
        contrast = _cc(_lowpass(rec, voxel / 60.0, 0.01), _lowpass(wedge, voxel / 60.0, 0.01))
        bands = _fsc_bands(rec, wedge, voxel, edges)
        crossing = _shell_crossing(rec, wedge, voxel, 0.5)
        print(
            f"| {name} | {contrast:.3f} | " + " | ".join(f"{b:.3f}" for b in bands) + f" | {crossing:.0f} |"
        )


if __name__ == "__main__":
    main()
