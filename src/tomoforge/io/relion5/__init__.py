"""RELION 5 tomography STAR files: ``tomograms.star``, per-tilt-series tables, particles, picks, optimisation sets.

Read and write through the ``starfile`` package; every bad file raises :class:`~tomoforge.io.FormatError`. RELION's
conventions (tilt geometry, Euler angles, centred coordinates) are converted here, once, with
:mod:`tomoforge.geometry` (CONVENTIONS.md §4, §7; ``tutorial-steps.md`` §16, §18).
"""

from tomoforge.io.relion5.annotations import (
    RelionSpheres,
    read_relion_picks,
    read_relion_spheres,
    write_relion_picks,
    write_relion_spheres,
)
from tomoforge.io.relion5.particles import RelionParticles, read_relion_particles, write_relion_particles
from tomoforge.io.relion5.tilt_series import (
    read_relion_tilt_series,
    read_relion_tilt_series_table,
    relion_alignment_to_transform,
    transform_to_relion_alignment,
    write_relion_tilt_series,
)
from tomoforge.io.relion5.tomograms import (
    RelionOptimisationSet,
    RelionTomogram,
    read_optimisation_set,
    read_tomograms_star,
    write_optimisation_set,
    write_tomograms_star,
)

__all__ = [
    "RelionOptimisationSet",
    "RelionParticles",
    "RelionSpheres",
    "RelionTomogram",
    "read_optimisation_set",
    "read_relion_particles",
    "read_relion_picks",
    "read_relion_spheres",
    "read_relion_tilt_series",
    "read_relion_tilt_series_table",
    "read_tomograms_star",
    "relion_alignment_to_transform",
    "transform_to_relion_alignment",
    "write_optimisation_set",
    "write_relion_particles",
    "write_relion_picks",
    "write_relion_spheres",
    "write_relion_tilt_series",
    "write_tomograms_star",
]
