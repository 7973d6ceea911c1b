"""Strip-wise CTF correction of tilted images (IMOD ctfphaseflip): geometry, sign and the defocus gradient.

The synthetic tilted image is built independently of the kernel: a white-noise object (the projected potential of a
thin, flat specimen at the tomogram's mid-plane) is imaged column group by column group, each group with the CTF of
its own defocus, which comes from the projection model (``project_points`` of mid-plane points) and
``point_defocus_angstrom`` (CONVENTIONS.md §7–§8). Phase flipping must then give ``−|CTF|`` times the object
everywhere (the input's low-frequency contrast), which is measured as the sign of the object's Fourier components
in the corrected image, shell by shell, per strip and over the whole image.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tomoforge.ctf import ctf_2d
from tomoforge.ctf.correct import correction_filter, phase_flip_tilted, strip_layout
from tomoforge.geometry import point_defocus_angstrom, project_points, projection_matrices

MICROSCOPE = {"voltage_kv": 300.0, "spherical_aberration_mm": 2.7, "amplitude_contrast": 0.07}
PIXEL = 2.5
DEFOCUS_U, DEFOCUS_V, ASTIGMATISM_DEG = 15300.0, 14700.0, 30.0
TILT_DEG = 60.0
TOLERANCE = 500.0
SHAPE = (128, 512)


def column_defocus_offsets(width: int, centre: int, tilt_deg: float, handedness: int) -> torch.Tensor:
    """Defocus (Å, relative to the view's) of each image column for a flat specimen at the mid-plane.

    Mid-plane points ``(x / cos θ, 0, 0)`` project to image column ``x`` (checked) at a depth from the projection
    model; the defocus there follows CONVENTIONS.md §8.
    """
    x = torch.arange(width, dtype=torch.float64) - centre
    points = torch.stack([x / math.cos(math.radians(tilt_deg)), 0 * x, 0 * x], dim=-1)
    projected = project_points(points, projection_matrices(tilt_deg, 0.0))
    torch.testing.assert_close(projected[:, 0], x)
    return point_defocus_angstrom(0.0, projected[:, 2], PIXEL, handedness)


def tilted_image(
    shape: tuple[int, int], *, tilt_deg: float, seed: int, handedness: int = 1, group: int = 16, pad: int = 48
) -> tuple[torch.Tensor, torch.Tensor]:
    """A tilted view of white noise with the defocus of each column from the geometry; returns (image, object).

    The field is simulated with ``pad`` extra pixels on every side and cropped (no periodic wrap-around). Each
    group of ``group`` columns (≤ 70 Å of defocus) is filtered in its own window with its CTF.
    """
    h, w = shape
    big_h, big_w = h + 2 * pad, w + 2 * pad
    obj = torch.randn(big_h, big_w, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    offsets = column_defocus_offsets(big_w, pad + w // 2, tilt_deg, handedness)
    starts = list(range(0, big_w, group))
    offsets_per_group = torch.stack([offsets[s : s + group].mean() for s in starts])
    window_w = group + 2 * pad
    padded = torch.nn.functional.pad(obj, (pad, pad))
    windows = torch.zeros(len(starts), big_h, window_w, dtype=torch.float64)
    for k, s in enumerate(starts):
        windows[k, :, pad : pad + group] = padded[:, pad + s : pad + s + group]
    ctf = ctf_2d(
        defocus_u_angstrom=DEFOCUS_U + offsets_per_group,
        defocus_v_angstrom=DEFOCUS_V + offsets_per_group,
        astigmatism_angle_deg=ASTIGMATISM_DEG,
        pixel_size_angstrom=PIXEL,
        shape_yx=(big_h, window_w),
        **MICROSCOPE,
    )
    filtered = torch.fft.irfft2(torch.fft.rfft2(windows) * ctf, s=(big_h, window_w))
    image = torch.zeros(big_h, big_w + 2 * pad, dtype=torch.float64)
    for k, s in enumerate(starts):
        image[:, s : s + window_w] += filtered[k]
    image = image[:, pad:-pad]
    return image[pad : pad + h, pad : pad + w].float(), obj[pad : pad + h, pad : pad + w].float()


def shell_correlation(image: torch.Tensor, reference: torch.Tensor, n_shells: int) -> torch.Tensor:
    """Correlation ``Re Σ I·R* / √(Σ|I|² Σ|R|²)`` in ``n_shells`` equal frequency shells up to Nyquist.

    Both images are Hann-windowed; +1 means the reference's components appear with their sign, −1 reversed.
    """
    h, w = image.shape
    window = torch.hann_window(h, periodic=False)[:, None] * torch.hann_window(w, periodic=False)[None, :]
    a = torch.fft.rfft2((image - image.mean()) * window)
    b = torch.fft.rfft2((reference - reference.mean()) * window)
    k = torch.sqrt(torch.fft.fftfreq(h)[:, None] ** 2 + torch.fft.rfftfreq(w)[None, :] ** 2)
    shell = (k / 0.5 * n_shells).long()
    inside = shell < n_shells
    index = shell[inside]
    cross = torch.zeros(n_shells).index_add_(0, index, (a * b.conj()).real[inside])
    power_a = torch.zeros(n_shells).index_add_(0, index, a.abs()[inside] ** 2)
    power_b = torch.zeros(n_shells).index_add_(0, index, b.abs()[inside] ** 2)
    return cross / torch.sqrt(power_a * power_b)


def shell_gain(image: torch.Tensor, reference: torch.Tensor, n_shells: int) -> torch.Tensor:
    """Transfer of the reference into the image per frequency shell, ``Re Σ I·R* / Σ|R|²``."""
    h, w = image.shape
    a = torch.fft.rfft2(image - image.mean())
    b = torch.fft.rfft2(reference - reference.mean())
    k = torch.sqrt(torch.fft.fftfreq(h)[:, None] ** 2 + torch.fft.rfftfreq(w)[None, :] ** 2)
    shell = (k / 0.5 * n_shells).long()
    inside = shell < n_shells
    cross = torch.zeros(n_shells).index_add_(0, shell[inside], (a * b.conj()).real[inside])
    power = torch.zeros(n_shells).index_add_(0, shell[inside], b.abs()[inside] ** 2)
    return cross / power


def correct(image: torch.Tensor, **changes: object) -> torch.Tensor:
    options: dict[str, object] = {
        "defocus_u_angstrom": DEFOCUS_U,
        "defocus_v_angstrom": DEFOCUS_V,
        "astigmatism_angle_deg": ASTIGMATISM_DEG,
        "tilt_angle_deg": TILT_DEG,
        "pixel_size_angstrom": PIXEL,
        "defocus_tolerance_angstrom": TOLERANCE,
        **MICROSCOPE,
    }
    options.update(changes)
    return phase_flip_tilted(image, **options)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def tilted() -> tuple[torch.Tensor, torch.Tensor]:
    return tilted_image(SHAPE, tilt_deg=TILT_DEG, seed=3)


def test_strips_hold_the_defocus_tolerance_and_blend_to_one() -> None:
    layout = strip_layout(
        SHAPE[1], tilt_angle_deg=TILT_DEG, pixel_size_angstrom=PIXEL, defocus_tolerance_angstrom=TOLERANCE
    )
    offsets = column_defocus_offsets(SHAPE[1], SHAPE[1] // 2, TILT_DEG, 1)
    # 512 columns × 2.5 Å × tan 60° = 2217 Å of defocus range → 5 strips of at most 500 Å each.
    assert layout.n_strips == 5 and layout.bounds_px[0] == 0 and layout.bounds_px[-1] == SHAPE[1]
    for k, (a, b) in enumerate(zip(layout.bounds_px[:-1], layout.bounds_px[1:], strict=True)):
        assert float(offsets[b - 1] - offsets[a]) <= TOLERANCE
        assert layout.centres_px[k] == pytest.approx(0.5 * (a + b - 1) - SHAPE[1] // 2)
    assert layout.depth_gradient == pytest.approx(-math.tan(math.radians(TILT_DEG)))
    total = torch.zeros(SHAPE[1], dtype=torch.float64)
    for k in range(layout.n_strips):
        start, stop, weights = layout.column_weights(k, dtype=torch.float64)
        total[start:stop] += weights
        assert stop - start == layout.widths_px[k] + (15 + 1) // 2 * ((k > 0) + (k < layout.n_strips - 1))
    torch.testing.assert_close(total, torch.ones_like(total))
    # Untilted: one strip at the image centre; a tilt whose defocus range fits the tolerance too.
    assert strip_layout(4096, tilt_angle_deg=0.0, pixel_size_angstrom=1.0).bounds_px == (0, 4096)
    assert strip_layout(100, tilt_angle_deg=45.0, pixel_size_angstrom=10.0).centres_px == (0.0,)
    # IMOD defaults at 60° and 1.35 Å: 2000 Å / (1.35 Å · tan 60°) = 855 px per strip.
    wide = strip_layout(4000, tilt_angle_deg=-60.0, pixel_size_angstrom=1.35)
    assert wide.n_strips == 5 and max(wide.widths_px) <= 855
    with pytest.raises(ValueError, match="between -90 and 90"):
        strip_layout(100, tilt_angle_deg=90.0, pixel_size_angstrom=1.0)
    with pytest.raises(ValueError, match="interpolation_width_px"):
        strip_layout(100, tilt_angle_deg=10.0, pixel_size_angstrom=1.0, interpolation_width_px=0)


def test_every_strip_is_flipped_with_its_own_defocus(tilted: tuple[torch.Tensor, torch.Tensor]) -> None:
    """Per strip, the object appears with the low-frequency sign in every shell; the other handedness reverses the
    high shells of the outer strips (their defocus is then wrong by ±1500 Å)."""
    image, obj = tilted
    layout = strip_layout(
        SHAPE[1], tilt_angle_deg=TILT_DEG, pixel_size_angstrom=PIXEL, defocus_tolerance_angstrom=TOLERANCE
    )
    right, wrong = correct(image), correct(image, handedness=-1)
    border = 16  # the field's edges miss the content the CTF delocalised out of view
    rows = slice(border, SHAPE[0] - border)
    worst_right, worst_wrong = [], []
    for a, b in zip(layout.bounds_px[:-1], layout.bounds_px[1:], strict=True):
        columns = slice(max(a, border), min(b, SHAPE[1] - border))
        worst_right.append(float(shell_correlation(right[rows, columns], -obj[rows, columns], 12).min()))
        worst_wrong.append(float(shell_correlation(wrong[rows, columns], -obj[rows, columns], 12).min()))
    assert min(worst_right) > 0.5, worst_right
    assert worst_wrong[0] < -0.5 and worst_wrong[-1] < -0.5, worst_wrong
    assert worst_wrong[2] > 0.5  # the centre strip has the view's defocus either way


def test_no_phase_reversal_after_flipping_a_tilted_image(tilted: tuple[torch.Tensor, torch.Tensor]) -> None:
    """IMOD's criterion: the transfer of the flipped tilted image keeps one sign over the whole band (here up to
    Nyquist, 5 Å), while the raw image reverses in about half of its shells."""
    image, obj = tilted
    raw = shell_correlation(image, -obj, 40)
    flipped = shell_correlation(correct(image), -obj, 40)
    assert int((raw < 0).sum()) >= 12
    assert float(flipped.min()) > 0.5, flipped
    # The low shells (before the first zero, 0.037 Å⁻¹ at 15 µm) are unchanged by flipping.
    np.testing.assert_allclose(flipped[:3].numpy(), raw[:3].numpy(), atol=0.02)


def test_untilted_is_one_whole_image_flip() -> None:
    h, w = 128, 160
    image, obj = tilted_image((h, w), tilt_deg=0.0, seed=5, group=w + 96)
    flipped = correct(image, tilt_angle_deg=0.0)
    # A 4° tilt whose 28 Å of defocus range fits the tolerance is the same single strip at the view's defocus.
    torch.testing.assert_close(correct(image, tilt_angle_deg=4.0), flipped)
    ctf = ctf_2d(
        defocus_u_angstrom=DEFOCUS_U,
        defocus_v_angstrom=DEFOCUS_V,
        astigmatism_angle_deg=ASTIGMATISM_DEG,
        pixel_size_angstrom=PIXEL,
        shape_yx=(h, w),
        **MICROSCOPE,
    )
    whole = torch.fft.irfft2(torch.fft.rfft2(image) * torch.sign(-ctf), s=(h, w))
    centre = (slice(32, h - 32), slice(32, w - 32))
    difference = (flipped - whole)[centre].std() / whole[centre].std()
    assert float(difference) < 0.25  # the periodic flip wraps the delocalised content around; ours pads
    assert float(shell_correlation(flipped, whole, 16).min()) > 0.9
    # Both are phase flips of the true image: the padded one is the nearer to −|CTF| ⊛ object at the edges.
    assert float(shell_correlation(flipped, -obj, 16).min()) > 0.6


def test_wiener_keeps_the_sign_and_restores_unit_gain() -> None:
    ctf = torch.linspace(-1.0, 1.0, 201)
    flip = correction_filter(ctf, mode="flip")
    assert torch.equal(flip, torch.where(ctf > 0, -1.0, 1.0))
    wiener = correction_filter(ctf, mode="wiener", wiener_snr=4.0)
    assert bool((wiener * ctf <= 0).all())  # corrected transfer −CTF·filter ≥ 0: never a reversal
    assert float(wiener[0]) == pytest.approx(1.0) and float(wiener[-1]) == pytest.approx(-1.0)
    h, w = 96, 96
    image, obj = tilted_image((h, w), tilt_deg=0.0, seed=7, group=w + 96)
    restored = correct(image, tilt_angle_deg=0.0, mode="wiener", wiener_snr=100.0)
    flipped = correct(image, tilt_angle_deg=0.0)
    # Flipping transfers the object with |CTF| (shell means 0.2-0.9); Wiener restores more of it in every shell,
    # without overshooting unit gain, and with the same sign.
    gain_wiener, gain_flip = shell_gain(restored, -obj, 12), shell_gain(flipped, -obj, 12)
    assert bool((gain_wiener > gain_flip + 0.05).all()), (gain_wiener, gain_flip)
    assert float(gain_wiener.max()) < 1.05 and float(gain_wiener.mean()) > 0.75
    assert float(shell_correlation(restored, -obj, 8).min()) > 0.5
    with pytest.raises(ValueError, match="wiener_snr"):
        correct(image, mode="wiener", wiener_snr=0.0)
    with pytest.raises(ValueError, match="mode"):
        correct(image, mode="invert")


def test_batches_dtype_mean_and_errors(tilted: tuple[torch.Tensor, torch.Tensor]) -> None:
    image = tilted[0][:64, :192].contiguous()  # 2 strips
    single = correct(image + 5.0)
    batch = correct(torch.stack([image + 5.0, 2.0 * image + 5.0]))
    torch.testing.assert_close(batch[0], single, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(batch[1], 2.0 * single - 5.0, atol=1e-4, rtol=1e-4)
    assert float(single.mean()) == pytest.approx(float(image.mean()) + 5.0, abs=0.01 * float(image.std()))
    assert correct(image.double()).dtype == torch.float64
    with pytest.raises(ValueError, match="handedness"):
        correct(image, handedness=0)
    with pytest.raises(ValueError, match=r"\(\.\.\., h, w\)"):
        correct(image[0])
