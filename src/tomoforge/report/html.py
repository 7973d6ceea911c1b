"""``tomoforge report``: one self-contained HTML page that says how a project's data came out, at a glance.

The page holds, in order:

1. **Quality per tilt series** — one row per tilt series with the numbers users ask for first: tilts and dose,
   the largest frame motion, the alignment's residual and tilt-axis angle, the defocus range and median fit
   resolution, the defocus handedness and the excluded views (each from the latest run of the step that
   measures it);
2. **the score against the truth**, when the project came from the simulator (``--score FILE``, as written by
   ``tomoforge score`` or ``tomoforge demo``);
3. **one section per step** that ran (latest run of each, in the order they ran): its run id, time, summary
   values, and its pictures (every PNG and SVG in its output folders, embedded: motion traces, residuals, CTF fits,
   tomogram slices with picks, FSC curves, map slices, isosurfaces, angular distributions);
4. **methods** — each step's methods paragraph with its citations.

Images are embedded (base64 PNG, inline SVG), so the file can be mailed or archived alone.
"""

from __future__ import annotations

import base64
import html
import re
import statistics
import struct
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tomoforge.workflow import Project

__all__ = ["BROWSERS", "print_pdf", "write_report"]

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: .5em 0; font-size: .9em; }
th, td { border: 1px solid #ddd; padding: .25em .6em; text-align: left; vertical-align: top; }
th { background: #f3f5f8; }
.step { margin: 1.5em 0; } .meta { color: #666; font-size: .85em; }
.pictures { display: flex; flex-wrap: wrap; gap: 12px; align-items: flex-start; }
.pictures figure { margin: 0; } .pictures img, .pictures svg { max-width: 540px; height: auto; }
.pictures img.pixels { image-rendering: pixelated; }
figcaption { font-size: .8em; color: #555; } .methods p { line-height: 1.45; }
.bad { color: #b00020; } .good { color: #16723b; }
"""


def _latest_runs(project: Project) -> list[Any]:
    """The latest succeeded run of every step, in the order those runs were made."""
    latest: dict[str, Any] = {}
    for record in project.runs():
        if record.status == "succeeded" and record.step not in ("import",):
            latest[record.step] = record
    return sorted(latest.values(), key=lambda r: r.id)


def _value_text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list) and len(value) > 8:
        numbers = [v for v in value if isinstance(v, int | float)]
        if len(numbers) == len(value):
            return f"{len(value)} values, {min(numbers):.4g} … {max(numbers):.4g}"
        return f"{len(value)} items"
    if isinstance(value, dict):
        return "; ".join(f"{k}: {_value_text(v)}" for k, v in value.items())
    return str(value)


def _records_table(records: list[dict[str, Any]]) -> str:
    """A list of records (e.g. per-iteration values) as a table, one row per record, numbered from 1."""
    names = list(dict.fromkeys(k for record in records for k in record))
    head = "".join(f"<th>{html.escape(n)}</th>" for n in ["#", *names])
    body = "".join(
        f"<tr><td>{i}</td>"
        + "".join(f"<td>{html.escape(_value_text(r.get(n, '—')))}</td>" for n in names)
        + "</tr>"
        for i, r in enumerate(records, start=1)
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _summary_cell(value: Any) -> str:
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        return _records_table(value)
    return html.escape(_value_text(value))


def _summary_table(summary: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{_summary_cell(v)}</td></tr>"
        for k, v in summary.items()
        if k != "pictures"
    )
    return f"<table>{rows}</table>" if rows else ""


_DISPLAY_WIDTH_PX = 520
"""Small pictures (map slices, tomogram slices) are shown magnified by a whole factor up to about this width."""


def _png_image(path: Path) -> str:
    """An ``<img>`` of a PNG, base64-embedded; a small one is magnified by a whole factor, pixels kept sharp."""
    data = path.read_bytes()
    encoded = base64.b64encode(data).decode("ascii")
    width = struct.unpack(">I", data[16:20])[0] if data[12:16] == b"IHDR" else 0
    factor = _DISPLAY_WIDTH_PX // width if 0 < width <= _DISPLAY_WIDTH_PX // 2 else 1
    size = f' class="pixels" style="width: {width * factor}px"' if factor > 1 else ""
    return f'<img src="data:image/png;base64,{encoded}" alt="{html.escape(path.name)}"{size}>'


def _svg_image(path: Path) -> str:
    """An SVG inlined, given a ``viewBox`` from its width and height when it has none, so the page can scale it
    rather than crop it."""
    text = path.read_text(encoding="utf-8")
    text = re.sub(r"^\s*<\?xml[^>]*\?>\s*", "", text)
    root = re.search(r"<svg\b[^>]*>", text)
    if root is not None and "viewBox" not in root.group(0):
        size = re.search(r'width="([\d.]+)"[^>]*height="([\d.]+)"', root.group(0))
        if size is not None:
            tag = root.group(0)[:-1] + f' viewBox="0 0 {size.group(1)} {size.group(2)}">'
            text = text[: root.start()] + tag + text[root.end() :]
    return text


def _pictures(folders: list[Path]) -> str:
    figures = []
    for folder in folders:
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            if path.suffix == ".png":
                image = _png_image(path)
            elif path.suffix == ".svg":
                image = _svg_image(path)
            else:
                continue
            figures.append(f"<figure>{image}<figcaption>{html.escape(path.name)}</figcaption></figure>")
    return f'<div class="pictures">{"".join(figures)}</div>' if figures else ""


def _per_series(summary: dict[str, Any], key: str) -> dict[str, Any]:
    """``{ts: value}`` of a per-series summary entry (summaries keep per-series values under the series' id)."""
    return {
        ts: values.get(key) for ts, values in summary.items() if isinstance(values, dict) and key in values
    }


def _views_text(views: list[Any]) -> str:
    """Stack indices (from 0) of views as words: "none", "index 3", "indices 3, 17"."""
    if not views:
        return "none"
    return ("index " if len(views) == 1 else "indices ") + ", ".join(map(str, views))


def _angles_text(angles: list[Any]) -> str:
    """Tilt angles of excluded views as words: "none", "2: −60°, 57°"."""
    if not angles:
        return "none"
    return f"{len(angles)}: " + ", ".join(f"{a:.0f}°".replace("-", "−") for a in angles)


def _handedness_text(value: Any) -> str:
    """The CTF step's defocus handedness ``h`` (CONVENTIONS.md §8: +1 when the defocus gradient across the tilted
    views is the one the conventions' geometry predicts, −1 when the images are mirrored relative to it), in words."""
    if value == 1:
        return "+1 (conventional)"
    if value == -1:
        return "−1 (mirrored)"
    return "undetermined" if value in (0, None) else str(value)


def _quality_table(project: Project, runs: list[Any]) -> str:
    by_step = {r.step: r for r in runs}
    columns: dict[str, dict[str, str]] = {}

    def put(column: str, values: dict[str, Any], fmt: Any = str) -> None:
        for ts, value in values.items():
            if value is not None:
                columns.setdefault(ts, {})[column] = fmt(value)

    if "import.movies" in by_step:
        summary = project.store.summary(by_step["import.movies"].id)
        put("tilts", summary.get("tilts", {}))
        put("dose (e⁻/Å²)", summary.get("total_dose_e_per_angstrom2", {}), lambda v: f"{v:.0f}")
    if "motion.correct" in by_step:
        summary = project.store.summary(by_step["motion.correct"].id)
        put("largest motion (Å)", _per_series(summary, "largest_shift_angstrom"), lambda v: f"{v:.1f}")
    if "xray.erase" in by_step:
        summary = project.store.summary(by_step["xray.erase"].id)
        put("X-rays erased", _per_series(summary, "objects_erased"))
    for step in ("alignment.fiducial", "alignment.coarse"):
        if step in by_step:
            summary = project.store.summary(by_step[step].id)
            put("alignment residual (nm)", _per_series(summary, "mean_residual_nm"), lambda v: f"{v:.3f}")
            put("tilt axis (°)", _per_series(summary, "tilt_axis_deg_mean"), lambda v: f"{v:.2f}")
            put("thickness (nm)", _per_series(summary, "thickness_nm"), lambda v: f"{v:.0f}")
            put("exclusion candidates", _per_series(summary, "exclusion_candidates"), _views_text)
            break
    if "ctf.estimate" in by_step:
        summary = project.store.summary(by_step["ctf.estimate"].id)
        put("defocus (µm)", _per_series(summary, "defocus_um"))
        put(
            "median CTF fit (Å)", _per_series(summary, "median_fit_resolution_angstrom"), lambda v: f"{v:.1f}"
        )
        put("defocus handedness", _per_series(summary, "handedness"), _handedness_text)
    if "tilts.exclude" in by_step:
        summary = project.store.summary(by_step["tilts.exclude"].id)
        put("excluded views", _per_series(summary, "excluded_tilt_angle_deg"), _angles_text)
    if "tomogram.reconstruct" in by_step:
        summary = project.store.summary(by_step["tomogram.reconstruct"].id)
        put("tomogram (voxels)", _per_series(summary, "size_xyz_voxels"))
    if not columns:
        return "<p>No tilt series were processed yet.</p>"
    names = list(dict.fromkeys(name for row in columns.values() for name in row))
    head = "".join(f"<th>{html.escape(n)}</th>" for n in ["tilt series", *names])
    body = "".join(
        "<tr>" + f"<td>{html.escape(ts)}</td>" + "".join(f"<td>{html.escape(row.get(n, '—'))}</td>" for n in names)
        + "</tr>"
        for ts, row in sorted(columns.items())
    )  # fmt: skip
    return f"<table><tr>{head}</tr>{body}</table>"


def _score_section(score_file: Path | None) -> str:
    if score_file is None or not score_file.is_file():
        return ""
    from tomoforge.simulate.scoring import ScoreReport, summary_rows

    report = ScoreReport.model_validate_json(score_file.read_text(encoding="utf-8"))
    rows = "".join(
        f"<tr><td>{html.escape(section)}</td><td>{html.escape(ts)}</td><td>{html.escape(text)}</td></tr>"
        for section, ts, text in summary_rows(report)
    )
    return (
        f"<h2>Score against the truth</h2><p class=meta>{html.escape(str(score_file))}</p>"
        f"<table><tr><th>section</th><th>tilt series</th><th>result</th></tr>{rows}</table>"
    )


def write_report(project: Project, path: Path, *, score_file: Path | None = None) -> Path:
    """Write the report of ``project`` to ``path`` (module docstring); returns the path."""
    from tomoforge import __version__
    from tomoforge.workflow import get_registry
    from tomoforge.workflow.fsutil import atomic_write_text
    from tomoforge.workflow.memory import peak_memory_text

    registry = get_registry()
    runs = _latest_runs(project)
    sections, methods = [], []
    for record in runs:
        summary = project.store.summary(record.id)
        outputs = project.outputs(record.id)
        folders = [a.path for a in outputs.values()]
        sections.append(
            f'<div class="step"><h3>{html.escape(record.step)}</h3>'
            f'<p class="meta">run {record.id}, {record.duration_s or 0.0:.1f} s'
            f"{peak_memory_text(record.peak_memory_bytes)}</p>"
            f"{_summary_table(summary)}{_pictures(folders)}</div>"
        )
        if record.step in registry.names():
            spec = registry.get(record.step)
            if spec.methods is not None:
                try:
                    params = spec.params_model.model_validate(project.store.params(record.id))
                    methods.append(f"<p>{html.escape(spec.methods(params))}</p>")
                except Exception:  # a record from an older step version: skip its paragraph, keep the report
                    continue
    total = sum(r.duration_s or 0.0 for r in runs)
    durations = [r.duration_s or 0.0 for r in runs]
    longest = max(runs, key=lambda r: r.duration_s or 0.0).step if runs else "—"
    largest = max(runs, key=lambda r: r.peak_memory_bytes or 0) if runs else None
    memory = (
        f"{peak_memory_text(largest.peak_memory_bytes, prefix='; largest ')} ({html.escape(largest.step)})"
        if largest is not None and largest.peak_memory_bytes
        else ""
    )
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>tomoforge report: {html.escape(project.root.name)}</title>
<style>{_STYLE}</style></head><body>
<h1>tomoforge report</h1>
<p class="meta">Project {html.escape(str(project.root))}; written {datetime.now().strftime("%Y-%m-%d %H:%M")} by
tomoforge {html.escape(__version__)}. {len(runs)} steps, {total:.0f} s of processing (median
{statistics.median(durations) if durations else 0.0:.1f} s per step, longest {html.escape(longest)}{memory}).</p>
<h2>Quality per tilt series</h2>
{_quality_table(project, runs)}
{_score_section(score_file)}
<h2>Steps</h2>
{"".join(sections)}
<h2>Methods</h2>
<div class="methods">{"".join(methods)}</div>
</body></html>
"""
    atomic_write_text(path, page)
    return path


BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
"""Browsers :func:`print_pdf` looks for on the ``PATH``, in this order."""


def print_pdf(page: Path, pdf: Path, *, browser: str | None = None, timeout_s: float = 120.0) -> Path:
    """Print an HTML report to PDF with a headless Chromium (written to a temporary name, then renamed).

    Parameters
    ----------
    page
        The HTML file.
    pdf
        The PDF to write.
    browser
        The browser's executable; default the first of :data:`BROWSERS` on the ``PATH``.
    timeout_s
        How long printing may take.

    Raises
    ------
    RuntimeError
        When no browser is found, or it fails (its message is included).
    """
    import shutil
    import subprocess
    import tempfile

    executable = browser or next((found for name in BROWSERS if (found := shutil.which(name))), None)
    if executable is None:
        raise RuntimeError(
            f"No Chromium or Chrome was found on the PATH ({', '.join(BROWSERS)}) to print {page} to PDF; install "
            "one (e.g. Debian's chromium package) or open the HTML report in a browser and print it from there."
        )
    pdf.parent.mkdir(parents=True, exist_ok=True)
    partial = pdf.with_name(f".{pdf.name}.partial")
    with tempfile.TemporaryDirectory(prefix="tomoforge-chromium-") as profile:
        command = [
            executable, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync",
            "--disable-background-networking", "--disable-component-update", f"--user-data-dir={profile}",
            "--no-pdf-header-footer", f"--print-to-pdf={partial}", page.resolve().as_uri(),
        ]  # fmt: skip
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False)
        except (OSError, subprocess.TimeoutExpired) as error:
            partial.unlink(missing_ok=True)
            raise RuntimeError(f"{executable} could not print {page} to PDF: {error}") from error
    if done.returncode != 0 or not partial.is_file() or partial.stat().st_size == 0:
        partial.unlink(missing_ok=True)
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"{executable} could not print {page} to PDF: {' / '.join(tail) or 'no output'}")
    partial.replace(pdf)
    return pdf
