"""Local (patch) motion: a known smooth, spatially varying displacement field is recovered and corrected."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tomoforge.fourier import fftfreq_grid, fourier_shift_2d
from tomoforge.motion import (
    apply_local_motion,
    apply_motion,
    estimate_global_motion,
    estimate_local_motion,
    patch_grid,
)

N_FRAMES, SIZE, PAD = 8, 256, 32
# Global drift (px), frame 0 at rest.
DRIFT = torch.tensor(
    [[0.0, 0.0], [0.4, -0.6], [1.1, -1.3], [1.7, -1.9], [2.2, -2.3], [2.6, -2.6], [2.9, -2.8], [3.1, -3.0]],
    dtype=torch.float64,
)


def smooth_image(shape: tuple[int, int], *, sigma_px: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(shape, generator=g, dtype=torch.float64)
    k = fftfreq_grid(shape, dtype=torch.float64)
    envelope = torch.exp(-2.0 * (math.pi * sigma_px) ** 2 * k.square().sum(dim=-1))
    image = torch.fft.irfftn(torch.fft.rfftn(noise) * envelope, s=shape)
    return image / image.std()


def true_field(x_px: torch.Tensor, y_px: torch.Tensor) -> torch.Tensor:
    """``(..., n, 2)`` displacement: drift + a quadratic-in-space local term growing linearly in time."""
    u = (x_px - SIZE // 2) / (SIZE / 2)
    v = (y_px - SIZE // 2) / (SIZE / 2)
    local_x = 1.2 * u * v + 0.8 * v.square() - 0.5 * u
    local_y = -1.0 * u.square() + 0.7 * u * v + 0.6 * v
    t = torch.arange(N_FRAMES, dtype=torch.float64) / (N_FRAMES - 1)
    local = torch.stack([local_x, local_y], dim=-1)[..., None, :] * t[:, None]
    return local + DRIFT


@pytest.fixture(scope="module")
def movie() -> tuple[torch.Tensor, torch.Tensor]:
    """Poisson frames ``frame_t(x) = image(x − s(x, t))`` (bicubic warp of a larger image) and the true image."""
    big = smooth_image((SIZE + 2 * PAD, SIZE + 2 * PAD), sigma_px=2.5, seed=11)
    ys, xs = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    xs, ys = xs.double(), ys.double()
    field = true_field(xs, ys)  # (h, w, n, 2)
    sx = xs[..., None] - field[..., 0] + PAD
    sy = ys[..., None] - field[..., 1] + PAD
    big_n = SIZE + 2 * PAD
    grid = torch.stack([2 * sx / (big_n - 1) - 1, 2 * sy / (big_n - 1) - 1], dim=-1).permute(2, 0, 1, 3)
    clean = F.grid_sample(big.expand(N_FRAMES, 1, big_n, big_n), grid, mode="bicubic", align_corners=True)[
        :, 0
    ]
    rate = (500.0 * (1.0 + 0.5 * clean)).clamp_min(0.0)
    frames = torch.poisson(rate, generator=torch.Generator().manual_seed(12)).to(torch.float32)
    return frames, big[PAD:-PAD, PAD:-PAD]


def test_patch_grid_covers_the_frame() -> None:
    (ph, pw), centres = patch_grid((256, 200), (5, 3), 0.5)  # 5 along x (200 px), 3 along y
    assert (ph, pw) == (128, 66)
    assert centres.shape == (15, 2)
    assert float(centres[:, 0].min()) == pw // 2 and float(centres[:, 0].max()) - pw // 2 + pw == 200
    assert float(centres[:, 1].min()) == ph // 2 and float(centres[:, 1].max()) - ph // 2 + ph == 256


def test_local_model_recovers_the_field_and_sharpens_the_sum(
    movie: tuple[torch.Tensor, torch.Tensor],
) -> None:
    frames, truth_image = movie
    global_shifts = estimate_global_motion(frames, pixel_size_angstrom=1.0, b_factor_angstrom2=20.0)
    local = estimate_local_motion(
        frames, pixel_size_angstrom=1.0, global_shifts_xy_px=global_shifts, b_factor_angstrom2=20.0
    )
    assert local.centres_xy_px.shape == (25, 2)
    assert local.patch_shifts_xy_px.shape == (25, N_FRAMES, 2)
    cx, cy = local.centres_xy_px[:, 0], local.centres_xy_px[:, 1]
    truth = true_field(cx, cy)
    model = local.shifts_at(cx, cy)
    assert model.shape == (25, N_FRAMES, 2)
    rms = float((model - truth).square().sum(dim=-1).mean().sqrt())
    global_only = float((global_shifts.double() - truth).square().sum(dim=-1).mean().sqrt())
    assert rms < 0.15, f"model RMS error {rms:.3f} px (global only {global_only:.3f} px)"
    assert rms < 0.4 * global_only, f"{rms:.3f} vs {global_only:.3f}"
    # Corrected sums: the local correction correlates better with the unmoved image (interior, away from edges).
    inner = (slice(16, -16), slice(16, -16))

    def correlation(image: torch.Tensor) -> float:
        a = image[inner].double() - image[inner].double().mean()
        b = truth_image[inner] - truth_image[inner].mean()
        return float((a * b).sum() / (a.norm() * b.norm()))

    cc_local = correlation(apply_local_motion(frames, global_shifts, local))
    cc_global = correlation(apply_motion(frames, global_shifts))
    # Blur by the residual motion costs 1 − cc; the local correction removes most of it.
    assert 1.0 - cc_local < 0.6 * (1.0 - cc_global), f"local {cc_local:.4f} vs global {cc_global:.4f}"


def test_zero_local_model_equals_the_global_sum() -> None:
    frames = smooth_image((64, 64), sigma_px=2.0, seed=3).expand(4, 64, 64).float().contiguous()
    shifts = torch.zeros(4, 2)
    local = estimate_local_motion(
        frames, pixel_size_angstrom=1.0, global_shifts_xy_px=shifts, patches_xy=(3, 3)
    )
    assert float(local.coefficients.abs().max()) < 1e-3
    assert torch.allclose(apply_local_motion(frames, shifts, local), apply_motion(frames, shifts), atol=1e-3)


def test_local_model_is_chosen_and_significant_on_real_local_motion(
    movie: tuple[torch.Tensor, torch.Tensor],
) -> None:
    frames, _ = movie
    global_shifts = estimate_global_motion(frames, pixel_size_angstrom=1.0, b_factor_angstrom2=20.0)
    local = estimate_local_motion(
        frames, pixel_size_angstrom=1.0, global_shifts_xy_px=global_shifts, b_factor_angstrom2=20.0
    )
    assert local.significant
    assert local.cv_error_px2 < 0.1 * local.null_cv_error_px2
    # The true field has x², y², xy terms: the cross-validated choice keeps them.
    assert set(local.spatial_exponents) >= {(1, 1), (2, 0), (0, 2)}
    assert bool(local.inliers.all())


def low_dose_movie(
    *, counts_per_px: float, seed: int, size: int = 192, n: int = 8
) -> tuple[torch.Tensor, torch.Tensor]:
    """Poisson frames of one texture under whole-frame drift only (no local motion), as a low-dose tilt movie."""
    image = smooth_image((size, size), sigma_px=3.0, seed=seed)
    drift = DRIFT[:n] * 0.7
    clean = fourier_shift_2d(image.expand(n, size, size), drift)
    rate = (counts_per_px * (1.0 + 0.3 * clean)).clamp_min(0.0)
    frames = torch.poisson(rate, generator=torch.Generator().manual_seed(seed + 1)).float()
    return frames, drift


@pytest.mark.parametrize(("patches", "counts"), [((2, 2), 2.7), ((3, 3), 2.7), ((5, 5), 2.7), ((3, 3), 30.0)])
def test_no_local_model_without_local_motion(patches: tuple[int, int], counts: float) -> None:
    """On movies with global drift only, the patch noise must not be fitted: the correction stays global."""
    frames, _ = low_dose_movie(counts_per_px=counts, seed=5)
    global_shifts = estimate_global_motion(frames, pixel_size_angstrom=1.0, b_factor_angstrom2=50.0)
    local = estimate_local_motion(
        frames,
        pixel_size_angstrom=1.0,
        global_shifts_xy_px=global_shifts,
        patches_xy=patches,
        patch_overlap=0.0,
        b_factor_angstrom2=50.0,
    )
    assert not local.significant, (local.spatial_exponents, local.cv_error_px2, local.null_cv_error_px2)
    assert float(local.coefficients.abs().max()) == 0.0
    summed = apply_local_motion(frames, global_shifts, local, binning=2)
    assert torch.equal(summed, apply_motion(frames, global_shifts, binning=2))


def test_a_patch_pinned_to_the_detector_is_rejected(movie: tuple[torch.Tensor, torch.Tensor]) -> None:
    """A strong static pattern (fixed-pattern noise) in one patch makes it an outlier; the field is still found."""
    frames, _ = movie
    pinned = frames.clone()
    static = smooth_image((40, 40), sigma_px=1.5, seed=21).float()
    pinned[:, :40, :40] += 3000.0 * static  # only in the corner patch (5×5 grid, overlap 0.5: 84 px patches)
    global_shifts = estimate_global_motion(frames, pixel_size_angstrom=1.0, b_factor_angstrom2=20.0)
    local = estimate_local_motion(
        pinned, pixel_size_angstrom=1.0, global_shifts_xy_px=global_shifts, b_factor_angstrom2=20.0
    )
    assert local.significant
    assert not bool(local.inliers[0]) and int(local.inliers.sum()) >= 23
    cx, cy = local.centres_xy_px[1:, 0], local.centres_xy_px[1:, 1]
    rms = float((local.shifts_at(cx, cy) - true_field(cx, cy)).square().sum(dim=-1).mean().sqrt())
    assert rms < 0.2, rms


def test_local_sum_respects_binning_and_dose_weights(movie: tuple[torch.Tensor, torch.Tensor]) -> None:
    frames, _ = movie
    global_shifts = estimate_global_motion(frames, pixel_size_angstrom=1.0, b_factor_angstrom2=20.0)
    local = estimate_local_motion(
        frames, pixel_size_angstrom=1.0, global_shifts_xy_px=global_shifts, b_factor_angstrom2=20.0
    )
    full = apply_local_motion(frames, global_shifts, local)
    binned = apply_local_motion(frames, global_shifts, local, binning=2)
    assert binned.shape == (SIZE // 2, SIZE // 2)
    # Fourier cropping keeps the mean per pixel of the sum.
    assert abs(float(binned.mean()) - float(full.mean())) < 1e-3 * float(full.mean())
    ones = torch.ones(N_FRAMES, SIZE // 2, SIZE // 4 + 1)
    assert torch.allclose(
        apply_local_motion(frames, global_shifts, local, binning=2, dose_weights=ones), binned
    )


def gold_texture_movie(size: int, seed: int, counts_per_px: float, n: int = 8) -> torch.Tensor:
    """Faint band-limited texture with dark gold discs under drift only, at a tomography dose (Poisson)."""
    pad = 16
    big_n = size + 2 * pad
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn((big_n, big_n), generator=g, dtype=torch.float64)
    k2 = fftfreq_grid((big_n, big_n), dtype=torch.float64).square().sum(dim=-1)
    noise = torch.fft.irfftn(
        torch.fft.rfftn(noise) * torch.exp(-2.0 * (math.pi * 2.0) ** 2 * k2), s=(big_n, big_n)
    )
    image = 0.1 * noise / noise.std()
    radius = 50.0 / 1.35
    ys, xs = torch.meshgrid(
        torch.arange(big_n, dtype=torch.float64), torch.arange(big_n, dtype=torch.float64), indexing="ij"
    )
    for _ in range(max(2, size // 256)):
        cx, cy = (
            torch.rand(2, generator=g, dtype=torch.float64) * (big_n - 4 * radius) + 2 * radius
        ).tolist()
        r = ((xs - cx).square() + (ys - cy).square()).sqrt()
        image -= 0.25 * (1.0 - torch.tanh((r - radius) / 1.5))
    gd = torch.Generator().manual_seed(1000 + seed)
    k = torch.arange(n, dtype=torch.float64)
    drift = ((1.0 - torch.exp(-k / 2.5)) / (1.0 - math.exp(-(n - 1) / 2.5)))[:, None] * torch.tensor(
        [3.0, -2.0]
    )
    drift[1:] += 0.1 * torch.randn((n - 1, 2), generator=gd, dtype=torch.float64)
    frames = torch.empty((n, size, size), dtype=torch.float32)
    g = torch.Generator().manual_seed(seed)
    px, py = xs[:size, :size], ys[:size, :size]
    for t in range(n):
        sx, sy = px - drift[t, 0] + pad, py - drift[t, 1] + pad
        grid = torch.stack([2 * sx / (big_n - 1) - 1, 2 * sy / (big_n - 1) - 1], dim=-1)
        clean = F.grid_sample(
            image[None, None], grid[None], mode="bicubic", padding_mode="border", align_corners=True
        )
        frames[t] = torch.poisson((counts_per_px * (1.0 + clean[0, 0])).clamp_min(0.0), generator=g).float()
    return frames


def test_overlapping_patches_do_not_validate_each_other() -> None:
    """Overlapping patches share shot noise: holding out one patch but keeping its neighbours let a model of the
    noise pass cross-validation (found by the local-motion benchmark; 0.4 px added where global is 0.08 px)."""
    frames = gold_texture_movie(512, 26, 3 * 1.35**2 / 8)
    global_shifts = estimate_global_motion(frames, pixel_size_angstrom=1.35)
    local = estimate_local_motion(
        frames, pixel_size_angstrom=1.35, global_shifts_xy_px=global_shifts, patch_overlap=0.5
    )
    assert not local.significant, (local.spatial_exponents, local.cv_error_px2, local.null_cv_error_px2)
