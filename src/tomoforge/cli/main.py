"""The ``tomoforge`` command line.

The module imports only typer at the top; the workflow engine, rich and step modules are imported
inside the commands that need them, so that ``tomoforge --help`` stays fast.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import typer

from .convert import convert_app
from .demo import demo, export, report
from .run import RUN_EPILOG, StepCommandGroup
from .score import SCORE_EPILOG, score
from .simulate import SIMULATE_EPILOG, simulate
from .workflows import workflow_app

if TYPE_CHECKING:
    from tomoforge.workflow import RunRecord

__all__ = ["app", "main"]

DEBUG_ENV = "TOMOFORGE_DEBUG"
_state = {"debug": False}

app = typer.Typer(
    name="tomoforge",
    help="tomoforge: cryo-electron tomography from tilt-series movies to subtomogram averages.",
    epilog="Examples:\n\n"
    "  tomoforge project init myproject      create a project\n"
    "  tomoforge steps                       list the steps\n"
    "  tomoforge run STEP --help             show the parameters of a step\n"
    "  tomoforge run STEP --project myproject --input NAME=file.mrc\n"
    "  tomoforge run small --movies DATA/frames --project myproject   run a whole workflow\n"
    "  tomoforge workflow show small > mine.toml   copy a workflow to change and run\n"
    "  tomoforge status myproject            list the runs of a project\n"
    "  tomoforge convert particles IN.tbl OUT.star --tomograms tomograms.star",
    no_args_is_help=True,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
project_app = typer.Typer(
    help="Create projects.",
    no_args_is_help=True,
    epilog="Examples:\n\n  tomoforge project init myproject",
)
run_app = typer.Typer(
    cls=StepCommandGroup,
    help="Run a step, or a whole workflow, in a project; `tomoforge run STEP --help` lists the step's "
    "parameters, `tomoforge workflow list` the built-in workflows.",
    no_args_is_help=True,
    epilog=RUN_EPILOG,
)
app.add_typer(project_app, name="project")
app.add_typer(run_app, name="run")
app.add_typer(workflow_app, name="workflow")
app.command(
    "export",
    epilog="Examples:\n\n  tomoforge export --project myproject --to myproject-export",
)(export)
app.command(
    "report",
    epilog="Examples:\n\n  tomoforge report --project myproject\n"
    "  tomoforge report --project demo/project --score demo/export/score.json --out demo.html",
)(report)
app.command(
    "demo",
    epilog="Examples:\n\n  tomoforge demo                     simulate, process, export and score in ./tomoforge-demo\n"
    "  tomoforge demo quick --preset small   the same on the small data set (a few minutes)",
)(demo)
app.add_typer(convert_app, name="convert")


def _show_version(value: bool) -> None:
    if value:
        from tomoforge import __version__

        typer.echo(f"tomoforge {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_show_version, is_eager=True, help="Show the version and exit."
    ),
    debug: bool = typer.Option(
        False, "--debug", help=f"Show full tracebacks on errors (or set {DEBUG_ENV}=1)."
    ),
) -> None:
    """tomoforge: cryo-electron tomography from tilt-series movies to subtomogram averages."""
    _state["debug"] = _state["debug"] or debug


@project_app.command(
    "init",
    epilog="Examples:\n\n  tomoforge project init myproject\n  tomoforge project init /data/session42/project",
)
def project_init(
    directory: Path = typer.Argument(..., help="Folder of the new project (created if needed)."),
) -> None:
    """Create a new, empty project."""
    from tomoforge import __version__
    from tomoforge.workflow import Project

    from .console import stdout

    with Project.init(directory, app_version=__version__) as project:
        stdout().print(f"Created project {project.root}.", soft_wrap=True, markup=False)


@app.command(
    "status",
    epilog="Examples:\n\n  tomoforge status                  runs of the project in the current folder\n"
    "  tomoforge status myproject",
)
def status(directory: Path = typer.Argument(Path("."), help="The project folder.")) -> None:
    """List the runs of a project: id, step, status, start time, duration, peak memory and outputs."""
    from rich.table import Table

    from tomoforge.workflow import Project
    from tomoforge.workflow.memory import format_bytes

    from .console import stdout

    with Project.open(directory) as project:
        runs = project.runs()
        if not runs:
            stdout().print(f"No runs yet in project {project.root}.", soft_wrap=True, markup=False)
            return
        table = Table(title=f"Runs of {project.root}", title_justify="left")
        for column in ("id", "step", "status", "started", "duration", "peak memory", "outputs"):
            table.add_column(
                column, justify="right" if column in ("id", "duration", "peak memory") else "left"
            )
        for record in runs:
            table.add_row(
                str(record.id),
                record.step,
                _styled_status(record.status),
                _local_time(record.started_at),
                _duration(record.duration_s) if record.status != "running" else "",
                format_bytes(record.peak_memory_bytes),
                _outputs_text(project.outputs(record.id), record),
            )
    stdout().print(table)


def _styled_status(status: str) -> str:
    color = {"succeeded": "green", "failed": "red", "interrupted": "yellow", "running": "cyan"}.get(
        status, "white"
    )
    return f"[{color}]{status}[/{color}]"


def _local_time(iso: str | None) -> str:
    if not iso:
        return ""
    from datetime import datetime

    return datetime.fromisoformat(iso).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.2f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s"


def _outputs_text(outputs: dict[str, Any], record: RunRecord) -> str:
    from rich.markup import escape

    if record.step == "import" and "data" in outputs:
        return escape(str(outputs["data"].path))
    return escape(", ".join(outputs))


@app.command(
    "steps",
    epilog="Examples:\n\n  tomoforge steps\n  TOMOFORGE_STEP_MODULES=mylab.steps tomoforge steps     include your own steps",
)
def steps() -> None:
    """List the available steps with their one-line descriptions."""
    from rich.markup import escape
    from rich.table import Table

    from tomoforge.workflow import get_registry

    from .console import stdout

    registry = get_registry()
    names = registry.names()
    if not names:
        stdout().print("No steps are registered.")
        return
    table = Table(show_header=True)
    table.add_column("step")
    table.add_column("description")
    for name in names:
        table.add_row(name, escape(registry.get(name).short_description))
    stdout().print(table)


@app.command(
    "show",
    epilog="Examples:\n\n  tomoforge show 3 --project myproject     parameters, outputs and summary of run 3\n"
    "  tomoforge show 3                          (project in the current folder)",
)
def show(
    run_id: int = typer.Argument(..., metavar="RUN", help="The run id (see `tomoforge status`)."),
    project_dir: Path = typer.Option(Path("."), "--project", "-p", help="The project folder."),
) -> None:
    """Show one run: its step, status, parameters, outputs and summary (per-item lists as a table)."""
    from rich.markup import escape

    from tomoforge.workflow import Project
    from tomoforge.workflow.memory import peak_memory_text

    from .console import stdout

    console = stdout()
    with Project.open(project_dir) as project:
        record = project.run(run_id)
        params = project.store.params(run_id)
        outputs = project.outputs(run_id)
        summary = project.store.summary(run_id)
    console.print(
        f"[bold]Run {record.id}[/bold] {escape(record.step)} {_styled_status(record.status)}"
        f"  {_local_time(record.started_at)}  {_duration(record.duration_s)}"
        + peak_memory_text(record.peak_memory_bytes)
    )
    if record.error:
        console.print(f"[red]{escape(record.error)}[/red]", soft_wrap=True)
    console.print("[bold]parameters[/bold] " + escape(", ".join(f"{k}={v!r}" for k, v in params.items())))
    for name, artifact in outputs.items():
        console.print(f"[bold]output[/bold] {escape(name)}: {escape(str(artifact.path))}", soft_wrap=True)
    for key, value in summary.items():
        for renderable in _summary_renderables(key, value):
            console.print(renderable)


def _summary_renderables(key: str, value: Any) -> list[Any]:
    """A step summary entry as rich renderables: scalars as one line, equal-length lists as table columns."""
    from rich.markup import escape
    from rich.table import Table

    if not isinstance(value, dict):
        return [f"[bold]{escape(key)}[/bold]: {escape(_format_value(value))}"]
    scalars = {k: v for k, v in value.items() if not isinstance(v, list | dict)}
    lists = {k: v for k, v in value.items() if isinstance(v, list)}
    others = {k: v for k, v in value.items() if isinstance(v, dict)}
    out: list[Any] = [
        f"[bold]{escape(key)}[/bold]  "
        + escape("  ".join(f"{k}: {_format_value(v)}" for k, v in {**scalars, **others}.items()))
    ]
    # The per-item lists (e.g. one value per tilt) are the most common length among the lists.
    lengths = [len(v) for v in lists.values()]
    length = max(lengths, key=lambda n: (lengths.count(n), n), default=0)
    columns = {k: v for k, v in lists.items() if len(v) == length and length > 1}
    for k, v in lists.items():
        if k not in columns:
            out.append(f"  {escape(k)}: {escape(_format_value(v))}")
    if columns:
        table = Table(show_header=True, box=None, pad_edge=False)
        for name in columns:
            table.add_column(name.replace("_", " "), justify="right")
        for row in zip(*columns.values(), strict=True):
            table.add_row(*(escape(_format_value(x)) for x in row))
        out.append(table)
    return out


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return "[" + ", ".join(_format_value(v) for v in value) + "]"
    return str(value)


@app.command(
    "log",
    epilog="Examples:\n\n  tomoforge log 12 --project myproject\n  tomoforge log 12          (project in the current folder)",
)
def log(
    run_id: int = typer.Argument(..., metavar="RUN", help="The run id (see `tomoforge status`)."),
    project_dir: Path = typer.Option(Path("."), "--project", "-p", help="The project folder."),
) -> None:
    """Print the log of a run."""
    from tomoforge.workflow import Project

    with Project.open(project_dir) as project:
        path = project.log_path(run_id)
        if not path.is_file():
            typer.echo(f"Run {run_id} has no log (it did not execute a step function).")
            return
        typer.echo(path.read_text(encoding="utf-8", errors="replace"), nl=False)


app.command("score", epilog=SCORE_EPILOG)(score)
app.command("simulate", epilog=SIMULATE_EPILOG)(simulate)


def _fail(message: str, code: int = 1) -> NoReturn:
    from rich.text import Text

    from .console import stderr

    stderr().print(Text(f"Error: {message}", style="red"), soft_wrap=True)
    sys.exit(code)


def _sentence(text: str) -> str:
    return text if text.endswith((".", "?", "!")) else text + "."


def _message(exc: BaseException) -> str | None:
    """The one-sentence message of an expected error, or None for a bug."""
    from tomoforge.io import FormatError

    if isinstance(exc, FormatError):
        return _sentence(" ".join(str(exc).split()))
    models = sys.modules.get("tomoforge.models")  # a ModelFileError exists only once its module is loaded
    if models is not None and isinstance(exc, models.ModelFileError):
        return _sentence(" ".join(str(exc).split()))

    from tomoforge.workflow import ParamsError, WorkflowError

    from .params import option_flag

    if isinstance(exc, ParamsError):
        return exc.describe(option_flag)
    if isinstance(exc, WorkflowError):
        return str(exc)
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if exc.filename else ""
        return f"{exc.strerror or exc}{where}."
    return None


def main(argv: Sequence[str] | None = None) -> None:
    """Run the command line (the ``tomoforge`` console script).

    Expected errors (:class:`tomoforge.workflow.WorkflowError`, :class:`tomoforge.io.FormatError`,
    :class:`tomoforge.models.ModelFileError`, file-system errors) are printed as one red sentence on
    stderr with exit code 1; usage errors exit with code 2. Tracebacks are
    shown only with ``--debug`` or ``TOMOFORGE_DEBUG=1``.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    _state["debug"] = os.environ.get(DEBUG_ENV, "") not in ("", "0")
    command = typer.main.get_command(app)
    try:
        command.main(args=args, prog_name="tomoforge", standalone_mode=True)
    except SystemExit:
        raise
    except KeyboardInterrupt:
        _fail("Interrupted.", 130)
    except Exception as exc:
        if _state["debug"]:
            raise
        message = _message(exc)
        if message is None:
            message = (
                f"Unexpected error {type(exc).__name__}: {exc}. Rerun with --debug to see the traceback."
            )
        _fail(message)


if __name__ == "__main__":
    main()
