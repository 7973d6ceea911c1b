"""Conversions between the alignment, CTF and particle files of IMOD, AreTomo, Warp, RELION 5, Dynamo and Scipion.

Every conversion goes through tomoforge's one data model, never from one tool's numbers straight to another's:

* alignments through :class:`Alignment` (per tilt a :class:`~tomoforge.models.TiltTransform`, tilt angle, x-tilt
  and excluded flag): :func:`read_alignment` / :func:`write_alignment`;
* CTF estimates through :class:`~tomoforge.models.CtfTiltSeries` (in :class:`TiltSeriesCtf`, with the tilt
  angles): :func:`read_ctf` / :func:`write_ctf`;
* particles through :class:`~tomoforge.models.ParticleSet`: :func:`read_particles` / :func:`write_particles`, with
  the tomogram geometry of :func:`tomogram_geometry` for voxel-based formats.

The format is chosen by the file extension. ``convert_*`` read, write and return a :class:`ConversionSummary`
(the one-line report of ``tomoforge convert``). Missing information raises :class:`~tomoforge.io.FormatError` with
a sentence that names the option of ``tomoforge convert`` to pass (the keyword arguments have the same names).
"""

from tomoforge.io.convert._common import ConversionSummary
from tomoforge.io.convert.alignment import (
    ALIGNMENT_READERS,
    ALIGNMENT_WRITERS,
    Alignment,
    convert_alignment,
    read_alignment,
    write_alignment,
)
from tomoforge.io.convert.ctf import CTF_READERS, CTF_WRITERS, TiltSeriesCtf, convert_ctf, read_ctf, write_ctf
from tomoforge.io.convert.particles import (
    PARTICLE_FORMATS,
    TomogramGeometry,
    convert_particles,
    read_particles,
    tomogram_geometry,
    write_particles,
)

__all__ = [
    "ALIGNMENT_READERS",
    "ALIGNMENT_WRITERS",
    "CTF_READERS",
    "CTF_WRITERS",
    "PARTICLE_FORMATS",
    "Alignment",
    "ConversionSummary",
    "TiltSeriesCtf",
    "TomogramGeometry",
    "convert_alignment",
    "convert_ctf",
    "convert_particles",
    "read_alignment",
    "read_ctf",
    "read_particles",
    "tomogram_geometry",
    "write_alignment",
    "write_ctf",
    "write_particles",
]
