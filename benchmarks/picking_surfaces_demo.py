"""Geometric surface picking scored against the simulator's viruses and lattice (issue 9's first targets).

For every virus of the simulated specimen (``truth/truth.json``):

1. **Fit from sparse points.** ``--points`` points (10 by default) drawn uniformly on the true membrane mid-surface,
   with isotropic Gaussian noise of ``--noise`` Å (20 Å = 2 nm), are fitted by :func:`tomoforge.picking.fit_ellipsoid`
   (``--trials`` seeded draws). Scored: centre error, relative error of the radii (matched by axis direction), and
   the angle between fitted and true outward normals at the true lattice positions (projected on the membrane).
2. **Oriented picks.** On the *true* ellipsoid and on the fitted one, :func:`tomoforge.picking.ellipsoid_surface_points`
   places points at ``--spacing`` Å on the surface ``--depth`` Å inside the membrane (the lattice depth), and the
   recall is the fraction of true hexamers with a pick within ``--radius`` Å (the issue's 40 Å).

Usage::

    python benchmarks/picking_surfaces_demo.py --truth DEMO/truth [--points 10] [--noise 20] [--trials 20]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from tomoforge.picking import ellipsoid_closest_point, ellipsoid_surface_points, fit_ellipsoid


def _uniform_on_ellipsoid(radii: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Area-uniform points on an axis-aligned ellipsoid (rejection on the gradient norm)."""
    out: list[np.ndarray] = []
    g_max = 1.0 / radii.min()
    while sum(len(o) for o in out) < n:
        d = rng.normal(size=(4 * n, 3))
        p = d / np.linalg.norm(d, axis=1, keepdims=True) * radii
        g = np.linalg.norm(p / radii**2, axis=1) * radii.prod() / radii.prod()
        keep = rng.uniform(size=len(p)) < g / g_max
        out.append(p[keep])
    return np.concatenate(out)[:n]


def _normals(points: np.ndarray, centre: np.ndarray, radii: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    local = torch.from_numpy((points - centre) @ rotation)
    closest, _ = ellipsoid_closest_point(local, torch.from_numpy(radii))
    g = closest.numpy() / radii**2
    return (g / np.linalg.norm(g, axis=1, keepdims=True)) @ rotation.T


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--truth", type=Path, required=True)
    parser.add_argument("--points", type=int, default=10)
    parser.add_argument("--noise", type=float, default=20.0, help="Å, standard deviation per coordinate")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--spacing", type=float, default=60.0)
    parser.add_argument("--depth", type=float, default=110.0, help="lattice depth below the membrane, Å")
    parser.add_argument("--radius", type=float, default=40.0)
    parser.add_argument("--shape", default="ellipsoid", choices=["ellipsoid", "sphere"])
    parser.add_argument("--roundness-prior", type=float, default=None)
    args = parser.parse_args()
    truth = json.loads((args.truth / "truth.json").read_text())
    series = next(iter(truth["tilt_series"].values()))
    particles = np.asarray(series["particles"]["positions_xyz_angstrom"])
    virus_of = np.asarray(series["particles"]["virus_ids"])
    rng = np.random.default_rng(0)
    print(
        "| virus | radii (Å) | hexamers | centre err median / max (Å) | radii err median / max | "
        "normal err median / p95 (°) | recall true model | recall fitted (median) | picks | fit s | degenerate fits |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for virus in series["viruses"]:
        centre = np.asarray(virus["centre_xyz_angstrom"])
        radii = np.asarray(virus["radii_xyz_angstrom"])
        rotation = np.asarray(virus["rotation"])
        hexamers = particles[virus_of == virus["id"]]
        if len(hexamers) == 0:
            continue
        true_normals = _normals(hexamers, centre, radii, rotation)

        def recall(
            c: np.ndarray, r: np.ndarray, rot: np.ndarray, hexamers: np.ndarray = hexamers
        ) -> tuple[float, int]:
            picks, _ = ellipsoid_surface_points(
                torch.from_numpy(c),
                torch.from_numpy(r),
                torch.from_numpy(rot),
                spacing=args.spacing,
                offset=-args.depth,
            )
            d = torch.cdist(torch.from_numpy(hexamers), picks).min(dim=1).values
            return float((d <= args.radius).double().mean()), int(picks.shape[0])

        true_recall, _ = recall(centre, radii, rotation)
        centre_err, radius_err, normal_err, recalls, counts, seconds = [], [], [], [], [], []
        degenerate = 0
        for _ in range(args.trials):
            local = _uniform_on_ellipsoid(radii, args.points, rng)
            noisy = local @ rotation.T + centre + rng.normal(scale=args.noise, size=local.shape)
            t0 = time.perf_counter()
            fit = fit_ellipsoid(
                torch.from_numpy(noisy), shape=args.shape, roundness_prior=args.roundness_prior
            )
            seconds.append(time.perf_counter() - t0)
            c, r, rot = fit.centre_xyz.numpy(), fit.radii.numpy(), fit.rotation.numpy()
            if r.max() > 3 * radii.max() or r.min() < radii.min() / 3:
                degenerate += 1
                continue
            centre_err.append(np.linalg.norm(c - centre))
            match = np.abs(rotation.T @ rot)  # true axis i vs fitted axis j
            order = np.argmax(match, axis=1)
            radius_err.extend(np.abs(r[order] - radii) / radii)
            fitted_normals = _normals(hexamers, c, r, rot)
            cos = np.clip((fitted_normals * true_normals).sum(1), -1, 1)
            normal_err.extend(np.degrees(np.arccos(cos)))
            rec, count = recall(c, r, rot)
            recalls.append(rec)
            counts.append(count)
        print(
            f"| {virus['id']} | {' / '.join(f'{x:.0f}' for x in radii)} | {len(hexamers)} | "
            f"{np.median(centre_err):.1f} / {np.max(centre_err):.1f} | "
            f"{100 * np.median(radius_err):.1f} % / {100 * np.max(radius_err):.1f} % | "
            f"{np.median(normal_err):.2f} / {np.percentile(normal_err, 95):.2f} | {100 * true_recall:.1f} % | "
            f"{100 * np.median(recalls):.1f} % | {int(np.median(counts))} | {np.median(seconds):.2f} | {degenerate} |"
        )


if __name__ == "__main__":
    main()
