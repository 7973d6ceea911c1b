"""Apply IMOD-meaning 2D transforms to images by bicubic interpolation (IMOD ``newstack -xform``).

A transform ``[A | d]`` maps raw (input) image coordinates to aligned (output) coordinates about the image centres
(CONVENTIONS.md §6): ``a − c_out = A·(r − c_in) + d``, with ``c = N // 2`` on each axis and everything in pixels of
the input. The output image is sampled from the input at ``r = c_in + A⁻¹·(a − c_out − d)`` with the bicubic
cubic-convolution kernel of Keys (``a = −½``); output pixels that come from
outside the input are filled with the mean of the input (IMOD's default) or a given value.

With ``binning = b`` the input is first low-passed and decimated by Fourier cropping
(:func:`tomoforge.fourier.fourier_bin_2d` of its central ``b``-multiple region), and output pixel ``q`` is the
aligned image at ``a − c_out = b·(q − M // 2)`` for an output of ``M`` pixels: the output centre ``M // 2`` is the
aligned centre, so centres map ``N // 2 → (N // b) // 2`` and the transform's shift stays in unbinned pixels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tomoforge.fourier import fourier_bin_2d

__all__ = ["transform_images"]


def _binned_input(image: torch.Tensor, binning: int) -> tuple[torch.Tensor, tuple[float, float]]:
    """Fourier-bin the central ``binning``-multiple region; return it and the unbinned index ``(x, y)`` of sample 0."""
    if binning == 1:
        return image, (0.0, 0.0)
    h, w = image.shape[-2:]
    m_h, m_w = h // binning, w // binning
    y0, x0 = (h - binning * m_h) // 2, (w - binning * m_w) // 2
    region = image[..., y0 : y0 + binning * m_h, x0 : x0 + binning * m_w]
    return fourier_bin_2d(region, binning), (float(x0), float(y0))


def _keys_weights(t: torch.Tensor) -> torch.Tensor:
    """Keys' cubic-convolution weights (``a = −½``) of the taps at offsets ``−1, 0, 1, 2``; ``(...)`` → ``(..., 4)``."""
    t2, t3 = t * t, t * t * t
    return torch.stack(
        [
            -0.5 * t3 + t2 - 0.5 * t,
            1.5 * t3 - 2.5 * t2 + 1.0,
            -1.5 * t3 + 2.0 * t2 + 0.5 * t,
            0.5 * t3 - 0.5 * t2,
        ],
        dim=-1,
    )


_CHUNK_PIXELS = 1 << 14
_PAD = 3


def _bicubic_sample(image: torch.Tensor, positions_xy: torch.Tensor, fill: float) -> torch.Tensor:
    """Sample one ``(h, w)`` image at ``(ho, wo, 2)`` index positions ``(x, y)``; outside → ``fill``.

    Keys' kernel with ``a = −½`` reproduces polynomials up to degree two, so it moves neither a blob's centroid nor a
    linear ramp (``a = −¾``, the choice of ``grid_sample``, shifts centroids by up to 0.05 px). A position more
    than 2 pixels outside the image gets ``fill``; closer ones blend the edge with ``fill``.
    """
    h, w = image.shape[-2:]
    wp = w + 2 * _PAD
    padded = F.pad((image - fill)[None], (_PAD, _PAD, _PAD, _PAD))[0].reshape(-1)
    taps = torch.arange(-1, 3, device=image.device)
    offsets = (taps[:, None] * wp + taps[None, :]).reshape(-1)  # 4 rows × 4 columns around the base pixel
    flat = positions_xy.reshape(-1, 2)
    out = image.new_empty(flat.shape[0])
    for start in range(0, flat.shape[0], _CHUNK_PIXELS):
        pos = flat[start : start + _CHUNK_PIXELS].to(image.dtype)
        x, y = pos[:, 0], pos[:, 1]
        inside = (x > -2) & (x < w + 1) & (y > -2) & (y < h + 1)
        x0, y0 = torch.floor(x), torch.floor(y)
        base = (y0.clamp(-2, h).long() + _PAD) * wp + x0.clamp(-2, w).long() + _PAD
        values = padded[base[:, None] + offsets].reshape(-1, 4, 4)
        wy, wx = _keys_weights(y - y0), _keys_weights(x - x0)
        sampled = torch.bmm(torch.bmm(wy[:, None, :], values), wx[:, :, None]).reshape(-1)
        out[start : start + _CHUNK_PIXELS] = torch.where(inside, sampled, torch.zeros_like(sampled))
    return out.reshape(positions_xy.shape[:-1]) + fill


def transform_images(
    images: torch.Tensor,
    xf: torch.Tensor,
    *,
    binning: int = 1,
    output_shape_yx: tuple[int, int] | None = None,
    fill: float | None = None,
) -> torch.Tensor:
    """Resample images through IMOD-meaning raw → aligned transforms (``newstack -xform``, optionally ``-bin``).

    Parameters
    ----------
    images
        ``(..., h, w)`` real images (raw, unaligned).
    xf
        ``(..., 2, 3)`` transforms ``[[A11, A12, DX], [A21, A22, DY]]`` about tomoforge centres ``N // 2``, shifts in
        pixels of ``images``; leading dimensions broadcast with those of ``images`` (e.g. ``(n, h, w)`` with
        ``(n, 2, 3)``). Any invertible affine ``A`` (rotation, magnification, stretch) is allowed.
    binning
        Output binning ``b ≥ 1``: the input is Fourier-binned (anti-aliased) before interpolation and the output
        has pixels ``b`` times larger.
    output_shape_yx
        Output shape in output (binned) pixels; default ``(h // b, w // b)``. An output larger or smaller than the
        input is centred on the aligned centre (e.g. X and Y swapped for a tilt axis near 90°).
    fill
        Value of output pixels that map outside the input; default the mean of each (binned) input image.

    Returns
    -------
    torch.Tensor
        ``(*batch, *output_shape_yx)`` aligned images (``batch`` the broadcast leading shape), floating dtype of
        ``images`` (float32 for integer input), on its device.

    Raises
    ------
    ValueError
        If shapes do not fit, ``binning`` is not a positive integer, an image is smaller than 2 × 2 pixels after
        binning, or a transform is singular.

    Notes
    -----
    Interpolation is bicubic (Keys' cubic convolution, ``a = −½``, exact for polynomials up to degree two) in real
    space: a smooth image keeps its positions to ~0.01 px; frequencies near Nyquist are attenuated. Transforms
    compose as ``M_total = M_later @ M_earlier`` (3 × 3 homogeneous), so applying ``xf1`` then ``xf2`` equals one
    call with the product, up to interpolation.

    References
    ----------
    Keys, R. (1981). Cubic convolution interpolation for digital image processing. IEEE Trans. Acoust. Speech Signal
    Process. 29, 1153–1160. doi:10.1109/TASSP.1981.1163711

    Mastronarde, D. N. & Held, S. R. (2017). Automated tilt series alignment and tomographic reconstruction in IMOD.
    J. Struct. Biol. 197, 102–113. doi:10.1016/j.jsb.2016.07.011
    """
    if images.dim() < 2:
        raise ValueError(f"images must have shape (..., h, w), got {tuple(images.shape)}")
    if xf.dim() < 2 or tuple(xf.shape[-2:]) != (2, 3):
        raise ValueError(f"xf must have shape (..., 2, 3), got {tuple(xf.shape)}")
    if isinstance(binning, bool) or int(binning) != binning or binning < 1:
        raise ValueError(f"binning must be a positive integer, not {binning!r}")
    binning = int(binning)
    real = images if images.is_floating_point() else images.to(torch.float32)
    h, w = real.shape[-2:]
    if h // binning < 2 or w // binning < 2:
        raise ValueError(f"images of {(h, w)} pixels are too small for binning {binning}")
    out_h, out_w = output_shape_yx if output_shape_yx is not None else (h // binning, w // binning)
    if out_h < 1 or out_w < 1:
        raise ValueError(f"output_shape_yx must be positive, got {output_shape_yx}")
    try:
        batch = torch.broadcast_shapes(real.shape[:-2], xf.shape[:-2])
    except RuntimeError as error:
        raise ValueError(
            f"leading dimensions of images {tuple(real.shape[:-2])} and xf {tuple(xf.shape[:-2])} do not broadcast"
        ) from error
    flat_images = real.expand(*batch, h, w).reshape(-1, h, w)
    flat_xf = xf.to(device=real.device, dtype=torch.float64).expand(*batch, 2, 3).reshape(-1, 2, 3)
    linear = flat_xf[:, :, :2]
    det = torch.linalg.det(linear)
    if not bool(torch.all(det.abs() > 1e-12)):
        raise ValueError("xf contains a singular matrix A")
    inverse = torch.linalg.inv(linear)

    # Aligned coordinates of the output pixels relative to the aligned centre, in unbinned pixels.
    ay = (torch.arange(out_h, dtype=torch.float64, device=real.device) - out_h // 2) * binning
    ax = (torch.arange(out_w, dtype=torch.float64, device=real.device) - out_w // 2) * binning
    aligned = torch.stack(torch.meshgrid(ax, ay, indexing="xy"), dim=-1)  # (out_h, out_w, 2) as (x, y)
    centre_in = torch.tensor([w // 2, h // 2], dtype=torch.float64, device=real.device)

    out = real.new_empty((flat_images.shape[0], out_h, out_w))
    for k in range(flat_images.shape[0]):
        source, origin = _binned_input(flat_images[k], binning)
        raw = (aligned - flat_xf[k, :, 2]) @ inverse[k].T + centre_in  # unbinned input indices (x, y)
        positions = (raw - torch.tensor(origin, dtype=torch.float64, device=real.device)) / binning
        value = float(source.mean()) if fill is None else float(fill)
        out[k] = _bicubic_sample(source, positions, value)
    return out.reshape(*batch, out_h, out_w)
