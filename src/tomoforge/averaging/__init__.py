"""Subtomogram-averaging kernels: Fourier-slice reconstruction of maps from particle images of known geometry."""

from tomoforge.averaging.insert import (
    accumulator_shape,
    insert_slices,
    reconstruct,
    symmetrize_accumulators,
    symmetry_rotations,
)

__all__ = [
    "accumulator_shape",
    "insert_slices",
    "reconstruct",
    "symmetrize_accumulators",
    "symmetry_rotations",
]
