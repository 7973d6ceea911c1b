"""Workflow files: parsed, checked against the registered (toy) steps, turned into pipelines that run and resume."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import toy_steps  # noqa: F401 - registers the toy steps

from tomoforge.workflow import (
    Project,
    Ref,
    WorkflowError,
    check_workflow,
    read_workflow,
    run_pipeline,
    workflow_pipeline,
)

GOOD = """
[workflow]
name = "count-and-sum"
description = "Count, then sum."

[workflow.inputs]
table = "Lines to prepend."

[nodes.count]
step = "toy.count"
params = { n = 4, label = "a" }
inputs = { table = "$table" }

[nodes.sum]
step = "toy.sum"
params = { scale = 2.0 }
inputs = { counts = "count:counts" }
"""


def test_a_good_file_becomes_a_pipeline_that_runs_and_is_cached(tmp_path: Path) -> None:
    source = tmp_path / "flow.toml"
    source.write_text(GOOD)
    workflow = read_workflow(source)
    check_workflow(workflow)
    assert workflow.name == "count-and-sum" and list(workflow.nodes) == ["count", "sum"]
    table = tmp_path / "lines.txt"
    table.write_text("first\n")
    pipeline = workflow_pipeline(workflow, {"table": table}, params={"count": {"n": 2}})
    assert pipeline["sum"].inputs["counts"] == Ref("count", "counts")
    assert pipeline["count"].inputs["table"] == table and pipeline["count"].params == {"n": 2, "label": "a"}
    project = Project.init(tmp_path / "project")
    events: list[str] = []
    run_pipeline(project, pipeline, on_event=lambda e: events.append(f"{e.node}:{e.event}"))
    assert events == ["count:started", "count:succeeded", "sum:started", "sum:succeeded"]
    events.clear()
    results = run_pipeline(project, pipeline, on_event=lambda e: events.append(f"{e.node}:{e.event}"))
    assert events == ["count:cached", "sum:cached"] and results["sum"].cached


def test_relative_paths_are_taken_from_the_files_folder(tmp_path: Path) -> None:
    source = tmp_path / "flows" / "flow.toml"
    source.parent.mkdir()
    source.write_text(GOOD.replace('"$table"', '"data/lines.txt"'))
    pipeline = workflow_pipeline(read_workflow(source), {})
    assert pipeline["count"].inputs["table"] == tmp_path / "flows" / "data" / "lines.txt"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("toy.sum", "toy.nope"), "node 'sum'.*toy.nope"),
        (("scale = 2.0", "scale = -1.0"), "scale"),
        (('"count:counts"', '"counter:counts"'), "node 'sum' input 'counts' refers to node 'counter'"),
        (('"$table"', '"$rows"'), r"uses \$rows, which \[workflow.inputs\] does not declare"),
        (('name = "count-and-sum"', ""), r"needs a \[workflow\] table with a name"),
        (("params = { n = 4", "parms = { n = 4"), r"\[nodes.count\] has unknown key\(s\) parms"),
        (("[nodes.sum]", "[nodes.sum\n"), "is not valid TOML"),
    ],
)
def test_bad_files_are_named_with_the_problem(tmp_path: Path, change: tuple[str, str], message: str) -> None:
    source = tmp_path / "bad.toml"
    source.write_text(GOOD.replace(*change))
    with pytest.raises(WorkflowError, match=message) as caught:
        check_workflow(read_workflow(source))
    assert str(source) in str(caught.value)


def test_a_missing_user_value_and_an_unknown_override_are_named(tmp_path: Path) -> None:
    workflow = read_workflow(GOOD)
    with pytest.raises(WorkflowError, match="needs its input 'table' \\(Lines to prepend.\\)"):
        workflow_pipeline(workflow, {})
    with pytest.raises(WorkflowError, match="no node named counter"):
        workflow_pipeline(workflow, {"table": tmp_path}, params={"counter": {"n": 1}})


def test_a_kind_mismatch_is_caught_before_running() -> None:
    text = GOOD.replace('inputs = { counts = "count:counts" }', 'inputs = { counts = "slow:result" }') + (
        '\n[nodes.slow]\nstep = "toy.slow"\nparams = { signal_dir = "/tmp" }\n'
    )
    with pytest.raises(WorkflowError, match="expects kind 'table'"):
        check_workflow(read_workflow(text))


THREE = (
    GOOD
    + """
[nodes.other]
step = "toy.count"
params = { n = 1, label = "b" }
inputs = { table = "$table" }
"""
)


def test_until_runs_only_what_a_node_needs(tmp_path: Path) -> None:
    from tomoforge.workflow import PipelineError, upstream_of

    workflow = read_workflow(THREE)
    table = tmp_path / "lines.txt"
    table.write_text("first\n")
    pipeline = workflow_pipeline(workflow, {"table": table})
    assert list(upstream_of(pipeline, ["sum"])) == ["count", "sum"]
    assert list(upstream_of(pipeline, ["count"])) == ["count"]
    assert list(upstream_of(pipeline, ["other", "count"])) == ["count", "other"]
    with pytest.raises(PipelineError, match="No node 'nope'.*count, sum, other"):
        upstream_of(pipeline, ["nope"])


def test_the_cli_runs_a_workflow_until_a_node_then_the_rest(cli, tmp_path: Path) -> None:
    flow, table = tmp_path / "flow.toml", tmp_path / "lines.txt"
    flow.write_text(THREE)
    table.write_text("first\n")
    common = ["run", str(flow), "--table", str(table), "-p", str(tmp_path / "P")]
    code, out, err = cli(*common, "--until", "count")
    assert code == 0, err
    assert "Workflow count-and-sum: 1 nodes" in out and "count (toy.count" in out and "sum (" not in out
    code, out, err = cli(*common)
    assert code == 0, err
    assert "count (toy.count, run 2): up to date" in out
    assert re.search(r"sum \(toy.sum, run \d+\): succeeded", out) and "other (toy.count" in out
    code, out, err = cli(*common, "--until", "nope")
    assert code != 0 and "nope: not a node of count-and-sum (count, sum, other)" in out + err
