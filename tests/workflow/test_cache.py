"""Caching: identical requests are no-ops, changes re-run the node and everything downstream."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest

from tomoforge.workflow import Node, Project, Ref, RunOutput, output_token, run_pipeline, run_step


def _pipeline(n: int = 3, scale: float = 1.0) -> dict[str, Node]:
    return {
        "count": Node("toy.count", {"n": n}),
        "sum": Node("toy.sum", {"scale": scale}, {"counts": Ref("count", "counts")}),
    }


def test_second_run_is_a_noop(toy_project: Project, toy) -> None:
    first = run_step(toy_project, "toy.count", {"n": 3})
    second = run_step(toy_project, "toy.count", {"n": 3})
    assert not first.cached and second.cached
    assert second.run.id == first.run.id
    assert len(toy.calls("toy.count")) == 1
    assert first.outputs["counts"].path.read_text() == "x1\nx2\nx3\n"
    assert first.outputs["counts"].token == output_token(first.run.cache_key, "counts")
    # equal parameters given explicitly or by default give the same key
    assert run_step(toy_project, "toy.count", {"n": 3, "label": "x"}).run.id == first.run.id


def test_param_change_reruns_node_and_downstream(toy_project: Project, toy) -> None:
    first = run_pipeline(toy_project, _pipeline(n=3))
    assert first["sum"].outputs["total"].path.read_text() == "6.0\n"

    again = run_pipeline(toy_project, _pipeline(n=3))
    assert all(r.cached for r in again.values())
    assert len(toy.calls()) == 2

    changed = run_pipeline(toy_project, _pipeline(n=4))
    assert not changed["count"].cached and not changed["sum"].cached
    assert changed["sum"].run.id not in (first["sum"].run.id, first["count"].run.id)
    assert changed["sum"].outputs["total"].path.read_text() == "10.0\n"
    assert changed["sum"].run.cache_key != first["sum"].run.cache_key
    assert len(toy.calls()) == 4

    downstream_only = run_pipeline(toy_project, _pipeline(n=4, scale=2.0))
    assert downstream_only["count"].cached and not downstream_only["sum"].cached
    assert downstream_only["sum"].outputs["total"].path.read_text() == "20.0\n"
    assert len(toy.calls("toy.count")) == 2 and len(toy.calls("toy.sum")) == 3


def test_missing_output_is_recomputed(toy_project: Project, toy) -> None:
    first = run_step(toy_project, "toy.count", {"n": 2})
    first.outputs["counts"].path.unlink()
    second = run_step(toy_project, "toy.count", {"n": 2})
    assert not second.cached and second.run.id != first.run.id
    # the same request gives the same token, so downstream caches stay valid
    assert second.outputs["counts"].token == first.outputs["counts"].token


def test_external_input_change_invalidates(toy_project: Project, toy, tmp_path: Path) -> None:
    table = tmp_path / "table.txt"
    table.write_text("a1\n")
    first = run_step(toy_project, "toy.count", {"n": 1}, {"table": table})
    assert first.outputs["counts"].path.read_text() == "a1\nx1\n"
    assert run_step(toy_project, "toy.count", {"n": 1}, {"table": table}).cached
    table.write_text("a1\nb2\n")
    second = run_step(toy_project, "toy.count", {"n": 1}, {"table": table})
    assert not second.cached
    assert second.outputs["counts"].path.read_text() == "a1\nb2\nx1\n"
    imports = [r for r in toy_project.runs() if r.step == "import"]
    assert len(imports) == 2


def test_run_output_reference(toy_project: Project, toy) -> None:
    count = run_step(toy_project, "toy.count", {"n": 2})
    total = run_step(toy_project, "toy.sum", inputs={"counts": RunOutput(count.run.id, "counts")})
    assert total.outputs["total"].path.read_text() == "3.0\n"
    assert toy_project.store.inputs(total.run.id)["counts"].id == count.outputs["counts"].id


STEP_SOURCE = """
from pathlib import Path
from pydantic import BaseModel
from tomoforge.workflow import step

class P(BaseModel):
    n: int = 1

@step(name="edit.step", version="{version}", outputs={{"out": "table"}})
def edit_step(params: P, inputs, ctx) -> dict:
    out = ctx.work_dir / "out.txt"
    out.write_text("{text}")
    return {{"out": out}}
"""


def test_code_change_invalidates(
    toy_project: Project, toy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module_dir = tmp_path / "mods"
    module_dir.mkdir()
    source = module_dir / "edit_steps_mod.py"
    source.write_text(STEP_SOURCE.format(version="1", text="one"))
    monkeypatch.syspath_prepend(str(module_dir))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    module = importlib.import_module("edit_steps_mod")
    try:
        first = run_step(toy_project, "edit.step")
        assert run_step(toy_project, "edit.step").cached

        source.write_text(STEP_SOURCE.format(version="1", text="edited text"))
        importlib.reload(module)
        edited = run_step(toy_project, "edit.step")
        assert not edited.cached
        assert edited.run.code_version != first.run.code_version
        assert edited.run.code_version.startswith("1+")
        assert edited.outputs["out"].path.read_text() == "edited text"

        source.write_text(STEP_SOURCE.format(version="2", text="edited text"))
        importlib.reload(module)
        bumped = run_step(toy_project, "edit.step")
        assert not bumped.cached and bumped.run.code_version.startswith("2+")
    finally:
        sys.modules.pop("edit_steps_mod", None)


def test_provenance_and_tables(toy_project: Project, toy) -> None:
    result = run_step(toy_project, "toy.count", {"n": 2, "label": "y"})
    folder = result.run.folder
    assert folder.name == f"{result.run.id:06d}_toy_count"
    assert (folder / "STATUS").read_text().strip() == "succeeded"
    provenance = json.loads((folder / "provenance.json").read_text())
    assert provenance["params"] == {"n": 2, "label": "y", "mode": "plain"}
    assert provenance["code_version"] == result.run.code_version
    assert provenance["app_version"] == "test"
    assert provenance["status"] == "succeeded" and provenance["finished_at"]
    assert provenance["summary"] == {"lines": 2}
    assert "Toy et al." in provenance["methods"]
    assert "wrote 2 lines" in (folder / "run.log").read_text()
    assert not [p for p in folder.iterdir() if p.name.startswith(".work-")]
    assert toy_project.store.params(result.run.id) == {"n": 2, "label": "y", "mode": "plain"}
    assert set(toy_project.store.timings(result.run.id)) == {"prepare", "execute", "finalize"}
    assert toy_project.store.summary(result.run.id) == {"lines": 2}
    row = toy_project.store.conn.execute(
        "SELECT path FROM artifacts WHERE run_id = ?", (result.run.id,)
    ).fetchone()
    assert row[0] == f"runs/{folder.name}/counts.txt"
    assert (toy_project.root / "logs" / "tomoforge.log").read_text().count(f"run {result.run.id}:") >= 2
