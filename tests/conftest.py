"""Shared fixtures: the toy step module, temporary projects and the CLI called in this process."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy
import pytest

if TYPE_CHECKING:
    from tomoforge.workflow import Project

TOY_DIR = Path(__file__).parent / "workflow"
if str(TOY_DIR) not in sys.path:
    sys.path.insert(0, str(TOY_DIR))


@dataclass
class ToyEnv:
    """Environment under which the toy steps are discoverable and count their calls."""

    call_log: Path
    env: dict[str, str]

    def calls(self, step: str | None = None) -> list[str]:
        """Return the recorded calls (``"<step> <pid>"`` lines), optionally of one step."""
        if not self.call_log.exists():
            return []
        lines = self.call_log.read_text().splitlines()
        return [line for line in lines if step is None or line.split()[0] == step]

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run ``python -m tomoforge.cli.main ARGS`` in a subprocess."""
        return subprocess.run(
            [sys.executable, "-m", "tomoforge.cli.main", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def popen(self, *args: str) -> subprocess.Popen[str]:
        """Start ``python ARGS`` in the background."""
        return subprocess.Popen(
            [sys.executable, *args], env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )


@pytest.fixture
def toy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ToyEnv:
    """Register the toy steps (in this process and in subprocesses) and log their calls."""
    import toy_steps  # noqa: F401 - registers the toy steps in this process

    call_log = tmp_path / "calls.txt"
    monkeypatch.setenv("TOMOFORGE_STEP_MODULES", "toy_steps")
    monkeypatch.setenv("TOY_CALL_LOG", str(call_log))
    monkeypatch.delenv("TOMOFORGE_DEBUG", raising=False)
    python_path = os.pathsep.join(p for p in (str(TOY_DIR), os.environ.get("PYTHONPATH", "")) if p)
    monkeypatch.setenv("PYTHONPATH", python_path)
    env = dict(os.environ)
    env["COLUMNS"] = "200"
    return ToyEnv(call_log, env)


@pytest.fixture
def toy_project(tmp_path: Path, toy: ToyEnv) -> Iterator[Project]:
    """A new project opened for writing (closed after the test)."""
    from tomoforge.workflow import Project

    with Project.init(tmp_path / "proj", app_version="test") as opened:
        yield opened


Invoke = Callable[..., tuple[int, str, str]]


def invoke_cli(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    """Call ``main(ARGS)`` in this process; returns (exit code, stdout, stderr) of this call alone."""
    from tomoforge.cli.main import main

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


def decode_png(data: bytes) -> tuple[int, Any]:
    """Colour type and rows (top row first, as stored) of a PNG written with filter 0."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, {}
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF
        chunks[kind] = body
        pos += 12 + length
    width, height, depth, colour = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    assert depth == 8
    channels = 3 if colour == 2 else 1
    raw = numpy.frombuffer(zlib.decompress(chunks[b"IDAT"]), dtype=numpy.uint8).reshape(height, -1)
    assert (raw[:, 0] == 0).all()
    return colour, raw[:, 1:].reshape(height, width, channels).squeeze(-1 if channels == 1 else ())


@pytest.fixture
def png_decode() -> Callable[[bytes], tuple[int, Any]]:
    """Decode a PNG written with filter 0: ``(colour type, rows top row first)``."""
    return decode_png
