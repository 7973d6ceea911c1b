"""Edge taper and fast FFT sizes."""

from __future__ import annotations

import math

import pytest
import torch

from tomoforge.fourier import edge_taper, fast_fft_size


def test_edge_taper_is_a_raised_cosine_at_every_border() -> None:
    mask = edge_taper((20, 31), 4, dtype=torch.float64)
    assert mask.shape == (20, 31)
    profile = [0.5 - 0.5 * math.cos(math.pi * (i + 0.5) / 4) for i in range(4)]
    column = mask[:, 15]  # the middle column is 1 in x, so this is the y profile
    assert column[:4].tolist() == pytest.approx(profile)
    assert column.flip(0)[:4].tolist() == pytest.approx(profile)
    assert bool((mask[4:-4, 4:-4] == 1.0).all())
    assert torch.allclose(mask, mask[:, 15:16] * mask[10:11, :])  # separable


def test_edge_taper_refuses_a_zero_width() -> None:
    with pytest.raises(ValueError, match="width_px"):
        edge_taper((8, 8), 0)


@pytest.mark.parametrize(("n", "expected"), [(1, 2), (97, 98), (121, 126), (1000, 1000), (1001, 1008)])
def test_fast_fft_size_has_only_small_prime_factors(n: int, expected: int) -> None:
    assert fast_fft_size(n) == expected
