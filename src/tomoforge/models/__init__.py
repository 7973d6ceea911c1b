"""Declared, validated metadata models of tomoforge (pydantic v2).

Metadata lives in these models; bulk arrays (images, volumes, long tables) live in MRC or STAR
files that the models point to by path. Values that never change are frozen models (derive
variants with ``.replace(...)``); collections that steps build up (tilt series, particle sets,
landmark models) are mutable, validate every attribute assignment, and have ``.revalidate()``
for after in-place list edits. Unknown fields, NaN and infinities are rejected everywhere.
Every model round-trips exactly through ``model_dump_json()`` / ``model_validate_json()``;
:func:`save_json` and :func:`load_json` write and read files atomically with clear errors.

Conventions
-----------
* Units are part of every field name: ``_angstrom`` (lengths, Å), ``_deg`` (angles, degrees),
  ``_kv`` (voltage), ``_mm`` (spherical aberration), ``_e_per_angstrom2`` (dose, e⁻/Å²),
  ``_px`` (pixels or voxels), ``_s`` (seconds), ``_per_angstrom`` (spatial frequency, 1/Å).
  Fractions (amplitude contrast, FSC) are unitless and say so.
* Array axes are (z, y, x) for volumes and (y, x) for images; vectors are written (x, y, z).
* Pixel coordinates are 0-based with pixel centres at integers; the centre of an image or volume
  of size N along an axis is at index ``N // 2``. (IMOD puts the centre at (N - 1) / 2 and RELION
  at int(N / 2); conversions live in the I/O layer, not here.)
* Positions in a tomogram are in Å relative to its centre voxel (Z//2, Y//2, X//2).
* Rotations are active and act on column vectors: a reference-box point ``p`` maps to
  ``position + R @ p`` in the tomogram.
* Tilt angles are in [-90, 90] degrees; the tilt-axis angle follows IMOD/SerialEM: from the image
  Y axis to the tilt axis, counter-clockwise positive. 2D transforms have the IMOD ``.xf`` meaning
  (raw to aligned image, about the centres) with shifts in Å.
* Gold-standard half sets are labelled 1 and 2 (named fields ``half1``/``half2``, never list positions).
"""

from tomoforge.models._json import ModelFileError, load_json, save_json
from tomoforge.models.acquisition import Acquisition
from tomoforge.models.alignment import LandmarkChain, LandmarkModel, LandmarkPoint
from tomoforge.models.ctf import CtfParameters, CtfTiltEstimate, CtfTiltSeries
from tomoforge.models.particles import Particle, ParticleSet
from tomoforge.models.tilt_series import TiltImage, TiltImageMovie, TiltSeries, TiltSeriesMovies
from tomoforge.models.tomogram import ReconstructionMethod, Tomogram
from tomoforge.models.transform import TiltTransform
from tomoforge.models.volume import FscCurve, HalfMaps, Volume

__all__ = [
    "Acquisition",
    "CtfParameters",
    "CtfTiltEstimate",
    "CtfTiltSeries",
    "FscCurve",
    "HalfMaps",
    "LandmarkChain",
    "LandmarkModel",
    "LandmarkPoint",
    "ModelFileError",
    "Particle",
    "ParticleSet",
    "ReconstructionMethod",
    "TiltImage",
    "TiltImageMovie",
    "TiltSeries",
    "TiltSeriesMovies",
    "TiltTransform",
    "Tomogram",
    "Volume",
    "load_json",
    "save_json",
]
