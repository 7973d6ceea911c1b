"""The tiny preset's tilt series, motion corrected by the pipeline and given its true alignment and CTF: the input
of the steps after alignment, with every truth known."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tomoforge.io.imod import read_tlt, read_xf, xf_to_transforms
from tomoforge.models import CtfParameters, TiltSeries
from tomoforge.steps._artifacts import read_tilt_series, write_tilt_series
from tomoforge.workflow import Project, RunOutput, run_step


def true_tiny_series(
    data: Path, project: Project, *, even_odd: bool = False, dose_per_tilt: float | None = None
) -> tuple[Path, TiltSeries]:
    """Simulate the tiny preset into ``data`` (optionally with another dose per tilt, e⁻/Å²), motion-correct it in
    ``project``, and return the truth folder and the series with its true transforms, tilt angles, CTF per tilt
    and defocus handedness."""
    from tomoforge.simulate import generate_dataset, preset_config

    config = preset_config("tiny")
    if dose_per_tilt is not None:
        config = config.model_copy(update={"dose_per_tilt_e_per_angstrom2": dose_per_tilt})
    generate_dataset(config, data)
    imported = run_step(project, "import.movies", {}, {"movies": data / "frames"})
    corrected = run_step(
        project, "motion.correct", {"even_odd": even_odd}, {"movies": RunOutput(imported.run.id, "movies")}
    )
    (series,) = read_tilt_series(corrected.outputs["tilt_series"].path)
    truth = data / "truth"
    h, w = series.image_shape_yx or (0, 0)
    transforms = xf_to_transforms(
        read_xf(truth / "alignment" / "TS_01.xf"), series.pixel_size_angstrom, (w, h)
    )
    angles = read_tlt(truth / "alignment" / "TS_01.tlt")
    record = json.loads((truth / "truth.json").read_text())["tilt_series"][series.ts_id]
    true_tilts = {t["index"]: t for t in record["tilts"]}
    tilts = [
        t.model_copy(
            update={
                "transform": transforms[t.index],
                "refined_tilt_angle_deg": float(angles[t.index]),
                "ctf": CtfParameters(
                    defocus_u_angstrom=true_tilts[t.index]["defocus_u_angstrom"],
                    defocus_v_angstrom=true_tilts[t.index]["defocus_v_angstrom"],
                    astigmatism_angle_deg=true_tilts[t.index]["astigmatism_angle_deg"],
                ),
            }
        )
        for t in series.tilts
    ]
    return truth, series.model_copy(update={"tilts": tilts, "defocus_handedness": record["handedness"]})


def tiny_series_folder(root: Path, project: Project) -> tuple[Path, Path, TiltSeries]:
    """:func:`true_tiny_series` into ``root / "data"``, written as a ``tilt_series`` folder ``root / "tilt_series"``
    (stack hard-linked as TS_01.mrc): the truth folder, the tilt-series folder and the series."""
    truth, series = true_tiny_series(root / "data", project)
    folder = root / "tilt_series"
    folder.mkdir()
    os.link(series.stack_file, folder / "TS_01.mrc")
    write_tilt_series(folder, series.model_copy(update={"stack_file": folder / "TS_01.mrc"}))
    return truth, folder, series


def series_without_ctf(folder: Path, series: TiltSeries) -> Path:
    """A ``tilt_series`` folder holding ``series`` (stack hard-linked) with every tilt's CTF removed."""
    folder.mkdir()
    os.link(series.stack_file, folder / f"{series.ts_id}.mrc")
    write_tilt_series(
        folder,
        series.model_copy(
            update={
                "stack_file": folder / f"{series.ts_id}.mrc",
                "tilts": [t.model_copy(update={"ctf": None}) for t in series.tilts],
            }
        ),
    )
    return folder
