"""Tilt-series alignment kernels: coarse cross-correlation, gold-bead detection and tracking, bundle adjustment.

Every kernel follows CONVENTIONS.md §6 (IMOD ``.xf`` meaning about centres ``N // 2``) and §7 (the projection model).
"""

from tomoforge.alignment.beads import BeadCandidates, BeadMaps, bead_score_maps, detect_beads
from tomoforge.alignment.bundle import FiducialAlignment, fiducial_align
from tomoforge.alignment.coarse import CoarseAlignment, coarse_align, imod_filter
from tomoforge.alignment.patches import PatchTracks, chop_contours, track_patches
from tomoforge.alignment.surfaces import SurfaceAnalysis, two_surface_analysis
from tomoforge.alignment.tracking import BeadSeeds, BeadTracks, seed_beads, track_beads
from tomoforge.alignment.transform import transform_images

__all__ = [
    "BeadCandidates",
    "BeadMaps",
    "BeadSeeds",
    "BeadTracks",
    "CoarseAlignment",
    "FiducialAlignment",
    "PatchTracks",
    "SurfaceAnalysis",
    "bead_score_maps",
    "chop_contours",
    "coarse_align",
    "detect_beads",
    "fiducial_align",
    "imod_filter",
    "seed_beads",
    "track_beads",
    "track_patches",
    "transform_images",
    "two_surface_analysis",
]
