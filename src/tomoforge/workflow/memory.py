"""The peak resident memory (RSS) of this process while a block of code runs.

::

    with peak_rss() as peak:
        run_something()
    peak.bytes  # the largest resident set size of the process during the block, or None

Two ways of measuring, tried in this order:

1. ``"hwm"`` (Linux 4.0 and later): writing ``5`` to ``/proc/self/clear_refs`` resets the
   kernel's high-water mark of the resident set (``VmHWM`` in ``/proc/self/status``) to the
   current RSS; ``VmHWM`` read after the block is the exact peak during it. Nested or concurrent
   blocks stay correct: before a block resets the mark, the mark reached so far is credited to the
   blocks already open. The reset is process-wide: ``VmHWM`` and ``getrusage`` ``ru_maxrss`` of this
   process (hence ``/usr/bin/time``'s ``%M``) then report the peak since the last block began, not
   since the process started.
2. ``"sampled"`` (``/proc`` readable but ``clear_refs`` not writable): a daemon thread reads
   ``VmRSS`` every ``interval_s`` seconds (and once at the start and the end); the result is the
   largest sample, so a peak shorter than the interval can be missed.

Where neither works (no ``/proc``: macOS, Windows) ``bytes`` stays None.

The figure is that of the whole process (interpreter and libraries included), not of the
memory the block itself allocated; see ``start_bytes`` for the RSS when the block began. Memory
of child processes and of accelerators (GPU memory) is not counted.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["PeakRSS", "format_bytes", "peak_memory_text", "peak_rss", "read_status_bytes"]

STATUS_PATH = "/proc/self/status"
CLEAR_REFS_PATH = "/proc/self/clear_refs"
DEFAULT_INTERVAL_S = 0.05

Method = Literal["hwm", "sampled"]


@dataclass
class PeakRSS:
    """The outcome of one :func:`peak_rss` block (filled in when the block ends).

    Attributes
    ----------
    bytes : int or None
        The peak resident set size of the process during the block, in bytes; None while the block
        runs, or if it could not be measured on this system.
    start_bytes : int or None
        The resident set size when the block began (None if unknown).
    method : {"hwm", "sampled"} or None
        How it was measured (see the module documentation); None if it was not.
    """

    bytes: int | None = None
    start_bytes: int | None = None
    method: Method | None = None
    _floor: int = field(default=0, repr=False)


def read_status_bytes(key: str) -> int | None:
    """Return field ``key`` (``"VmRSS"``, ``"VmHWM"``, ...) of ``/proc/self/status`` in bytes, or None."""
    try:
        with open(STATUS_PATH, encoding="utf-8", errors="replace") as handle:  # Name: may be any bytes
            for line in handle:
                name, _, value = line.partition(":")
                if name == key:
                    number, _, unit = value.strip().partition(" ")
                    return int(number) * (1024 if unit.strip().lower() == "kb" else 1)
    except (OSError, ValueError):
        return None
    return None


def _reset_high_water_mark() -> bool:
    try:
        with open(CLEAR_REFS_PATH, "w", encoding="ascii") as handle:
            handle.write("5")
    except OSError:  # not Linux, kernel < 4.0 (EINVAL), or not permitted
        return False
    return True


_RESET_TOLERANCE = 1 << 20
_lock = threading.Lock()
_open_hwm_blocks: list[PeakRSS] = []


@contextlib.contextmanager
def _high_water_mark(peak: PeakRSS) -> Iterator[bool]:
    """Measure with ``VmHWM``; yields False (and measures nothing) if the mark cannot be reset."""
    with _lock:
        reached = read_status_bytes("VmHWM")
        ok = reached is not None and _reset_high_water_mark()
        if ok:
            assert reached is not None
            for other in _open_hwm_blocks:  # the reset must not lose the peak they reached so far
                other._floor = max(other._floor, reached)
            mark, now = read_status_bytes("VmHWM"), read_status_bytes("VmRSS")
            # A reset that did nothing (some sandboxes accept the write) would leave an old, higher mark.
            ok = mark is not None and now is not None and mark <= now + _RESET_TOLERANCE
        if ok:
            peak.start_bytes = now
            peak.method = "hwm"
            _open_hwm_blocks.append(peak)
    if not ok:
        yield False
        return
    try:
        yield True
    finally:
        with _lock:
            _open_hwm_blocks.remove(peak)
            now = read_status_bytes("VmHWM")
            peak.bytes = None if now is None else max(now, peak._floor)


@contextlib.contextmanager
def _sampled(peak: PeakRSS, interval_s: float) -> Iterator[bool]:
    """Measure by sampling ``VmRSS``; yields False (and measures nothing) if it cannot be read."""
    first = read_status_bytes("VmRSS")
    if first is None:
        yield False
        return
    peak.start_bytes = first
    peak.method = "sampled"
    samples = [first]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(interval_s):
            value = read_status_bytes("VmRSS")
            if value is not None:
                samples.append(value)

    thread = threading.Thread(target=sample, name="tomoforge-peak-rss", daemon=True)
    thread.start()
    try:
        yield True
    finally:
        last = read_status_bytes("VmRSS")
        stop.set()
        thread.join()
        peak.bytes = max([*samples, last] if last is not None else samples)


@contextlib.contextmanager
def peak_rss(interval_s: float = DEFAULT_INTERVAL_S, *, use_clear_refs: bool = True) -> Iterator[PeakRSS]:
    """Measure the peak resident set size of this process while the block runs.

    Parameters
    ----------
    interval_s : float, optional
        Sampling period of the fallback method, in seconds.
    use_clear_refs : bool, optional
        Try the exact ``VmHWM`` method first (False: sample, e.g. to test the fallback).

    Yields
    ------
    PeakRSS
        Its ``bytes`` is set when the block ends (also when it raises); it stays None where the
        peak cannot be measured. Measuring never raises.
    """
    if interval_s <= 0:
        raise ValueError(f"interval_s must be positive, got {interval_s}.")
    peak = PeakRSS()
    with contextlib.ExitStack() as stack:
        measuring = use_clear_refs and stack.enter_context(_high_water_mark(peak))
        if not measuring:
            stack.enter_context(_sampled(peak, interval_s))
        yield peak


def format_bytes(n: int | None) -> str:
    """Format a byte count in decimal units: ``"850 kB"``, ``"85 MB"``, ``"1.2 GB"``; ``""`` for None."""
    if n is None:
        return ""
    if n < 1000:
        return f"{n} B"
    value = float(n)
    for unit in ("kB", "MB", "GB", "TB"):
        value /= 1000
        if value < 999.5 or unit == "TB":
            break
    return f"{value:.1f} {unit}" if value < 9.95 else f"{value:.0f} {unit}"


def peak_memory_text(n: int | None, prefix: str = ", ") -> str:
    """``", peak memory 1.2 GB"`` for a measured peak (``prefix`` first), ``""`` where it was not measured."""
    return f"{prefix}peak memory {format_bytes(n)}" if n else ""
