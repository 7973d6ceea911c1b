"""The contrast transfer function of the electron microscope, in 1D and on 2D Fourier grids.

Conventions (CONVENTIONS.md §5, §8, §9):

* Defocus is in Å and **positive for underfocus**. ``defocus_u_angstrom`` is the defocus along the direction at
  ``astigmatism_angle_deg`` counter-clockwise from image +x (x along columns, y along rows, rows increasing
  upwards), ``defocus_v_angstrom`` along the perpendicular (CTFFIND/RELION convention). At azimuth ``φ`` (from +x,
  counter-clockwise) the defocus is ``Δf(φ) = ū + δ·cos 2(φ − φ_ast)`` with ``ū = (u + v)/2``, ``δ = (u − v)/2``.
* Phase aberration ``χ(k) = π λ Δf(φ) k² − (π/2) Cs λ³ k⁴ + φ_shift`` (k in cycles/Å, λ the relativistic
  electron wavelength).
* ``CTF(k) = −[√(1 − A²) sin χ + A cos χ] = −sin(χ + arcsin A)``, times the envelope ``exp(−B k²/4)``.

The sign is CTFFIND's/cisTEM's (``CTF::Evaluate`` returns ``−sin(χ + arctan(A/√(1−A²)))``) and is the physical
transfer of the projected potential into image intensity: an image is ``I = 1 + 2σ·F⁻¹[CTF · F[V_proj]]``, so a
positive potential appears **dark** at low frequencies in underfocus, as in every raw cryo-EM image. RELION's
``CTF::getCTF`` returns the opposite sign (``+sin(χ + …)``, because RELION works on contrast-inverted particle
images, white on black); |CTF|, CTF² and Wiener filters are the same in both, phase flipping with RELION's sign must
be applied to inverted images.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from tomoforge.fourier.frequencies import fftfreq_grid

__all__ = [
    "ctf_1d",
    "ctf_2d",
    "ctf_zeros_per_angstrom",
    "electron_wavelength_angstrom",
]

# CODATA 2018 exact / recommended values (SI).
_PLANCK_J_S = 6.62607015e-34
_ELECTRON_MASS_KG = 9.1093837015e-31
_ELEMENTARY_CHARGE_C = 1.602176634e-19
_SPEED_OF_LIGHT_M_S = 299792458.0

ParameterLike = float | torch.Tensor


def electron_wavelength_angstrom(voltage_kv: ParameterLike) -> ParameterLike:
    """Relativistic wavelength of electrons accelerated through ``voltage_kv``.

    ``λ = h / √(2 m₀ e V (1 + e V / (2 m₀ c²)))``.

    Parameters
    ----------
    voltage_kv
        Acceleration voltage in kV, a float or a ``(...)`` tensor.

    Returns
    -------
    float or torch.Tensor
        Wavelength in Å, of the same kind (and shape, dtype, device) as the input; 0.019687 Å at 300 kV,
        0.025079 Å at 200 kV.
    """
    e, m, c, h = _ELEMENTARY_CHARGE_C, _ELECTRON_MASS_KG, _SPEED_OF_LIGHT_M_S, _PLANCK_J_S
    if isinstance(voltage_kv, torch.Tensor):
        volts = voltage_kv.to(torch.float64) * 1e3
        lam = h / torch.sqrt(2.0 * m * e * volts * (1.0 + e * volts / (2.0 * m * c * c))) * 1e10
        return lam.to(voltage_kv.dtype) if voltage_kv.is_floating_point() else lam
    volts_f = float(voltage_kv) * 1e3
    return h / math.sqrt(2.0 * m * e * volts_f * (1.0 + e * volts_f / (2.0 * m * c * c))) * 1e10


def _parameters(
    values: dict[str, ParameterLike],
    dtype: torch.dtype | None,
    device: torch.device | str | None,
) -> tuple[dict[str, torch.Tensor], torch.dtype, torch.device]:
    """Broadcast scalar-or-tensor parameters to one batch shape, in float64, on one device.

    The output dtype is ``dtype`` if given, else that of the first floating tensor parameter, else float32.
    """
    tensors = [v for v in values.values() if isinstance(v, torch.Tensor)]
    if device is None:
        device = tensors[0].device if tensors else torch.device("cpu")
    if dtype is None:
        floating = [t.dtype for t in tensors if t.is_floating_point()]
        dtype = floating[0] if floating else torch.float32
    as64 = {k: torch.as_tensor(v, dtype=torch.float64, device=device) for k, v in values.items()}
    broadcast = torch.broadcast_tensors(*as64.values())
    return dict(zip(as64.keys(), broadcast, strict=True)), dtype, torch.device(device)


def _check_amplitude_contrast(amplitude_contrast: torch.Tensor) -> None:
    if bool(((amplitude_contrast < 0) | (amplitude_contrast > 1)).any()):
        raise ValueError("amplitude_contrast must lie in [0, 1]")


def _chi_coefficients(p: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per-batch coefficients of χ in float64 (units: Å², Å⁴, rad)."""
    lam = electron_wavelength_angstrom(p["voltage_kv"])
    assert isinstance(lam, torch.Tensor)
    cs_angstrom = p["spherical_aberration_mm"] * 1e7
    return {
        "defocus": math.pi * lam,  # multiplies Δf(φ)·k²
        "spherical": 0.5 * math.pi * cs_angstrom * lam**3,  # multiplies k⁴
        # χ + arcsin(A) + phase shift: the argument of −sin(·)
        "offset": torch.deg2rad(p["phase_shift_deg"]) + torch.asin(p["amplitude_contrast"]),
    }


def ctf_2d(
    *,
    defocus_u_angstrom: ParameterLike,
    defocus_v_angstrom: ParameterLike,
    astigmatism_angle_deg: ParameterLike,
    voltage_kv: ParameterLike,
    spherical_aberration_mm: ParameterLike,
    amplitude_contrast: ParameterLike,
    pixel_size_angstrom: float,
    shape_yx: Sequence[int],
    phase_shift_deg: ParameterLike = 0.0,
    b_factor_angstrom2: ParameterLike = 0.0,
    rfft: bool = True,
    fftshift: bool = False,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """CTF on the 2D Fourier grid of images of ``shape_yx``, for a batch of parameter sets.

    Parameters
    ----------
    defocus_u_angstrom, defocus_v_angstrom
        Defocus in Å along the astigmatism direction and perpendicular to it (positive = underfocus).
    astigmatism_angle_deg
        Angle of the ``u`` direction from image +x, counter-clockwise, in degrees.
    voltage_kv
        Acceleration voltage in kV.
    spherical_aberration_mm
        Spherical aberration Cs in mm.
    amplitude_contrast
        Fraction ``A`` in [0, 1] (0.07–0.1 for cryo samples).
    pixel_size_angstrom
        Pixel size of the images in Å.
    shape_yx
        Real-space image shape ``(h, w)``.
    phase_shift_deg
        Additional phase shift (phase plate) in degrees.
    b_factor_angstrom2
        B-factor of the envelope ``exp(−B k²/4)`` in Å² (0: no envelope; positive values damp high frequencies).
    rfft
        Grid of ``torch.fft.rfftn`` (last axis ``w // 2 + 1``) instead of the full ``fftn`` grid.
    fftshift
        DC at index ``h // 2`` (and ``w // 2`` for a full grid) instead of 0 (CONVENTIONS.md §9).
    dtype, device
        Of the result; by default those of the first floating tensor parameter, else float32 on the CPU.
        Coefficients are computed in float64 whatever ``dtype`` is.

    All parameters are floats or tensors that broadcast to one batch shape ``(...)``, e.g. ``(n_tilts,)``.

    Returns
    -------
    torch.Tensor
        ``(..., h, w // 2 + 1)`` (rfft) or ``(..., h, w)`` CTF values in [−1, 1].

    Notes
    -----
    ``χ = π λ Δf(φ) k² − (π/2) Cs λ³ k⁴ + φ_shift`` and ``CTF = −sin(χ + arcsin A)·exp(−B k²/4)``; the sign
    convention is explained in the module docstring. The astigmatic term uses
    ``k² cos 2(φ − φ_ast) = (k_x² − k_y²) cos 2φ_ast + 2 k_x k_y sin 2φ_ast``, so no azimuth is computed.

    References
    ----------
    Rohou, A. & Grigorieff, N. (2015). CTFFIND4: Fast and accurate defocus estimation from electron micrographs.
    J. Struct. Biol. 192, 216–221. doi:10.1016/j.jsb.2015.08.008
    """
    p, out_dtype, out_device = _parameters(
        {
            "defocus_u_angstrom": defocus_u_angstrom,
            "defocus_v_angstrom": defocus_v_angstrom,
            "astigmatism_angle_deg": astigmatism_angle_deg,
            "voltage_kv": voltage_kv,
            "spherical_aberration_mm": spherical_aberration_mm,
            "amplitude_contrast": amplitude_contrast,
            "phase_shift_deg": phase_shift_deg,
            "b_factor_angstrom2": b_factor_angstrom2,
        },
        dtype,
        device,
    )
    _check_amplitude_contrast(p["amplitude_contrast"])
    if len(shape_yx) != 2:
        raise ValueError(f"shape_yx must be (h, w), got {tuple(shape_yx)}")
    coefficients = _chi_coefficients(p)
    mean_defocus = 0.5 * (p["defocus_u_angstrom"] + p["defocus_v_angstrom"])
    half_astigmatism = 0.5 * (p["defocus_u_angstrom"] - p["defocus_v_angstrom"])
    two_angle = 2.0 * torch.deg2rad(p["astigmatism_angle_deg"])

    def per_batch(t: torch.Tensor) -> torch.Tensor:
        return t.to(out_dtype)[..., None, None]

    k2_coefficient = per_batch(coefficients["defocus"] * mean_defocus)
    cos_coefficient = per_batch(coefficients["defocus"] * half_astigmatism * torch.cos(two_angle))
    sin_coefficient = per_batch(coefficients["defocus"] * half_astigmatism * torch.sin(two_angle))
    k4_coefficient = per_batch(coefficients["spherical"])
    offset = per_batch(coefficients["offset"])

    freq = fftfreq_grid(
        tuple(shape_yx),
        spacing_angstrom=pixel_size_angstrom,
        rfft=rfft,
        fftshift=fftshift,
        device=out_device,
        dtype=out_dtype,
    )
    fy, fx = freq[..., 0], freq[..., 1]
    k2 = fx * fx + fy * fy
    argument = (
        k2_coefficient * k2
        + cos_coefficient * (fx * fx - fy * fy)
        + sin_coefficient * (2.0 * fx * fy)
        - k4_coefficient * (k2 * k2)
        + offset
    )
    ctf = -torch.sin(argument)
    if bool((p["b_factor_angstrom2"] != 0).any()):
        ctf = ctf * torch.exp(-0.25 * per_batch(p["b_factor_angstrom2"]) * k2)
    return ctf


def ctf_1d(
    frequency_per_angstrom: torch.Tensor,
    *,
    defocus_angstrom: ParameterLike,
    voltage_kv: ParameterLike,
    spherical_aberration_mm: ParameterLike,
    amplitude_contrast: ParameterLike,
    phase_shift_deg: ParameterLike = 0.0,
    b_factor_angstrom2: ParameterLike = 0.0,
) -> torch.Tensor:
    """Radial CTF profile at given spatial frequencies (no astigmatism, or along one azimuth).

    Parameters
    ----------
    frequency_per_angstrom
        ``(*f)`` spatial frequencies in cycles/Å.
    defocus_angstrom
        Defocus in Å (positive = underfocus); for an astigmatic CTF pass ``Δf(φ)`` of the azimuth wanted.
    voltage_kv, spherical_aberration_mm, amplitude_contrast, phase_shift_deg, b_factor_angstrom2
        As in :func:`ctf_2d`.

    The parameters broadcast to a batch shape ``(...)``.

    Returns
    -------
    torch.Tensor
        ``(..., *f)`` CTF values, in the dtype of ``frequency_per_angstrom`` (float32 for integer input), with the
        same sign convention as :func:`ctf_2d`.
    """
    freq = frequency_per_angstrom
    if not freq.is_floating_point():
        freq = freq.to(torch.float32)
    p, out_dtype, _ = _parameters(
        {
            "defocus_angstrom": defocus_angstrom,
            "voltage_kv": voltage_kv,
            "spherical_aberration_mm": spherical_aberration_mm,
            "amplitude_contrast": amplitude_contrast,
            "phase_shift_deg": phase_shift_deg,
            "b_factor_angstrom2": b_factor_angstrom2,
        },
        freq.dtype,
        freq.device,
    )
    _check_amplitude_contrast(p["amplitude_contrast"])
    coefficients = _chi_coefficients(p)
    extra = (None,) * freq.dim()

    def per_batch(t: torch.Tensor) -> torch.Tensor:
        return t.to(out_dtype)[(..., *extra)]

    k2 = freq * freq
    argument = (
        per_batch(coefficients["defocus"] * p["defocus_angstrom"]) * k2
        - per_batch(coefficients["spherical"]) * (k2 * k2)
        + per_batch(coefficients["offset"])
    )
    ctf = -torch.sin(argument)
    if bool((p["b_factor_angstrom2"] != 0).any()):
        ctf = ctf * torch.exp(-0.25 * per_batch(p["b_factor_angstrom2"]) * k2)
    return ctf


def ctf_zeros_per_angstrom(
    n_zeros: int,
    *,
    defocus_angstrom: float,
    voltage_kv: float,
    spherical_aberration_mm: float,
    amplitude_contrast: float,
    phase_shift_deg: float = 0.0,
) -> torch.Tensor:
    """Analytic positions of the first ``n_zeros`` zeros of the CTF, for tests and CTF fitting.

    Zeros are where ``χ(k) + arcsin A = mπ``; with ``u = k²`` this is the quadratic
    ``−(π/2) Cs λ³ u² + π λ Δf u + (φ_shift + arcsin A − mπ) = 0``, solved for the smallest positive ``u`` (the
    branch on which χ is monotonic from k = 0).

    Parameters
    ----------
    n_zeros
        Number of zeros wanted.
    defocus_angstrom, voltage_kv, spherical_aberration_mm, amplitude_contrast, phase_shift_deg
        As in :func:`ctf_1d` (scalars).

    Returns
    -------
    torch.Tensor
        ``(n_zeros,)`` float64 frequencies in cycles/Å, increasing.

    Raises
    ------
    ValueError
        If fewer than ``n_zeros`` zeros lie on that branch (beyond the extremum of χ caused by Cs).
    """
    if not 0.0 <= amplitude_contrast <= 1.0:
        raise ValueError("amplitude_contrast must lie in [0, 1]")
    lam = float(electron_wavelength_angstrom(float(voltage_kv)))
    a = -0.5 * math.pi * spherical_aberration_mm * 1e7 * lam**3
    b = math.pi * lam * defocus_angstrom
    offset = math.radians(phase_shift_deg) + math.asin(amplitude_contrast)
    # χ_total(u) = a u² + b u + offset starts at `offset` and moves up (b > 0) or down (b ≤ 0, Cs ≥ 0).
    rising = b > 0 or (b == 0 and a > 0)
    if rising:
        first_m = math.floor(offset / math.pi) + 1
        targets = [(first_m + i) * math.pi for i in range(n_zeros)]
    else:
        first_m = math.ceil(offset / math.pi) - 1
        targets = [(first_m - i) * math.pi for i in range(n_zeros)]
    zeros: list[float] = []
    for target in targets:
        c = offset - target
        if a == 0.0:
            u = -c / b if b != 0.0 else -1.0
        else:
            disc = b * b - 4.0 * a * c
            if disc < 0:
                u = -1.0
            else:
                roots = [(-b + s * math.sqrt(disc)) / (2.0 * a) for s in (1.0, -1.0)]
                positive = [r for r in roots if r > 0]
                u = min(positive) if positive else -1.0
        if u <= 0:
            raise ValueError(f"only {len(zeros)} CTF zeros lie before the extremum of the phase aberration")
        zeros.append(math.sqrt(u))
    return torch.tensor(zeros, dtype=torch.float64)
