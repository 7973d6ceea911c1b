"""Global motion correction: recovered shifts against known synthetic motion and the simulator's truth."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from tomoforge.fourier import dose_weights, fftfreq_grid, fourier_bin_2d, fourier_shift_2d
from tomoforge.motion import apply_motion, estimate_global_motion, find_peak_2d

# A beam-induced-motion-like track (px): a fast early jump, then drift.
TRACK = torch.tensor(
    [[0.0, 0.0], [0.3, -0.7], [1.25, -1.4], [1.9, -2.2], [2.5, -2.6], [3.1, -2.75], [3.5, -3.1], [3.6, -3.3]],
    dtype=torch.float64,
)


def smooth_image(shape: tuple[int, int], *, sigma_px: float, seed: int) -> torch.Tensor:
    """Gaussian-filtered white noise with unit standard deviation (float64)."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(shape, generator=g, dtype=torch.float64)
    k = fftfreq_grid(shape, dtype=torch.float64)
    envelope = torch.exp(-2.0 * (math.pi * sigma_px) ** 2 * k.square().sum(dim=-1))
    image = torch.fft.irfftn(torch.fft.rfftn(noise) * envelope, s=shape)
    return image / image.std()


def poisson_movie(
    image: torch.Tensor, shifts: torch.Tensor, *, dose: float, contrast: float, seed: int
) -> torch.Tensor:
    """Frames ``Poisson(dose·(1 + contrast·image(r − s_t)))`` (float32)."""
    clean = fourier_shift_2d(image.expand(*shifts.shape[:-1], *image.shape), shifts)
    rate = (dose * (1.0 + contrast * clean)).clamp_min(0.0)
    return torch.poisson(rate, generator=torch.Generator().manual_seed(seed)).to(torch.float32)


def centred_rms(estimate: torch.Tensor, truth: torch.Tensor) -> float:
    """RMS length of the error vectors after removing each movie's mean error."""
    error = estimate.double() - truth.double()
    error = error - error.mean(dim=-2, keepdim=True)
    return float(error.square().sum(dim=-1).mean().sqrt())


def test_peak_fit_locates_a_subpixel_gaussian_and_negative_lags() -> None:
    y, x = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    # Periodic lags of a peak at (x, y) = (−3.3, 2.4): distances measured the short way round.
    dx = torch.remainder(x + 3.3 + 16, 32) - 16
    dy = torch.remainder(y - 2.4 + 16, 32) - 16
    cc = torch.exp(-(dx.square() + dy.square()) / (2 * 1.5**2))
    peak = find_peak_2d(cc)
    assert torch.allclose(peak, torch.tensor([-3.3, 2.4]), atol=0.05)
    # Outside the search window the maximum is not found.
    far = find_peak_2d(cc, max_shift_px=2.0)
    assert float(far[0]) >= -2.5


def test_high_dose_recovers_subpixel_shifts_to_005_px() -> None:
    image = smooth_image((128, 128), sigma_px=2.0, seed=1)
    frames = poisson_movie(image, TRACK, dose=500.0, contrast=0.5, seed=2)
    shifts = estimate_global_motion(frames, pixel_size_angstrom=1.0, b_factor_angstrom2=20.0)
    assert shifts.shape == (8, 2)
    assert torch.equal(shifts[0], torch.zeros(2))
    assert float((shifts.double() - TRACK).norm(dim=-1).max()) < 0.05


def test_low_dose_recovers_shifts_to_02_px() -> None:
    # 0.4 e⁻/px/frame, strong contrast: a realistic frame of a super-resolution movie of a gold-rich field.
    image = smooth_image((256, 256), sigma_px=3.0, seed=3)
    frames = poisson_movie(image, TRACK, dose=0.4, contrast=1.0, seed=4)
    shifts = estimate_global_motion(frames, pixel_size_angstrom=1.0, b_factor_angstrom2=50.0)
    assert float((shifts.double() - TRACK).norm(dim=-1).max()) < 0.2
    assert centred_rms(shifts, TRACK) < 0.1


def test_integer_and_half_pixel_shifts_are_exact() -> None:
    image = smooth_image((96, 96), sigma_px=2.0, seed=5)
    track = torch.tensor(
        [[0.0, 0.0], [1.0, -2.0], [-3.0, 0.5], [2.5, 4.0], [-0.5, -0.5]], dtype=torch.float64
    )
    frames = fourier_shift_2d(image.expand(5, 96, 96), track).to(torch.float32)
    shifts = estimate_global_motion(frames, pixel_size_angstrom=1.0, b_factor_angstrom2=10.0)
    assert torch.allclose(shifts.double(), track, atol=0.01)


def test_batch_of_tilts_equals_one_tilt_at_a_time_and_binning_keeps_input_pixels() -> None:
    tracks = torch.stack([TRACK[:4], -2.0 * TRACK[:4], TRACK[:4].flip(-1)])  # (3 tilts, 4 frames, 2)
    frames = torch.stack(
        [
            poisson_movie(
                smooth_image((128, 128), sigma_px=3.0, seed=10 + i),
                tracks[i],
                dose=50.0,
                contrast=0.5,
                seed=i,
            )
            for i in range(3)
        ]
    )
    batched = estimate_global_motion(frames, pixel_size_angstrom=1.0, b_factor_angstrom2=50.0)
    assert batched.shape == (3, 4, 2)
    for i in range(3):
        single = estimate_global_motion(frames[i], pixel_size_angstrom=1.0, b_factor_angstrom2=50.0)
        # Iterations stop on the batch's largest step, so a single tilt may stop one pass earlier.
        assert torch.allclose(batched[i], single, atol=0.01)
    assert float((batched.double() - tracks).norm(dim=-1).max()) < 0.05
    binned = estimate_global_motion(frames, pixel_size_angstrom=1.0, b_factor_angstrom2=50.0, binning=2)
    assert float((binned.double() - tracks).norm(dim=-1).max()) < 0.08


def test_apply_motion_restores_the_unmoved_sum_and_dose_weights_keep_the_mean() -> None:
    image = smooth_image((64, 64), sigma_px=2.0, seed=6) + 3.0
    frames = fourier_shift_2d(image.expand(8, 64, 64), TRACK)
    total = apply_motion(frames, TRACK)
    assert torch.allclose(total, 8.0 * image, atol=1e-6)
    # Shifting by the wrong sign does not.
    assert float((apply_motion(frames, -TRACK) - 8.0 * image).abs().max()) > 0.5
    # Binning 2 of the sum equals binning the unmoved sum.
    assert torch.allclose(apply_motion(frames, TRACK, binning=2), fourier_bin_2d(8.0 * image, 2), atol=1e-6)
    # Exposure weighting: unit weights give the plain sum; real weights keep the mean and damp high frequencies.
    ones = torch.ones(8, 64, 33, dtype=torch.float64)
    assert torch.allclose(apply_motion(frames, TRACK, dose_weights=ones), total, atol=1e-9)
    k = fftfreq_grid((64, 64), spacing_angstrom=2.0, dtype=torch.float64).norm(dim=-1)
    per_frame = torch.arange(8, dtype=torch.float64) * 5.0
    weights = dose_weights(k, prior_dose_e_per_angstrom2=per_frame, dose_e_per_angstrom2=5.0)
    weighted = apply_motion(frames, TRACK, dose_weights=weights)
    assert math.isclose(float(weighted.mean()), float(total.mean()), rel_tol=1e-9)
    assert float(weighted.std()) < float(total.std())


# --- the simulator's tiny preset -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tomoforge.simulate import generate_dataset, preset_config

    # The default tiny motion (2 Å jump at 5 Å pixels: RMS 0.13 px about the mean) is below what 192² frames can
    # resolve meaningfully against doing nothing; a 12 Å jump with 2 Å/frame drift gives tracks of several pixels.
    config = preset_config(
        "tiny", initial_jump_angstrom=12.0, drift_angstrom_per_frame=2.0, jitter_angstrom=0.5
    )
    out = tmp_path_factory.mktemp("tiny_motion")
    generate_dataset(config, out)
    return out


def test_tiny_simulated_movies_match_the_true_motion(tiny_dataset: Path) -> None:
    from tomoforge.io.movies import open_movie
    from tomoforge.simulate.scoring.motion import read_motion_csv

    config = json.loads((tiny_dataset / "truth" / "truth.json").read_text())["config"]
    pixel = float(config["frame_pixel_size_angstrom"])
    tracks = read_motion_csv(tiny_dataset / "truth" / "motion" / "TS_01.csv")
    frames, truth = [], []
    for path in sorted((tiny_dataset / "frames").glob("TS_01_*.mrc")):
        order = int(path.name.split("_")[2])
        with open_movie(path) as movie:
            frames.append(torch.from_numpy(movie.read_frames().astype(np.float32)))
        truth.append(torch.from_numpy(tracks[order].shifts_xy_angstrom / pixel))
    assert len(frames) == len(tracks) == 9
    movies, true_px = torch.stack(frames), torch.stack(truth)  # (9, 4, 192, 192), (9, 4, 2) super-res px
    estimate = estimate_global_motion(movies, pixel_size_angstrom=pixel, b_factor_angstrom2=500.0, binning=2)
    assert torch.equal(estimate[:, 0], torch.zeros(9, 2))
    rms = centred_rms(estimate, true_px)
    doing_nothing = centred_rms(torch.zeros_like(true_px), true_px)
    # Measured 0.08 px (super-resolution) with tracks of 0.86 px RMS; ~19 e⁻/px/frame on 192² frames.
    assert rms < 0.15, f"RMS error {rms:.3f} super-resolution px"
    assert rms < 0.2 * doing_nothing
