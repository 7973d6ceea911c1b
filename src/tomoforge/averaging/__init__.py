"""Subtomogram-averaging kernels: Fourier-slice reconstruction of maps from particle images of known geometry,
particle reconstruction from tilt images with gold-standard half maps, and the FSC."""

from tomoforge.averaging.fsc import (
    centre_crop_or_pad,
    fourier_shell_correlation,
    fsc_resolution_angstrom,
    shell_frequencies_per_angstrom,
    shell_index,
    soft_sphere_mask,
)
from tomoforge.averaging.insert import (
    accumulator_shape,
    insert_slices,
    reconstruct,
    symmetrize_accumulators,
    symmetry_rotations,
)

__all__ = [
    "accumulator_shape",
    "centre_crop_or_pad",
    "fourier_shell_correlation",
    "fsc_resolution_angstrom",
    "insert_slices",
    "reconstruct",
    "shell_frequencies_per_angstrom",
    "shell_index",
    "soft_sphere_mask",
    "symmetrize_accumulators",
    "symmetry_rotations",
]
