"""Image preprocessing kernels: X-ray erasure (IMOD ``ccderaser`` semantics), antialiased binning."""

from tomoforge.preprocess.binning import antialias_bin_2d
from tomoforge.preprocess.xray import XrayObject, erase_xrays, find_xrays, label_patches

__all__ = ["XrayObject", "antialias_bin_2d", "erase_xrays", "find_xrays", "label_patches"]
