"""Amplitude spectra of image tiles, the raw material of CTF estimation.

An image is cut into square tiles (overlapping by default, as CTFFIND's box and ctfplotter's tiles); each tile has its
mean removed, its edges tapered and its rfft amplitude taken. Keeping the tiles apart (instead of averaging them at
once) lets the estimator give every tile of a tilted image its own defocus (:mod:`tomoforge.ctf.estimate`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from tomoforge.fourier import edge_taper, fftfreq_grid

__all__ = ["radial_bins", "tile_amplitude_spectra", "tile_origins"]


def tile_origins(shape_yx: Sequence[int], tile_size_px: int, *, overlap: float = 0.5) -> torch.Tensor:
    """Top-left corners of square tiles covering an image, evenly spread from edge to edge.

    Parameters
    ----------
    shape_yx
        Image shape ``(h, w)``.
    tile_size_px
        Side of a tile; at most the smaller image side.
    overlap
        Wanted fraction of a tile shared with its neighbour, in [0, 1); the tiles are then spread evenly, so the
        actual overlap is at least this.

    Returns
    -------
    torch.Tensor
        ``(n, 2)`` int64 ``(y0, x0)`` corners, rows of tiles from the bottom.
    """
    h, w = (int(s) for s in shape_yx)
    if not 8 <= tile_size_px <= min(h, w):
        raise ValueError(
            f"tile_size_px must lie in [8, {min(h, w)}] for images of {h}×{w}, got {tile_size_px}"
        )
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must lie in [0, 1), got {overlap}")
    step = max(1.0, tile_size_px * (1.0 - overlap))

    def starts(size: int) -> torch.Tensor:
        count = math.ceil((size - tile_size_px) / step) + 1
        if count == 1:
            return torch.tensor([(size - tile_size_px) // 2])
        return torch.linspace(0, size - tile_size_px, count).round().long()

    ys, xs = starts(h), starts(w)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([grid_y.reshape(-1), grid_x.reshape(-1)], dim=-1)


def tile_amplitude_spectra(
    image: torch.Tensor,
    *,
    tile_size_px: int,
    overlap: float = 0.5,
    taper_fraction: float = 0.1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Amplitude spectra of overlapping square tiles of one image.

    Parameters
    ----------
    image
        ``(h, w)`` real image.
    tile_size_px
        Side of a tile (CTFFIND's box; 512 in the tutorial at 1.35 Å).
    overlap
        Fraction of a tile shared with its neighbours (:func:`tile_origins`).
    taper_fraction
        Fraction of the tile side over which each edge is tapered to zero (cosine), which keeps the edge
        discontinuity out of the spectrum; 0 for none.

    Returns
    -------
    spectra : torch.Tensor
        ``(n, t, t // 2 + 1)`` float32 rfft amplitudes ``|F|`` (DC at index 0, CONVENTIONS.md §9), DC set to 0.
    centres_xy_px : torch.Tensor
        ``(n, 2)`` float64 tile centres ``(x, y)`` in pixels from the image centre ``N // 2``.
    """
    if image.ndim != 2:
        raise ValueError(f"image must be (h, w), got shape {tuple(image.shape)}")
    h, w = image.shape
    origins = tile_origins((h, w), tile_size_px, overlap=overlap)
    t = tile_size_px
    data = image.to(torch.float32)
    width = max(1, round(t * taper_fraction))
    window = edge_taper((t, t), width, device=data.device) if taper_fraction > 0 else None
    spectra = torch.empty((len(origins), t, t // 2 + 1), dtype=torch.float32, device=data.device)
    for k, (y0, x0) in enumerate(origins.tolist()):
        tile = data[y0 : y0 + t, x0 : x0 + t]
        tile = tile - tile.mean()
        if window is not None:
            tile = tile * window
        spectra[k] = torch.fft.rfft2(tile).abs()
    spectra[:, 0, 0] = 0.0
    centre = (t - 1) / 2.0
    centres = torch.stack(
        [origins[:, 1].double() + centre - w // 2, origins[:, 0].double() + centre - h // 2], dim=-1
    )
    return spectra, centres


def radial_bins(shape_yx: Sequence[int], *, device: torch.device | str | None = None) -> torch.Tensor:
    """Index of the ring (|k| rounded, in Fourier pixels of a square tile) of every rfft sample.

    Parameters
    ----------
    shape_yx
        Real-space shape ``(t, t)`` of the tiles (square).
    device
        Of the result.

    Returns
    -------
    torch.Tensor
        ``(t, t // 2 + 1)`` int64 ring indices, 0 at DC.
    """
    h, w = (int(s) for s in shape_yx)
    if h != w:
        raise ValueError(f"tiles must be square, got {h}×{w}")
    cycles = fftfreq_grid((h, w), rfft=True, device=device, dtype=torch.float64) * h
    return torch.linalg.vector_norm(cycles, dim=-1).round().long()
