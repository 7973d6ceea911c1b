"""MRC2014 images, image stacks and volumes: lazy reading, eager section ranges, atomic and streaming writing.

Axes follow CONVENTIONS.md §1: arrays are ``(z, y, x)`` for volumes and ``(n, y, x)`` for stacks, with ``nx, ny,
nz = shape[2], shape[1], shape[0]``; files whose header stores the axes in another order (``mapc, mapr, maps``
other than ``1, 2, 3``) are transposed to that order when read. Voxel sizes and origins are ``(x, y, z)`` in Å.

``origin_angstrom`` is the header's ``origin`` field exactly as stored (MRC2014, as read by RELION and ChimeraX:
the position in Å of the first voxel, index 0). IMOD reads the same field with the opposite sign; no conversion is
made here. It is not the centre-voxel position of :class:`tomoforge.models.Volume`.

Mode 0 follows MRC2014 (signed bytes) unless the file carries IMOD's stamp without IMOD's "signed bytes" flag,
as SerialEM and older IMOD programs write it; such data are read as unsigned bytes (``uint8``).

Every bad file raises :class:`~tomoforge.io.FormatError` with one sentence naming the file and the problem.
"""

from tomoforge.io.mrc.reading import MrcVolume, check_mrc_finite, read_mrc, read_mrc_array
from tomoforge.io.mrc.writing import MrcWriter, mrc_mode_for, write_mrc

__all__ = [
    "MrcVolume",
    "MrcWriter",
    "check_mrc_finite",
    "mrc_mode_for",
    "read_mrc",
    "read_mrc_array",
    "write_mrc",
]
