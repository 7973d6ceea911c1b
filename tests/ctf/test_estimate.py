"""Physics of the tilt-aware CTF estimator on seeded synthetic images of known CTF (CONVENTIONS.md §1, §7–§9).

The images are made independently of the estimator: a white-noise object (a thin layer of "ice") is filtered by
:func:`tomoforge.ctf.ctf_2d` (CTFFIND sign, 300 kV, Cs 2.7 mm, A 0.1, 2 Å pixels, envelope B = 100 Å²) and white
noise is added at a per-pixel signal-to-noise variance ratio of 0.3 (a low-dose image: the Thon rings are invisible
in single pixels and only appear in the averaged tile spectra). A tilted view is built from the projection model
written out by hand (``depth = −x_aligned · tan θ`` of a flat specimen, checked against
:func:`tomoforge.geometry.plane_depth_px`): every pixel has its own defocus ``Δf_view − h·depth·pixel``
(CONVENTIONS.md §8), realised as a sum of images filtered at defocus levels 40 Å apart, blended with linear (hat)
weights in the pixel's defocus, so there are no seams in the spectrum.

Measured over 8–16 images each (this file asserts a few of them with margins): untilted mean defocus within 26 Å,
``u − v`` within 11 %, astigmatism angle within 3.5°; phase shift within 1.3°; tilted (50°) mean defocus of the view
within 28 Å and an apparent tilt from the fitted gradient within 3.6°.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import pytest
import torch

from tomoforge.ctf import CtfFit, ctf_2d, estimate_ctf, radial_bins, tile_amplitude_spectra, tile_origins
from tomoforge.ctf.ctf2d import electron_wavelength_angstrom
from tomoforge.geometry import plane_depth_px, projection_matrices

MICROSCOPE = {"voltage_kv": 300.0, "spherical_aberration_mm": 2.7, "amplitude_contrast": 0.1}
PIXEL = 2.0
B_FACTOR = 100.0
SNR = 0.3
WAVELENGTH = float(electron_wavelength_angstrom(300.0))

# Untilted truth: mean defocus 2.56 µm, u − v = 800 Å, u at 30° from +x counter-clockwise.
DEFOCUS_U, DEFOCUS_V, ANGLE_DEG = 26000.0, 25200.0, 30.0
MEAN_DEFOCUS = 0.5 * (DEFOCUS_U + DEFOCUS_V)

# Tilted truth: view defocus 2.5 µm at the tomogram centre (depth 0), u − v = 600 Å at 20°, tilt 50°, the
# tomogram centre projected 100 px right of and 60 px below the image centre, handedness +1.
VIEW_DEFOCUS, TILT_ASTIGMATISM, TILT_ANGLE_DEG = 25000.0, 600.0, 20.0
TILT_DEG = 50.0
SHIFT_XY_PX = (100.0, -60.0)
TILTED_SHAPE = (448, 512)

FIT: dict[str, Any] = {
    "pixel_size_angstrom": PIXEL,
    "tile_size_px": 256,
    "min_resolution_angstrom": 40.0,
    "max_resolution_angstrom": 6.0,
    "defocus_min_angstrom": 15000.0,
    "defocus_max_angstrom": 40000.0,
    "astigmatism_tolerance_angstrom": None,
    **MICROSCOPE,
}


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """One intra-op thread, so timings do not depend on what else runs on the machine's cores."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def fit(image: torch.Tensor, **changes: Any) -> CtfFit:
    return estimate_ctf(image, **{**FIT, **changes})


def mean_defocus(result: CtfFit) -> float:
    return 0.5 * (result.defocus_u_angstrom + result.defocus_v_angstrom)


def angle_difference_deg(a: float, b: float) -> float:
    """``a − b`` modulo 180°, in [−90°, 90°)."""
    return (a - b + 90.0) % 180.0 - 90.0


def frequency_magnitude(shape: tuple[int, int]) -> torch.Tensor:
    """``|k|`` in cycles/Å on the rfft grid of ``shape`` (rows: fftfreq of y, columns: rfftfreq of x)."""
    ky = torch.fft.fftfreq(shape[0], d=PIXEL, dtype=torch.float64)[:, None]
    kx = torch.fft.rfftfreq(shape[1], d=PIXEL, dtype=torch.float64)[None, :]
    return torch.sqrt(ky**2 + kx**2)


def with_noise(signal: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    noise = torch.randn(signal.shape, generator=generator, dtype=torch.float64)
    return (signal + noise * signal.std() / math.sqrt(SNR)).float()


def ctf(
    shape: tuple[int, int], defocus_u: float, defocus_v: float, angle_deg: float, **extra: Any
) -> torch.Tensor:
    return ctf_2d(
        defocus_u_angstrom=defocus_u,
        defocus_v_angstrom=defocus_v,
        astigmatism_angle_deg=angle_deg,
        pixel_size_angstrom=PIXEL,
        shape_yx=shape,
        dtype=torch.float64,
        **MICROSCOPE,
        **extra,
    )


def untilted_image(
    seed: int,
    *,
    size: int = 512,
    defocus_u: float = DEFOCUS_U,
    defocus_v: float = DEFOCUS_V,
    angle_deg: float = ANGLE_DEG,
    phase_shift_deg: float = 0.0,
    rings_end_per_angstrom: float | None = None,
) -> torch.Tensor:
    """White-noise object × CTF (+ noise). Beyond ``rings_end_per_angstrom`` the object is transferred with the
    CTF's RMS ``exp(−B k²/4)/√2`` instead: the power stays smooth, only the Thon rings end there (as when drift or
    partial coherence wash them out)."""
    generator = torch.Generator().manual_seed(seed)
    obj = torch.randn(size, size, generator=generator, dtype=torch.float64)
    transfer = ctf(
        (size, size),
        defocus_u,
        defocus_v,
        angle_deg,
        phase_shift_deg=phase_shift_deg,
        b_factor_angstrom2=B_FACTOR,
    )
    if rings_end_per_angstrom is not None:
        k = frequency_magnitude((size, size))
        smooth = torch.exp(-0.25 * B_FACTOR * k**2) / math.sqrt(2.0)
        transfer = torch.where(k <= rings_end_per_angstrom, transfer, smooth)
    signal = torch.fft.irfft2(torch.fft.rfft2(obj) * transfer, s=(size, size))
    return with_noise(signal, generator)


def mid_plane_depth_px(shape: tuple[int, int], tilt_deg: float, axis_deg: float) -> torch.Tensor:
    """``(h, w)`` depth of the specimen mid-plane under every pixel, from the projection model written out.

    Pixel ``(x, y)`` (from the centre ``N // 2``, rows = y) is the projection of mid-plane point ``(X, Y, 0)`` with
    ``Rz(−α)·(p − s) = (X cos θ, Y)`` (the aligned image), and its depth is ``−X sin θ = −x_aligned · tan θ``.
    """
    h, w = shape
    y = (torch.arange(h, dtype=torch.float64) - h // 2)[:, None]
    x = (torch.arange(w, dtype=torch.float64) - w // 2)[None, :]
    alpha = math.radians(axis_deg)
    x_aligned = math.cos(alpha) * (x - SHIFT_XY_PX[0]) + math.sin(alpha) * (y - SHIFT_XY_PX[1])
    return -x_aligned * math.tan(math.radians(tilt_deg))


def tilted_image(
    seed: int,
    *,
    axis_deg: float,
    tilt_deg: float = TILT_DEG,
    handedness: int = 1,
    step_angstrom: float = 40.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A tilted view of a flat white-noise specimen at the mid-plane; returns ``(image, defocus map in Å)``."""
    shape = TILTED_SHAPE
    generator = torch.Generator().manual_seed(seed)
    obj_spectrum = torch.fft.rfft2(torch.randn(shape, generator=generator, dtype=torch.float64))
    defocus = VIEW_DEFOCUS - handedness * mid_plane_depth_px(shape, tilt_deg, axis_deg) * PIXEL
    lowest = math.floor(float(defocus.min()) / step_angstrom) - 1
    highest = math.ceil(float(defocus.max()) / step_angstrom) + 1
    signal = torch.zeros(shape, dtype=torch.float64)
    for level in range(lowest, highest + 1):
        d = level * step_angstrom
        weight = (1.0 - (defocus - d).abs() / step_angstrom).clamp_min(0.0)
        if float(weight.max()) == 0.0:
            continue
        half = 0.5 * TILT_ASTIGMATISM
        transfer = ctf(shape, d + half, d - half, TILT_ANGLE_DEG, b_factor_angstrom2=B_FACTOR)
        signal += weight * torch.fft.irfft2(obj_spectrum * transfer, s=shape)
    return with_noise(signal, generator), defocus


def rings_spacing_per_angstrom(k: float, defocus: float) -> float:
    """Distance between neighbouring zeros of CTF² at ``k`` (Cs neglected): ``1 / (2 λ Δf k)``."""
    return 1.0 / (2.0 * WAVELENGTH * defocus * k)


# --- untilted images -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_untilted_defocus_astigmatism_and_angle(seed: int) -> None:
    result = fit(untilted_image(seed))
    # 10 seeds: |Δ mean| ≤ 26 Å, |Δ(u − v)| ≤ 85 Å (11 %), |Δ angle| ≤ 3.4°.
    assert mean_defocus(result) == pytest.approx(MEAN_DEFOCUS, abs=50.0)
    astigmatism = result.defocus_u_angstrom - result.defocus_v_angstrom
    assert astigmatism == pytest.approx(DEFOCUS_U - DEFOCUS_V, rel=0.2)
    assert abs(angle_difference_deg(result.astigmatism_angle_deg, ANGLE_DEG)) <= 5.0
    assert -90.0 <= result.astigmatism_angle_deg < 90.0
    assert result.gradient_scale == 1.0 and result.n_groups == 1 and result.n_tiles == 9
    assert result.phase_shift_deg == pytest.approx(0.0, abs=1e-9)
    assert result.spectrum_display.shape == (256, 256)
    # The equiphase profile follows CTF² where the rings are.
    assert float(result.profile_correlation.median()) > 0.5


def test_astigmatism_angle_runs_counter_clockwise_from_x_with_rows_as_y() -> None:
    """u at 30° from +x towards +y (rows): the transposed image (x ↔ y) has it at 60°, the array rotated by
    ``torch.rot90`` (row 0 at the bottom: clockwise by 90°) at −60°; a convention measuring from the rows, or
    clockwise, would give the two transformed images the other's angle."""
    image = untilted_image(4)
    original = fit(image)
    transposed = fit(image.T.contiguous())
    rotated = fit(torch.rot90(image, 1, (0, 1)).contiguous())
    assert abs(angle_difference_deg(original.astigmatism_angle_deg, ANGLE_DEG)) <= 5.0
    assert abs(angle_difference_deg(transposed.astigmatism_angle_deg, 90.0 - ANGLE_DEG)) <= 5.0
    assert abs(angle_difference_deg(rotated.astigmatism_angle_deg, ANGLE_DEG - 90.0)) <= 5.0
    # The same spectra, mirrored or rotated: the fit is the same up to the angle (measured within 0.4° and 3 Å).
    for other, expected in (
        (transposed, 90.0 - original.astigmatism_angle_deg),
        (rotated, original.astigmatism_angle_deg - 90.0),
    ):
        assert abs(angle_difference_deg(other.astigmatism_angle_deg, expected)) <= 1.0
        assert mean_defocus(other) == pytest.approx(mean_defocus(original), abs=10.0)


@pytest.mark.parametrize("seed", [0, 3])
def test_phase_plate_shift_is_recovered(seed: int) -> None:
    image = untilted_image(seed, defocus_u=25400.0, defocus_v=24600.0, phase_shift_deg=90.0)
    result = fit(image, fit_phase_shift=True)
    # 8 seeds: |Δ phase| ≤ 1.3°, |Δ mean defocus| ≤ 42 Å.
    assert result.phase_shift_deg == pytest.approx(90.0, abs=10.0)
    assert mean_defocus(result) == pytest.approx(25000.0, abs=80.0)
    # Given the right phase shift, the plain fit finds the defocus as well (8 seeds: within 20 Å); assuming no
    # phase shift, the rings are matched at a wrong defocus (−10.6 µm off on 7 of 8 seeds) and fit worse (score
    # 0.21–0.29 against 0.52–0.55).
    fixed = fit(image, phase_shift_deg=90.0)
    assert fixed.phase_shift_deg == pytest.approx(90.0)
    assert mean_defocus(fixed) == pytest.approx(25000.0, abs=50.0)
    unaware = fit(image)
    assert unaware.score < result.score - 0.1


def test_fit_resolution_follows_the_end_of_the_rings() -> None:
    clean = fit(untilted_image(5))
    # Rings to the band limit (6 Å; the last ring of a 256-px tile at 2 Å is 6.02 Å).
    assert clean.fit_resolution_angstrom <= 6.2
    resolutions = {}
    for end_angstrom in (14.0, 9.0):
        k_end = 1.0 / end_angstrom
        spacing = rings_spacing_per_angstrom(k_end, MEAN_DEFOCUS)
        result = fit(untilted_image(5, rings_end_per_angstrom=k_end))
        k_fit = 1.0 / result.fit_resolution_angstrom
        # The local correlation spans ±1 ring, so up to a ring (and noise) past the end still looks fitted:
        # measured +0.24 to +2.5 rings past the end over 32 images (ends at 14, 12, 10, 9 Å), median +0.7.
        assert k_end - 0.5 * spacing <= k_fit <= k_end + 3.0 * spacing, (end_angstrom, k_fit)
        # Inside the rings the equiphase profile follows CTF², a ring beyond their end it does not.
        k = result.profile_frequency_per_angstrom.double()
        local = result.profile_correlation.double()
        assert float(local[(k > 0.03) & (k < k_end - spacing)].mean()) > 0.6
        assert float(local[k > k_end + 1.5 * spacing].median()) < 0.4
        resolutions[end_angstrom] = result.fit_resolution_angstrom
    assert resolutions[14.0] > resolutions[9.0] > clean.fit_resolution_angstrom


# --- tilted images -------------------------------------------------------------------------------------------


class TiltedFits:
    """The fits of one tilted image, made once per tilt-axis angle."""

    def __init__(self, axis_deg: float) -> None:
        self.axis_deg = axis_deg
        self.image, self.defocus_map = tilted_image(11, axis_deg=axis_deg)
        self.matrix = projection_matrices(TILT_DEG, axis_deg, torch.tensor(SHIFT_XY_PX))
        centre = (TILTED_SHAPE[0] // 2, TILTED_SHAPE[1] // 2)
        self.centre_defocus = float(self.defocus_map[centre])
        self.right = fit(self.image, projection_matrix=self.matrix, handedness=1)
        self.wrong = fit(self.image, projection_matrix=self.matrix, handedness=-1)
        self.blind = fit(self.image)
        # The gradient is fitted on 128-px tiles: more groups, less defocus spread within a tile (see the test).
        gradient = {"projection_matrix": self.matrix, "fit_gradient": True, "tile_size_px": 128}
        self.right_gradient = fit(self.image, handedness=1, **gradient)
        self.wrong_gradient = fit(self.image, handedness=-1, **gradient)


@pytest.fixture(scope="module", params=[85.0, 0.0], ids=["axis85", "axis0"])
def tilted(request: pytest.FixtureRequest) -> TiltedFits:
    return TiltedFits(request.param)


def test_synthetic_tilted_geometry_matches_the_projection_model() -> None:
    """The hand-written depth of the test images agrees with plane_depth_px, and defocus grows towards +x of the
    aligned image on a positive tilt (CONVENTIONS.md §8)."""
    for axis_deg in (85.0, 0.0, -30.0):
        depth = mid_plane_depth_px(TILTED_SHAPE, TILT_DEG, axis_deg)
        matrix = projection_matrices(TILT_DEG, axis_deg, torch.tensor(SHIFT_XY_PX))
        rows = torch.tensor([0, 17, 224, 447])
        columns = torch.tensor([0, 300, 256, 511])
        xy = torch.stack([columns - TILTED_SHAPE[1] // 2, rows - TILTED_SHAPE[0] // 2], dim=-1).double()
        torch.testing.assert_close(plane_depth_px(xy, matrix).double(), depth[rows, columns])
    # Axis along y (α = 0): the defocus rises along +x by tan θ · pixel per column and is the view's at the shift.
    _, defocus = tilted_image(0, axis_deg=0.0)
    step = float(defocus[0, 1] - defocus[0, 0])
    assert step == pytest.approx(math.tan(math.radians(TILT_DEG)) * PIXEL)
    at_shift = (TILTED_SHAPE[0] // 2 + int(SHIFT_XY_PX[1]), TILTED_SHAPE[1] // 2 + int(SHIFT_XY_PX[0]))
    assert float(defocus[at_shift]) == pytest.approx(VIEW_DEFOCUS)


def expected_groups(axis_deg: float, tile: int, handedness: int = 1, width: float = 100.0) -> int:
    """Tile groups the estimator should form: tiles whose geometric defocus offsets round to the same 100 Å."""
    origins = tile_origins(TILTED_SHAPE, tile, overlap=0.5)
    depth = mid_plane_depth_px(TILTED_SHAPE, TILT_DEG, axis_deg)
    h, w = TILTED_SHAPE
    # Depth is linear in the position, so the depth at a tile's mean pixel position is the mean over the tile.
    ys = origins[:, 0].double() + (tile - 1) / 2 - h // 2
    xs = origins[:, 1].double() + (tile - 1) / 2 - w // 2
    slope_x = float(depth[0, 1] - depth[0, 0])
    slope_y = float(depth[1, 0] - depth[0, 0])
    at_centre = float(depth[h // 2, w // 2])
    offsets = -handedness * (at_centre + slope_x * xs + slope_y * ys) * PIXEL
    return len(torch.unique(torch.round(offsets / width)))


def test_tilted_view_defocus_is_found_at_the_tomogram_centre(tilted: TiltedFits) -> None:
    """With the view's projection matrix and the right hand, the fit gives the defocus at depth 0 (where the
    tomogram centre projects, 117 px from the image centre); without geometry it gives the image's average, the
    defocus at the image centre, 122 Å (α 85°) or 238 Å (α 0°) away."""
    right, blind = tilted.right, tilted.blind
    # 8 seeds per axis: |Δ| ≤ 28 Å with geometry, |Δ from the centre's defocus| ≤ 31 Å without.
    assert mean_defocus(right) == pytest.approx(VIEW_DEFOCUS, abs=50.0)
    assert mean_defocus(blind) == pytest.approx(tilted.centre_defocus, abs=50.0)
    assert abs(tilted.centre_defocus - VIEW_DEFOCUS) > 100.0
    assert abs(mean_defocus(blind) - VIEW_DEFOCUS) > 60.0
    # The astigmatism survives the tilt (16 images: |Δ(u − v)| ≤ 97 Å of 600, angle within 3.6°).
    assert right.defocus_u_angstrom - right.defocus_v_angstrom == pytest.approx(TILT_ASTIGMATISM, rel=0.2)
    assert abs(angle_difference_deg(right.astigmatism_angle_deg, TILT_ANGLE_DEG)) <= 5.0
    # Tiles are grouped by the defocus offsets of the geometry (α 85°: 4 groups of 3 × 3 tiles, α 0°: 3).
    assert right.n_tiles == 9 and right.n_groups == expected_groups(tilted.axis_deg, 256)
    assert tilted.right_gradient.n_groups == expected_groups(tilted.axis_deg, 128)
    assert blind.n_groups == 1 and right.gradient_scale == 1.0


def test_wrong_handedness_puts_the_defocus_where_the_geometry_says(tilted: TiltedFits) -> None:
    """With h = −1 the tiles' offsets are mirrored: the fit still matches the image's average defocus (at the image
    centre, depth d₀), so it reports ``Δf_view − 2·h·d₀·pixel`` (measured within 122 Å of that on 16 images, with
    the right hand within 28 Å of ``Δf_view``), and the outer tiles' rings, off by twice their offset, are
    followed less far (fit resolution 6.65–8.0 Å against 6.02–6.32 Å)."""
    right, wrong = tilted.right, tilted.wrong
    d0 = float(plane_depth_px(torch.zeros(1, 2, dtype=torch.float64), tilted.matrix)[0])
    predicted = VIEW_DEFOCUS - 2.0 * d0 * PIXEL
    assert abs(predicted - VIEW_DEFOCUS) > 200.0
    assert mean_defocus(wrong) == pytest.approx(predicted, abs=150.0)
    assert abs(mean_defocus(wrong) - VIEW_DEFOCUS) > 100.0
    assert wrong.fit_resolution_angstrom > right.fit_resolution_angstrom + 0.3


def test_fitted_gradient_gives_the_tilt_and_the_hand(tilted: TiltedFits) -> None:
    """``fit_gradient`` scales the geometric defocus gradient: ≈ +1 with the right hand (apparent tilt
    ``atan(g tan θ)`` ≈ θ), ≈ −1 with the wrong one."""
    right, wrong = tilted.right_gradient, tilted.wrong_gradient
    apparent = math.degrees(math.atan(right.gradient_scale * math.tan(math.radians(TILT_DEG))))
    # 16 images on 128-px tiles: g 0.88–1.12, apparent tilt within 3.6° (on 256-px tiles g is biased low,
    # 0.83–1.00 at α 85°, because the modelled damping of a tile's full defocus spread exceeds the tapered tile's).
    assert apparent == pytest.approx(TILT_DEG, abs=4.0)
    assert mean_defocus(right) == pytest.approx(VIEW_DEFOCUS, abs=50.0)
    # Wrong hand: g −0.75 to −1.16.
    assert -1.3 < wrong.gradient_scale < -0.6
    assert mean_defocus(wrong) == pytest.approx(VIEW_DEFOCUS, abs=80.0)


# --- validation and tiles ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"min_resolution_angstrom": 6.0, "max_resolution_angstrom": 40.0}, "must exceed"),
        ({"min_resolution_angstrom": 10.0, "max_resolution_angstrom": 10.0}, "must exceed"),
        ({"min_resolution_angstrom": 5.0, "max_resolution_angstrom": 4.5}, "fit band .* too narrow"),
        ({"pixel_size_angstrom": 14.0}, "fit band .* too narrow"),
        ({"defocus_min_angstrom": 30000.0, "defocus_max_angstrom": 20000.0}, "0 < min <= max"),
        ({"defocus_min_angstrom": 0.0}, "0 < min <= max"),
        ({"defocus_min_angstrom": -5000.0}, "0 < min <= max"),
        ({"defocus_step_angstrom": 0.0}, "positive step"),
        ({"handedness": 0}, "handedness must be"),
        ({"handedness": 2}, "handedness must be"),
        ({"tile_size_px": 1024}, "tile_size_px must lie in"),
        ({"tile_overlap": 1.0}, "overlap must lie in"),
    ],
)
def test_bad_options_are_refused(changes: dict[str, Any], message: str) -> None:
    image = torch.zeros(512, 512)
    with pytest.raises(ValueError, match=message):
        fit(image, **changes)


@pytest.mark.parametrize(
    "changes",
    [
        {"max_resolution_angstrom": 0.0},  # ZeroDivisionError
        {"pixel_size_angstrom": 0.0},  # ZeroDivisionError
        {"voltage_kv": 0.0},  # ZeroDivisionError
        {"amplitude_contrast": 1.5},  # ValueError "math domain error"
        {
            "fit_phase_shift": True,
            "phase_shift_range_deg": (0.0, 180.0, 0.0),
        },  # RuntimeError from torch.arange
        {"projection_matrix": torch.eye(3)},  # IndexError
        {"fit_gradient": True},  # no geometry to scale
    ],
)
def test_unvalidated_options_are_refused(changes: dict[str, Any]) -> None:
    with pytest.raises(
        ValueError,
        match="|".join(["pixel", "resolution", "voltage", "amplitude", "phase", "matrix"]),
    ):
        fit(torch.zeros(512, 512), **changes)


def test_non_image_input_is_refused() -> None:
    with pytest.raises(ValueError, match=r"image must be \(h, w\)"):
        fit(torch.zeros(1, 512, 512))


@pytest.mark.parametrize(
    ("shape", "tile", "overlap"),
    [
        ((512, 512), 256, 0.5),
        ((448, 512), 256, 0.5),
        ((300, 517), 128, 0.5),
        ((130, 200), 128, 0.0),
        ((64, 64), 64, 0.5),
    ],
)
def test_tile_origins_cover_the_image_edge_to_edge(shape: tuple[int, int], tile: int, overlap: float) -> None:
    origins = tile_origins(shape, tile, overlap=overlap)
    assert origins.dtype == torch.int64 and origins.shape[-1] == 2
    covered = torch.zeros(shape, dtype=torch.bool)
    for axis in (0, 1):
        starts = torch.unique(origins[:, axis])
        assert int(starts[0]) == 0 and int(starts[-1]) + tile == shape[axis]
        # Evenly spread: neighbours at most tile·(1 − overlap) apart (at least the wanted overlap), ±1 px rounding.
        if len(starts) > 1:
            gaps = starts[1:] - starts[:-1]
            assert int(gaps.max()) <= math.ceil(tile * (1.0 - overlap)) and int(gaps.max() - gaps.min()) <= 1
    for y0, x0 in origins.tolist():
        covered[y0 : y0 + tile, x0 : x0 + tile] = True
    assert bool(covered.all())
    with pytest.raises(ValueError, match="overlap"):
        tile_origins(shape, tile, overlap=-0.1)
    with pytest.raises(ValueError, match="tile_size_px"):
        tile_origins(shape, min(shape) + 1)


def test_tile_spectra_are_in_array_order_with_centres_from_n_over_2() -> None:
    h, w, t = 300, 517, 101
    y = torch.arange(h, dtype=torch.float64)[:, None]
    x = torch.arange(w, dtype=torch.float64)[None, :]
    # A wave along x with 10 cycles per tile plus a weaker one along y with 20 (exact for a 101-px tile).
    image = torch.cos(2 * math.pi * 10 * x / t) + 0.5 * torch.cos(2 * math.pi * 20 * y / t)
    spectra, centres = tile_amplitude_spectra(image, tile_size_px=t, overlap=0.5)
    origins = tile_origins((h, w), t, overlap=0.5)
    assert spectra.shape == (len(origins), t, t // 2 + 1) and spectra.dtype == torch.float32
    assert bool((spectra[:, 0, 0] == 0).all())
    # x frequency along the last (rfft) axis, y frequency along the rows.
    flat = spectra.reshape(len(origins), -1)
    strongest = torch.stack([flat.argmax(-1) // (t // 2 + 1), flat.argmax(-1) % (t // 2 + 1)], dim=-1)
    assert bool((strongest == torch.tensor([0, 10])).all())
    assert bool((spectra[:, 20, 0] > 0.3 * spectra[:, 0, 10]).all())
    # Centre of a tile: the mean position of its pixels, (x, y) from the image centre (w // 2, h // 2).
    expected = torch.stack(
        [origins[:, 1] + (t - 1) / 2 - w // 2, origins[:, 0] + (t - 1) / 2 - h // 2], dim=-1
    ).double()
    torch.testing.assert_close(centres, expected)
    assert centres.dtype == torch.float64
    # The middle tile of a 3 × 3 arrangement of odd tiles sits exactly on the image centre N // 2.
    middle = tile_amplitude_spectra(torch.zeros(201, 201), tile_size_px=101, overlap=0.5)[1][4]
    assert middle.tolist() == [0.0, 0.0]


def test_radial_bins_are_rounded_frequency_radii() -> None:
    bins = radial_bins((64, 64))
    assert bins.shape == (64, 33) and bins.dtype == torch.int64
    assert int(bins[0, 0]) == 0 and int(bins[0, 32]) == 32 and int(bins[32, 0]) == 32
    assert int(bins[3, 4]) == 5 and int(bins[64 - 3, 4]) == 5  # negative ky rows
    assert int(bins[1, 1]) == 1 and int(bins[2, 2]) == 3  # √2 → 1, √8 = 2.83 → 3
    with pytest.raises(ValueError, match="square"):
        radial_bins((64, 32))


def test_display_puts_the_data_left_and_its_fit_right_point_symmetric() -> None:
    """Spectra are point-symmetric, so the data half at ``(−kx, −ky)`` must match the model half at ``(kx, ky)``; a
    picture mirrored about one axis only would show the astigmatism (30°) at −30° on the data side."""
    picture = fit(untilted_image(0)).spectrum_display.double()
    t = picture.shape[0]
    half = t // 2
    data = picture[1:, 1:half]  # rows ky = r − t/2 (r ≥ 1), columns kx = c − t/2 < 0 (c ≥ 1)
    model = picture.flip(0, 1)[: t - 1, : half - 1]  # picture[t − r, t − c]: (−ky, −kx)
    wrong = picture.flip(1)[1:, : half - 1]  # picture[r, t − c]: (ky, −kx), mirrored about one axis only

    def correlation(a: torch.Tensor, b: torch.Tensor) -> float:
        keep = torch.isfinite(a) & torch.isfinite(b)
        return float(torch.corrcoef(torch.stack([a[keep], b[keep]]))[0, 1])

    # Seeds 0–3: 0.25–0.32 against 0.11–0.19 mirrored (noisy per-pixel spectra of 9 tiles).
    right, mirrored = correlation(data, model), correlation(data, wrong)
    assert right > 0.2
    assert right > mirrored + 0.08
