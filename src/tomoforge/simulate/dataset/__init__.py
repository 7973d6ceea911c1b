"""Whole simulated datasets: raw movies and SerialEM mdocs as a microscope writes them, and their ground truth.

:func:`generate_dataset` writes, for every tilt series ``<ts>`` of a :class:`~tomoforge.simulate.presets.SimulationConfig`::

    frames/<ts>_<order>_<angle>.mrc      one movie per tilt (integer counts, MRC mode 0 or 6, frame pixel)
    frames/<ts>.mrc.mdoc                 SerialEM-style mdoc (nominal angles and axis, doses, times)
    truth/truth.json                     everything below, plus the config and the specimen
    truth/motion/<ts>.csv                per-frame specimen displacement relative to frame 0 (Å)
    truth/alignment/<ts>.xf, .tlt, .rawtlt (.xtilt)   IMOD alignment of the motion-corrected stack
    truth/alignment/<ts>.json            {"pixel_size_angstrom", "image_size_xy", "excluded_views"}
    truth/ctf/<ts>.defocus               IMOD defocus per tilt at the tomogram centre's height
    truth/tomograms/<ts>.mrc             the undamaged, noise-free potential (Fourier-binned)
    truth/relion5/tomograms.star, tilt_series/<ts>.star, particles.star
    truth/average/map.mrc, map_simulation_voxel.mrc    the clean reference (contrast against ice)
    truth/gold/<ts>.csv, truth/xrays/<ts>.csv

Truth conventions
-----------------
* Geometry follows CONVENTIONS.md §7 with the **true** tilt angles ``θᵢ = nominal + error``, tilt axis
  ``α = mdoc axis + tilt_axis_error_deg``, x-tilt ``φ`` and stage shifts ``sᵢ`` (the image position of the
  tomogram centre). The motion-corrected stack is taken to be aligned to frame 0 of each movie (the motion track
  is the displacement relative to frame 0), so its alignment is the rigid ``A = Rz(−α)``, ``d = −A·s``.
* Defocus is positive underfocus at the tomogram centre's height; a point at ``depth`` sees ``Δf − depth``
  (handedness +1, CONVENTIONS.md §8).
* Positions (particles, gold) are in Å relative to the tomogram centre; particle rotations map the reference box
  into the tomogram (``R·ẑ`` is the outward normal, the hexamer's NTD pointing to the membrane).
* The tomogram truth is the undamaged potential (volts, protein positive) without the per-tilt ice texture, over
  the field of view as the aligned images show it (frame width and height, swapped when the tilt axis is nearer
  x than y) and the whole simulated depth, Fourier-binned to ``tomogram_voxel_size_angstrom``; its header origin
  is the position of voxel 0 relative to the tomogram centre. Objects are placed inside that field; the simulated
  volume adds the image margins (CTF delocalisation, motion) and, beyond it, the ice goes on (tilted and shifted
  views see more ice, never more objects).
* The reference maps (``average/``) are the particle's potential as contrast against ice (volts): the central
  hexamer alone, without its lattice neighbours.

Memory: one potential volume and one tilt's slabs and frame spectra at a time; frames are streamed to disk
(:class:`tomoforge.io.mrc.MrcWriter`). The volume is the largest object: ≈ 0.5 GB for ``demo``, ≈ 15 GB for the
tutorial presets (≈ 2200×2200×780 voxels of 2.7 Å).

The package: :mod:`.acquisition` (template and true geometry) → :mod:`.reference` (particle map) → :mod:`.sizes`
→ :mod:`.truth` (the truth files) → :mod:`.generate` (the orchestration); imports only go that way.
"""

from __future__ import annotations

from tomoforge.simulate.dataset.acquisition import (
    SeriesPlan,
    TiltPlan,
    default_mdoc_path,
    load_acquisition,
    plan_tilt_series,
)
from tomoforge.simulate.dataset.generate import DatasetSummary, generate_dataset
from tomoforge.simulate.dataset.generate import ProgressCallback as ProgressCallback
from tomoforge.simulate.dataset.reference import particle_contrast_map

__all__ = [
    "DatasetSummary",
    "SeriesPlan",
    "TiltPlan",
    "default_mdoc_path",
    "generate_dataset",
    "load_acquisition",
    "particle_contrast_map",
    "plan_tilt_series",
]
