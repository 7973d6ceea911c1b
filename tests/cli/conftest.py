"""Shared fixtures of the command-line tests: the CLI called in this process."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tomoforge.cli.main import main

Invoke = Callable[..., tuple[int, str, str]]


def invoke_cli(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    """Call ``main(ARGS)`` in this process; returns (exit code, stdout, stderr) of this call alone."""
    capsys.readouterr()
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def cli_columns() -> int:
    """Terminal width the CLI formats for (override in a module for wider tables)."""
    return 200


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, cli_columns: int) -> Invoke:
    """Call the CLI in this process; returns (exit code, stdout, stderr)."""
    monkeypatch.setenv("COLUMNS", str(cli_columns))
    monkeypatch.delenv("TOMOFORGE_DEBUG", raising=False)

    def invoke(*args: str | Path) -> tuple[int, str, str]:
        return invoke_cli(capsys, *args)

    return invoke
