"""Fourier-space kernels (FFT conventions of CONVENTIONS.md §9)."""

from tomoforge.fourier.frequencies import dc_index, fftfreq_grid

__all__ = ["dc_index", "fftfreq_grid"]
