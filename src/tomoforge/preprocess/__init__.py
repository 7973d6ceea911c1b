"""Image preprocessing kernels: X-ray erasure (IMOD ``ccderaser`` semantics)."""

from tomoforge.preprocess.xray import XrayObject, erase_xrays, find_xrays, label_patches

__all__ = ["XrayObject", "erase_xrays", "find_xrays", "label_patches"]
