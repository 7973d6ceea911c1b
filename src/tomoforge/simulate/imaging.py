r"""Image formation: projection of a potential volume into a raw tilt image, the CTF, dose damage, motion and counting.

Model
-----
1. **Projection** (:func:`project_tilt`). The raw tilt image collects the potential along the beam through the
   specimen points ``X`` with ``(x, y, depth) = Rz(α)·Ry(θ)·Rx(φ)·X + (s, 0)`` (CONVENTIONS.md §7), split into
   slabs of equal depth so that each slab gets its own defocus. The image pixel is the volume's voxel.
2. **Contrast** (:func:`contrast_spectrum`). In the weak-phase approximation the exit wave is ``1 + iφ`` with the
   phase ``φ = σ·∫V dz`` (``σ`` the relativistic interaction constant,
   :func:`interaction_constant_rad_per_volt_angstrom`, 0.000653 rad/(V·Å) at 300 kV), and the image intensity is
   ``1 + 2·F⁻¹[CTF·F[φ]]`` — the factor 2 is the cross term of ``|1 + iφ ⊛ h|²``; with the CTF of
   :func:`tomoforge.ctf.ctf_2d` (CTFFIND's sign, ``CTF(0) = −A``) a positive potential is dark in underfocus. Each
   depth slab gets the defocus of its depth, ``Δf = Δf_view − depth`` (:func:`tomoforge.geometry.point_defocus_angstrom`),
   so a tilted specimen has a defocus gradient across the image and a thick one loses high-resolution contrast.
   The DC term of the contrast is set to 0: every electron reaches the detector (no aperture or energy-filter
   losses), so the mean intensity is 1 and the mean count is the dose.
3. **Per frame** (:func:`frame_intensity`): radiation damage multiplies the contrast spectrum by the Grant &
   Grigorieff amplitude weights for the frame's own exposure interval
   (:func:`tomoforge.fourier.dose_weights`, averaged over the frame); the frame's specimen displacement ``s(t)``
   is a phase ramp (content moves towards ``+s``, :func:`tomoforge.fourier.shift_phase_ramp_2d`); the linear
   contrast ``L`` becomes the intensity ``I = exp(L) / ⟨exp(L)⟩``, which equals ``1 + L`` to first order for the
   weak-phase specimen but stays positive where the weak-phase approximation fails (10 nm gold beads reach
   ``|L| ≈ 2``; the linear image would go negative there) and keeps the mean at 1; the detector MTF blurs the
   intensity (:func:`tomoforge.simulate.detector.mtf_at`).
4. **Counting** (:func:`expose`): Poisson counts about ``I · dose per frame · pixel area``, plus X-ray events.

Sampling. Potentials are simulated at a coarse voxel (e.g. the motion-corrected pixel) and the contrast spectrum is
zero-padded onto the finer (super-resolution) frame grid (:func:`fourier_upsample_spectrum`) before the per-frame
operations: information beyond the simulation voxel's Nyquist frequency is not simulated, only the counting noise
and X-rays there.

References
----------
.. [1] M. Vulović, R. B. G. Ravelli, L. J. van Vliet, A. J. Koster, I. Lazić, U. Lücken, H. Rullgård, O. Öktem &
   B. Rieger (2013). Image formation modeling in cryo-electron microscopy. J. Struct. Biol. 183, 19–32.
   doi:10.1016/j.jsb.2013.05.008
.. [2] B. Himes & N. Grigorieff (2021). Cryo-TEM simulations of amorphous radiation-sensitive samples using
   multislice wave propagation. IUCrJ 8, 943–953. doi:10.1107/S2052252521008538
.. [3] E. J. Kirkland (2010). Advanced Computing in Electron Microscopy, 2nd ed., Springer (interaction constant,
   eq. 5.6; weak-phase object, §6.4). doi:10.1007/978-1-4419-6533-2
.. [4] T. Grant & N. Grigorieff (2015). Measuring the optimal exposure for single particle cryo-EM using a 2.6 Å
   reconstruction of rotavirus VP6. eLife 4, e06980. doi:10.7554/eLife.06980
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F

from tomoforge.ctf import ctf_2d, electron_wavelength_angstrom
from tomoforge.fourier import dose_weights, fftfreq_grid, shift_phase_ramp_2d
from tomoforge.geometry import point_defocus_angstrom, projection_matrices
from tomoforge.simulate.detector import MtfCurve, XrayEvent, add_xrays, mtf_at, poisson_counts
from tomoforge.simulate.potential import ICE_DENSITY_G_PER_CM3, ICE_MEAN_INNER_POTENTIAL_VOLT

__all__ = [
    "ICE_MOLECULES_PER_ANGSTROM3",
    "add_ice_texture",
    "contrast_spectrum",
    "expose",
    "fourier_bin",
    "fourier_upsample_spectrum",
    "frame_intensity",
    "frequency_magnitude",
    "image_wave",
    "interaction_constant_rad_per_volt_angstrom",
    "mtf_transfer",
    "project_tilt",
]

_ELECTRON_REST_ENERGY_EV = 510998.95
_MAX_SAMPLES_PER_CHUNK = 1 << 23


def interaction_constant_rad_per_volt_angstrom(voltage_kv: float) -> float:
    """Relativistic interaction constant ``σ = (2π / λV)·(mc² + eV)/(2mc² + eV)``.

    Parameters
    ----------
    voltage_kv
        Acceleration voltage in kV.

    Returns
    -------
    float
        σ in rad/(V·Å): 0.00065258 at 300 kV, 0.00072884 at 200 kV.

    References
    ----------
    E. J. Kirkland (2010). Advanced Computing in Electron Microscopy, 2nd ed., eq. 5.6.
    doi:10.1007/978-1-4419-6533-2
    """
    volts = float(voltage_kv) * 1e3
    wavelength = float(electron_wavelength_angstrom(float(voltage_kv)))
    e0 = _ELECTRON_REST_ENERGY_EV
    return 2.0 * math.pi / (wavelength * volts) * (e0 + volts) / (2.0 * e0 + volts)


# ------------------------------------------------------------------------------------------------------------
# Projection
# ------------------------------------------------------------------------------------------------------------


def project_tilt(
    volume: torch.Tensor,
    *,
    voxel_size_angstrom: float,
    tilt_angle_deg: float,
    tilt_axis_angle_deg: float,
    x_tilt_deg: float = 0.0,
    shift_xy_px: Sequence[float] = (0.0, 0.0),
    out_shape_yx: Sequence[int],
    n_slabs: int,
    lateral_padding: Literal["border", "zeros"] = "border",
    interpolation: Literal["bicubic", "bilinear"] = "bicubic",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Projected potential of a volume in one raw tilt image, split into slabs of equal depth.

    Image pixel ``(x, y)`` (relative to the image centre ``N//2``, in voxels) integrates the volume along the ray of
    specimen points ``X = Rᵀ·(x − s_x, y − s_y, depth)``, ``R = Rz(α)·Ry(θ)·Rx(φ)``
    (:func:`tomoforge.geometry.projection_matrices`), i.e. exactly the projection model of CONVENTIONS.md §7.
    The ray is sampled where it crosses the volume's z-layers (one sample per layer, ``1/|cos|`` voxels apart along
    the ray), so each sample is a 2D interpolation within one layer (``torch.nn.functional.grid_sample``, chunked
    over layers) instead of a 3D one; each group of layers is added to the depth slab of its depth at that pixel.

    Parameters
    ----------
    volume
        ``(z, y, x)`` potential in volts, centred at voxel ``N//2`` of each axis.
    voxel_size_angstrom
        Voxel size in Å (also the image pixel).
    tilt_angle_deg, tilt_axis_angle_deg, x_tilt_deg
        θ, α and φ of the view (degrees).
    shift_xy_px
        ``s``: image position of the volume centre, in pixels from the image centre.
    out_shape_yx
        ``(h, w)`` of the image.
    n_slabs
        Number of depth slabs spanning the depths at which the volume is seen.
    lateral_padding
        ``"border"`` (default): rays leaving the volume through its sides see its edge voxels continued (the ice
        slab goes on beyond the simulated region, so tilted images have no artificial ice edge); ``"zeros"``:
        vacuum outside. Above and below the volume there is always vacuum.
    interpolation
        Within-layer interpolation: ``"bicubic"`` (default; transfers 0.6 of the amplitude at Nyquist where
        bilinear transfers 0.4, at twice the cost) or ``"bilinear"``.

    Returns
    -------
    slabs : torch.Tensor
        ``(n_slabs, h, w)`` projected potential in V·Å (float32, device of ``volume``), slab 0 deepest.
    slab_depths_angstrom : torch.Tensor
        ``(n_slabs,)`` depth of each slab's centre in Å, positive towards the electron source (float64).
    """
    if volume.ndim != 3 or min(volume.shape) < 2:
        raise ValueError(f"volume must be (z, y, x) with every size >= 2, got {tuple(volume.shape)}")
    if n_slabs < 1:
        raise ValueError("n_slabs must be at least 1")
    if lateral_padding not in ("border", "zeros"):
        raise ValueError(f"lateral_padding must be 'border' or 'zeros', not {lateral_padding!r}")
    if interpolation not in ("bicubic", "bilinear"):
        raise ValueError(f"interpolation must be 'bicubic' or 'bilinear', not {interpolation!r}")
    device = volume.device
    f64 = torch.float64
    nz, ny, nx = (int(n) for n in volume.shape)
    h, w = (int(n) for n in out_shape_yx)
    matrix = projection_matrices(float(tilt_angle_deg), float(tilt_axis_angle_deg), None, float(x_tilt_deg))
    rt = matrix[:3, :3].to(device=device, dtype=f64).T  # image (x, y, depth) → specimen
    beam = rt[:, 2]  # specimen direction of +depth
    bz = float(beam[2])
    if abs(bz) < 1e-3:
        raise ValueError("the beam runs parallel to the volume's layers (tilt ≈ 90°)")
    sx, sy = (float(v) for v in shift_xy_px)
    xs = torch.arange(w, device=device, dtype=f64) - w // 2 - sx
    ys = torch.arange(h, device=device, dtype=f64) - h // 2 - sy
    slope = beam[:2] / bz  # lateral displacement per layer along the ray
    a_x = rt[:2, 0] - slope * rt[2, 0]
    a_y = rt[:2, 1] - slope * rt[2, 1]
    centre = torch.tensor([nx // 2, ny // 2], device=device, dtype=f64)
    scale = torch.tensor([2.0 / (nx - 1), 2.0 / (ny - 1)], device=device, dtype=f64)
    # Normalised grid of layer z = 0 and its change per layer, (h, w, 2) in grid_sample's (x, y) order.
    base = ((xs[None, :, None] * a_x + ys[:, None, None] * a_y + centre) * scale - 1.0).to(torch.float32)
    step = (slope * scale).to(torch.float32)
    p0z = (
        rt[2, 0] * xs[None, :] + rt[2, 1] * ys[:, None]
    )  # specimen z of the depth-0 point of each ray, (h, w)
    z_layers = torch.arange(nz, device=device, dtype=f64) - nz // 2
    ends = torch.tensor([-0.5 - nz // 2, nz - 0.5 - nz // 2], device=device, dtype=f64)
    extremes = torch.stack([p0z.min(), p0z.max()])
    depths = (ends[:, None] - extremes[None, :]) / bz
    d_min, d_max = float(depths.min()), float(depths.max())
    delta = (d_max - d_min) / n_slabs
    group = int(max(1, min(0.5 * delta * abs(bz), _MAX_SAMPLES_PER_CHUNK // max(h * w, 1))))
    flat_layers = volume.reshape(nz, -1)
    occupied = (flat_layers.amax(dim=1) != 0) | (flat_layers.amin(dim=1) != 0)  # no copy of the volume
    slabs = torch.zeros(n_slabs * h * w, device=device, dtype=torch.float32)
    pixels = torch.arange(h * w, device=device)
    for k0 in range(0, nz, group):
        k1 = min(k0 + group, nz)
        if not bool(occupied[k0:k1].any()):
            continue
        z = z_layers[k0:k1]
        grid = base[None] + step * z.to(torch.float32)[:, None, None, None]
        sampled = F.grid_sample(
            volume[k0:k1, None].to(torch.float32),
            grid,
            mode=interpolation,
            padding_mode=lateral_padding,
            align_corners=True,
        ).sum(dim=(0, 1))
        depth = (float(z.mean()) - p0z) / bz
        index = torch.floor((depth - d_min) / delta).to(torch.int64).clamp_(0, n_slabs - 1)
        slabs.index_add_(0, (index * (h * w)).reshape(-1) + pixels, sampled.reshape(-1))
    slabs *= float(voxel_size_angstrom) / abs(bz)
    slab_depths = (d_min + (torch.arange(n_slabs, device=device, dtype=f64) + 0.5) * delta) * float(
        voxel_size_angstrom
    )
    return slabs.reshape(n_slabs, h, w), slab_depths


# ------------------------------------------------------------------------------------------------------------
# The molecular texture of amorphous ice
# ------------------------------------------------------------------------------------------------------------

ICE_MOLECULES_PER_ANGSTROM3 = ICE_DENSITY_G_PER_CM3 * 6.02214076e23 * 1e-24 / 18.015
"""Water molecules per Å³ in vitreous ice of 0.94 g/cm³ (0.0314)."""


def add_ice_texture(
    slabs: torch.Tensor,
    slab_depths_angstrom: torch.Tensor,
    *,
    pixel_size_angstrom: float,
    structure_factor: float,
    generator: torch.Generator,
    mean_inner_potential_volt: float = ICE_MEAN_INNER_POTENTIAL_VOLT,
) -> torch.Tensor:
    """Add the projected potential fluctuation that the ice's molecules cause to every depth slab.

    A column of ice of length ``L`` over a pixel of area ``a`` holds on average ``ρaL`` water molecules
    (``ρ`` = 0.0314 Å⁻³); were they independent (an ideal gas, structure factor ``S = 1``) their number would be
    Poisson-distributed and the column's projected potential would fluctuate by ``MIP·√(L/ρa)`` (V·Å) about
    ``MIP·L``. In the liquid or amorphous solid the fluctuations at the long wavelengths a pixel averages over are
    reduced by the structure factor ``S(k)`` (0.06 at ``k = 0`` for water, rising towards the first diffraction ring
    at 3.7 Å), so each pixel of each slab gets an independent Gaussian of standard deviation ``MIP·√(S·L/ρa)``.
    ``L`` is the slab's ice path at that pixel, estimated as its projected potential over the MIP (at most the
    slab's depth). This texture is what makes the Thon rings of thick-ice images.

    It is drawn independently for every tilt (a texture in a 3D volume would be smeared into streaks where the
    rays of a tilted view leave the simulated volume sideways): it reconstructs as noise, not as structure.

    Parameters
    ----------
    slabs
        ``(n, h, w)`` projected potential per depth slab in V·Å (:func:`project_tilt`).
    slab_depths_angstrom
        ``(n,)`` slab depths in Å, equally spaced.
    pixel_size_angstrom
        Pixel size in Å.
    structure_factor
        Effective ``S`` over the simulated band (dimensionless, ≥ 0).
    generator
        CPU random generator.
    mean_inner_potential_volt
        Mean inner potential of the ice (4.57 V).

    Returns
    -------
    torch.Tensor
        ``(n, h, w)`` slabs with the texture added (a new tensor).

    References
    ----------
    .. [1] A. K. Soper (2000). The radial distribution functions of water and ice from 220 to 673 K and at
       pressures up to 400 MPa. Chem. Phys. 258, 121–137. doi:10.1016/S0301-0104(00)00179-8
    """
    if structure_factor < 0:
        raise ValueError("structure_factor must be non-negative")
    n = slabs.shape[0]
    depth_step = float(slab_depths_angstrom[1] - slab_depths_angstrom[0]) if n > 1 else float("inf")
    mip = float(mean_inner_potential_volt)
    path = (slabs / mip).clamp(min=0.0, max=depth_step)
    scale = mip * math.sqrt(structure_factor / (ICE_MOLECULES_PER_ANGSTROM3 * pixel_size_angstrom**2))
    noise = torch.randn(slabs.shape, generator=generator, dtype=torch.float32).to(slabs.device)
    return slabs + (scale * noise * path.sqrt()).to(slabs.dtype)


# ------------------------------------------------------------------------------------------------------------
# Contrast
# ------------------------------------------------------------------------------------------------------------


def _zero_nyquist_(spectrum: torch.Tensor, shape_yx: Sequence[int]) -> torch.Tensor:
    """Zero the Nyquist row/column of an rfft spectrum of even-sized images, in place."""
    h, w = shape_yx
    if h % 2 == 0:
        spectrum[..., h // 2, :] = 0
    if w % 2 == 0:
        spectrum[..., w // 2] = 0
    return spectrum


def contrast_spectrum(
    slabs: torch.Tensor,
    slab_depths_angstrom: torch.Tensor,
    *,
    pixel_size_angstrom: float,
    defocus_u_angstrom: float,
    defocus_v_angstrom: float,
    astigmatism_angle_deg: float,
    voltage_kv: float,
    spherical_aberration_mm: float,
    amplitude_contrast: float,
    b_factor_angstrom2: float = 0.0,
    handedness: int = 1,
    slabs_per_chunk: int = 8,
) -> torch.Tensor:
    """Spectrum of the linear image contrast ``L = 2·Σ_slabs F⁻¹[CTF_slab · F[σ·V_slab]]``.

    Parameters
    ----------
    slabs
        ``(n, h, w)`` projected potential per depth slab in V·Å (:func:`project_tilt`).
    slab_depths_angstrom
        ``(n,)`` slab depths in Å (positive towards the source).
    pixel_size_angstrom
        Pixel size of the slabs in Å.
    defocus_u_angstrom, defocus_v_angstrom, astigmatism_angle_deg
        Defocus of the view at depth 0 (the tomogram centre's height), positive underfocus, and the angle of ``u``
        from image +x (CONVENTIONS.md §8); each slab's defocus is ``Δf − handedness·depth``.
    voltage_kv, spherical_aberration_mm, amplitude_contrast
        Microscope constants.
    b_factor_angstrom2
        Envelope ``exp(−B k²/4)`` (partial coherence and other losses), 0 for none.
    handedness
        +1 (CONVENTIONS.md §8) or −1 for mirrored data.
    slabs_per_chunk
        Slabs transformed at once (bounds memory).

    Returns
    -------
    torch.Tensor
        ``(h, w // 2 + 1)`` complex rfft of ``L`` (dimensionless), with DC and the Nyquist row/column set to 0.

    References
    ----------
    .. [1] E. J. Kirkland (2010). Advanced Computing in Electron Microscopy, 2nd ed., §6.4.
       doi:10.1007/978-1-4419-6533-2
    .. [2] M. Vulović et al. (2013). J. Struct. Biol. 183, 19–32. doi:10.1016/j.jsb.2013.05.008
    """
    if slabs.ndim != 3 or slab_depths_angstrom.shape != slabs.shape[:1]:
        raise ValueError("slabs must be (n, h, w) with one depth per slab")
    n, h, w = slabs.shape
    sigma = interaction_constant_rad_per_volt_angstrom(voltage_kv)
    depths_px = slab_depths_angstrom.to(device=slabs.device, dtype=torch.float64) / pixel_size_angstrom
    spectrum = torch.zeros((h, w // 2 + 1), dtype=torch.complex64, device=slabs.device)
    for start in range(0, n, slabs_per_chunk):
        d = depths_px[start : start + slabs_per_chunk]
        ctf = ctf_2d(
            defocus_u_angstrom=point_defocus_angstrom(defocus_u_angstrom, d, pixel_size_angstrom, handedness),
            defocus_v_angstrom=point_defocus_angstrom(defocus_v_angstrom, d, pixel_size_angstrom, handedness),
            astigmatism_angle_deg=float(astigmatism_angle_deg),
            voltage_kv=float(voltage_kv),
            spherical_aberration_mm=float(spherical_aberration_mm),
            amplitude_contrast=float(amplitude_contrast),
            b_factor_angstrom2=float(b_factor_angstrom2),
            pixel_size_angstrom=pixel_size_angstrom,
            shape_yx=(h, w),
            dtype=torch.float32,
            device=slabs.device,
        )
        phase = torch.fft.rfftn(slabs[start : start + slabs_per_chunk].to(torch.float32), dim=(-2, -1))
        spectrum += (ctf * phase).sum(dim=0)
    spectrum *= 2.0 * sigma
    spectrum[0, 0] = 0
    return _zero_nyquist_(spectrum, (h, w))


def fourier_upsample_spectrum(spectrum: torch.Tensor, shape_yx: Sequence[int], factor: int) -> torch.Tensor:
    """Zero-pad an rfft spectrum onto a grid ``factor`` times finer (band-limited interpolation).

    Sample ``n`` of the coarse image becomes sample ``factor·n`` of the fine one, so the centres ``N//2`` agree for
    even sizes. Values are preserved (the spectrum is scaled by ``factor²`` for the larger inverse transform); the
    coarse Nyquist row/column is dropped.

    Parameters
    ----------
    spectrum
        ``(..., h, w // 2 + 1)`` rfft of real ``(h, w)`` images.
    shape_yx
        ``(h, w)``.
    factor
        Integer upsampling factor ≥ 1.

    Returns
    -------
    torch.Tensor
        ``(..., factor·h, factor·w // 2 + 1)`` spectrum.
    """
    if factor < 1 or int(factor) != factor:
        raise ValueError(f"factor must be a positive integer, got {factor}")
    h, w = (int(n) for n in shape_yx)
    factor = int(factor)
    if factor == 1:
        return _zero_nyquist_(spectrum.clone(), (h, w))
    big_h, big_w = factor * h, factor * w
    out = torch.zeros(
        (*spectrum.shape[:-2], big_h, big_w // 2 + 1), dtype=spectrum.dtype, device=spectrum.device
    )
    n_pos = (h + 1) // 2
    n_neg = h // 2 - (1 if h % 2 == 0 else 0)
    n_col = (w + 1) // 2
    scale = float(factor * factor)
    out[..., :n_pos, :n_col] = spectrum[..., :n_pos, :n_col] * scale
    if n_neg:
        out[..., big_h - n_neg :, :n_col] = spectrum[..., h - n_neg :, :n_col] * scale
    return out


def fourier_bin(
    data: torch.Tensor, factor: int, *, dims: Sequence[int], chunk_size: int = 32
) -> torch.Tensor:
    """Bin real data by an integer factor along some axes by Fourier cropping (ideal low-pass, then decimation).

    Along each axis of length ``N = factor·M`` the rfft is cropped to the ``M`` lowest frequencies (the new Nyquist
    coefficient set to 0) and transformed back: output sample ``m`` is the low-passed input at sample
    ``factor·m``, so the centres ``N//2`` and ``M//2`` coincide for even ``M``. Means are preserved. Axes are
    processed one after the other in chunks of ``chunk_size`` along the first other axis, so a large volume needs
    little memory beyond its binned copies.

    Parameters
    ----------
    data
        Real tensor.
    factor
        Integer factor ≥ 1; the length of every binned axis must be a multiple of it.
    dims
        Axes to bin.
    chunk_size
        Slices per chunk.

    Returns
    -------
    torch.Tensor
        The binned data (float32 unless ``data`` is float64).
    """
    out = data if data.is_floating_point() else data.to(torch.float32)
    if factor == 1:
        return out
    for dim in sorted(d % data.ndim for d in dims):
        n = out.shape[dim]
        if n % factor:
            raise ValueError(f"axis {dim} of length {n} is not a multiple of {factor}")
        m = n // factor
        other = next((d for d in range(out.ndim) if d != dim), None)
        shape = list(out.shape)
        shape[dim] = m
        result = torch.empty(shape, dtype=out.dtype, device=out.device)
        keep = m // 2 + 1
        chunks = range(0, out.shape[other], chunk_size) if other is not None else [0]
        for start in chunks:
            part = (
                out if other is None else out.narrow(other, start, min(chunk_size, out.shape[other] - start))
            )
            spectrum = torch.fft.rfft(part, dim=dim).narrow(dim, 0, keep).clone()
            if m % 2 == 0:
                spectrum.select(dim, m // 2).zero_()
            binned = torch.fft.irfft(spectrum, n=m, dim=dim) / factor
            if other is None:
                result = binned
            else:
                result.narrow(other, start, part.shape[other]).copy_(binned)
        out = result
    return out


def image_wave(
    slabs: torch.Tensor,
    slab_depths_angstrom: torch.Tensor,
    *,
    pixel_size_angstrom: float,
    defocus_u_angstrom: float,
    defocus_v_angstrom: float,
    astigmatism_angle_deg: float,
    voltage_kv: float,
    spherical_aberration_mm: float,
    amplitude_contrast: float,
    b_factor_angstrom2: float = 0.0,
    prior_dose_e_per_angstrom2: float = 0.0,
    dose_e_per_angstrom2: float = 0.0,
    handedness: int = 1,
) -> torch.Tensor:
    """Expected relative intensity of one exposure of a tilt (no motion, no detector): the noise-free image.

    :func:`contrast_spectrum` followed by :func:`frame_intensity` on the slabs' grid.

    Parameters
    ----------
    slabs, slab_depths_angstrom
        From :func:`project_tilt`.
    pixel_size_angstrom, defocus_u_angstrom, defocus_v_angstrom, astigmatism_angle_deg, voltage_kv,
    spherical_aberration_mm, amplitude_contrast, b_factor_angstrom2, handedness
        As in :func:`contrast_spectrum`.
    prior_dose_e_per_angstrom2, dose_e_per_angstrom2
        Exposure before and during the image (0 and 0: undamaged).

    Returns
    -------
    torch.Tensor
        ``(h, w)`` intensity relative to the incident beam (mean 1).
    """
    spectrum = contrast_spectrum(
        slabs,
        slab_depths_angstrom,
        pixel_size_angstrom=pixel_size_angstrom,
        defocus_u_angstrom=defocus_u_angstrom,
        defocus_v_angstrom=defocus_v_angstrom,
        astigmatism_angle_deg=astigmatism_angle_deg,
        voltage_kv=voltage_kv,
        spherical_aberration_mm=spherical_aberration_mm,
        amplitude_contrast=amplitude_contrast,
        b_factor_angstrom2=b_factor_angstrom2,
        handedness=handedness,
    )
    return frame_intensity(
        spectrum,
        shape_yx=tuple(slabs.shape[-2:]),
        pixel_size_angstrom=pixel_size_angstrom,
        voltage_kv=voltage_kv,
        prior_dose_e_per_angstrom2=prior_dose_e_per_angstrom2,
        dose_e_per_angstrom2=dose_e_per_angstrom2,
    )


# ------------------------------------------------------------------------------------------------------------
# Frames
# ------------------------------------------------------------------------------------------------------------


def frequency_magnitude(
    shape_yx: Sequence[int], *, pixel_size_angstrom: float, device: torch.device | str | None = None
) -> torch.Tensor:
    """``|k|`` in cycles/Å on the rfft grid of images of ``shape_yx``: ``(h, w // 2 + 1)`` float32."""
    freq = fftfreq_grid(
        tuple(shape_yx), spacing_angstrom=pixel_size_angstrom, device=device, dtype=torch.float32
    )
    return torch.linalg.vector_norm(freq, dim=-1)


def mtf_transfer(
    shape_yx: Sequence[int],
    curve: MtfCurve,
    *,
    detector_pixels_per_image_pixel: float,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """The radial MTF on the rfft grid of images of ``shape_yx`` (:func:`tomoforge.simulate.detector.mtf_at`).

    Parameters
    ----------
    shape_yx
        ``(h, w)``.
    curve
        Tabulated MTF (frequencies per detector pixel).
    detector_pixels_per_image_pixel
        0.5 for super-resolution frames, 1 for counting-mode frames.
    device
        Of the result.

    Returns
    -------
    torch.Tensor
        ``(h, w // 2 + 1)`` float32 MTF values.
    """
    freq = fftfreq_grid(tuple(shape_yx), device=device, dtype=torch.float32)
    k = torch.linalg.vector_norm(freq, dim=-1) / detector_pixels_per_image_pixel
    return mtf_at(k, curve)


def frame_intensity(
    spectrum: torch.Tensor,
    *,
    shape_yx: Sequence[int],
    pixel_size_angstrom: float,
    voltage_kv: float,
    prior_dose_e_per_angstrom2: float = 0.0,
    dose_e_per_angstrom2: float = 0.0,
    shift_xy_px: Sequence[float] | torch.Tensor | None = None,
    mtf: torch.Tensor | None = None,
    crop_shape_yx: Sequence[int] | None = None,
    frequency_per_angstrom: torch.Tensor | None = None,
) -> torch.Tensor:
    """Expected relative intensity of one frame from the contrast spectrum.

    ``I = exp(L) / ⟨exp(L)⟩`` with ``L = F⁻¹[spectrum · W_dose · ramp(s)]``, then blurred by the MTF and cropped
    about the centre (see the module notes).

    Parameters
    ----------
    spectrum
        ``(h, w // 2 + 1)`` contrast spectrum on this frame's grid (:func:`contrast_spectrum`, possibly
        :func:`fourier_upsample_spectrum`-ed).
    shape_yx
        ``(h, w)`` of that grid.
    pixel_size_angstrom
        Its pixel size in Å.
    voltage_kv
        For the critical exposure (200 or 300 kV).
    prior_dose_e_per_angstrom2, dose_e_per_angstrom2
        Exposure before this frame and of the frame itself (e⁻/Å²); radiation damage weights averaged over it.
    shift_xy_px
        Specimen displacement of this frame in pixels of this grid (content moves towards ``+s``).
    mtf
        ``(h, w // 2 + 1)`` detector MTF (:func:`mtf_transfer`); ``None`` for a perfect detector.
    crop_shape_yx
        Output ``(h', w')`` cut about the centre (``h//2 − h'//2`` onwards); the whole grid when ``None``.
    frequency_per_angstrom
        ``(h, w // 2 + 1)`` spatial frequency magnitudes of the grid in cycles/Å, if already computed (saves
        recomputing them for every frame).

    Returns
    -------
    torch.Tensor
        ``(h', w')`` float32 relative intensity (mean 1 over the whole grid, before cropping).
    """
    h, w = (int(n) for n in shape_yx)
    device = spectrum.device
    work = spectrum
    if prior_dose_e_per_angstrom2 > 0 or dose_e_per_angstrom2 > 0:
        if frequency_per_angstrom is None:
            frequency_per_angstrom = frequency_magnitude(
                (h, w), pixel_size_angstrom=pixel_size_angstrom, device=device
            )
        weights = dose_weights(
            frequency_per_angstrom,
            prior_dose_e_per_angstrom2=float(prior_dose_e_per_angstrom2),
            dose_e_per_angstrom2=float(dose_e_per_angstrom2),
            voltage_kv=float(voltage_kv),
        )
        work = work * weights
    if shift_xy_px is not None:
        shift = torch.as_tensor(shift_xy_px, dtype=torch.float32, device=device).reshape(2)
        work = work * shift_phase_ramp_2d(shift, (h, w)).to(work.dtype)
    contrast = torch.fft.irfftn(work, s=(h, w), dim=(-2, -1))
    intensity = torch.exp(contrast)
    intensity /= intensity.mean()
    if mtf is not None:
        intensity = torch.fft.irfftn(torch.fft.rfftn(intensity) * mtf, s=(h, w))
    if crop_shape_yx is not None:
        ch, cw = (int(n) for n in crop_shape_yx)
        y0, x0 = h // 2 - ch // 2, w // 2 - cw // 2
        if y0 < 0 or x0 < 0:
            raise ValueError(f"crop {ch}×{cw} is larger than the grid {h}×{w}")
        intensity = intensity[y0 : y0 + ch, x0 : x0 + cw]
    return intensity


def expose(
    intensity: torch.Tensor,
    *,
    electrons_per_pixel: float,
    generator: torch.Generator,
    xray_rate_per_frame: float = 0.0,
    xray_generator: torch.Generator | None = None,
    xray_value_range: tuple[float, float] = (30.0, 120.0),
    max_count: int | None = None,
) -> tuple[torch.Tensor, list[XrayEvent]]:
    """Counts of one frame: Poisson about ``intensity · electrons_per_pixel``, plus X-ray events.

    Parameters
    ----------
    intensity
        ``(h, w)`` expected relative intensity (non-negative).
    electrons_per_pixel
        Incident electrons per pixel in this frame (dose per frame in e⁻/Å² × pixel area in Å²).
    generator
        Random generator of the counting noise.
    xray_rate_per_frame
        Mean number of X-ray events in the frame (:func:`tomoforge.simulate.detector.add_xrays`).
    xray_generator
        Random generator of the X-rays (required when the rate is positive).
    xray_value_range
        Counts added per pixel of an event.
    max_count
        Saturation: counts above it are clipped (e.g. 127 for 8-bit MRC frames); ``None`` for none.

    Returns
    -------
    counts, events
        ``(h, w)`` int32 counts and the X-ray events (``frame_index`` 0).
    """
    counts = poisson_counts(intensity.clamp(min=0.0) * float(electrons_per_pixel), generator=generator)
    events: list[XrayEvent] = []
    if xray_rate_per_frame > 0:
        if xray_generator is None:
            raise ValueError("xray_generator is required when xray_rate_per_frame > 0")
        with_xrays, events = add_xrays(
            counts[None],
            rate_per_frame=xray_rate_per_frame,
            generator=xray_generator,
            hot_value_range=xray_value_range,
        )
        counts = with_xrays[0]
    if max_count is not None:
        counts = counts.clamp_(max=int(max_count))
    return counts, events
