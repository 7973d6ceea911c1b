"""Step declaration, registry, parameter errors, pipelines and executors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel, Field

from tomoforge.workflow import (
    InlineExecutor,
    InputSpec,
    LocalProcessExecutor,
    Node,
    NodeEvent,
    ParamsError,
    PipelineError,
    Project,
    Ref,
    StepRegistry,
    UnknownStepError,
    WorkflowError,
    check_pipeline,
    get_registry,
    run_pipeline,
    run_step,
    step,
    topological_order,
)


class _P(BaseModel):
    size_angstrom: float = Field(1.0, ge=0.5, description="A size.")


def test_step_decorator_builds_spec() -> None:
    registry = StepRegistry(autodiscover=False)

    @step(
        name="t.one",
        version="3",
        inputs={"a": "table", "b": InputSpec("volume", optional=True)},
        outputs={"out": "table"},
        registry=registry,
    )
    def one(params: _P, inputs, ctx):
        """Do one thing.

        More text.
        """
        return {}

    assert registry.get("t.one") is one
    assert one.params_model is _P
    assert one.inputs["a"] == InputSpec("table") and one.inputs["b"].optional
    assert one.short_description == "Do one thing."
    assert one.code_version.startswith("3+") and len(one.code_version) == 2 + 16
    with pytest.raises(WorkflowError, match="registered twice"):

        @step(name="t.one", version="1", outputs={"out": "table"}, registry=registry)
        def other(params: _P, inputs, ctx):
            return {}

    with pytest.raises(ValueError, match="Invalid step name"):
        step(name="Bad Name", version="1", outputs={"x": "y"})
    with pytest.raises(ValueError, match="reserved"):
        step(name="import", version="1", outputs={"x": "y"})
    with pytest.raises(TypeError, match="pydantic BaseModel"):

        @step(name="t.noparams", version="1", outputs={"x": "y"}, registry=registry)
        def no_params(params: int, inputs, ctx):
            return {}


def test_unknown_step_suggests(toy) -> None:
    with pytest.raises(UnknownStepError) as info:
        get_registry().get("toy.cont")
    assert str(info.value).startswith("Unknown step 'toy.cont'. Did you mean 'toy.count'?")


def test_discovery_from_environment(toy, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "env_steps_mod.py").write_text(
        "from pydantic import BaseModel\nfrom tomoforge.workflow import step\n"
        "class P(BaseModel):\n    pass\n"
        "@step(name='env.found', version='1', outputs={'o': 'table'})\n"
        "def found(params: P, inputs, ctx):\n    '''Found through the environment.'''\n    return {}\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("TOMOFORGE_STEP_MODULES", "toy_steps, env_steps_mod")
    registry = get_registry()
    registry.discover(force=True)
    assert "env.found" in registry.names() and "toy.count" in registry.names()
    monkeypatch.setenv("TOMOFORGE_STEP_MODULES", "no_such_module_xyz")
    with pytest.raises(WorkflowError, match="Could not import step module 'no_such_module_xyz'"):
        registry.discover(force=True)
    sys.modules.pop("env_steps_mod", None)


def test_params_errors_are_sentences(toy_project: Project, toy) -> None:
    with pytest.raises(ParamsError) as info:
        run_step(toy_project, "toy.count", {"n": 0})
    assert str(info.value) == "Invalid value 0 for n: input should be greater than or equal to 1."
    assert info.value.describe(lambda f: "--" + f) == (
        "Invalid value 0 for --n: input should be greater than or equal to 1."
    )
    with pytest.raises(ParamsError, match="has no parameter 'nn'; did you mean 'n'"):
        run_step(toy_project, "toy.count", {"nn": 2})
    with pytest.raises(ParamsError) as info:
        run_step(toy_project, "toy.count", {"n": 2000, "mode": "cubed"})
    assert len(info.value.problems) == 2
    assert "less than or equal to 1000" in str(info.value) and "'plain' or 'squared'" in str(info.value)
    with pytest.raises(ParamsError, match="Missing value for signal_dir: field required"):
        run_step(toy_project, "toy.slow")
    assert toy_project.runs() == []  # nothing was started


def test_pipeline_checks() -> None:
    assert topological_order(
        {"b": Node("toy.sum", inputs={"counts": Ref("a", "counts")}), "a": Node("toy.count")}
    ) == ["a", "b"]
    cycle = {
        "a": Node("toy.sum", inputs={"counts": Ref("c", "total")}),
        "b": Node("toy.sum", inputs={"counts": Ref("a", "total")}),
        "c": Node("toy.sum", inputs={"counts": Ref("b", "total")}),
    }
    with pytest.raises(PipelineError, match=r"The pipeline has a cycle: (\w -> ){3}\w\."):
        topological_order(cycle)
    with pytest.raises(PipelineError, match="not in the pipeline"):
        topological_order({"a": Node("toy.sum", inputs={"counts": Ref("zz", "total")})})


def test_pipeline_static_validation(toy) -> None:
    with pytest.raises(PipelineError, match="Input 'counts' of node 's' .* is not connected"):
        check_pipeline({"s": Node("toy.sum")})
    with pytest.raises(PipelineError, match="has no input 'bogus'"):
        check_pipeline({"c": Node("toy.count", inputs={"bogus": Path("x")})})
    with pytest.raises(PipelineError, match="expects kind 'table' but slow gives kind 'folder'"):
        check_pipeline(
            {
                "slow": Node("toy.slow", {"signal_dir": "."}),
                "s": Node("toy.sum", inputs={"counts": Ref("slow", "result")}),
            }
        )
    with pytest.raises(PipelineError, match="step toy.count has outputs: counts"):
        check_pipeline({"c": Node("toy.count"), "s": Node("toy.sum", inputs={"counts": Ref("c", "nope")})})
    with pytest.raises(ParamsError, match="node 'c'|greater than"):
        check_pipeline({"c": Node("toy.count", {"n": -5})})


def test_missing_external_file(toy_project: Project, toy, tmp_path: Path) -> None:
    with pytest.raises(PipelineError, match=r"Input file .*missing\.txt does not exist\."):
        run_step(toy_project, "toy.count", inputs={"table": tmp_path / "missing.txt"})


def _outputs(results) -> dict[str, tuple[str, str]]:
    return {n: (r.outputs["counts"].path.read_text(), r.outputs["counts"].token) for n, r in results.items()}


def test_process_executor_matches_inline(tmp_path: Path, toy) -> None:
    pipeline = {
        "two": Node("toy.count", {"n": 2, "label": "a"}),
        "four": Node("toy.count", {"n": 4, "mode": "squared"}),
        "tail": Node("toy.count", {"n": 1}, {"table": Ref("four", "counts")}),
    }
    with Project.init(tmp_path / "inline") as inline_project:
        inline = run_pipeline(inline_project, pipeline, executor=InlineExecutor())
    events: list[NodeEvent] = []
    with Project.init(tmp_path / "procs") as proc_project, LocalProcessExecutor(max_workers=2) as executor:
        procs = run_pipeline(proc_project, pipeline, executor=executor, on_event=events.append)
        worker_pids = {
            json.loads((r.run.folder / "provenance.json").read_text())["worker_pid"] for r in procs.values()
        }
    assert _outputs(procs) == _outputs(inline)
    assert procs["tail"].outputs["counts"].path.read_text() == "x1\nx4\nx9\nx16\nx1\n"
    assert os.getpid() not in worker_pids
    started = [e.node for e in events if e.event == "started"]
    assert started[:2] == ["two", "four"] and started[2] == "tail"  # both roots submitted before waiting
    assert {e.event for e in events} == {"started", "succeeded"}
    assert "counting: 4/4" in (procs["four"].run.folder / "run.log").read_text()


def test_importing_the_engine_loads_no_other_subpackage() -> None:
    # tests/test_layering.py checks the import statements; this checks what actually gets loaded.
    code = (
        "import sys, tomoforge.workflow\n"
        "loaded = [m for m in sys.modules if m.startswith('tomoforge.') or m in ('torch', 'numpy')]\n"
        "print(sorted(m for m in loaded if not m.startswith('tomoforge.workflow')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
