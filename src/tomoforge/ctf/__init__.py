"""Contrast transfer function kernels.

Defocus is positive for underfocus, the astigmatism angle runs counter-clockwise from image +x, and the CTF has
CTFFIND's sign (negative at low frequency: positive potential is dark in underfocus images); see
:mod:`tomoforge.ctf.ctf2d` and CONVENTIONS.md §8.
"""

from tomoforge.ctf.ctf2d import ctf_1d, ctf_2d, ctf_zeros_per_angstrom, electron_wavelength_angstrom

__all__ = ["ctf_1d", "ctf_2d", "ctf_zeros_per_angstrom", "electron_wavelength_angstrom"]
