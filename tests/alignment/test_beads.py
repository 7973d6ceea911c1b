"""Gold-bead detection and centring on synthetic tilt images with known bead positions.

The renderer here (also used by ``test_tracking.py``) projects random 3D beads on the two surfaces of a slab with
the project's projection model, draws them as blurred projected spheres on a textured, noisy background with dark
non-bead blobs as distractors, and returns the true positions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from tomoforge.alignment.beads import bead_score_maps, centre_peaks, detect_beads
from tomoforge.geometry import project_points, projection_matrices


@dataclass
class BeadSeries:
    """A rendered tilt series and its truth."""

    stack: torch.Tensor  # (n, h, w)
    tilt_angles_deg: torch.Tensor  # (n,)
    tilt_axis_deg: float
    shifts_xy_px: torch.Tensor  # (n, 2) projection-model shifts s_i
    points_xyz_px: torch.Tensor  # (b, 3) bead positions relative to the tomogram centre
    surfaces: torch.Tensor  # (b,) 0 bottom, 1 top
    positions_xy_px: torch.Tensor  # (b, n, 2) true 0-based pixel positions in the raw images
    bead_diameter_px: float


def _smooth_noise(gen: torch.Generator, shape: tuple[int, ...], sigma_px: float) -> torch.Tensor:
    """White noise low-passed with a Gaussian of ``sigma_px``, scaled to unit SD."""
    noise = torch.randn(shape, generator=gen, dtype=torch.float64)
    k2 = (torch.fft.fftfreq(shape[-2])[:, None] ** 2 + torch.fft.rfftfreq(shape[-1])[None, :] ** 2).double()
    out = torch.fft.irfftn(
        torch.fft.rfftn(noise, dim=(-2, -1)) * torch.exp(-2 * math.pi**2 * sigma_px**2 * k2),
        s=shape[-2:],
        dim=(-2, -1),
    )
    return out / out.std()


def render_bead_series(
    *,
    seed: int = 0,
    size: int = 256,
    n_beads: int = 40,
    n_distractors: int = 12,
    bead_diameter_px: float = 10.0,
    separation_z_px: float = 150.0,
    tilt_axis_deg: float = 85.3,
    tilts_deg: tuple[float, float, float] = (-60.0, 60.0, 3.0),
    max_shift_px: float = 8.0,
    noise_sd: float = 0.2,
    texture_sd: float = 0.05,
    n_beads_top: int | None = None,
) -> BeadSeries:
    """Render a tilt series of dark gold beads (value −1 at a bead centre) with truth."""
    gen = torch.Generator().manual_seed(seed)
    lo, hi, step = tilts_deg
    tilts = torch.arange(lo, hi + step / 2, step, dtype=torch.float64)
    n = tilts.numel()
    shifts = (torch.rand((n, 2), generator=gen, dtype=torch.float64) * 2 - 1) * max_shift_px
    shifts[int(torch.argmin(tilts.abs()))] = 0.0
    top = n_beads // 2 if n_beads_top is None else n_beads_top
    surfaces = torch.zeros(n_beads, dtype=torch.long)
    surfaces[:top] = 1
    extent = 0.4 * size
    # Beads and distractors at least 2 bead diameters apart in the plane: the zero-tilt view has isolated beads.
    xy: list[torch.Tensor] = []
    while len(xy) < n_beads + n_distractors:
        p = (torch.rand(2, generator=gen, dtype=torch.float64) * 2 - 1) * extent
        if all(float((p - q).norm()) > 2.0 * bead_diameter_px for q in xy):
            xy.append(p)
    z = torch.where(surfaces == 1, 0.5, -0.5).double() * separation_z_px
    z = z + torch.randn(n_beads, generator=gen, dtype=torch.float64) * 3.0
    points = torch.cat([torch.stack(xy[:n_beads]), z[:, None]], dim=1)
    z_blobs = (
        (torch.rand((n_distractors, 1), generator=gen, dtype=torch.float64) * 2 - 1) * separation_z_px / 2
    )
    blobs = torch.cat([torch.stack([*xy[n_beads:], torch.zeros(2)])[:-1].double(), z_blobs], dim=1)
    mats = projection_matrices(tilts, tilt_axis_deg, shifts)
    centre = torch.tensor([size // 2, size // 2], dtype=torch.float64)
    bead_xy = project_points(points, mats)[..., :2] + centre  # (n, b, 2)
    blob_xy = project_points(blobs, mats)[..., :2] + centre
    # Render on a padded canvas in Fourier space (exact sub-pixel positions), crop the centre.
    pad = 32
    big = size + 2 * pad
    fy = torch.fft.fftfreq(big, dtype=torch.float64)[:, None]
    fx = torch.fft.rfftfreq(big, dtype=torch.float64)[None, :]
    k = torch.sqrt(fy**2 + fx**2)
    r = bead_diameter_px / 2
    x = 2 * math.pi * r * k
    xs = torch.where(x < 1e-6, torch.ones_like(x), x)
    sphere = torch.where(x < 1e-6, torch.full_like(x, 1 / 3), (torch.sin(xs) - xs * torch.cos(xs)) / xs**3)
    sphere = (
        sphere * 2 * math.pi * r**2 * torch.exp(-2 * math.pi**2 * 0.8**2 * k**2)
    )  # centre 1 before the blur
    blob = torch.exp(-2 * math.pi**2 * 8.0**2 * k**2) * (2 * math.pi * 8.0**2)  # Gaussian, peak 1
    images = torch.empty((n, size, size), dtype=torch.float64)
    for i in range(n):
        spec = torch.zeros((big, big // 2 + 1), dtype=torch.complex128)
        for xy_i, profile, amp in ((bead_xy[i], sphere, -1.0), (blob_xy[i], blob, -0.6)):
            p = xy_i + pad
            ok = (p >= 0).all(-1) & (p < big).all(-1)
            p = p[ok]
            # Σ_m exp(−2πi (x_m fx + y_m fy)) as a product of the separable phase factors.
            ex = torch.exp(-2j * math.pi * p[:, 0, None] * fx)  # (m, big // 2 + 1)
            ey = torch.exp(-2j * math.pi * p[:, 1, None] * fy[:, 0])  # (m, big)
            spec = spec + amp * profile * (ey.T @ ex)
        canvas = torch.fft.irfftn(spec, s=(big, big))
        images[i] = canvas[pad : pad + size, pad : pad + size]
    images = images + texture_sd * _smooth_noise(gen, (n, size, size), 3.0)
    images = images + noise_sd * torch.randn((n, size, size), generator=gen, dtype=torch.float64)
    return BeadSeries(
        stack=images.float(),
        tilt_angles_deg=tilts,
        tilt_axis_deg=tilt_axis_deg,
        shifts_xy_px=shifts,
        points_xyz_px=points,
        surfaces=surfaces,
        positions_xy_px=bead_xy.transpose(0, 1).contiguous(),
        bead_diameter_px=bead_diameter_px,
    )


def visible(series: BeadSeries, margin_px: float) -> torch.Tensor:
    """``(b, n)`` True where the true bead centre lies at least ``margin_px`` inside the image."""
    h, w = series.stack.shape[-2:]
    p = series.positions_xy_px
    return (
        (p[..., 0] >= margin_px)
        & (p[..., 0] <= w - 1 - margin_px)
        & (p[..., 1] >= margin_px)
        & (p[..., 1] <= h - 1 - margin_px)
    )


def match(
    found_xy: torch.Tensor, true_xy: torch.Tensor, radius_px: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """For every true point the nearest found one within ``radius_px``: (index or −1, distance)."""
    if found_xy.numel() == 0:
        return torch.full((true_xy.shape[0],), -1), torch.full((true_xy.shape[0],), math.inf)
    d = torch.cdist(true_xy.double(), found_xy.double())
    dist, idx = d.min(dim=1)
    return torch.where(dist <= radius_px, idx, -1), dist


@pytest.fixture(scope="module")
def series() -> BeadSeries:
    # Three views: −60°, 0°, +60°.
    return render_bead_series(seed=1, tilts_deg=(-60.0, 60.0, 60.0))


def test_detection_finds_beads_at_zero_tilt_with_subpixel_centres(series: BeadSeries) -> None:
    i0 = int(torch.argmin(series.tilt_angles_deg.abs()))
    image = series.stack[i0]
    found = detect_beads(image, bead_diameter_px=series.bead_diameter_px)
    truth = series.positions_xy_px[:, i0]
    vis = visible(series, series.bead_diameter_px)[:, i0]
    idx, dist = match(found.positions_xy_px, truth[vis], radius_px=3.0)
    recall = float((idx >= 0).float().mean())
    rms = float(dist[idx >= 0].pow(2).mean().sqrt())
    assert recall >= 0.95, recall
    assert rms <= 0.3, rms
    # Few false positives: distractor blobs are larger than beads and fail the shape test.
    matched = set(idx[idx >= 0].tolist())
    assert found.positions_xy_px.shape[0] - len(matched) <= 2
    assert (found.scores[:-1] >= found.scores[1:]).all()


def test_detection_is_batched_over_a_stack(series: BeadSeries) -> None:
    views = torch.tensor([0, 1, 2])
    batch = detect_beads(series.stack[views], bead_diameter_px=series.bead_diameter_px)
    for j, v in enumerate(views.tolist()):
        single = detect_beads(series.stack[v], bead_diameter_px=series.bead_diameter_px)
        mine = batch.view_indices == j
        torch.testing.assert_close(batch.positions_xy_px[mine], single.positions_xy_px)
        vis = visible(series, series.bead_diameter_px)[:, v]
        idx, dist = match(single.positions_xy_px, series.positions_xy_px[vis, v], radius_px=3.0)
        assert float((idx >= 0).float().mean()) >= 0.85  # beads overlap more at ±60°


def test_bright_polarity_and_max_beads(series: BeadSeries) -> None:
    dark = detect_beads(series.stack[1], bead_diameter_px=series.bead_diameter_px, max_beads=5)
    bright = detect_beads(-series.stack[1], bead_diameter_px=series.bead_diameter_px, polarity="bright")
    assert dark.positions_xy_px.shape[0] == 5
    torch.testing.assert_close(bright.positions_xy_px[:5], dark.positions_xy_px)
    # Dark beads are not found when looking for bright ones.
    assert detect_beads(series.stack[1], bead_diameter_px=10.0, polarity="bright").scores.numel() <= 1


def test_no_beads_gives_an_empty_result() -> None:
    gen = torch.Generator().manual_seed(3)
    images = 0.3 * _smooth_noise(gen, (3, 128, 128), 3.0).float() + 0.35 * torch.randn(
        (3, 128, 128), generator=gen
    )
    found = detect_beads(images, bead_diameter_px=10.0)
    assert found.positions_xy_px.shape == (0, 2)
    assert found.scores.shape == (0,)


def test_centring_of_an_isolated_bead_is_unbiased() -> None:
    # One bead at many sub-pixel offsets, no noise: the quadratic fit recovers the centre to < 0.05 px.
    errors = []
    rng = np.random.default_rng(0)
    for _ in range(12):
        true = torch.tensor([32.0, 31.0], dtype=torch.float64) + torch.from_numpy(rng.uniform(-0.5, 0.5, 2))
        fy = torch.fft.fftfreq(64, dtype=torch.float64)[:, None]
        fx = torch.fft.rfftfreq(64, dtype=torch.float64)[None, :]
        x = 2 * math.pi * 4.0 * torch.sqrt(fy**2 + fx**2)
        xs = torch.where(x < 1e-6, torch.ones_like(x), x)
        sphere = torch.where(
            x < 1e-6, torch.full_like(x, 1 / 3), (torch.sin(xs) - xs * torch.cos(xs)) / xs**3
        )
        phase = torch.exp(-2j * math.pi * (true[0] * fx + true[1] * fy))
        image = -torch.fft.irfftn(sphere * phase, s=(64, 64))
        maps = bead_score_maps(image, bead_diameter_px=8.0)
        peak = torch.nonzero(maps.scores == maps.scores.max())[0]
        errors.append(centre_peaks(maps.scores, peak[None]) - true)
    err = torch.cat(errors)
    assert float(err.abs().max()) < 0.05, err


def test_bad_input_is_rejected() -> None:
    with pytest.raises(ValueError, match="polarity"):
        detect_beads(torch.zeros(64, 64), bead_diameter_px=8.0, polarity="grey")
    with pytest.raises(ValueError, match="too small"):
        detect_beads(torch.zeros(10, 10), bead_diameter_px=8.0)
    with pytest.raises(ValueError, match="floating"):
        detect_beads(torch.zeros(64, 64, dtype=torch.int32), bead_diameter_px=8.0)
