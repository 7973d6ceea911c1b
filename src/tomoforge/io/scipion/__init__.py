"""Scipion set files (SQLite, pyworkflow's flat mapper): SetOfCoordinates3D read/write and SetOfTiltSeries read.

Layout (``tutorial-steps.md`` §17): a ``Properties(key, value)`` table of set attributes (``self`` = the set class),
a ``Classes(id, label_property, column_name, class_name)`` table that maps each item attribute (a dotted label such
as ``_eulerMatrix._matrix``) to a column ``cNN`` of ``Objects(id, enabled, label, comment, creation, c01, …)``.
Columns differ between versions and extended attributes, so the column map is always built from ``Classes``.
Nested sets (the tilt images of each tilt series) use the same three tables with a ``<prefix>_`` name. Reading a
set of another kind raises :class:`~tomoforge.io.FormatError` (``"a SetOfTiltSeries, not a SetOfCoordinates3D"``).
"""

from tomoforge.io.scipion.coordinates import (
    ScipionCoordinates,
    read_scipion_coordinates,
    scipion_coordinate,
    write_scipion_coordinates,
)
from tomoforge.io.scipion.tilt_series import read_scipion_tilt_series

__all__ = [
    "ScipionCoordinates",
    "read_scipion_coordinates",
    "read_scipion_tilt_series",
    "scipion_coordinate",
    "write_scipion_coordinates",
]
