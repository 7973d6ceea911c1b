"""RELION 5 per-tilt-series STAR files on the real EMPIAR-10164 TS_01: geometry, exclusion, lossless round trips.

The real RELION 5 alignment of TS_01 was also compared with ``yaiw_TS_01.xf`` (teamtomo/yet-another-imod-wrapper
tests, ``../shared/data/imod``). That file comes from a different run (RELION 4.1 project ``HIV-5TS-rln41-220728``,
``AngleOffset = 9.02``): after the centre conversion its tilt-axis angles differ from RELION 5's by 0.010–0.055°
(more than 0.05° at the highest tilts), and its shifts by up to 13 px in x and 52 px in y. They are not the same
alignment, so the IMOD check below is an internal round trip through the ``.xf``/``.tlt`` meaning instead.
"""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from tomoforge.geometry import (
    imod_to_tomoforge_xf_shift_px,
    projection_matrices,
    projection_matrices_from_xf,
    tomoforge_to_imod_xf_shift_px,
)
from tomoforge.io import FormatError
from tomoforge.io.relion5 import (
    read_relion_tilt_series,
    read_relion_tilt_series_table,
    read_tomograms_star,
    relion_alignment_to_transform,
    transform_to_relion_alignment,
    write_relion_tilt_series,
)
from tomoforge.models import TiltTransform

DATA = Path(__file__).resolve().parents[1] / "data" / "relion5_empiar10164"
TS_STAR = DATA / "tilt_series_TS_01.star"
ALL_TILTS = DATA / "ctffind_TS_01.star"
PIXEL = 1.35


@pytest.fixture(scope="module")
def tomogram():
    return read_tomograms_star(DATA / "tomograms.star")["TS_01"]


@pytest.fixture(scope="module")
def raw() -> pd.DataFrame:
    return read_relion_tilt_series_table(TS_STAR)[1]


def test_real_tilt_series_reads_with_exclusion_doses_ctf_and_alignment(tomogram):
    ts = read_relion_tilt_series(TS_STAR, tomogram, all_tilts=ALL_TILTS)
    assert ts.ts_id == "TS_01"
    assert ts.n_tilts == 41 and ts.excluded_indices() == [0]
    assert ts.tilts[0].tilt_angle_deg == pytest.approx(-60.0, abs=0.01)
    assert ts.pixel_size_angstrom == PIXEL
    acq = ts.acquisition
    assert (acq.voltage_kv, acq.spherical_aberration_mm, acq.amplitude_contrast) == (300.0, 2.7, 0.1)
    assert acq.tilt_axis_angle_deg == 85.0 and acq.pixel_size_angstrom == 0.675
    assert acq.dose_per_tilt_e_per_angstrom2 == 3.0
    zero = min(ts.tilts, key=lambda t: abs(t.tilt_angle_deg))
    assert zero.acquisition_order == 0 and zero.prior_dose_e_per_angstrom2 == 0.0
    # dose-symmetric: +3° second, −3° third
    assert [t.acquisition_order for t in ts.tilts if abs(t.tilt_angle_deg - 3) < 0.1] == [1]
    assert [t.acquisition_order for t in ts.tilts if abs(t.tilt_angle_deg + 3) < 0.1] == [2]
    first = ts.tilts[1]
    assert first.ctf is not None and first.ctf.defocus_u_angstrom == pytest.approx(39527.78125)
    assert first.ctf.astigmatism_angle_deg == pytest.approx(44.527622)
    assert first.refined_tilt_angle_deg == -57.0
    assert first.transform is not None and first.transform.tilt_axis_angle_deg == pytest.approx(85.032958)
    assert all(t.transform is None for t in ts.tilts if t.excluded)


def test_without_all_tilts_only_the_kept_tilts_are_read(tomogram):
    ts = read_relion_tilt_series(TS_STAR, tomogram)
    assert ts.n_tilts == 40 and ts.excluded_indices() == []


def test_alignment_gives_the_same_projections_as_relion(tomogram, raw):
    """projection_matrices(θ, α, s/px, φ) == projection_matrices_from_xf(A, d/px, θ, φ) on the real alignment."""
    ts = read_relion_tilt_series(TS_STAR, tomogram)
    raw = raw.sort_values("rlnTomoNominalStageTiltAngle").reset_index(drop=True)
    theta = torch.tensor(raw.rlnTomoYTilt.to_numpy())
    phi = torch.tensor(raw.rlnTomoXTilt.to_numpy())
    relion = projection_matrices(
        theta,
        torch.tensor(raw.rlnTomoZRot.to_numpy()),
        torch.tensor(raw[["rlnTomoXShiftAngst", "rlnTomoYShiftAngst"]].to_numpy()) / PIXEL,
        phi,
    )
    xf = torch.tensor(ts.transform_matrices(PIXEL))
    ours = projection_matrices_from_xf(
        xf[:, :2, :2],
        xf[:, :2, 2],
        torch.tensor(ts.effective_tilt_angles_deg, dtype=torch.float64),
        torch.tensor([t.x_tilt_angle_deg for t in ts.tilts], dtype=torch.float64),
    )
    assert torch.allclose(ours, relion, atol=1e-9)
    # a point 1000 Å above the centre and off-axis lands where RELION puts it in every tilt
    point = torch.tensor([[300.0, -200.0, 740.0]], dtype=torch.float64)
    assert torch.allclose(point @ ours[..., :3].transpose(-1, -2), point @ relion[..., :3].transpose(-1, -2))


@pytest.mark.parametrize(("alpha", "sx", "sy"), [(85.3, 12.5, -7.25), (-120.0, 0.0, 3.0), (0.0, -1e-7, 1e3)])
def test_alignment_conversion_round_trips(alpha, sx, sy):
    back = transform_to_relion_alignment(relion_alignment_to_transform(alpha, sx, sy))
    assert back == pytest.approx((alpha, sx, sy), abs=1e-9)


def test_non_rigid_transform_is_refused_unless_asked():
    stretched = TiltTransform(a11=1.02, a12=0.1, a21=-0.1, a22=1.0, dx_angstrom=5.0)
    with pytest.raises(ValueError, match="rotation"):
        transform_to_relion_alignment(stretched)
    alpha, sx, sy = transform_to_relion_alignment(stretched, rigid_tolerance=None)
    # the tomogram centre still projects to the same raw-image point: A·s + d = 0
    a = np.array([[1.02, 0.1], [-0.1, 1.0]])
    assert np.allclose(a @ [sx, sy] + [5.0, 0.0], 0.0)
    assert alpha == pytest.approx(np.degrees(np.arctan2(0.1 - (-0.1), 1.02 + 1.0)), abs=1e-9)


def test_round_trip_with_template_is_lossless(tmp_path: Path, tomogram, raw):
    ts = read_relion_tilt_series(TS_STAR, tomogram, all_tilts=ALL_TILTS)
    out = write_relion_tilt_series(ts, tmp_path / "TS_01.star", template=TS_STAR)
    name, again = read_relion_tilt_series_table(out)
    assert name == "TS_01"
    assert list(again.columns) == list(raw.columns)
    assert len(again) == 40  # the excluded tilt is left out, as RELION does
    for column in raw.columns:
        if pd.api.types.is_numeric_dtype(raw[column]):
            assert np.allclose(again[column], raw[column], rtol=0, atol=1e-6), column
        else:
            assert list(again[column]) == list(raw[column]), column
    assert_same_series(read_relion_tilt_series(out, tomogram, all_tilts=ALL_TILTS), ts)


def assert_same_series(back, ts):
    assert (back.ts_id, back.acquisition, back.pixel_size_angstrom) == (
        ts.ts_id,
        ts.acquisition,
        ts.pixel_size_angstrom,
    )
    assert back.n_tilts == ts.n_tilts
    for a, b in zip(ts.tilts, back.tilts, strict=True):
        assert b.model_dump(exclude={"transform"}) == a.model_dump(exclude={"transform"})
        assert (a.transform is None) == (b.transform is None)
        if a.transform is not None and b.transform is not None:
            assert np.allclose(b.transform.as_matrix(PIXEL), a.transform.as_matrix(PIXEL), rtol=0, atol=1e-9)


def test_round_trip_without_template_keeps_the_model(tmp_path: Path, tomogram):
    ts = read_relion_tilt_series(TS_STAR, tomogram)
    out = write_relion_tilt_series(ts, tmp_path / "TS_01.star")
    back = read_relion_tilt_series(out, tomogram)
    assert back.stack_file == out
    assert_same_series(back, ts)


def test_alignment_survives_imod_xf_and_tlt_files(tmp_path: Path, tomogram):
    """Internal round trip: RELION → xf/tlt (IMOD centres, pixels) → tomoforge → RELION, to 1e-6."""
    ts = read_relion_tilt_series(TS_STAR, tomogram)
    size_xy = (3710, 3838)
    m = ts.transform_matrices(PIXEL)
    d_imod = tomoforge_to_imod_xf_shift_px(
        torch.tensor(m[:, :2, :2]), torch.tensor(m[:, :2, 2]), size_xy
    ).numpy()
    xf = np.concatenate([m[:, :2, :2].reshape(-1, 4), d_imod], axis=1)
    np.savetxt(tmp_path / "TS_01.xf", xf, fmt="%.9f")
    np.savetxt(tmp_path / "TS_01.tlt", ts.effective_tilt_angles_deg, fmt="%.6f")
    xf = np.loadtxt(tmp_path / "TS_01.xf")
    a = xf[:, :4].reshape(-1, 2, 2)
    d = imod_to_tomoforge_xf_shift_px(torch.tensor(a), torch.tensor(xf[:, 4:]), size_xy).numpy()
    for tilt, ai, di, angle in zip(ts.tilts, a, d, np.loadtxt(tmp_path / "TS_01.tlt"), strict=True):
        t = TiltTransform(a11=ai[0, 0], a12=ai[0, 1], a21=ai[1, 0], a22=ai[1, 1],
                          dx_angstrom=di[0] * PIXEL, dy_angstrom=di[1] * PIXEL)  # fmt: skip
        assert tilt.transform is not None
        assert transform_to_relion_alignment(t) == pytest.approx(
            transform_to_relion_alignment(tilt.transform), abs=1e-6
        )
        assert angle == pytest.approx(tilt.effective_tilt_angle_deg, abs=1e-6)


def test_reader_needs_microscope_values():
    with pytest.raises(ValueError, match="tomogram="):
        read_relion_tilt_series(TS_STAR)


def test_partial_alignment_columns_are_a_format_error(tmp_path: Path, tomogram):
    path = tmp_path / "TS_01.star"
    path.write_text(TS_STAR.read_text().replace("_rlnTomoZRot #25", "_rlnTomoSomething #25"))
    with pytest.raises(FormatError) as err:
        read_relion_tilt_series(path, tomogram)
    message = str(err.value)
    assert message.startswith(str(path) + ": ") and "\n" not in message and "rlnTomoZRot" in message


def test_missing_tilt_angle_column_is_a_format_error(tmp_path: Path, tomogram):
    path = tmp_path / "TS_01.star"
    path.write_text(TS_STAR.read_text().replace("_rlnTomoNominalStageTiltAngle #3", "_rlnTilt #3"))
    with pytest.raises(FormatError) as err:
        read_relion_tilt_series(path, tomogram)
    message = str(err.value)
    assert message.startswith(str(path) + ": ") and "\n" not in message
    assert "rlnTomoNominalStageTiltAngle" in message


def test_invalid_values_are_format_errors(tmp_path: Path, tomogram):
    path = tmp_path / "TS_01.star"
    path.write_text(TS_STAR.read_text().replace("data_TS_01", "data_TS 01?"))
    with pytest.raises(FormatError) as err:
        read_relion_tilt_series(path, tomogram)
    message = str(err.value)
    assert message.startswith(str(path) + ": ") and "\n" not in message and "ts_id" in message
    path.write_text(TS_STAR.read_text().replace("-57.00000 ", "-97.00000 "))
    with pytest.raises(FormatError) as err:
        read_relion_tilt_series(path, tomogram)
    message = str(err.value)
    assert (
        message.startswith(str(path) + ": ") and "\n" not in message and "refined_tilt_angle_deg" in message
    )
