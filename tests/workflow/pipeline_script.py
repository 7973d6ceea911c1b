"""Run the pipeline toy.count -> toy.slow in a project (used by the kill/resume tests).

Usage: python pipeline_script.py PROJECT_DIR SIGNAL_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

from tomoforge.workflow import Node, Project, Ref, run_pipeline


def main(project_dir: str, signal_dir: str) -> None:
    pipeline = {
        "count": Node("toy.count", {"n": 5}),
        "slow": Node("toy.slow", {"signal_dir": Path(signal_dir)}, {"counts": Ref("count", "counts")}),
    }
    with Project.open(project_dir, write=True, app_version="test") as project:
        results = run_pipeline(project, pipeline)
    for name, result in results.items():
        sys.stdout.write(f"{name} {result.run.id} {'cached' if result.cached else 'ran'}\n")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
