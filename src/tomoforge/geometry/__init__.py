"""Geometry kernels: rotations, Euler conventions, centres and the projection model.

Every function here is a pure function on tensors (or array-likes converted to tensors), follows CONVENTIONS.md and
imports nothing else of tomoforge. Coordinate vectors are ordered ``(x, y, z)``; array axes are ``(z, y, x)``.
"""

from tomoforge.geometry.centres import (
    centre_index,
    imod_centre,
    imod_to_tomoforge_xf_shift_px,
    relion_centre,
    tomoforge_to_imod_xf_shift_px,
)
from tomoforge.geometry.euler import (
    dynamo_euler_to_matrix,
    dynamo_from_scipion_matrix,
    matrix_to_dynamo_euler,
    matrix_to_relion_euler,
    relion_euler_to_matrix,
    relion_from_scipion_matrix,
    scipion_matrix_from_dynamo,
    scipion_matrix_from_relion,
)
from tomoforge.geometry.projection import (
    plane_depth_px,
    point_defocus_angstrom,
    project_points,
    projection_matrices,
    projection_matrices_from_xf,
)
from tomoforge.geometry.rotations import (
    rotate_volume,
    rotation_2d,
    rotation_from_vector,
    rotation_x,
    rotation_y,
    rotation_z,
)

__all__ = [
    "centre_index",
    "dynamo_euler_to_matrix",
    "dynamo_from_scipion_matrix",
    "imod_centre",
    "imod_to_tomoforge_xf_shift_px",
    "matrix_to_dynamo_euler",
    "matrix_to_relion_euler",
    "point_defocus_angstrom",
    "project_points",
    "plane_depth_px",
    "projection_matrices",
    "projection_matrices_from_xf",
    "relion_centre",
    "relion_euler_to_matrix",
    "relion_from_scipion_matrix",
    "rotate_volume",
    "rotation_2d",
    "rotation_from_vector",
    "rotation_x",
    "rotation_y",
    "rotation_z",
    "scipion_matrix_from_dynamo",
    "scipion_matrix_from_relion",
    "tomoforge_to_imod_xf_shift_px",
]
