"""Detector model: vendored MTF curves, MTF filtering, Poisson counting and X-ray events."""

import time

import numpy as np
import pytest
import starfile
import torch

from tomoforge.fourier import fftfreq_grid
from tomoforge.simulate.detector import (
    DETECTOR_MTF_FILES,
    MTF_DIR,
    MtfCurve,
    add_xrays,
    detector_mtf,
    mtf_at,
    mtf_filter,
    poisson_counts,
    read_mtf_star,
)


@pytest.mark.parametrize("name", sorted(DETECTOR_MTF_FILES))
def test_vendored_curves_load_and_start_at_one(name):
    curve = detector_mtf(name)
    assert mtf_at(torch.zeros(1), curve).item() == 1.0
    f = curve.frequencies_per_detector_pixel
    assert f[0].item() == 0.0 and f[-1].item() >= 0.49
    assert torch.all(curve.values > 0) and torch.all(curve.values <= 1.0 + 1e-6)
    assert (MTF_DIR / "PROVENANCE.md").is_file()


def test_known_curve_values():
    # Values at physical Nyquist from the tabulated files (K2 dense table ends exactly at 0.5).
    assert mtf_at(torch.tensor([0.5]), detector_mtf("k2_300kv")).item() == pytest.approx(0.388115, abs=1e-6)
    assert mtf_at(torch.tensor([0.25]), detector_mtf("falcon4ec_300kv")).item() == pytest.approx(
        0.5351, abs=1e-3
    )
    with pytest.raises(ValueError, match="unknown detector"):
        detector_mtf("film")


def test_interpolation_matches_numpy_and_fill_value():
    table = starfile.read(MTF_DIR / DETECTOR_MTF_FILES["k3_300kv"])
    f_tab = table["rlnResolutionInversePixel"].to_numpy(float)
    v_tab = table["rlnMtfValue"].to_numpy(float) / table["rlnMtfValue"].to_numpy(float)[0]
    curve = read_mtf_star(MTF_DIR / DETECTOR_MTF_FILES["k3_300kv"])
    q = torch.linspace(0.0, 0.7, 301, dtype=torch.float64)
    np.testing.assert_allclose(mtf_at(q, curve).numpy(), np.interp(q.numpy(), f_tab, v_tab), atol=1e-12)
    beyond = mtf_at(torch.tensor([0.9], dtype=torch.float64), curve, fill_value=0.0)
    assert beyond.item() == 0.0
    with pytest.raises(ValueError, match="start at 0"):
        MtfCurve(torch.tensor([0.1, 0.2]), torch.tensor([1.0, 0.9]))


@pytest.mark.parametrize("ratio", [1.0, 0.5])
def test_filtered_power_spectrum_follows_mtf_squared(ratio):
    curve = detector_mtf("k2_300kv")
    g = torch.Generator().manual_seed(3)
    noise = torch.randn(128, 128, generator=g, dtype=torch.float64) + 10.0
    out = mtf_filter(noise, curve, detector_pixels_per_image_pixel=ratio)
    assert out.mean().item() == pytest.approx(noise.mean().item(), abs=1e-10)
    power_ratio = torch.fft.rfftn(out).abs() ** 2 / torch.fft.rfftn(noise).abs() ** 2
    k_image = torch.linalg.vector_norm(fftfreq_grid((128, 128), dtype=torch.float64), dim=-1)
    table = starfile.read(MTF_DIR / DETECTOR_MTF_FILES["k2_300kv"])
    expected = np.interp(
        k_image.numpy() / ratio,
        table["rlnResolutionInversePixel"].to_numpy(float),
        table["rlnMtfValue"].to_numpy(float),
    )
    np.testing.assert_allclose(power_ratio.numpy(), expected**2, rtol=1e-6)
    # super-resolution frames see the same curve at twice the frequency
    if ratio == 0.5:
        assert power_ratio[0, 32].item() == pytest.approx(0.388115**2, rel=1e-5)


def test_poisson_counts_mean_and_dispersion():
    g = torch.Generator().manual_seed(4)
    expected = torch.full((256, 256), 2.5)
    counts = poisson_counts(expected, generator=g)
    assert counts.dtype == torch.int32 and counts.shape == (256, 256)
    values = counts.double()
    n = values.numel()
    assert abs(values.mean().item() - 2.5) < 3 * (2.5 / n) ** 0.5
    assert values.var().item() / values.mean().item() == pytest.approx(1.0, abs=0.05)
    # a spatially varying expectation is followed pixel by pixel
    ramp = torch.linspace(0.5, 4.0, 256).expand(256, 256)
    counts = poisson_counts(ramp, generator=g).double()
    assert counts[:, :64].mean() < counts[:, -64:].mean()
    assert counts.mean().item() == pytest.approx(ramp.mean().item(), abs=3 * (ramp.mean().item() / n) ** 0.5)


def test_poisson_counts_are_deterministic_and_checked():
    expected = torch.full((4, 32, 32), 1.2)
    a = poisson_counts(expected, generator=torch.Generator().manual_seed(5), dtype=torch.uint16)
    b = poisson_counts(expected, generator=torch.Generator().manual_seed(5), dtype=torch.uint16)
    c = poisson_counts(expected, generator=torch.Generator().manual_seed(6), dtype=torch.uint16)
    assert a.dtype == torch.uint16
    assert torch.equal(a.int(), b.int()) and not torch.equal(a.int(), c.int())
    with pytest.raises(ValueError, match="non-negative"):
        poisson_counts(torch.tensor([-1.0]))
    with pytest.raises(OverflowError):
        poisson_counts(torch.tensor([1000.0]), dtype=torch.uint8)
    with pytest.raises(ValueError, match="integer dtype"):
        poisson_counts(expected, dtype=torch.float32)


def test_poisson_counts_are_fast():
    expected = torch.full((8, 1024, 1024), 1.5)
    g = torch.Generator().manual_seed(7)
    start = time.perf_counter()
    poisson_counts(expected, generator=g)
    assert time.perf_counter() - start < 1.0


def test_xray_truth_marks_bright_pixels_and_blobs():
    g = torch.Generator().manual_seed(8)
    frames = poisson_counts(torch.full((2, 8, 64, 64), 1.0), generator=g)
    out, events = add_xrays(
        frames,
        rate_per_frame=2.0,
        generator=g,
        hot_value_range=(100.0, 200.0),
        blob_radius_px_range=(1.5, 3.0),
    )
    assert out.dtype == frames.dtype and out.shape == frames.shape
    assert not torch.equal(out, frames) and torch.equal(frames, frames.clone())  # input untouched
    assert 16 <= len(events) <= 60  # 16 frames at 2 per frame
    assert any(e.radius_px > 0 for e in events) and any(e.radius_px == 0 for e in events)
    flat_in, flat_out = frames.reshape(-1, 64, 64), out.reshape(-1, 64, 64)
    added = (flat_out - flat_in).double()
    expected_added = torch.zeros_like(added)
    yy, xx = torch.meshgrid(torch.arange(64), torch.arange(64), indexing="ij")
    for e in events:
        assert 100.0 <= e.value < 200.0 and e.value == round(e.value)
        assert flat_out[e.frame_index, e.y_px, e.x_px] >= 100
        inside = (yy - e.y_px) ** 2 + (xx - e.x_px) ** 2 <= e.radius_px**2
        expected_added[e.frame_index][inside] += e.value
    # everything added is explained by the truth, and nothing else changed
    assert torch.equal(added, expected_added)
    # frames without events are unchanged
    hit = {e.frame_index for e in events}
    for f in set(range(16)) - hit:
        assert torch.equal(flat_out[f], flat_in[f])


def test_xrays_are_deterministic_for_a_seed():
    frames = torch.zeros(5, 32, 32)
    a, ea = add_xrays(frames, rate_per_frame=1.0, generator=torch.Generator().manual_seed(9))
    b, eb = add_xrays(frames, rate_per_frame=1.0, generator=torch.Generator().manual_seed(9))
    assert torch.equal(a, b) and ea == eb
    none, no_events = add_xrays(frames, rate_per_frame=0.0, generator=torch.Generator().manual_seed(9))
    assert no_events == [] and torch.equal(none, frames)
