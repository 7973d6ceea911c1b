"""Contrast transfer function kernels: the CTF, its estimation from tilted images and its correction.

Defocus is positive for underfocus, the astigmatism angle runs counter-clockwise from image +x, and the CTF has
CTFFIND's sign (negative at low frequency: positive potential is dark in underfocus images); see
:mod:`tomoforge.ctf.ctf2d` and CONVENTIONS.md §8.
"""

from tomoforge.ctf.correct import StripLayout, correction_filter, phase_flip_tilted, strip_layout
from tomoforge.ctf.ctf2d import ctf_1d, ctf_2d, ctf_zeros_per_angstrom, electron_wavelength_angstrom
from tomoforge.ctf.estimate import CtfFit, estimate_ctf
from tomoforge.ctf.spectra import radial_bins, tile_amplitude_spectra, tile_origins

__all__ = [
    "CtfFit",
    "StripLayout",
    "correction_filter",
    "ctf_1d",
    "ctf_2d",
    "ctf_zeros_per_angstrom",
    "electron_wavelength_angstrom",
    "estimate_ctf",
    "phase_flip_tilted",
    "radial_bins",
    "strip_layout",
    "tile_amplitude_spectra",
    "tile_origins",
]
