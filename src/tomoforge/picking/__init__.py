"""Picking kernels: ellipsoidal surfaces (fit, oriented points), the geometry of Dynamo's vesicle models, and
vesicle finding."""

from tomoforge.picking.ellipsoid import (
    EllipsoidFit,
    ellipsoid_area,
    ellipsoid_closest_point,
    ellipsoid_surface_points,
    fit_ellipsoid,
    orientations_along_normals,
)
from tomoforge.picking.vesicles import Vesicle, find_vesicles, shell_scores, trace_layer

__all__ = [
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
