"""De novo initial model from 3D pseudo-subtomograms: stochastic expectation-maximisation over orientations and
shifts, then alignment of the symmetry axis to z (RELION 5's ``--denovo_3dref --grad`` and
``relion_align_symmetry``; ``../shared/docs/tutorial-steps.md`` §16.2).

**Data model.** A particle's subtomogram (``averaging.extract`` with ``dimension="3d"``) holds the transform
``D(k) = Σ_v H_v(k)·X_v(k)`` of its CTF- and dose-premultiplied views and the weights ``W(k) = Σ_v H_v(k)²``; with
views ``X_v = H_v·P_v[V] + N_v`` of white noise of power ``σ²(k)``, ``D = W·V̂_R + noise`` of power ``W·σ²``, where
``V̂_R`` is the reference turned by the particle's rotation. So the log-likelihood of a pose is, up to a constant,

    ``L(R, t) = Σ_k [Re(D(k)·conj(V̂_R(k)·e^{−2πi k·t})) − ½·W(k)·|V̂_R(k)|²] / σ²(k)``,

over the frequencies below the current resolution limit (the DC term left out). The cross term for all shifts
``t`` at once is one inverse FFT per particle and rotation.

**Local frames and priors.** Each particle's subtomogram is first turned into the frame of its picked rotation
``Q`` (:func:`local_frame`: ``S'(x) = S(Q·x)``), so that every particle shares one set of candidate rotations
``C`` (reference → local frame) and its pose is ``R = Q·C``. With a tilt prior (RELION's ``--sigma_tilt``) the
candidates' z axes stay within ``3σ`` of the local z axis (the picked normal) and carry the Gaussian log-prior
``−θ²/2σ²`` of their tilt ``θ``; without one they cover SO(3) and ``Q`` is ignored (:func:`candidate_rotations`).

**Stochastic EM** (:func:`em_batch`, :func:`update_model`). Mini-batches of particles: the posterior over
(rotation, shift) of every particle under the current model, then the posterior-weighted sums of its whitened
data ``Σ p·D/σ²`` (shifted back) and weights ``Σ p·W/σ²``, turned into the reference frame by each candidate's
inverse rotation. Running sums with a step size ``η`` (online EM: ``A ← (1 − η)·A + η·(N/n)·A_batch``) give the
regularised map ``V = A / (B + 1/(T·τ²))`` with ``τ²(k)`` the signal power per shell the sums hold (their power
less their noise power) and ``T`` RELION's ``tau2_fudge``; the map is then masked by a soft sphere (flattened solvent), low-passed to the current limit and,
when asked, symmetrised. The first model comes from one batch at random poses (RELION's random start).

**Symmetry axis** (:func:`symmetry_axis_rotation`): for a model refined in C1, the direction ``u`` about which
it best matches itself turned by ``360°/n`` (mean correlation over the ``n − 1`` turns, directions on a grid
then refined), and for Dn the 2-fold perpendicular to it; the rotation ``G`` taking them to z (and x) brings the
map to RELION's standard frame, where the group is applied.

Noise power ``σ²`` is estimated as the mean ``|D|²/W`` per shell over the particles (where ``W`` is not small):
the noise plus the particles' own signal, so posteriors are slightly broader than the true ones (conservative).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch

from tomoforge.averaging.fsc import shell_index
from tomoforge.averaging.insert import symmetry_rotations
from tomoforge.fourier import rfft_multiplicity
from tomoforge.geometry.rotations import rotate_volume, rotation_from_vector, rotation_x, rotation_z

__all__ = [
    "Accumulated",
    "Posterior",
    "Subtomograms",
    "DeNovoResult",
    "candidate_rotations",
    "crop_batch",
    "de_novo_model",
    "em_batch",
    "half_grid",
    "inverse_noise_power",
    "local_frame",
    "low_pass",
    "noise_power",
    "offsets_within",
    "posterior",
    "random_posterior",
    "symmetrize",
    "symmetry_axis_rotation",
    "update_model",
    "working_size",
]


class Subtomograms(NamedTuple):
    """A batch of subtomograms in their particles' local frames."""

    data: torch.Tensor
    """``(n, b, b, b // 2 + 1)`` complex ``rfftn`` of the ``ifftshift``-ed data volumes (centre voxel at 0)."""
    weights: torch.Tensor
    """``(n, b, b, b)`` real weights, centred (the transform's origin at voxel ``b // 2``)."""


def local_frame(data: torch.Tensor, weights: torch.Tensor, rotations: torch.Tensor) -> Subtomograms:
    """Subtomograms ``(n, b, b, b)`` (data, real space) and weights ``(n, b, b, b)`` (centred) turned into the frames
    of the rotations ``Q`` ``(n, 3, 3)``: ``S'(x) = S(Q·x)``, and likewise the weights (a rotation acts alike on
    real and Fourier space)."""
    inverse = rotations.transpose(-1, -2)
    turned = rotate_volume(data.float(), inverse)
    turned_weights = rotate_volume(weights.float(), inverse).clamp(min=0.0)
    spectra = torch.fft.rfftn(torch.fft.ifftshift(turned, dim=(-3, -2, -1)), dim=(-3, -2, -1))
    return Subtomograms(spectra, turned_weights)


def half_grid(weights: torch.Tensor) -> torch.Tensor:
    """Centred full-grid weights ``(..., b, b, b)`` on the rfft half grid ``(..., b, b, b // 2 + 1)``."""
    b = weights.shape[-1]
    return torch.fft.ifftshift(weights, dim=(-3, -2, -1))[..., : b // 2 + 1]


def working_size(box: int, cutoff_per_pixel: float) -> int:
    """The even box ``b' ≤ b`` whose transform still holds every frequency up to ``cutoff_per_pixel`` of the box
    ``b`` (``b'/2 > cutoff·b``): the size the batch's computations run at."""
    size = 2 * math.ceil(cutoff_per_pixel * box) + 2
    return box if size >= box else size


def _axis_index(box: int, size: int, device: torch.device) -> torch.Tensor:
    h = size // 2
    return torch.cat([torch.arange(0, h, device=device), torch.arange(box - h, box, device=device)])


def crop_batch(batch: Subtomograms, size: int) -> Subtomograms:
    """The batch with its transforms cut to the frequencies of a ``size`` box (the same Fourier values; the weights
    cut about their centre)."""
    b = batch.weights.shape[-1]
    if size >= b:
        return batch
    return Subtomograms(_crop_half(batch.data, size), _crop_centred(batch.weights, size))


def _crop_centred(volume: torch.Tensor, size: int) -> torch.Tensor:
    b = volume.shape[-1]
    lo = b // 2 - size // 2
    return volume[..., lo : lo + size, lo : lo + size, lo : lo + size]


def _crop_half(spectra: torch.Tensor, size: int) -> torch.Tensor:
    b = spectra.shape[-2]
    if size >= b:
        return spectra
    i = _axis_index(b, size, spectra.device)
    return spectra[..., i, :, :][..., i, :][..., : size // 2 + 1]


def _pad_half(spectrum: torch.Tensor, box: int) -> torch.Tensor:
    size = spectrum.shape[-2]
    if size >= box:
        return spectrum
    out = spectrum.new_zeros((box, box, box // 2 + 1))
    i = _axis_index(box, size, spectrum.device)
    out[i[:, None, None], i[None, :, None], torch.arange(size // 2 + 1, device=spectrum.device)] = spectrum
    return out


def _pad_centred(volume: torch.Tensor, box: int) -> torch.Tensor:
    size = volume.shape[-1]
    if size >= box:
        return volume
    out = volume.new_zeros((box, box, box))
    lo = box // 2 - size // 2
    out[lo : lo + size, lo : lo + size, lo : lo + size] = volume
    return out


def inverse_noise_power(sigma2: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``1/σ²`` per shell, zero for shells without an estimate."""
    return torch.where(sigma2 > 0, 1.0 / sigma2.clamp(min=1e-30), 0.0).float().to(device)


def noise_power(
    batch: Subtomograms, *, min_weight_fraction: float = 0.05
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per shell ``(b // 2 + 1 + …)``: the sum of ``|D|²/W`` over the samples whose weight exceeds
    ``min_weight_fraction`` of the batch's largest, and their count (to be pooled over batches)."""
    b = batch.weights.shape[-1]
    w = half_grid(batch.weights)
    shells = shell_index((b, b, b), batch.data.device).expand_as(w)
    used = w > min_weight_fraction * float(w.max())
    ratio = torch.where(used, batch.data.abs().square() / w.clamp(min=1e-30), torch.zeros_like(w))
    n = int(shells.max()) + 1
    total = torch.bincount(shells.flatten(), weights=ratio.flatten().double(), minlength=n)
    count = torch.bincount(shells.flatten(), weights=used.flatten().double(), minlength=n)
    return total, count


def candidate_rotations(
    step_deg: float, *, max_tilt_deg: float | None = None, symmetry_order: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """Candidate rotations ``(c, 3, 3)`` (reference → local frame) and the tilt of their z axes ``(c,)`` in degrees.

    Directions of the reference's z axis on a Fibonacci sphere ``step_deg`` apart (only those within
    ``max_tilt_deg`` of z when given, always including z itself), each with in-plane angles ``step_deg`` apart
    over ``[0°, 360°/n)`` for a reference with ``n``-fold symmetry about z.
    """
    from tomoforge.picking.template_matching import angular_sampling

    rotations = angular_sampling(step_deg, symmetry_order=symmetry_order)
    tilt = torch.rad2deg(torch.acos(rotations[:, 2, 2].clamp(-1.0, 1.0)))
    if max_tilt_deg is not None:
        keep = tilt <= max_tilt_deg
        n_psi = max(1, int(round(360.0 / symmetry_order / step_deg)))
        spin = rotation_z(torch.arange(n_psi, dtype=torch.float64) * (360.0 / symmetry_order / n_psi))
        rotations = torch.cat([spin, rotations[keep]])
        tilt = torch.cat([torch.zeros(n_psi, dtype=torch.float64), tilt[keep]])
    return rotations, tilt


def offsets_within(radius_px: float, step_px: float = 1.0) -> torch.Tensor:
    """``(t, 3)`` shifts ``(x, y, z)`` in pixels on a grid of ``step_px``, of length at most ``radius_px`` (zero
    first)."""
    r = int(math.floor(radius_px / step_px + 1e-9))
    grid = torch.arange(-r, r + 1, dtype=torch.float64) * step_px
    points = torch.cartesian_prod(grid, grid, grid)
    length = torch.linalg.vector_norm(points, dim=1)
    points = points[length <= radius_px + 1e-9]
    return points[torch.argsort(torch.linalg.vector_norm(points, dim=1), stable=True)]


def low_pass(volume: torch.Tensor, cutoff_per_pixel: float, *, edge_per_pixel: float = 0.02) -> torch.Tensor:
    """A centred volume ``(b, b, b)`` low-passed with a raised-cosine edge ending at ``cutoff_per_pixel``."""
    b = volume.shape[-1]
    radius = shell_index((b, b, b), volume.device).double() / b
    start = max(cutoff_per_pixel - edge_per_pixel, 0.0)
    fade = 0.5 * (1 + torch.cos(math.pi * (radius - start) / max(edge_per_pixel, 1e-6)))
    filt = torch.where(radius <= start, 1.0, torch.where(radius >= cutoff_per_pixel, 0.0, fade))
    spectrum = torch.fft.rfftn(torch.fft.ifftshift(volume, dim=(-3, -2, -1)), dim=(-3, -2, -1))
    out = torch.fft.irfftn(spectrum * filt.to(spectrum.real.dtype), s=(b, b, b), dim=(-3, -2, -1))
    return torch.fft.fftshift(out, dim=(-3, -2, -1))


class Posterior(NamedTuple):
    """The posterior over candidate rotations and shifts of a batch of particles."""

    probabilities: torch.Tensor
    """``(n, c, t)`` normalised per particle."""
    best_rotation: torch.Tensor
    """``(n,)`` index of the most probable (rotation, shift)'s rotation."""
    best_offset: torch.Tensor
    """``(n,)`` and its shift's index."""
    best_probability: torch.Tensor
    """``(n,)`` the posterior probability of that pair."""


def _rotated_spectra(model: torch.Tensor, rotations: torch.Tensor) -> torch.Tensor:
    turned = rotate_volume(model, rotations.to(model.dtype))
    return torch.fft.rfftn(torch.fft.ifftshift(turned, dim=(-3, -2, -1)), dim=(-3, -2, -1))


class _Band(NamedTuple):
    """The rfft samples of a (cut) grid inside the resolution limit."""

    samples: torch.Tensor  # (K,) flat indices into the (b, b, b//2+1) grid
    frequency: torch.Tensor  # (K, 3) (x, y, z) in cycles per pixel of the full box
    hermitian: torch.Tensor  # (K,) 1 or 2
    shells: torch.Tensor  # (K,) shell of the full box


def _band(box: int, size: int, cutoff_per_pixel: float, device: torch.device) -> _Band:
    shells = _crop_half(shell_index((box, box, box), device), size)
    k = torch.fft.fftfreq(size, d=box / size, device=device, dtype=torch.float64)
    kx = torch.fft.rfftfreq(size, d=box / size, device=device, dtype=torch.float64)
    grid = torch.stack(torch.broadcast_tensors(kx[None, None, :], k[None, :, None], k[:, None, None]), dim=-1)
    inside = (shells.double() / box <= cutoff_per_pixel) & (shells > 0)
    index = torch.nonzero(inside.flatten()).flatten()
    hermitian = (
        rfft_multiplicity(size, device=device, dtype=torch.float64)
        .expand(size, size, size // 2 + 1)
        .flatten()[index]
    )
    return _Band(index, grid.reshape(-1, 3)[index], hermitian, shells.flatten()[index])


def posterior(
    model: torch.Tensor,
    batch: Subtomograms,
    rotations: torch.Tensor,
    log_prior: torch.Tensor,
    offsets: torch.Tensor,
    sigma2: torch.Tensor,
    cutoff_per_pixel: float,
    *,
    chunk_elements: int = 1 << 25,
) -> Posterior:
    """The posterior of every particle of ``batch`` over ``rotations`` ``(c, 3, 3)`` (with ``log_prior`` ``(c,)``,
    or ``(n, c)`` one per particle)
    and ``offsets`` ``(t, 3)`` (pixels) under the centred ``model`` ``(B, B, B)`` (module docstring), from the
    frequencies up to ``cutoff_per_pixel``; ``sigma2`` is the noise power per shell of ``B``. The batch may be cut
    to a smaller box (:func:`crop_batch`) that still holds the cut-off. The cross term at every shift is a product
    with the shifts' phases over the band's samples (cheaper than a transform per shift grid when the band is
    small)."""
    n, box, size = batch.data.shape[0], model.shape[-1], batch.weights.shape[-1]
    device = batch.data.device
    band = _band(box, size, cutoff_per_pixel, device)
    inverse_noise = inverse_noise_power(sigma2, device)[band.shells]
    data = batch.data.reshape(n, -1)[:, band.samples] * inverse_noise
    weights = (
        half_grid(batch.weights).reshape(n, -1)[:, band.samples] * inverse_noise * band.hermitian.float()
    )
    turn = 2 * math.pi * band.frequency @ offsets.to(device=device, dtype=torch.float64).T  # (K, t)
    phases = (band.hermitian[:, None] * torch.polar(torch.ones_like(turn), turn)).to(torch.complex64)
    scores = torch.empty((n, len(rotations), len(offsets)), dtype=torch.float32, device=device)
    step = max(1, chunk_elements // max(1, n * (len(band.samples) + len(offsets))))
    # The model cut to the batch's box: the same Fourier values, turned at the smaller size.
    small = model.float()
    if size < box:
        cut = _crop_half(torch.fft.rfftn(torch.fft.ifftshift(small)), size)
        small = torch.fft.fftshift(torch.fft.irfftn(cut, s=(size, size, size)))
    for start in range(0, len(rotations), step):
        part = slice(start, min(start + step, len(rotations)))
        spectra = _rotated_spectra(small, rotations[part].to(device))
        values = spectra.reshape(spectra.shape[0], -1)[:, band.samples]  # (cc, K)
        product = data[:, None, :] * values.conj()[None]  # (n, cc, K)
        cross = (product.reshape(-1, product.shape[-1]) @ phases).real.reshape(n, -1, len(offsets))
        quad = 0.5 * weights @ values.abs().square().T  # (n, cc)
        scores[:, part] = cross - quad[..., None]
    prior = log_prior.float().to(device)
    scores = scores + (prior[None, :, None] if prior.ndim == 1 else prior[:, :, None])
    flat = scores.reshape(n, -1)
    probabilities = torch.softmax(flat, dim=1)
    best_probability, best = probabilities.max(dim=1)
    return Posterior(
        probabilities.reshape(scores.shape),
        best // len(offsets),
        best % len(offsets),
        best_probability,
    )


class Accumulated(NamedTuple):
    """Posterior-weighted sums of a batch in the reference frame."""

    data: torch.Tensor
    """``(b, b, b // 2 + 1)`` complex ``Σ p·D/σ²`` (shifted back, turned to the reference frame)."""
    weights: torch.Tensor
    """``(b, b, b)`` centred real ``Σ p·W/σ²`` likewise."""


def em_batch(
    batch: Subtomograms,
    post: Posterior,
    rotations: torch.Tensor,
    offsets: torch.Tensor,
    sigma2: torch.Tensor,
    *,
    box: int,
    cutoff_per_pixel: float,
    min_probability: float = 1e-4,
    chunk: int = 32,
) -> Accumulated:
    """The maximisation sums of a batch: for every candidate rotation that holds posterior mass, the particles'
    whitened data up to ``cutoff_per_pixel`` shifted back by their posterior over shifts and summed, with the
    matching weights, turned into the reference frame by the candidate's inverse. A batch cut to a smaller box
    (:func:`crop_batch`) is summed and turned at that size; the sums come back on the full ``box``'s grid."""
    n, size = batch.data.shape[0], batch.weights.shape[-1]
    device = batch.data.device
    band = _band(box, size, cutoff_per_pixel, device)
    inverse_noise = inverse_noise_power(sigma2, device)
    data = batch.data.reshape(n, -1)[:, band.samples] * inverse_noise[band.shells]
    full_shells = _crop_centred(torch.fft.fftshift(shell_index((box, box, box), device, rfft=False)), size)
    weights = (batch.weights * inverse_noise[full_shells.clamp(max=len(inverse_noise) - 1)]).reshape(n, -1)
    turn = 2 * math.pi * offsets.to(device=device, dtype=torch.float64) @ band.frequency.T  # (t, K)
    unshift = torch.polar(torch.ones_like(turn), turn).to(torch.complex64)
    probabilities = torch.where(post.probabilities >= min_probability, post.probabilities, 0.0)
    mass = probabilities.sum(dim=2)  # (n, c)
    held = torch.nonzero(mass.sum(dim=0) > 0).flatten()
    data_sum = torch.zeros((size, size, size), dtype=torch.float32, device=device)
    weight_sum = torch.zeros((size, size, size), dtype=torch.float32, device=device)
    for start in range(0, len(held), chunk):
        cs = held[start : start + chunk]
        # Σ_i D_i(k) · Σ_t p_ict · e^{2πi k·t}: the data shifted back by each particle's posterior over shifts.
        spread = probabilities[:, cs].to(torch.complex64) @ unshift  # (n, cc, K)
        sums = torch.einsum("nk,nck->ck", data, spread)
        grid = torch.zeros((len(cs), size * size * (size // 2 + 1)), dtype=torch.complex64, device=device)
        grid[:, band.samples] = sums
        local = torch.fft.fftshift(
            torch.fft.irfftn(
                grid.reshape(len(cs), size, size, size // 2 + 1), s=(size,) * 3, dim=(-3, -2, -1)
            ),
            dim=(-3, -2, -1),
        )
        local_weights = (mass[:, cs].T @ weights).reshape(len(cs), size, size, size)
        back = rotations[cs.cpu()].transpose(1, 2).to(device=device, dtype=torch.float32)
        data_sum += rotate_volume(local, back).sum(dim=0)
        weight_sum += rotate_volume(local_weights, back).sum(dim=0)
    spectrum = torch.fft.rfftn(torch.fft.ifftshift(data_sum))
    return Accumulated(_pad_half(spectrum, box), _pad_centred(weight_sum.clamp(min=0.0), box))


def update_model(
    data: torch.Tensor,
    weights: torch.Tensor,
    *,
    regularise: bool,
    tau2_fudge: float,
    mask: torch.Tensor,
    cutoff_per_pixel: float,
    symmetry: str = "C1",
) -> torch.Tensor:
    """The regularised map ``A / (B + 1/(T·τ²))`` from running sums ``data`` (rfft half grid) and ``weights``
    (centred, full grid), then symmetrised, masked and low-passed to ``cutoff_per_pixel``.

    ``τ²`` is the signal power per shell the sums themselves hold: the power of the unregularised ``A/B`` less its
    noise power ``⟨1/B⟩`` (the sums are whitened), floored at 1 % of the power so that a shell without signal is
    damped, not emptied; ``T`` is RELION's ``tau2_fudge``. Without ``regularise`` (the random start, whose sums hold
    no consistent signal yet) ``1/τ²`` is the shell's mean ``B``: a signal-to-noise ratio of one."""
    b = weights.shape[-1]
    shells = shell_index((b, b, b), data.device)
    denominator = half_grid(weights).double()
    # Samples that no particle informs (interpolation leaks a little data there) stay empty.
    informed = denominator > 1e-3 * float(denominator.max())
    data = torch.where(informed, data.to(torch.complex128), 0.0)
    n = int(shells.max()) + 1

    def shell_mean(values: torch.Tensor) -> torch.Tensor:
        total = torch.bincount(shells[informed], weights=values[informed], minlength=n)
        return total / torch.bincount(shells[informed], minlength=n).double().clamp(min=1)

    if regularise:
        estimate = data.abs().square() / denominator.clamp(min=1e-30) ** 2
        power = shell_mean(estimate)
        signal = power - shell_mean(1.0 / denominator.clamp(min=1e-30))
        tau2 = tau2_fudge * torch.maximum(signal, 0.01 * power).clamp(min=1e-30)
        denominator = denominator + (1.0 / tau2)[shells]
    else:
        denominator = denominator + shell_mean(denominator)[shells]
    volume = torch.fft.irfftn(data.to(torch.complex128) / denominator.clamp(min=1e-12), s=(b, b, b))
    volume = torch.fft.fftshift(volume).float()
    if symmetry.upper() != "C1":
        volume = symmetrize(volume, symmetry)
    return low_pass(volume * mask.to(volume), cutoff_per_pixel)


def symmetrize(volume: torch.Tensor, symmetry: str) -> torch.Tensor:
    """The mean of a centred volume turned by every operation of the point group (n-fold about z)."""
    ops = symmetry_rotations(symmetry, dtype=volume.dtype, device=volume.device)
    return rotate_volume(volume, ops).mean(dim=0)


def _axis_turn(direction: torch.Tensor, angle_deg: float) -> torch.Tensor:
    """Rotations ``(m, 3, 3)`` by ``angle_deg`` about unit ``direction`` ``(m, 3)``."""
    return rotation_from_vector(direction * math.radians(angle_deg))


def _to_z(direction: torch.Tensor) -> torch.Tensor:
    """The smallest rotation ``(3, 3)`` taking unit ``direction`` to +z."""
    z = torch.tensor([0.0, 0.0, 1.0], dtype=direction.dtype)
    axis = torch.linalg.cross(direction, z)
    s, c = float(torch.linalg.vector_norm(axis)), float(direction @ z)
    if s < 1e-9:
        return torch.eye(3, dtype=direction.dtype) if c > 0 else rotation_x(180.0).to(direction.dtype)
    return _axis_turn((axis / s)[None], math.degrees(math.atan2(s, c)))[0]


def _self_match(volume: torch.Tensor, directions: torch.Tensor, order: int) -> torch.Tensor:
    """Mean correlation of the volume with itself turned by ``360°·j/n`` (``j = 1 … n − 1``) about each
    direction."""
    flat = volume.flatten() - volume.mean()
    total = torch.zeros(len(directions), dtype=torch.float64)
    for j in range(1, order):
        for start in range(0, len(directions), 64):
            turns = _axis_turn(directions[start : start + 64], 360.0 * j / order)
            turned = rotate_volume(volume, turns.to(volume.dtype)).reshape(len(turns), -1)
            turned = turned - turned.mean(dim=1, keepdim=True)
            total[start : start + 64] += (turned @ flat).double() / (
                torch.linalg.vector_norm(turned, dim=1) * torch.linalg.vector_norm(flat)
            ).clamp(min=1e-30).double()
    return total / max(order - 1, 1)


def _hemisphere(step_deg: float) -> torch.Tensor:
    """Fibonacci directions ``step_deg`` apart with ``z ≥ 0``."""
    n = max(2, int(round(4 * math.pi / math.radians(step_deg) ** 2)))
    k = torch.arange(n, dtype=torch.float64) + 0.5
    z = 1.0 - 2.0 * k / n
    phi = math.pi * (3.0 - math.sqrt(5.0)) * k
    rho = torch.sqrt((1.0 - z * z).clamp(min=0.0))
    points = torch.stack([rho * torch.cos(phi), rho * torch.sin(phi), z], dim=1)
    return torch.cat([torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64), points[z >= 0]])


def _around(direction: torch.Tensor, radius_deg: float, step_deg: float) -> torch.Tensor:
    """Directions on a small grid of ``step_deg`` within ``radius_deg`` of ``direction`` (unit vectors)."""
    to_z = _to_z(direction)
    r = int(radius_deg // step_deg)
    grid = torch.arange(-r, r + 1, dtype=torch.float64) * math.radians(step_deg)
    a, b = torch.meshgrid(grid, grid, indexing="ij")
    local = torch.stack([a.flatten(), b.flatten(), torch.ones(a.numel(), dtype=torch.float64)], dim=1)
    local = local / torch.linalg.vector_norm(local, dim=1, keepdim=True)
    return local @ to_z  # rows: (to_zᵀ · l)ᵀ


def symmetry_axis_rotation(
    volume: torch.Tensor,
    symmetry: str,
    *,
    step_deg: float = 6.0,
    fine_step_deg: float = 1.0,
    preferred: Sequence[float] = (0.0, 0.0, 1.0),
) -> tuple[torch.Tensor, float]:
    """The rotation ``G`` ``(3, 3)`` taking a C1 map's n-fold axis to z (and for Dn a 2-fold to x), and the mean
    self-correlation about the axis found. Of the two opposite senses of the axis, the one nearer ``preferred``
    goes to +z. ``volume`` is best masked and low-passed. The map in the standard frame is
    ``rotate_volume(volume, G)``."""
    text = symmetry.strip().upper()
    symmetry_rotations(text)  # validates
    order = int(text[1:])
    volume = volume.float()
    if order == 1 and text[0] == "C":
        return torch.eye(3, dtype=torch.float64), 1.0
    if order > 1:
        coarse = _hemisphere(step_deg)
        scores = _self_match(volume, coarse, order)
        best = coarse[int(torch.argmax(scores))]
        fine = _around(best, 1.5 * step_deg, fine_step_deg)
        fine_scores = _self_match(volume, fine, order)
        axis = fine[int(torch.argmax(fine_scores))]
        score = float(fine_scores.max())
        if float(axis @ torch.tensor(preferred, dtype=torch.float64)) < 0:
            axis = -axis
        rotation = _to_z(axis / torch.linalg.vector_norm(axis))
    else:
        rotation, score = torch.eye(3, dtype=torch.float64), 1.0
    if text[0] == "D":
        # The 2-fold perpendicular to the axis: the in-plane angle φ of the best half turn about (cos φ, sin φ, 0).
        standing = rotate_volume(volume, rotation.float())
        angles = torch.arange(0.0, 360.0 / order, fine_step_deg, dtype=torch.float64)
        directions = torch.stack(
            [torch.cos(torch.deg2rad(angles)), torch.sin(torch.deg2rad(angles)), torch.zeros_like(angles)], 1
        )
        scores = _self_match(standing, directions, 2)
        phi = float(angles[int(torch.argmax(scores))])
        rotation = rotation_z(-phi).to(torch.float64) @ rotation
        score = 0.5 * (score + float(scores.max())) if order > 1 else float(scores.max())
    return rotation, score


def random_posterior(
    n: int, log_prior: torch.Tensor, n_offsets: int, generator: torch.Generator
) -> Posterior:
    """A posterior putting each of ``n`` particles at one rotation drawn from the prior, shift zero (the
    random start)."""
    weights = torch.softmax(log_prior.double(), dim=0)
    chosen = torch.multinomial(weights, n, replacement=True, generator=generator)
    probabilities = torch.zeros((n, len(log_prior), n_offsets), dtype=torch.float32)
    probabilities[torch.arange(n), chosen, 0] = 1.0
    zeros = torch.zeros(n, dtype=torch.long)
    return Posterior(probabilities, chosen, zeros, torch.ones(n))


LoadBatch = Callable[[list[int]], Subtomograms]
"""Loads the subtomograms of the given particles, in their local frames."""


class DeNovoResult(NamedTuple):
    """The initial model and each particle's most probable pose under it."""

    model: torch.Tensor
    """``(b, b, b)`` the map in the standard frame (the group's axis along z), symmetrised, masked."""
    rotations: torch.Tensor
    """``(n, 3, 3)`` per particle the rotation from the standard frame to its local frame (its pose is
    ``Q·rotation``)."""
    shifts_px: torch.Tensor
    """``(n, 3)`` per particle its shift in its local frame, pixels (the particle lies at its position plus
    ``Q·shift``)."""
    best_probability: torch.Tensor
    """``(n,)`` the posterior probability of that pose."""
    axis_rotation: torch.Tensor
    """``(3, 3)`` the rotation ``G`` taking the C1 model to the standard frame (identity when symmetrised
    throughout)."""
    axis_score: float
    """The C1 model's mean correlation with itself turned about the axis found (1 when not searched)."""
    history: list[dict[str, float]]
    """Per iteration: ``cutoff_angstrom`` / ``cutoff_per_pixel``, ``step_size``, ``mean_best_probability``,
    ``mean_tilt_deg`` (of the most probable rotations from the local z) and ``model_change`` (1 − correlation
    with the previous model)."""


def _correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    x, y = a.flatten().double() - a.mean(), b.flatten().double() - b.mean()
    return float(x @ y / (torch.linalg.vector_norm(x) * torch.linalg.vector_norm(y)).clamp(min=1e-30))


def de_novo_model(
    load: LoadBatch,
    n_particles: int,
    *,
    box: int,
    iterations: int,
    batch_size: int,
    step_deg: float,
    sigma_tilt_deg: float | None,
    offset_range_px: float,
    offset_step_px: float = 1.0,
    symmetry: str,
    symmetrize_during: bool,
    tau2_fudge: float,
    mask_radius_px: float,
    initial_cutoff_per_pixel: float,
    final_cutoff_per_pixel: float,
    seed: int = 0,
    progress: Callable[[], None] | None = None,
) -> DeNovoResult:
    """Stochastic EM from a random start (module docstring), then the symmetry axis and a last pass assigning
    every particle its most probable pose.

    The resolution limit rises linearly in frequency from ``initial_cutoff_per_pixel`` to
    ``final_cutoff_per_pixel`` over the first two thirds of the ``iterations``; each iteration uses a random
    batch of ``batch_size`` particles; the step size is ``max(n/N, (1 + t)^−0.6)``. ``progress`` is called once
    per iteration and once per particle of the last pass.
    """
    from tomoforge.averaging.fsc import soft_sphere_mask

    generator = torch.Generator().manual_seed(seed)
    text = symmetry.strip().upper()
    order = int(text[1:]) if symmetrize_during else 1
    run_symmetry = text if symmetrize_during else "C1"
    max_tilt = 3.0 * sigma_tilt_deg if sigma_tilt_deg is not None else None
    rotations, tilts = candidate_rotations(step_deg, max_tilt_deg=max_tilt, symmetry_order=order)
    if sigma_tilt_deg is not None:
        log_prior = -0.5 * (tilts / sigma_tilt_deg) ** 2
    else:
        log_prior = torch.zeros(len(rotations), dtype=torch.float64)
    offsets = offsets_within(offset_range_px, offset_step_px)
    mask = soft_sphere_mask(box, radius_px=mask_radius_px, edge_px=max(1.0, 0.06 * box))
    n = min(batch_size, n_particles)

    def draw() -> list[int]:
        return torch.randperm(n_particles, generator=generator)[:n].sort().values.tolist()

    def cutoff(t: int) -> float:
        ramp = min(1.0, t / max(1.0, 2.0 * iterations / 3.0))
        return initial_cutoff_per_pixel + ramp * (final_cutoff_per_pixel - initial_cutoff_per_pixel)

    # Random start: one batch at random poses.
    batch = load(draw())
    noise_total, noise_count = noise_power(batch)
    sigma2 = noise_total / noise_count.clamp(min=1)
    start = em_batch(
        batch, random_posterior(n, log_prior, len(offsets), generator), rotations, offsets, sigma2, box=box,
        cutoff_per_pixel=cutoff(0),
    )  # fmt: skip
    scale = n_particles / n
    data, weights = start.data * scale, start.weights * scale
    model = update_model(
        data,
        weights,
        regularise=False,
        tau2_fudge=tau2_fudge,
        mask=mask,
        cutoff_per_pixel=cutoff(0),
        symmetry=run_symmetry,
    )
    history: list[dict[str, float]] = []
    for t in range(1, iterations + 1):
        batch = load(draw())
        total, count = noise_power(batch)
        noise_total, noise_count = noise_total + total, noise_count + count
        sigma2 = noise_total / noise_count.clamp(min=1)
        limit = cutoff(t)
        size = working_size(box, limit)
        small = crop_batch(batch, size)
        post = posterior(model, small, rotations, log_prior, offsets, sigma2, limit)
        sums = em_batch(small, post, rotations, offsets, sigma2, box=box, cutoff_per_pixel=limit)
        eta = max(n / n_particles, (1.0 + t) ** -0.6)
        data = (1 - eta) * data + eta * scale * sums.data
        weights = (1 - eta) * weights + eta * scale * sums.weights
        new = update_model(
            data, weights, regularise=True, tau2_fudge=tau2_fudge, mask=mask, cutoff_per_pixel=limit,
            symmetry=run_symmetry,
        )  # fmt: skip
        history.append(
            {
                "cutoff_per_pixel": limit,
                "step_size": eta,
                "mean_best_probability": float(post.best_probability.mean()),
                "mean_tilt_deg": float(tilts[post.best_rotation.cpu()].mean()),
                "model_change": 1.0 - _correlation(new, model),
            }
        )
        model = new
        if progress is not None:
            progress()
    # The symmetry axis of a C1 model, then the group applied.
    if not symmetrize_during and text != "C1":
        axis, axis_score = symmetry_axis_rotation(model, text)
        standard = (mask * symmetrize(rotate_volume(model, axis.float()), text)).float()
    else:
        axis, axis_score = torch.eye(3, dtype=torch.float64), 1.0
        standard = model
    # Every particle's most probable pose under the final (unsymmetrised, when run in C1) model.
    found_rotation = torch.empty((n_particles, 3, 3), dtype=torch.float64)
    found_shift = torch.empty((n_particles, 3), dtype=torch.float64)
    found_probability = torch.empty(n_particles, dtype=torch.float64)
    size = working_size(box, cutoff(iterations))
    for first in range(0, n_particles, n):
        chunk = list(range(first, min(first + n, n_particles)))
        small = crop_batch(load(chunk), size)
        post = posterior(model, small, rotations, log_prior, offsets, sigma2, cutoff(iterations))
        found_rotation[chunk] = rotations[post.best_rotation.cpu()] @ axis.T
        found_shift[chunk] = offsets[post.best_offset.cpu()].double()
        found_probability[chunk] = post.best_probability.double().cpu()
        if progress is not None:
            for _ in chunk:
                progress()
    return DeNovoResult(standard, found_rotation, found_shift, found_probability, axis, axis_score, history)
