"""The tutorial's steps, one module per step (layer 2).

The workflow engine imports every submodule of this package to find the built-in steps; each module declares its
step with ``tomoforge.workflow.step``. Steps arrive issue by issue (see README.md, "The workflow").
"""
