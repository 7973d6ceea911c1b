"""A small, generic workflow engine: typed steps, cached runs, projects on disk.

The engine knows nothing about the science done by the steps. Its pieces:

* :func:`step` declares a step (a typed function with a pydantic params model) and registers it
  in the process-wide :class:`StepRegistry`;
* :class:`Project` is a folder with a SQLite database, one folder per run, a lock and logs;
* :func:`run_step` and :func:`run_pipeline` run steps, reusing earlier runs with the same cache
  key (step, code version, parameters, input tokens);
* :class:`InlineExecutor` and :class:`LocalProcessExecutor` decide where step functions run.
"""

from .artifacts import Artifact, Inputs, external_token, output_token
from .context import ProgressEvent, ProgressTracker, RunContext, set_progress_handler
from .errors import (
    ParamProblem,
    ParamsError,
    PipelineError,
    ProjectError,
    ProjectLockedError,
    SchemaError,
    StepFailedError,
    UnknownStepError,
    WorkflowError,
)
from .executors import Executor, InlineExecutor, LocalProcessExecutor
from .files import WorkflowFile, WorkflowNode, check_workflow, read_workflow, workflow_pipeline
from .fsutil import atomic_write
from .graph import (
    Node,
    NodeEvent,
    Pipeline,
    Ref,
    RunOutput,
    check_pipeline,
    run_pipeline,
    run_step,
    topological_order,
    upstream_of,
)
from .project import Project
from .registry import StepRegistry, get_registry
from .runner import RunResult, cache_key, validate_params
from .step import InputSpec, StepSpec, step
from .store import SCHEMA_VERSION, RunRecord

__all__ = [
    "SCHEMA_VERSION",
    "Artifact",
    "Executor",
    "InlineExecutor",
    "InputSpec",
    "Inputs",
    "LocalProcessExecutor",
    "Node",
    "NodeEvent",
    "ParamProblem",
    "ParamsError",
    "Pipeline",
    "PipelineError",
    "ProgressEvent",
    "ProgressTracker",
    "Project",
    "ProjectError",
    "ProjectLockedError",
    "Ref",
    "RunContext",
    "RunOutput",
    "RunRecord",
    "RunResult",
    "SchemaError",
    "StepFailedError",
    "StepRegistry",
    "StepSpec",
    "UnknownStepError",
    "WorkflowError",
    "WorkflowFile",
    "WorkflowNode",
    "atomic_write",
    "cache_key",
    "check_pipeline",
    "check_workflow",
    "external_token",
    "get_registry",
    "output_token",
    "read_workflow",
    "run_pipeline",
    "run_step",
    "set_progress_handler",
    "step",
    "topological_order",
    "upstream_of",
    "validate_params",
    "workflow_pipeline",
]
