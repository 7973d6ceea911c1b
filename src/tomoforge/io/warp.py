"""Warp / M tilt-series XML (``<TiltSeries …>``, one file per tilt series): angles, exclusions, shifts, dose, CTF.

Per-tilt lists are newline-separated numbers in ``<Angles>``, ``<Dose>``, ``<UseTilt>``, ``<AxisAngle>``,
``<AxisOffsetX>``, ``<AxisOffsetY>`` and ``<MoviePath>``, all in the same (file) order. ``<CTF>`` holds
``<Param Name=… Value=…/>`` entries (``Defocus`` and ``DefocusDelta`` in µm, ``DefocusAngle`` in degrees,
``PhaseShift`` in units of π, ``PixelSize`` in Å, ``Voltage``, ``Cs``, ``Amplitude``); ``<Grid…>`` elements hold
cubic-spline grids as ``<Node X Y Z [W] Value/>``; for a tilt series ``GridCTF``, ``GridCTFDefocusDelta``,
``GridCTFDefocusAngle`` and ``GridCTFPhase`` have one node per tilt along Z, ``GridMovementX/Y`` the per-tilt image
warp (Å) and ``GridAngleX/Y/Z`` per-tilt angle refinements from M. Writing Warp XML is not supported.

Conventions (converted here, once):

* CTF: ``defocus_u/v = (Defocus ± DefocusDelta / 2) · 10⁴`` Å, the angle copied, phase ``× 180`` degrees — what
  WarpTools writes to RELION (``rlnDefocusU = (defocus + delta/2)·1e4``); per-tilt grid values replace the global
  ones where present (the grid value at the image centre).
* Geometry (:func:`warp_projection_parameters`): tilt angle ``θ = −(Angle + LevelAngleY)``, tilt-axis angle
  ``α = AxisAngle``, x-tilt ``φ = LevelAngleX``, shift ``s = (AxisOffsetX, AxisOffsetY)`` Å. This is the
  decoding of the cryoet-alignment package (Warp ↔ AreTomo, validated there on a reconstruction); the tilt sign is
  supported by the real file in ``tests/data/warp`` whose movie named ``…_-40.0_…`` has ``Angle = 40.01``. It is
  not independently verified here. The spatially varying ``GridMovement`` and the per-tilt ``GridAngle``
  refinements are kept in :attr:`WarpTiltSeries.grids` but not applied.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tomoforge.io._text import parse_float, parse_int, quote, read_bytes
from tomoforge.io.errors import FormatError
from tomoforge.models import CtfParameters, CtfTiltEstimate, CtfTiltSeries, TiltTransform

__all__ = [
    "WarpGeometry",
    "WarpGrid",
    "WarpTiltSeries",
    "read_warp_xml",
    "warp_ctf_to_ctf",
    "warp_projection_parameters",
    "warp_to_transforms",
]

_MICROMETRE_IN_ANGSTROM = 1e4


@dataclass
class WarpGrid:
    """A Warp cubic grid: ``values`` has shape ``(depth, height, width)``, or ``(duration, depth, height, width)``."""

    values: np.ndarray
    attributes: dict[str, str] = field(default_factory=dict)

    def centre_values(self) -> np.ndarray:
        """The value at the XY centre of the grid for every Z (the mean of the 1, 2 or 4 central nodes).

        Returns
        -------
        numpy.ndarray
            ``(depth,)`` (or ``(duration, depth)``); exact for 1×1 grids, approximate otherwise since Warp
            interpolates with cubic splines.
        """
        h, w = self.values.shape[-2:]
        rows = slice((h - 1) // 2, h // 2 + 1)
        cols = slice((w - 1) // 2, w // 2 + 1)
        return self.values[..., rows, cols].mean(axis=(-2, -1))


def _float_or_default(values: dict[str, str], name: str, path: str, where: str, default: float) -> float:
    text = values.get(name, "").strip()
    return parse_float(text, path, where) if text else default


@dataclass
class WarpTiltSeries:
    """The content of a Warp tilt-series XML; per-tilt arrays in file order (``n`` tilts)."""

    angles_deg: np.ndarray
    dose_e_per_angstrom2: np.ndarray
    """Dose received before each tilt (0 for the first exposure), e⁻/Å²."""
    use_tilt: np.ndarray
    axis_angles_deg: np.ndarray
    axis_offsets_xy_angstrom: np.ndarray
    movie_paths: tuple[str, ...]
    attributes: dict[str, str] = field(default_factory=dict)
    ctf: dict[str, str] = field(default_factory=dict)
    options_ctf: dict[str, str] = field(default_factory=dict)
    grids: dict[str, WarpGrid] = field(default_factory=dict)
    path: str = "<Warp XML>"
    """The file this was read from, for error messages."""

    @property
    def n_tilts(self) -> int:
        """Number of tilts listed."""
        return len(self.angles_deg)

    def attribute_float(self, name: str, default: float = 0.0) -> float:
        """A numeric attribute of the ``<TiltSeries>`` element (``LevelAngleX`` …), ``default`` when absent.

        Raises
        ------
        FormatError
            When the attribute is not a number.
        """
        return _float_or_default(self.attributes, name, self.path, f"<TiltSeries {name}>", default)

    def ctf_float(self, name: str, default: float = 0.0) -> float:
        """A numeric ``<CTF>`` parameter (``Defocus``, ``PixelSize`` …), ``default`` when absent.

        Raises
        ------
        FormatError
            When the parameter is not a number.
        """
        return _float_or_default(self.ctf, name, self.path, f"<CTF {name}>", default)

    @property
    def pixel_size_angstrom(self) -> float | None:
        """``<CTF>`` ``PixelSize`` in Å, if given."""
        value = self.ctf_float("PixelSize", 0.0)
        return value if value > 0 else None


_LISTS = ("Angles", "Dose", "UseTilt", "AxisAngle", "AxisOffsetX", "AxisOffsetY", "MoviePath")


def read_warp_xml(path: str | Path) -> WarpTiltSeries:
    """Read a Warp/M tilt-series XML file.

    Parameters
    ----------
    path
        The ``.xml`` file (root element ``<TiltSeries>``).

    Returns
    -------
    WarpTiltSeries
        Per-tilt lists (missing ones default to 0, ``True`` or empty paths), CTF parameters and all grids.

    Raises
    ------
    FormatError
        When the file is not well-formed XML, its root is not ``<TiltSeries>``, ``<Angles>`` is missing, a list
        has a different length than ``<Angles>``, or a number or grid node is malformed.
    """
    try:
        root = ET.fromstring(read_bytes(path))
    except ET.ParseError as exc:
        raise FormatError(path, f"is not well-formed XML ({exc})") from None
    if root.tag != "TiltSeries":
        raise FormatError(
            path,
            f"root element <{quote(root.tag, 30)[1:-1]}> is not <TiltSeries>; is this a Warp tilt-series XML?",
        )
    texts = {name: _lines(root, name) for name in _LISTS}
    angles_text = texts["Angles"]
    if angles_text is None or not angles_text:
        raise FormatError(path, "has no <Angles> list of tilt angles")
    n = len(angles_text)
    for name, values in texts.items():
        if values is not None and len(values) != n:
            raise FormatError(path, f"<{name}> has {len(values)} entries but <Angles> has {n}")

    def numbers(name: str, default: float) -> np.ndarray:
        values = texts[name]
        if values is None:
            return np.full(n, default)
        return np.array([parse_float(v, path, f"<{name}> entry {i + 1}") for i, v in enumerate(values)])

    use = texts["UseTilt"]
    use_tilt = (
        np.ones(n, dtype=bool) if use is None else np.array([_bool(v, path, i) for i, v in enumerate(use)])
    )
    return WarpTiltSeries(
        angles_deg=numbers("Angles", 0.0),
        dose_e_per_angstrom2=numbers("Dose", 0.0),
        use_tilt=use_tilt,
        axis_angles_deg=numbers("AxisAngle", 0.0),
        axis_offsets_xy_angstrom=np.stack([numbers("AxisOffsetX", 0.0), numbers("AxisOffsetY", 0.0)], axis=1),
        movie_paths=tuple(texts["MoviePath"] or [""] * n),
        attributes=dict(root.attrib),
        ctf=_params(root.find("CTF")),
        options_ctf=_params(root.find("OptionsCTF")),
        grids={child.tag: _grid(child, path) for child in root if child.tag.startswith("Grid")},
        path=str(path),
    )


def _lines(root: ET.Element, name: str) -> list[str] | None:
    element = root.find(name)
    if element is None:
        return None
    return [line.strip() for line in (element.text or "").splitlines() if line.strip()]


def _bool(text: str, path: str | Path, i: int) -> bool:
    if text.lower() not in ("true", "false"):
        raise FormatError(path, f"<UseTilt> entry {i + 1}: {quote(text)} is not True or False")
    return text.lower() == "true"


def _params(element: ET.Element | None) -> dict[str, str]:
    if element is None:
        return {}
    return {p.get("Name", ""): p.get("Value", "") for p in element.iter("Param")}


def _grid(element: ET.Element, path: str | Path) -> WarpGrid:
    tag = element.tag
    dims = []
    for name in ("Duration", "Depth", "Height", "Width"):
        if name in element.attrib:
            dims.append(parse_int(element.attrib[name], path, f"<{tag}> {name}"))
    if len(dims) < 3 or any(d < 1 for d in dims):
        raise FormatError(path, f"<{tag}> needs positive Width, Height and Depth attributes")
    values = np.zeros(dims)
    seen = 0
    for node in element.iter("Node"):
        where = f"<{tag}> node {seen + 1}"
        try:
            index = [parse_int(node.attrib[k], path, where) for k in ("W", "Z", "Y", "X")[4 - len(dims) :]]
            value = parse_float(node.attrib["Value"], path, where)
        except KeyError as exc:
            raise FormatError(path, f"{where} has no {exc.args[0]} attribute") from None
        if any(not 0 <= i < d for i, d in zip(index, dims, strict=True)):
            raise FormatError(path, f"{where} index {tuple(index)} lies outside the grid {tuple(dims)}")
        values[tuple(index)] = value
        seen += 1
    if seen != values.size:
        raise FormatError(path, f"<{tag}> has {seen} nodes, expected {values.size}")
    return WarpGrid(values=values, attributes=dict(element.attrib))


def _per_tilt(warp: WarpTiltSeries, grid_name: str, global_value: float) -> np.ndarray:
    grid = warp.grids.get(grid_name)
    if grid is None or grid.values.ndim != 3 or grid.values.shape[0] != warp.n_tilts:
        return np.full(warp.n_tilts, global_value)
    return grid.centre_values()


def warp_ctf_to_ctf(warp: WarpTiltSeries, ts_id: str) -> CtfTiltSeries:
    """Per-tilt CTF estimates; tilt index = position in the XML lists, tilts with ``UseTilt = False`` excluded.

    Parameters
    ----------
    warp
        From :func:`read_warp_xml`.
    ts_id
        Tilt-series identifier.

    Returns
    -------
    CtfTiltSeries
        Defocus in Å (``(Defocus ± DefocusDelta / 2) · 10⁴``), angle in degrees, phase shift ``180 · PhaseShift``
        degrees; ``fit_resolution_angstrom`` from ``CTFResolutionEstimate`` when positive.
    """
    defocus = _per_tilt(warp, "GridCTF", warp.ctf_float("Defocus"))
    delta = _per_tilt(warp, "GridCTFDefocusDelta", warp.ctf_float("DefocusDelta"))
    angle = _per_tilt(warp, "GridCTFDefocusAngle", warp.ctf_float("DefocusAngle"))
    phase = _per_tilt(warp, "GridCTFPhase", warp.ctf_float("PhaseShift"))
    resolution = warp.attribute_float("CTFResolutionEstimate", 0.0)
    estimates = []
    for i in range(warp.n_tilts):
        params = CtfParameters(
            defocus_u_angstrom=float(defocus[i] + delta[i] / 2) * _MICROMETRE_IN_ANGSTROM,
            defocus_v_angstrom=float(defocus[i] - delta[i] / 2) * _MICROMETRE_IN_ANGSTROM,
            astigmatism_angle_deg=float(angle[i]),
            phase_shift_deg=float(phase[i]) * 180.0,
            fit_resolution_angstrom=resolution if resolution > 0 else None,
        )
        estimates.append(
            CtfTiltEstimate(tilt_index=i, parameters=params, excluded=not bool(warp.use_tilt[i]))
        )
    return CtfTiltSeries(ts_id=ts_id, tilts=estimates)


@dataclass(frozen=True)
class WarpGeometry:
    """The rigid projection parameters of every tilt (CONVENTIONS.md §7), in XML order."""

    tilt_angles_deg: np.ndarray
    tilt_axis_angles_deg: np.ndarray
    x_tilt_deg: float
    shifts_xy_angstrom: np.ndarray
    """Image position of the tomogram centre in each raw tilt image, Å from the image centre."""


def warp_projection_parameters(warp: WarpTiltSeries) -> WarpGeometry:
    """Decode Warp's per-tilt geometry into tomoforge's projection model (see the module notes).

    Raises
    ------
    ValueError
        When ``AreAnglesInverted`` is True (its effect on the decoding is not established).
    """
    if warp.attributes.get("AreAnglesInverted", "False").strip().lower() == "true":
        raise ValueError("Warp tilt series with AreAnglesInverted=True are not supported")
    return WarpGeometry(
        tilt_angles_deg=-(warp.angles_deg + warp.attribute_float("LevelAngleY")),
        tilt_axis_angles_deg=warp.axis_angles_deg.copy(),
        x_tilt_deg=warp.attribute_float("LevelAngleX"),
        shifts_xy_angstrom=warp.axis_offsets_xy_angstrom.copy(),
    )


def warp_to_transforms(warp: WarpTiltSeries) -> list[TiltTransform]:
    """Raw → aligned transforms of the tilts (XML order): ``A = R(−α)``, ``d = −A·s`` (Å), as for IMOD alignments.

    The x-tilt (``LevelAngleX``) and tilt angles are not part of a 2D transform; take them from
    :func:`warp_projection_parameters`.
    """
    geometry = warp_projection_parameters(warp)
    transforms = []
    for alpha, shift in zip(geometry.tilt_axis_angles_deg, geometry.shifts_xy_angstrom, strict=True):
        rotation = TiltTransform.from_rotation(-float(alpha))
        a = np.array([[rotation.a11, rotation.a12], [rotation.a21, rotation.a22]])
        dx, dy = -(a @ shift)
        transforms.append(rotation.replace(dx_angstrom=float(dx), dy_angstrom=float(dy)))
    return transforms
