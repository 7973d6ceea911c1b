"""CTF estimation of one (tilted) image: tile spectra, a 1D defocus search, a 2D refinement and the fit resolution.

The method follows CTFFIND4/5 and ctfplotter, with the tilt handled exactly rather than by stretching spectra:

1. **Tiles.** The image is cut into overlapping square tiles (:func:`tomoforge.ctf.tile_amplitude_spectra`). With
   the view's projection matrix (CONVENTIONS.md §7) every tile centre gets the depth of the specimen mid-plane under
   it (:func:`tomoforge.geometry.plane_depth_px`) and so its own defocus ``Δf_view + o_t`` with
   ``o_t = −h·depth·pixel`` (CONVENTIONS.md §8). Tiles whose offsets agree within ``group_width_angstrom`` are
   averaged into one group; an untilted image has one group.
2. **1D search.** For each candidate defocus (the search range and step of CTFFIND) the rotational average of every
   group's spectrum is fitted by linear least squares as ``B(k) + E(k)·CTF²(k; Δf + o_g)``, with a quartic
   background ``B`` and a quadratic envelope ``E`` in the fit band. The score is the fraction of the
   background-only residual the CTF term explains (group-weighted by tile count); candidates whose envelope is
   negative (rings out of phase) score 0. The best candidate is refined on a 10× finer grid.
3. **2D refinement.** With each group's background and envelope fixed, the mean defocus, the astigmatism
   (as ``Δf(φ) = Δf + a_c cos 2φ + a_s sin 2φ``, linear and free of the angle's wrap-around), optionally the
   phase shift and optionally a scale ``g`` of the defocus gradient are refined by L-BFGS, maximising the
   tile-weighted Pearson correlation between the background-subtracted 2D spectra and ``E·CTF²``. Astigmatism is
   restrained as CTFFIND's "tolerated astigmatism": ``|u − v|`` up to the tolerance is free, beyond it a quadratic
   penalty applies. Several astigmatism starts are tried.
4. **Fit resolution.** All groups' normalised spectra are averaged along equal phase of the fitted CTF
   (astigmatism and tilt removed), giving a 1D profile at the view's defocus; the fit resolution is the first
   frequency past the first zero at which the local correlation of profile and ``CTF²`` (over ±1 ring) drops below
   a threshold (CTFFIND reports a similar "fit resolution").

A fitted gradient scale ``g`` measures the tilt seen in the spectra, as CTFFIND5's tilt fit: the apparent tilt is
``atan(g · tan θ)``; ``g < 0`` means the defocus gradient runs the other way (the other handedness).

References
----------
Rohou, A. & Grigorieff, N. (2015). CTFFIND4: Fast and accurate defocus estimation from electron micrographs.
J. Struct. Biol. 192, 216–221. doi:10.1016/j.jsb.2015.08.008

Elferich, J., Kong, L., Zottig, X. & Grigorieff, N. (2024). CTFFIND5 provides improved insight into quality,
tilt and thickness of TEM samples. eLife 13, RP97227. doi:10.7554/eLife.97227

Xiong, Q., Morphew, M. K., Schwartz, C. L., Hoenger, A. H. & Mastronarde, D. N. (2009). CTF determination and
correction for low dose tomographic tilt series. J. Struct. Biol. 168, 378–387. doi:10.1016/j.jsb.2009.08.016
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from tomoforge.ctf.ctf2d import electron_wavelength_angstrom
from tomoforge.ctf.spectra import radial_bins, tile_amplitude_spectra
from tomoforge.fourier import fftfreq_grid
from tomoforge.geometry.projection import plane_depth_px

__all__ = ["CtfFit", "estimate_ctf"]

_BACKGROUND_DEGREE = 4
_ENVELOPE_DEGREE = 2
_ASTIGMATISM_PENALTY = 0.005
_TILE_TAPER_FRACTION = 0.1


class CtfFit(NamedTuple):
    """Result of :func:`estimate_ctf` for one image (defocus of the view at the specimen mid-plane's centre)."""

    defocus_u_angstrom: float
    """Defocus along the astigmatism angle, Å (underfocus positive); ``u ≥ v``."""
    defocus_v_angstrom: float
    """Defocus perpendicular to it, Å."""
    astigmatism_angle_deg: float
    """Angle of ``u`` from image +x, counter-clockwise, in [−90, 90)."""
    phase_shift_deg: float
    """Fitted (or fixed) additional phase shift, degrees."""
    score: float
    """Tile-weighted Pearson correlation of the background-subtracted 2D spectra with the fitted ``E·CTF²``."""
    fit_resolution_angstrom: float
    """Resolution up to which the Thon rings agree with the fit (see the module docstring)."""
    gradient_scale: float
    """Fitted scale of the geometric defocus gradient (1 when not fitted); the apparent tilt is
    ``atan(g · tan θ)``."""
    profile_frequency_per_angstrom: torch.Tensor
    """``(b,)`` frequencies of the 1D equiphase profile."""
    profile_data: torch.Tensor
    """``(b,)`` normalised spectrum averaged along equal phase (≈ CTF² where rings are seen)."""
    profile_model: torch.Tensor
    """``(b,)`` fitted ``CTF²`` at the view's defocus."""
    profile_correlation: torch.Tensor
    """``(b,)`` local correlation of data and model (±1 ring)."""
    spectrum_display: torch.Tensor
    """``(t, t)`` fftshifted picture: the normalised data spectrum on the left (kx < 0), the fitted ``CTF²`` on
    the right, NaN outside the fit band."""
    n_tiles: int
    """Tiles used."""
    n_groups: int
    """Defocus groups of tiles."""


class _Optics(NamedTuple):
    wavelength: float
    cs_angstrom: float
    amplitude_phase: float


def _chi(
    optics: _Optics, k2: torch.Tensor, defocus: torch.Tensor, phase_shift: torch.Tensor | float
) -> torch.Tensor:
    """Phase of ``−CTF = sin(χ + asin A)``: ``π λ Δf k² − (π/2) Cs λ³ k⁴ + φ + asin A``."""
    lam = optics.wavelength
    return (
        math.pi * lam * defocus * k2
        - 0.5 * math.pi * optics.cs_angstrom * lam**3 * k2 * k2
        + phase_shift
        + optics.amplitude_phase
    )


def _sinc(x: torch.Tensor) -> torch.Tensor:
    """``sin(x) / x`` with the value 1 at 0."""
    return torch.where(x.abs() < 1e-8, torch.ones_like(x), torch.sin(x) / torch.where(x == 0, 1.0, x))


def _ring_modulation(
    optics: _Optics,
    k2: torch.Tensor,
    spread_x: float | torch.Tensor,
    spread_y: float | torch.Tensor,
    thickness: float,
) -> torch.Tensor:
    """Damping of ``cos 2χ`` when the defocus varies over a tile (and through the specimen).

    ``sin²χ = (1 − cos 2χ)/2``; averaging over a defocus uniformly spread over ``Δ`` multiplies ``cos 2χ`` by
    ``sinc(π λ k² Δ)``. A linear gradient over a square tile spreads the defocus by ``spread_x`` and ``spread_y``
    along the tile's sides (independent, so the factors multiply), and a slab of specimen spans ``thickness`` of
    defocus along the beam.
    """
    c = math.pi * optics.wavelength * k2
    return _sinc(c * spread_x) * _sinc(c * spread_y) * _sinc(c * thickness)


def _polynomial_basis(x: torch.Tensor, degree: int) -> torch.Tensor:
    return torch.stack([x**j for j in range(degree + 1)], dim=-1)


def _group_tiles(offsets: torch.Tensor, width: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Group index of each tile (offsets within ``width`` of each other share a group) and the groups' offsets."""
    if width <= 0:
        keys = torch.arange(len(offsets), device=offsets.device)
    else:
        keys = torch.round(offsets / width).long()
    unique, inverse = torch.unique(keys, return_inverse=True)
    counts = torch.bincount(inverse, minlength=len(unique)).to(offsets.dtype)
    mean_offset = torch.zeros(len(unique), dtype=offsets.dtype, device=offsets.device)
    mean_offset.index_add_(0, inverse, offsets)
    return inverse, mean_offset / counts


def _least_squares_score(
    profiles: torch.Tensor, basis_background: torch.Tensor, ctf2: torch.Tensor, envelope_basis: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Score and coefficients of ``profiles ≈ B + E·CTF²`` for a batch of candidates.

    profiles ``(g, b)``; basis_background ``(b, nb)``; ctf2 ``(c, g, b)``; envelope_basis ``(b, ne)``.
    Returns the per-candidate, per-group fraction of the background residual explained ``(c, g)`` (0 where the
    envelope's mean is negative) and the coefficients ``(c, g, nb + ne)``.
    """
    c, g, b = ctf2.shape
    x_background = basis_background.expand(c, g, b, -1)
    x_ctf = ctf2.unsqueeze(-1) * envelope_basis
    design = torch.cat([x_background, x_ctf], dim=-1)  # (c, g, b, p)
    gram = design.transpose(-1, -2) @ design
    ridge = 1e-9 * gram.diagonal(dim1=-2, dim2=-1).mean(-1)[..., None, None]
    eye = torch.eye(design.shape[-1], dtype=design.dtype, device=design.device)
    rhs = design.transpose(-1, -2) @ profiles.unsqueeze(-1)
    coefficients = torch.linalg.solve(gram + ridge * eye, rhs).squeeze(-1)
    residual = ((design @ coefficients.unsqueeze(-1)).squeeze(-1) - profiles).square().sum(-1)
    gram0 = basis_background.T @ basis_background
    coeff0 = torch.linalg.solve(
        gram0
        + 1e-9 * gram0.diagonal().mean() * torch.eye(gram0.shape[0], dtype=gram0.dtype, device=gram0.device),
        basis_background.T @ profiles.T,
    )
    residual0 = (basis_background @ coeff0 - profiles.T).square().sum(0)  # (g,)
    explained = 1.0 - residual / residual0.clamp_min(1e-30)
    envelope_mean = (envelope_basis @ coefficients[..., basis_background.shape[-1] :].unsqueeze(-1)).squeeze(
        -1
    )
    explained = torch.where(envelope_mean.mean(-1) > 0, explained, torch.zeros_like(explained))
    return explained, coefficients


def estimate_ctf(
    image: torch.Tensor,
    *,
    pixel_size_angstrom: float,
    voltage_kv: float,
    spherical_aberration_mm: float,
    amplitude_contrast: float,
    tile_size_px: int = 512,
    tile_overlap: float = 0.5,
    min_resolution_angstrom: float = 50.0,
    max_resolution_angstrom: float = 5.0,
    defocus_min_angstrom: float = 10000.0,
    defocus_max_angstrom: float = 50000.0,
    defocus_step_angstrom: float = 500.0,
    astigmatism_tolerance_angstrom: float | None = 200.0,
    phase_shift_deg: float = 0.0,
    fit_phase_shift: bool = False,
    phase_shift_range_deg: tuple[float, float, float] = (0.0, 180.0, 10.0),
    projection_matrix: torch.Tensor | None = None,
    handedness: int = 1,
    fit_gradient: bool = False,
    group_width_angstrom: float = 100.0,
    fit_resolution_threshold: float = 0.3,
    specimen_thickness_angstrom: float = 0.0,
    gradient_start: float = 1.0,
) -> CtfFit:
    """Estimate the CTF of one image, tilt-aware (see the module docstring for the method).

    Parameters
    ----------
    image
        ``(h, w)`` image (motion-corrected, not dose-filtered, not aligned).
    pixel_size_angstrom
        Pixel size in Å.
    voltage_kv, spherical_aberration_mm, amplitude_contrast
        Microscope constants.
    tile_size_px, tile_overlap
        Box of the tile spectra (CTFFIND's box) and their overlap.
    min_resolution_angstrom, max_resolution_angstrom
        Fit band in Å (low and high resolution end); the high end is capped at 0.95 × Nyquist.
    defocus_min_angstrom, defocus_max_angstrom, defocus_step_angstrom
        1D search range and step (underfocus positive).
    astigmatism_tolerance_angstrom
        ``|u − v|`` allowed without penalty; None for an unrestrained fit.
    phase_shift_deg
        Fixed phase shift when ``fit_phase_shift`` is False; degrees.
    fit_phase_shift, phase_shift_range_deg
        Search the phase shift over ``(min, max, step)`` degrees in the 1D search and refine it in 2D.
    projection_matrix
        ``(3, 4)`` matrix of the view (:func:`tomoforge.geometry.projection_matrices`, pixels of this image); None
        for an untilted specimen (all tiles at one defocus).
    handedness
        ``h`` of CONVENTIONS.md §8 (+1 or −1) used to turn depths into defocus offsets.
    fit_gradient
        Also fit the scale ``g`` of the defocus gradient (needs a tilted ``projection_matrix``).
    group_width_angstrom
        Tiles whose geometric defocus offsets differ by less than this share one spectrum.
    fit_resolution_threshold
        Local correlation below which the rings are no longer considered fitted.
    gradient_start
        Scale of the geometric gradient assumed by the 1D search and the start of its fit; 0 with
        ``fit_gradient`` measures the gradient without presuming its sign (the handedness test).
    specimen_thickness_angstrom
        Thickness of the specimen slab (e.g. from the alignment); its defocus spread along the beam (thickness /
        cos tilt) damps the rings and is modelled; 0 to ignore.

    Returns
    -------
    CtfFit
    """
    if handedness not in (1, -1):
        raise ValueError(f"handedness must be +1 or -1, got {handedness}")
    if pixel_size_angstrom <= 0 or voltage_kv <= 0 or spherical_aberration_mm < 0:
        raise ValueError(
            "pixel_size_angstrom and voltage_kv must be positive and spherical_aberration_mm >= 0"
        )
    if not 0.0 <= amplitude_contrast < 1.0:
        raise ValueError(f"amplitude_contrast must lie in [0, 1), got {amplitude_contrast}")
    if max_resolution_angstrom <= 0:
        raise ValueError(f"max_resolution_angstrom must be positive, got {max_resolution_angstrom}")
    if fit_phase_shift and not (
        phase_shift_range_deg[2] > 0 and phase_shift_range_deg[0] <= phase_shift_range_deg[1]
    ):
        raise ValueError("phase_shift_range_deg must be (min, max, step) with min <= max and step > 0")
    if projection_matrix is not None and tuple(projection_matrix.shape) != (3, 4):
        raise ValueError(f"projection_matrix must be (3, 4), got {tuple(projection_matrix.shape)}")
    if fit_gradient and projection_matrix is None:
        raise ValueError("fit_gradient needs the view's projection_matrix (the gradient it scales)")
    if not 0.0 < fit_resolution_threshold < 1.0:
        raise ValueError(f"fit_resolution_threshold must lie in (0, 1), got {fit_resolution_threshold}")
    if not 0 < defocus_min_angstrom <= defocus_max_angstrom or defocus_step_angstrom <= 0:
        raise ValueError("the defocus search needs 0 < min <= max and a positive step")
    if min_resolution_angstrom <= max_resolution_angstrom:
        raise ValueError("min_resolution_angstrom (low-resolution end) must exceed max_resolution_angstrom")
    device = image.device
    f64 = torch.float64
    px = float(pixel_size_angstrom)
    t = int(tile_size_px)
    k_low = 1.0 / min_resolution_angstrom
    k_high = min(1.0 / max_resolution_angstrom, 0.95 / (2.0 * px))
    if k_high <= k_low * 1.5:
        raise ValueError(
            f"the fit band {min_resolution_angstrom}–{max_resolution_angstrom} Å is empty or too narrow at "
            f"{px} Å per pixel (Nyquist {2 * px:.2f} Å)"
        )
    optics = _Optics(
        wavelength=float(electron_wavelength_angstrom(float(voltage_kv))),
        cs_angstrom=float(spherical_aberration_mm) * 1e7,
        amplitude_phase=math.asin(float(amplitude_contrast)),
    )

    # --- tiles and their defocus groups ---------------------------------------------------------------------
    spectra, centres = tile_amplitude_spectra(
        image, tile_size_px=t, overlap=tile_overlap, taper_fraction=_TILE_TAPER_FRACTION
    )
    spectra = spectra.to(f64)
    centres = centres.to(device)
    if projection_matrix is None:
        offsets = torch.zeros(len(centres), dtype=f64, device=device)
        spread_x = spread_y = 0.0
        thickness = float(specimen_thickness_angstrom)
    else:
        matrix = projection_matrix.to(device=device, dtype=f64)
        depth = plane_depth_px(centres, matrix)
        offsets = -handedness * depth.to(f64) * px
        # The mid-plane's depth is linear in the image position: its gradient gives the spread over a tile
        # (the part of the tile the taper leaves at full weight plus half its ramps).
        probe = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=f64, device=device)
        d = plane_depth_px(probe, matrix)
        width = t * (1.0 - _TILE_TAPER_FRACTION)
        spread_x = float((d[1] - d[0]).abs()) * px * width
        spread_y = float((d[2] - d[0]).abs()) * px * width
        normal_z = float(matrix[2, 2].abs())
        thickness = float(specimen_thickness_angstrom) / max(normal_z, 0.05)
    groups, group_offset = _group_tiles(offsets, group_width_angstrom)
    n_groups = len(group_offset)
    group_spectra = torch.zeros((n_groups, *spectra.shape[1:]), dtype=f64, device=device)
    group_spectra.index_add_(0, groups, spectra)
    weights = torch.bincount(groups, minlength=n_groups).to(f64)
    group_spectra /= weights[:, None, None]
    weights = weights / weights.sum()

    # --- 1D: rotational averages in the band ----------------------------------------------------------------
    rings = radial_bins((t, t), device=device)
    n_rings = t // 2 + 1
    ring_lo, ring_hi = math.ceil(k_low * t * px), math.floor(k_high * t * px)
    ring_counts = torch.bincount(rings.reshape(-1), minlength=n_rings)[:n_rings].to(f64)
    flat = group_spectra.reshape(n_groups, -1)
    valid = rings.reshape(-1) < n_rings
    profiles = torch.zeros((n_groups, n_rings), dtype=f64, device=device)
    profiles.index_add_(1, rings.reshape(-1)[valid], flat[:, valid])
    profiles = profiles / ring_counts.clamp_min(1.0)
    band = torch.arange(ring_lo, ring_hi + 1, device=device)
    k_ring = band.to(f64) / (t * px)
    x_ring = (k_ring - k_low) / (k_high - k_low)
    basis_b = _polynomial_basis(x_ring, _BACKGROUND_DEGREE)
    basis_e = _polynomial_basis(x_ring, _ENVELOPE_DEGREE)
    band_profiles = profiles[:, band]
    ring_damping = _ring_modulation(
        optics, k_ring.square(), abs(gradient_start) * spread_x, abs(gradient_start) * spread_y, thickness
    )

    def search(defoci: torch.Tensor, phases: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        d = defoci[:, None, None] + gradient_start * group_offset[None, :, None]  # (c, g, 1)
        chi = _chi(optics, k_ring.square()[None, None, :], d, phases[:, None, None])
        ctf2 = 0.5 - 0.5 * torch.cos(2.0 * chi) * ring_damping
        explained, coefficients = _least_squares_score(band_profiles, basis_b, ctf2, basis_e)
        return (explained * weights).sum(-1), coefficients

    defoci = torch.arange(
        defocus_min_angstrom,
        defocus_max_angstrom + 0.5 * defocus_step_angstrom,
        defocus_step_angstrom,
        dtype=f64,
        device=device,
    )
    if fit_phase_shift:
        lo, hi, step = phase_shift_range_deg
        phase_grid = torch.deg2rad(torch.arange(lo, hi + 0.5 * step, step, dtype=f64, device=device))
    else:
        phase_grid = torch.tensor([math.radians(phase_shift_deg)], dtype=f64, device=device)
    dd, pp = torch.meshgrid(defoci, phase_grid, indexing="ij")
    scores, _ = search(dd.reshape(-1), pp.reshape(-1))
    best = int(torch.argmax(scores))
    d0, p0 = float(dd.reshape(-1)[best]), float(pp.reshape(-1)[best])
    fine = d0 + torch.linspace(-defocus_step_angstrom, defocus_step_angstrom, 41, dtype=f64, device=device)
    fine = fine[fine > 0]
    scores, coefficients = search(fine, torch.full_like(fine, p0))
    best = int(torch.argmax(scores))
    d0 = float(fine[best])
    coeff = coefficients[best]  # (g, p)

    # --- 2D refinement ---------------------------------------------------------------------------------------
    freq = fftfreq_grid((t, t), spacing_angstrom=px, rfft=True, device=device, dtype=f64)
    ky, kx = freq[..., 0], freq[..., 1]
    k2_grid = kx.square() + ky.square()
    in_band = (k2_grid >= k_low**2) & (k2_grid <= k_high**2)
    k2 = k2_grid[in_band]
    cos2 = (kx[in_band].square() - ky[in_band].square()) / k2
    sin2 = 2.0 * kx[in_band] * ky[in_band] / k2
    x_points = (k2.sqrt() - k_low) / (k_high - k_low)
    background = coeff[:, : _BACKGROUND_DEGREE + 1] @ _polynomial_basis(x_points, _BACKGROUND_DEGREE).T
    envelope = coeff[:, _BACKGROUND_DEGREE + 1 :] @ _polynomial_basis(x_points, _ENVELOPE_DEGREE).T
    envelope = envelope.clamp_min(1e-3 * envelope.abs().max(dim=-1, keepdim=True).values)
    data = group_spectra[:, in_band] - background  # (g, P)
    data_centred = data - data.mean(-1, keepdim=True)
    data_norm = data_centred.square().sum(-1).sqrt().clamp_min(1e-30)
    tilted = projection_matrix is not None and bool(group_offset.abs().max() > 0)
    use_gradient = fit_gradient and tilted
    point_factor = math.pi * optics.wavelength * k2
    thickness_damping = _sinc(point_factor * thickness)
    scale = torch.tensor([1000.0, 100.0, 100.0, 1.0, 1.0], dtype=f64, device=device)

    def unpack(theta: torch.Tensor) -> tuple[torch.Tensor, ...]:
        v = theta * scale
        phase = v[3] if fit_phase_shift else torch.tensor(p0, dtype=f64, device=device)
        gradient = v[4] if use_gradient else torch.tensor(gradient_start, dtype=f64, device=device)
        return v[0], v[1], v[2], phase, gradient

    def correlation(theta: torch.Tensor) -> torch.Tensor:
        mean, a_c, a_s, phase, gradient = unpack(theta)
        defocus = mean + gradient * group_offset[:, None] + a_c * cos2 + a_s * sin2
        damping = _sinc(point_factor * gradient * spread_x) * _sinc(point_factor * gradient * spread_y)
        damping = damping * thickness_damping
        model = envelope * (0.5 - 0.5 * torch.cos(2.0 * _chi(optics, k2, defocus, phase)) * damping)
        model = model - model.mean(-1, keepdim=True)
        r = (model * data_centred).sum(-1) / (model.square().sum(-1).sqrt().clamp_min(1e-30) * data_norm)
        return (r * weights).sum()

    def loss(theta: torch.Tensor) -> torch.Tensor:
        _, a_c, a_s, _, _ = unpack(theta)
        value = -correlation(theta)
        if astigmatism_tolerance_angstrom is not None:
            excess = (
                2.0 * torch.sqrt(a_c.square() + a_s.square() + 1e-6) - astigmatism_tolerance_angstrom
            ).clamp_min(0)
            value = (
                value + _ASTIGMATISM_PENALTY * (excess / max(astigmatism_tolerance_angstrom, 1.0)).square()
            )
        return value

    def refine(start: torch.Tensor, iterations: int) -> tuple[torch.Tensor, float]:
        theta = start.clone().requires_grad_(True)
        optimiser = torch.optim.LBFGS(
            [theta], lr=1.0, max_iter=iterations, line_search_fn="strong_wolfe", tolerance_change=1e-12
        )

        def closure() -> torch.Tensor:
            optimiser.zero_grad()
            value = loss(theta)
            value.backward()
            return value

        optimiser.step(closure)
        with torch.no_grad():
            return theta.detach(), float(loss(theta))

    half = 0.25 * (astigmatism_tolerance_angstrom or 400.0) / 100.0
    starts = [(0.0, 0.0), (half, 0.0), (0.0, half), (-half, 0.0), (0.0, -half)]
    candidates = []
    for a_c, a_s in starts:
        theta0 = torch.tensor([d0 / 1000.0, a_c, a_s, p0, gradient_start], dtype=f64, device=device)
        candidates.append(refine(theta0, 15))
    theta, _ = refine(min(candidates, key=lambda c: c[1])[0], 60)
    with torch.no_grad():
        score = float(correlation(theta))
        mean, a_c, a_s, phase, gradient = (float(v) for v in unpack(theta))

    half_astigmatism = math.hypot(a_c, a_s)
    angle = 0.5 * math.degrees(math.atan2(a_s, a_c))
    angle = (angle + 90.0) % 180.0 - 90.0

    # --- equiphase profile and fit resolution -----------------------------------------------------------------
    with torch.no_grad():
        defocus_points = mean + gradient * group_offset[:, None] + a_c * cos2 + a_s * sin2
        chi_points = _chi(optics, k2, defocus_points, phase) - phase - optics.amplitude_phase
        lam = optics.wavelength
        qa = -0.5 * math.pi * optics.cs_angstrom * lam**3
        qb = math.pi * lam * mean
        disc = (qb * qb + 4.0 * qa * chi_points).clamp_min(0.0)
        u = (2.0 * chi_points / (qb + disc.sqrt())) if qa != 0 else chi_points / qb
        k_eq = u.clamp_min(0.0).sqrt()
        normalised = data / envelope
        profile_index = torch.round(k_eq * t * px).long().clamp(0, n_rings - 1)
        weight_points = weights[:, None].expand_as(profile_index)
        sums = torch.zeros(n_rings, dtype=f64, device=device).index_add_(
            0, profile_index.reshape(-1), (normalised * weight_points).reshape(-1)
        )
        norm = torch.zeros(n_rings, dtype=f64, device=device).index_add_(
            0, profile_index.reshape(-1), weight_points.reshape(-1)
        )
        profile_k = band.to(f64) / (t * px)
        profile = (sums / norm.clamp_min(1e-30))[band]
        chi_ref = _chi(optics, profile_k.square(), torch.tensor(mean, dtype=f64, device=device), phase)
        model_profile = torch.sin(chi_ref).square()
        local = _local_correlation(profile, model_profile, chi_ref)
        first_zero = chi_ref >= math.pi
        below = (local < fit_resolution_threshold) & first_zero
        if bool(below.any()):
            stop = int(torch.nonzero(below)[0])
            fit_k = float(profile_k[max(stop - 1, 0)])
        else:
            fit_k = float(profile_k[-1])
        display = _display(group_spectra, background, envelope, weights, in_band, t)
        model_display = torch.full((t, t // 2 + 1), float("nan"), dtype=f64, device=device)
        model_display[in_band] = torch.sin(_chi(optics, k2, mean + a_c * cos2 + a_s * sin2, phase)).square()
        display = _compose_display(display, model_display)

    return CtfFit(
        defocus_u_angstrom=mean + half_astigmatism,
        defocus_v_angstrom=mean - half_astigmatism,
        astigmatism_angle_deg=angle,
        phase_shift_deg=math.degrees(phase),
        score=score,
        fit_resolution_angstrom=1.0 / max(fit_k, 1e-12),
        gradient_scale=gradient,
        profile_frequency_per_angstrom=profile_k.float(),
        profile_data=profile.float(),
        profile_model=model_profile.float(),
        profile_correlation=local.float(),
        spectrum_display=display.float(),
        n_tiles=len(centres),
        n_groups=n_groups,
    )


def _local_correlation(data: torch.Tensor, model: torch.Tensor, chi: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of ``data`` and ``model`` over the samples within ±π of each sample's phase."""
    window = (chi[:, None] - chi[None, :]).abs() <= math.pi  # (b, b)
    w = window.to(data.dtype)
    n = w.sum(-1).clamp_min(1.0)
    mean_d = (w @ data) / n
    mean_m = (w @ model) / n
    cov = (w @ (data * model)) / n - mean_d * mean_m
    var_d = ((w @ data.square()) / n - mean_d.square()).clamp_min(0.0)
    var_m = ((w @ model.square()) / n - mean_m.square()).clamp_min(0.0)
    return cov / (var_d * var_m).sqrt().clamp_min(1e-30)


def _display(
    group_spectra: torch.Tensor,
    background: torch.Tensor,
    envelope: torch.Tensor,
    weights: torch.Tensor,
    in_band: torch.Tensor,
    t: int,
) -> torch.Tensor:
    """Tile-weighted normalised data spectrum on the rfft grid (NaN outside the band)."""
    out = torch.full((t, t // 2 + 1), float("nan"), dtype=torch.float64, device=group_spectra.device)
    values = ((group_spectra[:, in_band] - background) / envelope * weights[:, None]).sum(0)
    out[in_band] = values
    return out


def _compose_display(data_rfft: torch.Tensor, model_rfft: torch.Tensor) -> torch.Tensor:
    """A ``(t, t)`` fftshifted picture: data mirrored onto kx < 0 (left half), model on kx ≥ 0 (right half)."""
    t = data_rfft.shape[0]
    half = t // 2
    picture = torch.full((t, t), float("nan"), dtype=data_rfft.dtype, device=data_rfft.device)
    model_shifted = torch.fft.fftshift(model_rfft, dim=0)  # rows: ky from -t/2 (index 0)
    data_shifted = torch.fft.fftshift(data_rfft, dim=0)
    picture[:, half:] = model_shifted[:, : t - half]
    # Hermitian symmetry: the value at (-kx, -ky) equals the value at (kx, ky).
    mirrored = torch.flip(data_shifted, dims=(0,))
    mirrored = torch.roll(mirrored, shifts=1 if t % 2 == 0 else 0, dims=0)
    columns = torch.flip(mirrored[:, 1 : half + 1], dims=(1,))
    picture[:, :half] = columns[:, -half:]
    return picture
