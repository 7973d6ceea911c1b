"""Beam-induced motion tracks: reference frame, determinism and the statistics of the model."""

import math

import pytest
import torch

from tomoforge.simulate.motion import beam_induced_motion


def _tracks(seed, **kwargs):
    defaults = {
        "pixel_size_angstrom": 0.675,
        "drift_angstrom_per_frame": 0.0,
        "jitter_angstrom": 0.0,
        "initial_jump_angstrom": 0.0,
    }
    return beam_induced_motion(8, generator=torch.Generator().manual_seed(seed), **{**defaults, **kwargs})


def test_shapes_reference_and_determinism():
    kwargs = {"drift_angstrom_per_frame": 0.3, "jitter_angstrom": 0.1, "initial_jump_angstrom": 1.5}
    one = _tracks(1, **kwargs)
    assert one.shape == (8, 2) and one.dtype == torch.float64
    assert torch.all(one[0] == 0)
    many = _tracks(1, n_tilts=41, **kwargs)
    assert many.shape == (41, 8, 2) and torch.all(many[:, 0] == 0)
    assert torch.equal(_tracks(1, n_tilts=41, **kwargs), many)
    assert not torch.equal(_tracks(2, n_tilts=41, **kwargs), many)
    assert _tracks(1, dtype=torch.float32, **kwargs).dtype == torch.float32


def test_early_jump_decays():
    shifts = _tracks(3, n_tilts=5, initial_jump_angstrom=2.0, jump_time_constant_frames=1.5)
    steps = torch.linalg.vector_norm(shifts[:, 1:] - shifts[:, :-1], dim=-1)
    assert torch.all(steps[:, 1:] < steps[:, :-1])
    total = torch.linalg.vector_norm(shifts[:, -1], dim=-1)
    expected_px = 2.0 * (1 - math.exp(-7 / 1.5)) / 0.675
    torch.testing.assert_close(total, torch.full((5,), expected_px, dtype=torch.float64))


def test_drift_has_constant_speed_and_random_direction():
    shifts = _tracks(4, n_tilts=2000, drift_angstrom_per_frame=0.3)
    steps = shifts[:, 1:] - shifts[:, :-1]
    speed = torch.linalg.vector_norm(steps, dim=-1)
    torch.testing.assert_close(speed, torch.full_like(speed, 0.3 / 0.675))
    directions = steps[:, 0] / speed[:, :1]
    assert torch.linalg.vector_norm(directions.mean(0)).item() < 0.1  # isotropic (expected 1/√2000 ≈ 0.02)


def test_jitter_statistics():
    shifts = _tracks(5, n_tilts=4000, jitter_angstrom=0.2, pixel_size_angstrom=1.0)
    steps = shifts[:, 2:] - shifts[:, 1:-1]  # differences of two independent jitters: variance 2σ² per axis
    assert steps.mean().item() == pytest.approx(0.0, abs=0.01)
    assert steps.var().item() == pytest.approx(2 * 0.2**2, rel=0.05)


def test_mean_squared_displacement_of_the_full_model():
    d, j, s, tau = 0.3, 1.5, 0.1, 1.5
    shifts = _tracks(
        6,
        n_tilts=4000,
        pixel_size_angstrom=1.0,
        drift_angstrom_per_frame=d,
        initial_jump_angstrom=j,
        jitter_angstrom=s,
        jump_time_constant_frames=tau,
    )
    msd = (shifts[:, -1] ** 2).sum(-1).mean().item()
    jump = j * (1 - math.exp(-7 / tau))
    # independent random directions: the cross term averages out; frame 0's jitter is subtracted (2σ² per axis)
    expected = (7 * d) ** 2 + jump**2 + 4 * s**2
    assert msd == pytest.approx(expected, rel=0.05)


def test_defaults_slow_down_like_real_movies():
    # EMPIAR-10164 TS_01 (RELION): median steps fall from 1.1 to 0.3 px, median total 3.5 px at 0.675 Å.
    shifts = beam_induced_motion(
        8, generator=torch.Generator().manual_seed(7), pixel_size_angstrom=0.675, n_tilts=500
    )
    steps = torch.linalg.vector_norm(shifts[:, 1:] - shifts[:, :-1], dim=-1).median(0).values
    assert steps[0] > 2.5 * steps[-1]
    total = torch.linalg.vector_norm(shifts[:, -1], dim=-1).median().item()
    assert 2.5 < total < 5.0


def test_invalid_arguments():
    with pytest.raises(ValueError):
        beam_induced_motion(0, generator=torch.Generator(), pixel_size_angstrom=1.0)
    with pytest.raises(ValueError):
        beam_induced_motion(8, generator=torch.Generator(), pixel_size_angstrom=1.0, jitter_angstrom=-1.0)
