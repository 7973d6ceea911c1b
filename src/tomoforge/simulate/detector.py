"""The detector: modulation transfer function, electron counting (Poisson) and X-ray events.

* **MTF.** Curves are read from RELION-style STAR files (``rlnResolutionInversePixel`` in cycles per *detector*
  pixel, ``rlnMtfValue``); the measured K2, K3 and Falcon 4 curves at 300 kV ship in ``data/mtf`` (see its
  PROVENANCE.md). Images whose pixel is not the detector pixel (super-resolution, binned) say so with
  ``detector_pixels_per_image_pixel`` (0.5 for super-resolution frames, 2 for 2×-binned images).
* **Counting.** A counting detector records an integer number of electrons per pixel, Poisson-distributed about
  the expected (MTF-filtered) dose per pixel.
* **X-rays.** Stray X-rays and other high-energy events leave single very bright pixels or small bright blobs in
  single frames, which programs such as IMOD's ``ccderaser`` or RELION's motion correction remove; they are
  injected with their truth so that such removal can be scored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import starfile
import torch

from tomoforge.fourier.frequencies import fftfreq_grid

__all__ = [
    "DETECTOR_MTF_FILES",
    "MtfCurve",
    "XrayEvent",
    "add_xrays",
    "detector_mtf",
    "mtf_at",
    "mtf_filter",
    "poisson_counts",
    "read_mtf_star",
]

MTF_DIR = Path(__file__).parent / "data" / "mtf"
DETECTOR_MTF_FILES = {
    "k2_300kv": "mtf_k2_300kV.star",
    "k3_300kv": "mtf_k3_standard_300kV_FL2.star",
    "falcon4ec_300kv": "mtf_falcon4EC_300kV.star",
}


@dataclass(frozen=True)
class MtfCurve:
    """A tabulated MTF.

    Attributes
    ----------
    frequencies_per_detector_pixel
        ``(n,)`` float64 frequencies in cycles per detector pixel, strictly increasing, starting at 0.
    values
        ``(n,)`` float64 MTF values, normalised to 1 at frequency 0.
    """

    frequencies_per_detector_pixel: torch.Tensor
    values: torch.Tensor

    def __post_init__(self) -> None:
        f, v = self.frequencies_per_detector_pixel, self.values
        if f.dim() != 1 or f.shape != v.shape or f.numel() < 2:
            raise ValueError("an MTF curve needs two 1D tensors of the same length (at least 2 points)")
        if not bool((f[1:] > f[:-1]).all()) or float(f[0]) != 0.0:
            raise ValueError("MTF frequencies must start at 0 and increase strictly")


def read_mtf_star(path: str | Path) -> MtfCurve:
    """Read an MTF STAR file (columns ``rlnResolutionInversePixel``, ``rlnMtfValue``).

    The values are divided by the value at frequency 0 (which the tabulated curves give as 1 to within 1e-6), so
    that the MTF preserves the mean exactly.

    Parameters
    ----------
    path
        STAR file with one loop block.

    Returns
    -------
    MtfCurve
        The curve, frequencies in cycles per detector pixel.
    """
    table = starfile.read(path, always_dict=True)
    for block in table.values():
        if hasattr(block, "columns") and {"rlnResolutionInversePixel", "rlnMtfValue"} <= set(block.columns):
            freqs = torch.tensor(
                block["rlnResolutionInversePixel"].to_numpy(dtype=float), dtype=torch.float64
            )
            values = torch.tensor(block["rlnMtfValue"].to_numpy(dtype=float), dtype=torch.float64)
            if float(freqs[0]) != 0.0:
                raise ValueError(f"{path}: the MTF table must start at frequency 0")
            return MtfCurve(freqs, values / values[0])
    raise ValueError(f"{path}: no loop with rlnResolutionInversePixel and rlnMtfValue")


def detector_mtf(name: str) -> MtfCurve:
    """One of the vendored measured MTF curves: ``"k2_300kv"``, ``"k3_300kv"`` or ``"falcon4ec_300kv"``."""
    try:
        filename = DETECTOR_MTF_FILES[name.lower()]
    except KeyError:
        raise ValueError(
            f"unknown detector MTF {name!r}; choose one of {sorted(DETECTOR_MTF_FILES)}"
        ) from None
    return read_mtf_star(MTF_DIR / filename)


def mtf_at(
    freq_per_detector_pixel: torch.Tensor, curve: MtfCurve, *, fill_value: float | None = None
) -> torch.Tensor:
    """Linearly interpolated MTF at the given frequencies.

    Parameters
    ----------
    freq_per_detector_pixel
        ``(...)`` frequencies in cycles per detector pixel (the sign is ignored).
    curve
        Tabulated MTF.
    fill_value
        Value beyond the last tabulated frequency; ``None`` holds the last tabulated value (as ``numpy.interp``).
        Super-resolution images reach 1 cycle per detector pixel, beyond every curve shipped (0.5).

    Returns
    -------
    torch.Tensor
        ``(...)`` MTF values, dtype and device of the input (float32 for integer input).
    """
    f = freq_per_detector_pixel
    dtype = f.dtype if f.is_floating_point() else torch.float32
    grid = curve.frequencies_per_detector_pixel.to(device=f.device)
    values = curve.values.to(device=f.device)
    q = f.abs().to(torch.float64)
    last = grid.numel() - 1
    upper = torch.searchsorted(grid, q.contiguous(), right=True).clamp(1, last)
    lower = upper - 1
    f0, f1 = grid[lower], grid[upper]
    t = ((q - f0) / (f1 - f0)).clamp(0.0, 1.0)
    out = values[lower] + t * (values[upper] - values[lower])
    beyond = q > grid[last]
    out = torch.where(beyond, values[last] if fill_value is None else torch.full_like(out, fill_value), out)
    return out.to(dtype)


def mtf_filter(
    images: torch.Tensor,
    curve: MtfCurve,
    *,
    detector_pixels_per_image_pixel: float = 1.0,
    fill_value: float | None = None,
) -> torch.Tensor:
    """Blur images by the detector's MTF (multiply their spectrum by the radial MTF).

    Parameters
    ----------
    images
        ``(..., h, w)`` real images, e.g. the expected electrons per pixel.
    curve
        Tabulated MTF (frequencies per detector pixel).
    detector_pixels_per_image_pixel
        Image pixel size over detector pixel size: 1 for counting-mode frames, 0.5 for super-resolution frames,
        2 for 2×-binned images. An image frequency ``f`` (cycles/image pixel) is ``f / ratio`` cycles per detector
        pixel.
    fill_value
        As in :func:`mtf_at`.

    Returns
    -------
    torch.Tensor
        ``(..., h, w)`` filtered images (mean preserved), floating dtype of ``images``.

    Notes
    -----
    Applying the MTF to the expected image and then drawing Poisson counts (:func:`poisson_counts`) gives a signal
    transferred with ``MTF`` and white counting noise; real counting detectors also shape the noise (DQE < MTF²
    at low frequency), which this model leaves out.

    References
    ----------
    McMullan, G., Faruqi, A. R., Clare, D. & Henderson, R. (2014). Comparison of optimal performance at 300 keV of
    three direct electron detectors for use in low dose electron microscopy. Ultramicroscopy 147, 156–163.
    doi:10.1016/j.ultramic.2014.08.002
    """
    if detector_pixels_per_image_pixel <= 0:
        raise ValueError("detector_pixels_per_image_pixel must be positive")
    real_dtype = images.dtype if images.is_floating_point() else torch.float32
    h, w = images.shape[-2:]
    freq = fftfreq_grid((h, w), device=images.device, dtype=real_dtype)
    k_detector = torch.linalg.vector_norm(freq, dim=-1) / detector_pixels_per_image_pixel
    transfer = mtf_at(k_detector, curve, fill_value=fill_value)
    spectrum = torch.fft.rfftn(images.to(real_dtype), dim=(-2, -1))
    return torch.fft.irfftn(spectrum * transfer, s=(h, w), dim=(-2, -1))


def poisson_counts(
    expected_counts: torch.Tensor,
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.int32,
) -> torch.Tensor:
    """Electron counts drawn from the Poisson distribution about the expected counts.

    Parameters
    ----------
    expected_counts
        ``(...)`` expected electrons per pixel (non-negative; the product of the dose per frame in e⁻/Å², the
        pixel area in Å² and the image's relative intensity).
    generator
        Random generator on the device of ``expected_counts`` (deterministic output for a seeded generator).
    dtype
        Integer dtype of the counts: ``torch.int32`` (default), ``torch.int16``, ``torch.uint8`` or
        ``torch.uint16`` (MRC mode 6); an ``OverflowError`` is raised if a count does not fit.

    Returns
    -------
    torch.Tensor
        ``(...)`` counts.
    """
    if dtype.is_floating_point or dtype.is_complex or dtype == torch.bool:
        raise ValueError(f"counts need an integer dtype, not {dtype}")
    rate = expected_counts if expected_counts.is_floating_point() else expected_counts.to(torch.float32)
    if not bool(torch.isfinite(rate).all()) or bool((rate < 0).any()):
        raise ValueError("expected counts must be finite and non-negative")
    counts = torch.poisson(rate, generator=generator)
    limit = _integer_max(dtype)
    if counts.numel() and float(counts.max()) > limit:
        raise OverflowError(f"a count of {int(counts.max())} does not fit into {dtype}")
    return counts.to(dtype)


def _integer_max(dtype: torch.dtype) -> float:
    if dtype == torch.uint16:
        return 65535.0
    return float(torch.iinfo(dtype).max)


@dataclass(frozen=True)
class XrayEvent:
    """One injected X-ray event.

    Attributes
    ----------
    frame_index
        Index of the frame in ``frames.reshape(-1, h, w)`` (the leading dimensions flattened in C order).
    y_px, x_px
        Array indices of the event's centre pixel.
    radius_px
        0 for a single hot pixel, else the radius of the blob (pixels within this distance of the centre).
    value
        Counts added to every pixel of the event.
    """

    frame_index: int
    y_px: int
    x_px: int
    radius_px: float
    value: float


def add_xrays(
    frames: torch.Tensor,
    *,
    rate_per_frame: float,
    generator: torch.Generator,
    hot_value_range: tuple[float, float] = (50.0, 500.0),
    blob_radius_px_range: tuple[float, float] = (1.0, 3.0),
    blob_fraction: float = 0.5,
) -> tuple[torch.Tensor, list[XrayEvent]]:
    """Add X-ray events (single hot pixels and small bright blobs) to random frames.

    Parameters
    ----------
    frames
        ``(..., h, w)`` frames (counts or expected counts).
    rate_per_frame
        Mean number of events per frame; each frame receives a Poisson number of them.
    generator
        Random generator (CPU; every draw comes from it, so the result is deterministic for a seed).
    hot_value_range
        Range ``[low, high)`` of the counts added to each pixel of an event (uniform).
    blob_radius_px_range
        Range ``[low, high)`` of blob radii in pixels (uniform).
    blob_fraction
        Probability that an event is a blob rather than a single pixel.

    Returns
    -------
    frames, events
        A new tensor like ``frames`` (same dtype; values rounded for integer frames) with the events added, and
        the list of :class:`XrayEvent` in the order drawn (sorted by frame).
    """
    if frames.dim() < 2:
        raise ValueError("frames must have at least 2 dimensions (..., h, w)")
    if rate_per_frame < 0 or not 0.0 <= blob_fraction <= 1.0:
        raise ValueError("rate_per_frame must be >= 0 and blob_fraction in [0, 1]")
    h, w = frames.shape[-2:]
    out = frames.clone(memory_format=torch.contiguous_format)
    flat = out.reshape(-1, h, w)
    n_frames = flat.shape[0]
    per_frame = torch.poisson(
        torch.full((n_frames,), float(rate_per_frame), dtype=torch.float64), generator=generator
    )
    counts = per_frame.to(torch.int64).tolist()
    total = int(sum(counts))
    frame_of_event = [f for f, c in enumerate(counts) for _ in range(c)]
    ys = torch.randint(0, h, (total,), generator=generator).tolist()
    xs = torch.randint(0, w, (total,), generator=generator).tolist()
    is_blob = (torch.rand(total, generator=generator, dtype=torch.float64) < blob_fraction).tolist()
    radii = _uniform(blob_radius_px_range, total, generator)
    values = _uniform(hot_value_range, total, generator)
    integer = not (out.is_floating_point() or out.is_complex())
    events = []
    for i in range(total):
        frame, y, x = frame_of_event[i], ys[i], xs[i]
        radius = radii[i] if is_blob[i] else 0.0
        value = float(round(values[i])) if integer else values[i]
        _add_disk(flat[frame], y, x, radius, value)
        events.append(XrayEvent(frame_index=frame, y_px=y, x_px=x, radius_px=radius, value=value))
    return out, events


def _uniform(bounds: Sequence[float], n: int, generator: torch.Generator) -> list[float]:
    low, high = float(bounds[0]), float(bounds[1])
    if high < low:
        raise ValueError(f"empty range {tuple(bounds)}")
    return (low + (high - low) * torch.rand(n, generator=generator, dtype=torch.float64)).tolist()


def _add_disk(image: torch.Tensor, y: int, x: int, radius: float, value: float) -> None:
    """Add ``value`` in place to every pixel of ``image`` within ``radius`` of ``(y, x)`` (clipped at edges)."""
    r = int(radius)
    y0, y1 = max(y - r, 0), min(y + r + 1, image.shape[0])
    x0, x1 = max(x - r, 0), min(x + r + 1, image.shape[1])
    yy = torch.arange(y0, y1, device=image.device)[:, None] - y
    xx = torch.arange(x0, x1, device=image.device)[None, :] - x
    inside = (yy * yy + xx * xx) <= radius * radius
    patch = image[y0:y1, x0:x1]
    patch += (inside * value).to(image.dtype)
