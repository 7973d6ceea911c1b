"""Step ``import.movies``: SerialEM tilt-series mdocs and their movies → ``tilt_series_movies``.

Input ``movies`` (kind ``movies_folder``): the folder holding the ``.mdoc`` files and the movies they name. It is an
input, not a parameter, so the engine identifies it by the path, size and modification time of every file below it:
editing an mdoc or replacing a movie invalidates the cached import and everything downstream.

Output ``movies`` (kind ``tilt_series_movies``): a folder with one ``<ts>.json`` per mdoc, the
:class:`~tomoforge.models.TiltSeriesMovies` of that tilt series (see :mod:`tomoforge.steps._artifacts`).
Scipion's import semantics (``../shared/docs/tutorial-steps.md`` §1) are those of
:func:`tomoforge.io.mdoc.read_tilt_series_mdoc`: acquisition order from ``DateTime``, prior dose as the running
sum in acquisition order, user values winning over the mdoc's.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

from tomoforge.workflow import Artifact, Inputs, InputSpec, RunContext, step

if TYPE_CHECKING:
    from tomoforge.io.mdoc import MdocOverrides

__all__ = ["ImportMoviesParams", "import_movies"]


class ImportMoviesParams(BaseModel):
    """Parameters of ``import.movies`` (the Scipion import form)."""

    pattern: str = Field("*.mdoc", description="Glob pattern of the mdoc files inside the movies folder.")
    voltage_kv: float | None = Field(
        None, gt=0, description="Acceleration voltage in kV; None: from the mdoc."
    )
    spherical_aberration_mm: float = Field(2.7, ge=0, description="Spherical aberration in mm.")
    amplitude_contrast: float = Field(0.1, ge=0, lt=1, description="Amplitude contrast (fraction, unitless).")
    pixel_size_angstrom: float | None = Field(
        None, gt=0, description="Pixel size of the movie frames in Å; None: PixelSpacing of the mdoc."
    )
    tilt_axis_angle_deg: float | None = Field(
        None,
        description="Tilt-axis angle in degrees (from image Y, counter-clockwise); None: from the mdoc title.",
    )
    dose_per_tilt_e_per_angstrom2: float | None = Field(
        None, gt=0, description="Dose of every tilt in e⁻/Å²; None: per tilt from the mdoc."
    )
    tomo5_axis_convention: bool = Field(
        False, description="The mdoc comes from Thermo Fisher Tomo 5: its tilt axis becomes −axis − 90°."
    )
    check_frames_exist: bool = Field(
        True, description="Require every movie file named by the mdocs to exist."
    )

    def overrides(self) -> MdocOverrides:
        """The user values as :class:`~tomoforge.io.mdoc.MdocOverrides`."""
        from tomoforge.io.mdoc import MdocOverrides

        return MdocOverrides(
            voltage_kv=self.voltage_kv,
            spherical_aberration_mm=self.spherical_aberration_mm,
            amplitude_contrast=self.amplitude_contrast,
            pixel_size_angstrom=self.pixel_size_angstrom,
            tilt_axis_angle_deg=self.tilt_axis_angle_deg,
            dose_per_tilt_e_per_angstrom2=self.dose_per_tilt_e_per_angstrom2,
            tomo5_axis_convention=self.tomo5_axis_convention,
        )


def _mdoc_files(folder: Path, pattern: str) -> list[Path]:
    return sorted(p for p in folder.glob(pattern) if p.is_file())


def _validate(params: ImportMoviesParams, inputs: Inputs) -> list[str]:
    if "movies" not in inputs:
        return []
    folder = inputs.path("movies")
    if not folder.is_dir():
        return [f"The movies input {folder} is not a folder."]
    if not _mdoc_files(folder, params.pattern):
        return [f"No file in {folder} matches the pattern {params.pattern!r}."]
    return []


def _summary(outputs: dict[str, Artifact]) -> dict[str, object]:
    from tomoforge.steps._artifacts import read_tilt_series_movies

    series = read_tilt_series_movies(outputs["movies"].path)
    return {
        "tilt_series": len(series),
        "tilts": {s.ts_id: s.n_tilts for s in series},
        "pixel_size_angstrom": {s.ts_id: s.acquisition.pixel_size_angstrom for s in series},
        "tilt_range_deg": {s.ts_id: [min(s.tilt_angles_deg), max(s.tilt_angles_deg)] for s in series},
        "dose_per_tilt_e_per_angstrom2": {
            s.ts_id: [round(t.dose_e_per_angstrom2, 4) for t in s.tilts] for s in series
        },
        "total_dose_e_per_angstrom2": {
            s.ts_id: round(sum(t.dose_e_per_angstrom2 for t in s.tilts), 4) for s in series
        },
    }


def _methods(params: ImportMoviesParams) -> str:
    return (
        "Tilt-series movies were imported from SerialEM mdoc files with Scipion's conventions "
        "(de la Rosa-Trevín et al., 2016, doi:10.1016/j.jsb.2016.04.010; Mastronarde, 2005, "
        "doi:10.1016/j.jsb.2005.07.007): acquisition order from the time stamps and prior dose accumulated "
        "in that order."
    )


@step(
    name="import.movies",
    version="1",
    inputs={
        "movies": InputSpec(
            kind="movies_folder", description="Folder with the SerialEM .mdoc files and the movies they name."
        )
    },
    outputs={"movies": "tilt_series_movies"},
    validate=_validate,
    summary=_summary,
    methods=_methods,
)
def import_movies(params: ImportMoviesParams, inputs: Inputs, ctx: RunContext) -> dict[str, Path]:
    """Import tilt-series movies from SerialEM mdoc files (one tilt series per mdoc)."""
    from tomoforge.io.mdoc import read_tilt_series_mdoc
    from tomoforge.steps._artifacts import write_tilt_series_movies

    folder = inputs.path("movies")
    mdocs = _mdoc_files(folder, params.pattern)
    if not mdocs:
        raise FileNotFoundError(f"{folder}: no file matches the pattern {params.pattern!r}")
    series = []
    seen: dict[str, Path] = {}
    for mdoc in ctx.progress(len(mdocs), "reading mdocs").wrap(mdocs):
        movies = read_tilt_series_mdoc(mdoc, params.overrides(), check_frames_exist=params.check_frames_exist)
        if movies.ts_id in seen:
            raise ValueError(
                f"{mdoc}: gives the tilt-series id {movies.ts_id} that {seen[movies.ts_id].name} gives too"
            )
        seen[movies.ts_id] = mdoc
        ctx.logger.info("%s: %s, %d tilts", mdoc.name, movies.ts_id, movies.n_tilts)
        series.append(movies)
    out = ctx.work_dir / "movies"
    write_tilt_series_movies(out, series)
    return {"movies": out}
