"""Beam-induced motion of the specimen during the frames of one exposure (one tilt's movie).

Model, per movie (positions in Å, frame index ``t = 0 … n − 1``)::

    p(t) = J·(1 − exp(−t/τ))·û_J  +  D·t·û_D  +  ε(t),      ε(t) ~ N(0, σ² I₂) independent per frame

* an **early jump** of total length ``J`` along a random direction ``û_J``, mostly in the first frames
  (``τ = jump_time_constant_frames``): beam-induced motion is fastest at the start of an exposure;
* a **steady drift** of ``D`` Å per frame along a random direction ``û_D`` (stage drift and slow doming);
* **jitter** ``ε`` with standard deviation ``σ`` per axis.

Directions are uniform on the circle, independent per movie. Real data look like this: RELION's motion
correction of EMPIAR-10164 TS_01 (8 frames per tilt, ``MotionCorr/job002/frames/*.star``) gives frame-to-frame
steps whose median falls from 1.1 to 0.3 pixels over the movie (median total 3.5 px), i.e. from 0.77 to 0.22 Å if
RELION reports them in unbinned 0.675 Å movie pixels. The defaults (J = 2 Å, τ = 2 frames, D = 0.2 Å/frame,
σ = 0.08 Å) give median steps of 1.2, 0.8, 0.5, 0.4, 0.35, 0.35, 0.35 px and a median total of 3.6 px at 0.675 Å.

The returned track is the **displacement of the specimen in each frame relative to frame 0** (frame 0 is exactly
0): frame ``t`` shows the specimen moved by ``s(t)``, ``frame_t(r) = frame_0(r − s(t))``, so
:func:`tomoforge.fourier.fourier_shift_2d` with ``s(t)`` makes frame ``t`` from the unmoved image, and a motion
correction program must shift frame ``t`` by ``−s(t)``. Frame 0 as the reference is RELION's convention for its
per-frame shifts (``rlnMicrographShiftX/Y`` of frame 1 are 0); MotionCor2 aligns to a reference frame (option
``-FmRef``) — a constant offset that comparisons should remove. Whether RELION's shifts are the displacement or
the correction (the sign) is settled by the motion-correction reader, not here.

References
----------
Brilot, A. F. et al. (2012). Beam-induced motion of vitrified specimen on holey carbon film. J. Struct. Biol. 177,
630–637. doi:10.1016/j.jsb.2012.02.003

Zheng, S. Q. et al. (2017). MotionCor2: anisotropic correction of beam-induced motion for improved cryo-electron
microscopy. Nat. Methods 14, 331–332. doi:10.1038/nmeth.4193
"""

from __future__ import annotations

import math

import torch

__all__ = ["beam_induced_motion"]


def beam_induced_motion(
    n_frames: int,
    *,
    generator: torch.Generator,
    pixel_size_angstrom: float,
    drift_angstrom_per_frame: float = 0.2,
    jitter_angstrom: float = 0.08,
    initial_jump_angstrom: float = 2.0,
    jump_time_constant_frames: float = 2.0,
    n_tilts: int | None = None,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """Random per-frame specimen shifts of one movie, or of ``n_tilts`` movies.

    Parameters
    ----------
    n_frames
        Frames per movie.
    generator
        Random generator (CPU); the tracks are deterministic for a seed.
    pixel_size_angstrom
        Pixel size of the frames the shifts refer to, in Å.
    drift_angstrom_per_frame
        Steady drift ``D`` per frame, in Å.
    jitter_angstrom
        Standard deviation ``σ`` of the per-frame jitter along each axis, in Å.
    initial_jump_angstrom
        Total length ``J`` of the early jump, in Å (reached after a few ``τ``).
    jump_time_constant_frames
        Time constant ``τ`` of the early jump, in frames.
    n_tilts
        Number of movies; ``None`` for a single movie.
    dtype
        Floating dtype of the result.

    Returns
    -------
    torch.Tensor
        ``(n_frames, 2)`` or ``(n_tilts, n_frames, 2)`` shifts ``(x, y)`` in pixels, relative to frame 0 (the first
        row is exactly 0); see the module docstring for the model and sign.
    """
    if n_frames < 1:
        raise ValueError("n_frames must be at least 1")
    if pixel_size_angstrom <= 0 or jump_time_constant_frames <= 0:
        raise ValueError("pixel_size_angstrom and jump_time_constant_frames must be positive")
    if min(drift_angstrom_per_frame, jitter_angstrom, initial_jump_angstrom) < 0:
        raise ValueError("drift, jitter and jump must be non-negative")
    n_movies = 1 if n_tilts is None else int(n_tilts)
    f64 = torch.float64
    jump_angle = 2.0 * math.pi * torch.rand(n_movies, generator=generator, dtype=f64)
    drift_angle = 2.0 * math.pi * torch.rand(n_movies, generator=generator, dtype=f64)
    jitter = jitter_angstrom * torch.randn((n_movies, n_frames, 2), generator=generator, dtype=f64)

    t = torch.arange(n_frames, dtype=f64)
    jump_profile = initial_jump_angstrom * -torch.expm1(-t / jump_time_constant_frames)  # (n_frames,)
    jump_dir = torch.stack([torch.cos(jump_angle), torch.sin(jump_angle)], dim=-1)  # (n_movies, 2)
    drift_dir = torch.stack([torch.cos(drift_angle), torch.sin(drift_angle)], dim=-1)
    positions = (
        jump_profile[None, :, None] * jump_dir[:, None, :]
        + (drift_angstrom_per_frame * t)[None, :, None] * drift_dir[:, None, :]
        + jitter
    )
    shifts_px = (positions - positions[:, :1, :]) / pixel_size_angstrom
    shifts_px = shifts_px.to(dtype)
    return shifts_px[0] if n_tilts is None else shifts_px
