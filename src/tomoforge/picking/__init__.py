"""Picking kernels: ellipsoidal surfaces (fit, oriented points), the geometry of Dynamo's vesicle models."""

from tomoforge.picking.ellipsoid import (
    EllipsoidFit,
    ellipsoid_area,
    ellipsoid_closest_point,
    ellipsoid_surface_points,
    fit_ellipsoid,
    orientations_along_normals,
)

__all__ = [
    "EllipsoidFit",
    "ellipsoid_area",
    "ellipsoid_closest_point",
    "ellipsoid_surface_points",
    "fit_ellipsoid",
    "orientations_along_normals",
]
