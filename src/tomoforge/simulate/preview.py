"""Preview images of a simulated dataset, to check by eye that it looks like real cryo-ET data.

:func:`write_previews` writes 8-bit PNGs (row 0 at the bottom, as IMOD shows images) into
``<dataset>/truth/preview/``:

* ``frame.png``: one raw frame (counts) of the 0° movie;
* ``tilt_000deg_aligned.png``, ``tilt_060deg_aligned.png``: the tilts nearest 0° and 60°, their frames corrected
  with the true motion and summed, binned to the motion-corrected pixel and aligned with the true transform (tilt
  axis vertical), low-pass filtered to 4 pixels for display;
* ``tilt_000deg_power_spectrum.png``: the log power spectrum of the motion-corrected 0° tilt (averaged over
  overlapping tiles) minus its smoothed rotational average, DC in the centre — the Thon rings;
* ``tomogram_xy_central.png``, ``tomogram_xy_gold.png``, ``tomogram_xz_central.png``: slices of the noise-free
  tomogram truth through its centre, through the top layer of gold beads, and across the ice.

Contrast is stretched between the 0.5th and 99.5th percentiles.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from tomoforge.fourier import fftfreq_grid, fourier_shift_2d
from tomoforge.io.movies import open_movie
from tomoforge.io.mrc import read_mrc
from tomoforge.io.png import write_png
from tomoforge.simulate.imaging import fourier_bin

__all__ = [
    "aligned_image",
    "motion_corrected_sum",
    "power_spectrum",
    "thon_ring_display",
    "to_uint8",
    "write_previews",
]


def to_uint8(
    image: np.ndarray | torch.Tensor, *, percentiles: tuple[float, float] = (0.5, 99.5)
) -> np.ndarray:
    """Map an image to 0–255 linearly between two percentiles of its values (clipped outside)."""
    array = np.asarray(
        image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else image, dtype=np.float64
    )
    low, high = np.percentile(array, percentiles)
    if not high > low:
        high = low + 1.0
    return np.clip(np.rint((array - low) / (high - low) * 255.0), 0, 255).astype(np.uint8)


def motion_corrected_sum(
    frames: torch.Tensor, motion_xy_px: torch.Tensor, *, binning: int = 1
) -> torch.Tensor:
    """Sum of frames shifted back by their motion (``−s(t)``), Fourier-binned.

    Parameters
    ----------
    frames
        ``(n, h, w)`` frames.
    motion_xy_px
        ``(n, 2)`` specimen displacement of each frame relative to frame 0, frame pixels.
    binning
        Integer Fourier binning of the sum (e.g. 2 from super-resolution to the motion-corrected pixel).

    Returns
    -------
    torch.Tensor
        ``(h / binning, w / binning)`` float32 image aligned to frame 0.
    """
    corrected = fourier_shift_2d(frames.to(torch.float32), -motion_xy_px.to(torch.float32)).sum(dim=0)
    return fourier_bin(corrected, binning, dims=(-2, -1))


def aligned_image(image: torch.Tensor, matrix: np.ndarray, shift_xy_px: np.ndarray) -> torch.Tensor:
    """Apply a raw → aligned transform ``x' = A·x + d`` about the centres ``N//2`` (bilinear, zeros outside).

    Parameters
    ----------
    image
        ``(h, w)`` raw image.
    matrix
        ``(2, 2)`` linear part ``A``.
    shift_xy_px
        ``(2,)`` shift ``d`` in pixels of this image.

    Returns
    -------
    torch.Tensor
        ``(h, w)`` aligned image; outside the raw image it holds the raw image's mean.
    """
    h, w = image.shape
    inverse = torch.from_numpy(np.linalg.inv(np.asarray(matrix, dtype=np.float64)))
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=torch.float64) - h // 2,
        torch.arange(w, dtype=torch.float64) - w // 2,
        indexing="ij",
    )
    out = torch.stack([xs - float(shift_xy_px[0]), ys - float(shift_xy_px[1])], dim=-1) @ inverse.T
    grid = torch.stack(
        [(out[..., 0] + w // 2) * 2.0 / (w - 1) - 1.0, (out[..., 1] + h // 2) * 2.0 / (h - 1) - 1.0], -1
    )
    mean = image.mean()
    warped = F.grid_sample(
        (image - mean)[None, None].to(torch.float32),
        grid[None].to(torch.float32),
        mode="bilinear",
        padding_mode="zeros",
        align_corners=True,
    )
    return warped[0, 0] + mean


def power_spectrum(image: torch.Tensor, *, tile: int = 256, step: int | None = None) -> torch.Tensor:
    """Mean power spectrum of overlapping Hann-windowed tiles (Welch), ``fftshift``-ed (DC at ``tile // 2``).

    Parameters
    ----------
    image
        ``(h, w)`` image.
    tile
        Tile edge in pixels (at most the image size).
    step
        Distance between tiles (default ``tile // 4``).

    Returns
    -------
    torch.Tensor
        ``(tile, tile)`` float64 power spectrum.
    """
    tile = min(tile, *image.shape)
    step = step or max(tile // 4, 1)
    data = image.to(torch.float64)
    tiles = data.unfold(0, tile, step).unfold(1, tile, step).reshape(-1, tile, tile)
    tiles = tiles - tiles.mean(dim=(-2, -1), keepdim=True)
    window = torch.hann_window(tile, dtype=torch.float64)
    power = torch.fft.fft2(tiles * window[:, None] * window[None, :]).abs().square().mean(dim=0)
    return torch.fft.fftshift(power)


def thon_ring_display(
    spectrum: torch.Tensor, *, smoothing_px: int = 31, blur_px: float = 1.0
) -> torch.Tensor:
    """Log power spectrum, lightly blurred, minus its smoothed rotational average (the overall fall-off).

    Parameters
    ----------
    spectrum
        ``(n, n)`` ``fftshift``-ed power spectrum (:func:`power_spectrum`).
    smoothing_px
        Width of the running mean over radius that gives the background (wider than a ring).
    blur_px
        Standard deviation of a Gaussian blur of the spectrum against the noise of the estimate.

    Returns
    -------
    torch.Tensor
        ``(n, n)`` log spectrum with the background removed (0 at DC).
    """
    n = spectrum.shape[-1]
    blurred = spectrum.to(torch.float64)
    if blur_px > 0:
        half = int(math.ceil(3 * blur_px))
        kernel = torch.exp(-0.5 * (torch.arange(-half, half + 1, dtype=torch.float64) / blur_px) ** 2)
        kernel = (kernel / kernel.sum())[None, None]
        padded = F.pad(blurred[None, None], (half, half, half, half), mode="reflect")
        blurred = F.conv2d(F.conv2d(padded, kernel[..., None, :]), kernel[..., :, None])[0, 0]
    log = torch.log(blurred.clamp(min=float(blurred.max()) * 1e-12))
    ys, xs = torch.meshgrid(torch.arange(n) - n // 2, torch.arange(n) - n // 2, indexing="ij")
    radius = torch.sqrt((xs * xs + ys * ys).to(torch.float64)).round().to(torch.int64)
    n_bins = int(radius.max()) + 1
    counts = torch.bincount(radius.reshape(-1), minlength=n_bins).to(torch.float64)
    average = (
        torch.zeros(n_bins, dtype=torch.float64).index_add_(0, radius.reshape(-1), log.reshape(-1)) / counts
    )
    background = F.avg_pool1d(
        average[None, None], smoothing_px, 1, smoothing_px // 2, count_include_pad=False
    )[0, 0]
    out = log - background[radius]
    out[n // 2, n // 2] = 0.0
    return out


def _lowpass(image: torch.Tensor, cutoff_px: float) -> torch.Tensor:
    """Gaussian low-pass whose transfer falls to 1/2 at ``1/cutoff_px`` cycles per pixel."""
    freq = fftfreq_grid(tuple(image.shape), dtype=torch.float64)
    k2 = freq.square().sum(-1)
    sigma2 = (1.0 / cutoff_px) ** 2 / (2.0 * math.log(2.0))
    spectrum = torch.fft.rfftn(image.to(torch.float64)) * torch.exp(-k2 / (2.0 * sigma2))
    return torch.fft.irfftn(spectrum, s=tuple(image.shape))


def _nearest(tilts: list[dict[str, Any]], angle: float) -> dict[str, Any]:
    return min(tilts, key=lambda t: abs(t["nominal_tilt_angle_deg"] - angle))


def write_previews(out_dir: str | os.PathLike[str], *, ts_id: str | None = None) -> list[Path]:
    """Write the preview PNGs of a dataset made by :func:`tomoforge.simulate.dataset.generate_dataset`.

    Parameters
    ----------
    out_dir
        The dataset folder (with ``frames/`` and ``truth/``).
    ts_id
        Tilt series to show (default: the first).

    Returns
    -------
    list of pathlib.Path
        The PNG files written, in ``out_dir/truth/preview``.
    """
    root = Path(out_dir)
    truth = json.loads((root / "truth" / "truth.json").read_text())
    ts_id = ts_id or next(iter(truth["tilt_series"]))
    series = truth["tilt_series"][ts_id]
    frame_pixel = truth["frame_pixel_size_angstrom"]
    mc_pixel = truth["motion_corrected_pixel_size_angstrom"]
    binning = int(round(mc_pixel / frame_pixel))
    folder = root / "truth" / "preview"
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def save(name: str, image: np.ndarray | torch.Tensor) -> None:
        written.append(write_png(to_uint8(image), folder / name))

    for angle in (0.0, 60.0):
        tilt = _nearest(series["tilts"], angle)
        with open_movie(root / tilt["frames_file"]) as movie:
            frames = torch.from_numpy(movie.read_frames())
        if angle == 0.0:
            save("frame.png", frames[0])
        motion = torch.tensor(tilt["motion_xy_angstrom"], dtype=torch.float64) / frame_pixel
        image = motion_corrected_sum(frames, motion, binning=binning)
        transform = tilt["transform"]
        matrix = np.array([[transform["a11"], transform["a12"]], [transform["a21"], transform["a22"]]])
        shift = np.array([transform["dx_angstrom"], transform["dy_angstrom"]]) / mc_pixel
        aligned = aligned_image(image, matrix, shift)
        save(f"tilt_{int(round(angle)):03d}deg_aligned.png", _lowpass(aligned, 4.0))
        if angle == 0.0:
            spectrum = power_spectrum(image, tile=min(256, *image.shape))
            save("tilt_000deg_power_spectrum.png", thon_ring_display(spectrum))
    tomogram = torch.from_numpy(
        np.array(read_mrc(root / "truth" / series["tomogram"]["file"]).data, dtype=np.float32)
    )
    nz, ny = tomogram.shape[0], tomogram.shape[1]
    voxel = series["tomogram"]["voxel_size_angstrom"]
    save("tomogram_xy_central.png", tomogram[nz // 2])
    gold = np.asarray(series["gold"]["positions_xyz_angstrom"], dtype=np.float64).reshape(-1, 3)
    top = gold[gold[:, 2] > 0, 2]
    z_gold = float(np.median(top)) if top.size else float(gold[:, 2].max()) if gold.size else 0.0
    save("tomogram_xy_gold.png", tomogram[int(np.clip(round(z_gold / voxel) + nz // 2, 0, nz - 1))])
    save("tomogram_xz_central.png", tomogram[:, ny // 2, :])
    return written
