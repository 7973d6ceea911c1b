"""Workflow files on the command line: ``tomoforge run WORKFLOW`` (a built-in name or a ``.toml`` file) and
``tomoforge workflow list|show``.

``tomoforge run WORKFLOW --movies DIR --project P`` runs every node through the engine: nodes whose results are
cached are reused, so running it again after a crash or Ctrl-C (or with a changed parameter) redoes only what is
missing or changed. Each declared input of the workflow is an option (``--movies``); ``--set NODE.PARAM=VALUE``
changes a parameter without editing the file.
"""

from __future__ import annotations

import inspect
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from tomoforge.workflow import RunRecord

__all__ = ["build_workflow_command", "workflow_app"]

workflow_app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="The built-in workflow files: list them, or print one to copy and change.",
)


@workflow_app.command("list")
def list_workflows() -> None:
    """List the built-in workflows."""
    from rich.table import Table

    from tomoforge.workflow import read_workflow
    from tomoforge.workflows import available

    from .console import stdout

    table = Table("workflow", "nodes", "description")
    for name, path in available().items():
        workflow = read_workflow(path)
        table.add_row(name, str(len(workflow.nodes)), workflow.description)
    stdout().print(table)


@workflow_app.command("show")
def show_workflow(
    name: str = typer.Argument(..., metavar="NAME", help="A built-in workflow or a .toml file."),
) -> None:
    """Print a workflow file (copy it, change it and run it with `tomoforge run FILE`)."""
    from tomoforge.workflows import locate

    typer.echo(locate(name).read_text(encoding="utf-8"), nl=False)


def _parse_sets(values: list[str]) -> dict[str, dict[str, Any]]:
    overrides: dict[str, dict[str, Any]] = {}
    for value in values:
        key, sep, raw = value.partition("=")
        node, dot, param = key.strip().partition(".")
        if not sep or not dot or not node or not param:
            raise typer.BadParameter(f"Expected NODE.PARAM=VALUE, got {value!r}.", param_hint="--set")
        try:
            parsed = json.loads(raw)
        except json.JSONDecodeError:
            parsed = raw
        overrides.setdefault(node, {})[param] = parsed
    return overrides


def build_workflow_command(path: Path) -> Any:
    """The click command that runs the workflow file at ``path``."""
    from tomoforge.workflow import read_workflow

    workflow = read_workflow(path)
    parameters = [
        inspect.Parameter(
            f"i{k}",
            inspect.Parameter.KEYWORD_ONLY,
            default=typer.Option(..., f"--{name.replace('_', '-')}", help=description, metavar="PATH"),
            annotation=Path,
        )
        for k, (name, description) in enumerate(workflow.inputs.items())
    ]
    parameters += [
        inspect.Parameter(
            "project",
            inspect.Parameter.KEYWORD_ONLY,
            default=typer.Option(Path("."), "--project", "-p", help="The project folder.", show_default=True),
            annotation=Path,
        ),
        inspect.Parameter(
            "sets",
            inspect.Parameter.KEYWORD_ONLY,
            default=typer.Option(
                None, "--set", metavar="NODE.PARAM=VALUE", help="Change a node's parameter (repeatable)."
            ),
            annotation=list[str] | None,
        ),
        inspect.Parameter(
            "until",
            inspect.Parameter.KEYWORD_ONLY,
            default=typer.Option(
                None,
                "--until",
                metavar="NODE",
                help="Run only this node and the nodes it needs (repeatable); the rest can follow later.",
            ),
            annotation=list[str] | None,
        ),
    ]

    def callback(**values: Any) -> None:
        given = {name: values[f"i{k}"] for k, name in enumerate(workflow.inputs)}
        run_workflow_from_cli(
            path, given, values["project"], values.get("sets") or [], values.get("until") or []
        )

    callback.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    app = typer.Typer(add_completion=False)
    lines = [f"{name}: {node.step}" for name, node in workflow.nodes.items()]
    flags = " ".join(f"--{name.replace('_', '-')} DIR" for name in workflow.inputs)
    epilog = f"Nodes, in order: {'; '.join(lines)}.\n\nExample:\n\n  tomoforge run {workflow.name} {flags} --project P"
    app.command(name=workflow.name, help=workflow.description, epilog=epilog.replace("[", "\\["))(callback)
    return typer.main.get_command(app)


def _run_cost(record: RunRecord) -> str:
    """``"took 12.3 s, peak memory 1.2 GB"`` for a finished run (the memory only where it was measured)."""
    from tomoforge.workflow.memory import peak_memory_text

    return f"took {record.duration_s or 0.0:.1f} s{peak_memory_text(record.peak_memory_bytes)}"


def run_workflow_from_cli(
    path: Path, given: dict[str, Path], project_dir: Path, sets: list[str], until: list[str] | None = None
) -> None:
    """Check the workflow, then run it (or, with ``until``, the part those nodes need) in the project with a line
    per node."""
    from rich.markup import escape

    from tomoforge import __version__
    from tomoforge.workflow import (
        NodeEvent,
        Project,
        check_workflow,
        read_workflow,
        run_pipeline,
        upstream_of,
        workflow_pipeline,
    )

    from .console import progress_display, stdout
    from .run import _sigterm_interrupts

    workflow = read_workflow(path)
    check_workflow(workflow)
    pipeline = workflow_pipeline(workflow, given, params=_parse_sets(sets))
    if until:
        unknown = [node for node in until if node not in pipeline]
        if unknown:
            raise typer.BadParameter(
                f"{', '.join(unknown)}: not a node of {workflow.name} ({', '.join(pipeline)}).",
                param_hint="--until",
            )
        pipeline = upstream_of(pipeline, until)
    for name, value in given.items():
        if not Path(value).exists():
            raise typer.BadParameter(f"{value} does not exist.", param_hint=f"--{name.replace('_', '-')}")
    console = stdout()
    start = time.monotonic()
    words = {"cached": "[dim]up to date[/dim]", "started": "started", "succeeded": "[green]succeeded[/green]",
             "failed": "[red]failed[/red]", "interrupted": "[yellow]interrupted[/yellow]"}  # fmt: skip

    def report(event: NodeEvent) -> None:
        console.print(
            f"{time.monotonic() - start:7.1f} s  {escape(event.node)} ({event.step}, run {event.run_id}): "
            f"{words[event.event]}{(' — ' + escape(event.message)) if event.message else ''}",
            soft_wrap=True,
        )
        if event.event == "succeeded":  # on a line of its own: scripts match the line above as it is
            record = project.run(event.run_id)
            peaks.append(record.peak_memory_bytes or 0)
            console.print(f"{'':11}[dim]{_run_cost(record)}[/dim]", soft_wrap=True)

    peaks: list[int] = []

    from tomoforge.workflow.project import DB_NAME

    if not (project_dir / DB_NAME).exists():  # a new project: created here, as `tomoforge project init` would
        Project.init(project_dir, app_version=__version__).close()
    with Project.open(project_dir, write=True, app_version=__version__) as project, _sigterm_interrupts():
        if project.recovered:
            ids = ", ".join(str(i) for i in project.recovered)
            console.print(f"Marked run(s) {ids} as interrupted: the process running them had stopped.")
        console.print(f"Workflow {workflow.name}: {len(pipeline)} nodes in {project.root}")
        with progress_display():
            run_pipeline(project, pipeline, on_event=report)
    from tomoforge.workflow.memory import format_bytes

    peak = f"; the largest peak memory of the steps run now: {format_bytes(max(peaks))}" if any(peaks) else ""
    console.print(
        f"Workflow {workflow.name} [green]finished[/green] in {time.monotonic() - start:.1f} s{peak}."
    )
