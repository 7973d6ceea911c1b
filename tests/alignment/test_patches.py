"""Patch tracking (tiltxcorr patch mode + imodchopconts) on seeded synthetic tilt series with known geometry.

The specimen is a slab of several hundred small Gaussian blobs (no gold-like outliers); the tilt series is their
projection through the projection model (CONVENTIONS.md §7) with known per-view shifts, rendered as 2D Gaussians,
plus noise. A patch has no single true 3D point, so the tracks are checked two ways: each contour must be one
specimen point under the true geometry (the least-squares point's reprojection error), and the bundle adjustment
on the chains must recover the true geometry (true blob positions reprojected with the solved alignment after the
best rigid fit, as the simulator's alignment score does).
"""

from __future__ import annotations

import math
from functools import cache

import pytest
import torch

from tomoforge.alignment.bundle import fiducial_align
from tomoforge.alignment.coarse import coarse_align
from tomoforge.alignment.patches import chop_contours, track_patches
from tomoforge.geometry import project_points, projection_matrices
from tomoforge.simulate.scoring.alignment import fit_rigid_specimen_transform

SIZE = 384
AXIS_DEG = 85.3
TILTS = torch.arange(-60.0, 60.1, 3.0, dtype=torch.float64)  # 41 views
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@cache
def _specimen(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """800 blobs ``(b, 3)`` in a slab 60 px thick and wider than the field of view, their σ and amplitudes."""
    g = torch.Generator().manual_seed(seed)
    count, half = 800, 0.8 * SIZE
    blobs = torch.stack(
        [
            (torch.rand(count, generator=g, dtype=torch.float64) * 2.0 - 1.0) * half,
            (torch.rand(count, generator=g, dtype=torch.float64) * 2.0 - 1.0) * half,
            (torch.rand(count, generator=g, dtype=torch.float64) - 0.5) * 60.0,
        ],
        dim=-1,
    )
    sigma = 1.5 + torch.rand(count, generator=g, dtype=torch.float64)
    amplitude = 0.5 + torch.rand(count, generator=g, dtype=torch.float64)
    return blobs, sigma, amplitude


def _render(seed: int, matrices: torch.Tensor) -> torch.Tensor:
    """``(t, SIZE, SIZE)`` float32 projections of the blobs of ``_specimen(seed)`` as 2D Gaussians."""
    blobs, sigma, amplitude = _specimen(seed)
    projected = project_points(blobs, matrices).to(torch.float32)  # (t, b, 3) about the centre N // 2
    grid = torch.arange(SIZE, dtype=torch.float32) - SIZE // 2
    s = sigma.to(torch.float32)[:, None]
    gx = torch.exp(-((grid - projected[..., 0:1]) ** 2) / (2 * s**2))
    gy = torch.exp(-((grid - projected[..., 1:2]) ** 2) / (2 * s**2))
    return torch.einsum("tby,tbx->tyx", gy * amplitude.to(torch.float32)[:, None], gx)


@cache
def _series(
    *, seed: int = 0, noise: float = 1.0, featureless: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``(41, SIZE, SIZE)`` and true projection matrices ``(41, 3, 4)`` of a tilt series of the blobs.

    Views are shifted by up to ±8 px; Gaussian noise of ``noise`` × the signal's SD is added.
    """
    g = torch.Generator().manual_seed(seed + 1000)
    n = TILTS.numel()
    shifts = (torch.rand((n, 2), generator=g, dtype=torch.float64) * 2.0 - 1.0) * 8.0
    shifts[n // 2] = 0.0
    matrices = projection_matrices(TILTS, AXIS_DEG, shifts)
    images = _render(seed, matrices)
    scale = float(images.std())
    if featureless:
        images = torch.zeros_like(images)
    images = images + noise * scale * torch.randn(images.shape, generator=g, dtype=torch.float64).float()
    return images, matrices


def _contour_reprojection_px(points_xy: torch.Tensor, matrices: torch.Tensor) -> torch.Tensor:
    """``(p,)`` RMS distance of each contour from the reprojection of its least-squares specimen point."""
    centre = torch.tensor([SIZE // 2, SIZE // 2], dtype=torch.float64)
    out = []
    for contour in points_xy.to(torch.float64):
        seen = torch.isfinite(contour[:, 0])
        a = matrices[seen, :2, :3].reshape(-1, 3)
        b = (contour[seen] - centre - matrices[seen, :2, 3]).reshape(-1)
        point = torch.linalg.lstsq(a, b[:, None]).solution[:, 0]
        out.append((a @ point - b).reshape(-1, 2).square().sum(-1).mean().sqrt())
    return torch.stack(out)


def test_tracked_patches_recover_the_tilt_geometry() -> None:
    images, true_matrices = _series()
    blobs = _specimen(0)[0]
    coarse = coarse_align(images, TILTS, AXIS_DEG)
    tracks = track_patches(images, TILTS, AXIS_DEG, coarse_xf=coarse.xf)
    n = TILTS.numel()
    assert tracks.patch_size_xy == (64, 64)
    assert tracks.reference_view == n // 2
    # (2) nearly every grid patch is followed through at least half of the views
    tracked = tracks.tracked_views()
    assert tracked.numel() >= 64
    assert float((tracked >= math.ceil(n / 2)).float().mean()) >= 0.8
    # (1a) each contour is one specimen point under the true geometry to about a pixel over the whole series
    # (what dominates a patch drifts in depth), each 14-view piece of it to a few tenths
    reprojection = _contour_reprojection_px(tracks.contours_xy_px[tracked >= 3], true_matrices)
    assert float(reprojection.median()) < 1.25
    assert float(reprojection.square().mean().sqrt()) < 1.6
    pieces = track_patches(images, TILTS, AXIS_DEG, coarse_xf=coarse.xf, chunk_views=14)
    assert float(_contour_reprojection_px(pieces.points_xy_px, true_matrices).square().mean().sqrt()) < 0.6
    # the reference view holds the grid; every point has a peak value, strong for this clean texture
    assert torch.isfinite(tracks.contours_xy_px[:, n // 2]).all()
    seen = torch.isfinite(tracks.points_xy_px[..., 0])
    correlated = seen & (torch.arange(n) != n // 2)
    assert torch.equal(torch.isfinite(tracks.peak_values), correlated)
    assert float(tracks.contour_peak_values.nanmedian()) > 0.5
    # (1b) the bundle adjustment on the chains recovers the geometry (the target: RMS ≤ 1.5 px)
    solved = fiducial_align(
        tracks.points_xy_px.to(torch.float64),
        TILTS,
        AXIS_DEG,
        image_size_xy=(SIZE, SIZE),
        rotation="one",
        tilt="fixed",
    )
    inside = (blobs[:, :2].abs() < 0.4 * SIZE).all(dim=-1)
    fit = fit_rigid_specimen_transform(blobs[inside], solved.projection_matrices(), true_matrices)
    rms = float(fit.residuals_xy.square().sum(-1).mean().sqrt())
    assert rms <= 0.5
    assert abs(float(solved.tilt_axis_angles_deg[0]) - AXIS_DEG) < 0.5
    assert not fit.mirrored
    # imodchopconts-style pieces: ⌈(41 − 4) / (14 − 4)⌉ = 4 pieces of 14 points per whole contour
    torch.testing.assert_close(pieces.contours_xy_px, tracks.contours_xy_px, rtol=0, atol=0, equal_nan=True)
    counts = torch.isfinite(pieces.points_xy_px[..., 0]).sum(-1)
    assert int(counts.max()) <= 14
    whole = pieces.chain_contour[(tracked[pieces.chain_contour] == n)]
    assert torch.equal(torch.bincount(whole)[torch.unique(whole)], torch.full((len(torch.unique(whole)),), 4))
    chains = pieces.points_xy_px
    assert torch.equal(
        torch.where(torch.isfinite(chains), chains, 0.0),
        torch.where(torch.isfinite(chains), pieces.contours_xy_px[pieces.chain_contour], 0.0),
    )


def test_featureless_noise_gives_no_consistent_tracks() -> None:
    images, _ = _series(seed=1, featureless=True)
    for max_residual in (None, math.inf):  # the significance of the peaks alone stops them
        tracks = track_patches(images, TILTS, AXIS_DEG, max_residual_px=max_residual)
        assert float(tracks.tracked_views().float().mean()) < 2.0
        assert int(tracks.tracked_views().max()) <= 3
        assert tracks.n_chains <= 2


@pytest.mark.parametrize("device", DEVICES)
def test_subpixel_translations_are_recovered(device: str) -> None:
    """Untilted views of the blobs moved by known sub-pixel shifts, with a coarse alignment off by up to 1 px:
    the iterated correlations follow every shift to 0.02 px through the chain of 5 steps."""
    g = torch.Generator().manual_seed(7)
    shifts = (torch.rand((6, 2), generator=g, dtype=torch.float64) * 2.0 - 1.0) * 5.0
    shifts[0] = 0.0
    stack = _render(0, projection_matrices(torch.zeros(6), AXIS_DEG, shifts)).to(device)
    xf = torch.zeros((6, 2, 3), dtype=torch.float64)
    xf[:, 0, 0] = xf[:, 1, 1] = 1.0
    xf[:, :, 2] = -shifts + (torch.rand((6, 2), generator=g, dtype=torch.float64) - 0.5) * 2.0
    errors = []
    for iterations in (1, 3):
        tracks = track_patches(stack, [0.0] * 6, AXIS_DEG, coarse_xf=xf.to(device), iterations=iterations)
        assert tracks.contours_xy_px.device.type == device
        points = tracks.contours_xy_px.cpu()
        assert torch.isfinite(points).all()
        errors.append(float((points - points[:, :1] - shifts[None]).abs().max()))
    assert errors[1] < 0.02
    assert errors[0] > 2.0 * errors[1]  # a single correlation is pulled towards the predicted position


def test_contours_end_where_patches_leave_the_image() -> None:
    """A view moved by 40 px pushes the patches of one edge out: their contours end there, NaN beyond."""
    shifts = torch.tensor([[0.0, 0.0], [0.0, 0.0], [40.0, 0.0], [40.0, 0.0]], dtype=torch.float64)
    stack = _render(0, projection_matrices(torch.zeros(4), AXIS_DEG, shifts))
    xf = torch.zeros((4, 2, 3), dtype=torch.float64)
    xf[:, 0, 0] = xf[:, 1, 1] = 1.0
    xf[:, :, 2] = -shifts
    tracks = track_patches(stack, [0.0, 0.5, 1.0, 1.5], AXIS_DEG, coarse_xf=xf)
    points = tracks.contours_xy_px
    right = points[:, 0, 0] > SIZE - 64  # patches whose footprint leaves the image when moved by 40 px
    assert bool(right.any()) and bool((~right).any())
    assert torch.isfinite(points[~right]).all()
    assert torch.isfinite(points[right, :2]).all() and torch.isnan(points[right, 2:]).all()


def test_chop_contours_makes_even_overlapping_pieces() -> None:
    n = 41
    points = torch.full((3, n, 2), float("nan"))
    points[0, :] = 1.0  # 41 points
    points[1, 5:15] = 2.0  # 10 points
    points[2, 7:9] = 3.0  # 2 points: dropped
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0))  # contours run along this order
    shuffled = torch.empty_like(points)
    shuffled[:, order] = points  # view order[k] holds the k-th point
    index, mask = chop_contours(shuffled, length_views=14, overlap_views=4, view_order=order)
    assert index.tolist() == [0, 0, 0, 0, 1]  # ⌈(41 − 4) / (14 − 4)⌉ = 4 pieces; 10 ≤ 14 stays whole
    along = mask[:, order]  # in contour order
    lengths = along.sum(-1).tolist()
    assert lengths == [14, 14, 14, 14, 10]  # ℓ = ⌈(41 + 3·4) / 4⌉ = 14
    for a, b in zip(along[:3], along[1:4], strict=True):
        first = int(torch.nonzero(b)[0])
        last = int(torch.nonzero(a)[-1])
        assert last - first + 1 >= 4  # successive pieces overlap by at least 4 points
    assert torch.equal(along[:4].any(0), torch.ones(n, dtype=torch.bool))  # every point is in a piece
    assert torch.equal(along[4], torch.isfinite(points[1, :, 0]))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tilt_angles_deg": [0.0, 1.0]}, "tilt angles"),
        ({"coarse_xf": torch.zeros(3, 2, 3)}, "coarse_xf"),
        ({"patch_size_px": 8}, "at least"),
        ({"trim_px": (-1, 0)}, "trim_px"),
        ({"min_peak_sd": math.nan}, "finite"),
        ({"patch_size_px": 400}, "fits"),
        ({"overlap": 1.0}, "overlap"),
        ({"iterations": 0}, "iterations"),
        ({"chunk_views": 3}, "chunk_views"),
        ({"max_residual_px": 0.0}, "max_residual_px"),
    ],
)
def test_bad_input_is_rejected(kwargs: dict[str, object], message: str) -> None:
    stack = torch.zeros((3, SIZE, SIZE))
    args: dict[str, object] = {"tilt_angles_deg": [-3.0, 0.0, 3.0]}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        track_patches(stack, tilt_axis_deg=AXIS_DEG, **args)  # type: ignore[arg-type]
