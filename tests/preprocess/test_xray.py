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
    mask, objects = find_xrays(expected, include_dark=False)  # noiseless specimen: no bright outlier at all
    assert not mask.any() and objects == []
    assert torch.equal(erase_xrays(expected, mask), expected)
    # with both polarities (ccderaser's rule) the dark bead cores of a noiseless image are outliers by any SD
    # measure, as ccderaser's man page warns for low-noise data; all that is found is dark and on a bead
    mask, objects = find_xrays(expected)
    near_bead = torch.nn.functional.max_pool2d(scene["bead_core"][None, None].float(), 17, 1, 8)[0, 0] > 0
    assert objects and all(o.polarity == -1 for o in objects)
    assert not (mask & ~near_bead).any()
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


# --------------------------------------------------------------------------------------------------------------
# dark (negative) outliers: ccderaser finds peaks "a criterion # of SDs above or below background"

DARK_COUNTS = 400.0  # mean counts where dead pixels stand out: 0 counts is 20 SD below the mean


@pytest.fixture(scope="module")
def dark_scene() -> dict[str, torch.Tensor]:
    """Poisson image of a smooth specimen with gold-bead-like dark discs (8 px diameter, 3 SD deep), single dark
    pixels at 15 SD below the local mean, 2×2 dead clusters at 0 and bright X-rays, each in its own grid cell."""
    g = torch.Generator().manual_seed(11)
    n, cell = 400, 20
    yy, xx = torch.meshgrid(
        torch.arange(n, dtype=torch.float64), torch.arange(n, dtype=torch.float64), indexing="ij"
    )
    mean = DARK_COUNTS * (1.0 + 0.2 * torch.sin(xx / 41.0) * torch.cos(yy / 29.0) + 0.1 * (xx - yy) / n)
    m = n // cell - 2  # interior cells per axis
    kind = torch.randperm(m * m, generator=g).tolist()
    jitter = torch.randint(-3, 4, (m * m, 2), generator=g).tolist()
    centres = [
        ((k // m + 1) * cell + cell // 2 + jy, (k % m + 1) * cell + cell // 2 + jx)
        for k, (jy, jx) in enumerate(jitter)
    ]
    discs = torch.zeros(n, n, dtype=torch.bool)
    for (y, x), c in zip(centres, kind, strict=True):
        if c < 30:
            discs |= (yy - y) ** 2 + (xx - x) ** 2 <= 4.0**2
    expected = mean - 3.0 * mean.sqrt() * discs
    image = torch.poisson(expected, generator=g)
    dark = torch.zeros_like(discs)
    bright = torch.zeros_like(discs)
    singles = []
    for (y, x), c in zip(centres, kind, strict=True):
        if 30 <= c < 180:
            image[y, x] = expected[y, x] - 15.0 * expected[y, x].sqrt()
            dark[y, x] = True
            singles.append((y, x))
        elif 180 <= c < 240:
            image[y : y + 2, x : x + 2] = 0.0
            dark[y : y + 2, x : x + 2] = True
        elif 240 <= c < 280:
            hit = (yy - y) ** 2 + (xx - x) ** 2 <= (1.5 if c % 2 else 0.0)
            image[hit] += float(torch.empty(()).uniform_(10.0, 50.0, generator=g)) * DARK_COUNTS**0.5
            bright |= hit
    return {
        "image": image.float(),
        "expected": expected,
        "dark": dark,
        "bright": bright,
        "discs": discs,
        "singles": torch.tensor(singles, dtype=torch.float64),
    }


def test_dark_pixels_removed_beads_kept(dark_scene: dict[str, torch.Tensor]) -> None:
    image, dark, bright, discs = (dark_scene[k] for k in ("image", "dark", "bright", "discs"))
    assert int(dark.sum()) == 150 + 4 * 60 and discs.sum() > 1000
    mask, objects = find_xrays(image)
    out = erase_xrays(image, mask)
    other = ~dark & ~bright
    assert (mask & dark).sum() / dark.sum() >= 0.99
    assert (mask & bright).sum() / bright.sum() >= 0.99
    assert (mask & other).sum() / other.sum() <= 1e-4
    # the dark discs (gold-bead-like, 3 SD deep, 8 px across) are a feature, not an outlier
    assert not (mask & discs).any() and torch.equal(out[discs], image[discs])
    # replaced dark pixels take the local level back: unbiased, within the noise of one pixel
    expected = dark_scene["expected"]
    z = (out.double() - expected) / expected.sqrt()
    assert z[dark].mean().abs() < 0.2 and z[dark].pow(2).mean().sqrt() < 1.0 and z[dark].abs().max() < 4.0
    # one dark object per injected single pixel or cluster, marked dark; the X-rays bright
    assert sum(o.polarity == -1 for o in objects) == 150 + 60
    assert sum(o.polarity == 1 for o in objects) == 40
    found = torch.tensor([[o.y_px, o.x_px] for o in objects if o.polarity == -1], dtype=torch.float64)
    assert torch.cdist(dark_scene["singles"], found).min(dim=1).values.max() < 1.0


def test_bright_only_search_leaves_dark_pixels(dark_scene: dict[str, torch.Tensor]) -> None:
    image, dark = dark_scene["image"], dark_scene["dark"]
    both, _ = find_xrays(image)
    bright_only, objects = find_xrays(image, include_dark=False)
    assert not (bright_only & dark).any() and all(o.polarity == 1 for o in objects)
    near_dark = torch.nn.functional.max_pool2d(dark[None, None].float(), 3, 1, 1)[0, 0] > 0
    assert torch.equal(both & ~near_dark, bright_only & ~near_dark)


def test_bright_xrays_found_as_before(scene: dict[str, torch.Tensor]) -> None:
    # an image with X-rays and no dead pixels: searching both polarities changes nothing
    mask, objects = find_xrays(scene["dirty"])
    bright_only, bright_objects = find_xrays(scene["dirty"], include_dark=False)
    assert torch.equal(mask, bright_only) and objects == bright_objects
    assert all(o.polarity == 1 for o in objects)


def test_dark_pixels_found_by_the_difference_test() -> None:
    g = torch.Generator().manual_seed(13)
    n, sd = 256, 10.0
    image = 100.0 + sd * torch.randn(n, n, generator=g)
    truth = torch.zeros(n, n, dtype=torch.bool)
    truth[12 : n - 12 : 16, 12 : n - 12 : 16] = True
    image[truth] -= 10.0 * sd
    diff_only = {"peak_criterion_sd": 1e6, "giant_criterion_sd": 1e6}
    mask, objects = find_xrays(image, **diff_only)
    assert (mask & truth).sum() / truth.sum() >= 0.99 and not (mask & ~truth).any()
    assert all(o.polarity == -1 and o.n_pixels == 1 for o in objects)
    mask, _ = find_xrays(image, include_dark=False, **diff_only)
    assert not mask.any()


def test_neighbours_of_strong_hot_pixels_are_not_dark() -> None:
    # next to a +300 SD hot pixel every neighbour is ~40 SD below its own neighbours' mean; the differences are
    # taken after the peaks are replaced (as ccderaser does), so none of them is taken for a dead pixel
    g = torch.Generator().manual_seed(17)
    n = 128
    image = 100.0 + 10.0 * torch.randn(n, n, generator=g)
    truth = torch.zeros(n, n, dtype=torch.bool)
    truth[10 : n - 10 : 20, 10 : n - 10 : 20] = True
    truth[20 : n - 10 : 20, 20 : n - 10 : 20] = True
    truth[21 : n - 10 : 20, 20 : n - 10 : 20] = True  # two-pixel hits
    image[truth] += 3000.0
    mask, objects = find_xrays(image)
    assert torch.equal(mask, truth) and all(o.polarity == 1 for o in objects)


def test_dead_pixels_at_edges_and_corners() -> None:
    g = torch.Generator().manual_seed(19)
    image = torch.poisson(torch.full((64, 80), DARK_COUNTS), generator=g)
    dead = image.clone()
    dead[0, 0] = 0.0  # corner
    dead[63, 40] = 0.0  # bottom edge
    dead[30:32, 78:80] = 0.0  # 2×2 cluster at the right edge
    truth = dead != image
    mask, objects = find_xrays(dead, edge_exclusion_px=0)
    assert torch.equal(mask, truth)
    assert len(objects) == 3 and all(o.polarity == -1 for o in objects)
    out = erase_xrays(dead, mask)
    assert ((out[truth] - DARK_COUNTS).abs() < 4 * DARK_COUNTS**0.5).all()
    assert torch.equal(out[~truth], dead[~truth])
    mask4, _ = find_xrays(dead)  # the default edge band leaves them alone
    assert not mask4.any()


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
