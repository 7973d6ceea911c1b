"""A toy step that holds a given amount of memory, for the peak-memory tests (imported by name in workers)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field

from tomoforge.workflow import Inputs, RunContext, step


class AllocParams(BaseModel):
    megabytes: int = Field(0, ge=0, description="How many MB (10**6 bytes) to allocate and touch; 0: none.")


@step(name="memtest.alloc", version="1", outputs={"out": "table"})
def memtest_alloc(params: AllocParams, inputs: Inputs, ctx: RunContext) -> dict[str, Path]:
    """Allocate and touch an array of the requested size, then write its sum."""
    block = np.ones(params.megabytes * 10**6, dtype=np.uint8)
    out = ctx.work_dir / "sum.txt"
    out.write_text(f"{int(block.sum())}\n")
    return {"out": out}
