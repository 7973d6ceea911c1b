"""Scipion SetOfTiltSeries files: tilt-series rows plus one nested ``<tsId>_`` table of tilt images each."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import ValidationError

from tomoforge.geometry import imod_to_tomoforge_xf_shift_px
from tomoforge.io._text import one_line
from tomoforge.io.errors import FormatError
from tomoforge.io.scipion import _sqlite as sq
from tomoforge.models import Acquisition, TiltImage, TiltSeries, TiltTransform

__all__ = ["read_scipion_tilt_series"]


def _image_size_xy(text: Any) -> tuple[int, int] | None:
    try:
        parts = [int(float(v)) for v in str(text).split(",")]
    except ValueError:
        return None
    return (parts[0], parts[1]) if len(parts) >= 2 and parts[0] > 0 and parts[1] > 0 else None


def read_scipion_tilt_series(path: str | os.PathLike[str]) -> list[TiltSeries]:
    """Read a Scipion SetOfTiltSeries sqlite file (tilt series rows plus one nested table of tilt images each).

    Tilt images are taken in stack order (``_index``), which must have ascending tilt angles; ``enabled = 0`` marks
    a tilt excluded; ``_transform._matrix`` (IMOD ``.xf`` meaning, pixels, IMOD centres) becomes ``transform``
    about tomoforge centres when the image size (``_firstDim``) is known; ``_acqOrder`` ranks give the acquisition
    order; ``_acquisition._doseInitial`` / ``_dosePerFrame`` the prior and own dose.

    Raises
    ------
    FormatError
        If the file is not a SetOfTiltSeries, a tilt series' image tables are missing, or a value is bad.
    """
    p = Path(path)
    con = sq.connect(p)
    try:
        _, mapping = sq.checked_set(p, con, "SetOfTiltSeries", ("_tsId",))
        series = sq.items(p, con, mapping)
        tables = sq.tables(con)
        images = {}
        for ts in series:
            prefix = next((f"{x}_" for x in (ts["_tsId"], f"id{ts['id']}") if f"{x}_Objects" in tables), None)
            if prefix is None:
                raise FormatError(
                    p, f"no {ts['_tsId']}_Objects table with the images of tilt series {ts['_tsId']}"
                )
            images[ts["id"]] = sq.items(p, con, sq.column_map(p, con, prefix)[1], prefix)
    finally:
        con.close()
    return [_tilt_series(p, ts, images[ts["id"]]) for ts in series]


def _tilt_series(path: Path, ts: dict[str, Any], items: list[dict[str, Any]]) -> TiltSeries:
    name = str(ts["_tsId"])
    if not items:
        raise FormatError(path, f"tilt series {name} has no tilt images")
    items = sorted(
        items, key=lambda it: sq.number(path, it.get("_index", it["id"]), f"_index of a {name} image")
    )
    size = _image_size_xy(ts.get("_firstDim"))
    orders = np.argsort(
        np.argsort([sq.number(path, it.get("_acqOrder", i), "_acqOrder") for i, it in enumerate(items)])
    )
    try:
        tilts = []
        for i, it in enumerate(items):
            transform = None
            if it.get("_transform._matrix") is not None:
                m = sq.matrix(
                    path, it["_transform._matrix"], (3, 3), f"the _transform of {name} image {i + 1}"
                )
                if size is not None:
                    m[:2, 2] = imod_to_tomoforge_xf_shift_px(
                        torch.from_numpy(m[:2, :2]), torch.from_numpy(m[:2, 2]), size
                    ).numpy()
                transform = TiltTransform.from_matrix(
                    m, float(it.get("_samplingRate") or ts["_samplingRate"])
                )
            tilts.append(
                TiltImage(
                    index=i,
                    tilt_angle_deg=sq.number(
                        path, it.get("_tiltAngle"), f"_tiltAngle of {name} image {i + 1}"
                    ),
                    acquisition_order=int(orders[i]),
                    prior_dose_e_per_angstrom2=float(it.get("_acquisition._doseInitial") or 0.0),
                    dose_e_per_angstrom2=float(it.get("_acquisition._dosePerFrame") or 0.0),
                    excluded=not it["enabled"],
                    transform=transform,
                )
            )
        acquisition = Acquisition(
            voltage_kv=sq.number(path, ts.get("_acquisition._voltage"), f"the voltage of {name}"),
            spherical_aberration_mm=float(ts.get("_acquisition._sphericalAberration") or 0.0),
            amplitude_contrast=float(ts.get("_acquisition._amplitudeContrast") or 0.0),
            pixel_size_angstrom=sq.number(path, ts.get("_samplingRate"), f"the _samplingRate of {name}"),
            tilt_axis_angle_deg=float(ts.get("_acquisition._tiltAxisAngle") or 0.0),
            dose_per_tilt_e_per_angstrom2=float(ts.get("_acquisition._dosePerFrame") or 0.0),
            magnification=ts.get("_acquisition._magnification") or None,
        )
        return TiltSeries(
            ts_id=name,
            acquisition=acquisition,
            stack_file=Path(str(items[0].get("_filename") or f"{name}.mrcs")),
            pixel_size_angstrom=acquisition.pixel_size_angstrom,
            tilts=tilts,
            image_shape_yx=None if size is None else (size[1], size[0]),
        )
    except (ValidationError, ValueError) as exc:
        message = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
        raise FormatError(path, f"tilt series {name} does not validate ({one_line(message)})") from None
