"""Motion-correction kernels: whole-frame (global) and patch-based (local) alignment of movie frames and
motion-corrected sums.

Shifts are the specimen displacement of each frame relative to frame 0, in pixels of the input frames
(CONVENTIONS.md §8).
"""

from tomoforge.motion.global_align import aligned_shape, apply_motion, estimate_global_motion
from tomoforge.motion.local_align import LocalMotion, apply_local_motion, estimate_local_motion, patch_grid
from tomoforge.motion.peaks import find_peak_2d

__all__ = [
    "LocalMotion",
    "aligned_shape",
    "apply_local_motion",
    "apply_motion",
    "estimate_global_motion",
    "estimate_local_motion",
    "find_peak_2d",
    "patch_grid",
]
