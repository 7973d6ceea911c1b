"""Toy steps for the workflow and CLI tests (registered through TOMOFORGE_STEP_MODULES=toy_steps).

Every step appends one line ``<step> <pid>`` to the file named by the environment variable
``TOY_CALL_LOG`` (if set), so tests can count how often a step function really ran.
"""

from __future__ import annotations

import enum
import os
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from tomoforge.workflow import Artifact, Inputs, InputSpec, RunContext, atomic_write, step


def _record_call(name: str) -> None:
    log = os.environ.get("TOY_CALL_LOG")
    if log:
        with open(log, "a", encoding="utf-8") as handle:
            handle.write(f"{name} {os.getpid()}\n")


class Mode(enum.Enum):
    plain = "plain"
    squared = "squared"


class CountParams(BaseModel):
    n: int = Field(3, ge=1, le=1000, description="How many lines to write.")
    label: str = Field("x", description="Prefix of every line.")
    mode: Mode = Field(Mode.plain, description="How to write the numbers.")


def _count_summary(outputs: dict[str, Artifact]) -> dict[str, object]:
    return {"lines": len(outputs["counts"].path.read_text().splitlines())}


@step(
    name="toy.count",
    version="1",
    inputs={"table": InputSpec(kind="table", optional=True, description="Lines to prepend.")},
    outputs={"counts": "table"},
    summary=_count_summary,
    methods=lambda params: f"Lines were counted up to {params.n} (Toy et al., 2024).",
)
def toy_count(params: CountParams, inputs: Inputs, ctx: RunContext) -> dict[str, Path]:
    """Write n numbered lines (optionally after the lines of an input table)."""
    _record_call("toy.count")
    lines = inputs.path("table").read_text().splitlines() if "table" in inputs else []
    for i in ctx.progress(params.n, "counting").wrap(range(1, params.n + 1)):
        value = i * i if params.mode is Mode.squared else i
        lines.append(f"{params.label}{value}")
    out = ctx.work_dir / "counts.txt"
    with atomic_write(out) as handle:
        handle.write("\n".join(lines) + "\n")
    ctx.logger.info("wrote %d lines", len(lines))
    return {"counts": out}


class SumParams(BaseModel):
    scale: float = Field(1.0, gt=0, description="Factor applied to the sum.")


@step(name="toy.sum", version="1", inputs={"counts": "table"}, outputs={"total": "table"})
def toy_sum(params: SumParams, inputs: Inputs, ctx: RunContext) -> dict[str, Path]:
    """Sum the numbers at the end of each line of a table."""
    _record_call("toy.sum")
    total = 0
    for line in inputs.path("counts").read_text().splitlines():
        digits = "".join(ch for ch in line if ch.isdigit())
        total += int(digits or 0)
    out = ctx.work_dir / "total.txt"
    out.write_text(f"{total * params.scale}\n")
    return {"total": out}


class SlowParams(BaseModel):
    signal_dir: Path = Field(description="Folder for the 'started' and 'release' signal files.")
    timeout_s: float = Field(60.0, gt=0, description="Give up waiting for 'release' after this many seconds.")


@step(
    name="toy.slow",
    version="1",
    inputs={"counts": InputSpec("table", optional=True)},
    outputs={"result": "folder"},
)
def toy_slow(params: SlowParams, inputs: Inputs, ctx: RunContext) -> dict[str, Path]:
    """Write half of a folder, signal 'started', wait for 'release', then finish the folder."""
    _record_call("toy.slow")
    result = ctx.work_dir / "result"
    result.mkdir()
    (result / "part1.txt").write_text("first half\n")
    (params.signal_dir / "started").write_text(str(os.getpid()))
    deadline = time.monotonic() + params.timeout_s
    while not (params.signal_dir / "release").exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no release file in {params.signal_dir}")
        time.sleep(0.02)
    (result / "part2.txt").write_text("second half\n")
    return {"result": result}


class FailParams(BaseModel):
    how: Literal["raise", "interrupt", "bad-output"] = Field("raise", description="How to fail.")


@step(name="toy.fail", version="1", outputs={"out": "table"})
def toy_fail(params: FailParams, inputs: Inputs, ctx: RunContext) -> dict[str, Path]:
    """Fail in the requested way after writing a partial output."""
    _record_call("toy.fail")
    (ctx.work_dir / "partial.txt").write_text("partial\n")
    if params.how == "interrupt":
        raise KeyboardInterrupt
    if params.how == "bad-output":
        return {"out": ctx.work_dir / "missing.txt"}
    raise ValueError("toy failure as requested")


class ListParams(BaseModel):
    values: list[int] = Field(default_factory=lambda: [1, 2], description="Numbers to write.")
    weights: dict[str, float] = Field(default_factory=dict, description="Named weights.")
    verbose: bool = Field(False, description="Write a header line.")
    shape: Literal["row", "column"] = Field("row", description="Layout of the numbers.")


@step(name="toy.lists", version="1", outputs={"table": "table"})
def toy_lists(params: ListParams, inputs: Inputs, ctx: RunContext) -> dict[str, Path]:
    """Write the values and weights it was given."""
    sep = " " if params.shape == "row" else "\n"
    header = "values and weights\n" if params.verbose else ""
    out = ctx.work_dir / "table.txt"
    out.write_text(header + sep.join(map(str, params.values)) + f"\n{sorted(params.weights.items())}\n")
    return {"table": out}
