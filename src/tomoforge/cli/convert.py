"""``tomoforge convert``: alignments, CTF estimates and particles from one tool's files to another's.

Thin: each command parses its options, calls :mod:`tomoforge.io.convert` (imported inside the command, so that
``tomoforge --help`` stays fast) and prints one summary line. Bad or incomplete input raises
:class:`~tomoforge.io.FormatError`, which :func:`tomoforge.cli.main.main` prints as one red sentence (exit code 1).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from tomoforge.io.convert import ConversionSummary

__all__ = ["convert_app"]

convert_app = typer.Typer(
    help="Convert alignments, CTF estimates and particles between IMOD, AreTomo, Warp, RELION 5, Dynamo and Scipion.",
    no_args_is_help=True,
    epilog="Examples:\n\n"
    "  tomoforge convert alignment TS.xf TS.star --pixel-size-angstrom 1.35 --image-size-px 3838,3710 "
    "--zero-dose\n"
    "  tomoforge convert ctf TS.defocus TS.star --template ctffind_TS.star\n"
    "  tomoforge convert particles particles.tbl particles.star --tomograms tomograms.star",
)

_IN = "Input file; its format is chosen by the extension."
_OUT = "Output file; its format is chosen by the extension."
_TEMPLATE = (
    "RELION output: a RELION table of the same tilt series (e.g. CtfFind's tilt_series/TS.star); its rows, matched "
    "by tilt angle, give the doses and every other column."
)
_ZERO_DOSE = "RELION output: write a pre-exposure of 0 where the input holds no dose (no dose weighting)."
_TS_ID = "Tilt-series id (default: the RELION block name or the input file stem)."
_ALL_TILTS = (
    "RELION input: the table from before tilts were excluded (e.g. CtfFind's), to keep excluded tilts."
)


def _integers(text: str | None, count: int, option: str, names: str) -> tuple[int, ...] | None:
    if text is None:
        return None
    parts = text.replace("x", ",").split(",")
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != count or min(values) < 1:
        raise typer.BadParameter(
            f"expected {count} positive integers {names}, got {text!r}", param_hint=option
        )
    return values


def _report(summary: ConversionSummary) -> None:
    typer.echo(summary.sentence())


@convert_app.command(
    "alignment",
    epilog="Formats: IMOD .xf (+ .tlt, .xtilt, .rawtlt beside it), AreTomo .aln (read), Warp .xml (read), "
    "RELION 5 per-tilt-series .star.\n\n"
    "Examples:\n\n"
    "  tomoforge convert alignment TS.star TS.xf --tomograms tomograms.star --image-size-px 3838,3710\n"
    "  tomoforge convert alignment TS.xf TS.star --pixel-size-angstrom 1.35 --image-size-px 3838,3710 "
    "--template ctffind_TS.star\n"
    "  tomoforge convert alignment TS.aln TS.xf --pixel-size-angstrom 1.35\n"
    "  tomoforge convert alignment TS.xml TS.star",
)
def alignment(
    input_path: Path = typer.Argument(..., metavar="IN", help=_IN),
    output_path: Path = typer.Argument(..., metavar="OUT", help=_OUT),
    pixel_size_angstrom: float | None = typer.Option(
        None,
        "--pixel-size-angstrom",
        help="Pixel size in Å of the tilt images the IMOD/AreTomo shifts are in (input or output).",
    ),
    image_size_px: str | None = typer.Option(
        None, "--image-size-px", metavar="NX,NY", help="Size of the raw tilt images (IMOD input or output)."
    ),
    tilt_angles: Path | None = typer.Option(
        None, "--tilt-angles", help="IMOD input: the .tlt file (default: the .tlt beside the .xf)."
    ),
    tomograms: Path | None = typer.Option(
        None, "--tomograms", help="A RELION tomograms.star giving the tilt-series pixel size."
    ),
    all_tilts: Path | None = typer.Option(None, "--all-tilts", help=_ALL_TILTS),
    template: Path | None = typer.Option(None, "--template", help=_TEMPLATE),
    zero_dose: bool = typer.Option(False, "--zero-dose", help=_ZERO_DOSE),
    nearest_rotation: bool = typer.Option(
        False,
        "--nearest-rotation",
        help="RELION output: write the nearest rotation of transforms with scale or skew instead of refusing them.",
    ),
    ts_id: str | None = typer.Option(None, "--ts-id", help=_TS_ID),
) -> None:
    """Convert a tilt-series alignment (transforms, tilt angles, x-tilts, excluded tilts)."""
    from tomoforge.io.convert import convert_alignment

    summary = convert_alignment(
        input_path,
        output_path,
        pixel_size_angstrom=pixel_size_angstrom,
        image_size_xy=_integers(image_size_px, 2, "--image-size-px", "NX,NY"),
        tilt_angles_path=tilt_angles,
        ts_id=ts_id,
        tomograms_path=tomograms,
        all_tilts_path=all_tilts,
        template_path=template,
        zero_dose=zero_dose,
        nearest_rotation=nearest_rotation,
    )
    _report(summary)


@convert_app.command(
    "ctf",
    epilog="Formats: IMOD .defocus, AreTomo _CTF.txt (read), Warp .xml (read), RELION 5 per-tilt-series .star.\n\n"
    "Examples:\n\n"
    "  tomoforge convert ctf TS.defocus TS.star --template ctffind_TS.star\n"
    "  tomoforge convert ctf TS.star TS.defocus\n"
    "  tomoforge convert ctf TS_CTF.txt TS.defocus --tilt-angles TS.tlt\n"
    "  tomoforge convert ctf TS.xml TS.star",
)
def ctf(
    input_path: Path = typer.Argument(..., metavar="IN", help=_IN),
    output_path: Path = typer.Argument(..., metavar="OUT", help=_OUT),
    tilt_angles: Path | None = typer.Option(
        None,
        "--tilt-angles",
        help="IMOD/AreTomo input: a .tlt with the angle of every tilt of the stack.",
    ),
    all_tilts: Path | None = typer.Option(None, "--all-tilts", help=_ALL_TILTS),
    template: Path | None = typer.Option(None, "--template", help=_TEMPLATE),
    zero_dose: bool = typer.Option(False, "--zero-dose", help=_ZERO_DOSE),
    tilt_axis_angle_deg: float | None = typer.Option(
        None,
        "--tilt-axis-angle-deg",
        help="RELION output: nominal tilt-axis angle when neither the input nor the template gives it.",
    ),
    ts_id: str | None = typer.Option(None, "--ts-id", help=_TS_ID),
) -> None:
    """Convert per-tilt CTF estimates (defocus, astigmatism, phase shift)."""
    from tomoforge.io.convert import convert_ctf

    summary = convert_ctf(
        input_path,
        output_path,
        tilt_angles_path=tilt_angles,
        ts_id=ts_id,
        all_tilts_path=all_tilts,
        template_path=template,
        zero_dose=zero_dose,
        tilt_axis_angle_deg=tilt_axis_angle_deg,
    )
    _report(summary)


@convert_app.command(
    "particles",
    epilog="Formats: RELION 5 particles .star, Dynamo .tbl, Scipion .sqlite (SetOfCoordinates3D). Dynamo and "
    "Scipion coordinates are voxels of the tomograms, whose geometry comes from --tomograms or from "
    "--pixel-size-angstrom with --tomogram-size-px.\n\n"
    "Examples:\n\n"
    "  tomoforge convert particles particles.star particles.tbl --tomograms tomograms.star\n"
    "  tomoforge convert particles crop.tbl particles.star --pixel-size-angstrom 10 --tomogram-size-px 928,960,200\n"
    "  tomoforge convert particles coordinates.sqlite particles.star",
)
def particles(
    input_path: Path = typer.Argument(..., metavar="IN", help=_IN),
    output_path: Path = typer.Argument(..., metavar="OUT", help=_OUT),
    tomograms: Path | None = typer.Option(
        None,
        "--tomograms",
        help="A RELION tomograms.star: voxel size and size of each tomogram (Dynamo number k = its k-th row).",
    ),
    pixel_size_angstrom: float | None = typer.Option(
        None, "--pixel-size-angstrom", help="Voxel size in Å of the tomograms (with --tomogram-size-px)."
    ),
    tomogram_size_px: str | None = typer.Option(
        None, "--tomogram-size-px", metavar="X,Y,Z", help="Size of the tomograms in voxels."
    ),
    dynamo_one_based: bool = typer.Option(
        False, "--dynamo-one-based", help="Dynamo x, y, z are MATLAB 1-based indices (default 0-based)."
    ),
) -> None:
    """Convert particle positions and orientations."""
    from tomoforge.io.convert import convert_particles

    summary = convert_particles(
        input_path,
        output_path,
        tomograms_path=tomograms,
        pixel_size_angstrom=pixel_size_angstrom,
        tomogram_size_xyz_px=_integers(tomogram_size_px, 3, "--tomogram-size-px", "X,Y,Z"),
        dynamo_one_based=dynamo_one_based,
    )
    _report(summary)
