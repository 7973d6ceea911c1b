"""``tomoforge export`` and ``tomoforge demo``: a project's results in other tools' formats, and the whole tutorial
on simulated data with its score against the truth.

Thin: the export is :func:`tomoforge.report.export.export_project`, the workflow run is
:func:`.workflows.run_workflow_from_cli`, the score :func:`tomoforge.simulate.scoring.score_results`.
"""

from __future__ import annotations

from pathlib import Path

import typer

__all__ = ["demo", "export", "report"]


def report(
    project: Path = typer.Option(Path("."), "--project", "-p", help="The project folder."),
    out: Path | None = typer.Option(None, "--out", help="The HTML file (default: PROJECT/report.html)."),
    score: Path | None = typer.Option(
        None, "--score", help="A score.json of `tomoforge score` to include (simulated data)."
    ),
    pdf: bool = typer.Option(
        False, "--pdf", help="Also print it to a PDF beside it (needs Chromium or Chrome)."
    ),
) -> None:
    """Write one self-contained HTML page: quality per tilt series, the score against the truth, every step's
    summary and pictures, and the methods text."""
    from tomoforge.report.html import print_pdf, write_report
    from tomoforge.workflow import Project

    from .console import stdout

    with Project.open(project) as opened:
        path = write_report(opened, out or opened.root / "report.html", score_file=score)
    stdout().print(f"Wrote the report {path}.", soft_wrap=True, markup=False)
    if pdf:
        try:
            printed = print_pdf(path, path.with_suffix(".pdf"))
        except RuntimeError as error:
            raise typer.BadParameter(str(error), param_hint="--pdf") from error
        stdout().print(f"Wrote the PDF {printed}.", soft_wrap=True, markup=False)


def export(
    project: Path = typer.Option(Path("."), "--project", "-p", help="The project folder."),
    to: Path = typer.Option(..., "--to", help="Where to write the export (created if needed)."),
) -> None:
    """Export a project's latest results: motion, IMOD alignment and defocus, tomograms, RELION 5 / Scipion /
    Dynamo particles and the average with its half maps, mask and FSC."""
    from tomoforge.report.export import export_project
    from tomoforge.workflow import Project

    from .console import stdout

    with Project.open(project) as opened:
        result = export_project(opened, to)
    console = stdout()
    console.print(f"Exported {len(result['written'])} files to {to}.", soft_wrap=True, markup=False)
    for item in result["missing"]:
        console.print(f"  not exported: {item}", soft_wrap=True, markup=False)


def _hexamer_reference(path: Path) -> Path:
    """A CA-SP1 hexamer map (5.4 Å voxels, 50³) from the vendored atomic model, for template matching: what a user
    would make from the PDB entry, not the simulator's truth."""
    if not path.is_file():
        from tomoforge.io.mrc import write_mrc
        from tomoforge.simulate.hexamer import hexamer_reference

        volume, _ = hexamer_reference(voxel_size_angstrom=5.4, box_size_px=50)
        write_mrc(volume.numpy(), path, voxel_size_angstrom=5.4)
    return path


def demo(
    directory: Path = typer.Argument(Path("tomoforge-demo"), help="Where the data, project and export go."),
    preset: str = typer.Option("demo", "--preset", help="Simulator preset and workflow: demo or small."),
) -> None:
    """Simulate the demo data set, run the whole tutorial on it, export the results, score them against the
    simulator's truth and write the HTML report. Run it again to resume after an interruption."""
    from rich.table import Table

    from tomoforge.simulate import generate_dataset, preset_config
    from tomoforge.simulate.scoring import score_results, summary_rows, write_score_json
    from tomoforge.workflows import locate

    from .console import stdout
    from .workflows import run_workflow_from_cli

    if preset not in ("demo", "small"):
        raise typer.BadParameter(f"expected demo or small, got {preset!r}", param_hint="--preset")
    console = stdout()
    data = directory / "data"
    if not (data / "truth" / "truth.json").is_file():
        console.print(f"Simulating the {preset} data set into {data} …", soft_wrap=True, markup=False)
        generate_dataset(preset_config(preset), data)
    inputs = {"movies": data / "frames"}
    if preset == "demo":
        inputs["reference"] = _hexamer_reference(data / "reference.mrc")
    run_workflow_from_cli(locate(preset), inputs, directory / "project", [])
    export(project=directory / "project", to=directory / "export")
    scores = score_results(data / "truth", directory / "export")
    write_score_json(scores, directory / "export" / "score.json")
    table = Table(
        "section", "tilt series", "result", title=f"Scores against {data / 'truth'}", title_justify="left"
    )
    for row in summary_rows(scores):
        table.add_row(*row)
    console.print(table)
    report(
        project=directory / "project",
        out=directory / "report.html",
        score=directory / "export" / "score.json",
        pdf=False,
    )
    console.print(
        f"Results: {directory / 'export'}; scores: {directory / 'export' / 'score.json'}; report: "
        f"{directory / 'report.html'}.",
        soft_wrap=True,
    )
