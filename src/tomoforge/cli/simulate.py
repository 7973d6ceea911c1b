"""``tomoforge simulate``: a simulated HIV dataset (raw movies + mdoc) with its ground truth.

Thin: parses the options, calls :func:`tomoforge.simulate.dataset.generate_dataset` (imported inside the command, so
that ``tomoforge --help`` stays fast) with a rich progress bar per tilt, and optionally writes the previews.
"""

from __future__ import annotations

import errno
from pathlib import Path

import typer

__all__ = ["SIMULATE_EPILOG", "simulate"]

PRESET_NAMES = ("tiny", "small", "demo", "tutorial-small", "tutorial-large")

SIMULATE_EPILOG = (
    "Presets: tiny (tests, seconds), demo (1 tilt series, 41 tilts x 8 frames of 1024x1024 at 2.7 Å, about a "
    "minute), tutorial-small and tutorial-large (1 and 5 tilt series at the real EMPIAR-10164 sizes, 7420x7676 "
    "frames at 0.675 Å, for GPU machines). The output folder gets frames/ (movies and SerialEM mdocs, as from the "
    "microscope) and truth/ (what a pipeline should recover, in the export layout `tomoforge score` reads).\n\n"
    "Examples:\n\n"
    "  tomoforge simulate --preset demo --out sim_demo --preview\n"
    "  tomoforge simulate --preset tiny --out /tmp/tiny --seed 3\n"
    "  tomoforge simulate --preset demo --out sim --mdoc my_series.mdoc --structure my_particle.cif"
)


def simulate(
    preset: str = typer.Option("demo", "--preset", help=f"One of {', '.join(PRESET_NAMES)}."),
    out: Path | None = typer.Option(
        None, "--out", help="Output folder (default: ./simulated_PRESET).", show_default=False
    ),
    seed: int | None = typer.Option(
        None, "--seed", help="Seed of every random choice (default: the preset's, 0).", show_default=False
    ),
    preview: bool = typer.Option(False, "--preview", help="Also write PNG previews to OUT/truth/preview."),
    mdoc: Path | None = typer.Option(
        None,
        "--mdoc",
        help="SerialEM mdoc giving the acquisition (default: the real EMPIAR-10164 TS_01 mdoc).",
        show_default=False,
    ),
    structure: Path | None = typer.Option(
        None,
        "--structure",
        help="PDB/mmCIF of the lattice particle (default: the CA-SP1 hexamer of EMPIAR-10164).",
        show_default=False,
    ),
) -> None:
    """Simulate tilt-series movies of immature HIV-like viruses with their ground truth."""
    if preset not in PRESET_NAMES:
        raise typer.BadParameter(
            f"expected one of {', '.join(PRESET_NAMES)}, got {preset!r}", param_hint="--preset"
        )
    for path, what in ((mdoc, "mdoc file"), (structure, "structure file")):
        if path is not None and not path.is_file():
            raise FileNotFoundError(errno.ENOENT, f"No {what}", str(path))
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

    from tomoforge.simulate.dataset import generate_dataset
    from tomoforge.simulate.presets import preset_config

    from .console import stderr, stdout

    overrides: dict[str, object] = {}
    if seed is not None:
        overrides["seed"] = seed
    if mdoc is not None:
        overrides["mdoc_path"] = mdoc.resolve()
    if structure is not None:
        overrides["structure_path"] = structure.resolve()
    config = preset_config(preset, **overrides)
    target = out if out is not None else Path(f"simulated_{preset}")
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    bar = Progress(*columns, console=stderr(), transient=False)
    tasks: dict[str, TaskID] = {}

    def report(ts_id: str, done: int, total: int) -> None:
        if not tasks:
            bar.start()  # only once there is something to show: an early error prints nothing but itself
        if ts_id not in tasks:
            tasks[ts_id] = bar.add_task(f"{ts_id} tilts", total=total)
        bar.update(tasks[ts_id], completed=done)

    try:
        summary = generate_dataset(config, target, progress=report)
    finally:
        if tasks:
            bar.stop()
    console = stdout()
    n_series = len(summary.ts_ids)
    console.print(
        f"Simulated {n_series} tilt series ({', '.join(summary.ts_ids)}) of {summary.n_tilts} tilts x "
        f"{summary.frames_per_tilt} frames ({summary.frame_shape_yx[1]}x{summary.frame_shape_yx[0]} at "
        f"{summary.frame_pixel_size_angstrom:g} Å) in {summary.elapsed_s:.1f} s: {summary.bytes_written / 1e6:.1f} MB "
        f"in {target}.",
        soft_wrap=True,
        markup=False,
    )
    if preview:
        from tomoforge.simulate.preview import write_previews

        written = write_previews(target)
        console.print(
            f"Wrote {len(written)} previews to {target / 'truth' / 'preview'}.", soft_wrap=True, markup=False
        )
