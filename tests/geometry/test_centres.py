"""Centre conventions and the IMOD .xf shift conversion (CONVENTIONS.md §2, §6)."""

import numpy as np
import pytest
import torch

from tomoforge.geometry import (
    centre_index,
    imod_centre,
    imod_to_tomoforge_xf_shift_px,
    relion_centre,
    tomoforge_to_imod_xf_shift_px,
)


@pytest.mark.parametrize("n,tf,imod", [(64, 32, 31.5), (65, 32, 32.0), (1, 0, 0.0), (3838, 1919, 1918.5)])
def test_centres(n, tf, imod):
    assert centre_index(n) == tf
    assert relion_centre(n) == tf
    assert imod_centre(n) == imod


def test_centre_is_where_fftshift_puts_dc():
    for n in (6, 7):
        assert int(np.argmax(np.fft.fftshift(np.fft.fftfreq(n) == 0))) == centre_index(n)


@pytest.mark.parametrize(
    "in_size,out_size", [((64, 48), (64, 48)), ((65, 47), (47, 65)), ((3710, 3838), (3838, 3710))]
)
def test_imod_xf_maps_the_same_pixel_in_both_centre_conventions(in_size, out_size):
    rng = np.random.default_rng(1)
    ang = np.radians(85.3)
    a = np.array([[np.cos(ang), np.sin(ang)], [-np.sin(ang), np.cos(ang)]]) * 1.01
    d = rng.normal(0, 5, 2)
    pix = rng.uniform(0, 40, size=(20, 2))  # raw 0-based pixel indices (x, y)
    c_in_imod = np.array([imod_centre(n) for n in in_size])
    c_out_imod = np.array([imod_centre(n) for n in out_size])
    out_imod = (pix - c_in_imod) @ a.T + d + c_out_imod  # IMOD newstack/xfmodel formula
    d_tf = imod_to_tomoforge_xf_shift_px(torch.tensor(a), torch.tensor(d), in_size, out_size).numpy()
    c_in = np.array([centre_index(n) for n in in_size])
    c_out = np.array([centre_index(n) for n in out_size])
    out_tf = (pix - c_in) @ a.T + d_tf + c_out
    np.testing.assert_allclose(out_tf, out_imod, atol=1e-10)
    back = tomoforge_to_imod_xf_shift_px(torch.tensor(a), torch.tensor(d_tf), in_size, out_size).numpy()
    np.testing.assert_allclose(back, d, atol=1e-12)


def test_odd_sizes_need_no_correction():
    a = torch.eye(2, dtype=torch.float64)
    d = torch.tensor([1.5, -2.0], dtype=torch.float64)
    np.testing.assert_allclose(imod_to_tomoforge_xf_shift_px(a, d, (65, 47)).numpy(), d.numpy())
