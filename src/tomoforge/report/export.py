"""``tomoforge export``: a project's results in the formats other tools open, in one layout.

For each kind of result the latest succeeded run of the step that makes it is taken:

* ``motion/<ts>.csv`` — ``motion.correct``: one row per tilt and frame (acquisition order, tilt angle, frame,
  shift x and y in Å of the movie's pixel grid);
* ``alignment/<ts>.xf``, ``<ts>.tlt`` (IMOD, for the motion-corrected stack at its pixel size) and ``<ts>.json``
  (that pixel size, the image size and the excluded views) — the alignment the CTF was estimated on
  (``ctf.estimate``'s series, else the latest alignment step's);
* ``ctf/<ts>.defocus`` (IMOD ctfphaseflip) — ``ctf.estimate``;
* ``tomograms/<ts>.mrc`` — ``tomogram.reconstruct``;
* ``relion5/tomograms.star``, ``relion5/tilt_series/<ts>.star``, ``relion5/particles.star`` — the particles of
  the latest map (``averaging.reconstruct``'s input), else the latest picks; ``scipion/coordinates.sqlite`` and
  ``dynamo/particles.tbl`` for the same particles;
* ``average/map.mrc``, ``half1.mrc``, ``half2.mrc`` (the latest ``averaging.reconstruct``) with ``mask.mrc`` and
  ``fsc.csv`` (its ``averaging.postprocess``, when there is one).

Whatever the project lacks is listed as missing; nothing is half-written (each file goes through a temporary name).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tomoforge.workflow import Project

__all__ = ["export_project"]


def _latest(project: Project, *steps: str) -> Any:
    """The latest succeeded run of any of ``steps`` (None when there is none)."""
    runs = [r for r in project.runs() if r.step in steps and r.status == "succeeded"]
    return max(runs, key=lambda r: r.id) if runs else None


def _copy(source: Path, target: Path, written: list[str], root: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial")
    shutil.copyfile(source, partial)
    partial.replace(target)
    written.append(str(target.relative_to(root)))


def export_project(project: Project, out: Path) -> dict[str, list[str]]:
    """Write the project's results into ``out`` (module docstring); returns the files ``written`` and what is
    ``missing``."""
    from tomoforge.io.relion5 import RelionTomogram, write_relion_tilt_series, write_tomograms_star
    from tomoforge.models import ParticleSet
    from tomoforge.steps._alignment_io import export_imod_alignment
    from tomoforge.steps._artifacts import read_tilt_series
    from tomoforge.steps._tomograms import read_tomograms
    from tomoforge.workflow.fsutil import atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    written: list[str] = []
    missing: list[str] = []

    motion = _latest(project, "motion.correct")
    if motion is None:
        missing.append("motion (no motion.correct run)")
    else:
        for csv in sorted(project.outputs(motion.id)["tilt_series"].path.glob("*_motion.csv")):
            _copy(csv, out / "motion" / csv.name.replace("_motion.csv", ".csv"), written, out)

    ctf = _latest(project, "ctf.estimate")
    aligned = ctf or _latest(project, "alignment.assign", "alignment.fiducial", "alignment.coarse")
    series_list = read_tilt_series(project.outputs(aligned.id)["tilt_series"].path) if aligned else []
    if not series_list:
        missing.append("alignment (no aligned tilt series)")
    for series in series_list:
        folder = out / "alignment"
        folder.mkdir(parents=True, exist_ok=True)
        export_imod_alignment(folder, series)
        h, w = series.image_shape_yx or (0, 0)
        sidecar = {
            "pixel_size_angstrom": series.pixel_size_angstrom,
            "image_size_xy": [w, h],
            "excluded_views": [t.index for t in series.tilts if t.excluded],
        }
        atomic_write_text(folder / f"{series.ts_id}.json", json.dumps(sidecar, indent=2) + "\n")
        written += [f"alignment/{series.ts_id}{suffix}" for suffix in (".xf", ".tlt", ".json")]
        if ctf is not None:
            _copy(project.outputs(ctf.id)["tilt_series"].path / f"{series.ts_id}.defocus",
                  out / "ctf" / f"{series.ts_id}.defocus", written, out)  # fmt: skip
            target = out / "relion5" / "tilt_series" / f"{series.ts_id}.star"
            target.parent.mkdir(parents=True, exist_ok=True)
            write_relion_tilt_series(series, target)
            written.append(str(target.relative_to(out)))
    if ctf is None:
        missing.append("ctf (no ctf.estimate run)")

    reconstruction = _latest(project, "tomogram.reconstruct")
    tomograms = read_tomograms(project.outputs(reconstruction.id)["tomograms"].path) if reconstruction else []
    if not tomograms:
        missing.append("tomograms (no tomogram.reconstruct run)")
    for tomogram in tomograms:
        _copy(tomogram.volume_file, out / "tomograms" / f"{tomogram.ts_id}.mrc", written, out)
    by_id = {s.ts_id: s for s in series_list}
    rows = []
    for tomogram in tomograms:
        matched = by_id.get(tomogram.ts_id)
        if matched is None:
            continue
        series = matched
        binning = tomogram.voxel_size_angstrom / series.pixel_size_angstrom
        nz, ny, nx = tomogram.shape_zyx
        rows.append(
            RelionTomogram(
                ts_id=tomogram.ts_id,
                voltage_kv=series.acquisition.voltage_kv,
                spherical_aberration_mm=series.acquisition.spherical_aberration_mm,
                amplitude_contrast=series.acquisition.amplitude_contrast,
                original_pixel_size_angstrom=series.acquisition.pixel_size_angstrom,
                optics_group_name="optics1",
                tilt_series_pixel_size_angstrom=series.pixel_size_angstrom,
                tilt_series_star_file=Path("tilt_series") / f"{tomogram.ts_id}.star",
                binning=binning,
                size_xyz_px=(round(nx * binning), round(ny * binning), round(nz * binning)),
            )
        )
    if rows:
        write_tomograms_star(rows, out / "relion5" / "tomograms.star")
        written.append("relion5/tomograms.star")

    average = _latest(project, "averaging.reconstruct")
    particles_folder = None
    if average is not None:
        particles_folder = project.store.inputs(average.id)["particles"].path
    else:
        picks = _latest(project, "picking.vesicles", "picking.surfaces", "picking.template", "picking.import")
        particles_folder = project.outputs(picks.id)["particles"].path if picks else None
    if particles_folder is None:
        missing.append("particles (no picking or averaging run)")
    else:
        particles = ParticleSet.model_validate_json((particles_folder / "particles.json").read_text())
        _write_particles(particles, tomograms, out, written)
    if average is None:
        missing.append("average (no averaging.reconstruct run)")
    else:
        folder = project.outputs(average.id)["map"].path
        for name in ("map.mrc", "half1.mrc", "half2.mrc"):
            _copy(folder / name, out / "average" / name, written, out)
        post = [
            r for r in project.runs()
            if r.step == "averaging.postprocess" and r.status == "succeeded"
            and project.store.inputs(r.id)["map"].path == folder
        ]  # fmt: skip
        if post:
            done = project.outputs(max(post, key=lambda r: r.id).id)["postprocess"].path
            _copy(done / "mask.mrc", out / "average" / "mask.mrc", written, out)
            _copy(done / "fsc.csv", out / "average" / "fsc.csv", written, out)
        else:
            _copy(folder / "fsc.csv", out / "average" / "fsc.csv", written, out)
            missing.append("average/mask.mrc (no averaging.postprocess of the latest map)")
    atomic_write_text(
        out / "export.json", json.dumps({"written": written, "missing": missing}, indent=1) + "\n"
    )
    return {"written": written, "missing": missing}


def _write_particles(particles: Any, tomograms: list[Any], out: Path, written: list[str]) -> None:
    from tomoforge.io.convert import write_particles
    from tomoforge.io.relion5 import write_relion_particles
    from tomoforge.steps._particles import tomograms_geometry

    plain = particles.model_copy(
        update={"particles": [p.model_copy(update={"group": None}) for p in particles.particles]}
    )
    (out / "relion5").mkdir(parents=True, exist_ok=True)
    write_relion_particles(plain, out / "relion5" / "particles.star")
    written.append("relion5/particles.star")
    if tomograms:
        geometry = tomograms_geometry(tomograms)
        (out / "dynamo").mkdir(parents=True, exist_ok=True)
        write_particles(plain, out / "dynamo" / "particles.tbl", geometry)
        written.append("dynamo/particles.tbl")
        if len({t.voxel_size_angstrom for t in tomograms}) == 1:
            (out / "scipion").mkdir(parents=True, exist_ok=True)
            write_particles(plain, out / "scipion" / "coordinates.sqlite", geometry)
            written.append("scipion/coordinates.sqlite")
