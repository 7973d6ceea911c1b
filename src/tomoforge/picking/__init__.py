"""Picking kernels: ellipsoidal surfaces (fit, oriented points), the geometry of Dynamo's vesicle models, and
vesicle finding, template matching."""

from tomoforge.picking.ellipsoid import (
    EllipsoidFit,
    ellipsoid_area,
    ellipsoid_closest_point,
    ellipsoid_normal_field,
    ellipsoid_surface_points,
    fit_ellipsoid,
    orientations_along_normals,
)
from tomoforge.picking.template_matching import (
    MatchResult,
    angular_sampling,
    false_alarm_threshold,
    find_peaks,
    match_template,
    missing_wedge_weight,
    radial_weight,
    rescale_reference,
)
from tomoforge.picking.vesicles import Vesicle, find_vesicles, shell_scores, trace_layer

__all__ = [
    "MatchResult",
    "angular_sampling",
    "ellipsoid_normal_field",
    "false_alarm_threshold",
    "find_peaks",
    "match_template",
    "missing_wedge_weight",
    "radial_weight",
    "rescale_reference",
    "Vesicle",
    "EllipsoidFit",
    "ellipsoid_area",
    "ellipsoid_closest_point",
    "ellipsoid_surface_points",
    "find_vesicles",
    "fit_ellipsoid",
    "orientations_along_normals",
    "shell_scores",
    "trace_layer",
]
