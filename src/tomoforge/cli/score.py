"""``tomoforge score``: compare a pipeline's exported results with the simulator's ground truth.

Thin: parses the options, calls :func:`tomoforge.simulate.scoring.score_results` (imported inside the command so that
``tomoforge --help`` stays fast), prints a table and writes the JSON report.
"""

from __future__ import annotations

import errno
from pathlib import Path

import typer

__all__ = ["SCORE_EPILOG", "score"]

SCORE_EPILOG = (
    "Both folders use the export layout: motion/TS.csv, alignment/TS.xf (+ .tlt, .json), ctf/TS.defocus, "
    "relion5/particles.star, average/map.mrc; the truth also has gold/TS.csv. Whatever the results lack is "
    "reported as not provided.\n\n"
    "Examples:\n\n"
    "  tomoforge score --truth sim/truth --results myrun/export\n"
    "  tomoforge score --truth sim/truth --results myrun/export --json scores.json --symmetry C6\n"
    "  tomoforge score --truth sim/truth --results myrun/export --distance-threshold-angstrom 25\n"
    "  tomoforge score --truth sim/truth --results myrun/export --oracle   (the oracle's map beside the result's)\n"
    "  tomoforge score --truth sim/truth --oracle                         (the oracle alone)"
)


def score(
    truth: Path = typer.Option(..., "--truth", help="The simulator's truth folder.", show_default=False),
    results: Path | None = typer.Option(
        None, "--results", help="The pipeline's exported results folder.", show_default=False
    ),
    json_path: Path | None = typer.Option(
        None, "--json", help="Where to write the JSON report (default: RESULTS/score.json)."
    ),
    symmetry: str = typer.Option("C6", "--symmetry", help="Point group of the particle (Cn or Dn)."),
    distance_threshold_angstrom: float = typer.Option(
        37.5,
        "--distance-threshold-angstrom",
        help="Largest distance between a pick and its true particle, Å.",
    ),
    movie_pixel_size_angstrom: float | None = typer.Option(
        None,
        "--movie-pixel-size-angstrom",
        help="Movie pixel size for motion errors in pixels (default: from truth.json).",
    ),
    oracle: bool = typer.Option(
        False,
        "--oracle",
        help="Also reconstruct the average from the raw movies with the true motion, alignment, CTF and poses "
        "(the limit any pipeline can reach on this dataset; the dataset is the truth folder's parent) and "
        "score it beside the results.",
    ),
) -> None:
    """Score exported results against the simulator's truth: motion, alignment, CTF, picking and the map."""
    from rich.markup import escape
    from rich.table import Table

    from tomoforge.simulate.scoring import score_results, summary_rows, write_score_json
    from tomoforge.simulate.scoring.picking import symmetry_operators

    from .console import stdout

    if results is None and not oracle:
        raise typer.BadParameter("give --results, --oracle or both", param_hint="--results")
    for path, what in ((truth, "truth"), (results, "results")):
        if path is not None and not path.is_dir():
            raise FileNotFoundError(errno.ENOENT, f"No {what} folder", str(path))
    if not distance_threshold_angstrom > 0:
        raise typer.BadParameter("must be positive", param_hint="--distance-threshold-angstrom")
    try:
        symmetry_operators(symmetry)
    except ValueError:
        raise typer.BadParameter(
            f"expected Cn or Dn (e.g. C6), got {symmetry!r}", param_hint="--symmetry"
        ) from None
    options = {
        "symmetry": symmetry,
        "distance_threshold_angstrom": distance_threshold_angstrom,
        "movie_pixel_size_angstrom": movie_pixel_size_angstrom,
    }
    console = stdout()
    table = Table(title=f"Scores against {truth}", title_justify="left")
    for column in ("section", "tilt series", "result"):
        table.add_column(column)
    if results is not None:
        report = score_results(truth, results, **options)  # type: ignore[arg-type]
        for section, ts, text in summary_rows(report):
            style = "dim" if text.startswith("not provided") else ""
            table.add_row(section, ts, escape(text), style=style)
        target = json_path if json_path is not None else results / "score.json"
        write_score_json(report, target)
    if oracle:
        from tomoforge.simulate.oracle import run_oracle

        oracle_dir = truth.resolve().parent / "oracle"
        with console.status("Reconstructing the oracle average from the raw movies and the truth"):
            numbers = run_oracle(truth.resolve().parent, oracle_dir, symmetry=symmetry)

        # The oracle is reconstructed in the truth's frame, so it is compared with the true map directly (no
        # orientation search): its FSC with the truth in the true map's envelope is the number to beat.
        def _angstrom(key: str) -> str:
            value = numbers.get(key)
            return "—" if value is None else f"{value:.1f} Å"

        table.add_row(
            "oracle map",
            "all",
            f"FSC 0.143 with the truth {_angstrom('resolution_truth_envelope_fsc_0_143_angstrom')} inside its "
            f"envelope ({_angstrom('resolution_truth_fsc_0_143_angstrom')} in a sphere); half maps "
            f"{_angstrom('resolution_half_maps_fsc_0_143_angstrom')}; {numbers.get('n_particles')} particles, "
            f"{numbers.get('n_views')} particle views, {numbers.get('elapsed_s', float('nan')):.1f} s",
            style="cyan",
        )
    console.print(table)
    if results is not None:
        console.print(f"Wrote {target}.", soft_wrap=True, markup=False)
    if oracle:
        console.print(
            f"Wrote the oracle average and oracle.json to {oracle_dir}.", soft_wrap=True, markup=False
        )
