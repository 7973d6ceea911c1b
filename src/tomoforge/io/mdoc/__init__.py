"""SerialEM ``.mdoc`` files: a lossless raw model, Scipion-style import as tilt-series movies, and writing.

* :func:`read_mdoc` / :func:`write_mdoc`: any mdoc (tilt series, frame set, montage) as :class:`Mdoc`, global
  values and ``[Kind = name]`` sections with their values as strings, in file order; read → write → read is
  exact, and SerialEM's own files come back byte for byte.
* :func:`read_tilt_series_mdoc` / :func:`mdoc_to_tilt_series_movies`: a tilt-series mdoc as
  :class:`~tomoforge.models.TiltSeriesMovies`, with Scipion's import semantics and :class:`MdocOverrides`.
* :func:`write_tilt_series_mdoc` / :func:`tilt_series_movies_to_mdoc`: the mdoc SerialEM would have written.
"""

from tomoforge.io.mdoc._build import (
    format_number,
    serialem_frames_name,
    tilt_series_movies_to_mdoc,
    write_tilt_series_mdoc,
)
from tomoforge.io.mdoc._model import Mdoc, MdocSection, format_serialem_datetime, parse_serialem_datetime
from tomoforge.io.mdoc._text import format_mdoc_text, parse_mdoc_text, read_mdoc, write_mdoc
from tomoforge.io.mdoc._tilt_series import (
    MdocOverrides,
    mdoc_to_tilt_series_movies,
    normalize_ts_id,
    read_tilt_series_mdoc,
)

__all__ = [
    "Mdoc",
    "MdocOverrides",
    "MdocSection",
    "format_mdoc_text",
    "format_number",
    "format_serialem_datetime",
    "mdoc_to_tilt_series_movies",
    "normalize_ts_id",
    "parse_mdoc_text",
    "parse_serialem_datetime",
    "read_mdoc",
    "read_tilt_series_mdoc",
    "serialem_frames_name",
    "tilt_series_movies_to_mdoc",
    "write_mdoc",
    "write_tilt_series_mdoc",
]
