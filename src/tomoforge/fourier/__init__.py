"""Fourier-space kernels (FFT conventions of CONVENTIONS.md §9)."""

from tomoforge.fourier.crop import fourier_bin_2d, fourier_crop_rfft_2d
from tomoforge.fourier.dose import critical_exposure, dose_filter_image, dose_weights, frame_dose_weights
from tomoforge.fourier.frequencies import dc_index, fftfreq_grid, rfft_multiplicity
from tomoforge.fourier.shift import fourier_shift_2d, shift_phase_ramp_2d
from tomoforge.fourier.windows import edge_taper, fast_fft_size

__all__ = [
    "critical_exposure",
    "dc_index",
    "dose_filter_image",
    "dose_weights",
    "edge_taper",
    "fast_fft_size",
    "fftfreq_grid",
    "frame_dose_weights",
    "fourier_bin_2d",
    "fourier_crop_rfft_2d",
    "fourier_shift_2d",
    "rfft_multiplicity",
    "shift_phase_ramp_2d",
]
