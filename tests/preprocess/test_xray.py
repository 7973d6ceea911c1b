"""X-ray eraser (IMOD ccderaser semantics): detection and polynomial border-fit replacement against known truth."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from tomoforge.preprocess import erase_xrays, find_xrays
from tomoforge.simulate.detector import add_xrays

COUNTS = 20.0  # mean counts per pixel of the summed movie (noise SD ≈ 4.5)


def _specimen(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Expected counts ``(n, n)`` of a smooth specimen with dark gold-bead blobs, and the bead-core mask."""
    yy, xx = torch.meshgrid(
        torch.arange(n, dtype=torch.float64), torch.arange(n, dtype=torch.float64), indexing="ij"
    )
    smooth = 1.0 + 0.15 * torch.sin(xx / 37.0) * torch.cos(yy / 23.0) + 0.05 * (xx - yy) / n
    beads = torch.zeros_like(smooth)
    for by, bx in torch.randint(12, n - 12, (25, 2), generator=generator).tolist():
        beads += 0.7 * torch.exp(-((yy - by) ** 2 + (xx - bx) ** 2) / (2 * 3.0**2))
    return COUNTS * smooth * (1.0 - beads.clamp(max=0.9)), beads > 0.2


@pytest.fixture(scope="module")
def scene() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    n = 512
    expected, bead_core = _specimen(n, g)
    clean = torch.poisson(expected, generator=g).float()
    dirty, events = add_xrays(clean[None], rate_per_frame=120, generator=g)
    centres = torch.tensor([[e.y_px, e.x_px] for e in events])
    return {
        "expected": expected,
        "bead_core": bead_core,
        "clean": clean,
        "dirty": dirty[0],
        "truth": dirty[0] != clean,
        "centres": centres,
    }


def test_injected_xrays_removed_and_nothing_else(scene: dict[str, torch.Tensor]) -> None:
    dirty, truth, expected = scene["dirty"], scene["truth"], scene["expected"]
    mask, objects = find_xrays(dirty, edge_exclusion_px=0)
    out = erase_xrays(dirty, mask)
    removed = (mask & truth).sum() / truth.sum()
    false_rate = (mask & ~truth).sum() / (~truth).sum()
    assert removed >= 0.99, f"removed {removed:.4f} of X-ray pixels"
    assert false_rate <= 1e-4, f"{false_rate:.2e} of other pixels changed"
    # everything outside the mask is bit-identical; no injected pixel keeps an X-ray-sized excess
    assert torch.equal(out[~mask], dirty[~mask])
    z = (out - expected.float()) / expected.float().sqrt()
    assert z[truth].max() < 6.0
    # replaced values within the local noise: unbiased, scatter below the Poisson SD of one pixel
    z_rep = z[mask & truth].double()
    assert z_rep.mean().abs() < 0.2
    assert z_rep.pow(2).mean().sqrt() < 1.0
    # one object per separate event (events may merge or overlap), all small
    assert 0.9 * len(scene["centres"]) <= len(objects) <= len(scene["centres"])
    assert max(o.radius_px for o in objects) <= 8.0


def test_edge_exclusion_band_is_skipped(scene: dict[str, torch.Tensor]) -> None:
    dirty, truth = scene["dirty"], scene["truth"]
    edge = 4
    mask, _ = find_xrays(dirty, edge_exclusion_px=edge)
    n = dirty.shape[-1]
    c = scene["centres"]
    interior = ((c >= edge) & (c < n - edge)).all(dim=1)
    # every interior event's centre pixel is erased; events centred in the band are not searched
    yi, xi = c[interior].long().unbind(1)
    assert mask[yi, xi].float().mean() >= 0.99
    band = torch.ones_like(mask)
    band[edge:-edge, edge:-edge] = False
    seeds_in_band = mask & band & truth
    # patches may extend into the band only from an interior peak
    assert seeds_in_band.sum() <= (truth & band).sum()


def test_gold_beads_untouched(scene: dict[str, torch.Tensor]) -> None:
    dirty, truth, bead_core = scene["dirty"], scene["truth"], scene["bead_core"]
    mask, _ = find_xrays(dirty)
    out = erase_xrays(dirty, mask)
    near_xray = torch.nn.functional.max_pool2d(truth[None, None].float(), 15, stride=1, padding=7)[0, 0] > 0
    keep = bead_core & ~near_xray
    assert keep.sum() > 500
    assert torch.equal(out[keep], dirty[keep])


def test_clean_images_unchanged(scene: dict[str, torch.Tensor]) -> None:
    expected = scene["expected"].float()
    mask, objects = find_xrays(expected)  # noiseless specimen with beads: nothing to find
    assert not mask.any() and objects == []
    assert torch.equal(erase_xrays(expected, mask), expected)
    mask, _ = find_xrays(scene["clean"])  # Poisson noise alone: (almost) nothing
    assert mask.float().mean() <= 1e-5


def test_edges_and_corners() -> None:
    g = torch.Generator().manual_seed(3)
    image = torch.poisson(torch.full((64, 80), COUNTS), generator=g)
    hot = image.clone()
    hot[0, 0] += 300.0  # corner pixel
    hot[63, 40] += 200.0  # bottom edge
    hot[30:33, 78:80] += 150.0  # blob cut by the right edge
    truth = hot != image
    mask, objects = find_xrays(hot, edge_exclusion_px=0)
    assert torch.equal(mask, truth)
    assert len(objects) == 3
    out = erase_xrays(hot, mask)
    assert torch.isfinite(out).all()
    assert ((out[truth] - COUNTS).abs() < 4 * math.sqrt(COUNTS)).all()
    assert torch.equal(out[~truth], hot[~truth])
    # the default edge band leaves them alone
    mask4, objects4 = find_xrays(hot)
    assert not mask4.any() and objects4 == []


def test_giant_peak_sharp_blob_found_smooth_bump_kept() -> None:
    g = torch.Generator().manual_seed(5)
    n = 96
    yy, xx = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    image = torch.poisson(torch.full((n, n), COUNTS), generator=g)
    giant = ((yy - 30) ** 2 + (xx - 30) ** 2) <= 5.5**2  # larger than max_radius_px: fails the normal test
    smooth = 40.0 * torch.exp(-((yy - 65.0) ** 2 + (xx - 65.0) ** 2) / (2 * 5.0**2))
    test = image + 400.0 * giant + smooth
    mask, objects = find_xrays(test)
    assert mask[giant].all()
    assert not mask[(yy - 65) ** 2 + (xx - 65) ** 2 <= 100].any()
    assert len(objects) == 1 and objects[0].n_pixels >= giant.sum()
    assert abs(objects[0].y_px - 30) < 0.5 and abs(objects[0].x_px - 30) < 0.5
    # the big-difference criterion is what accepts it
    mask_strict, _ = find_xrays(test, big_difference_criterion_sd=1e6)
    assert not mask_strict[30, 30]


def test_batched_matches_single_and_indices(scene: dict[str, torch.Tensor]) -> None:
    dirty = scene["dirty"][:128, :128]
    stack = torch.stack([dirty, dirty.flip(-1), scene["clean"][:128, :128]]).reshape(3, 1, 128, 128)
    mask, objects = find_xrays(stack)
    assert mask.shape == stack.shape
    for i in range(3):
        single, single_objects = find_xrays(stack[i, 0])
        assert torch.equal(mask[i, 0], single)
        assert [(o.y_px, o.x_px) for o in objects if o.image_index == (i, 0)] == [
            (o.y_px, o.x_px) for o in single_objects
        ]
    out = erase_xrays(stack, mask)
    for i in range(3):
        assert torch.allclose(out[i, 0], erase_xrays(stack[i, 0], mask[i, 0]))


def test_polynomial_fit_is_exact_for_a_quadratic_and_order_zero_is_ring_mean() -> None:
    yy, xx = torch.meshgrid(torch.arange(40.0), torch.arange(50.0), indexing="ij")
    quad = (5.0 + 0.3 * xx - 0.2 * yy + 0.01 * xx**2 - 0.02 * xx * yy + 0.015 * yy**2).double()
    mask = torch.zeros(40, 50, dtype=torch.bool)
    mask[10:13, 20:22] = True
    mask[30, 45] = True
    spoiled = quad.clone()
    spoiled[mask] = 1e4
    assert torch.allclose(erase_xrays(spoiled, mask, polynomial_order=2), quad, atol=1e-8)
    flat = erase_xrays(spoiled, mask, border_px=1, polynomial_order=0)
    ring = torch.zeros_like(mask)
    ring[29:32, 44:47] = True
    ring[30, 45] = False
    assert torch.isclose(flat[30, 45], quad[ring].mean())
    # integer images stay integer and are rounded
    ints = spoiled.round().to(torch.int32)
    out = erase_xrays(ints, mask)
    assert out.dtype == torch.int32 and (out[mask] - quad[mask]).abs().max() <= 1


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="2 dimensions"):
        find_xrays(torch.zeros(5))
    with pytest.raises(ValueError, match="shape"):
        erase_xrays(torch.zeros(4, 4), torch.zeros(4, 5, dtype=torch.bool))


@pytest.mark.slow
def test_tiny_preset_movie_sums(tmp_path: Path) -> None:
    import csv

    import mrcfile
    import numpy as np

    from tomoforge.simulate import generate_dataset, preset_config

    generate_dataset(preset_config("tiny"), tmp_path)
    events = list(csv.DictReader((tmp_path / "truth" / "xrays" / "TS_01.csv").open()))
    n_bright = n_other_changed = n_pixels = 0
    for path in sorted((tmp_path / "frames").glob("TS_01_*.mrc")):
        order = int(path.name.split("_")[2])  # files are numbered in acquisition order
        movie = torch.from_numpy(mrcfile.read(path).astype(np.float32))
        total = movie.sum(0)
        mask, _ = find_xrays(total)
        noise_sd = float(total.mean()) ** 0.5
        hits = torch.zeros_like(mask)
        for e in (e for e in events if int(e["acquisition_order"]) == order):
            y, x, r = int(e["y_px"]), int(e["x_px"]), float(e["radius_px"])
            yy, xx = torch.meshgrid(torch.arange(total.shape[0]), torch.arange(total.shape[1]), indexing="ij")
            hits |= (yy - y) ** 2 + (xx - x) ** 2 <= r * r
            if float(e["value_counts"]) >= 6 * noise_sd:  # bright enough to stand out in the sum of frames
                n_bright += 1
                assert mask[y, x], f"missed {e}"
        n_other_changed += int((mask & ~hits).sum())
        n_pixels += int((~hits).sum())
    assert n_bright >= 5
    assert n_other_changed / n_pixels <= 1e-4
