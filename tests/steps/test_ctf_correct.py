"""``ctf.correct``: present views interpolated through their alignment and phase flipped, excluded views dropped."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest

from tomoforge.ctf import ctf_zeros_per_angstrom
from tomoforge.io.imod import imod_defocus_to_ctf, read_imod_defocus, read_tlt, read_xf, xf_to_transforms
from tomoforge.io.mrc import read_mrc
from tomoforge.models import TiltSeries
from tomoforge.steps._alignment_io import write_aligned_stack
from tomoforge.steps._artifacts import read_tilt_series, write_tilt_series
from tomoforge.steps.ctf_correct import aligned_astigmatism_angle_deg
from tomoforge.workflow import Project, RunOutput, StepFailedError, get_registry, run_step

EXCLUDED_ORDER = 3


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Project, Path, TiltSeries]:
    """The tiny preset motion-corrected (96 × 96 px of 10 Å), given its true alignment and CTF, one view excluded."""
    from tomoforge.simulate import generate_dataset, preset_config

    data = tmp_path_factory.mktemp("ctf_correct_data")
    generate_dataset(preset_config("tiny"), data)
    project = Project.init(tmp_path_factory.mktemp("ctf_correct") / "project")
    imported = run_step(project, "import.movies", {}, {"movies": data / "frames"})
    corrected = run_step(project, "motion.correct", {}, {"movies": RunOutput(imported.run.id, "movies")})
    (series,) = read_tilt_series(corrected.outputs["tilt_series"].path)
    truth = data / "truth"
    transforms = xf_to_transforms(
        read_xf(truth / "alignment" / "TS_01.xf"), series.pixel_size_angstrom, (96, 96)
    )
    angles = read_tlt(truth / "alignment" / "TS_01.tlt")
    ctfs = imod_defocus_to_ctf(read_imod_defocus(truth / "ctf" / "TS_01.defocus"), "TS_01", series.n_tilts)
    np.testing.assert_allclose(
        read_tlt(truth / "alignment" / "TS_01.rawtlt"), series.tilt_angles_deg, atol=0.01
    )
    tilts = [
        tilt.model_copy(
            update={
                "transform": transforms[tilt.index],
                "refined_tilt_angle_deg": float(angles[tilt.index]),
                "ctf": ctfs.parameters_for(tilt.index),
                "excluded": tilt.acquisition_order == EXCLUDED_ORDER,
            }
        )
        for tilt in series.tilts
    ]
    folder = tmp_path_factory.mktemp("ctf_input") / "tilt_series"
    folder.mkdir()
    os.link(series.stack_file, folder / "TS_01.mrc")
    ready = series.model_copy(
        update={
            "tilts": tilts,
            "stack_file": folder / "TS_01.mrc",
            "even_stack_file": None,
            "odd_stack_file": None,
        }
    )
    write_tilt_series(folder, TiltSeries.model_validate(ready.model_dump()))
    return project, folder, ready


def band_correlation(a: np.ndarray, b: np.ndarray, low: float, high: float, pixel: float) -> float:
    """Correlation of two images' Fourier components with ``low ≤ |k| < high`` (cycles/Å)."""
    fa, fb = np.fft.rfft2(a - a.mean()), np.fft.rfft2(b - b.mean())
    k = np.hypot(np.fft.fftfreq(a.shape[0], d=pixel)[:, None], np.fft.rfftfreq(a.shape[1], d=pixel)[None, :])
    band = (k >= low) & (k < high)
    cross = np.real(fa[band] * np.conj(fb[band])).sum()
    return float(cross / np.sqrt((np.abs(fa[band]) ** 2).sum() * (np.abs(fb[band]) ** 2).sum()))


def test_present_views_are_aligned_flipped_and_renumbered(
    setup: tuple[Project, Path, TiltSeries], tmp_path: Path
) -> None:
    project, folder, source = setup
    result = run_step(project, "ctf.correct", {"defocus_tolerance_nm": 40.0}, {"tilt_series": folder})
    out = result.outputs["tilt_series"].path
    (corrected,) = read_tilt_series(out)
    present = [t for t in source.tilts if not t.excluded]
    assert len(present) == source.n_tilts - 1 == corrected.n_tilts
    assert corrected.aligned and corrected.pixel_size_angstrom == source.pixel_size_angstrom
    assert [t.index for t in corrected.tilts] == list(range(corrected.n_tilts))
    for before, after in zip(present, corrected.tilts, strict=True):
        assert after.acquisition_order == before.acquisition_order != EXCLUDED_ORDER
        assert after.prior_dose_e_per_angstrom2 == before.prior_dose_e_per_angstrom2
        assert after.ctf == before.ctf and after.transform == before.transform
    volume = read_mrc(corrected.stack_file)
    assert volume.data.shape == (8, 96, 96) and corrected.image_shape_yx == (96, 96)
    assert volume.voxel_size_angstrom[0] == pytest.approx(10.0)
    np.testing.assert_allclose(read_tlt(out / "TS_01.tlt"), [t.refined_tilt_angle_deg for t in present])

    # Per view: the low band keeps the sign of the plain aligned image (dark stays dark), the band past the
    # first zero of the view's CTF is reversed — the CTF's defocus, units and sign reach the kernel.
    plain = read_mrc(write_aligned_stack(tmp_path, source, 1)).data
    for k, tilt in enumerate(present):
        assert tilt.ctf is not None
        first_zero = float(
            ctf_zeros_per_angstrom(
                1,
                defocus_angstrom=tilt.ctf.defocus_mean_angstrom,
                voltage_kv=source.acquisition.voltage_kv,
                spherical_aberration_mm=source.acquisition.spherical_aberration_mm,
                amplitude_contrast=source.acquisition.amplitude_contrast,
            )[0]
        )
        image, reference = np.asarray(volume.data[k]), np.asarray(plain[k])
        assert band_correlation(image, reference, 0.0, 0.85 * first_zero, 10.0) > 0.99
        assert band_correlation(image, reference, 1.12 * first_zero, 0.05, 10.0) < -0.9

    rows = (out / "TS_01_ctf_correction.csv").read_text().splitlines()[1:]
    by_order = {int(r.split(",")[2]): r.split(",") for r in rows}
    assert by_order[EXCLUDED_ORDER][4] == "excluded" and by_order[EXCLUDED_ORDER][1] == "-1"
    for k, tilt in enumerate(present):
        row = by_order[tilt.acquisition_order]
        assert tilt.ctf is not None and tilt.transform is not None and int(row[1]) == k
        # The raw astigmatism angle turns with the view's transform (rotation ≈ −86°).
        rotated = tilt.ctf.astigmatism_angle_deg + tilt.transform.rotation_deg
        assert (float(row[7]) - rotated + 90.0) % 180.0 - 90.0 == pytest.approx(0.0, abs=1e-3)
        # 96 px × 10 Å × tan θ of defocus over a 400 Å tolerance: one strip per 40 / tan θ px.
        widest = 400.0 / (10.0 * abs(math.tan(math.radians(tilt.effective_tilt_angle_deg))))
        assert int(row[8]) == max(1, min(math.ceil(96 / max(widest, 15)), 96 // 15))
    summary = project.store.summary(result.run.id)["TS_01"]
    assert summary["views_corrected"] == 8 and summary["views_excluded"] == 1
    assert summary["excluded_acquisition_orders"] == [EXCLUDED_ORDER]
    assert summary["strips_per_view_min"] == 1 and summary["strips_per_view_max"] == 5


def test_step_is_registered_with_hooks() -> None:
    from tomoforge.steps.ctf_correct import CtfCorrectParams

    spec = get_registry().get("ctf.correct")
    assert spec.summary is not None and spec.methods is not None
    text = spec.methods(CtfCorrectParams())
    assert "ctfphaseflip" in text and "doi:10.1016/j.jsb.2009.08.016" in text
    for field in spec.params_model.model_fields.values():
        assert field.description


def test_binning_and_missing_ctf(setup: tuple[Project, Path, TiltSeries], tmp_path: Path) -> None:
    project, folder, source = setup
    binned = run_step(project, "ctf.correct", {"binning": 2, "mode": "wiener"}, {"tilt_series": folder})
    (series,) = read_tilt_series(binned.outputs["tilt_series"].path)
    assert series.pixel_size_angstrom == pytest.approx(20.0) and series.image_shape_yx == (48, 48)
    assert read_mrc(series.stack_file).data.shape == (8, 48, 48)
    assert bool(np.isfinite(np.asarray(read_mrc(series.stack_file).data)).all())

    broken = tmp_path / "broken"
    broken.mkdir()
    os.link(source.stack_file, broken / "TS_01.mrc")
    tilts = [t.model_copy(update={"ctf": None}) if t.index == 4 else t for t in source.tilts]
    write_tilt_series(broken, source.model_copy(update={"tilts": tilts, "stack_file": broken / "TS_01.mrc"}))
    with pytest.raises(
        StepFailedError, match=r"TS_01\.mrc: views \[4\] of TS_01 are included but have no CTF"
    ):
        run_step(project, "ctf.correct", {}, {"tilt_series": broken})


def test_astigmatism_angle_follows_the_transform() -> None:
    from tomoforge.models import TiltTransform

    rotation = TiltTransform.from_rotation(-86.0)
    assert aligned_astigmatism_angle_deg(rotation, 88.0) == pytest.approx(2.0)
    assert aligned_astigmatism_angle_deg(rotation, -80.0) == pytest.approx(14.0)  # −166° ≡ 14° (mod 180°)
    stretch = TiltTransform(a11=2.0, a22=1.0)  # x doubled: 45° becomes atan(1/2)
    assert aligned_astigmatism_angle_deg(stretch, 45.0) == pytest.approx(math.degrees(math.atan(0.5)))
