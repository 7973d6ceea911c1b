"""Applying IMOD-meaning transforms to images (newstack -xform): positions, rotation sense, inverse, binning."""

from __future__ import annotations

import pytest
import torch

from tomoforge.alignment.transform import transform_images
from tomoforge.geometry import rotation_2d


def _blob(shape_yx: tuple[int, int], centre_xy: tuple[float, float], sigma: float = 2.5) -> torch.Tensor:
    h, w = shape_yx
    yy, xx = torch.meshgrid(
        torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij"
    )
    return torch.exp(-((xx - centre_xy[0]) ** 2 + (yy - centre_xy[1]) ** 2) / (2 * sigma**2))


def _centroid_xy(image: torch.Tensor) -> tuple[float, float]:
    h, w = image.shape
    yy, xx = torch.meshgrid(
        torch.arange(h, dtype=image.dtype), torch.arange(w, dtype=image.dtype), indexing="ij"
    )
    total = image.sum()
    return float((image * xx).sum() / total), float((image * yy).sum() / total)


def _xf(matrix: torch.Tensor, shift_xy: tuple[float, float]) -> torch.Tensor:
    return torch.cat([matrix, torch.tensor(shift_xy, dtype=torch.float64)[:, None]], dim=1)


def _smooth_image(shape_yx: tuple[int, int], seed: int = 0) -> torch.Tensor:
    """Random image low-passed to a quarter of Nyquist (well sampled for interpolation)."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(shape_yx, generator=g, dtype=torch.float64)
    fy = torch.fft.fftfreq(shape_yx[0], dtype=torch.float64)[:, None]
    fx = torch.fft.rfftfreq(shape_yx[1], dtype=torch.float64)[None, :]
    spectrum = torch.fft.rfftn(noise) * torch.exp(-(fx**2 + fy**2) / (2 * 0.06**2))
    return torch.fft.irfftn(spectrum, s=shape_yx)


IDENTITY = torch.eye(2, dtype=torch.float64)


@pytest.mark.parametrize("shape_yx", [(96, 90), (65, 71)])
def test_pure_shift_moves_a_blob_by_d(shape_yx: tuple[int, int]) -> None:
    h, w = shape_yx
    start = (w // 2 + 10.3, h // 2 - 4.2)
    d = (3.37, -2.61)
    out = transform_images(_blob(shape_yx, start), _xf(IDENTITY, d), fill=0.0)
    x, y = _centroid_xy(out)
    assert x == pytest.approx(start[0] + d[0], abs=0.05)
    assert y == pytest.approx(start[1] + d[1], abs=0.05)


def test_rotation_turns_counter_clockwise_about_the_centre_index() -> None:
    h, w = 90, 96
    cx, cy = w // 2, h // 2
    quarter = _xf(rotation_2d(torch.tensor(90.0, dtype=torch.float64)), (0.0, 0.0))
    # A point on +x (10 px right of the centre) goes to +y (10 rows up, y up): counter-clockwise.
    out = transform_images(_blob((h, w), (cx + 10.0, cy)), quarter, fill=0.0)
    assert _centroid_xy(out) == pytest.approx((cx, cy + 10.0), abs=0.01)
    # The centre N // 2 is the fixed point of any rotation.
    turn = _xf(rotation_2d(torch.tensor(37.0, dtype=torch.float64)), (0.0, 0.0))
    out = transform_images(_blob((h, w), (cx, cy)), turn, fill=0.0)
    assert _centroid_xy(out) == pytest.approx((cx, cy), abs=0.01)


def test_a_transform_then_its_inverse_restores_the_image() -> None:
    image = _smooth_image((96, 96))
    a = 1.05 * rotation_2d(torch.tensor(30.0, dtype=torch.float64))
    d = torch.tensor([4.3, -2.7], dtype=torch.float64)
    forward = _xf(a, (float(d[0]), float(d[1])))
    a_inv = torch.linalg.inv(a)
    back = -(a_inv @ d)
    inverse = _xf(a_inv, (float(back[0]), float(back[1])))
    restored = transform_images(transform_images(image, forward), inverse)
    inner = (slice(24, 72), slice(24, 72))  # away from the corners that left the frame
    error = (restored - image)[inner].square().mean().sqrt() / image[inner].square().mean().sqrt()
    assert float(error) < 0.02


def test_composition_is_the_matrix_product_later_at_earlier() -> None:
    image = _smooth_image((96, 96), seed=1)
    first = _xf(rotation_2d(torch.tensor(20.0, dtype=torch.float64)), (3.0, 1.5))
    second = _xf(torch.tensor([[1.1, 0.05], [0.0, 0.95]], dtype=torch.float64), (-2.0, 4.0))
    homogeneous = torch.eye(3, dtype=torch.float64).repeat(2, 1, 1)
    homogeneous[0, :2] = first
    homogeneous[1, :2] = second
    combined = (homogeneous[1] @ homogeneous[0])[:2]
    twice = transform_images(transform_images(image, first), second)
    once = transform_images(image, combined)
    inner = (slice(24, 72), slice(24, 72))
    assert float((twice - once)[inner].abs().max()) < 0.02 * float(image.abs().max())


@pytest.mark.parametrize(("shape_yx", "binning"), [((96, 90), 2), ((130, 128), 2), ((96, 90), 3)])
def test_binned_output_keeps_centres_and_unbinned_shifts(shape_yx: tuple[int, int], binning: int) -> None:
    h, w = shape_yx
    offset = (10.3, -4.2)
    d = (3.37, -2.61)
    image = _blob(shape_yx, (w // 2 + offset[0], h // 2 + offset[1]), sigma=4.0)
    out = transform_images(image, _xf(IDENTITY, d), binning=binning, fill=0.0)
    assert tuple(out.shape) == (h // binning, w // binning)
    x, y = _centroid_xy(out)
    # Aligned centre N // 2 lands on output index (N // b) // 2; positions scale by 1 / b.
    assert x == pytest.approx(out.shape[1] // 2 + (offset[0] + d[0]) / binning, abs=0.02)
    assert y == pytest.approx(out.shape[0] // 2 + (offset[1] + d[1]) / binning, abs=0.02)


def test_output_shape_can_swap_x_and_y_about_the_aligned_centre() -> None:
    h, w = 64, 96
    image = _blob((h, w), (w // 2 + 20.0, h // 2 + 5.0))
    quarter = _xf(rotation_2d(torch.tensor(90.0, dtype=torch.float64)), (0.0, 0.0))
    out = transform_images(image, quarter, output_shape_yx=(w, h), fill=0.0)
    assert tuple(out.shape) == (w, h)
    assert _centroid_xy(out) == pytest.approx((h // 2 - 5.0, w // 2 + 20.0), abs=0.01)


def test_batches_broadcast_and_outside_pixels_get_the_mean() -> None:
    images = torch.stack([_smooth_image((48, 40), seed=s) + 5.0 for s in range(3)]).to(torch.float32)
    xf = torch.stack([_xf(IDENTITY, (float(s), 0.0)) for s in (0, 30, -30)])
    out = transform_images(images.expand(2, 3, 48, 40), xf)
    assert out.shape == (2, 3, 48, 40)
    assert out.dtype == torch.float32
    assert torch.allclose(out[0, 0], images[0], atol=1e-5)
    assert torch.allclose(out[1], out[0])
    single = transform_images(images[1], xf[1])
    assert torch.allclose(out[0, 1], single)
    # Shifted 30 px to the right: the first columns come from outside and hold the image mean.
    assert torch.allclose(out[0, 1, :, :25], images[1].mean().expand(48, 25), atol=1e-5)


def test_bad_input_is_refused() -> None:
    image = torch.zeros(32, 32)
    with pytest.raises(ValueError, match="shape"):
        transform_images(image, torch.eye(3))
    with pytest.raises(ValueError, match="singular"):
        transform_images(image, torch.zeros(2, 3))
    with pytest.raises(ValueError, match="binning"):
        transform_images(image, _xf(IDENTITY, (0.0, 0.0)), binning=0)
    with pytest.raises(ValueError, match="broadcast"):
        transform_images(torch.zeros(3, 32, 32), torch.stack([_xf(IDENTITY, (0.0, 0.0))] * 2))
