"""``tomoforge run STEP``: one sub-command per registered step, built on demand.

:class:`StepCommandGroup` looks steps up in the registry only when ``run`` is invoked, so the
top-level ``tomoforge --help`` never imports step modules. Each step command gets one option per
params field (see :mod:`.params`) plus ``--project`` and ``--input``.
"""

from __future__ import annotations

import contextlib
import inspect
import re
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from typer.core import TyperGroup

from .params import OptionSpec, OptionValueError, convert_value, option_specs

if TYPE_CHECKING:
    from tomoforge.workflow import RunResult, StepSpec

__all__ = ["RUN_EPILOG", "StepCommandGroup", "build_step_command", "parse_inputs"]

RUN_EPILOG = """Examples:

  tomoforge run STEP --help                          (parameters and inputs of STEP)
  tomoforge run STEP --project P --n-iterations 3    (run STEP in project P)
  tomoforge run STEP -p P --input table=2:counts     (input: output 'counts' of run 2)
  tomoforge run STEP -p P --input table=data.csv     (input: an external file)
  tomoforge run small --movies DATA/frames -p P     (a whole workflow: built-in name or FILE.toml)"""

_RUN_REF = re.compile(r"^(\d+):([A-Za-z_][A-Za-z0-9_]*)$")
_RESERVED = {"--project", "--input", "--help", "-p", "-i"}


def _registry() -> Any:
    from tomoforge.workflow import get_registry

    registry = get_registry()
    registry.unknown_hint = "`tomoforge steps` lists them."
    return registry


class StepCommandGroup(TyperGroup):
    """A command group whose sub-commands are the registered steps."""

    def list_commands(self, ctx: Any) -> list[str]:
        """Return the registered step names."""
        return list(_registry().names())

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        """Build the command of step ``cmd_name``, or of the workflow ``cmd_name`` (a built-in name or a ``.toml``
        file); raises ``UnknownStepError`` if it is neither."""
        registry = _registry()
        if cmd_name not in registry.names():
            from tomoforge.workflows import available

            if cmd_name in available() or cmd_name.endswith(".toml"):
                from tomoforge.workflows import locate

                from .workflows import build_workflow_command

                return build_workflow_command(locate(cmd_name))
        return build_step_command(registry.get(cmd_name))


def _examples(spec: StepSpec, options: list[OptionSpec]) -> list[str]:
    words = [f"tomoforge run {spec.name} --project P"]
    for name, input_spec in spec.inputs.items():
        if not input_spec.optional:
            words.append(f"--input {name}=RUN_ID:OUTPUT")
    for option in options:
        if option.required:
            words.append(f"{option.flag} {option.metavar}")
    examples = [" ".join(words)]
    optional = [name for name, input_spec in spec.inputs.items() if input_spec.optional]
    if optional:
        examples.append(f"{examples[0]} --input {optional[0]}=path/to/file")
    return examples


def _help_text(spec: StepSpec) -> str:
    lines = [spec.description or spec.name, ""]
    if spec.inputs:
        described = []
        for name, input_spec in spec.inputs.items():
            flag = "optional" if input_spec.optional else "required"
            text = f"{name} ({input_spec.kind}, {flag})"
            described.append(
                text + (f": {input_spec.description.rstrip('.')}" if input_spec.description else "")
            )
        lines += ["Inputs: " + "; ".join(described) + ".", ""]
    lines.append("Outputs: " + "; ".join(f"{name} ({kind})" for name, kind in spec.outputs.items()) + ".")
    lines.append(f"Version: {spec.code_version}.")
    return "\n".join(lines).replace("[", "\\[")


def _typer_parameter(option: OptionSpec, index: int) -> inspect.Parameter:
    help_text = option.help.replace("[", "\\[") or None
    annotation: Any
    if option.kind == "bool":
        flag = option.flag[2:]
        default: Any = typer.Option(
            option.default_text == "True", f"--{flag}/--no-{flag}", help=help_text, show_default=True
        )
        annotation = bool
    elif option.kind in ("list", "json") and not option.required:
        shown: bool | str = option.default_text if option.default_text is not None else False
        default = typer.Option(None, option.flag, metavar=option.metavar, help=help_text, show_default=shown)
        annotation = list[str] | None if option.kind == "list" else str | None
    else:
        value = ... if option.required else option.default_text
        default = typer.Option(value, option.flag, metavar=option.metavar, help=help_text, show_default=True)
        annotation = str if value is not None else str | None
    return inspect.Parameter(
        f"p{index}", inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation
    )


def build_step_command(spec: StepSpec) -> Any:
    """Return the click command that runs ``spec`` from the command line."""
    options = option_specs(spec.params_model)
    clashes = [o.flag for o in options if o.flag in _RESERVED]
    if clashes:
        from tomoforge.workflow import WorkflowError

        raise WorkflowError(
            f"Step '{spec.name}' has a parameter spelled {clashes[0]}, which clashes with an option of "
            "`tomoforge run`; rename the parameter."
        )
    parameters = [_typer_parameter(option, i) for i, option in enumerate(options)]
    parameters.append(
        inspect.Parameter(
            "project",
            inspect.Parameter.KEYWORD_ONLY,
            default=typer.Option(Path("."), "--project", "-p", help="The project folder.", show_default=True),
            annotation=Path,
        )
    )
    if spec.inputs:
        parameters.append(
            inspect.Parameter(
                "input",
                inspect.Parameter.KEYWORD_ONLY,
                default=typer.Option(
                    None,
                    "--input",
                    "-i",
                    metavar="NAME=SOURCE",
                    help="Connect input NAME to SOURCE: RUN_ID:OUTPUT (an output of an earlier run) or the path "
                    f"of an external file or folder. Repeat for several inputs. Inputs: {', '.join(spec.inputs)}.",
                ),
                annotation=list[str] | None,
            )
        )

    def callback(**values: Any) -> None:
        raw = {option.field: values[f"p{i}"] for i, option in enumerate(options)}
        run_from_cli(spec, options, raw, values["project"], values.get("input") or [])

    callback.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    app = typer.Typer(add_completion=False)
    lines = [*_examples(spec, options), "tomoforge status P"]
    epilog = "Examples:\n\n" + "\n".join(f"  {line}" for line in lines)
    app.command(name=spec.name, help=_help_text(spec), epilog=epilog.replace("[", "\\["))(callback)
    return typer.main.get_command(app)


def parse_inputs(spec: StepSpec, values: list[str]) -> dict[str, Any]:
    """Parse ``--input`` values into input connections.

    ``NAME=RUN_ID:OUTPUT`` connects an output of an earlier run; ``NAME=PATH`` an external file.

    Raises
    ------
    typer.BadParameter
        For a malformed value, an unknown input name or an input given twice.
    """
    from tomoforge.workflow import RunOutput

    connections: dict[str, Any] = {}
    for value in values:
        name, sep, target = value.partition("=")
        name = name.strip()
        if not sep or not name or not target:
            raise typer.BadParameter(
                f"Expected NAME=RUN_ID:OUTPUT or NAME=PATH, got {value!r}.", param_hint="--input"
            )
        if name not in spec.inputs:
            known = ", ".join(spec.inputs) or "none"
            raise typer.BadParameter(
                f"Step '{spec.name}' has no input '{name}' (its inputs: {known}).", param_hint="--input"
            )
        if name in connections:
            raise typer.BadParameter(f"Input '{name}' is given twice.", param_hint="--input")
        match = _RUN_REF.match(target)
        connections[name] = RunOutput(int(match.group(1)), match.group(2)) if match else Path(target)
    return connections


def run_from_cli(
    spec: StepSpec, options: list[OptionSpec], raw: dict[str, Any], project_dir: Path, input_values: list[str]
) -> None:
    """Validate the options, run the step in the project and print the result."""
    from tomoforge import __version__
    from tomoforge.workflow import ParamProblem, ParamsError, Project, run_step, validate_params

    from .console import progress_display, stdout

    params = {}
    for option in options:
        value = raw[option.field]
        if value is None or (option.kind == "list" and not value):
            continue
        try:
            params[option.field] = convert_value(option, value)
        except OptionValueError as exc:
            raise ParamsError(spec.name, [ParamProblem(option.field, str(exc), value)]) from None
    validate_params(spec, params)
    inputs = parse_inputs(spec, input_values)
    with Project.open(project_dir, write=True, app_version=__version__) as project, _sigterm_interrupts():
        if project.recovered:
            ids = ", ".join(str(i) for i in project.recovered)
            stdout().print(f"Marked run(s) {ids} as interrupted: the process running them had stopped.")
        with progress_display():
            result = run_step(project, spec.name, params, inputs)
        _report(project.root, result)


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """Turn SIGTERM (e.g. from a batch scheduler) into KeyboardInterrupt, so the run is marked interrupted."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _report(root: Path, result: RunResult) -> None:
    from rich.markup import escape

    from tomoforge.workflow.memory import peak_memory_text

    from .console import stdout

    run = result.run
    console = stdout()
    if result.cached:
        console.print(f"Run {run.id} ({run.step}) is up to date; reused its outputs without running again.")
    else:
        console.print(
            f"Run {run.id} ({run.step}) [green]succeeded[/green] in {run.duration_s or 0.0:.2f} s"
            f"{peak_memory_text(run.peak_memory_bytes)}."
        )
    for name, artifact in result.outputs.items():
        try:
            shown = artifact.path.relative_to(root)
        except ValueError:
            shown = artifact.path
        console.print(f"  {escape(name)}: {escape(str(shown))}", soft_wrap=True)
