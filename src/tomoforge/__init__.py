"""tomoforge: cryo-electron tomography from tilt-series movies to subtomogram averages.

The package is layered (see ARCHITECTURE.md); importing it is cheap and pulls in no torch.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
