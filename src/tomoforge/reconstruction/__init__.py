"""Tomogram reconstruction kernels: weighted back-projection and SIRT from aligned views, slab by slab.

See :mod:`tomoforge.reconstruction.projector` for the geometry (CONVENTIONS.md §7 in the aligned frame) and
:mod:`tomoforge.reconstruction.weighting` for the WBP filters.
"""

from tomoforge.reconstruction.projector import (
    backproject_general,
    backproject_single_axis,
    full_ray_width,
    general_rows_needed,
    project_single_axis,
    single_axis_matrix,
    sirt_slab,
    transpose_matrix,
)
from tomoforge.reconstruction.weighting import (
    angular_weights_rad,
    radial_falloff,
    ramp_response,
    sirt_like_factor,
    weight_projections,
    weighting_filters,
)

__all__ = [
    "angular_weights_rad",
    "backproject_general",
    "backproject_single_axis",
    "full_ray_width",
    "general_rows_needed",
    "project_single_axis",
    "radial_falloff",
    "ramp_response",
    "single_axis_matrix",
    "sirt_like_factor",
    "sirt_slab",
    "transpose_matrix",
    "weight_projections",
    "weighting_filters",
]
